//! Accepting connections: caps, timeouts, and who the client is.
//!
//! One file because these are one path, the accept loop, each step of which needs the last
//! (a slot before the timers, the peer before the client's address); a fifth of it is tests.
//!
//! Confab serves HTTP/1.1 with hyper directly rather than through `axum::serve`, for what that
//! gives no handle on:
//! - **Timeouts.** hyper's header-read timeout, which needs a timer axum does not give it. It
//!   runs from the moment hyper waits for a request's head, so it bounds a slow head (slowloris)
//!   and an idle keep-alive connection alike.
//! - **Caps.** At most `max_total` connections at once, and `max_per_ip` from one address (not
//!   counting trusted proxies, which carry many clients). A connection over a cap is answered at
//!   once (503, or 429 for one address) and closed, instead of being accepted into a process that
//!   would then run out of file descriptors. A connection's slot is held by its socket, so an
//!   upgraded WebSocket keeps it until it closes.
//! - **Accept errors** (out of file descriptors, say) back off, from 10 ms to 1 s, instead of
//!   spinning, and are logged at most every 10 s.
//! - **The client's address** ([`ClientIp`]) goes into every request's extensions: the peer, or
//!   when the peer is one of `--trusted-proxies`, the nearest untrusted address in
//!   `X-Forwarded-For`.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::FromRequestParts,
    http::{HeaderMap, Request, request::Parts},
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use ipnet::IpNet;
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tower::ServiceExt as _;

use crate::{auth::ClientIp, error::Code, http::Problem};

/// File descriptors kept free for everything but client connections: the database and its
/// readers, Redis, refusals in flight, log files.
pub const RESERVED_FILES: usize = 256;
/// Refusals being written at once; beyond it a refused connection is closed unanswered.
const MAX_REFUSING: usize = 64;
/// How long a refusal may take to write.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What bounds the connections one server accepts.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    pub max_total: usize,
    /// `None` (`--rate-limits off`) for no per-address cap.
    pub max_per_ip: Option<usize>,
    pub header_read_timeout: Duration,
    pub trusted_proxies: Vec<IpNet>,
}

/// Open connections, in all and per address.
#[derive(Default)]
pub struct Connections {
    /// Client connections open, shown on `/metrics` too.
    pub total: Gauge,
    /// Connections refused at accept, by reason (`full`, `per-ip`), shown on `/metrics`.
    pub refused: Family<[(&'static str, &'static str); 1], Counter>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    refusing: AtomicUsize,
}

impl Connections {
    /// Open client connections (for `/metrics` and tests).
    pub fn open(&self) -> usize {
        usize::try_from(self.total.get()).unwrap_or(0)
    }

    /// A slot for a connection from `ip`, or why not.
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &ConnectionLimits) -> Result<Slot, Refusal> {
        let max = i64::try_from(limits.max_total).unwrap_or(i64::MAX);
        if self.total.inc() >= max {
            self.total.dec();
            self.refused.get_or_create(&[("reason", "full")]).inc();
            return Err(Refusal::Full);
        }
        let counted = limits.max_per_ip.is_some() && !is_trusted(ip, &limits.trusted_proxies);
        if counted {
            let mut per_ip = self.per_ip.lock().unwrap_or_else(|p| p.into_inner());
            let open = per_ip.entry(ip).or_insert(0);
            if Some(*open) >= limits.max_per_ip {
                drop(per_ip);
                self.total.dec();
                self.refused.get_or_create(&[("reason", "per-ip")]).inc();
                return Err(Refusal::TooManyFromYou);
            }
            *open += 1;
        }
        Ok(Slot {
            connections: self.clone(),
            ip: counted.then_some(ip),
        })
    }
}

