//! One socket: its state, the loop that reads the client's messages and the timers, and the
//! task that writes.
//!
//! The loop owns the socket's state (who it is, whether it is acknowledged, its operations), so
//! nothing is shared but the outgoing queue. Each client message is handled to the end before
//! the next is read, and a subscription is live before then: whatever a client does after
//! `subscribe`, it sees the events of.

use std::{borrow::Cow, collections::HashMap, pin::Pin, sync::Arc};

use async_graphql::Request;
use axum::extract::ws::{Message, WebSocket};
// futures' channels allocate per queued message: an idle socket holds no queue blocks.
use futures_channel::mpsc;
use futures_util::{
    SinkExt, StreamExt,
    stream::{SplitSink, SplitStream},
};
use serde_json::{Value, json};
use tokio::{
    sync::{broadcast, oneshot, watch},
    task::{AbortHandle, JoinHandle},
    time::{Instant, Sleep, sleep, sleep_until},
};

use super::{
    CLOSE_TIMEOUT, LEGACY_KEEPALIVE, OUT_QUEUE, WRITE_TIMEOUT,
    fanout::Operation as Rendering,
    operation::OperationRun,
    protocol::{
        CloseCode, Incoming, Protocol, close, frame, operation_id, read_error_close, refusal,
    },
};
use crate::{
    auth::{Caller, ClientIp, UserAgent},
    bus::Revocation,
    error::Code,
    graphql::{document, endpoint::GraphqlState, live::OperationStarted},
    http::{Problem, auth as edge_auth},
};

/// What the loop does after a message or a timer.
enum Flow {
    Continue,
    /// Close with this code and reason.
    Close(CloseCode, Cow<'static, str>),
    /// The peer is gone: nothing to say.
    Gone,
}

impl Flow {
    fn close(code: CloseCode, reason: impl Into<Cow<'static, str>>) -> Self {
        Self::Close(code, reason.into())
    }
}

pub struct Connection {
    ctx: GraphqlState,
    protocol: Protocol,
    caller: Caller,
    client: ClientIp,
    agent: UserAgent,
    initialised: bool,
    acknowledged: bool,
    /// When the session it signed in with ends, unless refreshed meanwhile (checked then).
    deadline: Option<Instant>,
    /// Revocations from every instance, once signed in: the socket closes with its session.
    revocations: Option<broadcast::Receiver<Arc<Revocation>>>,
    operations: HashMap<String, (u64, AbortHandle)>,
    generation: u64,
    out: mpsc::Sender<Message>,
    finished_tx: mpsc::UnboundedSender<(String, u64)>,
    /// Once signed in: the user counts as online while the socket is open.
    presence: Option<crate::service::presence::Presence>,
}

impl Connection {
    /// Serves one socket until it closes.
    ///
    /// The setup runs here, before the future that serves: that future lives as long as the
    /// socket, so it keeps the socket's halves and state but not the arguments they were made
    /// from (an async fn would keep room for every argument for its whole life).
    pub fn run(
        ctx: GraphqlState,
        socket: WebSocket,
        protocol: Protocol,
        caller: Caller,
        client: ClientIp,
        agent: UserAgent,
    ) -> impl Future<Output = ()> + Send + 'static {
        ctx.stats.connections.inc();
        let (sink, incoming) = socket.split();
        let (out, frames) = mpsc::channel(OUT_QUEUE);
        let (close_tx, close_rx) = oneshot::channel();
        let writer = tokio::spawn(write_loop(sink, frames, close_rx));
        let (finished_tx, finished) = mpsc::unbounded();
        let shutdown = ctx.shutdown.clone();
        let conn = Connection {
            ctx,
            protocol,
            caller,
            client,
            agent,
            initialised: false,
            acknowledged: false,
            deadline: None,
            revocations: None,
            operations: HashMap::new(),
            generation: 0,
            out,
            finished_tx,
            presence: None,
        };
        Self::serve(conn, incoming, writer, close_tx, finished, shutdown)
    }

