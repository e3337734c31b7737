//! The HTTP server: routes, middleware, startup and graceful shutdown.
//!
//! [`Application::build`] binds its own listener (port 0 allowed) and exposes the bound address,
//! so tests start the real server exactly as `main` does.

use std::{
    future::Future,
    io::Write as _,
    net::SocketAddr,
    path::Path,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::{FromRef, RawQuery, State, ws::WebSocketUpgrade},
    http::{HeaderMap, Method, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use serde_json::json;
use tokio::{net::TcpListener, sync::watch};
use tower_http::{
    cors::{Any, CorsLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

use crate::{
    auth::Tokens,
    bus::{EventBus, LocalBus, redis::RedisBus},
    config::{Config, DatabaseUrl},
    graphql::{
        self, build_schema,
        fanout::Renders,
        ws::{GraphqlState, WsStats},
    },
    rest,
    service::ChatService,
    socketio, store,
};

/// Largest HTTP request body accepted.
pub const MAX_BODY: usize = 256 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub use crate::config::ConfigError;

#[derive(Clone)]
struct AppState {
    service: Arc<ChatService>,
    graphql: GraphqlState,
}

impl FromRef<AppState> for Arc<ChatService> {
    fn from_ref(state: &AppState) -> Self {
        state.service.clone()
    }
}

impl FromRef<AppState> for GraphqlState {
    fn from_ref(state: &AppState) -> Self {
        state.graphql.clone()
    }
}

pub struct Application {
    listener: TcpListener,
    router: Router,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    stats: Arc<WsStats>,
}

impl Application {
    /// Opens the store, builds the schema and routes, and binds the listener.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let url = DatabaseUrl::parse(&config.database_url).map_err(ConfigError)?;
        let store = store::connect(&url).await?;
        let secret = jwt_secret(config, &url)?;
        let tokens = Tokens::new(&secret, config.token_ttl);
        let bus: Arc<dyn EventBus> = match &config.redis_url {
            Some(url) => RedisBus::connect(url).await?,
            None => Arc::new(LocalBus::new()),
        };
        let service = Arc::new(ChatService::new(store, bus, tokens.clone()));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let stats = Arc::new(WsStats::default());
        let state = AppState {
            service: service.clone(),
            graphql: GraphqlState {
                schema: build_schema(Some(service)),
                renders: Arc::new(Renders::default()),
                tokens,
                init_timeout: config.ws_init_timeout,
                max_operations: config.ws_max_operations,
                shutdown: shutdown_rx,
                stats: stats.clone(),
            },
        };
        let listener = TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.addr))?;
        let addr = listener.local_addr()?;
        let (socketio, _io) = socketio::layer(state.service.clone());
        Ok(Self {
            listener,
            // Outermost: Socket.IO long-polls outlive the request timeout, and it has its own
            // payload limit.
            router: router(state).layer(socketio),
            addr,
            shutdown,
            stats,
        })
    }

    /// The address the server listens on (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `signal` resolves, then stops accepting, lets requests finish and closes
    /// every WebSocket with a close frame (1001).
    pub async fn run_until_stopped(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!("listening on http://{}", self.addr);
        let shutdown = self.shutdown.clone();
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(async move {
                signal.await;
                tracing::info!("shutting down");
                let _ = shutdown.send(true);
            })
            .await?;
        // WebSockets outlive their HTTP connection: wait (briefly) for their close frames.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.stats.connections.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

fn router(state: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT]);
    Router::new()
        .route("/", get(playground))
        .route("/playground/app.js", get(playground_script))
        .route("/playground/style.css", get(playground_style))
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(rest::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(cors)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

// The chat page is compiled in, so the binary serves it offline with no build step.
async fn playground() -> Html<&'static str> {
    Html(include_str!("../playground/index.html"))
}

async fn playground_script() -> Response {
    let script = include_str!("../playground/app.js");
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        script,
    )
        .into_response()
}

async fn playground_style() -> Response {
    let style = include_str!("../playground/style.css");
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], style).into_response()
}

