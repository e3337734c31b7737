//! A room's live feed for one subscriber: optional replay from the store, then live events,
//! with no gap and no duplicate. One file, with its tests, because its invariants (numbers
//! seen, ids delivered) hold across replay, live delivery and catch-up alike.
//!
//! The bus subscription is taken *before* the store is read, so an event committed during the
//! replay is both in the store and queued on the feed. Two numbers say what the subscriber has:
//! `last_id`, its newest message (ids follow commit order within a room), and `last_seq`, the
//! room change number (see [`Message::seq`]) up to which every change is reflected in what it
//! was given. A live message event numbered at or below `last_seq` is skipped; one numbered
//! right after it is delivered (a `MessageAdded` at or below `last_id` was replayed, and is
//! skipped too).
//!
//! A live event numbered further ahead means changes are missing: published by another
//! instance and not here yet, or lost while Redis was down. So do a lag (`Lagged`, a bus
//! resync). Either way the feed catches up from the store: first the edits and deletions, among
//! the changes after `last_seq`, of messages the subscriber has; then the messages after
//! `last_id`, in id order, as they are now. Every catch-up checks membership again first, since
//! the subscriber's own departure may be among the events lost or not here yet. Joins and typing are not
//! replayed.
//!
//! The feed ends after the subscriber's own departure: quietly when they left, with a
//! `FORBIDDEN` error when a moderator removed them (or when a lag hides how they went).

use std::{collections::HashSet, sync::Arc};

use futures_util::Stream;

use crate::{
    bus::{Received, RoomFeed},
    error::{Error, Result},
    model::{Message, MessageId, RoomEvent, RoomId, UserId},
    store::Store,
};

const REPLAY_BATCH: usize = 100;
/// Changes read per catch-up query.
const CATCH_UP_BATCH: usize = 500;

/// Where a feed starts.
pub(super) struct Start {
    pub room: RoomId,
    pub subscriber: UserId,
    /// The newest message the subscriber has.
    pub after: MessageId,
    /// The room's change number when the feed was taken (see [`Store::room_head`]).
    pub seq: u64,
    /// Whether to replay the messages after `after` first.
    pub replay: bool,
}

/// What ends the feed of a subscriber who was removed from the room (kicked, banned, or gone
/// while events were lost).
fn removed_error() -> Error {
    Error::forbidden("you are no longer a member of this room")
}

/// The event a stored message stands for when replayed: a tombstone as its deletion.
fn replayed(message: Message) -> RoomEvent {
    if message.is_deleted() {
        RoomEvent::MessageDeleted {
            room_id: message.room_id,
            message_id: message.id,
            seq: message.seq,
            deleted_by: message.deleted_by,
        }
    } else {
        RoomEvent::MessageAdded(message)
    }
}

/// What the subscriber has been given (see the module docs).
struct Position {
    last_id: MessageId,
    last_seq: u64,
    /// Deletions replayed from tombstones, whose live copies may still be queued. They are all
    /// ahead of the first live message newer than the replay, which clears this.
    replayed_deletions: HashSet<MessageId>,
}

/// What to do with a live event.
enum Verdict {
    Deliver,
    Skip,
    CatchUp,
}

impl Position {
    fn replay(&mut self, message: Message) -> RoomEvent {
        self.last_id = self.last_id.max(message.id);
        if message.is_deleted() {
            self.replayed_deletions.insert(message.id);
        }
        replayed(message)
    }

    fn live(&mut self, event: &RoomEvent) -> Verdict {
        let Some(seq) = event.seq() else {
            return Verdict::Deliver;
        };
        if seq <= self.last_seq {
            return Verdict::Skip;
        }
        if seq > self.last_seq + 1 {
            return Verdict::CatchUp;
        }
        self.last_seq = seq;
        match event {
            RoomEvent::MessageAdded(message) => {
                if message.id <= self.last_id {
                    return Verdict::Skip;
                }
                self.last_id = message.id;
                self.replayed_deletions.clear();
            }
            RoomEvent::MessageDeleted { message_id, .. }
                if self.replayed_deletions.remove(message_id) =>
            {
                return Verdict::Skip;
            }
            _ => {}
        }
        Verdict::Deliver
    }

    /// The event a change read from the store stands for, for a message at or below `known`
    /// (one the subscriber has): its deletion or its edit. Newer messages are replayed after,
    /// in id order, and their creation says nothing here.
    fn change_to_known(&mut self, message: Message, known: MessageId) -> Option<RoomEvent> {
        if message.id > known {
            None
        } else if message.is_deleted() {
            (!self.replayed_deletions.remove(&message.id)).then(|| replayed(message))
        } else if message.edited_at.is_some() {
            Some(RoomEvent::MessageEdited(message))
        } else {
            None
        }
    }
}

