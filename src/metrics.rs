//! `/metrics`: the server's live counts in the Prometheus text format (OpenMetrics), from one
//! registry built at startup. The counts themselves live where they are kept (sockets, fan-out,
//! connections); the registry holds handles to the same atomics, so a scrape costs no
//! bookkeeping on the hot paths.

use prometheus_client::{encoding::text::encode, registry::Registry};

use crate::{
    graphql::{endpoint::WsStats, ws::fanout::Renders},
    server::connections::Connections,
    service::SessionStats,
};

/// The media type of the text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every series `/metrics` shows.
pub struct Metrics(Registry);

impl Metrics {
    pub fn new(
        ws: &WsStats,
        renders: &Renders,
        connections: &Connections,
        sessions: &SessionStats,
    ) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "confab_http_connections",
            "Open client connections (HTTP, and the WebSockets upgraded from them)",
            connections.total.clone(),
        );
        registry.register(
            "confab_ws_connections",
            "Open GraphQL WebSocket connections",
            ws.connections.clone(),
        );
        registry.register(
            "confab_ws_operations",
            "GraphQL operations running over WebSockets",
            ws.operations.clone(),
        );
        registry.register(
            "confab_event_renders",
            "Room events rendered for subscribers (once per distinct subscription)",
            renders.renders.clone(),
        );
        registry.register(
            "confab_event_deliveries",
            "Room events sent to subscribers",
            renders.deliveries.clone(),
        );
        registry.register(
            "confab_session_store_reads",
            "Sessions read from the store to check a token (each instance caches them)",
            sessions.store_reads.clone(),
        );
        registry.register(
            "confab_session_revocations",
            "Session revocations heard, from this instance or another",
            sessions.revocations.clone(),
        );
        Self(registry)
    }

    /// The text a scrape gets.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(e) = encode(&mut text, &self.0) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        text
    }
}
