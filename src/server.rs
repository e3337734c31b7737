//! The HTTP server: routes, middleware, startup and graceful shutdown.
//!
//! [`Application::build`] binds its own listener (port 0 allowed) and exposes the bound address,
//! so tests start the real server exactly as `main` does. [`connections`] accepts them.

pub mod connections;
pub mod healthcheck;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{FromRef, RawQuery, State, ws::WebSocketUpgrade},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::json;
use tokio::{net::TcpListener, sync::watch};
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};

use crate::{
    auth::{self, ClientIp, Tokens},
    bus::{EventBus, LocalBus, redis::RedisBus},
    config::{Config, DatabaseUrl, ListenAddr},
    error::Code,
    graphql::{
        self, build_schema_counted,
        endpoint::{GraphqlState, WsStats},
        ws::fanout::Renders,
    },
    http::{Json, Problem},
    metrics::{self, Metrics},
    rest,
    service::{
        ChatService, Guards,
        limiter::{Limiter, memory::MemoryLimiter, redis::RedisLimiter},
    },
    socketio, store, web,
};
use connections::{ConnectionLimits, Connections};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub use crate::config::ConfigError;

#[derive(Clone)]
struct AppState {
    service: Arc<ChatService>,
    graphql: GraphqlState,
    metrics: Arc<Metrics>,
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
    /// `--metrics-addr`: its listener, bound address and router.
    metrics: Option<(TcpListener, SocketAddr, Router)>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    stats: Arc<WsStats>,
    limits: ConnectionLimits,
    connections: Arc<Connections>,
}