async fn graphql_get(
    State(state): State<GraphqlState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    query: RawQuery,
) -> Response {
    match upgrade {
        Ok(ws) => graphql::ws::upgrade(State(state), headers, ws).await,
        Err(_) => graphql::http::get(State(state), headers, query).await,
    }
}

async fn graphql_post(
    State(state): State<GraphqlState>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    match body {
        Ok(body) => graphql::http::post(State(state), headers, body).await,
        Err(rejection) => error_response(
            rejection.status(),
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                "PAYLOAD_TOO_LARGE"
            } else {
                "BAD_REQUEST"
            },
            &format!("cannot read the request body: {}", rejection.body_text()),
        ),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.service.ready().await {
        Ok(()) => {
            Json(json!({"status": "ready", "bus": state.service.bus_health()})).into_response()
        }
        Err(e) => {
            e.log_if_internal();
            // A store that answers but cannot write is named as such, with its reason (a
            // category such as "the disk is full", never a path or a query).
            let refusing = match &e {
                crate::error::Error::Internal(cause) => {
                    cause.downcast_ref::<store::RefusingWrites>()
                }
                _ => None,
            };
            let body = match refusing {
                Some(store::RefusingWrites(reason)) => json!({
                    "status": "unavailable",
                    "store": "refusing writes",
                    "reason": reason,
                }),
                None => json!({"status": "unavailable", "store": "not answering"}),
            };
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let stats = &state.graphql.stats;
    let body = format!(
        "# HELP confab_ws_connections Open GraphQL WebSocket connections.\n\
         # TYPE confab_ws_connections gauge\n\
         confab_ws_connections {}\n\
         # HELP confab_ws_operations GraphQL operations running over WebSockets.\n\
         # TYPE confab_ws_operations gauge\n\
         confab_ws_operations {}\n\
         # HELP confab_event_renders_total Room events rendered for subscribers (once per distinct subscription).\n\
         # TYPE confab_event_renders_total counter\n\
         confab_event_renders_total {}\n\
         # HELP confab_event_deliveries_total Room events sent to subscribers.\n\
         # TYPE confab_event_deliveries_total counter\n\
         confab_event_deliveries_total {}\n",
        stats.connections.load(Ordering::Relaxed),
        stats.operations.load(Ordering::Relaxed),
        state.graphql.renders.renders.load(Ordering::Relaxed),
        state.graphql.renders.deliveries.load(Ordering::Relaxed),
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this route does not take that method",
    )
}

async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
}

fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// The JWT signing key: the flag's, else one generated once and kept in the data directory.
fn jwt_secret(config: &Config, url: &DatabaseUrl) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = &config.jwt_secret {
        return Ok(secret.expose().as_bytes().to_vec());
    }
    let Some(dir) = url.data_dir() else {
        tracing::warn!(
            "no --jwt-secret given and the store is in memory: tokens are signed with a random key and end with this process"
        );
        return Ok(random_key().into_bytes());
    };
    load_or_create_key(&dir.join("jwt-secret"))
}

fn random_key() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn load_or_create_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    match std::fs::read_to_string(path) {
        Ok(key) => {
            let key = key.trim();
            if key.len() < 32 {
                return Err(ConfigError(format!(
                    "{} holds a key shorter than 32 bytes",
                    path.display()
                ))
                .into());
            }
            tracing::warn!(
                "no --jwt-secret given: signing tokens with the key kept in {}",
                path.display()
            );
            Ok(key.as_bytes().to_vec())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            let key = random_key();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            file.write_all(key.as_bytes())?;
            file.sync_all()?;
            tracing::warn!(
                "no --jwt-secret given: generated a signing key and kept it in {} (mode 0600)",
                path.display()
            );
            Ok(key.into_bytes())
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("jwt-secret");
        let first = load_or_create_key(&path).unwrap();
        assert!(first.len() >= 32);
        assert_eq!(load_or_create_key(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
