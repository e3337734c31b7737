//! Socket.IO compatibility for the original service's socket events, at `/socket.io/`.
//!
//! One more thin adapter over [`ChatService`]: the handshake's `auth.token` (or the
//! `Authorization` header) signs the socket in, and a missing or bad token is refused with a
//! `connect_error` saying why. `join`, `leave`, `message` and `delete_message` call the same
//! service methods as GraphQL and REST and answer through an acknowledgement, `{ok: true, …}` or
//! `{ok: false, error: {code, message, field?}}`.
//!
//! A joined room's events come from the same room feed GraphQL subscriptions use, whichever
//! transport caused them, and go out as the seed's events: `message`, `delete_message`,
//! `user_join`, `user_leave` (plus `message_edited` and `typing`).
//!
//! Every socket is bounded: its outgoing buffer (`max_buffer_size`; a socket that cannot take
//! its events is disconnected), the rooms it may join at once, and the events it may have in
//! flight. A socket whose token expires is refused and disconnected, as a GraphQL socket is.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use serde_json::{Value, json};
use socketioxide::{
    SocketIo,
    extract::{AckSender, Extension, SocketRef, State, TryData},
    handler::ConnectHandler,
    layer::SocketIoLayer,
};
use tokio::{
    sync::{Mutex, OwnedSemaphorePermit, Semaphore, broadcast},
    task::AbortHandle,
};

mod events;

use events::MessagePayload;

use crate::{
    auth::{Caller, Claims},
    bus::Revocation,
    error::Error,
    http::{Problem, auth as edge_auth},
    model::{RoomEvent, RoomId, parse_id},
    service::ChatService,
};

/// Packets one socket may have waiting to be sent.
const SOCKET_BUFFER: usize = 256;
/// Largest HTTP long-polling payload.
const MAX_PAYLOAD: u64 = 64 * 1024;
/// Rooms one socket may have joined at once.
const MAX_ROOMS: usize = 100;
/// Events of one socket being handled at once; more are refused with `RATE_LIMITED`.
const MAX_IN_FLIGHT: usize = 16;

/// The layer serving `/socket.io/`, and its handle.
pub fn layer(service: Arc<ChatService>) -> (SocketIoLayer, SocketIo) {
    let (layer, io) = SocketIo::builder()
        .max_buffer_size(SOCKET_BUFFER)
        .max_payload(MAX_PAYLOAD)
        .with_state(service)
        .build_layer();
    // The socket's handlers are registered by a connect middleware, not by the connect handler:
    // socketioxide 0.18.9 (`Namespace::connect`, ns.rs) awaits the middlewares, then sends the
    // CONNECT packet, and only then `tokio::spawn`s the connect handler (connect handlers must be
    // async since 0.18.0). A client emitting in its `connect` callback, as the original service's
    // clients do, could reach a socket with no handler yet, and `Socket::recv_event` drops such
    // an event silently. `.with` runs the middleware it adds first: `authenticate`, then
    // `register_handlers`, then `connected`.
    io.ns("/", connected.with(register_handlers).with(authenticate));
    (layer, io)
}

/// Who the socket is, set at the handshake.
#[derive(Clone)]
struct Session {
    caller: Caller,
    /// Set when its session has ended (revoked, expired, its user deleted or suspended).
    ended: Arc<AtomicBool>,
    /// The task that watches the session and disconnects the socket when it ends.
    expiry: AbortHandle,
    /// The forwarding task of each room this socket joined. An async lock, held across a whole
    /// join, so two joins of one room cannot both start a task.
    rooms: Arc<Mutex<HashMap<RoomId, AbortHandle>>>,
    in_flight: Arc<Semaphore>,
    /// The user counts as online while this (shared by the socket's handlers) lives.
    _presence: Arc<crate::service::presence::Presence>,
}

impl Session {
    async fn stop(&self, room: RoomId) {
        if let Some(task) = self.rooms.lock().await.remove(&room) {
            task.abort();
        }
    }

    async fn stop_all(&self) {
        self.expiry.abort();
        for (_, task) in self.rooms.lock().await.drain() {
            task.abort();
        }
    }

    fn expired(&self) -> bool {
        self.ended.load(Ordering::Relaxed)
    }

    /// Admits one event: refused once the session has ended (and the socket is then closed),
    /// or while too many of this socket's events are in flight.
    fn admit(&self, socket: &SocketRef) -> Result<OwnedSemaphorePermit, Error> {
        if self.expired() {
            disconnect(socket.clone());
            return Err(Error::Unauthenticated(
                "this session has ended; sign in again".into(),
            ));
        }
        self.in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::too_many(format!("at most {MAX_IN_FLIGHT} events at once")))
    }
}