    /// The socket's loop. A plain function returning its future: an async fn's future keeps its
    /// arguments twice (as passed, and as moved into the body) for the socket's whole life.
    #[allow(
        clippy::manual_async_fn,
        reason = "an async fn keeps its arguments twice; this future lives as long as the socket"
    )]
    fn serve(
        mut conn: Self,
        mut incoming: SplitStream<WebSocket>,
        mut writer: JoinHandle<()>,
        close_tx: oneshot::Sender<Message>,
        mut finished: mpsc::UnboundedReceiver<(String, u64)>,
        mut shutdown: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        async move {
            // Boxed, and dropped once the client has initialised: most of a socket's life is after.
            let mut init_deadline = Some(Box::pin(sleep(conn.ctx.init_timeout)));
            let mut keepalive =
                tokio::time::interval_at(Instant::now() + LEGACY_KEEPALIVE, LEGACY_KEEPALIVE);

            // Since when the socket has run no operation (from its acknowledgement on).
            let mut idle_since: Option<Instant> = None;
            let flow = loop {
                idle_since = match (conn.acknowledged && conn.operations.is_empty(), idle_since) {
                    (true, None) => Some(Instant::now()),
                    (true, since) => since,
                    (false, _) => None,
                };
                let idle_deadline = idle_since.map(|since| since + conn.ctx.idle_timeout);
                let expiry = conn.deadline;
                // Biased: a finished operation frees its id before the client's next message is
                // read, and timers and shutdown are never starved by a chatty client.
                let flow = tokio::select! {
                    biased;
                    Some((id, generation)) = finished.next() => {
                        conn.finished(&id, generation);
                        Flow::Continue
                    }
                    () = until(&mut init_deadline), if !conn.initialised => {
                        Flow::close(CloseCode::InitTimeout, "Connection initialisation timeout")
                    }
                    // Boxed, as a message's handling is: rare, and far larger than an idle socket.
                    () = sleep_until(expiry.unwrap_or_else(far_future)), if expiry.is_some() => {
                        Box::pin(conn.recheck_session()).await
                    }
                    heard = next_revocation(&mut conn.revocations), if conn.revocations.is_some() => {
                        Box::pin(conn.on_revocation(heard)).await
                    }
                    () = sleep_until(idle_deadline.unwrap_or_else(far_future)), if idle_deadline.is_some() => {
                        // A normal closure: graphql-ws clients reconnect when they next subscribe.
                        let idle = conn.ctx.idle_timeout.as_secs();
                        Flow::close(CloseCode::Normal, format!("Idle: no operation for {idle}s"))
                    }
                    _ = keepalive.tick(), if conn.protocol == Protocol::Legacy && conn.acknowledged => {
                        let _ = conn.out.try_send(frame::<()>(None, "ka", None));
                        Flow::Continue
                    }
                    _ = shutdown.changed() => Flow::close(CloseCode::GoingAway, "Server shutting down"),
                    _ = &mut writer => Flow::Gone,
                    message = incoming.next() => match message {
                        // Boxed: the handling of one message is far larger than an idle socket's
                        // state, and only lives while a message is handled.
                        Some(Ok(Message::Text(text))) => Box::pin(conn.on_text(text.as_str())).await,
                        Some(Ok(Message::Binary(_))) => {
                            Flow::close(CloseCode::BadRequest, "Binary frames are not supported")
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Flow::Continue,
                        Some(Ok(Message::Close(_))) | None => Flow::Gone,
                        Some(Err(e)) => match read_error_close(&e) {
                            Some((code, reason)) => Flow::close(code, reason),
                            None => Flow::Gone,
                        },
                    },
                };
                if !matches!(flow, Flow::Continue) {
                    break flow;
                }
                if conn.initialised {
                    init_deadline = None;
                }
            };

            for (_, abort) in conn.operations.values() {
                abort.abort();
            }
            let running = i64::try_from(conn.operations.len()).unwrap_or(i64::MAX);
            conn.ctx.stats.operations.dec_by(running);
            match flow {
                Flow::Close(code, reason) => {
                    let _ = close_tx.send(close(code, &reason));
                }
                // The peer is gone: the writer must not wait for a close frame.
                Flow::Gone | Flow::Continue => drop(close_tx),
            }
            drop(conn.out);
            if !writer.is_finished() {
                let _ = tokio::time::timeout(CLOSE_TIMEOUT, writer).await;
            }
            conn.ctx.stats.connections.dec();
        }
    }

    /// An operation ended on its own; its id is free unless it was reused meanwhile.
    fn finished(&mut self, id: &str, generation: u64) {
        if self
            .operations
            .get(id)
            .is_some_and(|(g, _)| *g == generation)
        {
            self.operations.remove(id);
            self.ctx.stats.operations.dec();
        }
    }

    async fn send(&mut self, message: Message) {
        let _ = self.out.send(message).await;
    }

    /// Handles one text message.
    async fn on_text(&mut self, text: &str) -> Flow {
        let Ok(message) = serde_json::from_str::<Incoming>(text) else {
            if self.protocol == Protocol::Legacy {
                // subscriptions-transport-ws answers a bad message and carries on.
                let error = json!({"message": "the message is not valid JSON"});
                self.send(frame(None, "error", Some(error))).await;
                return Flow::Continue;
            }
            return Flow::close(CloseCode::BadRequest, "Invalid message received");
        };
        match (self.protocol, message.kind.as_str()) {
            (_, "connection_init") => self.on_init(message.payload).await,
            (Protocol::Transport, "ping") => {
                self.send(frame(None, "pong", message.payload)).await;
                Flow::Continue
            }
            (Protocol::Transport, "pong") => Flow::Continue,
            (Protocol::Transport, "subscribe") | (Protocol::Legacy, "start") => {
                self.on_subscribe(message.id, message.payload).await
            }
            (Protocol::Transport, "complete") | (Protocol::Legacy, "stop") => {
                let Some(id) = operation_id(message.id) else {
                    return Flow::close(
                        CloseCode::BadRequest,
                        "Invalid message received: missing id",
                    );
                };
                if let Some((_, abort)) = self.operations.remove(&id) {
                    abort.abort();
                    self.ctx.stats.operations.dec();
                }
                Flow::Continue
            }
            (Protocol::Legacy, "connection_terminate") => {
                Flow::close(CloseCode::Normal, "Normal Closure")
            }
            (Protocol::Transport, kind) => Flow::close(
                CloseCode::BadRequest,
                format!("Invalid message received: unknown type {kind:?}"),
            ),
            (Protocol::Legacy, kind) => {
                let error = json!({"message": format!("unknown message type {kind:?}")});
                self.send(frame(None, "error", Some(error))).await;
                Flow::Continue
            }
        }
    }

    async fn on_init(&mut self, payload: Option<Value>) -> Flow {
        if self.initialised {
            return Flow::close(CloseCode::TooManyInits, "Too many initialisation requests");
        }
        self.initialised = true;
        if let Some(payload) = &payload
            && !(payload.is_object() || payload.is_null())
        {
            return Flow::close(
                CloseCode::BadRequest,
                "Invalid message received: payload must be an object",
            );
        }
        let caller = std::mem::replace(&mut self.caller, Caller::Anonymous);
        let caller = edge_auth::from_init_payload(&self.ctx.tokens, payload.as_ref(), caller);
        // Listening before the session is checked: a revocation applied after the check is
        // heard, one applied before it is what the check sees.
        let revocations = self.ctx.service.revocations();
        self.caller = self.ctx.service.authenticate(caller).await;
        // Every subscription needs a member of a room, so a socket without a valid token has
        // nothing to do here: refused like a bad token, before it holds anything.
        let refusal = match self.caller {
            Caller::User(_) => None,
            Caller::Invalid(why) => Some((CloseCode::Forbidden, "Forbidden", why)),
            Caller::Anonymous => Some((
                CloseCode::Forbidden,
                "Forbidden",
                "sign in: send connection_init with {\"authorization\": \"Bearer <token>\"}",
            )),
            Caller::Unavailable => Some((
                CloseCode::InternalError,
                "Internal server error",
                "cannot check your session now; try again",
            )),
        };
        if let Some((code, reason, why)) = refusal {
            if self.protocol == Protocol::Legacy {
                let error = json!({"message": why});
                self.send(frame(None, "connection_error", Some(error)))
                    .await;
            }
            return Flow::close(code, reason);
        }
        self.revocations = Some(revocations);
        if let Flow::Close(code, reason) = self.recheck_session().await {
            return Flow::Close(code, reason);
        }
        self.acknowledged = true;
        if let Ok(user) = self.caller.user_id() {
            self.presence = Some(self.ctx.service.socket_opened(user).await);
        }
        self.send(frame::<()>(None, "connection_ack", None)).await;
        if self.protocol == Protocol::Legacy {
            self.send(frame::<()>(None, "ka", None)).await;
        }
        Flow::Continue
    }

    /// Reads the session's end again: closes (4403) when it has ended, else waits for the new
    /// end. A store that does not answer leaves the socket open and asks again in a while.
    async fn recheck_session(&mut self) -> Flow {
        let Caller::User(claims) = &self.caller else {
            return Flow::close(CloseCode::Forbidden, "Forbidden");
        };
        match self.ctx.service.session_end(claims).await {
            Ok(Some(end)) => {
                let left = (end - chrono::Utc::now()).to_std().unwrap_or_default();
                // Checked again at least this often, should a revocation be lost.
                self.deadline = Some(Instant::now() + left.min(crate::service::SESSION_RECHECK));
                Flow::Continue
            }
            Ok(None) => Flow::close(CloseCode::Forbidden, "Forbidden: the session has ended"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot check a socket's session; asking again soon");
                self.deadline = Some(Instant::now() + std::time::Duration::from_secs(5));
                Flow::Continue
            }
        }
    }

    /// A revocation was heard (or some may have been missed): closes when it reaches this
    /// socket's session.
    async fn on_revocation(&mut self, heard: Option<Arc<Revocation>>) -> Flow {
        let Caller::User(claims) = &self.caller else {
            return Flow::Continue;
        };
        match heard.as_deref() {
            Some(Revocation::Recheck) | None => self.recheck_session().await,
            Some(revocation) if revocation.reaches(claims.user_id, claims.session_id) => {
                Flow::close(CloseCode::Forbidden, "Forbidden: the session has ended")
            }
            Some(_) => Flow::Continue,
        }
    }

    async fn on_subscribe(&mut self, id: Option<Value>, payload: Option<Value>) -> Flow {
        let Some(id) = operation_id(id) else {
            return Flow::close(
                CloseCode::BadRequest,
                "Invalid message received: missing id",
            );
        };
        let request = match payload.map(serde_json::from_value::<Request>) {
            Some(Ok(request)) if !request.query.is_empty() => request,
            _ => {
                return Flow::close(
                    CloseCode::BadRequest,
                    "Invalid message received: payload must hold a query",
                );
            }
        };
        if !self.acknowledged {
            return Flow::close(CloseCode::Unauthorized, "Unauthorized");
        }
        if self.operations.contains_key(&id) {
            return Flow::close(
                CloseCode::SubscriberExists,
                format!("Subscriber for {id} already exists"),
            );
        }
        if self.operations.len() >= self.ctx.max_operations {
            let max = self.ctx.max_operations;
            let problem = Problem::new(
                Code::RateLimited,
                format!("at most {max} operations may run on one connection"),
            );
            self.send(refusal(&id, &problem)).await;
            return Flow::Continue;
        }
        let checked = match document::check(request) {
            Ok(checked) => checked,
            Err(error) => {
                crate::metrics::graphql::refused(&self.ctx.schema, "ws", &error);
                // Refused before it started: `error`, and no `complete`.
                self.send(frame(Some(&id), "error", Some([error]))).await;
                return Flow::Continue;
            }
        };
        let subscription = checked.is_subscription();
        let mut request = checked.request;
        self.generation += 1;
        let (started, live) = oneshot::channel();
        let fan_out = if subscription {
            Rendering::new(&mut request, self.caller.clone())
                .map(|rendering| Box::new((rendering, self.ctx.renders.clone())))
        } else {
            None
        };
        let run = OperationRun {
            schema: self.ctx.schema.clone(),
            protocol: self.protocol,
            id: id.clone(),
            out: self.out.clone(),
            finished: self.finished_tx.clone(),
            generation: self.generation,
        };
        let mut request = request
            .data(self.caller.clone())
            .data(self.client)
            .data(OperationStarted::new(started));
        // Only a sign-in keeps the user agent (with its session), and no subscription signs in:
        // a live subscription's data stays one entry smaller for as long as it runs.
        if !subscription {
            request = request.data(self.agent.clone());
        }
        let task = tokio::spawn(run.run(request, fan_out));
        self.operations
            .insert(id, (self.generation, task.abort_handle()));
        self.ctx.stats.operations.inc();
        if subscription {
            // The next client message is read only once this subscription is live (or has
            // ended): whatever the client does after `subscribe`, it sees the events of.
            let _ = live.await;
        }
        Flow::Continue
    }
}

