//! HTTP requests by route and status, and how long they took: a layer around the whole router.
//!
//! The route label is the template the router matched (`/get_messages/{roomID}`), never the
//! path asked for; a request no route matched is `unmatched`, and Socket.IO's requests (served
//! by its own layer, outside the routes) are `/socket.io/`. The method is one of the standard
//! ones or `other`. So no request, however odd, adds a series.
//!
//! The time is until the response's head is ready (a streamed body is not waited for); a
//! WebSocket upgrade is done at its `101`, and a Socket.IO long-poll lasts as long as it waits.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::Method,
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

/// Latency buckets, in seconds: from a cached page (1 ms) to the request timeout (30 s).
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The route of a request no route matched.
pub const UNMATCHED: &str = "unmatched";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answered {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Timed {
    method: &'static str,
    route: String,
}

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// The request counts and latencies; cheap to clone (handles to the same series).
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<Answered, Counter>,
    durations: Family<Timed, Histogram, fn() -> Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            durations: Family::new_with_constructor(histogram),
        }
    }
}

impl HttpMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "confab_http_requests",
            "HTTP requests answered, by method, route template and status",
            self.requests.clone(),
        );
        registry.register(
            "confab_http_request_duration_seconds",
            "Time to answer an HTTP request (to the response head), by method and route template",
            self.durations.clone(),
        );
    }

    fn record(&self, method: &'static str, route: String, status: u16, seconds: f64) {
        self.durations
            .get_or_create(&Timed {
                method,
                route: route.clone(),
            })
            .observe(seconds);
        self.requests
            .get_or_create(&Answered {
                method,
                route,
                status,
            })
            .inc();
    }
}

/// The middleware (`axum::middleware::from_fn_with_state`): counts and times each request.
pub async fn track(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = route_label(
        request.extensions().get::<MatchedPath>(),
        request.uri().path(),
    );
    let response = next.run(request).await;
    metrics.record(
        method,
        route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn route_label(matched: Option<&MatchedPath>, path: &str) -> String {
    match matched {
        Some(matched) => matched.as_str().to_owned(),
        None if path == "/socket.io" || path.starts_with("/socket.io/") => "/socket.io/".into(),
        None => UNMATCHED.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_methods_and_templates_become_labels() {
        assert_eq!(method_label(&Method::GET), "GET");
        let odd = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&odd), "other");
        assert_eq!(route_label(None, "/no/such/path"), UNMATCHED);
        assert_eq!(route_label(None, "/socket.io/"), "/socket.io/");
        assert_eq!(route_label(None, "/socket.iox"), UNMATCHED);
    }
}
