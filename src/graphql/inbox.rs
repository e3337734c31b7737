//! `myEvents`: one subscription for everything that concerns the caller across their rooms.

use async_graphql::{Context, ID, Result, SimpleObject, Subscription, Union};
use futures_util::{Stream, StreamExt};

use super::{
    GqlResult, caller,
    live::OperationStarted,
    service,
    types::{Invitation, Message, Presence, Room, User},
};
use crate::service::InboxEvent;

#[derive(Default)]
pub struct InboxSubscription;

/// A new message in one of the caller's rooms; `room` gives its new unread and mention counts.
#[derive(SimpleObject)]
pub struct RoomActivity {
    /// Pass to `myEvents(after:)` to resume after this event.
    cursor: String,
    room: Room,
    message: Message,
}

/// The caller's read marker in a room moved (on any of their devices).
#[derive(SimpleObject)]
pub struct ReadStateChanged {
    cursor: String,
    room_id: ID,
    unread_count: i32,
    mention_count: i32,
    last_read_message_id: Option<ID>,
}

/// The caller was invited to a private room.
#[derive(SimpleObject)]
pub struct Invited {
    cursor: String,
    invitation: Invitation,
}

/// The caller is no longer a member of a room: `reason` is `left`, `kicked`, `banned`,
/// `deleted` (the room was), or `removed` (found out, with no record of how).
#[derive(SimpleObject)]
pub struct RemovedFromRoom {
    cursor: String,
    room_id: ID,
    reason: String,
}

/// Someone who shares a room with the caller shows another presence. Not replayed on resume:
/// read `presence` of the people you show instead.
#[derive(SimpleObject)]
pub struct PresenceChanged {
    user: User,
    presence: Presence,
}

/// Something that concerns the caller, from `myEvents`.
#[derive(Union)]
pub enum UserEvent {
    RoomActivity(Box<RoomActivity>),
    ReadStateChanged(ReadStateChanged),
    Invited(Invited),
    RemovedFromRoom(RemovedFromRoom),
    PresenceChanged(PresenceChanged),
}

fn count(n: u64) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl From<InboxEvent> for UserEvent {
    fn from(event: InboxEvent) -> Self {
        match event {
            InboxEvent::RoomActivity {
                cursor,
                room,
                message,
            } => Self::RoomActivity(Box::new(RoomActivity {
                cursor,
                room: Room::from(*room),
                message: Message(*message),
            })),
            InboxEvent::ReadStateChanged {
                cursor,
                room_id,
                state,
            } => Self::ReadStateChanged(ReadStateChanged {
                cursor,
                room_id: ID(room_id.to_hex()),
                unread_count: count(state.unread),
                mention_count: count(state.mentions),
                last_read_message_id: state.last_read.map(|id| ID(id.to_hex())),
            }),
            InboxEvent::Invited { cursor, invitation } => Self::Invited(Invited {
                cursor,
                invitation: Invitation(invitation),
            }),
            InboxEvent::RemovedFromRoom {
                cursor,
                room_id,
                reason,
            } => Self::RemovedFromRoom(RemovedFromRoom {
                cursor,
                room_id: ID(room_id.to_hex()),
                reason: reason.as_str().to_owned(),
            }),
            InboxEvent::PresenceChanged { user, shown } => Self::PresenceChanged(PresenceChanged {
                user: User(user),
                presence: shown.into(),
            }),
        }
    }
}

#[Subscription]
impl InboxSubscription {
    /// Everything that concerns you across all your rooms, in one stream: new messages
    /// (`RoomActivity`, with the room's counts), your read markers moving (`ReadStateChanged`),
    /// invitations, removals, and the presence of the people you share a room with (in rooms of
    /// up to 250 members). Pass the `cursor` of the last event you received as `after`
    /// to resume: what happened since is replayed, then the stream goes live, with no gap and
    /// no duplicate, across every room, those joined meanwhile included.
    async fn my_events(
        &self,
        ctx: &Context<'_>,
        after: Option<String>,
    ) -> Result<impl Stream<Item = Result<UserEvent>> + use<>> {
        let events = service(ctx)?
            .my_events(caller(ctx), after.as_deref())
            .await
            .gql()?;
        if let Some(started) = ctx.data_opt::<OperationStarted>() {
            started.fire();
        }
        Ok(events.map(|event| event.map(UserEvent::from).gql()))
    }
}
