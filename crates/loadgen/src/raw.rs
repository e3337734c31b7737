//! `raw`: the baseline Confab's fan-out is compared against, written to be as lean as a
//! broadcast server can be, so that "Confab Nx raw" measures Confab against the floor rather
//! than against another framework's overhead. It speaks just enough GraphQL-over-HTTP and
//! graphql-transport-ws for the loadgen client, stores nothing and runs no GraphQL.
//!
//! What it answers: `register`/`login` (a fixed token), `createRoom` (a fixed id) and
//! `sendMessage` (a fresh increasing id, and the event to every subscriber), recognised by the
//! field name in the document. Every socket is subscribed to the one room whatever it asks for;
//! its operation id must be the client's (`client::OPERATION_ID`) since frames are encoded once.
//!
//! The shape: hyper's HTTP/1 directly (keep-alive) for the POSTs and the upgrade; after the
//! `101`, hyper hands the `TcpStream` back and [`socket`] serves the WebSocket on it with one
//! task. Each message is encoded once as a whole WebSocket frame ([`frame`]) and shared through
//! a broadcast channel; every socket writes those bytes as they are, many frames per write.

mod frame;
mod socket;

use std::{
    convert::Infallible,
    net::SocketAddr,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use clap::Args;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{self, HeaderMap, HeaderValue},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::{net::TcpStream, sync::broadcast};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::{client::OPERATION_ID, process};

/// Frames queued for the slowest socket before it is dropped (it has no store to resync from).
const BACKLOG: usize = 4096;
/// The largest request body read.
const MAX_BODY: usize = 64 * 1024;
const SUBPROTOCOL: &str = "graphql-transport-ws";

#[derive(Debug, Clone, Args)]
pub struct ServeRawArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
}

struct Raw {
    /// Whole encoded WebSocket frames, one per message, to every subscribed socket.
    frames: broadcast::Sender<Bytes>,
    /// The last id given. Held while a message is broadcast, so frames go out in id order
    /// (the order every subscriber checks) even when sends race.
    last_id: Mutex<u64>,
}

pub async fn serve(args: ServeRawArgs) -> ExitCode {
    process::init_tracing();
    let raw = Arc::new(Raw {
        frames: broadcast::channel(BACKLOG).0,
        last_id: Mutex::new(0),
    });
    let listener = match tokio::net::TcpListener::bind(args.addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("serve-raw: cannot listen on {}: {e}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => process::announce(addr),
        Err(e) => {
            eprintln!("serve-raw: {e}");
            return ExitCode::FAILURE;
        }
    }
    let mut terminated = std::pin::pin!(process::terminated());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, most likely: wait rather than spin.
                    eprintln!("serve-raw: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut terminated => return ExitCode::SUCCESS,
        };
        let _ = stream.set_nodelay(true);
        let raw = raw.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let raw = raw.clone();
                async move { Ok::<_, Infallible>(route(request, raw).await) }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

type Answer = Response<Full<Bytes>>;

async fn route(request: Request<Incoming>, raw: Arc<Raw>) -> Answer {
    match (request.method(), request.uri().path()) {
        (&Method::POST, "/graphql") => graphql(request, &raw).await,
        (&Method::GET, "/graphql") => upgrade(request, &raw),
        (&Method::GET, "/healthz") => answer(StatusCode::OK, "text/plain", "ok".into()),
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

#[derive(Deserialize)]
struct GraphqlRequest {
    query: String,
    #[serde(default)]
    variables: Value,
}

async fn graphql(request: Request<Incoming>, raw: &Raw) -> Answer {
    let Ok(body) = Limited::new(request.into_body(), MAX_BODY).collect().await else {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large");
    };
    let Ok(request) = serde_json::from_slice::<GraphqlRequest>(&body.to_bytes()) else {
        return error(StatusCode::BAD_REQUEST, "the body is not a GraphQL request");
    };
    let query = request.query.as_str();
    let variables = &request.variables;
    let data = if query.contains("sendMessage(") {
        let Some(body) = variables.get("b").and_then(Value::as_str) else {
            return error(StatusCode::OK, "sendMessage needs $b");
        };
        let mut last_id = raw.last_id.lock().unwrap_or_else(|p| p.into_inner());
        *last_id += 1;
        let id = format!("{:024x}", *last_id);
        let _ = raw.frames.send(message_frame(&id, body));
        drop(last_id);
        json!({"sendMessage": {"id": id}})
    } else if let Some(field) = ["register(", "login("].iter().find(|f| query.contains(**f)) {
        let field = field.trim_end_matches('(');
        json!({field: {"token": "raw", "user": {"id": format!("{:024x}", 1), "username": variables.get("u")}}})
    } else if query.contains("createRoom(") {
        json!({"createRoom": {"id": format!("{:024x}", 1)}})
    } else {
        return error(
            StatusCode::OK,
            "the raw baseline answers register, login, createRoom and sendMessage only",
        );
    };
    let body = json!({ "data": data }).to_string();
    answer(StatusCode::OK, "application/json", body.into())
}

/// The one encoding of a message: the whole `next` frame every subscriber is sent.
fn message_frame(id: &str, body: &str) -> Bytes {
    #[derive(Serialize)]
    struct Next<'a> {
        id: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        payload: Payload<'a>,
    }
    #[derive(Serialize)]
    struct Payload<'a> {
        data: Data<'a>,
    }
    #[derive(Serialize)]
    struct Data<'a> {
        #[serde(rename = "roomEvents")]
        room_events: Event<'a>,
    }
    #[derive(Serialize)]
    struct Event<'a> {
        __typename: &'a str,
        message: Message<'a>,
    }
    #[derive(Serialize)]
    struct Message<'a> {
        id: &'a str,
        body: &'a str,
    }
    let next = Next {
        id: OPERATION_ID,
        kind: "next",
        payload: Payload {
            data: Data {
                room_events: Event {
                    __typename: "MessageAdded",
                    message: Message { id, body },
                },
            },
        },
    };
    // Serialising plain strings into a Vec cannot fail.
    frame::encode_with(frame::OP_TEXT, |buf| {
        let _ = serde_json::to_writer(buf, &next);
    })
}

