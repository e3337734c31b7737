//! GraphQL over WebSocket, both subprotocols, with the protocol loop owned here.
//!
//! `graphql-transport-ws` (the graphql-ws library) is served to the letter of its PROTOCOL.md:
//! 4408 when `connection_init` does not come in time, 4429 for a second init, 4401 for
//! `subscribe` before the ack, 4403 for a rejected token (and when the token expires), 4409 for
//! a duplicate operation id, 4400 for a malformed message, pong for ping, `error` (and no
//! `complete`) for an operation refused before it streams. The legacy `graphql-ws` protocol
//! (subscriptions-transport-ws) is served by the same loop with its own message names.
//!
//! A `roomEvents` subscription streams its room feed here, each event rendered once for every
//! subscriber of the same operation (see `fanout`).
//!
//! Memory is bounded per socket: frames of at most [`MAX_FRAME`], at most
//! `--ws-max-operations` operations, an outgoing queue of [`OUT_QUEUE`] frames (plus one per
//! running operation). An operation
//! whose frames cannot be sent waits; meanwhile its room feed lags and resyncs from the store
//! (see `service::feed`), and a socket whose writes stall for [`WRITE_TIMEOUT`] is dropped.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_graphql::{Request, Response, ServerError, Value};
use axum::{
    extract::{
        State,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response as HttpResponse},
};
// futures' channels allocate per queued message: an idle socket holds no queue blocks.
use futures_channel::mpsc;
use futures_util::{SinkExt, StreamExt, stream::SplitSink};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::{
    sync::{oneshot, watch},
    task::AbortHandle,
    time::{Instant, sleep, sleep_until},
};

use super::{
    AppSchema, document,
    fanout::{Feed, FeedHandoff, Operation, Renders},
};
use crate::auth::{Caller, ClientIp, Tokens};

pub const TRANSPORT_WS: &str = "graphql-transport-ws";
pub const LEGACY_WS: &str = "graphql-ws";
/// Largest frame or message a client may send.
pub const MAX_FRAME: usize = 64 * 1024;
/// Frames queued for one socket before its operations wait.
pub const OUT_QUEUE: usize = 64;
/// How long one write may stall before the socket is considered dead.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest message the server sends; a result beyond it is answered with an `error` instead.
/// (Complexity limits keep real results far below it.)
pub const MAX_OUTGOING: usize = 4 * 1024 * 1024;
/// How long closing may take: sending what is queued, then the close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
const LEGACY_KEEPALIVE: Duration = Duration::from_secs(25);

/// What the GraphQL endpoints (HTTP and WebSocket) need from the server.
#[derive(Clone)]
pub struct GraphqlState {
    pub schema: AppSchema,
    /// Room events rendered once per distinct subscription (see `fanout`).
    pub renders: Arc<Renders>,
    pub tokens: Tokens,
    pub init_timeout: Duration,
    /// How long an acknowledged socket may run no operation before it is closed.
    pub idle_timeout: Duration,
    pub max_operations: usize,
    pub shutdown: watch::Receiver<bool>,
    pub stats: Arc<WsStats>,
}

/// Live counts for `/metrics`.
#[derive(Default)]
pub struct WsStats {
    pub connections: AtomicUsize,
    pub operations: AtomicUsize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// `graphql-transport-ws`.
    Transport,
    /// Legacy `graphql-ws` (subscriptions-transport-ws).
    Legacy,
}

impl Protocol {
    fn next(self) -> &'static str {
        match self {
            Self::Transport => "next",
            Self::Legacy => "data",
        }
    }
}

/// `GET /graphql` with `Upgrade: websocket`.
pub async fn upgrade(
    State(ctx): State<GraphqlState>,
    headers: HeaderMap,
    client: ClientIp,
    ws: WebSocketUpgrade,
) -> HttpResponse {
    let header_caller = Caller::from_authorization(
        &ctx.tokens,
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    if let Caller::Invalid(why) = header_caller {
        let body = json!({"errors": [{"message": why, "extensions": {"code": "UNAUTHENTICATED"}}]});
        return (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    }
    let offered = headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL);
    let ws = ws.protocols([TRANSPORT_WS, LEGACY_WS]);
    let protocol = match ws.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some(LEGACY_WS) => Protocol::Legacy,
        Some(_) => Protocol::Transport,
        // A client that names no subprotocol gets the current one.
        None if !offered => Protocol::Transport,
        None => {
            let body = json!({"errors": [{
                "message": format!("unsupported WebSocket subprotocol; use {TRANSPORT_WS} or {LEGACY_WS}"),
                "extensions": {"code": "BAD_REQUEST"}
            }]});
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    ws.max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(2 * MAX_OUTGOING)
        .on_upgrade(move |socket| Connection::run(ctx, socket, protocol, header_caller, client))
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason),
    }))
}

