//! Rooms: creating, the directory, who may see which room, joining and leaving, direct rooms,
//! invitations, members.
//!
//! A public room is seen by everyone signed in. A private room is seen by its members and the
//! people invited to it, and by nobody else: to them it does not exist (`NOT_FOUND`, `null`),
//! on every transport, so that its existence does not leak. A direct room is private and is
//! seen by its two people alone.

use super::{ChatService, PageArgs, limits};
use crate::model::{RemovalReason, UserEventKind};
use crate::{
    auth::Caller,
    error::{Error, Result},
    model::{
        Invitation, Membership, Page, PageRequest, Room, RoomEvent, RoomId, RoomRole,
        RoomVisibility, User, UserId,
    },
    service::limiter::Kind,
    store::{Departure, NewRoom},
};

/// A room as one user may see it, with their membership if they have one.
pub struct Seen {
    pub room: Room,
    pub membership: Option<Membership>,
}

impl ChatService {
    pub async fn create_room(
        &self,
        caller: &Caller,
        name: &str,
        visibility: RoomVisibility,
        topic: Option<&str>,
    ) -> Result<Room> {
        let user = caller.user_id()?;
        let name = limits::room_name(name)?;
        let topic = topic
            .map(|t| limits::note("topic", t))
            .transpose()?
            .flatten();
        let rates = &self.guards.rates;
        self.take(Kind::RoomsCreated, rates.rooms_created, &user.to_hex())
            .await?;
        self.room_allowance(user).await?;
        let room = self
            .store
            .create_room(NewRoom {
                name,
                creator: user,
                visibility,
                topic,
            })
            .await?;
        self.note_joined(user, room.id, None).await;
        Ok(room)
    }

    /// A room and the caller's membership, when the caller may see it; `NOT_FOUND` otherwise
    /// (see the module docs).
    pub async fn seen_room(&self, caller: &Caller, id: RoomId) -> Result<Seen> {
        let user = caller.user_id()?;
        let not_found = || Error::not_found("room not found");
        let room = self.store.room(id).await?.ok_or_else(not_found)?;
        let membership = self.store.membership(id, user).await?;
        if membership.is_none()
            && room.is_private()
            && (room.is_direct() || self.store.invitation(id, user).await?.is_none())
        {
            return Err(not_found());
        }
        Ok(Seen { room, membership })
    }