/// Answers a WebSocket upgrade (RFC 6455 §4.2) offering graphql-transport-ws, and once the
/// `101` is sent, serves the socket on the connection's own `TcpStream`.
fn upgrade(mut request: Request<Incoming>, raw: &Raw) -> Answer {
    let headers = request.headers();
    if !has_token(headers, &header::CONNECTION, "upgrade")
        || !has_token(headers, &header::UPGRADE, "websocket")
    {
        return error(
            StatusCode::BAD_REQUEST,
            "GET /graphql is a WebSocket upgrade",
        );
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION) != Some(&HeaderValue::from_static("13")) {
        let mut refused = error(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only");
        refused.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return refused;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return error(StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key");
    };
    if !has_token(headers, &header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL) {
        return error(
            StatusCode::BAD_REQUEST,
            "the subprotocol is graphql-transport-ws",
        );
    }
    let accept = derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(&mut request);
    let frames = raw.frames.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        // Every connection is served on a `TokioIo<TcpStream>`, so this cannot miss.
        let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
            return;
        };
        socket::serve(parts.io.into_inner(), parts.read_buf, frames).await;
    });
    let mut switching = Response::new(Full::default());
    *switching.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = switching.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    switching
}

/// Whether a comma-separated header lists `token` (case-insensitively), in any of its values.
fn has_token(headers: &HeaderMap, name: &header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

fn answer(status: StatusCode, content_type: &'static str, body: Bytes) -> Answer {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn error(status: StatusCode, message: &str) -> Answer {
    let body = json!({"errors": [{"message": message}]}).to_string();
    answer(status, "application/json", body.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_frame_is_the_next_event_the_client_reads() {
        let frame = message_frame("00000000000000000000002a", "m7-123");
        assert_eq!(frame[0], 0x81, "a whole text frame");
        let (len, at) = match frame[1] {
            126 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
            len => (usize::from(len), 2),
        };
        let text = std::str::from_utf8(&frame[at..]).unwrap();
        assert_eq!(len, text.len());
        match crate::client::parse_frame(text).unwrap() {
            crate::client::Incoming::Message { id, body } => {
                assert_eq!((id, body), ("00000000000000000000002a", "m7-123"));
            }
            _ => panic!("not a message: {text}"),
        }
    }
}
