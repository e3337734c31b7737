//! A room's live feed for one subscriber: optional replay from the store, then live events,
//! with no gap and no duplicate.
//!
//! The bus subscription is taken *before* the store is read, so an event committed during the
//! replay is both in the store and queued on the feed. Live events arrive in commit order, which
//! is message-id order, so one number says what was delivered: `last_seen`, the newest message
//! given to the subscriber; a queued `MessageAdded` at or below it was replayed and is skipped.
//! When the subscriber falls behind the bus (`Lagged`), the messages after `last_seen` are read
//! again from the store, the same way, and membership is checked again (the subscriber's own
//! `MemberLeft` may be among the events lost).
//!
//! What the store cannot replay after a lag are edits and deletions of messages older than
//! `last_seen`, joins and typing; a lag takes more than `bus::ROOM_BUFFER` events in a burst
//! that the subscriber could not take, and is logged.

use std::{collections::HashSet, sync::Arc};

use futures_util::Stream;

use crate::{
    bus::{Received, RoomFeed},
    error::{Error, Result},
    model::{Message, MessageId, RoomEvent, RoomId, UserId},
    store::Store,
};

const REPLAY_BATCH: usize = 100;

/// The event a stored message stands for when replayed: a tombstone as its deletion.
fn replayed(message: Message) -> RoomEvent {
    if message.is_deleted() {
        RoomEvent::MessageDeleted {
            room_id: message.room_id,
            message_id: message.id,
        }
    } else {
        RoomEvent::MessageAdded(message)
    }
}

/// The feed of `room` for `subscriber`, starting after message `start` (replayed from the
/// store first when `replay` is set).
pub(super) fn room_feed(
    store: Arc<dyn Store>,
    mut feed: RoomFeed,
    room: RoomId,
    subscriber: UserId,
    start: MessageId,
    replay: bool,
) -> impl Stream<Item = Result<Arc<RoomEvent>>> + Send + 'static {
    async_stream::stream! {
        let mut last_seen = start;
        let mut replay = replay;
        // Deletions replayed from tombstones, whose live copies may still be queued. They are
        // all ahead of the first live message newer than the replay, which clears this.
        let mut replayed_deletions: HashSet<MessageId> = HashSet::new();
        loop {
            if replay {
                loop {
                    let batch = match store.messages_after(room, last_seen, REPLAY_BATCH).await {
                        Ok(batch) => batch,
                        Err(e) => {
                            yield Err(e);
                            return;
                        }
                    };
                    let complete = batch.len() < REPLAY_BATCH;
                    for message in batch {
                        last_seen = message.id;
                        if message.is_deleted() {
                            replayed_deletions.insert(message.id);
                        }
                        yield Ok(Arc::new(replayed(message)));
                    }
                    if complete {
                        break;
                    }
                }
                replay = false;
            }
            match feed.recv().await {
                Received::Event(event) => {
                    match &*event {
                        RoomEvent::MessageAdded(message) => {
                            if message.id <= last_seen {
                                continue;
                            }
                            last_seen = message.id;
                            replayed_deletions.clear();
                        }
                        RoomEvent::MessageDeleted { message_id, .. }
                            if replayed_deletions.remove(message_id) =>
                        {
                            continue;
                        }
                        _ => {}
                    }
                    let left = matches!(
                        &*event,
                        RoomEvent::MemberLeft { user, .. } if user.id == subscriber
                    );
                    yield Ok(event);
                    if left {
                        // No longer a member: the feed ends here.
                        return;
                    }
                }
                Received::Lagged(missed) => {
                    tracing::warn!(%room, missed, "subscriber fell behind; resyncing from the store");
                    match store.is_member(room, subscriber).await {
                        Ok(true) => replay = true,
                        Ok(false) => return,
                        Err(e) => {
                            yield Err(e);
                            return;
                        }
                    }
                }
                Received::Closed => {
                    yield Err(Error::internal("the event bus closed"));
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::{
        bus::{EventBus, LocalBus, ROOM_BUFFER},
        model::Message,
        model::ObjectId,
        store::{NewMessage, sqlite::SqliteStore},
    };

    async fn send(store: &Arc<dyn Store>, room: RoomId, sender: UserId, body: &str) -> Message {
        let message = NewMessage {
            room_id: room,
            sender_id: sender,
            body: body.into(),
            client_id: None,
        };
        store.insert_message(message).await.unwrap().value
    }

    async fn next_added<S: futures_util::Stream<Item = Result<Arc<RoomEvent>>> + Unpin>(
        events: &mut S,
    ) -> MessageId {
        // The timeout only turns a lost event into a failure instead of a hang.
        let next = tokio::time::timeout(std::time::Duration::from_secs(20), events.next());
        match &*next.await.expect("an event arrives").unwrap().unwrap() {
            RoomEvent::MessageAdded(m) => m.id,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn messages_both_replayed_and_queued_live_arrive_once() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.unwrap());
        let bus = LocalBus::new();
        let user = store.create_user("ada", "hash").await.unwrap();
        let room = store.create_room("lobby", user.id).await.unwrap();
        let seen = send(&store, room.id, user.id, "seen").await;
        // The feed is taken first, then messages are stored and published, as during a replay.
        let feed = bus.subscribe(room.id);
        let mut sent = Vec::new();
        for i in 0..10 {
            let message = send(&store, room.id, user.id, &format!("m{i}")).await;
            sent.push(message.id);
            bus.publish(RoomEvent::MessageAdded(message)).await;
        }
        let events = room_feed(store.clone(), feed, room.id, user.id, seen.id, true);
        let mut events = Box::pin(events);
        let mut received = Vec::new();
        for _ in 0..sent.len() {
            received.push(next_added(&mut events).await);
        }
        assert_eq!(received, sent);
        let after = send(&store, room.id, user.id, "after").await;
        bus.publish(RoomEvent::MessageAdded(after.clone())).await;
        assert_eq!(
            next_added(&mut events).await,
            after.id,
            "a queued copy came through twice"
        );
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_resynced_with_nothing_lost_or_repeated() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.unwrap());
        let bus = LocalBus::new();
        let user = store.create_user("ada", "hash").await.unwrap();
        let room = store.create_room("lobby", user.id).await.unwrap();
        let feed = bus.subscribe(room.id);
        let start = ObjectId::from_bytes([0; 12]);
        let events = room_feed(store.clone(), feed, room.id, user.id, start, false);

        // More than the room buffer is published before the subscriber reads anything.
        let total = ROOM_BUFFER + 100;
        let mut sent = Vec::with_capacity(total);
        for i in 0..total {
            let message = send(&store, room.id, user.id, &format!("m{i}")).await;
            sent.push(message.id);
            bus.publish(RoomEvent::MessageAdded(message)).await;
        }
        let mut events = Box::pin(events);
        let mut received = Vec::with_capacity(total);
        for _ in 0..total {
            received.push(next_added(&mut events).await);
        }
        assert_eq!(received, sent);
    }
}
