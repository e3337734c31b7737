//! Rooms and memberships: the directory, who is in which room in what role, and in what order
//! they joined; bans, invitations and the moderation log.

use std::collections::HashMap;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc, oid::ObjectId};

use super::{
    MongoStore, is_duplicate_key, now,
    schema::{BanDoc, InvitationDoc, MembershipDoc, ModerationDoc, RoomDoc},
    to_chrono,
};
use crate::{
    error::{Error, Result},
    model::{
        Invitation, Membership, ModerationEntry, ModerationId, Page, PageRequest, Room, RoomEvent,
        RoomId, RoomRole, RoomVisibility, User, UserId,
    },
    store::{
        Departure, NewModerationEntry, NewRoom, RoomStore, RoomUpdate, Taken, UNIQUE_KEY_VERSION,
        Written, direct_key, direct_pair, keyset_page, room_key,
    },
};

/// How many times a write that lost a race to another writer reads again and retries before
/// it gives up.
const RETRIES: usize = 5;

/// One membership of `user` in `room`.
pub(super) fn member(room: RoomId, user: UserId) -> Document {
    doc! {"room_id": room, "user_id": user}
}

impl MongoStore {
    async fn room_doc(&self, id: RoomId) -> Result<Option<RoomDoc>> {
        Ok(self.rooms.find_one(doc! {"_id": id}).await?)
    }

    async fn membership_doc(&self, room: RoomId, user: UserId) -> Result<Option<MembershipDoc>> {
        Ok(self.memberships.find_one(member(room, user)).await?)
    }

    /// Inserts the memberships of a room about to be stored, joined when it is created, and
    /// returns their ids; when one fails, takes back those inserted.
    async fn first_members(
        &self,
        room: &RoomDoc,
        members: &[(UserId, RoomRole)],
    ) -> Result<Vec<ObjectId>> {
        let mut inserted = Vec::new();
        for &(user, role) in members {
            let membership = MembershipDoc {
                id: self.ids.next(),
                room_id: room.id,
                user_id: user,
                joined_at: room.created_at,
                role: role.as_str().to_owned(),
                // A new room has no messages yet.
                last_read: room.last_message,
            };
            if let Err(e) = self.memberships.insert_one(&membership).await {
                self.take_back(&inserted).await;
                return Err(e.into());
            }
            inserted.push(membership.id);
        }
        Ok(inserted)
    }

    /// Deletes memberships inserted for a room that then could not be stored. Best effort (a
    /// failure is logged): one left behind names a room that does not exist, which lists skip.
    async fn take_back(&self, memberships: &[ObjectId]) {
        if memberships.is_empty() {
            return;
        }
        if let Err(e) = self
            .memberships
            .delete_many(doc! {"_id": {"$in": memberships}})
            .await
        {
            tracing::warn!(error = %e, "cannot take back the memberships of a room not stored");
        }
    }

    /// Ends `user`'s membership of `room`, announcing the departure that `event` makes of the
    /// departed user, then hands ownership over when the room is left without an owner. `by`
    /// is the moderator the event names, when it names one: `NotFound` when there is a
    /// membership to end and no such user (and then nothing changes). The caller holds the
    /// room's lock.
    async fn end_membership(
        &self,
        room: RoomId,
        user: UserId,
        by: Option<UserId>,
        event: impl FnOnce(User, Option<User>) -> RoomEvent,
    ) -> Result<bool> {
        let by = match by {
            Some(by) => match self.user_by_id(by).await? {
                Some(by) => Some(by),
                None if self.membership_doc(room, user).await?.is_some() => {
                    return Err(Error::not_found("user not found"));
                }
                None => return Ok(false),
            },
            None => None,
        };
        let removed = self.memberships.delete_one(member(room, user)).await?;
        // An invitation that raced the membership goes with it: nobody comes back without a
        // new one.
        self.invitations.delete_one(member(room, user)).await?;
        if removed.deleted_count == 0 {
            return Ok(false);
        }
        if let Some(user) = self.user_by_id(user).await? {
            self.announce(event(user, by)).await;
        }
        self.hand_over_ownership(room).await?;
        Ok(true)
    }