/// A connection's place in the counts, given back when its socket is dropped.
struct Slot {
    connections: Arc<Connections>,
    ip: Option<IpAddr>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(ip) = self.ip {
            let mut per_ip = self
                .connections
                .per_ip
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(open) = per_ip.get_mut(&ip) {
                *open -= 1;
                if *open == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
        self.connections.total.dec();
    }
}

#[derive(Debug, Clone, Copy)]
enum Refusal {
    Full,
    TooManyFromYou,
}

impl Refusal {
    /// The whole HTTP response: status, JSON error body, and `Connection: close`.
    fn response(self) -> Vec<u8> {
        let (status, problem) = match self {
            Self::Full => (
                "503 Service Unavailable",
                Problem::new(
                    Code::ServiceUnavailable,
                    "the server is at its connection limit; try again later",
                ),
            ),
            Self::TooManyFromYou => (
                "429 Too Many Requests",
                Problem {
                    retry_after: Some(5),
                    ..Problem::new(
                        Code::RateLimited,
                        "too many connections from your address at once",
                    )
                },
            ),
        };
        let body = problem.rest_body().to_string();
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nRetry-After: 5\r\n\
             Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

/// A client socket holding its connection slot: the slot goes when the socket does, also
/// after an upgrade to WebSocket.
struct Tracked {
    stream: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Serves `router` on `listener` until `signal` resolves, then stops accepting and lets the
/// requests in flight finish (for at most [`DRAIN_TIMEOUT`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    connections: Arc<Connections>,
    signal: impl Future<Output = ()>,
) {
    let limits = Arc::new(limits);
    // `stopping` tells connections to finish; each holds a `running` receiver until it ends.
    let (stopping, _) = watch::channel(false);
    let (running, running_rx) = watch::channel(());
    let mut backoff = Backoff::default();
    let mut signal = std::pin::pin!(signal);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut signal => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                tokio::select! {
                    () = backoff.wait(&e) => continue,
                    () = &mut signal => break,
                }
            }
        };
        let slot = match connections.admit(peer.ip(), &limits) {
            Ok(slot) => slot,
            Err(refusal) => {
                refuse(stream, refusal, &connections);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone().map_request({
            let limits = limits.clone();
            move |mut request: Request<Incoming>| {
                let client = client_ip(peer, request.headers(), &limits.trusted_proxies);
                request.extensions_mut().insert(client);
                request.map(Body::new)
            }
        }));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true);
        let io = TokioIo::new(Tracked {
            stream,
            _slot: slot,
        });
        let mut stop = stopping.subscribe();
        let alive = running_rx.clone();
        tokio::spawn(async move {
            let mut connection =
                std::pin::pin!(builder.serve_connection(io, service).with_upgrades());
            let ended = loop {
                tokio::select! {
                    ended = connection.as_mut() => break ended,
                    // Finish the request in flight, then close (an upgraded socket is no longer
                    // this connection's: the WebSocket closes itself).
                    _ = stop.changed() => connection.as_mut().graceful_shutdown(),
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(alive);
        });
    }
    drop(listener);
    let _ = stopping.send(true);
    drop(running_rx);
    if tokio::time::timeout(DRAIN_TIMEOUT, running.closed())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after {DRAIN_TIMEOUT:?}; stopping anyway");
    }
}

/// Answers a connection over a cap and closes it, without holding up the accept loop.
fn refuse(mut stream: TcpStream, refusal: Refusal, connections: &Arc<Connections>) {
    if connections.refusing.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSING {
        connections.refusing.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let connections = connections.clone();
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_TIMEOUT, async {
            stream.write_all(&refusal.response()).await?;
            stream.shutdown().await
        })
        .await;
        connections.refusing.fetch_sub(1, Ordering::AcqRel);
    });
}

