//! GraphQL over WebSocket, both subprotocols, with the protocol loop owned here.
//!
//! `graphql-transport-ws` (the graphql-ws library) is served to the letter of its PROTOCOL.md:
//! 4408 when `connection_init` does not come in time, 4429 for a second init, 4401 for
//! `subscribe` before the ack, 4403 for a missing or rejected token (and when the token
//! expires), 4409 for a duplicate operation id, 4400 for a malformed message, pong for ping,
//! `error` (and no `complete`) for an operation refused before it streams. The legacy
//! `graphql-ws` protocol (subscriptions-transport-ws) is served by the same loop with its own
//! message names.
//!
//! - [`protocol`]: the subprotocols' words, close codes and frames;
//! - [`connection`]: one socket's state and loop, and its writer;
//! - [`operation`]: one operation, run and answered;
//! - [`fanout`]: room events rendered once per distinct subscription.
//!
//! Memory is bounded per socket: frames of at most [`MAX_FRAME`], at most
//! `--ws-max-operations` operations, an outgoing queue of [`OUT_QUEUE`] frames (plus one per
//! running operation). An operation whose frames cannot be sent waits; meanwhile its room feed
//! lags and resyncs from the store (see `service::feed`), and a socket whose writes stall for
//! [`WRITE_TIMEOUT`] is dropped.

mod connection;
pub mod fanout;
mod operation;
pub mod protocol;

use std::time::Duration;

use axum::{
    extract::{State, ws::WebSocketUpgrade},
    http::{HeaderMap, StatusCode, header},
    response::Response,
};

use super::endpoint::GraphqlState;
use crate::{
    auth::{Caller, ClientIp},
    error::Code,
    http::{Problem, auth as edge_auth},
};
use connection::Connection;
use protocol::{LEGACY_WS, Protocol, TRANSPORT_WS};

/// Largest frame or message a client may send.
pub const MAX_FRAME: usize = 64 * 1024;
/// Frames queued for one socket before its operations wait.
pub const OUT_QUEUE: usize = 64;
/// Bytes a socket reads at a time. Clients send small messages (`subscribe`, `ping`), and this
/// buffer is kept for as long as the socket is open, idle or not; a larger message is read in
/// several reads, growing the buffer while it lasts.
pub const READ_BUFFER: usize = 256;
/// Bytes of encoded frames a socket gathers before writing them out, when several are queued
/// (see `connection::write_batch`). Small enough that the buffer a busy socket keeps stays
/// small; large enough that a burst goes out in a few writes.
pub const WRITE_BUFFER: usize = 16 * 1024;
/// How long one write may stall before the socket is considered dead.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest message the server sends; a result beyond it is answered with an `error` instead.
/// (Complexity limits keep real results far below it.)
pub const MAX_OUTGOING: usize = 4 * 1024 * 1024;
/// How long closing may take: sending what is queued, then the close frame.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a legacy client hears `ka`.
const LEGACY_KEEPALIVE: Duration = Duration::from_secs(25);

/// `GET /graphql` with `Upgrade: websocket`.
pub async fn upgrade(
    State(ctx): State<GraphqlState>,
    headers: HeaderMap,
    client: ClientIp,
    ws: WebSocketUpgrade,
) -> Response {
    let header_caller = ctx
        .service
        .authenticate(edge_auth::from_headers(&ctx.tokens, &headers))
        .await;
    match header_caller {
        Caller::Invalid(why) => return Problem::new(Code::Unauthenticated, why).graphql_response(),
        Caller::Unavailable => {
            return Problem::new(Code::InternalServerError, "cannot check your session now")
                .graphql_response();
        }
        _ => {}
    }
    let offered = headers.contains_key(header::SEC_WEBSOCKET_PROTOCOL);
    let ws = ws.protocols([TRANSPORT_WS, LEGACY_WS]);
    let protocol = match ws.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some(LEGACY_WS) => Protocol::Legacy,
        Some(_) => Protocol::Transport,
        // A client that names no subprotocol gets the current one.
        None if !offered => Protocol::Transport,
        None => {
            let message =
                format!("unsupported WebSocket subprotocol; use {TRANSPORT_WS} or {LEGACY_WS}");
            return Problem::new(Code::BadRequest, message)
                .with_status(StatusCode::BAD_REQUEST)
                .graphql_response();
        }
    };
    let agent = edge_auth::user_agent(&headers);
    // One pointer: axum keeps room for this callback beside the socket's future for as long as
    // the socket lives, so what it carries is boxed (and freed once it has run).
    let setup = Box::new((ctx, header_caller, client, agent));
    ws.max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(2 * MAX_OUTGOING)
        .on_upgrade(move |socket| {
            let (ctx, caller, client, agent) = *setup;
            Connection::run(ctx, socket, protocol, caller, client, agent)
        })
}
