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
    pub async fn run(
        mut self,
        mut request: Request,
        // Boxed: the task keeps its arguments' room for as long as it runs, and a rendering
        // (its parsed document) is only needed until the feed is handed over.
        mut fan_out: Option<Box<(Rendering, Arc<Renders>)>>,
    ) {
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
        let mut refused = false;
        loop {
            let response = tokio::select! {
                biased;
                feed = &mut handed_over, if awaiting_feed => {
                    awaiting_feed = false;
                    if let (Ok(feed), Some(fan_out)) = (feed, fan_out.take()) {
                        let (rendering, renders) = *fan_out;
                        drop(responses);
                        let subscriber = renders.join(rendering);
                        refused = self.stream_feed(&subscriber, feed).await;
                        break;
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
                refused = true;
                break;
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
        // The id is free again before the client can learn so from `complete`.
        let _ = self
            .finished
            .unbounded_send((self.id.clone(), self.generation));
        if !refused {
            let complete = frame::<()>(Some(&self.id), "complete", None);
            let _ = self.out.send(complete).await;
        }
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