impl Application {
    /// Binds the listener, opens the store, and builds the schema and routes.
    ///
    /// Everything that can refuse the start without writing comes first: the listener (a port
    /// in use, a name that does not resolve), Redis, and a key file already kept. Only then are
    /// files created (the SQLite database, a generated key), so a refused start leaves none.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let url = DatabaseUrl::parse(&config.database_url).map_err(ConfigError)?;
        let listener = bind(&config.addr).await?;
        let addr = listener.local_addr()?;
        // Before anything is opened or written: an address that cannot be had is a refusal.
        let metrics_listener = match config.metrics_addr {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                ConfigError(format!("cannot listen on {addr} (--metrics-addr): {e}"))
            })?),
            None => None,
        };
        if let Some(url) = &config.redis_url {
            crate::bus::redis::probe(url).await?;
        }
        let bus: Arc<dyn EventBus> = match &config.redis_url {
            Some(url) => RedisBus::connect(url).await?,
            None => Arc::new(LocalBus::new()),
        };
        let rates = config.rate_limits();
        let limiter: Arc<dyn Limiter> = match &config.redis_url {
            Some(url) => Arc::new(RedisLimiter::connect(url).await?),
            None => MemoryLimiter::new(),
        };
        let presence: Arc<dyn crate::service::presence::PresenceTracker> = match &config.redis_url {
            Some(url) => {
                crate::service::presence::RedisPresence::connect(
                    url,
                    config.presence_timeout,
                    config.presence_idle,
                )
                .await?
            }
            None => crate::service::presence::MemoryPresence::new(
                config.presence_timeout,
                config.presence_idle,
            ),
        };
        let data_dir = url.data_dir();
        let key = auth::signing_key(config.jwt_secret.as_ref(), data_dir.as_deref())?;
        let store = store::connect(&url).await?;
        let store_timings = store.timings();
        let secret = key.into_bytes()?;
        let tokens = Tokens::new(&secret, config.token_ttl);
        let refusals = metrics::limits::Refusals::default();
        let limiter = refusals.counting(limiter);
        let limits = connection_limits(config, rates.enabled);
        let guards = Guards {
            rates,
            limiter,
            max_rooms_per_user: config.max_rooms_per_user,
        };
        let service = Arc::new(
            ChatService::new(
                store,
                bus,
                tokens.clone(),
                guards,
                crate::service::AccountPolicy::from_config(config),
            )
            .with_presence(presence),
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let stats = Arc::new(WsStats::default());
        let renders = Arc::new(Renders::default());
        let connections = Arc::new(Connections::default());
        let (socketio, io) = socketio::layer(service.clone());
        let http_metrics = metrics::http::HttpMetrics::default();
        let operations = metrics::graphql::OperationCounts::default();
        let metrics = Arc::new(Metrics::new(metrics::Sources {
            ws: &stats,
            renders: &renders,
            connections: &connections,
            sessions: service.session_stats(),
            http: &http_metrics,
            operations: &operations,
            refusals: &refusals,
            store: store_timings,
            socketio: io,
        }));
        let state = AppState {
            service: service.clone(),
            metrics,
            graphql: GraphqlState {
                schema: build_schema_counted(Some(service.clone()), operations),
                renders,
                tokens,
                service: service.clone(),
                init_timeout: config.ws_init_timeout,
                idle_timeout: config.ws_idle_timeout,
                max_operations: config.ws_max_operations,
                shutdown: shutdown_rx,
                stats: stats.clone(),
            },
        };
        let metrics_side = match metrics_listener {
            Some(listener) => {
                let addr = listener.local_addr()?;
                Some((listener, addr, metrics_router(state.metrics.clone())))
            }
            None => None,
        };
        Ok(Self {
            listener,
            // Socket.IO outside the rest: its long-polls outlive the request timeout, and it has
            // its own payload limit. The security headers outside those, so every response has
            // them; the request counts outermost, so they see every answer as sent.
            router: router(state, &config.cors_origins, metrics_side.is_none())
                .layer(socketio)
                .layer(web::security_headers_layer())
                .layer(axum::middleware::from_fn_with_state(
                    http_metrics,
                    metrics::http::track,
                )),
            metrics: metrics_side,
            addr,
            shutdown,
            stats,
            limits,
            connections,
        })
    }

    /// Open client connections.
    pub fn connections(&self) -> Arc<Connections> {
        self.connections.clone()
    }

    /// The address the server listens on (the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address `/metrics` is served on with `--metrics-addr` (the real port when 0 was
    /// asked for).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, addr, _)| *addr)
    }

    /// Serves until `signal` resolves, then stops accepting, lets requests finish and closes
    /// every WebSocket with a close frame (1001).
    pub async fn run_until_stopped(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        tracing::info!("listening on http://{}", self.addr);
        let metrics_server = self.metrics.map(|(listener, addr, router)| {
            tracing::info!("serving /metrics on http://{addr}/metrics");
            let mut stopping = self.shutdown.subscribe();
            tokio::spawn(async move {
                let stopped = async move {
                    let _ = stopping.wait_for(|stop| *stop).await;
                };
                if let Err(e) = axum::serve(listener, router)
                    .with_graceful_shutdown(stopped)
                    .await
                {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            })
        });
        let shutdown = self.shutdown.clone();
        connections::serve(
            self.listener,
            self.router,
            self.limits,
            self.connections,
            async move {
                signal.await;
                tracing::info!("shutting down");
                let _ = shutdown.send(true);
            },
        )
        .await;
        // WebSockets outlive their HTTP connection: wait (briefly) for their close frames.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while self.stats.connections.get() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(server) = metrics_server {
            let _ = tokio::time::timeout_at(deadline, server).await;
        }
        Ok(())
    }
}

/// Listens on the first address `--addr` stands for that takes it (a name may stand for
/// several: `localhost` for 127.0.0.1 and ::1).
async fn bind(addr: &ListenAddr) -> anyhow::Result<TcpListener> {
    let mut refused = None;
    for candidate in addr.resolve().await.map_err(ConfigError)? {
        match TcpListener::bind(candidate).await {
            Ok(listener) => return Ok(listener),
            Err(e) => refused = Some((candidate, e)),
        }
    }
    Err(match refused {
        Some((candidate, e)) if candidate.to_string() == addr.to_string() => {
            anyhow::anyhow!("cannot listen on {addr}: {e}")
        }
        Some((candidate, e)) => anyhow::anyhow!("cannot listen on {addr} ({candidate}): {e}"),
        None => anyhow::anyhow!("--addr {addr} names no address"),
    })
}