/// A message from the client, before it is checked.
#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    id: Option<serde_json::Value>,
    payload: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct Outgoing<'a, P: Serialize> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<P>,
}

fn frame<P: Serialize>(id: Option<&str>, kind: &str, payload: Option<P>) -> Message {
    let text = serde_json::to_string(&Outgoing { id, kind, payload }).unwrap_or_else(|e| {
        format!(r#"{{"type":"error","payload":[{{"message":"cannot encode: {e}"}}]}}"#)
    });
    Message::Text(Utf8Bytes::from(text))
}

/// Why the loop stops: a close frame to send, or nothing when the peer is gone.
type Stop = Option<(u16, String)>;

struct Connection {
    ctx: GraphqlState,
    protocol: Protocol,
    caller: Caller,
    client: ClientIp,
    initialised: bool,
    acknowledged: bool,
    operations: HashMap<String, (u64, AbortHandle)>,
    generation: u64,
    out: mpsc::Sender<Message>,
    finished_tx: mpsc::UnboundedSender<(String, u64)>,
}

impl Connection {
    async fn run(
        ctx: GraphqlState,
        socket: WebSocket,
        protocol: Protocol,
        caller: Caller,
        client: ClientIp,
    ) {
        ctx.stats.connections.fetch_add(1, Ordering::Relaxed);
        let (sink, mut incoming) = socket.split();
        let (out, frames) = mpsc::channel(OUT_QUEUE);
        let (close_tx, close_rx) = oneshot::channel();
        let mut writer = tokio::spawn(write_loop(sink, frames, close_rx));
        let (finished_tx, mut finished) = mpsc::unbounded();
        let mut shutdown = ctx.shutdown.clone();
        let mut conn = Connection {
            ctx,
            protocol,
            caller,
            client,
            initialised: false,
            acknowledged: false,
            operations: HashMap::new(),
            generation: 0,
            out,
            finished_tx,
        };
        let init_deadline = sleep(conn.ctx.init_timeout);
        tokio::pin!(init_deadline);
        let mut keepalive =
            tokio::time::interval_at(Instant::now() + LEGACY_KEEPALIVE, LEGACY_KEEPALIVE);

        // Since when the socket has run no operation (from its acknowledgement on).
        let mut idle_since: Option<Instant> = None;
        let stop: Stop = loop {
            let expiry = conn.token_expiry();
            idle_since = match (conn.acknowledged && conn.operations.is_empty(), idle_since) {
                (true, None) => Some(Instant::now()),
                (true, since) => since,
                (false, _) => None,
            };
            let idle_deadline = idle_since.map(|since| since + conn.ctx.idle_timeout);
            // Biased: a finished operation frees its id before the client's next message is
            // read, and timers and shutdown are never starved by a chatty client.
            tokio::select! {
                biased;
                Some((id, generation)) = finished.next() => {
                    if conn.operations.get(&id).is_some_and(|(g, _)| *g == generation) {
                        conn.operations.remove(&id);
                        conn.ctx.stats.operations.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                () = &mut init_deadline, if !conn.initialised => {
                    break Some((4408, "Connection initialisation timeout".into()));
                }
                () = sleep_until(expiry.unwrap_or_else(far_future)), if expiry.is_some() => {
                    break Some((4403, "Forbidden: the token has expired".into()));
                }
                () = sleep_until(idle_deadline.unwrap_or_else(far_future)), if idle_deadline.is_some() => {
                    // A normal closure: graphql-ws clients reconnect when they next subscribe.
                    break Some((1000, format!(
                        "Idle: no operation for {}s",
                        conn.ctx.idle_timeout.as_secs()
                    )));
                }
                _ = keepalive.tick(), if conn.protocol == Protocol::Legacy && conn.acknowledged => {
                    let _ = conn.out.try_send(frame::<()>(None, "ka", None));
                }
                _ = shutdown.changed() => break Some((1001, "Server shutting down".into())),
                _ = &mut writer => break None,
                message = incoming.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        // Boxed: the handling of one message is far larger than an idle
                        // socket's state, and only lives while a message is handled.
                        if let Some(stop) = Box::pin(conn.on_text(text.as_str())).await {
                            break stop;
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        break Some((4400, "Binary frames are not supported".into()));
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(e)) => break read_error_close(e),
                },
            }
        };

        for (_, abort) in conn.operations.values() {
            abort.abort();
        }
        conn.ctx
            .stats
            .operations
            .fetch_sub(conn.operations.len(), Ordering::Relaxed);
        match stop {
            Some((code, reason)) => {
                let _ = close_tx.send(close(code, &reason));
            }
            // The peer is gone: nothing to say, and the writer must not wait for a close frame.
            None => drop(close_tx),
        }
        drop(conn.out);
        if !writer.is_finished() {
            let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
        }
        conn.ctx.stats.connections.fetch_sub(1, Ordering::Relaxed);
    }

    fn token_expiry(&self) -> Option<Instant> {
        let Caller::User(claims) = &self.caller else {
            return None;
        };
        let now = jsonwebtoken::get_current_timestamp();
        let left = claims.expires_at.saturating_sub(now);
        Some(Instant::now() + Duration::from_secs(left))
    }

    async fn send(&mut self, message: Message) {
        let _ = self.out.send(message).await;
    }

    /// Handles one text message; `Some` stops the connection.
    async fn on_text(&mut self, text: &str) -> Option<Stop> {
        let Ok(message) = serde_json::from_str::<Incoming>(text) else {
            if self.protocol == Protocol::Legacy {
                // subscriptions-transport-ws answers a bad message and carries on.
                let error = json!({"message": "the message is not valid JSON"});
                self.send(frame(None, "error", Some(error))).await;
                return None;
            }
            return Some(Some((4400, "Invalid message received".into())));
        };
        match (self.protocol, message.kind.as_str()) {
            (_, "connection_init") => self.on_init(message.payload).await,
            (Protocol::Transport, "ping") => {
                self.send(frame(None, "pong", message.payload)).await;
                None
            }
            (Protocol::Transport, "pong") => None,
            (Protocol::Transport, "subscribe") | (Protocol::Legacy, "start") => {
                self.on_subscribe(message.id, message.payload).await
            }
            (Protocol::Transport, "complete") | (Protocol::Legacy, "stop") => {
                let Some(id) = operation_id(message.id) else {
                    return Some(Some((4400, "Invalid message received: missing id".into())));
                };
                if let Some((_, abort)) = self.operations.remove(&id) {
                    abort.abort();
                    self.ctx.stats.operations.fetch_sub(1, Ordering::Relaxed);
                }
                None
            }
            (Protocol::Legacy, "connection_terminate") => {
                Some(Some((1000, "Normal Closure".into())))
            }
            (Protocol::Transport, kind) => Some(Some((
                4400,
                format!("Invalid message received: unknown type {kind:?}"),
            ))),
            (Protocol::Legacy, kind) => {
                let error = json!({"message": format!("unknown message type {kind:?}")});
                self.send(frame(None, "error", Some(error))).await;
                None
            }
        }
    }

    async fn on_init(&mut self, payload: Option<serde_json::Value>) -> Option<Stop> {
        if self.initialised {
            return Some(Some((4429, "Too many initialisation requests".into())));
        }
        self.initialised = true;
        if let Some(payload) = &payload
            && !(payload.is_object() || payload.is_null())
        {
            return Some(Some((
                4400,
                "Invalid message received: payload must be an object".into(),
            )));
        }
        if let Some(value) = payload.as_ref().and_then(init_token) {
            self.caller = Caller::from_authorization(&self.ctx.tokens, Some(&value));
        }
        // Every subscription needs a member of a room, so a socket without a valid token has
        // nothing to do here: refused like a bad token, before it holds anything.
        let refusal = match self.caller {
            Caller::Invalid(why) => Some(why),
            Caller::Anonymous => {
                Some("sign in: send connection_init with {\"authorization\": \"Bearer <token>\"}")
            }
            Caller::User(_) => None,
        };
        if let Some(why) = refusal {
            if self.protocol == Protocol::Legacy {
                self.send(frame(
                    None,
                    "connection_error",
                    Some(json!({"message": why})),
                ))
                .await;
            }
            return Some(Some((4403, "Forbidden".into())));
        }
        self.acknowledged = true;
        self.send(frame::<()>(None, "connection_ack", None)).await;
        if self.protocol == Protocol::Legacy {
            self.send(frame::<()>(None, "ka", None)).await;
        }
        None
    }

    async fn on_subscribe(
        &mut self,
        id: Option<serde_json::Value>,
        payload: Option<serde_json::Value>,
    ) -> Option<Stop> {
        let Some(id) = operation_id(id) else {
            return Some(Some((4400, "Invalid message received: missing id".into())));
        };
        let request = match payload.map(serde_json::from_value::<Request>) {
            Some(Ok(request)) if !request.query.is_empty() => request,
            _ => {
                return Some(Some((
                    4400,
                    "Invalid message received: payload must hold a query".into(),
                )));
            }
        };
        if !self.acknowledged {
            return Some(Some((4401, "Unauthorized".into())));
        }
        if self.operations.contains_key(&id) {
            return Some(Some((4409, format!("Subscriber for {id} already exists"))));
        }
        if self.operations.len() >= self.ctx.max_operations {
            let errors = json!([{
                "message": format!("at most {} operations may run on one connection", self.ctx.max_operations),
                "extensions": {"code": "RATE_LIMITED"}
            }]);
            self.send(frame(Some(&id), "error", Some(errors))).await;
            return None;
        }
        let checked = match document::check(request) {
            Ok(checked) => checked,
            Err(error) => {
                // Refused before it started: `error`, and no `complete`.
                self.send(frame(Some(&id), "error", Some([error]))).await;
                return None;
            }
        };
        let subscription = checked.is_subscription();
        let request = checked.request;
        self.generation += 1;
        let generation = self.generation;
        let (started, live) = oneshot::channel();
        let fan_out = subscription.then(|| {
            (
                Operation::new(&request, self.caller.clone()),
                self.ctx.renders.clone(),
            )
        });
        let task = tokio::spawn(run_operation(
            self.ctx.schema.clone(),
            self.protocol,
            id.clone(),
            request
                .data(self.caller.clone())
                .data(self.client)
                .data(OperationStarted::new(started)),
            fan_out,
            self.out.clone(),
            self.finished_tx.clone(),
            generation,
        ));
        self.operations
            .insert(id, (generation, task.abort_handle()));
        self.ctx.stats.operations.fetch_add(1, Ordering::Relaxed);
        if subscription {
            // The next client message is read only once this subscription is live (or has
            // ended): whatever the client does after `subscribe`, it sees the events of.
            let _ = live.await;
        }
        None
    }
}

/// Request data a subscription resolver fires once its event feed is taken, so the socket loop
/// knows the subscription is live. Dropping it unfired (the operation failed or was not a
/// subscription) tells the same loop to go on.
pub struct OperationStarted(std::sync::Mutex<Option<oneshot::Sender<()>>>);

impl OperationStarted {
    fn new(sender: oneshot::Sender<()>) -> Self {
        Self(std::sync::Mutex::new(Some(sender)))
    }

    pub fn fire(&self) {
        if let Some(sender) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = sender.send(());
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

/// An operation id must be a non-empty string.
fn operation_id(id: Option<serde_json::Value>) -> Option<String> {
    match id {
        Some(serde_json::Value::String(id)) if !id.is_empty() && id.len() <= 256 => Some(id),
        _ => None,
    }
}

/// The token a `connection_init` payload carries, under any of the accepted keys.
fn init_token(payload: &serde_json::Value) -> Option<String> {
    let from = |object: &serde_json::Value| {
        ["authorization", "Authorization", "token"]
            .iter()
            .find_map(|key| object.get(*key).and_then(|v| v.as_str()).map(str::to_owned))
    };
    from(payload).or_else(|| payload.get("headers").and_then(from))
}

/// The close frame for a socket whose read failed, when the peer can still hear one.
fn read_error_close(error: axum::Error) -> Stop {
    match error.into_inner().downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => Some((1009, "Message too big".into())),
        Some(tungstenite::Error::Utf8(_)) => Some((1007, "Invalid UTF-8".into())),
        Some(tungstenite::Error::Protocol(_)) => Some((1002, "Protocol error".into())),
        _ => None,
    }
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

/// Runs one operation and sends its results. A subscription (`fan_out` is set) whose resolver
/// hands over its room feed is streamed by [`stream_feed`] instead of through async-graphql.
#[allow(clippy::too_many_arguments)]
async fn run_operation(
    schema: AppSchema,
    protocol: Protocol,
    id: String,
    mut request: Request,
    mut fan_out: Option<(Operation, Arc<Renders>)>,
    mut out: mpsc::Sender<Message>,
    finished: mpsc::UnboundedSender<(String, u64)>,
    generation: u64,
) {
    let subscription = fan_out.is_some();
    let (handoff, mut handed_over) = oneshot::channel::<Feed>();
    if subscription {
        request = request.data(FeedHandoff::new(handoff));
    } else {
        drop(handoff);
    }
    let mut responses = schema.execute_stream(request);
    let mut awaiting_feed = subscription;
    let mut first = true;
    let mut refused = false;
    loop {
        let response = tokio::select! {
            biased;
            feed = &mut handed_over, if awaiting_feed => {
                awaiting_feed = false;
                if let (Ok(feed), Some((operation, renders))) = (feed, fan_out.take()) {
                    drop(responses);
                    let subscriber = renders.join(operation);
                    stream_feed(&schema, &subscriber, protocol, &id, feed, &mut out).await;
                    break;
                }
                continue;
            }
            response = responses.next() => response,
        };
        let Some(response) = response else {
            break;
        };
        if first && refused_before_start(&response, subscription) {
            let _ = out
                .send(frame(Some(&id), "error", Some(&response.errors)))
                .await;
            refused = true;
            break;
        }
        first = false;
        let mut next = frame(Some(&id), protocol.next(), Some(&response));
        if matches!(&next, Message::Text(text) if text.as_str().len() > MAX_OUTGOING) {
            next = too_large(&id, protocol);
        }
        if out.send(next).await.is_err() {
            break;
        }
    }
    // The id is free again before the client can learn so from `complete`.
    let _ = finished.unbounded_send((id.clone(), generation));
    if !refused {
        let _ = out.send(frame::<()>(Some(&id), "complete", None)).await;
    }
}

/// Streams a handed-over room feed: each event's payload rendered once per distinct operation,
/// wrapped in this operation's own frame.
async fn stream_feed(
    schema: &AppSchema,
    subscriber: &super::fanout::Subscriber,
    protocol: Protocol,
    id: &str,
    mut feed: Feed,
    out: &mut mpsc::Sender<Message>,
) {
    let id_json = serde_json::to_string(id).unwrap_or_default();
    while let Some(event) = feed.next().await {
        let next = match event {
            Ok(event) => {
                let payload = subscriber.payload(schema, &event).await;
                if payload.len() > MAX_OUTGOING {
                    too_large(id, protocol)
                } else {
                    next_frame(&id_json, protocol, &payload)
                }
            }
            Err(e) => {
                use async_graphql::ErrorExtensions;
                let mut error = e.extend().into_server_error(Default::default());
                error.locations.clear();
                error.path = vec![async_graphql::PathSegment::Field("roomEvents".into())];
                frame(
                    Some(id),
                    protocol.next(),
                    Some(Response::from_errors(vec![error])),
                )
            }
        };
        if out.send(next).await.is_err() {
            return;
        }
    }
}

/// A `next` (or legacy `data`) frame around an already serialized payload.
fn next_frame(id_json: &str, protocol: Protocol, payload: &str) -> Message {
    let kind = protocol.next();
    let mut text = String::with_capacity(payload.len() + id_json.len() + kind.len() + 32);
    text.push_str(r#"{"id":"#);
    text.push_str(id_json);
    text.push_str(r#","type":""#);
    text.push_str(kind);
    text.push_str(r#"","payload":"#);
    text.push_str(payload);
    text.push('}');
    Message::Text(Utf8Bytes::from(text))
}

/// What is sent instead of a result larger than [`MAX_OUTGOING`].
fn too_large(id: &str, protocol: Protocol) -> Message {
    let errors = json!([{
        "message": format!("the result is larger than {MAX_OUTGOING} bytes; ask for less"),
        "extensions": {"code": "BAD_USER_INPUT"}
    }]);
    frame(Some(id), protocol.next(), Some(json!({"errors": errors})))
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut frames: mpsc::Receiver<Message>,
    mut close: oneshot::Receiver<Message>,
) {
    let closing = loop {
        tokio::select! {
            biased;
            closing = &mut close => break closing.ok(),
            message = frames.next() => {
                let Some(message) = message else {
                    // No sender left: the connection is ending; a close frame may follow.
                    break close.await.ok();
                };
                match tokio::time::timeout(WRITE_TIMEOUT, sink.send(message)).await {
                    Ok(Ok(())) => {}
                    _ => return,
                }
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
        if let Some(close) = closing {
            // What was queued before the close (a `connection_error`, an `error`) goes first.
            while let Ok(message) = frames.try_recv() {
                if sink.send(message).await.is_err() {
                    return;
                }
            }
            let _ = sink.send(close).await;
        }
        // Flushes the close frame, or the reply to the peer's own close.
        let _ = sink.close().await;
    })
    .await;
}
