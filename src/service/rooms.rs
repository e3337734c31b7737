//! Rooms: creating, the directory, joining and leaving, members.

use super::{ChatService, PageArgs, limits};
use crate::{
    auth::Caller,
    error::{Error, Result},
    model::{Page, PageRequest, Room, RoomEvent, RoomId, User},
    service::limiter::Kind,
};

impl ChatService {
    pub async fn create_room(&self, caller: &Caller, name: &str) -> Result<Room> {
        let user = caller.user_id()?;
        let name = limits::room_name(name)?;
        let rates = &self.guards.rates;
        self.take(Kind::RoomsCreated, rates.rooms_created, &user.to_hex())
            .await?;
        self.room_allowance(user).await?;
        self.store.create_room(&name, user).await
    }

    pub async fn room(&self, caller: &Caller, id: RoomId) -> Result<Option<Room>> {
        caller.user()?;
        self.store.room(id).await
    }

    /// The room directory, oldest first.
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

    pub async fn join_room(&self, caller: &Caller, room: RoomId) -> Result<Room> {
        let me = self.me(caller).await?;
        self.take(Kind::Joins, self.guards.rates.joins, &me.id.to_hex())
            .await?;
        let found = self.existing_room(room).await?;
        if !self.store.is_member(room, me.id).await? {
            self.room_allowance(me.id).await?;
        }
        self.store.add_member(room, me.id).await?;
        Ok(found)
    }

    /// Leaves a room; `false` when the caller was not a member.
    pub async fn leave_room(&self, caller: &Caller, room: RoomId) -> Result<bool> {
        let me = self.me(caller).await?;
        self.existing_room(room).await?;
        Ok(self.store.remove_member(room, me.id).await?.changed)
    }

    /// Deletes a room with its history (server admins only): every member leaves first (each
    /// hears it, and their subscriptions to the room end), then the room and its messages go.
    pub async fn delete_room(&self, caller: &Caller, room: RoomId) -> Result<bool> {
        let admin = self.require_admin(caller).await?;
        self.existing_room(room).await?;
        loop {
            let members = self.store.members(room, limits::MEMBERS_MAX).await?;
            if members.is_empty() {
                break;
            }
            for member in members {
                self.store.remove_member(room, member.id).await?;
            }
        }
        // Whoever joined while the others were leaving is told here, straight on the bus (the
        // store announces nothing for a deleted room), so their subscriptions end too.
        for user in self.store.delete_room(room).await? {
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

    pub async fn members(&self, room: RoomId, limit: usize) -> Result<Vec<User>> {
        self.store
            .members(room, limit.min(limits::MEMBERS_MAX))
            .await
    }

    pub async fn member_count(&self, room: RoomId) -> Result<u64> {
        self.store.member_count(room).await
    }

    // --- messages ---

    pub(super) async fn existing_room(&self, room: RoomId) -> Result<Room> {
        self.store
            .room(room)
            .await?
            .ok_or_else(|| Error::not_found("room not found"))
    }
}