    /// When `room` has members and no owner, makes its longest-standing admin (else member)
    /// the owner and announces it. Nobody owns a direct room. The caller holds the room's lock.
    async fn hand_over_ownership(&self, room: RoomId) -> Result<()> {
        for _ in 0..RETRIES {
            match self.room_doc(room).await? {
                Some(doc) if doc.direct.is_none() => {}
                _ => return Ok(()),
            }
            let owner = doc! {"room_id": room, "role": RoomRole::Owner.as_str()};
            if self.memberships.find_one(owner).await?.is_some() {
                return Ok(());
            }
            let longest_standing = doc! {"_id": 1};
            let admin = self
                .memberships
                .find_one(doc! {"room_id": room, "role": RoomRole::Admin.as_str()})
                .sort(longest_standing.clone())
                .await?;
            let heir = match admin {
                Some(admin) => admin,
                None => match self
                    .memberships
                    .find_one(doc! {"room_id": room})
                    .sort(longest_standing)
                    .await?
                {
                    Some(heir) => heir,
                    None => return Ok(()), // an empty room stays, without an owner
                },
            };
            // Only from the role it was read with: an heir who left or changed role meanwhile
            // is looked for again.
            let promoted = self
                .memberships
                .update_one(
                    doc! {"_id": heir.id, "role": &heir.role},
                    doc! {"$set": {"role": RoomRole::Owner.as_str()}},
                )
                .await?;
            if promoted.modified_count == 1 {
                if let Some(user) = self.user_by_id(heir.user_id).await? {
                    self.announce(RoomEvent::MemberRoleChanged {
                        room_id: room,
                        user,
                        role: RoomRole::Owner,
                    })
                    .await;
                }
                return Ok(());
            }
        }
        tracing::warn!(%room, "a room's members kept changing while its ownership was handed over; it has no owner for now");
        Ok(())
    }

    /// Memberships as read, with their users (a membership whose user is gone is skipped).
    async fn with_users(&self, memberships: Vec<MembershipDoc>) -> Result<Vec<Membership>> {
        let ids: Vec<UserId> = memberships.iter().map(|m| m.user_id).collect();
        let mut users: HashMap<UserId, User> = self
            .users
            .find(doc! {"_id": {"$in": object_ids(&ids)}})
            .await?
            .map_ok(|d| (d.id, User::from(d)))
            .try_collect()
            .await?;
        Ok(memberships
            .into_iter()
            .filter_map(|m| {
                let user = users.remove(&m.user_id)?;
                Some(m.with_user(user))
            })
            .collect())
    }

    /// `NotFound` unless both the room and the user exist.
    async fn room_and_user_exist(&self, room: RoomId, user: UserId) -> Result<()> {
        if self.room_doc(room).await?.is_none() || self.user_by_id(user).await?.is_none() {
            return Err(Error::not_found("no such room or user"));
        }
        Ok(())
    }
}

#[async_trait]
impl RoomStore for MongoStore {
    async fn create_room(&self, new: NewRoom) -> Result<Room> {
        self.in_task(move |db| async move {
            if db.user_by_id(new.creator).await?.is_none() {
                return Err(Error::not_found("user not found"));
            }
            let id: RoomId = db.ids.next().into();
            let key = room_key(&Room {
                id,
                name: new.name.clone(),
                created_by: new.creator,
                created_at: chrono::DateTime::default(),
                visibility: new.visibility,
                topic: None,
                direct: None,
            });
            let room = RoomDoc {
                id,
                name_key: key,
                name: new.name,
                key_version: UNIQUE_KEY_VERSION,
                created_by: new.creator,
                created_at: now(),
                seq: 0,
                last_message: None,
                lease: None,
                visibility: new.visibility.as_str().to_owned(),
                topic: new.topic,
                direct: None,
            };
            // Without transactions: the creator's membership goes first, so the room is never
            // seen without its owner, and nobody can join ahead of its creator.
            let _room = db.room_locks.lock(room.id).await;
            let members = db
                .first_members(&room, &[(new.creator, RoomRole::Owner)])
                .await?;
            if let Err(e) = db.rooms.insert_one(&room).await {
                db.take_back(&members).await;
                if is_duplicate_key(&e) {
                    return Err(Error::from(Taken::RoomName));
                }
                return Err(e.into());
            }
            Ok(room.into())
        })
        .await
    }

