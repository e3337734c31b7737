//! The two subprotocols' words: message names, close codes, and the frames Confab sends.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::Problem;

pub const TRANSPORT_WS: &str = "graphql-transport-ws";
pub const LEGACY_WS: &str = "graphql-ws";

/// Which subprotocol a socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `graphql-transport-ws` (the graphql-ws library).
    Transport,
    /// Legacy `graphql-ws` (subscriptions-transport-ws).
    Legacy,
}

impl Protocol {
    /// The message type of a result.
    pub fn next(self) -> &'static str {
        match self {
            Self::Transport => "next",
            Self::Legacy => "data",
        }
    }
}

/// Why Confab closes a socket: the WebSocket codes it uses, and graphql-ws's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    Normal = 1000,
    GoingAway = 1001,
    ProtocolError = 1002,
    InvalidPayload = 1007,
    MessageTooBig = 1009,
    /// graphql-ws: a malformed message.
    BadRequest = 4400,
    /// graphql-ws: `subscribe` before the ack.
    Unauthorized = 4401,
    /// graphql-ws: a missing, rejected or expired token.
    Forbidden = 4403,
    /// graphql-ws: no `connection_init` in time.
    InitTimeout = 4408,
    /// graphql-ws: an operation id already in use.
    SubscriberExists = 4409,
    /// graphql-ws: a second `connection_init`.
    TooManyInits = 4429,
    /// graphql-ws: the server failed (here: a session could not be checked).
    InternalError = 4500,
}

/// A close frame.
pub fn close(code: CloseCode, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: code as u16,
        reason: Utf8Bytes::from(reason),
    }))
}

/// A message from the client, before it is checked.
#[derive(Deserialize)]
pub struct Incoming {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: Option<Value>,
    pub payload: Option<Value>,
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

/// A message to the client.
pub fn frame<P: Serialize>(id: Option<&str>, kind: &str, payload: Option<P>) -> Message {
    let text = serde_json::to_string(&Outgoing { id, kind, payload }).unwrap_or_else(|e| {
        format!(r#"{{"type":"error","payload":[{{"message":"cannot encode: {e}"}}]}}"#)
    });
    Message::Text(Utf8Bytes::from(text))
}

/// An operation's `error` message for a refusal before it started.
pub fn refusal(id: &str, problem: &Problem) -> Message {
    frame(Some(id), "error", Some([problem.graphql_error()]))
}

/// A `next` (or legacy `data`) frame around an already serialized payload.
pub fn next_frame(id_json: &str, protocol: Protocol, payload: &str) -> Message {
    let kind = protocol.next();
    let parts = [
        r#"{"id":"#,
        id_json,
        r#","type":""#,
        kind,
        r#"","payload":"#,
        payload,
        "}",
    ];
    // Exactly the length: the bytes then become the frame's buffer as they are, where spare
    // capacity would cost another allocation per delivery.
    let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        text.push_str(part);
    }
    Message::Text(Utf8Bytes::from(text))
}

/// An operation id: a non-empty string of at most 256 bytes.
pub fn operation_id(id: Option<Value>) -> Option<String> {
    match id {
        Some(Value::String(id)) if !id.is_empty() && id.len() <= 256 => Some(id),
        _ => None,
    }
}

/// The close frame for a socket whose read failed, when the peer can still hear one.
///
/// axum hides the WebSocket library's error type, so the kind is read from its message (from
/// tungstenite's `Error` display; `frames_over_64_kib_are_refused` fails if that ever changes).
pub fn read_error_close(error: &axum::Error) -> Option<(CloseCode, &'static str)> {
    let text = error.to_string();
    if text.starts_with("Space limit exceeded") {
        Some((CloseCode::MessageTooBig, "Message too big"))
    } else if text.starts_with("UTF-8 encoding error") {
        Some((CloseCode::InvalidPayload, "Invalid UTF-8"))
    } else if text.starts_with("WebSocket protocol error") {
        Some((CloseCode::ProtocolError, "Protocol error"))
    } else {
        None
    }
}
