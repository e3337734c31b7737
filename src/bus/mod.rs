//! Room events between the service, which publishes after each commit, and subscribers; and
//! revocations (sessions that ended), which every instance's sockets and session cache hear.
//!
//! [`EventBus`] is a value handed to the service, never a global. The local driver keeps one
//! bounded `broadcast` channel per room that has subscribers: a subscriber that falls more than
//! [`ROOM_BUFFER`] events behind is told how many it missed (`Lagged`) and resyncs from the
//! store, so no queue grows without bound and nothing is dropped silently.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use tokio::sync::{broadcast, watch};

pub mod redis;

use crate::model::{RoomEvent, RoomId, SessionId, UserId};

/// Events buffered per room for its slowest subscriber.
pub const ROOM_BUFFER: usize = 1024;

/// Revocations buffered for the slowest listener; one that falls further behind rechecks.
pub const REVOCATION_BUFFER: usize = 1024;

/// Sessions that ended before their time, told to every instance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Revocation {
    /// These sessions were revoked.
    Sessions(Vec<SessionId>),
    /// Every session of this user ended (the account was deleted or suspended).
    User(UserId),
    /// Revocations may have been missed (the link between instances was down, or a listener
    /// fell behind): whoever holds a session checks it again with the store.
    Recheck,
    /// A suspended user was reinstated: their new sessions count (no socket is reached).
    Reinstated(UserId),
}

impl Revocation {
    /// Whether a socket of `user` in `session` must close (or, for `Recheck`, ask again).
    pub fn reaches(&self, user: UserId, session: SessionId) -> bool {
        match self {
            Self::Sessions(ids) => ids.contains(&session),
            Self::User(id) => *id == user,
            Self::Recheck => true,
            Self::Reinstated(_) => false,
        }
    }
}

#[async_trait]
pub trait EventBus: Send + Sync + 'static {
    /// Delivers an event to every current subscriber of its room.
    async fn publish(&self, event: RoomEvent);
    /// Starts receiving the events of `room` published from now on.
    fn subscribe(&self, room: RoomId) -> RoomFeed;
    /// Tells every instance (this one first) that sessions ended.
    async fn revoke(&self, revocation: Revocation);
    /// Starts receiving revocations told from now on, by any instance.
    fn revocations(&self) -> broadcast::Receiver<Arc<Revocation>>;
    /// How the bus is, for `/readyz`: `local`, or the state of the link between instances.
    fn health(&self) -> &'static str {
        "local"
    }
}

/// What a subscriber receives next.
#[derive(Debug)]
pub enum Received {
    Event(Arc<RoomEvent>),
    /// The subscriber fell behind and this many events were skipped: resync from the store.
    Lagged(u64),
    /// The bus is gone (shutdown).
    Closed,
}

/// One subscriber's feed of one room.
pub struct RoomFeed {
    receiver: broadcast::Receiver<Arc<RoomEvent>>,
    /// Bumped when events may have been missed for every room (the link between instances
    /// was down): the feed then resyncs from the store, as after a lag.
    resync: watch::Receiver<u64>,
    room: RoomId,
    rooms: Arc<Mutex<HashMap<RoomId, broadcast::Sender<Arc<RoomEvent>>>>>,
}

impl RoomFeed {
    pub async fn recv(&mut self) -> Received {
        // An event already queued, with no resync asked for, is taken at once. Waiting on the
        // resync signal means joining its waiter list, shared by every feed of the instance,
        // and leaving it: at full fan-out that was a quarter of the instructions a delivery
        // cost (counted with callgrind).
        if !self.resync.has_changed().unwrap_or(false) {
            match self.receiver.try_recv() {
                Ok(event) => return Received::Event(event),
                Err(broadcast::error::TryRecvError::Lagged(n)) => return Received::Lagged(n),
                Err(broadcast::error::TryRecvError::Closed) => return Received::Closed,
                Err(broadcast::error::TryRecvError::Empty) => {}
            }
        }
        tokio::select! {
            biased;
            Ok(()) = self.resync.changed() => Received::Lagged(0),
            received = self.receiver.recv() => match received {
                Ok(event) => Received::Event(event),
                Err(broadcast::error::RecvError::Lagged(n)) => Received::Lagged(n),
                Err(broadcast::error::RecvError::Closed) => Received::Closed,
            },
        }
    }
}

/// Removes a room's channel when its last subscriber leaves, so idle rooms cost nothing.
impl Drop for RoomFeed {
    fn drop(&mut self) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        // `self.receiver` is still alive here: a count of one means this feed was the last.
        if rooms
            .get(&self.room)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            rooms.remove(&self.room);
        }
    }
}