/// Errors of one connection that is gone before it was accepted: nothing to wait for.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// The wait after an accept error, doubling while they last.
struct Backoff {
    next: Duration,
    logged: Option<Instant>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: Self::FIRST,
            logged: None,
        }
    }
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(10);

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    async fn wait(&mut self, error: &io::Error) {
        if self.logged.is_none_or(|at| at.elapsed() >= Self::LOG_EVERY) {
            self.logged = Some(Instant::now());
            tracing::error!(%error, "cannot accept connections; backing off");
        }
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Self::MAX);
    }
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    let ip = ip.to_canonical();
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client a request comes from: the peer, unless the peer is a trusted proxy; then the
/// nearest address in `X-Forwarded-For` that is not a trusted proxy (read from the right, since
/// a client can write anything on the left).
fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> ClientIp {
    let mut client = peer.ip().to_canonical();
    if !is_trusted(client, trusted) {
        return ClientIp(client);
    }
    let hops = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect::<Vec<_>>();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => {
                client = ip.to_canonical();
                if !is_trusted(client, trusted) {
                    break;
                }
            }
            // Garbage where an address should be: the last trusted hop is all that is known.
            Err(_) => break,
        }
    }
    ClientIp(client)
}

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    /// The address the connection layer resolved (loopback for a request that did not come
    /// through it, as in a router driven directly by a test).
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientIp>()
            .copied()
            .unwrap_or_else(ClientIp::local))
    }
}

/// Raises this process's soft limit on open files to its hard limit; returns the soft limit
/// before and after, and the hard limit.
pub fn raise_open_files_limit() -> io::Result<(u64, u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    Ok((before, limit.rlim_cur, limit.rlim_max))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> Vec<IpNet> {
        nets.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().unwrap());
        }
        headers
    }

    #[test]
    fn the_client_is_the_peer_unless_the_peer_is_a_trusted_proxy() {
        let proxy: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        let nets = trusted(&["10.0.0.0/8"]);
        let ip = |peer, headers: &HeaderMap| client_ip(peer, headers, &nets).0.to_string();
        // An untrusted peer's header is ignored.
        let stranger: SocketAddr = "203.0.113.9:4000".parse().unwrap();
        assert_eq!(ip(stranger, &xff(&["198.51.100.1"])), "203.0.113.9");
        // A trusted proxy: the nearest untrusted hop, read from the right.
        assert_eq!(
            ip(proxy, &xff(&["6.6.6.6, 198.51.100.1, 10.0.0.7"])),
            "198.51.100.1"
        );
        assert_eq!(
            ip(proxy, &xff(&["6.6.6.6", "198.51.100.1"])),
            "198.51.100.1"
        );
        // No header, or garbage: the proxy itself, or the last trusted hop.
        assert_eq!(ip(proxy, &HeaderMap::new()), "10.0.0.2");
        assert_eq!(ip(proxy, &xff(&["198.51.100.1, nonsense"])), "10.0.0.2");
        // IPv4-mapped IPv6 peers match IPv4 ranges.
        let mapped: SocketAddr = "[::ffff:10.0.0.2]:5000".parse().unwrap();
        assert_eq!(ip(mapped, &xff(&["198.51.100.1"])), "198.51.100.1");
    }

    #[test]
    fn caps_count_per_address_and_in_all_and_free_on_drop() {
        let connections = Arc::new(Connections::default());
        let limits = ConnectionLimits {
            max_total: 3,
            max_per_ip: Some(2),
            header_read_timeout: Duration::from_secs(1),
            trusted_proxies: trusted(&["10.0.0.1/32"]),
        };
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let first = connections.admit(a, &limits).unwrap();
        let _second = connections.admit(a, &limits).unwrap();
        assert!(matches!(
            connections.admit(a, &limits),
            Err(Refusal::TooManyFromYou)
        ));
        let _third = connections.admit(proxy, &limits).unwrap();
        assert!(matches!(connections.admit(b, &limits), Err(Refusal::Full)));
        assert_eq!(connections.open(), 3);
        drop(first);
        let _fourth = connections.admit(b, &limits).unwrap();
        assert_eq!(connections.open(), 3);
        assert_eq!(connections.per_ip.lock().unwrap().get(&a), Some(&1));
    }
}
