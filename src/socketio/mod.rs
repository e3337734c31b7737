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
//! `user_join`, `user_leave` (plus `message_edited` and `typing`). Each socket's outgoing buffer
//! is bounded (`max_buffer_size`): a socket that cannot take its events is disconnected rather
//! than allowed to hold memory.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use futures_util::StreamExt;
use serde_json::{Value, json};
use socketioxide::{
    SocketIo,
    extract::{AckSender, Extension, SocketRef, State, TryData},
    handler::ConnectHandler,
    layer::SocketIoLayer,
};
use tokio::task::AbortHandle;

use crate::{
    auth::Caller,
    error::Error,
    model::{RoomEvent, RoomId, parse_id},
    service::ChatService,
};

/// Packets one socket may have waiting to be sent.
const SOCKET_BUFFER: usize = 256;
/// Largest HTTP long-polling payload.
const MAX_PAYLOAD: u64 = 64 * 1024;

/// The layer serving `/socket.io/`, and its handle.
pub fn layer(service: Arc<ChatService>) -> (SocketIoLayer, SocketIo) {
    let (layer, io) = SocketIo::builder()
        .max_buffer_size(SOCKET_BUFFER)
        .max_payload(MAX_PAYLOAD)
        .with_state(service)
        .build_layer();
    io.ns("/", on_connect.with(authenticate));
    (layer, io)
}

/// Who the socket is, set at the handshake.
#[derive(Clone)]
struct Session {
    caller: Caller,
    /// The forwarding task of each room this socket joined.
    rooms: Arc<Mutex<HashMap<RoomId, AbortHandle>>>,
}

impl Session {
    fn stop(&self, room: RoomId) {
        if let Some(task) = self
            .rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&room)
        {
            task.abort();
        }
    }

    fn stop_all(&self) {
        for (_, task) in self.rooms.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            task.abort();
        }
    }
}

/// Refuses a socket without a valid token; the message reaches the client's `connect_error`.
async fn authenticate(
    socket: SocketRef,
    TryData(auth): TryData<Value>,
    State(service): State<Arc<ChatService>>,
) -> Result<(), String> {
    let from_auth = auth
        .ok()
        .and_then(|auth| auth.get("token").and_then(Value::as_str).map(str::to_owned));
    let from_header = socket
        .req_parts()
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(token) = from_auth.or(from_header) else {
        return Err("unauthenticated: send auth: {token: \"<access token>\"}".into());
    };
    let caller = Caller::from_authorization(service.tokens(), Some(&token));
    caller.user().map_err(|e| format!("unauthenticated: {e}"))?;
    socket.extensions.insert(Session {
        caller,
        rooms: Arc::default(),
    });
    Ok(())
}

async fn on_connect(socket: SocketRef) {
    socket.on("join", on_join);
    socket.on("leave", on_leave);
    socket.on("message", on_message);
    socket.on("delete_message", on_delete);
    socket.on_disconnect(async |Extension(session): Extension<Session>| session.stop_all());
}

fn ok(fields: Value) -> Value {
    let mut answer = json!({"ok": true});
    if let (Some(answer), Value::Object(fields)) = (answer.as_object_mut(), fields) {
        answer.extend(fields);
    }
    answer
}

fn refused(error: &Error) -> Value {
    error.log_if_internal();
    let mut detail = json!({"code": error.code(), "message": error.to_string()});
    if let Some(field) = error.field() {
        let field = match field {
            "roomId" => "roomID",
            "messageId" => "messageID",
            "body" => "message",
            other => other,
        };
        detail["field"] = json!(field);
    }
    json!({"ok": false, "error": detail})
}

fn answer(ack: AckSender, result: Result<Value, Error>) {
    let payload = match result {
        Ok(fields) => ok(fields),
        Err(error) => refused(&error),
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
        let room = parse_id("roomID", field(&data, &["roomID"])?)?;
        let joined = service.join_room(&session.caller, room).await?;
        if !session
            .rooms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&room)
        {
            // Live before the acknowledgement: the client sees what happens after it.
            let events = service.room_events(&session.caller, room, None).await?;
            let task = tokio::spawn(forward(socket.clone(), service.clone(), events));
            session
                .rooms
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(room, task.abort_handle());
        }
        Ok(json!({"room": {"id": joined.id.to_hex(), "name": joined.name}}))
    }
    .await;
    answer(ack, result);
}