    async fn direct_room(&self, creator: UserId, other: UserId) -> Result<Written<Room>> {
        self.in_task(move |db| async move {
            let pair = direct_pair(creator, other);
            let key = direct_key(pair);
            for _ in 0..RETRIES {
                if let Some(found) = db.rooms.find_one(doc! {"name_key": &key}).await? {
                    return Ok(Written {
                        value: found.into(),
                        changed: false,
                    });
                }
                let mut people = Vec::new();
                for user in [creator, other] {
                    if people.iter().any(|p: &User| p.id == user) {
                        continue; // one membership each, whatever the caller asked
                    }
                    match db.user_by_id(user).await? {
                        Some(person) => people.push(person),
                        None => return Err(Error::not_found("user not found")),
                    }
                }
                let room = RoomDoc {
                    id: db.ids.next().into(),
                    name: String::new(),
                    name_key: key.clone(),
                    key_version: UNIQUE_KEY_VERSION,
                    created_by: creator,
                    created_at: now(),
                    seq: 0,
                    last_message: None,
                    lease: None,
                    visibility: RoomVisibility::Private.as_str().to_owned(),
                    topic: None,
                    direct: Some(pair),
                };
                // As `create_room`: the members first. The unique name key makes the pair's
                // room one: when another call stored it first, ours gives way to it.
                let _room = db.room_locks.lock(room.id).await;
                let members: Vec<_> = people.iter().map(|p| (p.id, RoomRole::Member)).collect();
                let inserted = db.first_members(&room, &members).await?;
                if let Err(e) = db.rooms.insert_one(&room).await {
                    db.take_back(&inserted).await;
                    if is_duplicate_key(&e) {
                        continue; // read the room that won
                    }
                    return Err(e.into());
                }
                for user in people {
                    db.announce(RoomEvent::MemberJoined {
                        room_id: room.id,
                        user,
                    })
                    .await;
                }
                return Ok(Written {
                    value: room.into(),
                    changed: true,
                });
            }
            Err(Error::internal(
                "a direct room kept appearing and disappearing while it was looked for",
            ))
        })
        .await
    }

    async fn update_room(&self, id: RoomId, update: RoomUpdate) -> Result<Written<Room>> {
        self.in_task(move |db| async move {
            let _room = db.room_locks.lock(id).await;
            let before = Room::from(
                db.room_doc(id)
                    .await?
                    .ok_or_else(|| Error::not_found("room not found"))?,
            );
            let after = update.applied_to(&before);
            if after == before {
                return Ok(Written {
                    value: after,
                    changed: false,
                });
            }
            let mut set = doc! {"visibility": after.visibility.as_str()};
            // The key only with a new name or visibility: a name an older Confab let in beside
            // a look-alike keeps its displaced key (see `upgrade_name_keys`) while only its
            // topic changes.
            if after.name != before.name || after.visibility != before.visibility {
                set.insert("name", &after.name);
                set.insert("name_key", room_key(&after));
                set.insert("key_version", UNIQUE_KEY_VERSION);
            }
            let mut change = doc! {};
            match &after.topic {
                Some(topic) => {
                    set.insert("topic", topic);
                }
                None => {
                    change.insert("$unset", doc! {"topic": ""});
                }
            }
            change.insert("$set", set);
            match db.rooms.update_one(doc! {"_id": id}, change).await {
                Ok(r) if r.matched_count == 0 => return Err(Error::not_found("room not found")),
                Ok(_) => {}
                Err(e) if is_duplicate_key(&e) => return Err(Error::from(Taken::RoomName)),
                Err(e) => return Err(e.into()),
            }
            db.announce(RoomEvent::RoomUpdated(after.clone())).await;
            Ok(Written {
                value: after,
                changed: true,
            })
        })
        .await
    }

