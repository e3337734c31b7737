//! A room's live feed for one subscriber: optional replay from the store, then live events,
//! with no gap and no duplicate.
//!
//! The bus subscription is taken *before* the store is read, so an event committed during the
//! replay is both in the store and queued on the feed; the ids replayed are remembered and the
//! queued copy is skipped. When the subscriber falls behind the bus (`Lagged`), the messages
//! created after the last one it saw are read again from the store, the same way.

use std::{collections::HashSet, sync::Arc};

use futures_util::Stream;

use crate::{
    bus::{Received, RoomFeed},
    error::Result,
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

pub(super) fn room_feed(
    store: Arc<dyn Store>,
    mut feed: RoomFeed,
    room: RoomId,
    subscriber: UserId,
    after: Option<MessageId>,
    watermark: MessageId,
) -> impl Stream<Item = Result<Arc<RoomEvent>>> + Send + 'static {
    async_stream::stream! {
        // Ids delivered from the store, so their live copies are not delivered again.
        let mut from_store: HashSet<MessageId> = HashSet::new();
        // The newest message this subscriber has been given, or the point it started from.
        let mut last_seen = after.unwrap_or(watermark);
        let mut replay = after.is_some();
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
                        from_store.insert(message.id);
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
                    if let RoomEvent::MessageAdded(message) = &*event {
                        if from_store.contains(&message.id) {
                            continue;
                        }
                        last_seen = last_seen.max(message.id);
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
                    replay = true;
                }
                Received::Closed => return,
            }
        }
    }
}
