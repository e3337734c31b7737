//! `/metrics`: each series appears once what it counts has happened, its labels stay within
//! sets fixed in the code, and `--metrics-addr` moves it off the application's port.

use std::time::Duration;

use confab::{config::Switch, service::limiter::Rate};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{PATIENCE, ROOM_EVENTS, TestApp};

async fn scrape(url: &str) -> String {
    let response = reqwest::get(url).await.expect("GET /metrics");
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.expect("a body")
}

/// The value of the sample whose name and labels are exactly `series`, if shown.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Scrapes until `series` reaches `at_least` (bounded: the server counts some things just
/// after it answers), and returns the last scrape.
async fn until(app: &TestApp, series: &str, at_least: f64) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let text = scrape(&app.url("/metrics")).await;
        if sample(&text, series).is_some_and(|v| v >= at_least) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} never reached {at_least}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn http_requests_are_counted_and_timed_by_route_template_and_status() {
    let app = TestApp::spawn().await;
    let get = |path: &str| app.http.get(app.url(path)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), StatusCode::OK);
    let room = "0123456789abcdef01234567";
    let messages = get(&format!("/get_messages/{room}")).await.unwrap();
    assert_eq!(messages.status(), StatusCode::UNAUTHORIZED);
    for path in ["/no/such/path", "/another-path-nobody-routes/42"] {
        assert_eq!(get(path).await.unwrap().status(), StatusCode::NOT_FOUND);
    }

    let text = scrape(&app.url("/metrics")).await;
    let healthz = r#"confab_http_requests_total{method="GET",route="/healthz",status="200"}"#;
    assert_eq!(sample(&text, healthz), Some(1.0), "{text}");
    let templated =
        r#"confab_http_requests_total{method="GET",route="/get_messages/{roomID}",status="401"}"#;
    assert_eq!(sample(&text, templated), Some(1.0), "{text}");
    let timed = r#"confab_http_request_duration_seconds_count{method="GET",route="/healthz"}"#;
    assert_eq!(sample(&text, timed), Some(1.0), "{text}");
    let bucket =
        r#"confab_http_request_duration_seconds_bucket{le="+Inf",method="GET",route="/healthz"}"#;
    assert_eq!(sample(&text, bucket), Some(1.0), "{text}");
    // Unknown paths share one label; no path a client chose is a label value.
    let unmatched = r#"confab_http_requests_total{method="GET",route="unmatched",status="404"}"#;
    assert_eq!(sample(&text, unmatched), Some(2.0), "{text}");
    for chosen in ["no/such", "nobody-routes", room] {
        assert!(!text.contains(chosen), "{chosen} became a label:\n{text}");
    }
    let routes = text
        .lines()
        .filter(|l| l.starts_with("confab_http_requests_total{"))
        .count();
    assert_eq!(routes, 3, "{text}");
}

#[tokio::test]
async fn graphql_operations_are_counted_by_transport_type_and_outcome() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    app.data(Some(&ada.token), "{ me { id } }", json!({})).await;
    let unauthenticated = app.gql(None, "{ me { id } }", json!({})).await;
    assert!(unauthenticated.get("errors").is_some());
    app.gql(Some(&ada.token), "{ noSuchField }", json!({}))
        .await;
    app.gql(Some(&ada.token), "{ me { id ", json!({})).await;

    let text = scrape(&app.url("/metrics")).await;
    let series = |r#type: &str, outcome: &str| {
        format!(
            r#"confab_graphql_operations_total{{transport="http",type="{type}",outcome="{outcome}"}}"#
        )
    };
    assert_eq!(
        sample(&text, &series("mutation", "ok")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, &series("query", "ok")), Some(1.0), "{text}");
    let refused = series("query", "UNAUTHENTICATED");
    assert_eq!(sample(&text, &refused), Some(1.0), "{text}");
    let invalid = series("query", "GRAPHQL_VALIDATION_FAILED");
    assert_eq!(sample(&text, &invalid), Some(1.0), "{text}");
    // Refused before the schema ran (it never parsed): still an operation, of no known type.
    let unparsed = series("unknown", "GRAPHQL_PARSE_FAILED");
    assert_eq!(sample(&text, &unparsed), Some(1.0), "{text}");
}