    async fn room(&self, id: RoomId) -> Result<Option<Room>> {
        Ok(self.room_doc(id).await?.map(Room::from))
    }

    async fn rooms(&self, page: PageRequest) -> Result<Page<Room>> {
        // Rooms from before visibilities have none: they are public.
        let public = doc! {"$or": [
            {"visibility": RoomVisibility::Public.as_str()},
            {"visibility": {"$exists": false}},
        ]};
        self.page(&self.rooms, public, page).await
    }

    async fn add_member(&self, room: RoomId, user: UserId, role: RoomRole) -> Result<Written<()>> {
        self.in_task(move |db| async move {
            let _room = db.room_locks.lock(room).await;
            let Some(room_doc) = db.room_doc(room).await? else {
                return Err(Error::not_found("room not found"));
            };
            let banned =
                || async { Ok::<_, Error>(db.bans.find_one(member(room, user)).await?.is_some()) };
            if banned().await? {
                return Err(Error::forbidden("you are banned from this room"));
            }
            let membership = MembershipDoc {
                id: db.ids.next(),
                room_id: room,
                user_id: user,
                joined_at: now(),
                role: role.as_str().to_owned(),
                // A new member has read everything sent before joining. The room's lock keeps
                // this instance's messages from landing in between.
                last_read: db.newest_message(&room_doc).await?,
            };
            let changed = match db.memberships.insert_one(&membership).await {
                Ok(_) => true,
                Err(e) if is_duplicate_key(&e) => false,
                Err(e) => return Err(e.into()),
            };
            // Looked for again once the membership is stored: a ban stored meanwhile (from
            // another instance) ends it either there or here, so the user ends up out.
            if banned().await? {
                if changed {
                    db.memberships
                        .delete_one(doc! {"_id": membership.id})
                        .await?;
                }
                return Err(Error::forbidden("you are banned from this room"));
            }
            db.invitations.delete_one(member(room, user)).await?;
            if changed && let Some(user) = db.user_by_id(user).await? {
                db.announce(RoomEvent::MemberJoined {
                    room_id: room,
                    user,
                })
                .await;
            }
            Ok(Written { value: (), changed })
        })
        .await
    }

    async fn remove_member(
        &self,
        room: RoomId,
        user: UserId,
        departure: Departure,
    ) -> Result<Written<()>> {
        self.in_task(move |db| async move {
            let _room = db.room_locks.lock(room).await;
            let by = match departure {
                Departure::Left => None,
                Departure::Kicked { by } => Some(by),
            };
            let changed = db
                .end_membership(room, user, by, |user, by| match by {
                    Some(by) => RoomEvent::MemberKicked {
                        room_id: room,
                        user,
                        by,
                    },
                    None => RoomEvent::MemberLeft {
                        room_id: room,
                        user,
                    },
                })
                .await?;
            Ok(Written { value: (), changed })
        })
        .await
    }

    async fn delete_room(&self, room: RoomId) -> Result<Vec<UserId>> {
        self.in_task(move |db| async move {
            let _room = db.room_locks.lock(room).await;
            if db.room_doc(room).await?.is_none() {
                return Err(Error::not_found("room not found"));
            }
            let left: Vec<MembershipDoc> = db
                .memberships
                .find(doc! {"room_id": room})
                .await?
                .try_collect()
                .await?;
            let in_room = doc! {"room_id": room};
            db.memberships.delete_many(in_room.clone()).await?;
            db.messages.delete_many(in_room.clone()).await?;
            db.bans.delete_many(in_room.clone()).await?;
            db.invitations.delete_many(in_room.clone()).await?;
            db.moderation.delete_many(in_room).await?;
            db.rooms.delete_one(doc! {"_id": room}).await?;
            Ok(left.into_iter().map(|m| m.user_id).collect())
        })
        .await
    }

