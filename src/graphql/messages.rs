//! Messages: history, sending, editing, deleting, typing, and the live subscriptions.

use async_graphql::{
    Context, ErrorExtensions, ID, Object, Result, Subscription, connection::Connection,
};
use futures_util::{Stream, StreamExt, stream::BoxStream};

use super::{
    GqlResult, caller, connection, id_arg,
    live::{Feed, FeedHandoff, InjectedEvent, OperationStarted},
    page_complexity, page_size, service,
    types::{Message, RoomEvent},
};
use crate::{
    error::Error,
    model::{self, parse_id},
    service::{PageArgs, limits},
};

#[derive(Default)]
pub struct MessageQuery;

#[Object]
impl MessageQuery {
    /// A room's messages in chronological order (members only). With no arguments, the newest
    /// page; `last`/`before` page backwards, `first`/`after` forwards (at most 100 a page).
    // `first.max(last)`: the larger one given (giving both is refused anyway).
    #[graphql(complexity = "page_complexity(
        page_size(first.max(last), limits::PAGE_DEFAULT, limits::PAGE_MAX),
        child_complexity
    )")]
    async fn messages(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
        last: Option<i32>,
        before: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Message>> {
        let room = id_arg("roomId", &room_id)?;
        let args = PageArgs {
            first: first.map(i64::from),
            after,
            last: last.map(i64::from),
            before,
        };
        let page = service(ctx)?
            .messages(caller(ctx), room, &args)
            .await
            .gql()?;
        Ok(connection(page, |m| (m.id, Message(m))))
    }
}

#[derive(Default)]
pub struct MessageMutation;

#[Object]
impl MessageMutation {
    /// Sends a message (1–4000 characters) to a room the caller is a member of. The same
    /// `clientId` from the same sender in the same room returns the first message instead of
    /// sending a duplicate.
    async fn send_message(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
        body: String,
        client_id: Option<String>,
    ) -> Result<Message> {
        let room = id_arg("roomId", &room_id)?;
        service(ctx)?
            .send_message(caller(ctx), room, &body, client_id.as_deref())
            .await
            .map(Message)
            .gql()
    }

    /// Moves the caller's read marker in a room forward to `messageId` (an older message than
    /// their marker changes nothing) and returns the room with its new counts.
    async fn mark_read(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
        message_id: ID,
    ) -> Result<super::types::Room> {
        let room = id_arg("roomId", &room_id)?;
        let message = id_arg("messageId", &message_id)?;
        let service = service(ctx)?;
        let state = service.mark_read(caller(ctx), room, message).await.gql()?;
        let seen = service.seen_room(caller(ctx), room).await.gql()?;
        Ok(super::types::Room::with_read_state(seen.room, state))
    }

    /// Replaces the body of one of the caller's own messages.
    async fn edit_message(
        &self,
        ctx: &Context<'_>,
        message_id: ID,
        body: String,
    ) -> Result<Message> {
        let id = id_arg("messageId", &message_id)?;
        service(ctx)?
            .edit_message(caller(ctx), id, &body)
            .await
            .map(Message)
            .gql()
    }

    /// Deletes one of the caller's own messages and returns its id.
    async fn delete_message(&self, ctx: &Context<'_>, message_id: ID) -> Result<ID> {
        let id = id_arg("messageId", &message_id)?;
        let deleted = service(ctx)?.delete_message(caller(ctx), id).await.gql()?;
        Ok(ID(deleted.id.to_hex()))
    }

    /// Tells the room's subscribers the caller started or stopped typing.
    async fn set_typing(&self, ctx: &Context<'_>, room_id: ID, typing: bool) -> Result<bool> {
        let room = id_arg("roomId", &room_id)?;
        service(ctx)?
            .set_typing(caller(ctx), room, typing)
            .await
            .gql()?;
        Ok(true)
    }
}

#[derive(Default)]
pub struct MessageSubscription;

type Events = Feed;

async fn events(ctx: &Context<'_>, room_id: &ID, after: Option<&ID>) -> Result<Events> {
    let room = id_arg("roomId", room_id)?;
    let after = after
        .map(|id| parse_id("after", id.as_str()))
        .transpose()
        .gql()?;
    let stream = service(ctx)?
        .room_events(caller(ctx), room, after)
        .await
        .gql()?;
    if let Some(started) = ctx.data_opt::<OperationStarted>() {
        started.fire();
    }
    // Presence changes reach `myEvents` and Socket.IO; a room's own stream does not show them.
    let shown = stream.filter(|event| {
        let keep = !matches!(
            event.as_deref(),
            Ok(model::RoomEvent::PresenceChanged { .. } | model::RoomEvent::ForUser(_))
        );
        async move { keep }
    });
    Ok(Box::pin(shown))
}

/// Keeps the events `pick` maps to a value, and passes errors on.
fn select<T: Send + 'static>(
    events: Events,
    pick: fn(&model::RoomEvent) -> Option<T>,
) -> impl Stream<Item = Result<T>> + Send + 'static {
    events.filter_map(move |event| {
        let item = match event {
            Ok(event) => pick(&event).map(Ok),
            Err(e) => Some(Err::<T, Error>(e).map_err(|e| e.extend())),
        };
        async move { item }
    })
}

#[Subscription]
impl MessageSubscription {
    /// New messages in a room (members only).
    async fn message_added(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
    ) -> Result<impl Stream<Item = Result<Message>>> {
        Ok(select(
            events(ctx, &room_id, None).await?,
            |event| match event {
                model::RoomEvent::MessageAdded(m) => Some(Message(m.clone())),
                _ => None,
            },
        ))
    }

    /// Ids of messages deleted in a room (members only).
    async fn message_deleted(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
    ) -> Result<impl Stream<Item = Result<ID>>> {
        Ok(select(
            events(ctx, &room_id, None).await?,
            |event| match event {
                model::RoomEvent::MessageDeleted { message_id, .. } => {
                    Some(ID(message_id.to_hex()))
                }
                _ => None,
            },
        ))
    }

    /// Everything that happens in a room (members only). With `after` (a message id), every
    /// message created after it is replayed first, then the stream goes live with no gap and no
    /// duplicate: reconnect with the last id you saw and miss nothing.
    async fn room_events(
        &self,
        ctx: &Context<'_>,
        room_id: ID,
        after: Option<ID>,
    ) -> Result<BoxStream<'static, Result<RoomEvent>>> {
        // Rendering one event for every subscriber of an operation (see `fanout`): the caller
        // was checked when the subscription started.
        if let Some(InjectedEvent(event)) = ctx.data_opt::<InjectedEvent>() {
            let event = RoomEvent::of(event);
            return Ok(futures_util::stream::iter(event.map(Ok)).boxed());
        }
        let mut feed = events(ctx, &room_id, after.as_ref()).await?;
        if let Some(handoff) = ctx.data_opt::<FeedHandoff>() {
            match handoff.hand_over(feed) {
                // The socket streams the feed itself; this stream has nothing more to say.
                Ok(()) => return Ok(futures_util::stream::pending().boxed()),
                Err(returned) => feed = returned,
            }
        }
        Ok(select(feed, RoomEvent::of).boxed())
    }
}