/// The connection caps and timeouts the flags ask for, within the open-files limit (raised to
/// its hard limit first).
fn connection_limits(config: &Config, rate_limits: bool) -> ConnectionLimits {
    let mut max_total = config.max_connections;
    match connections::raise_open_files_limit() {
        Ok((before, soft, hard)) => {
            tracing::info!("open files limit: {soft} (was {before}; hard limit {hard})");
            let fits = usize::try_from(soft)
                .unwrap_or(usize::MAX)
                .saturating_sub(connections::RESERVED_FILES)
                .max(1);
            if fits < max_total {
                tracing::warn!(
                    "--max-connections lowered from {max_total} to {fits} to fit the open files limit ({soft}); raise it (ulimit -n, LimitNOFILE=) for more"
                );
                max_total = fits;
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the open files limit"),
    }
    ConnectionLimits {
        max_total,
        max_per_ip: rate_limits.then_some(config.max_connections_per_ip),
        header_read_timeout: config.header_read_timeout,
        trusted_proxies: config.trusted_proxies.clone(),
    }
}

/// The application's routes; `/metrics` among them unless it has an address of its own.
fn router(state: AppState, cors_origins: &[String], with_metrics: bool) -> Router {
    let router = Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz));
    let router = if with_metrics {
        router.route("/metrics", get(metrics))
    } else {
        router
    };
    let router = router
        .merge(rest::routes())
        .merge(web::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(crate::http::MAX_BODY))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ));
    // Without `--cors-origins`, no CORS headers at all: browsers then let only pages of
    // Confab's own origin read its answers.
    let router = if cors_origins.is_empty() {
        router
    } else {
        let origins = cors_origins
            .iter()
            .filter_map(|origin| header::HeaderValue::from_str(origin).ok());
        router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT]),
        )
    };
    router.layer(TraceLayer::new_for_http()).with_state(state)
}

async fn graphql_get(
    State(state): State<GraphqlState>,
    headers: HeaderMap,
    client: ClientIp,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    query: RawQuery,
) -> Response {
    match upgrade {
        Ok(ws) => graphql::ws::upgrade(State(state), headers, client, ws).await,
        Err(_) => graphql::http::get(State(state), headers, client, query).await,
    }
}

async fn graphql_post(
    State(state): State<GraphqlState>,
    headers: HeaderMap,
    client: ClientIp,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    match body {
        Ok(body) => graphql::http::post(State(state), headers, client, body).await,
        Err(rejection) => {
            let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Code::PayloadTooLarge
            } else {
                Code::BadRequest
            };
            let message = format!("cannot read the request body: {}", rejection.body_text());
            Problem::new(code, message)
                .with_status(rejection.status())
                .rest_response()
        }
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.service.ready().await {
        Ok(()) => Json(json!({
            "status": "ready",
            "bus": state.service.bus_health(),
            "schema_version": state.service.schema_version(),
        }))
        .into_response(),
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
                    "schema_version": state.service.schema_version(),
                }),
                None => json!({
                    "status": "unavailable",
                    "store": "not answering",
                    "schema_version": state.service.schema_version(),
                }),
            };
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    scrape(state.metrics).await
}

/// The router `--metrics-addr` serves: `/metrics`, and a 404 for anything else.
fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(metrics): State<Arc<Metrics>>| scrape(metrics)),
        )
        .fallback(not_found)
        .with_state(metrics)
}

/// One scrape; it reads `/proc`, so off the async runtime.
async fn scrape(metrics: Arc<Metrics>) -> Response {
    match tokio::task::spawn_blocking(move || metrics.render()).await {
        Ok(body) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "the metrics scrape failed");
            Problem::new(Code::InternalServerError, "cannot read the metrics").rest_response()
        }
    }
}

async fn method_not_allowed() -> Response {
    Problem::new(
        Code::MethodNotAllowed,
        "this route does not take that method",
    )
    .rest_response()
}

async fn not_found() -> Response {
    Problem::new(Code::NotFound, "no such route").rest_response()
}