    async fn is_member(&self, room: RoomId, user: UserId) -> Result<bool> {
        Ok(self
            .memberships
            .find_one(doc! {"room_id": room, "user_id": user})
            .await?
            .is_some())
    }

    async fn members(&self, room: RoomId, limit: usize) -> Result<Vec<User>> {
        // MongoDB reads a limit of 0 as "no limit".
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let memberships: Vec<MembershipDoc> = self
            .memberships
            .find(doc! {"room_id": room})
            .sort(doc! {"_id": 1})
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        let ids: Vec<UserId> = memberships.iter().map(|m| m.user_id).collect();
        let mut users: HashMap<UserId, User> = self
            .users
            .find(doc! {"_id": {"$in": object_ids(&ids)}})
            .await?
            .map_ok(|d| (d.id, User::from(d)))
            .try_collect()
            .await?;
        Ok(ids.iter().filter_map(|id| users.remove(id)).collect())
    }

    async fn member_count(&self, room: RoomId) -> Result<u64> {
        Ok(self
            .memberships
            .count_documents(doc! {"room_id": room})
            .await?)
    }

    async fn rooms_of(&self, user: UserId, page: PageRequest) -> Result<Page<Room>> {
        // The user's memberships in room id order (the `(user_id, room_id)` index), then
        // their rooms.
        let (cursor, limit, backward) = match page {
            PageRequest::Backward { before, last } => (before.map(|b| ("$lt", b)), last, true),
            PageRequest::Forward { after, first } => (after.map(|a| ("$gt", a)), first, false),
        };
        let mut filter = doc! {"user_id": user};
        if let Some((op, id)) = cursor {
            filter.insert("room_id", doc! {op: id});
        }
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let ids: Vec<RoomId> = self
            .memberships
            .find(filter)
            .sort(doc! {"user_id": 1, "room_id": if backward { -1 } else { 1 }})
            .limit(fetch)
            .await?
            .map_ok(|m| m.room_id)
            .try_collect()
            .await?;
        let beyond_cursor = match cursor {
            Some((op, id)) => {
                let far = doc! {"user_id": user, "room_id": {if op == "$lt" { "$gte" } else { "$lte" }: id}};
                self.memberships.find_one(far).await?.is_some()
            }
            None => false,
        };
        let page = keyset_page(ids, limit, backward, beyond_cursor);
        let mut rooms: HashMap<RoomId, Room> = self
            .rooms
            .find(doc! {"_id": {"$in": object_ids(&page.items)}})
            .await?
            .map_ok(|d| (d.id, Room::from(d)))
            .try_collect()
            .await?;
        Ok(Page {
            items: page
                .items
                .iter()
                .filter_map(|id| rooms.remove(id))
                .collect(),
            has_previous: page.has_previous,
            has_next: page.has_next,
        })
    }

    async fn room_count_of(&self, user: UserId) -> Result<u64> {
        Ok(self
            .memberships
            .count_documents(doc! {"user_id": user})
            .await?)
    }

    async fn membership(&self, room: RoomId, user: UserId) -> Result<Option<Membership>> {
        let Some(membership) = self.membership_doc(room, user).await? else {
            return Ok(None);
        };
        Ok(self
            .user_by_id(user)
            .await?
            .map(|user| membership.with_user(user)))
    }