    /// A room by id; `None` when there is none, or the caller may not see it.
    pub async fn room(&self, caller: &Caller, id: RoomId) -> Result<Option<Room>> {
        match self.seen_room(caller, id).await {
            Ok(seen) => Ok(Some(seen.room)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The room directory: public rooms, oldest first.
    pub async fn rooms(&self, caller: &Caller, page: &PageArgs) -> Result<Page<Room>> {
        caller.user()?;
        let page = page.resolve(PageRequest::Forward {
            after: None,
            first: limits::PAGE_DEFAULT,
        })?;
        self.store.rooms(page).await
    }

    /// The rooms the caller is a member of, oldest room first.
    pub async fn my_rooms(&self, caller: &Caller, page: &PageArgs) -> Result<Page<Room>> {
        let user = caller.user_id()?;
        let page = page.resolve(PageRequest::Forward {
            after: None,
            first: limits::PAGE_DEFAULT,
        })?;
        self.store.rooms_of(user, page).await
    }

    /// Joins a room: a public one freely, a private one with an invitation (which this spends);
    /// joining again changes nothing. Nobody joins a direct room, nor a room they are banned
    /// from.
    pub async fn join_room(&self, caller: &Caller, room: RoomId) -> Result<Room> {
        let me = self.me(caller).await?;
        self.take(Kind::Joins, self.guards.rates.joins, &me.id.to_hex())
            .await?;
        let seen = self.seen_room(caller, room).await?;
        if seen.membership.is_some() {
            return Ok(seen.room);
        }
        if seen.room.is_direct() {
            return Err(Error::not_found("room not found"));
        }
        self.room_allowance(me.id).await?;
        // Read before the join: the joiner's messages are those after it (at worst a few
        // sent just before the join come with them).
        let head = self.store.room_head(room).await?;
        let joined = self.store.add_member(room, me.id, RoomRole::Member).await?;
        if joined.changed {
            self.note_joined(me.id, room, head.last_message).await;
        }
        Ok(seen.room)
    }

    /// Leaves a room; `false` when the caller was not a member. When the owner leaves, the
    /// longest-standing admin (else member) becomes the owner.
    pub async fn leave_room(&self, caller: &Caller, room: RoomId) -> Result<bool> {
        let me = self.me(caller).await?;
        let seen = self.seen_room(caller, room).await?;
        if seen.membership.is_none() {
            return Ok(false);
        }
        let left = self
            .store
            .remove_member(room, me.id, Departure::Left)
            .await?
            .changed;
        if left {
            self.note_removed(me.id, room, RemovalReason::Left).await;
        }
        Ok(left)
    }

    /// The one direct room of the caller and `other`, created when there is none. A caller who
    /// had left it is a member again; someone else who left it is not brought back.
    pub async fn direct_room(&self, caller: &Caller, other: UserId) -> Result<Room> {
        let me = self.me(caller).await?;
        if other == me.id {
            return Err(Error::invalid(
                "userId",
                "that is you: a direct conversation needs someone else",
            ));
        }
        self.live_user(other).await?;
        self.take(Kind::Joins, self.guards.rates.joins, &me.id.to_hex())
            .await?;
        // Counted as a room joined even when it exists already (the store cannot tell before).
        self.room_allowance(me.id).await?;
        if self.store.room_count_of(other).await? >= self.guards.max_rooms_per_user as u64 {
            return Err(Error::forbidden(
                "they are in as many rooms as one account may be",
            ));
        }
        let written = self.store.direct_room(me.id, other).await?;
        let room = written.value.id;
        if written.changed {
            self.note_joined(me.id, room, None).await;
            self.note_joined(other, room, None).await;
        } else if !self.store.is_member(room, me.id).await? {
            let head = self.store.room_head(room).await?;
            if self
                .store
                .add_member(room, me.id, RoomRole::Member)
                .await?
                .changed
            {
                self.note_joined(me.id, room, head.last_message).await;
            }
        }
        Ok(written.value)
    }

    /// A user who exists and whose account is not deleted; `NOT_FOUND` naming `userId`
    /// otherwise.
    pub(super) async fn live_user(&self, id: UserId) -> Result<User> {
        let standing = self.store.standing(id).await?;
        if standing.is_none_or(|s| s.deleted) {
            return Err(Error::not_found("user not found"));
        }
        self.user(id).await
    }

    /// How a room is named to `viewer`: its name, or for a direct room the other person's.
    pub async fn room_name(&self, viewer: &Caller, room: &Room) -> Result<String> {
        let Some(pair) = room.direct else {
            return Ok(room.name.clone());
        };
        let me = viewer.user_id().ok();
        let other = if me == Some(pair[0]) {
            pair[1]
        } else {
            pair[0]
        };
        Ok(self.user(other).await?.username)
    }

    /// Invites `user` to a private room (its owner and admins only; a public room needs no
    /// invitation, and a direct room takes nobody else). Inviting again keeps the first.
    pub async fn invite_to_room(
        &self,
        caller: &Caller,
        room: RoomId,
        user: UserId,
    ) -> Result<Invitation> {
        let seen = self.seen_room(caller, room).await?;
        let Some(mine) = seen.membership else {
            return Err(Error::forbidden(
                "join the room first: only members may invite",
            ));
        };
        if seen.room.is_direct() {
            return Err(Error::forbidden(
                "a direct conversation is for its two people only",
            ));
        }
        if !seen.room.is_private() {
            return Err(Error::invalid(
                "roomId",
                "a public room needs no invitation: anyone may join it",
            ));
        }
        if !mine.role.moderates() {
            return Err(Error::forbidden(
                "only the room's owner and admins may invite to a private room",
            ));
        }
        if user == mine.user.id {
            return Err(Error::invalid("userId", "you are a member already"));
        }
        self.take(
            Kind::Invitations,
            self.guards.rates.joins,
            &mine.user.id.to_hex(),
        )
        .await?;
        self.live_user(user).await?;
        if self.store.is_member(room, user).await? {
            return Err(Error::Conflict {
                field: "userId",
                message: "they are a member already".into(),
            });
        }
        if self.store.is_banned(room, user).await? {
            return Err(Error::forbidden(
                "they are banned from this room: unban them first",
            ));
        }
        if let Some(invitation) = self.store.invitation(room, user).await? {
            return Ok(invitation);
        }
        if self.store.invitation_count(user).await? >= limits::INVITATIONS_MAX as u64 {
            return Err(Error::too_many(format!(
                "they have {} invitations waiting, the most one account may have",
                limits::INVITATIONS_MAX
            )));
        }
        let invited = self.store.invite(room, user, mine.user.id).await?;
        if invited.changed {
            self.note(user, UserEventKind::Invited(invited.value.clone()))
                .await;
        }
        Ok(invited.value)
    }

    /// The caller's invitations, newest first.
    pub async fn invitations(&self, caller: &Caller) -> Result<Vec<Invitation>> {
        let me = caller.user_id()?;
        self.store.invitations_of(me, limits::INVITATIONS_MAX).await
    }

    /// Declines an invitation; `false` when there was none.
    pub async fn decline_invitation(&self, caller: &Caller, room: RoomId) -> Result<bool> {
        let me = caller.user_id()?;
        self.store.remove_invitation(room, me).await
    }

    /// Deletes a room with its history (server admins only): every member leaves first (each
    /// hears it, and their subscriptions to the room end), then the room and its messages go.
    pub async fn delete_room(&self, caller: &Caller, room: RoomId) -> Result<bool> {
        let admin = self.require_admin(caller).await?;
        self.existing_room(room).await?;
        loop {
            let mut members = self
                .store
                .memberships(room, None, limits::MEMBERS_MAX)
                .await?;
            if members.is_empty() {
                break;
            }
            // The owner last, so that nobody is handed the room on the way out.
            members.sort_by_key(|m| m.role == RoomRole::Owner);
            for member in members {
                let removed = self
                    .store
                    .remove_member(room, member.user.id, Departure::Left)
                    .await?;
                if removed.changed {
                    self.note_removed(member.user.id, room, RemovalReason::Deleted)
                        .await;
                }
            }
        }
        // Whoever joined while the others were leaving is told here, straight on the bus (the
        // store announces nothing for a deleted room), so their subscriptions end too.
        for user in self.store.delete_room(room).await? {
            self.note_removed(user, room, RemovalReason::Deleted).await;
            if let Ok(user) = self.user(user).await {
                self.bus
                    .publish(RoomEvent::MemberLeft {
                        room_id: room,
                        user,
                    })
                    .await;
            }
        }
        tracing::info!(%admin, %room, "room deleted");
        Ok(true)
    }

    /// Up to `limit` members of a room the caller may see, in the order they joined. Those of
    /// a private room are listed to its members only.
    pub async fn members(&self, caller: &Caller, room: RoomId, limit: usize) -> Result<Vec<User>> {
        self.may_list_members(caller, room).await?;
        self.store
            .members(room, limit.min(limits::MEMBERS_MAX))
            .await
    }

    /// Up to `limit` memberships of a room the caller may see, after the member `after`.
    pub async fn memberships(
        &self,
        caller: &Caller,
        room: RoomId,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<Vec<Membership>> {
        self.may_list_members(caller, room).await?;
        self.store
            .memberships(room, after, limit.min(limits::MEMBERS_MAX))
            .await
    }

    async fn may_list_members(&self, caller: &Caller, room: RoomId) -> Result<()> {
        let seen = self.seen_room(caller, room).await?;
        if seen.room.is_private() && seen.membership.is_none() {
            return Err(Error::forbidden(
                "the members of a private room are listed to its members only",
            ));
        }
        Ok(())
    }

    /// The caller's membership of a room, if any.
    pub async fn my_membership(&self, caller: &Caller, room: RoomId) -> Result<Option<Membership>> {
        let me = caller.user_id()?;
        self.store.membership(room, me).await
    }

    pub async fn member_count(&self, room: RoomId) -> Result<u64> {
        self.store.member_count(room).await
    }

    pub(super) async fn existing_room(&self, room: RoomId) -> Result<Room> {
        self.store
            .room(room)
            .await?
            .ok_or_else(|| Error::not_found("room not found"))
    }
}
