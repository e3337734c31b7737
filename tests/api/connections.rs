//! What a client can hold: connections that send nothing, or a header a byte at a time, or go
//! idle, are closed; one address cannot take more than its share of connections, nor everyone
//! more than the server's; a WebSocket must sign in, and one that runs nothing is closed.

use std::time::Duration;

use confab::config::Switch;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{PATIENCE, TestApp};

const SHORT: Duration = Duration::from_millis(600);

/// Reads until the server closes the connection; what it sent before closing.
async fn until_closed(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received))
        .await
        .expect("the server closes the connection")
        .ok();
    String::from_utf8_lossy(&received).into_owned()
}

async fn healthz(app: &TestApp) -> reqwest::StatusCode {
    // A fresh connection each time, so the answer says whether one is accepted now.
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
        .get(app.url("/healthz"))
        .send()
        .await
        .map(|r| r.status())
        .expect("an answer")
}

#[tokio::test]
async fn silent_slow_and_idle_connections_are_closed() {
    let app = TestApp::spawn_with(|c| c.header_read_timeout = SHORT).await;

    // Connects and says nothing.
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    until_closed(&mut silent).await;

    // Slowloris: a request head one byte at a time, never finished in time.
    let mut slow = TcpStream::connect(app.addr).await.unwrap();
    let head = b"GET /healthz HTTP/1.1\r\nHost: confab\r\nX-Slow: 0123456789abcdef\r\n\r\n";
    let mut closed_early = false;
    for byte in head {
        if slow.write_all(&[*byte]).await.is_err() {
            closed_early = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut peek = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(1), slow.read(&mut peek)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_early = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed_early, "the slow request head was allowed to finish");

    // Keep-alive: one request answered, then the idle connection is closed.
    let mut idle = TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: confab\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok"), "{answer}");

    assert_eq!(healthz(&app).await, 200);
}

#[tokio::test]
async fn one_address_gets_its_share_of_connections_and_no_more() {
    let app = TestApp::spawn_with(|c| {
        c.rate_limits = Switch::On;
        c.max_connections_per_ip = 4;
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    // The fifth is answered at once and closed, not left waiting.
    let mut fifth = TcpStream::connect(app.addr).await.unwrap();
    let answer = until_closed(&mut fifth).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("Retry-After: 5"), "{answer}");
    assert!(answer.contains(r#""code":"RATE_LIMITED""#), "{answer}");
    assert_eq!(app.connections.open(), 4);

    // A WebSocket counts while it is open; a closed connection frees its place.
    drop(held.pop());
    let ws = app
        .ws_with_header("graphql-transport-ws", None)
        .await
        .unwrap();
    assert!(
        app.ws_with_header("graphql-transport-ws", None)
            .await
            .is_err()
    );
    drop(ws);
    held.clear();
    // The server notices the closes in its own time.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while app.connections.open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(healthz(&app).await, 200);
}

#[tokio::test]
async fn with_rate_limits_off_one_address_may_hold_more() {
    let app = TestApp::spawn_with(|c| c.max_connections_per_ip = 2).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    assert_eq!(healthz(&app).await, 200);
}

#[tokio::test]
async fn the_server_refuses_connections_over_its_total_with_503() {
    let app = TestApp::spawn_with(|c| c.max_connections = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(app.addr).await.unwrap());
    }
    let mut over = TcpStream::connect(app.addr).await.unwrap();
    let answer = until_closed(&mut over).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    drop(held);
}

#[tokio::test]
async fn an_anonymous_websocket_is_refused_with_4403() {
    let app = TestApp::spawn().await;
    for payload in [json!({}), json!(null)] {
        let mut ws = app.ws("graphql-transport-ws").await;
        ws.send_json(json!({"type": "connection_init", "payload": payload}))
            .await;
        assert_eq!(ws.closed().await.0, 4403);
    }
    let mut ws = app.ws("graphql-transport-ws").await;
    ws.send_json(json!({"type": "connection_init"})).await;
    assert_eq!(ws.closed().await.0, 4403);

    let mut legacy = app.ws("graphql-ws").await;
    legacy.send_json(json!({"type": "connection_init"})).await;
    assert_eq!(legacy.recv().await["type"], "connection_error");
    assert_eq!(legacy.closed().await.0, 4403);
}

#[tokio::test]
async fn a_websocket_that_runs_nothing_is_closed_and_one_that_subscribes_is_not() {
    let app = TestApp::spawn_with(|c| c.ws_idle_timeout = SHORT).await;
    let ada = app.register("ada").await;
    let room = app.create_room(&ada, "lobby").await;

    let mut idle = app.ws_as(&ada).await;
    let (code, reason) = idle.closed().await;
    assert_eq!(code, 1000);
    assert!(reason.contains("Idle"), "{reason}");

    let mut busy = app.ws_as(&ada).await;
    busy.subscribe("events", crate::helpers::ROOM_EVENTS, json!({"r": room}))
        .await;
    assert!(busy.ping_pong().await.is_empty());
    tokio::time::sleep(SHORT * 3).await;
    app.send(&ada, &room, "still here").await;
    let payload = busy.next_payload("events").await;
    assert_eq!(
        payload["data"]["roomEvents"]["message"]["body"],
        "still here"
    );
    // Once its last operation completes, the idle clock starts again.
    busy.send_json(json!({"id": "events", "type": "complete"}))
        .await;
    assert_eq!(busy.closed().await.0, 1000);
}