    async fn memberships(
        &self,
        room: RoomId,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<Vec<Membership>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut filter = doc! {"room_id": room};
        // Join order is the membership's id; a cursor that is no longer a member starts over.
        if let Some(after) = after
            && let Some(cursor) = self.membership_doc(room, after).await?
        {
            filter.insert("_id", doc! {"$gt": cursor.id});
        }
        let found: Vec<MembershipDoc> = self
            .memberships
            .find(filter)
            .sort(doc! {"_id": 1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await?
            .try_collect()
            .await?;
        self.with_users(found).await
    }

    async fn set_role(
        &self,
        room: RoomId,
        user: UserId,
        role: RoomRole,
        expect: Option<RoomRole>,
    ) -> Result<Written<Membership>> {
        self.in_task(move |db| async move {
            let _room = db.room_locks.lock(room).await;
            let not_member = || Error::not_found("not a member of this room");
            let moved = || Error::Conflict {
                field: "role",
                message: "their role changed meanwhile; look again".into(),
            };
            for _ in 0..RETRIES {
                let current = db
                    .membership_doc(room, user)
                    .await?
                    .ok_or_else(not_member)?;
                if expect.is_some_and(|expected| expected != current.role()) {
                    return Err(moved());
                }
                let person = db.user_by_id(user).await?.ok_or_else(not_member)?;
                if current.role() == role {
                    return Ok(Written {
                        value: current.with_user(person),
                        changed: false,
                    });
                }
                // A compare-and-swap on the role read: a change made meanwhile elsewhere (a
                // hand-over, another moderator) is not overwritten.
                let set = db
                    .memberships
                    .update_one(
                        doc! {"_id": current.id, "role": &current.role},
                        doc! {"$set": {"role": role.as_str()}},
                    )
                    .await?;
                if set.modified_count == 1 {
                    let mut membership = current.with_user(person);
                    membership.role = role;
                    db.announce(RoomEvent::MemberRoleChanged {
                        room_id: room,
                        user: membership.user.clone(),
                        role,
                    })
                    .await;
                    return Ok(Written {
                        value: membership,
                        changed: true,
                    });
                }
            }
            Err(moved())
        })
        .await
    }

    async fn ban(
        &self,
        room: RoomId,
        user: UserId,
        by: UserId,
        reason: Option<&str>,
    ) -> Result<Written<()>> {
        let reason = reason.map(str::to_owned);
        self.in_task(move |db| async move {
            let _room = db.room_locks.lock(room).await;
            db.room_and_user_exist(room, user).await?;
            if db.user_by_id(by).await?.is_none() && db.membership_doc(room, user).await?.is_some()
            {
                return Err(Error::not_found("user not found"));
            }
            let ban = BanDoc {
                id: db.ids.next(),
                room_id: room,
                user_id: user,
                banned_by: by,
                reason: reason.clone(),
                created_at: now(),
            };
            // The ban first, then the membership ends: a join racing with it (which looks for
            // a ban after storing its membership) cannot leave the user in.
            let changed = match db.bans.insert_one(&ban).await {
                Ok(_) => true,
                Err(e) if is_duplicate_key(&e) => false,
                Err(e) => return Err(e.into()),
            };
            db.invitations.delete_one(member(room, user)).await?;
            db.end_membership(room, user, Some(by), |user, by| match by {
                Some(by) => RoomEvent::MemberBanned {
                    room_id: room,
                    user,
                    by,
                    reason,
                },
                // `end_membership` found the moderator: never reached.
                None => RoomEvent::MemberLeft {
                    room_id: room,
                    user,
                },
            })
            .await?;
            Ok(Written { value: (), changed })
        })
        .await
    }

    async fn unban(&self, room: RoomId, user: UserId) -> Result<Written<()>> {
        let removed = self.bans.delete_one(member(room, user)).await?;
        Ok(Written {
            value: (),
            changed: removed.deleted_count == 1,
        })
    }

    async fn is_banned(&self, room: RoomId, user: UserId) -> Result<bool> {
        Ok(self.bans.find_one(member(room, user)).await?.is_some())
    }

    async fn invite(&self, room: RoomId, user: UserId, by: UserId) -> Result<Written<Invitation>> {
        self.in_task(move |db| async move {
            let _room = db.room_locks.lock(room).await;
            db.room_and_user_exist(room, user).await?;
            for _ in 0..RETRIES {
                let invitation = InvitationDoc {
                    id: db.ids.next(),
                    room_id: room,
                    user_id: user,
                    invited_by: by,
                    created_at: now(),
                };
                match db.invitations.insert_one(&invitation).await {
                    Ok(_) => {
                        // A ban that raced the invitation wins: it deletes the invitation after
                        // storing itself, or it is seen here.
                        if db.bans.find_one(member(room, user)).await?.is_some() {
                            db.invitations
                                .delete_one(doc! {"_id": invitation.id})
                                .await?;
                            return Err(Error::forbidden(
                                "they are banned from this room: unban them first",
                            ));
                        }
                        return Ok(Written {
                            value: invitation.into(),
                            changed: true,
                        });
                    }
                    Err(e) if is_duplicate_key(&e) => {}
                    Err(e) => return Err(e.into()),
                }
                // The first invitation stands (unless it was taken back meanwhile).
                if let Some(first) = db.invitations.find_one(member(room, user)).await? {
                    return Ok(Written {
                        value: first.into(),
                        changed: false,
                    });
                }
            }
            Err(Error::internal(
                "an invitation kept appearing and disappearing while it was stored",
            ))
        })
        .await
    }

    async fn invitation(&self, room: RoomId, user: UserId) -> Result<Option<Invitation>> {
        Ok(self
            .invitations
            .find_one(member(room, user))
            .await?
            .map(Invitation::from))
    }

    async fn invitations_of(&self, user: UserId, limit: usize) -> Result<Vec<Invitation>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let found: Vec<InvitationDoc> = self
            .invitations
            .find(doc! {"user_id": user})
            .sort(doc! {"created_at": -1, "room_id": -1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await?
            .try_collect()
            .await?;
        Ok(found.into_iter().map(Invitation::from).collect())
    }

    async fn remove_invitation(&self, room: RoomId, user: UserId) -> Result<bool> {
        let removed = self.invitations.delete_one(member(room, user)).await?;
        Ok(removed.deleted_count == 1)
    }

    async fn invitation_count(&self, user: UserId) -> Result<u64> {
        Ok(self
            .invitations
            .count_documents(doc! {"user_id": user})
            .await?)
    }

    async fn log_moderation(&self, entry: NewModerationEntry) -> Result<ModerationEntry> {
        self.in_task(move |db| async move {
            if db.room_doc(entry.room_id).await?.is_none() {
                return Err(Error::not_found("room not found"));
            }
            let at = now();
            let stored = ModerationDoc {
                id: ModerationId::from(db.ids.next()),
                room_id: entry.room_id,
                action: entry.action.as_str().to_owned(),
                actor: entry.actor,
                target: entry.target,
                message: entry.message,
                reason: entry.reason.clone(),
                created_at: at,
            };
            db.moderation.insert_one(&stored).await?;
            Ok(ModerationEntry {
                id: stored.id,
                room_id: entry.room_id,
                action: entry.action,
                actor: entry.actor,
                target: entry.target,
                message: entry.message,
                reason: entry.reason,
                created_at: to_chrono(at),
            })
        })
        .await
    }

    async fn moderation_log(
        &self,
        room: RoomId,
        before: Option<ModerationId>,
        limit: usize,
    ) -> Result<Vec<ModerationEntry>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut filter = doc! {"room_id": room};
        if let Some(before) = before {
            filter.insert("_id", doc! {"$lt": before});
        }
        let found: Vec<ModerationDoc> = self
            .moderation
            .find(filter)
            .sort(doc! {"_id": -1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await?
            .try_collect()
            .await?;
        Ok(found.into_iter().map(ModerationEntry::from).collect())
    }
}

/// Ids as the `$in` of a query takes them.
fn object_ids<T: Copy + Into<ObjectId>>(ids: &[T]) -> Vec<ObjectId> {
    ids.iter().map(|&id| id.into()).collect()
}