#[tokio::test]
async fn sockets_subscriptions_and_fan_out_over_websocket_and_socket_io() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let room = app.create_room(&ada, "metrics").await;
    let mut ws = app.ws_as(&ada).await;
    ws.subscribe("1", ROOM_EVENTS, json!({"r": room})).await;
    ws.ping_pong().await;
    let sio = app.socketio(&ada).await;

    let subscribed =
        r#"confab_graphql_operations_total{transport="ws",type="subscription",outcome="ok"}"#;
    let text = until(&app, subscribed, 1.0).await;
    let graphql_ws = r#"confab_open_sockets{transport="graphql-ws"}"#;
    assert_eq!(sample(&text, graphql_ws), Some(1.0), "{text}");
    let socket_io = r#"confab_open_sockets{transport="socket.io"}"#;
    assert_eq!(sample(&text, socket_io), Some(1.0), "{text}");

    app.send(&ada, &room, "counted").await;
    let payload = ws.next_payload("1").await;
    assert_eq!(payload["data"]["roomEvents"]["message"]["body"], "counted");
    let text = until(&app, "confab_event_deliveries_total", 1.0).await;
    assert!(sample(&text, "confab_event_renders_total").is_some_and(|v| v >= 1.0));
    // A rendering of an event for subscribers is not an operation of its own.
    assert_eq!(sample(&text, subscribed), Some(1.0), "{text}");

    drop(ws);
    drop(sio);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut text = scrape(&app.url("/metrics")).await;
    while sample(&text, graphql_ws) != Some(0.0) || sample(&text, socket_io) != Some(0.0) {
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        text = scrape(&app.url("/metrics")).await;
    }
}

#[tokio::test]
async fn rate_limit_refusals_are_counted_by_kind() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limits = Switch::On;
        c.limit_messages = "1/1h".parse::<Rate>().unwrap();
    })
    .await;
    let ada = app.register("ada").await;
    let room = app.create_room(&ada, "limited").await;
    app.send(&ada, &room, "one").await;
    let refused = app
        .gql(
            Some(&ada.token),
            "mutation($r: ID!) { sendMessage(roomId: $r, body: \"two\") { id } }",
            json!({"r": room}),
        )
        .await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "RATE_LIMITED");

    let text = scrape(&app.url("/metrics")).await;
    let messages = r#"confab_rate_limit_refusals_total{kind="messages"}"#;
    assert_eq!(sample(&text, messages), Some(1.0), "{text}");
    let outcome = r#"confab_graphql_operations_total{transport="http",type="mutation",outcome="RATE_LIMITED"}"#;
    assert_eq!(sample(&text, outcome), Some(1.0), "{text}");
}

#[tokio::test]
async fn store_latency_process_and_build_info_are_shown() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    app.create_room(&ada, "stored").await;
    let text = scrape(&app.url("/metrics")).await;
    // Whichever driver runs the suite, its calls were timed.
    let timed = text
        .lines()
        .filter(|l| l.starts_with("confab_store_call_duration_seconds_count{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    assert!(timed >= 2.0, "{text}");
    let version = format!(
        r#"confab_build_info{{version="{}",commit="#,
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&version), "{text}");
    if cfg!(target_os = "linux") {
        for name in [
            "process_resident_memory_bytes",
            "process_cpu_seconds_total",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            assert!(
                sample(&text, name).is_some_and(|v| v > 0.0),
                "{name}:\n{text}"
            );
        }
    }
}

