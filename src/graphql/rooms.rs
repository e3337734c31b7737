//! Rooms: the directory, membership, direct rooms, invitations, roles and moderation.

use async_graphql::{Context, ID, Object, Result, connection::Connection};

use super::{
    GqlResult, caller, connection, id_arg, page_complexity, page_size, service,
    types::{Invitation, Membership, ModerationEntry, Room, RoomRole, RoomVisibility},
};
use crate::{
    model::ModerationId,
    service::{PageArgs, limits},
};

/// What a mutation that changes who is in a room costs: each one wakes every subscriber of
/// the room, so a document holds a few dozen at most.
const MEMBERSHIP_COST: usize = 100;

#[derive(Default)]
pub struct RoomQuery;

#[Object]
impl RoomQuery {
    /// A room by id, or null when there is none (or it is private and the caller is neither a
    /// member nor invited).
    async fn room(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Room>> {
        let id = id_arg("id", &id)?;
        Ok(service(ctx)?
            .room(caller(ctx), id)
            .await
            .gql()?
            .map(Room::from))
    }

    /// The directory: every public room, oldest first (at most 100 a page, 50 by default).
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
        Ok(connection(page, |room| (room.id, Room::from(room))))
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
        let service = service(ctx)?;
        let page = service.my_rooms(caller(ctx), &args).await.gql()?;
        // Counts or newest messages asked for: read for the whole page at once.
        let look = ctx.look_ahead();
        let node = [look.field("edges").field("node"), look.field("nodes")];
        let summarised = node.iter().any(|n| {
            [
                "unreadCount",
                "mentionCount",
                "lastReadMessageId",
                "lastMessage",
            ]
            .iter()
            .any(|f| n.field(f).exists())
        });
        if !summarised || page.items.is_empty() {
            return Ok(connection(page, |room| (room.id, Room::from(room))));
        }
        let ids = page.items.iter().map(|r| r.id).collect();
        let mut summaries = service
            .room_summaries(caller(ctx), ids)
            .await
            .gql()?
            .into_iter();
        Ok(connection(page, |room| {
            let (state, last) = summaries.next().unwrap_or_default();
            (room.id, Room::with_summary(room, state, last))
        }))
    }

    /// The caller's invitations to rooms, newest first.
    #[graphql(complexity = "page_complexity(limits::INVITATIONS_MAX, child_complexity)")]
    async fn invitations(&self, ctx: &Context<'_>) -> Result<Vec<Invitation>> {
        let invitations = service(ctx)?.invitations(caller(ctx)).await.gql()?;
        Ok(invitations.into_iter().map(Invitation).collect())
    }

    /// A room's moderation log, newest first (its owner and admins only; at most 100 a page,
    /// 50 by default); `after` is a cursor from an earlier page.
    #[graphql(complexity = "page_complexity(
        page_size(first, crate::service::LOG_PAGE_DEFAULT, crate::service::LOG_PAGE_MAX),
        child_complexity
    )")]
    async fn moderation_log(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, ModerationEntry>> {
        let room = id_arg("roomId", &room_id)?;
        let after = after
            .map(|a| crate::model::parse_id::<ModerationId>("after", &a))
            .transpose()
            .gql()?;
        let (entries, more) = service(ctx)?
            .moderation_log(caller(ctx), room, first.map(i64::from), after)
            .await
            .gql()?;
        let mut page = Connection::new(after.is_some(), more);
        page.edges.extend(entries.into_iter().map(|entry| {
            async_graphql::connection::Edge::new(entry.id.to_hex(), ModerationEntry(entry))
        }));
        Ok(page)
    }
}

#[derive(Default)]
pub struct RoomMutation;

#[Object]
impl RoomMutation {
    /// Creates a room (name: 1–64 characters, unique in any letter case; topic: up to 500);
    /// the creator joins it as its owner.
    async fn create_room(
        &self,
        ctx: &Context<'_>,
        name: String,
        #[graphql(default_with = "RoomVisibility::Public")] visibility: RoomVisibility,
        topic: Option<String>,
    ) -> Result<Room> {
        service(ctx)?
            .create_room(caller(ctx), &name, visibility.into(), topic.as_deref())
            .await
            .map(Room::from)
            .gql()
    }

