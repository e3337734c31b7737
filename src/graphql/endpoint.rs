//! What the GraphQL endpoints, over HTTP and over WebSocket, share: the schema, the renderings of
//! room events, token keys, the socket settings and counts.

use std::{sync::Arc, time::Duration};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

use super::{AppSchema, ws::fanout::Renders};
use crate::{auth::Tokens, service::ChatService};

#[derive(Clone)]
pub struct GraphqlState {
    pub schema: AppSchema,
    /// Room events rendered once per distinct subscription (see `ws::fanout`).
    pub renders: Arc<Renders>,
    pub tokens: Tokens,
    /// Checks sessions, and whether a socket's session still stands.
    pub service: Arc<ChatService>,
    /// How long a WebSocket may wait before `connection_init`.
    pub init_timeout: Duration,
    /// How long an acknowledged socket may run no operation before it is closed.
    pub idle_timeout: Duration,
    pub max_operations: usize,
    /// Turns `true` when the server shuts down: sockets close with 1001.
    pub shutdown: watch::Receiver<bool>,
    pub stats: Arc<WsStats>,
}

/// Live counts, shown on `/metrics`.
#[derive(Default)]
pub struct WsStats {
    /// Open GraphQL WebSockets.
    pub connections: Gauge,
    /// Operations running over them.
    pub operations: Gauge,
}