/// Closes a socket, waiting for room in its buffer if it is full (a full buffer refuses the
/// disconnect packet too). A dead peer is closed by the Engine.IO heartbeat meanwhile.
fn disconnect(socket: SocketRef) {
    tokio::spawn(async move {
        for _ in 0..300 {
            if !socket.connected() || socket.clone().disconnect().is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// Refuses a socket without a valid token; the message reaches the client's `connect_error`.
async fn authenticate(
    socket: SocketRef,
    TryData(auth): TryData<Value>,
    State(service): State<Arc<ChatService>>,
) -> Result<(), String> {
    let headers = &socket.req_parts().headers;
    let caller = edge_auth::from_handshake(service.tokens(), auth.as_ref().ok(), headers);
    if let Caller::Anonymous = caller {
        return Err("unauthenticated: send auth: {token: \"<access token>\"}".into());
    }
    // Listening before the session is checked: a revocation applied after the check is heard,
    // one applied before it is what the check sees.
    let revocations = service.revocations();
    let caller = service.authenticate(caller).await;
    if let Caller::Unavailable = caller {
        return Err("cannot check your session now; try again".into());
    }
    let claims = caller
        .user()
        .map_err(|e| format!("unauthenticated: {e}"))?
        .clone();
    let claims_user = claims.user_id;
    let end = match service.session_end(&claims).await {
        Ok(Some(end)) => end,
        Ok(None) => return Err("unauthenticated: this session has ended; sign in again".into()),
        Err(_) => return Err("cannot check your session now; try again".into()),
    };
    // The socket closes when its session ends, whether or not it is busy then.
    let ended = Arc::new(AtomicBool::new(false));
    let expiry = tokio::spawn({
        let (socket, service, ended) = (socket.clone(), service.clone(), ended.clone());
        async move {
            watch_session(&service, &claims, end, revocations).await;
            ended.store(true, Ordering::Relaxed);
            disconnect(socket);
        }
    })
    .abort_handle();
    let presence = Arc::new(service.socket_opened(claims_user).await);
    socket.extensions.insert(Session {
        caller,
        ended,
        expiry,
        rooms: Arc::default(),
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        _presence: presence,
    });
    Ok(())
}

/// Returns once the session of `claims` has ended: at its end (unless it was refreshed
/// meanwhile), or when a revocation reaches it.
async fn watch_session(
    service: &ChatService,
    claims: &Claims,
    mut end: chrono::DateTime<chrono::Utc>,
    mut revocations: broadcast::Receiver<Arc<Revocation>>,
) {
    loop {
        let left = (end - chrono::Utc::now()).to_std().unwrap_or_default();
        // Checked again at least this often, should a revocation be lost.
        let left = left.min(crate::service::SESSION_RECHECK);
        let recheck = tokio::select! {
            () = tokio::time::sleep(left) => true,
            heard = revocations.recv() => match heard {
                Ok(revocation) if matches!(*revocation, Revocation::Recheck) => true,
                Ok(revocation) if revocation.reaches(claims.user_id, claims.session_id) => return,
                Ok(_) => false,
                Err(broadcast::error::RecvError::Lagged(_)) => true,
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            },
        };
        if recheck {
            match service.session_end(claims).await {
                Ok(Some(later)) => end = later,
                Ok(None) => return,
                // The store did not answer: ask again in a while.
                Err(_) => end = chrono::Utc::now() + chrono::Duration::seconds(5),
            }
        }
    }
}

/// Registers the socket's handlers, before the client is told it is connected (see [`layer`]).
async fn register_handlers(socket: SocketRef) -> Result<(), std::convert::Infallible> {
    socket.on("join", on_join);
    socket.on("leave", on_leave);
    socket.on("message", on_message);
    socket.on("delete_message", on_delete);
    socket.on("mark_read", on_mark_read);
    socket.on_disconnect(async |Extension(session): Extension<Session>| session.stop_all().await);
    Ok(())
}

/// The connect handler: the middlewares have done everything by then.
async fn connected() {}

fn ok(fields: Value) -> Value {
    let mut answer = json!({"ok": true});
    if let (Some(answer), Value::Object(fields)) = (answer.as_object_mut(), fields) {
        answer.extend(fields);
    }
    answer
}

fn answer(ack: AckSender, result: Result<Value, Error>) {
    let payload = match result {
        Ok(fields) => ok(fields),
        Err(error) => Problem::from(error).in_legacy_names().ack(),
    };
    // A client that asked for no acknowledgement gets none.
    let _ = ack.send(&payload);
}

/// A string field of an event's payload, named in the error when missing.
fn field<'a>(
    data: &'a Result<Value, impl std::fmt::Display>,
    names: &[&'static str],
) -> Result<&'a str, Error> {
    let data = data
        .as_ref()
        .map_err(|e| Error::invalid("data", format!("send a JSON object ({e})")))?;
    names
        .iter()
        .find_map(|name| data.get(*name).and_then(Value::as_str))
        .ok_or_else(|| Error::invalid(names[0], "is required and must be a string"))
}

async fn on_join(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    Extension(session): Extension<Session>,
    State(service): State<Arc<ChatService>>,
) {
    let result = async {
        let _permit = session.admit(&socket)?;
        let room = parse_id("roomID", field(&data, &["roomID"])?)?;
        let mut rooms = session.rooms.lock().await;
        if !rooms.contains_key(&room) && rooms.len() >= MAX_ROOMS {
            return Err(Error::too_many(format!(
                "a socket may join at most {MAX_ROOMS} rooms; leave one first"
            )));
        }
        let joined = service.join_room(&session.caller, room).await?;
        // A feed that ended (the user left the room elsewhere) is started again.
        if rooms.get(&room).is_none_or(AbortHandle::is_finished) {
            // Live before the acknowledgement: the client sees what happens after it.
            let events = service.room_events(&session.caller, room, None).await?;
            let task = tokio::spawn(forward(
                socket.clone(),
                session.clone(),
                service.clone(),
                events,
            ));
            rooms.insert(room, task.abort_handle());
            if !socket.connected() {
                // Disconnected while joining: its cleanup has already run.
                task.abort();
                rooms.remove(&room);
            }
        }
        let name = service.room_name(&session.caller, &joined).await?;
        Ok(json!({"room": {"id": joined.id.to_hex(), "name": name}}))
    }
    .await;
    answer(ack, result);
}

async fn on_leave(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    Extension(session): Extension<Session>,
    State(service): State<Arc<ChatService>>,
) {
    let result = async {
        let _permit = session.admit(&socket)?;
        let room = parse_id("roomID", field(&data, &["roomID"])?)?;
        session.stop(room).await;
        let left = service.leave_room(&session.caller, room).await?;
        Ok(json!({"left": left}))
    }
    .await;
    answer(ack, result);
}

async fn on_message(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    Extension(session): Extension<Session>,
    State(service): State<Arc<ChatService>>,
) {
    let result = async {
        let _permit = session.admit(&socket)?;
        let room = parse_id("roomID", field(&data, &["roomID"])?)?;
        let body = field(&data, &["message", "content"])?;
        let client_id = data
            .as_ref()
            .ok()
            .and_then(|d| d.get("clientId"))
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| Error::invalid("clientId", "must be a string"))
            })
            .transpose()?;
        let message = service
            .send_message(&session.caller, room, body, client_id)
            .await?;
        Ok(json!({"message": MessagePayload::load(&service, &message).await?}))
    }
    .await;
    answer(ack, result);
}

