//! Rooms: the directory, membership.

use async_graphql::{Context, ID, Object, Result, connection::Connection};

use super::{
    GqlResult, caller, connection, id_arg, page_complexity, page_size, service, types::Room,
};
use crate::service::{PageArgs, limits};

#[derive(Default)]
pub struct RoomQuery;

#[Object]
impl RoomQuery {
    /// A room by id, or null when there is none.
    async fn room(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Room>> {
        let id = id_arg("id", &id)?;
        Ok(service(ctx)?.room(caller(ctx), id).await.gql()?.map(Room))
    }

    /// Every room, oldest first (at most 100 a page, 50 by default).
    #[graphql(complexity = "page_complexity(
        page_size(first, limits::PAGE_DEFAULT, limits::PAGE_MAX),
        child_complexity
    )")]
    async fn rooms(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Room>> {
        let args = PageArgs::forward(first, after);
        let page = service(ctx)?.rooms(caller(ctx), &args).await.gql()?;
        Ok(connection(page, |room| (room.id, Room(room))))
    }

    /// The rooms the signed-in user is a member of, oldest first (at most 100 a page, 50 by
    /// default).
    #[graphql(complexity = "page_complexity(
        page_size(first, limits::PAGE_DEFAULT, limits::PAGE_MAX),
        child_complexity
    )")]
    async fn my_rooms(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Room>> {
        let args = PageArgs::forward(first, after);
        let page = service(ctx)?.my_rooms(caller(ctx), &args).await.gql()?;
        Ok(connection(page, |room| (room.id, Room(room))))
    }
}

#[derive(Default)]
pub struct RoomMutation;

#[Object]
impl RoomMutation {
    /// Creates a room (name: 1–64 characters, unique in any letter case); the creator joins it.
    async fn create_room(&self, ctx: &Context<'_>, name: String) -> Result<Room> {
        service(ctx)?
            .create_room(caller(ctx), &name)
            .await
            .map(Room)
            .gql()
    }

    /// Joins a room; joining again changes nothing.
    async fn join_room(&self, ctx: &Context<'_>, room_id: ID) -> Result<Room> {
        let room = id_arg("roomId", &room_id)?;
        service(ctx)?
            .join_room(caller(ctx), room)
            .await
            .map(Room)
            .gql()
    }

    /// Leaves a room; false when the caller was not a member.
    async fn leave_room(&self, ctx: &Context<'_>, room_id: ID) -> Result<bool> {
        let room = id_arg("roomId", &room_id)?;
        service(ctx)?.leave_room(caller(ctx), room).await.gql()
    }

    /// Deletes a room and its history (server admins only). Every member leaves first, so
    /// their subscriptions to it end.
    async fn delete_room(&self, ctx: &Context<'_>, room_id: ID) -> Result<bool> {
        let room = id_arg("roomId", &room_id)?;
        service(ctx)?.delete_room(caller(ctx), room).await.gql()
    }
}