/// The in-process bus: enough for one instance.
#[derive(Clone)]
pub struct LocalBus {
    rooms: Arc<Mutex<HashMap<RoomId, broadcast::Sender<Arc<RoomEvent>>>>>,
    resync: Arc<watch::Sender<u64>>,
    revocations: broadcast::Sender<Arc<Revocation>>,
}

impl Default for LocalBus {
    fn default() -> Self {
        Self {
            rooms: Arc::default(),
            resync: Arc::new(watch::channel(0).0),
            revocations: broadcast::channel(REVOCATION_BUFFER).0,
        }
    }
}

impl LocalBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tells every feed that events may have been missed: each resyncs from the store; and
    /// every session holder that revocations may have been too.
    pub fn resync_all(&self) {
        self.resync.send_modify(|generation| *generation += 1);
        self.deliver_revocation(Revocation::Recheck);
    }

    /// Delivers a revocation to this instance's listeners only.
    pub fn deliver_revocation(&self, revocation: Revocation) {
        // An error means nobody listens, which is fine.
        let _ = self.revocations.send(Arc::new(revocation));
    }

    /// Rooms that currently have at least one subscriber.
    pub fn active_rooms(&self) -> usize {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Delivers to local subscribers only.
    pub fn deliver(&self, event: Arc<RoomEvent>) {
        let rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = rooms.get(&event.room_id()) {
            // An error means no receiver is left; the last guard removes the entry.
            let _ = tx.send(event);
        }
    }
}

#[async_trait]
impl EventBus for LocalBus {
    async fn publish(&self, event: RoomEvent) {
        self.deliver(Arc::new(event));
    }

    fn subscribe(&self, room: RoomId) -> RoomFeed {
        let mut rooms = self.rooms.lock().unwrap_or_else(|p| p.into_inner());
        let receiver = rooms
            .entry(room)
            .or_insert_with(|| broadcast::channel(ROOM_BUFFER).0)
            .subscribe();
        RoomFeed {
            receiver,
            resync: self.resync.subscribe(),
            room,
            rooms: self.rooms.clone(),
        }
    }

    async fn revoke(&self, revocation: Revocation) {
        self.deliver_revocation(revocation);
    }

    fn revocations(&self) -> broadcast::Receiver<Arc<Revocation>> {
        self.revocations.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ObjectId, User};
    use chrono::Utc;

    fn typing(room: RoomId) -> RoomEvent {
        RoomEvent::Typing {
            room_id: room,
            user: User {
                id: ObjectId::new().into(),
                username: "ada".into(),
                created_at: Utc::now(),
            },
            typing: true,
        }
    }

    #[tokio::test]
    async fn delivers_to_the_room_only_and_forgets_idle_rooms() {
        let bus = LocalBus::new();
        let (a, b) = (RoomId::from(ObjectId::new()), RoomId::from(ObjectId::new()));
        let mut feed_a = bus.subscribe(a);
        let feed_b = bus.subscribe(b);
        assert_eq!(bus.active_rooms(), 2);
        bus.publish(typing(a)).await;
        match feed_a.recv().await {
            Received::Event(event) => assert_eq!(event.room_id(), a),
            other => panic!("expected an event, got {other:?}"),
        }
        drop(feed_b);
        assert_eq!(bus.active_rooms(), 1);
        drop(feed_a);
        assert_eq!(bus.active_rooms(), 0);
    }

    #[tokio::test]
    async fn when_one_of_two_subscribers_leaves_the_other_still_receives() {
        let bus = LocalBus::new();
        let room = RoomId::from(ObjectId::new());
        let first = bus.subscribe(room);
        let mut second = bus.subscribe(room);
        drop(first);
        assert_eq!(bus.active_rooms(), 1);
        bus.publish(typing(room)).await;
        assert!(matches!(second.recv().await, Received::Event(_)));
    }

    #[tokio::test]
    async fn a_resync_reaches_every_feed_as_a_lag() {
        let bus = LocalBus::new();
        let mut feed = bus.subscribe(ObjectId::new().into());
        bus.resync_all();
        assert!(matches!(feed.recv().await, Received::Lagged(0)));
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_it_lagged() {
        let bus = LocalBus::new();
        let room = RoomId::from(ObjectId::new());
        let mut feed = bus.subscribe(room);
        for _ in 0..ROOM_BUFFER + 5 {
            bus.publish(typing(room)).await;
        }
        assert!(matches!(feed.recv().await, Received::Lagged(5)));
    }
}
