//! `/metrics`: the server's live counts in the Prometheus text format (OpenMetrics), from one
//! registry built at startup. The counts themselves live where they are kept (sockets, fan-out,
//! connections); the registry holds handles to the same atomics, so a scrape costs no
//! bookkeeping on the hot paths. What is read only when scraped (the process's memory and CPU,
//! the open Socket.IO sockets) is a collector, asked at each scrape.
//!
//! Every label takes values from a set fixed in the code (a route template, never a raw path; an
//! error code from [`Code`](crate::error::Code); a rate-limit kind; a store operation), so what a
//! client sends can never add series.
//!
//! The parts: [`http`] (requests by route and status, and their latency: a layer around the
//! router), [`graphql`] (operations by transport, type and outcome: an async-graphql extension),
//! [`limits`] (rate-limit refusals by kind: a wrapper around the limiter), [`store`] (store call
//! latency, which each driver measures where its calls meet one seam), `process` (memory, CPU,
//! open files, start time, from `/proc/self` on Linux), and here the open sockets and build info.

pub mod graphql;
pub mod http;
pub mod limits;
mod process;
pub mod store;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, text::encode},
    metrics::{MetricType, gauge::ConstGauge, info::Info},
    registry::Registry,
};

use crate::{
    graphql::{endpoint::WsStats, ws::fanout::Renders},
    server::connections::Connections,
    service::SessionStats,
};

/// The media type of the text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The commit Confab was built from, when the build said (`CONFAB_GIT_COMMIT=… cargo build`);
/// a build from a source tarball has none, and no build script guesses one.
pub const GIT_COMMIT: Option<&str> = option_env!("CONFAB_GIT_COMMIT");

/// Where the series come from: the counts the server keeps, and the handles the metrics parts
/// made.
pub struct Sources<'a> {
    pub ws: &'a WsStats,
    pub renders: &'a Renders,
    pub connections: &'a Connections,
    pub sessions: &'a SessionStats,
    pub http: &'a http::HttpMetrics,
    pub operations: &'a graphql::OperationCounts,
    pub refusals: &'a limits::Refusals,
    /// The store's call latencies, when its driver measures them.
    pub store: Option<store::StoreTimings>,
    /// The Socket.IO sockets, counted at each scrape.
    pub socketio: socketioxide::SocketIo,
}

/// Every series `/metrics` shows.
pub struct Metrics(Registry);

impl Metrics {
    pub fn new(sources: Sources<'_>) -> Self {
        let Sources {
            ws,
            renders,
            connections,
            sessions,
            http,
            operations,
            refusals,
            store,
            socketio,
        } = sources;
        let mut registry = Registry::default();
        registry.register(
            "confab_http_connections",
            "Open client connections (HTTP, and the WebSockets upgraded from them)",
            connections.total.clone(),
        );
        // Both reasons from zero, so that a rate over the first refusal is not lost.
        for reason in ["full", "per-ip"] {
            let _ = connections.refused.get_or_create(&[("reason", reason)]);
        }
        registry.register(
            "confab_connections_refused",
            "Client connections refused when accepted, by reason: full (--max-connections) or per-ip (--max-connections-per-ip)",
            connections.refused.clone(),
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
        registry.register_collector(Box::new(OpenSockets {
            graphql_ws: ws.connections.clone(),
            socketio,
        }));
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
        http.register(&mut registry);
        operations.register(&mut registry);
        refusals.register(&mut registry);
        if let Some(store) = store {
            store.register(&mut registry);
        }
        registry.register(
            "confab_build",
            "The running build: its version, and its commit when the build named one",
            Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", GIT_COMMIT.unwrap_or("unknown")),
            ]),
        );
        registry.register_collector(Box::new(process::ProcessCollector::new()));
        Self(registry)
    }

    /// The text a scrape gets. It reads `/proc` (the process collector): call it off the async
    /// runtime (`spawn_blocking`).
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(e) = encode(&mut text, &self.0) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        text
    }
}

/// `confab_open_sockets{transport}`: GraphQL WebSockets (both subprotocols) from their gauge,
/// Socket.IO sockets (connected and signed in) counted from socketioxide's own list.
struct OpenSockets {
    graphql_ws: prometheus_client::metrics::gauge::Gauge,
    socketio: socketioxide::SocketIo,
}

impl std::fmt::Debug for OpenSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSockets").finish_non_exhaustive()
    }
}

impl Collector for OpenSockets {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let socketio = i64::try_from(self.socketio.sockets().len()).unwrap_or(i64::MAX);
        let mut family = encoder.encode_descriptor(
            "confab_open_sockets",
            "Open sockets by transport: graphql-ws (GraphQL over WebSocket, either subprotocol) and socket.io",
            None,
            MetricType::Gauge,
        )?;
        for (transport, open) in [
            ("graphql-ws", self.graphql_ws.get()),
            ("socket.io", socketio),
        ] {
            let labels = [("transport", transport)];
            ConstGauge::new(open).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