async fn on_leave(
    TryData(data): TryData<Value>,
    ack: AckSender,
    Extension(session): Extension<Session>,
    State(service): State<Arc<ChatService>>,
) {
    let result = async {
        let room = parse_id("roomID", field(&data, &["roomID"])?)?;
        session.stop(room);
        let left = service.leave_room(&session.caller, room).await?;
        Ok(json!({"left": left}))
    }
    .await;
    answer(ack, result);
}

async fn on_message(
    TryData(data): TryData<Value>,
    ack: AckSender,
    Extension(session): Extension<Session>,
    State(service): State<Arc<ChatService>>,
) {
    let result = async {
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
        Ok(json!({"message": message_payload(&service, &message).await?}))
    }
    .await;
    answer(ack, result);
}

async fn on_delete(
    TryData(data): TryData<Value>,
    ack: AckSender,
    Extension(session): Extension<Session>,
    State(service): State<Arc<ChatService>>,
) {
    let result = async {
        let id = parse_id("messageID", field(&data, &["messageID"])?)?;
        let deleted = service.delete_message(&session.caller, id).await?;
        Ok(json!({"messageID": deleted.id.to_hex(), "roomID": deleted.room_id.to_hex()}))
    }
    .await;
    answer(ack, result);
}

async fn message_payload(
    service: &ChatService,
    message: &crate::model::Message,
) -> Result<Value, Error> {
    let sender = service.user(message.sender_id).await?;
    Ok(json!({
        "id": message.id.to_hex(),
        "roomID": message.room_id.to_hex(),
        "body": message.body,
        "sender": {"id": sender.id.to_hex(), "username": sender.username},
        "createdAt": message.created_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "editedAt": message.edited_at.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "clientId": message.client_id,
    }))
}

/// The seed's event name and payload for a room event.
async fn socket_event(
    service: &ChatService,
    event: &RoomEvent,
) -> Result<(&'static str, Value), Error> {
    let user =
        |user: &crate::model::User| json!({"id": user.id.to_hex(), "username": user.username});
    Ok(match event {
        RoomEvent::MessageAdded(m) => ("message", message_payload(service, m).await?),
        RoomEvent::MessageEdited(m) => ("message_edited", message_payload(service, m).await?),
        RoomEvent::MessageDeleted {
            room_id,
            message_id,
        } => (
            "delete_message",
            json!({"messageID": message_id.to_hex(), "roomID": room_id.to_hex()}),
        ),
        RoomEvent::MemberJoined { room_id, user: who } => (
            "user_join",
            json!({"roomID": room_id.to_hex(), "user": user(who)}),
        ),
        RoomEvent::MemberLeft { room_id, user: who } => (
            "user_leave",
            json!({"roomID": room_id.to_hex(), "user": user(who)}),
        ),
        RoomEvent::Typing {
            room_id,
            user: who,
            typing,
        } => (
            "typing",
            json!({"roomID": room_id.to_hex(), "user": user(who), "typing": typing}),
        ),
    })
}

/// Sends a room's events to one socket until the feed ends or the socket cannot keep up.
async fn forward(
    socket: SocketRef,
    service: Arc<ChatService>,
    events: impl futures_util::Stream<Item = crate::error::Result<Arc<RoomEvent>>>,
) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let sent = match event {
            Ok(event) => match socket_event(&service, &event).await {
                Ok((name, payload)) => socket.emit(name, &payload).is_ok(),
                Err(e) => {
                    e.log_if_internal();
                    true
                }
            },
            Err(e) => {
                e.log_if_internal();
                false
            }
        };
        if !sent {
            // Its buffer is full or it is gone: a client that cannot keep up reconnects and
            // reads the history it missed, rather than the server holding it.
            tracing::warn!(socket = %socket.id, "Socket.IO client cannot keep up; disconnecting it");
            let _ = socket.disconnect();
            return;
        }
    }
}