#[tokio::test]
async fn metrics_addr_serves_metrics_there_and_not_on_the_application_port() {
    let app = TestApp::spawn_with(|c| c.metrics_addr = Some(([127, 0, 0, 1], 0).into())).await;
    let internal = app.metrics_addr.expect("a metrics address");
    assert_ne!(internal, app.addr);
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let public = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);

    let text = scrape(&format!("http://{internal}/metrics")).await;
    assert!(text.contains("confab_http_requests_total{"), "{text}");
    // The application's requests are counted there, its own /metrics refusal among them; the
    // scrapes of the metrics address are not application requests.
    let refused = r#"confab_http_requests_total{method="GET",route="unmatched",status="404"}"#;
    assert_eq!(sample(&text, refused), Some(1.0), "{text}");
    let other = reqwest::get(format!("http://{internal}/graphql"))
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);
}

#[test]
fn a_metrics_addr_that_cannot_be_had_exits_2_with_one_line_and_writes_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("data").join("confab.db");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_confab"))
        .env_remove("CONFAB_JWT_SECRET")
        .args(["--addr", "127.0.0.1:0"])
        .args(["--metrics-addr", &format!("127.0.0.1:{port}")])
        .arg("--database-url")
        .arg(format!("sqlite://{}", database.display()))
        .output()
        .expect("confab runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one line: {stderr}");
    assert!(errors[0].contains("--metrics-addr"), "{stderr}");
    assert!(!String::from_utf8_lossy(&output.stdout).contains("listening on"));
    assert!(!dir.path().join("data").exists(), "nothing written first");
}

/// The dashboard in `deploy/` is valid JSON whose every query names a series `/metrics` shows,
/// so renaming a series without the dashboard fails here.
#[tokio::test]
async fn the_grafana_dashboard_queries_only_series_confab_shows() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("the dashboard"))
            .expect("valid JSON");
    let mut exprs = Vec::new();
    let mut stack = vec![&dashboard];
    while let Some(value) = stack.pop() {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(serde_json::Value::String(expr)) = map.get("expr") {
                    exprs.push(expr.clone());
                }
                stack.extend(map.values());
            }
            serde_json::Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    assert!(exprs.len() >= 15, "{exprs:?}");

    // Every family shows once it has a sample: exercise each (a refusal among them).
    let app = TestApp::spawn_with(|c| {
        c.rate_limits = Switch::On;
        c.limit_messages = "1/1h".parse::<Rate>().unwrap();
    })
    .await;
    let ada = app.register("ada").await;
    let room = app.create_room(&ada, "dashboard").await;
    app.send(&ada, &room, "one").await;
    let refused = app
        .gql(
            Some(&ada.token),
            "mutation($r: ID!) { sendMessage(roomId: $r, body: \"two\") { id } }",
            json!({"r": room}),
        )
        .await;
    assert_eq!(refused["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    let text = scrape(&app.url("/metrics")).await;
    let mut names = 0;
    for expr in &exprs {
        let words = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        for word in words.filter(|w| w.starts_with("confab_") || w.starts_with("process_")) {
            let family = ["_bucket", "_count", "_sum", "_total", "_info"]
                .iter()
                .find_map(|suffix| word.strip_suffix(suffix))
                .unwrap_or(word);
            assert!(
                text.contains(&format!("# TYPE {family} ")),
                "{word} (in {expr}) is not shown:\n{text}"
            );
            names += 1;
        }
    }
    assert!(names >= exprs.len(), "every query names a series");
}

/// Connections refused at accept never reach a route, so they have a series of their own; the
/// metrics address, which no client cap covers, still answers while the application's refuses.
#[tokio::test]
async fn connections_refused_at_accept_are_counted_by_reason() {
    use tokio::{io::AsyncReadExt as _, net::TcpStream};
    let app = TestApp::spawn_with(|c| {
        c.rate_limits = Switch::On;
        c.max_connections_per_ip = 1;
        c.metrics_addr = Some(([127, 0, 0, 1], 0).into());
    })
    .await;
    let _held = TcpStream::connect(app.addr).await.unwrap();
    let mut over = TcpStream::connect(app.addr).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, over.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");

    let internal = app.metrics_addr.expect("a metrics address");
    let text = scrape(&format!("http://{internal}/metrics")).await;
    let per_ip = r#"confab_connections_refused_total{reason="per-ip"}"#;
    assert_eq!(sample(&text, per_ip), Some(1.0), "{text}");
}
