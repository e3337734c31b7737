//! Rooms and memberships: the directory, who is in which room, and in what order they joined.

use std::collections::HashMap;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{Document, doc, oid::ObjectId};

use super::{
    MongoStore, is_duplicate_key, now,
    schema::{MembershipDoc, RoomDoc},
};
use crate::{
    error::{Error, Result},
    model::{Invitation, Membership, ModerationEntry, ModerationId, RoomRole},
    model::{Page, PageRequest, Room, RoomEvent, RoomId, User, UserId},
    store::{
        Departure, NewModerationEntry, NewRoom, RoomStore, RoomUpdate, Taken, UNIQUE_KEY_VERSION,
        Written, keyset_page, unique_key,
    },
};

#[async_trait]
impl RoomStore for MongoStore {
    async fn create_room(&self, new: NewRoom) -> Result<Room> {
        let (name, creator) = (new.name, new.creator);
        self.in_task(move |db| async move {
            let name = name.as_str();
            if db.user_by_id(creator).await?.is_none() {
                return Err(Error::not_found("user not found"));
            }
            let room = RoomDoc {
                id: db.ids.next().into(),
                name: name.to_owned(),
                name_key: unique_key(name),
                key_version: UNIQUE_KEY_VERSION,
                created_by: creator,
                created_at: now(),
                seq: 0,
                last_message: None,
                lease: None,
            };
            // Without transactions: the creator's membership goes first, so the room is never
            // seen without its first member, and nobody can join ahead of its creator.
            let _room = db.room_locks.lock(room.id).await;
            let membership = MembershipDoc {
                id: db.ids.next(),
                room_id: room.id,
                user_id: creator,
                joined_at: room.created_at,
            };
            db.memberships.insert_one(&membership).await?;
            if let Err(e) = db.rooms.insert_one(&room).await {
                let _ = db.memberships.delete_one(doc! {"_id": membership.id}).await;
                if is_duplicate_key(&e) {
                    return Err(Error::from(Taken::RoomName));
                }
                return Err(e.into());
            }
            Ok(room.into())
        })
        .await
    }

    async fn room(&self, id: RoomId) -> Result<Option<Room>> {
        Ok(self.rooms.find_one(doc! {"_id": id}).await?.map(Room::from))
    }

    async fn rooms(&self, page: PageRequest) -> Result<Page<Room>> {
        self.page(&self.rooms, Document::new(), page).await
    }

    async fn add_member(&self, room: RoomId, user: UserId, _role: RoomRole) -> Result<Written<()>> {
        self.in_task(move |db| async move {
            let _room = db.room_locks.lock(room).await;
            if db.rooms.find_one(doc! {"_id": room}).await?.is_none() {
                return Err(Error::not_found("room not found"));
            }
            let membership = MembershipDoc {
                id: db.ids.next(),
                room_id: room,
                user_id: user,
                joined_at: now(),
            };
            match db.memberships.insert_one(&membership).await {
                Ok(_) => {}
                Err(e) if is_duplicate_key(&e) => {
                    return Ok(Written {
                        value: (),
                        changed: false,
                    });
                }
                Err(e) => return Err(e.into()),
            }
            if let Some(user) = db.user_by_id(user).await? {
                db.announce(RoomEvent::MemberJoined {
                    room_id: room,
                    user,
                })
                .await;
            }
            Ok(Written {
                value: (),
                changed: true,
            })
        })
        .await
    }

    async fn remove_member(
        &self,
        room: RoomId,
        user: UserId,
        _departure: Departure,
    ) -> Result<Written<()>> {
        self.in_task(move |db| async move {
            let _room = db.room_locks.lock(room).await;
            let removed = db
                .memberships
                .delete_one(doc! {"room_id": room, "user_id": user})
                .await?;
            let changed = removed.deleted_count == 1;
            if changed && let Some(user) = db.user_by_id(user).await? {
                db.announce(RoomEvent::MemberLeft {
                    room_id: room,
                    user,
                })
                .await;
            }
            Ok(Written { value: (), changed })
        })
        .await
    }

    async fn delete_room(&self, room: RoomId) -> Result<Vec<UserId>> {
        self.in_task(move |db| async move {
            let _room = db.room_locks.lock(room).await;
            if db.rooms.find_one(doc! {"_id": room}).await?.is_none() {
                return Err(Error::not_found("room not found"));
            }
            let left: Vec<MembershipDoc> = db
                .memberships
                .find(doc! {"room_id": room})
                .await?
                .try_collect()
                .await?;
            db.memberships.delete_many(doc! {"room_id": room}).await?;
            db.messages.delete_many(doc! {"room_id": room}).await?;
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

    async fn direct_room(&self, _creator: UserId, _other: UserId) -> Result<Written<Room>> {
        Err(todo_mongo())
    }
    async fn update_room(&self, _id: RoomId, _update: RoomUpdate) -> Result<Written<Room>> {
        Err(todo_mongo())
    }
    async fn membership(&self, _room: RoomId, _user: UserId) -> Result<Option<Membership>> {
        Err(todo_mongo())
    }
    async fn memberships(
        &self,
        _room: RoomId,
        _after: Option<UserId>,
        _limit: usize,
    ) -> Result<Vec<Membership>> {
        Err(todo_mongo())
    }
    async fn set_role(
        &self,
        _room: RoomId,
        _user: UserId,
        _role: RoomRole,
        _expect: Option<RoomRole>,
    ) -> Result<Written<Membership>> {
        Err(todo_mongo())
    }
    async fn ban(
        &self,
        _room: RoomId,
        _user: UserId,
        _by: UserId,
        _reason: Option<&str>,
    ) -> Result<Written<()>> {
        Err(todo_mongo())
    }
    async fn unban(&self, _room: RoomId, _user: UserId) -> Result<Written<()>> {
        Err(todo_mongo())
    }
    async fn is_banned(&self, _room: RoomId, _user: UserId) -> Result<bool> {
        Err(todo_mongo())
    }
    async fn invite(
        &self,
        _room: RoomId,
        _user: UserId,
        _by: UserId,
    ) -> Result<Written<Invitation>> {
        Err(todo_mongo())
    }
    async fn invitation(&self, _room: RoomId, _user: UserId) -> Result<Option<Invitation>> {
        Err(todo_mongo())
    }
    async fn invitations_of(&self, _user: UserId, _limit: usize) -> Result<Vec<Invitation>> {
        Err(todo_mongo())
    }
    async fn remove_invitation(&self, _room: RoomId, _user: UserId) -> Result<bool> {
        Err(todo_mongo())
    }
    async fn invitation_count(&self, _user: UserId) -> Result<u64> {
        Err(todo_mongo())
    }
    async fn log_moderation(&self, _entry: NewModerationEntry) -> Result<ModerationEntry> {
        Err(todo_mongo())
    }
    async fn moderation_log(
        &self,
        _room: RoomId,
        _before: Option<ModerationId>,
        _limit: usize,
    ) -> Result<Vec<ModerationEntry>> {
        Err(todo_mongo())
    }
}

fn todo_mongo() -> Error {
    Error::internal("rooms for teams are not on MongoDB yet")
}

/// Ids as the `$in` of a query takes them.
fn object_ids<T: Copy + Into<ObjectId>>(ids: &[T]) -> Vec<ObjectId> {
    ids.iter().map(|&id| id.into()).collect()
}