async fn on_delete(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    Extension(session): Extension<Session>,
    State(service): State<Arc<ChatService>>,
) {
    let result = async {
        let _permit = session.admit(&socket)?;
        let id = parse_id("messageID", field(&data, &["messageID"])?)?;
        let deleted = service.delete_message(&session.caller, id).await?;
        Ok(json!({"messageID": deleted.id.to_hex(), "roomID": deleted.room_id.to_hex()}))
    }
    .await;
    answer(ack, result);
}

async fn on_mark_read(
    socket: SocketRef,
    TryData(data): TryData<Value>,
    ack: AckSender,
    Extension(session): Extension<Session>,
    State(service): State<Arc<ChatService>>,
) {
    let result = async {
        let _permit = session.admit(&socket)?;
        let room = parse_id("roomID", field(&data, &["roomID"])?)?;
        let message = parse_id("messageID", field(&data, &["messageID"])?)?;
        let state = service.mark_read(&session.caller, room, message).await?;
        Ok(json!({
            "roomID": room.to_hex(),
            "lastReadMessageID": state.last_read.map(|id| id.to_hex()),
            "unreadCount": state.unread,
            "mentionCount": state.mentions,
        }))
    }
    .await;
    answer(ack, result);
}

/// Sends a room's events to one socket until the feed ends, the token expires or the socket
/// cannot keep up.
async fn forward(
    socket: SocketRef,
    session: Session,
    service: Arc<ChatService>,
    events: impl futures_util::Stream<Item = crate::error::Result<Arc<RoomEvent>>>,
) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        if session.expired() {
            disconnect(socket);
            return;
        }
        let sent = match event {
            Ok(event) => match events::event(&service, &event).await {
                Ok((name, payload)) => socket.emit(name, &payload).is_ok(),
                Err(e) => {
                    e.log_if_internal();
                    true
                }
            },
            // Removed from the room by a moderator: the feed ends, the socket stays.
            Err(e) if e.code() == crate::error::Code::Forbidden => return,
            Err(e) => {
                e.log_if_internal();
                false
            }
        };
        if !sent {
            // Its buffer is full or it is gone: a client that cannot keep up reconnects and
            // reads the history it missed, rather than the server holding it.
            tracing::warn!(socket = %socket.id, "Socket.IO client cannot keep up; disconnecting it");
            disconnect(socket);
            return;
        }
    }
}
