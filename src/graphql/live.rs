//! What a subscription resolver and the socket running it hand each other, as request data.
//!
//! The schema stays a library: its resolvers know these types, not the socket. A WebSocket
//! operation puts them in its request; over HTTP they are absent and resolvers stream as usual.
//! - [`OperationStarted`]: fired once the resolver has taken its room feed, so the socket reads
//!   the client's next message only when the subscription is live.
//! - [`FeedHandoff`]: where `roomEvents` hands its feed to the socket, which renders each event
//!   once for every subscriber of the same operation (`ws::fanout`).
//! - [`InjectedEvent`]: the event such a rendering executes the operation for.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::{error::Result, model::RoomEvent};

/// A room feed, as a subscription resolver takes it.
pub type Feed = std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<Arc<RoomEvent>>> + Send>>;

/// Request data a subscription resolver fires once its event feed is taken. Dropping it unfired
/// (the operation failed or was not a subscription) tells the socket to go on just the same.
pub struct OperationStarted(Mutex<Option<oneshot::Sender<()>>>);

impl OperationStarted {
    pub fn new(sender: oneshot::Sender<()>) -> Self {
        Self(Mutex::new(Some(sender)))
    }

    pub fn fire(&self) {
        if let Some(sender) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = sender.send(());
        }
    }
}

/// Request data: where the `roomEvents` resolver hands its feed to the socket.
pub struct FeedHandoff(Mutex<Option<oneshot::Sender<Feed>>>);

impl FeedHandoff {
    pub fn new(sender: oneshot::Sender<Feed>) -> Self {
        Self(Mutex::new(Some(sender)))
    }

    /// Hands `feed` over; gives it back when nobody takes it.
    pub fn hand_over(&self, feed: Feed) -> std::result::Result<(), Feed> {
        match self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(sender) => sender.send(feed),
            None => Err(feed),
        }
    }
}

/// Request data: render this event instead of subscribing.
pub struct InjectedEvent(pub Arc<RoomEvent>);
