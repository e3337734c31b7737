//! `raw`: the baseline Confab's fan-out is compared against. A WebSocket broadcast server that
//! speaks just enough graphql-transport-ws and GraphQL-over-HTTP for the loadgen client, stores
//! nothing, runs no GraphQL, and sends one pre-encoded frame per message to every socket.
//!
//! What it answers: `register`/`login` (a fixed token), `createRoom` (a fixed id) and
//! `sendMessage` (a fresh increasing id, and the event to every subscriber), recognised by the
//! field name in the document. Every socket is subscribed to the one room whatever it asks for;
//! its operation id must be the client's (`client::OPERATION_ID`) since frames are encoded once.

use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::{
        State,
        ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
    },
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use clap::Args;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::{client::OPERATION_ID, process};

/// Frames queued for the slowest socket before it is dropped (it has no store to resync from).
const BACKLOG: usize = 4096;

#[derive(Debug, Clone, Args)]
pub struct ServeRawArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
}

#[derive(Clone)]
struct Raw {
    frames: broadcast::Sender<Utf8Bytes>,
    /// The last id given. Held while a message is broadcast, so frames go out in id order
    /// (the order every subscriber checks) even when sends race.
    last_id: Arc<Mutex<u64>>,
}

pub async fn serve(args: ServeRawArgs) -> ExitCode {
    process::init_tracing();
    let state = Raw {
        frames: broadcast::channel(BACKLOG).0,
        last_id: Arc::default(),
    };
    let router = Router::new()
        .route("/graphql", post(graphql).get(upgrade))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state);
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
    match axum::serve(listener, router)
        .with_graceful_shutdown(process::terminated())
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serve-raw: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Deserialize)]
struct GraphqlRequest {
    query: String,
    #[serde(default)]
    variables: Value,
}

async fn graphql(State(raw): State<Raw>, body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<GraphqlRequest>(&body) else {
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
        // The one encoding of this message, shared by every socket.
        let frame = json!({
            "id": OPERATION_ID,
            "type": "next",
            "payload": {"data": {"roomEvents": {
                "__typename": "MessageAdded",
                "message": {"id": id, "body": body},
            }}},
        })
        .to_string();
        let _ = raw.frames.send(Utf8Bytes::from(frame));
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
    (
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "data": data }).to_string(),
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"errors": [{"message": message}]}).to_string(),
    )
        .into_response()
}

async fn upgrade(State(raw): State<Raw>, ws: WebSocketUpgrade) -> Response {
    ws.protocols(["graphql-transport-ws"])
        .on_upgrade(move |socket| serve_socket(socket, raw))
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    id: Option<&'a str>,
}

async fn serve_socket(mut socket: WebSocket, raw: Raw) {
    let mut feed: Option<broadcast::Receiver<Utf8Bytes>> = None;
    loop {
        let frame = tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<Incoming>(text.as_str()) {
                    Ok(Incoming { kind: "connection_init", .. }) => {
                        Message::text(r#"{"type":"connection_ack"}"#)
                    }
                    Ok(Incoming { kind: "ping", .. }) => Message::text(r#"{"type":"pong"}"#),
                    Ok(Incoming { kind: "subscribe", id: Some(OPERATION_ID) }) => {
                        feed = Some(raw.frames.subscribe());
                        continue;
                    }
                    Ok(Incoming { kind: "complete", .. }) => {
                        feed = None;
                        continue;
                    }
                    _ => close(4400, "the raw baseline does not understand that"),
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            },
            event = next_event(&mut feed), if feed.is_some() => match event {
                Ok(frame) => Message::Text(frame),
                Err(broadcast::error::RecvError::Lagged(_)) => close(4500, "lagged behind"),
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        let closing = matches!(frame, Message::Close(_));
        if socket.send(frame).await.is_err() || closing {
            return;
        }
    }
}

async fn next_event(
    feed: &mut Option<broadcast::Receiver<Utf8Bytes>>,
) -> Result<Utf8Bytes, broadcast::error::RecvError> {
    match feed {
        Some(feed) => feed.recv().await,
        None => std::future::pending().await,
    }
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}
