//! One operation on a socket: run it, send its results, say when it is done.
//!
//! A query or mutation streams its one result through async-graphql. A subscription is started
//! by async-graphql (which checks the document and the caller); when its `roomEvents` resolver
//! hands over its room feed, the feed is streamed here instead, each event rendered once for
//! every subscriber of the same operation (`fanout`).

use std::sync::Arc;

use async_graphql::{ErrorExtensions, Request, Response, ServerError, Value};
use axum::extract::ws::Message;
use futures_channel::mpsc;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::oneshot;

use super::{
    MAX_OUTGOING,
    fanout::{Operation as Rendering, Renders, Subscriber},
    protocol::{Protocol, frame, next_frame},
};
use crate::graphql::{
    AppSchema,
    live::{Feed, FeedHandoff},
};

/// How an operation's start ended.
enum Started {
    /// A subscription's room feed was handed over: stream it.
    Streaming(Subscriber, Feed),
    /// Its results ended (or it was refused, with an `error` sent, which ends it without
    /// `complete`).
    Done { refused: bool },
}

/// What an operation needs to run and to answer on its socket.
pub struct OperationRun {
    pub schema: AppSchema,
    pub protocol: Protocol,
    pub id: String,
    /// Its socket's outgoing queue.
    pub out: mpsc::Sender<Message>,
    /// Where it says it is done (its id and generation), before its `complete` goes out.
    pub finished: mpsc::UnboundedSender<(String, u64)>,
    pub generation: u64,
}

impl OperationRun {
    /// Runs `request` and sends its results. With `fan_out` (a subscription), a handed-over
    /// room feed is streamed through the shared renderings.
    ///
    /// The start (running the request until the feed is handed over, or the whole of a query)
    /// is a boxed future of its own, freed once it is done: a live subscription, which may last
    /// for days, keeps only what streaming needs (measured: about half of its task's memory).
    pub fn run(
        self,
        request: Request,
        fan_out: Option<Box<(Rendering, Arc<Renders>)>>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let start = Box::pin(self.start(request, fan_out));
        async move {
            let (mut this, started) = start.await;
            let refused = match started {
                Started::Streaming(subscriber, feed) => this.stream_feed(&subscriber, feed).await,
                Started::Done { refused } => refused,
            };
            // The id is free again before the client can learn so from `complete`.
            let _ = this
                .finished
                .unbounded_send((this.id.clone(), this.generation));
            if !refused {
                let complete = frame::<()>(Some(&this.id), "complete", None);
                let _ = this.out.send(complete).await;
            }
        }
    }

    /// Runs `request` until its room feed is handed over (a subscription) or its results end.
    async fn start(
        mut self,
        mut request: Request,
        mut fan_out: Option<Box<(Rendering, Arc<Renders>)>>,
    ) -> (Self, Started) {
        let subscription = fan_out.is_some();
        let (handoff, mut handed_over) = oneshot::channel::<Feed>();
        if subscription {
            request = request.data(FeedHandoff::new(handoff));
        } else {
            drop(handoff);
        }
        let mut responses = self.schema.execute_stream(request);
        let mut awaiting_feed = subscription;
        let mut first = true;
        loop {
            let response = tokio::select! {
                biased;
                feed = &mut handed_over, if awaiting_feed => {
                    awaiting_feed = false;
                    if let (Ok(feed), Some(fan_out)) = (feed, fan_out.take()) {
                        let (rendering, renders) = *fan_out;
                        drop(responses);
                        let subscriber = renders.join(rendering);
                        return (self, Started::Streaming(subscriber, feed));
                    }
                    continue;
                }
                response = responses.next() => response,
            };
            let Some(response) = response else {
                break;
            };
            if (first && refused_before_start(&response, subscription))
                || (subscription && removed_from_room(&response))
            {
                let error = frame(Some(&self.id), "error", Some(&response.errors));
                let _ = self.out.send(error).await;
                return (self, Started::Done { refused: true });
            }
            first = false;
            let mut next = frame(Some(&self.id), self.protocol.next(), Some(&response));
            if matches!(&next, Message::Text(text) if text.as_str().len() > MAX_OUTGOING) {
                next = self.too_large();
            }
            if self.out.send(next).await.is_err() {
                break;
            }
        }
        (self, Started::Done { refused: false })
    }

    /// Streams a handed-over room feed: each event's payload rendered once per distinct
    /// operation, wrapped in this operation's own frame. True when it ended with an `error`
    /// (the subscriber was removed from the room), which ends the operation without `complete`.
    async fn stream_feed(&mut self, subscriber: &Subscriber, mut feed: Feed) -> bool {
        let id_json = serde_json::to_string(&self.id).unwrap_or_default();
        while let Some(event) = feed.next().await {
            let next = match event {
                Ok(event) => {
                    let payload = subscriber.payload(&self.schema, &event).await;
                    if payload.len() > MAX_OUTGOING {
                        self.too_large()
                    } else {
                        next_frame(&id_json, self.protocol, &payload)
                    }
                }
                Err(e) => {
                    let removed = e.code() == crate::error::Code::Forbidden;
                    let mut error = e.extend().into_server_error(Default::default());
                    error.locations.clear();
                    error.path = vec![async_graphql::PathSegment::Field("roomEvents".into())];
                    if removed {
                        let _ = self
                            .out
                            .send(frame(Some(&self.id), "error", Some([error])))
                            .await;
                        return true;
                    }
                    frame(
                        Some(&self.id),
                        self.protocol.next(),
                        Some(Response::from_errors(vec![error])),
                    )
                }
            };
            if self.out.send(next).await.is_err() {
                return false;
            }
        }
        false
    }

    /// What is sent instead of a result larger than [`MAX_OUTGOING`].
    fn too_large(&self) -> Message {
        let errors = json!([{
            "message": format!("the result is larger than {MAX_OUTGOING} bytes; ask for less"),
            "extensions": {"code": "BAD_USER_INPUT"}
        }]);
        frame(
            Some(&self.id),
            self.protocol.next(),
            Some(json!({"errors": errors})),
        )
    }
}

/// A subscription's result that says its caller was removed from the room (a `FORBIDDEN` with
/// no data): sent as `error`, which ends the operation.
fn removed_from_room(response: &Response) -> bool {
    response.data == Value::Null
        && response.errors.iter().any(|e| {
            e.extensions
                .as_ref()
                .and_then(|x| x.get("code"))
                .is_some_and(|code| *code == Value::from("FORBIDDEN"))
        })
}

/// A response that means the operation never started: a request error (parse, validation),
/// or a subscription its resolver refused.
fn refused_before_start(response: &Response, subscription: bool) -> bool {
    response.data == Value::Null
        && !response.errors.is_empty()
        && (subscription
            || response
                .errors
                .iter()
                .all(|e: &ServerError| e.path.is_empty()))
}