/// The feed of `start.room` for `start.subscriber` (see the module docs).
pub(super) fn room_feed(
    store: Arc<dyn Store>,
    mut feed: RoomFeed,
    start: Start,
) -> impl Stream<Item = Result<Arc<RoomEvent>>> + Send + 'static {
    let Start {
        room,
        subscriber,
        after,
        seq,
        replay,
    } = start;
    async_stream::stream! {
        let mut position = Position {
            last_id: after,
            last_seq: seq,
            replayed_deletions: HashSet::new(),
        };
        // Set when a replay of new messages is due: at the start (with `after`), and as the
        // second step of every catch-up.
        let mut replay_new = replay;
        let mut catch_up = false;
        loop {
            let mut read_up_to = position.last_seq;
            if catch_up {
                // Still a member? Their removal may be among the events not seen.
                match store.is_member(room, subscriber).await {
                    Ok(true) => {}
                    Ok(false) => {
                        yield Err(removed_error());
                        return;
                    }
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
                }
                // First the edits and deletions of messages the subscriber has, up to the
                // newest change number read, which then covers everything before it.
                let known = position.last_id;
                loop {
                    let batch = match store.changes_after(room, read_up_to, CATCH_UP_BATCH).await {
                        Ok(batch) => batch,
                        Err(e) => {
                            yield Err(e);
                            return;
                        }
                    };
                    let complete = batch.len() < CATCH_UP_BATCH;
                    let before = read_up_to;
                    for message in batch {
                        read_up_to = read_up_to.max(message.seq);
                        if let Some(event) = position.change_to_known(message, known) {
                            yield Ok(Arc::new(event));
                        }
                    }
                    if complete || read_up_to == before {
                        break;
                    }
                }
                replay_new = true;
            }
            if replay_new {
                // The new messages, in id order, as they are now: read after a catch-up's
                // changes, they reflect every change up to `read_up_to`.
                loop {
                    let batch = match store.messages_after(room, position.last_id, REPLAY_BATCH).await {
                        Ok(batch) => batch,
                        Err(e) => {
                            yield Err(e);
                            return;
                        }
                    };
                    let complete = batch.len() < REPLAY_BATCH;
                    for message in batch {
                        yield Ok(Arc::new(position.replay(message)));
                    }
                    if complete {
                        break;
                    }
                }
                replay_new = false;
            }
            position.last_seq = position.last_seq.max(read_up_to);
            catch_up = false;
            match feed.recv().await {
                Received::Event(event) => {
                    match position.live(&event) {
                        Verdict::Skip => continue,
                        Verdict::CatchUp => {
                            // The store holds this change and every one before it.
                            catch_up = true;
                            continue;
                        }
                        Verdict::Deliver => {}
                    }
                    let departed = event.departed() == Some(subscriber);
                    let removed = departed && !matches!(&*event, RoomEvent::MemberLeft { .. });
                    yield Ok(event);
                    if removed {
                        yield Err(removed_error());
                    }
                    if departed {
                        // No longer a member: the feed ends here.
                        return;
                    }
                }
                Received::Lagged(missed) => {
                    tracing::warn!(%room, missed, "subscriber fell behind; catching up from the store");
                    catch_up = true;
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
        store::{NewMessage, sqlite::SqliteStore},
    };

    fn start(room: RoomId, subscriber: UserId, after: MessageId, seq: u64, replay: bool) -> Start {
        Start {
            room,
            subscriber,
            after,
            seq,
            replay,
        }
    }

    async fn send(store: &Arc<dyn Store>, room: RoomId, sender: UserId, body: &str) -> Message {
        let message = NewMessage {
            room_id: room,
            sender_id: sender,
            body: body.into(),
            client_id: None,
            mentions: Vec::new(),
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
        let room = store
            .create_room(crate::store::NewRoom::public("lobby", user.id))
            .await
            .unwrap();
        let seen = send(&store, room.id, user.id, "seen").await;
        // The feed is taken first, then messages are stored and published, as during a replay.
        let feed = bus.subscribe(room.id);
        let mut sent = Vec::new();
        for i in 0..10 {
            let message = send(&store, room.id, user.id, &format!("m{i}")).await;
            sent.push(message.id);
            bus.publish(RoomEvent::MessageAdded(message)).await;
        }
        let events = room_feed(
            store.clone(),
            feed,
            start(room.id, user.id, seen.id, 1, true),
        );
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
        let room = store
            .create_room(crate::store::NewRoom::public("lobby", user.id))
            .await
            .unwrap();
        let feed = bus.subscribe(room.id);
        let zero = MessageId::from_bytes([0; 12]);
        let events = room_feed(store.clone(), feed, start(room.id, user.id, zero, 0, false));

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

    /// A store with user `ada` and her room `lobby`, and a bus.
    async fn lobby() -> (
        Arc<dyn Store>,
        LocalBus,
        crate::model::User,
        crate::model::Room,
    ) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.unwrap());
        let user = store.create_user("ada", "hash").await.unwrap();
        let room = store
            .create_room(crate::store::NewRoom::public("lobby", user.id))
            .await
            .unwrap();
        (store, LocalBus::new(), user, room)
    }

    /// A live feed of `room` for `user`, from where the room stands now.
    async fn feed_at_head(
        store: &Arc<dyn Store>,
        bus: &LocalBus,
        room: RoomId,
        user: UserId,
    ) -> std::pin::Pin<Box<impl futures_util::Stream<Item = Result<Arc<RoomEvent>>> + use<>>> {
        let feed = bus.subscribe(room);
        let head = store.room_head(room).await.unwrap();
        let after = head
            .last_message
            .unwrap_or_else(|| MessageId::from_bytes([0; 12]));
        Box::pin(room_feed(
            store.clone(),
            feed,
            start(room, user, after, head.seq, false),
        ))
    }

    async fn next_event<S: futures_util::Stream<Item = Result<Arc<RoomEvent>>> + Unpin>(
        events: &mut S,
    ) -> RoomEvent {
        // The timeout only turns a lost event into a failure instead of a hang.
        let next = tokio::time::timeout(std::time::Duration::from_secs(20), events.next());
        (*next.await.expect("an event arrives").unwrap().unwrap()).clone()
    }

    #[tokio::test]
    async fn changes_announced_out_of_order_are_delivered_in_order_once() {
        let (store, bus, user, room) = lobby().await;
        let mut events = feed_at_head(&store, &bus, room.id, user.id).await;
        // As from two instances: the third change is announced before the first two.
        let mut sent = Vec::new();
        for body in ["one", "two", "three"] {
            sent.push(send(&store, room.id, user.id, body).await);
        }
        for i in [2, 0, 1] {
            bus.publish(RoomEvent::MessageAdded(sent[i].clone())).await;
        }
        let four = send(&store, room.id, user.id, "four").await;
        bus.publish(RoomEvent::MessageAdded(four.clone())).await;
        let mut received = Vec::new();
        for _ in 0..4 {
            received.push(next_added(&mut events).await);
        }
        assert_eq!(received, [sent[0].id, sent[1].id, sent[2].id, four.id]);
    }

    #[tokio::test]
    async fn a_resync_brings_edits_and_deletions_of_messages_the_subscriber_had() {
        let (store, bus, user, room) = lobby().await;
        let kept = send(&store, room.id, user.id, "kept").await;
        let doomed = send(&store, room.id, user.id, "doomed").await;
        let mut events = feed_at_head(&store, &bus, room.id, user.id).await;
        // Changes whose events never reach this instance (Redis was down), then a resync.
        let edited = store
            .edit_message(kept.id, "kept, edited", &[])
            .await
            .unwrap();
        let deleted = store.delete_message(doomed.id, None).await.unwrap().value;
        let new = send(&store, room.id, user.id, "new").await;
        bus.resync_all();
        assert_eq!(
            next_event(&mut events).await,
            RoomEvent::MessageEdited(edited)
        );
        assert_eq!(
            next_event(&mut events).await,
            RoomEvent::MessageDeleted {
                room_id: room.id,
                message_id: doomed.id,
                seq: deleted.seq,
                deleted_by: None,
            }
        );
        assert_eq!(next_added(&mut events).await, new.id);
    }

    #[tokio::test]
    async fn a_long_catch_up_adds_a_message_edited_late_once_and_in_order() {
        let (store, bus, user, room) = lobby().await;
        let mut events = feed_at_head(&store, &bus, room.id, user.id).await;
        // More changes than one catch-up read, none announced; the first message is edited
        // last, so its change number comes after every other.
        let first = send(&store, room.id, user.id, "first").await;
        let mut sent = vec![first.id];
        for i in 0..CATCH_UP_BATCH + 10 {
            sent.push(send(&store, room.id, user.id, &format!("m{i}")).await.id);
        }
        store
            .edit_message(first.id, "first, edited", &[])
            .await
            .unwrap();
        bus.resync_all();
        match next_event(&mut events).await {
            RoomEvent::MessageAdded(m) => {
                assert_eq!((m.id, m.body.as_str()), (first.id, "first, edited"))
            }
            other => panic!("unexpected {other:?}"),
        }
        for id in &sent[1..] {
            assert_eq!(next_added(&mut events).await, *id);
        }
    }
}