/// The next revocation; `None` when some were missed (the socket then rechecks its session).
async fn next_revocation(
    revocations: &mut Option<broadcast::Receiver<Arc<Revocation>>>,
) -> Option<Arc<Revocation>> {
    let Some(receiver) = revocations else {
        return std::future::pending().await;
    };
    match receiver.recv().await {
        Ok(revocation) => Some(revocation),
        Err(broadcast::error::RecvError::Lagged(_)) => None,
        // The bus is gone (shutting down): nothing more will come.
        Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
    }
}

/// Waits for `deadline` while there is one; forever once it is gone.
async fn until(deadline: &mut Option<Pin<Box<Sleep>>>) {
    match deadline {
        Some(deadline) => deadline.await,
        None => std::future::pending().await,
    }
}

fn far_future() -> Instant {
    Instant::now() + std::time::Duration::from_secs(86_400 * 365)
}

/// Writes `first` and every frame queued behind it, then flushes once: under load one write
/// carries many frames, where a write per frame made the kernel's TCP send path most of the
/// server's work at full fan-out. The socket's write buffer ([`super::WRITE_BUFFER`]) is written
/// out whenever it fills, so a batch holds at most that much beyond one frame.
async fn write_batch(
    sink: &mut SplitSink<WebSocket, Message>,
    first: Message,
    frames: &mut mpsc::Receiver<Message>,
) -> Result<(), axum::Error> {
    sink.feed(first).await?;
    // At most a queue's worth: a batch ends even while operations keep refilling the queue.
    for _ in 0..OUT_QUEUE {
        match frames.try_recv() {
            Ok(message) => sink.feed(message).await?,
            Err(_) => break,
        }
    }
    sink.flush().await
}

/// Writes the socket's queued frames, then its close frame.
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
                match tokio::time::timeout(WRITE_TIMEOUT, write_batch(&mut sink, message, &mut frames)).await {
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