    /// Changes a room's name, topic (blank: none) or visibility (its owner and admins).
    #[graphql(complexity = "MEMBERSHIP_COST + child_complexity")]
    async fn update_room(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
        name: Option<String>,
        topic: Option<String>,
        visibility: Option<RoomVisibility>,
    ) -> Result<Room> {
        let room = id_arg("roomId", &room_id)?;
        service(ctx)?
            .update_room(
                caller(ctx),
                room,
                name.as_deref(),
                topic.as_deref(),
                visibility.map(Into::into),
            )
            .await
            .map(Room::from)
            .gql()
    }

    /// The one direct room of the caller and another user, created when there is none.
    #[graphql(complexity = "MEMBERSHIP_COST + child_complexity")]
    async fn direct_room(&self, ctx: &Context<'_>, user_id: ID) -> Result<Room> {
        let user = id_arg("userId", &user_id)?;
        service(ctx)?
            .direct_room(caller(ctx), user)
            .await
            .map(Room::from)
            .gql()
    }

    /// Invites a user to a private room (its owner and admins; a public room needs no
    /// invitation). Inviting again keeps the first invitation.
    #[graphql(complexity = "MEMBERSHIP_COST + child_complexity")]
    async fn invite_to_room(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
        user_id: ID,
    ) -> Result<Invitation> {
        let room = id_arg("roomId", &room_id)?;
        let user = id_arg("userId", &user_id)?;
        service(ctx)?
            .invite_to_room(caller(ctx), room, user)
            .await
            .map(Invitation)
            .gql()
    }

    /// Declines an invitation; false when there was none.
    async fn decline_invitation(&self, ctx: &Context<'_>, room_id: ID) -> Result<bool> {
        let room = id_arg("roomId", &room_id)?;
        service(ctx)?
            .decline_invitation(caller(ctx), room)
            .await
            .gql()
    }

    /// Sets a member's role (the owner only). Making someone OWNER hands the room over; the
    /// old owner becomes an ADMIN.
    #[graphql(complexity = "MEMBERSHIP_COST + child_complexity")]
    async fn set_member_role(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
        user_id: ID,
        role: RoomRole,
    ) -> Result<Membership> {
        let room = id_arg("roomId", &room_id)?;
        let user = id_arg("userId", &user_id)?;
        service(ctx)?
            .set_member_role(caller(ctx), room, user, role.into())
            .await
            .map(Membership)
            .gql()
    }

    /// Removes a member of a lower role from the room (its owner and admins).
    #[graphql(complexity = "MEMBERSHIP_COST")]
    async fn kick_member(&self, ctx: &Context<'_>, room_id: ID, user_id: ID) -> Result<bool> {
        let room = id_arg("roomId", &room_id)?;
        let user = id_arg("userId", &user_id)?;
        service(ctx)?
            .kick_member(caller(ctx), room, user)
            .await
            .gql()
    }

    /// Bans a user from the room (its owner and admins): a member of a lower role leaves it,
    /// and nobody banned joins or is invited until unbanned. False when already banned.
    #[graphql(complexity = "MEMBERSHIP_COST")]
    async fn ban_member(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
        user_id: ID,
        reason: Option<String>,
    ) -> Result<bool> {
        let room = id_arg("roomId", &room_id)?;
        let user = id_arg("userId", &user_id)?;
        service(ctx)?
            .ban_member(caller(ctx), room, user, reason.as_deref())
            .await
            .gql()
    }

    /// Lifts a ban (the room's owner and admins); false when there was none.
    #[graphql(complexity = "MEMBERSHIP_COST")]
    async fn unban_member(&self, ctx: &Context<'_>, room_id: ID, user_id: ID) -> Result<bool> {
        let room = id_arg("roomId", &room_id)?;
        let user = id_arg("userId", &user_id)?;
        service(ctx)?
            .unban_member(caller(ctx), room, user)
            .await
            .gql()
    }

    /// Joins a room: a public one, or a private one the caller is invited to (which spends the
    /// invitation); joining again changes nothing.
    async fn join_room(&self, ctx: &Context<'_>, room_id: ID) -> Result<Room> {
        let room = id_arg("roomId", &room_id)?;
        service(ctx)?
            .join_room(caller(ctx), room)
            .await
            .map(Room::from)
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
