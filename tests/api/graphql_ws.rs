//! Every server obligation of graphql-transport-ws, spoken in raw frames over a real socket.

use std::time::Duration;

use futures_util::SinkExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{ROOM_EVENTS, TestApp, error_code};

const TRANSPORT: &str = "graphql-transport-ws";

#[tokio::test]
async fn no_connection_init_in_time_closes_4408() {
    let app = TestApp::spawn_with(|c| c.ws_init_timeout = Duration::from_millis(200)).await;
    let mut ws = app.ws(TRANSPORT).await;
    assert_eq!(ws.closed().await.0, 4408);
}

#[tokio::test]
async fn a_second_connection_init_closes_4429() {
    let app = TestApp::spawn().await;
    let mut ws = app.ws(TRANSPORT).await;
    ws.init(app.signed_in().await).await;
    ws.send_json(json!({"type": "connection_init"})).await;
    assert_eq!(ws.closed().await.0, 4429);
}

#[tokio::test]
async fn subscribe_before_the_ack_closes_4401() {
    let app = TestApp::spawn().await;
    let mut ws = app.ws(TRANSPORT).await;
    ws.subscribe("1", "{ __typename }", json!({})).await;
    assert_eq!(ws.closed().await.0, 4401);
}

#[tokio::test]
async fn a_bad_token_in_connection_init_closes_4403() {
    let app = TestApp::spawn().await;
    for payload in [
        json!({"authorization": "Bearer nonsense"}),
        json!({"token": "nonsense"}),
        json!({"Authorization": "Basic abc"}),
    ] {
        let mut ws = app.ws(TRANSPORT).await;
        ws.send_json(json!({"type": "connection_init", "payload": payload}))
            .await;
        assert_eq!(ws.closed().await.0, 4403, "{payload}");
    }
}

#[tokio::test]
async fn every_accepted_token_form_signs_in() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    for payload in [
        json!({"authorization": format!("Bearer {}", ada.token)}),
        json!({"Authorization": format!("Bearer {}", ada.token)}),
        json!({"token": ada.token}),
        json!({"headers": {"Authorization": format!("Bearer {}", ada.token)}}),
    ] {
        let mut ws = app.ws(TRANSPORT).await;
        ws.init(payload.clone()).await;
        ws.subscribe("me", "{ me { username } }", json!({})).await;
        assert_eq!(
            ws.next_payload("me").await["data"]["me"]["username"],
            "ada",
            "{payload}"
        );
    }
    // The upgrade request's own header works too.
    let mut ws = app
        .ws_with_header(TRANSPORT, Some(&format!("Bearer {}", ada.token)))
        .await
        .expect("upgrade");
    ws.init(json!({})).await;
    ws.subscribe("me", "{ me { username } }", json!({})).await;
    assert_eq!(ws.next_payload("me").await["data"]["me"]["username"], "ada");
    // And a bad one is refused before the upgrade.
    assert!(
        app.ws_with_header(TRANSPORT, Some("Bearer nonsense"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_duplicate_operation_id_closes_4409() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let room = app.create_room(&ada, "lobby").await;
    let mut ws = app.ws_as(&ada).await;
    ws.subscribe("same", ROOM_EVENTS, json!({"r": room})).await;
    ws.subscribe("same", ROOM_EVENTS, json!({"r": room})).await;
    let (code, reason) = ws.closed().await;
    assert_eq!(code, 4409);
    assert!(reason.contains("same"), "{reason}");
}

#[tokio::test]
async fn malformed_messages_close_4400() {
    let app = TestApp::spawn().await;
    let bad = [
        "not json",
        r#"{"no": "type"}"#,
        r#"{"type": "no-such-type"}"#,
        r#"{"type": "subscribe", "payload": {"query": "{ __typename }"}}"#,
        r#"{"type": "subscribe", "id": "", "payload": {"query": "{ __typename }"}}"#,
        r#"{"type": "subscribe", "id": "1"}"#,
        r#"{"type": "subscribe", "id": "1", "payload": {"query": 5}}"#,
        r#"{"type": "complete"}"#,
    ];
    for text in bad {
        let mut ws = app.ws(TRANSPORT).await;
        ws.init(app.signed_in().await).await;
        ws.send_text(text).await;
        assert_eq!(ws.closed().await.0, 4400, "{text}");
    }
    let mut ws = app.ws(TRANSPORT).await;
    ws.init(app.signed_in().await).await;
    ws.stream
        .send(Message::binary(vec![1, 2, 3]))
        .await
        .unwrap();
    assert_eq!(ws.closed().await.0, 4400);
}

#[tokio::test]
async fn ping_is_answered_with_pong_even_before_init() {
    let app = TestApp::spawn().await;
    let mut ws = app.ws(TRANSPORT).await;
    ws.send_json(json!({"type": "ping"})).await;
    assert_eq!(ws.recv().await["type"], "pong");
    ws.init(app.signed_in().await).await;
    assert!(ws.ping_pong().await.is_empty());
    // A pong from the client needs no answer.
    ws.send_json(json!({"type": "pong"})).await;
    assert!(ws.ping_pong().await.is_empty());
}

#[tokio::test]
async fn a_validation_error_is_an_error_message_without_complete() {
    let app = TestApp::spawn().await;
    let mut ws = app.ws(TRANSPORT).await;
    ws.init(app.signed_in().await).await;
    ws.subscribe("1", "subscription { noSuchField }", json!({}))
        .await;
    let error = ws.recv().await;
    assert_eq!(
        (error["type"].as_str(), error["id"].as_str()),
        (Some("error"), Some("1")),
        "{error}"
    );
    assert!(
        error["payload"].as_array().is_some_and(|e| !e.is_empty()),
        "{error}"
    );
    ws.subscribe("2", "{ syntax error", json!({})).await;
    assert_eq!(ws.recv().await["type"], "error");
    assert!(
        ws.ping_pong().await.is_empty(),
        "no complete after an error"
    );
}

#[tokio::test]
async fn queries_and_mutations_run_over_the_socket() {
    let app = TestApp::spawn().await;
    let mut ws = app.ws(TRANSPORT).await;
    ws.init(app.signed_in().await).await;
    ws.subscribe(
        "create",
        "mutation { createRoom(name: \"sock\") { name } }",
        json!({}),
    )
    .await;
    assert_eq!(
        ws.next_payload("create").await["data"]["createRoom"]["name"],
        "sock"
    );
    assert_eq!(ws.recv().await, json!({"id": "create", "type": "complete"}));
    // An execution error still streams as `next`, then `complete`.
    ws.subscribe("room", "{ room(id: \"nonsense\") { id } }", json!({}))
        .await;
    let payload = ws.next_payload("room").await;
    assert_eq!(payload["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(ws.recv().await, json!({"id": "room", "type": "complete"}));
}

#[tokio::test]
async fn complete_from_the_client_stops_the_stream() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let room = app.create_room(&ada, "lobby").await;
    let mut ws = app.ws_as(&ada).await;
    ws.subscribe("events", ROOM_EVENTS, json!({"r": room}))
        .await;
    assert!(ws.ping_pong().await.is_empty());
    app.send(&ada, &room, "one").await;
    ws.next_payload("events").await;

    ws.send_json(json!({"type": "complete", "id": "events"}))
        .await;
    assert!(ws.ping_pong().await.is_empty());
    app.send(&ada, &room, "two").await;
    // The id is free again, and nothing from the old operation arrives.
    ws.subscribe("events", ROOM_EVENTS, json!({"r": room}))
        .await;
    assert!(ws.ping_pong().await.is_empty());
    app.send(&ada, &room, "three").await;
    let payload = ws.next_payload("events").await;
    assert_eq!(payload["data"]["roomEvents"]["message"]["body"], "three");
}

#[tokio::test]
async fn operations_per_connection_are_capped() {
    let app = TestApp::spawn_with(|c| c.ws_max_operations = 2).await;
    let ada = app.register("ada").await;
    let room = app.create_room(&ada, "lobby").await;
    let mut ws = app.ws_as(&ada).await;
    ws.subscribe("a", ROOM_EVENTS, json!({"r": room})).await;
    ws.subscribe("b", ROOM_EVENTS, json!({"r": room})).await;
    ws.subscribe("c", ROOM_EVENTS, json!({"r": room})).await;
    let refused = ws.recv().await;
    assert_eq!(
        (refused["type"].as_str(), refused["id"].as_str()),
        (Some("error"), Some("c"))
    );
    assert_eq!(refused["payload"][0]["extensions"]["code"], "RATE_LIMITED");
}

#[tokio::test]
async fn a_socket_outlives_its_access_token_and_closes_with_its_session_4403() {
    let app = TestApp::spawn_with(|c| {
        c.token_ttl = Duration::from_secs(1);
        c.session_ttl = Duration::from_secs(4);
    })
    .await;
    let ada = app.register("ada").await;
    let mut ws = app.ws_as(&ada).await;
    // Past the token's expiry (a wait for a clock, not a measurement): HTTP refuses the token,
    // the socket signed in with it still answers.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let refused = app.gql(Some(&ada.token), "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&refused), "UNAUTHENTICATED");
    // Answers (a closed socket would fail this).
    ws.ping_pong().await;
    let (code, reason) = ws.closed().await;
    assert_eq!(code, 4403);
    assert!(reason.contains("session has ended"), "{reason}");
}

#[tokio::test]
async fn frames_over_64_kib_are_refused() {
    let app = TestApp::spawn().await;
    let mut ws = app.ws(TRANSPORT).await;
    ws.init(app.signed_in().await).await;
    let huge = format!(
        r#"{{"type":"ping","payload":{{"pad":"{}"}}}}"#,
        "x".repeat(70 * 1024)
    );
    // The server may close before the whole frame is written; either way it must not answer.
    let _ = ws.stream.send(Message::text(huge)).await;
    assert_eq!(ws.closed().await.0, 1009);
}

#[tokio::test]
async fn an_unknown_subprotocol_is_refused_before_the_upgrade() {
    let app = TestApp::spawn().await;
    match app.ws_with_header("mqtt", None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400);
        }
        Err(other) => panic!("expected an HTTP 400, got {other}"),
        Ok(_) => panic!("the upgrade must be refused"),
    }
}

#[tokio::test]
async fn the_legacy_graphql_ws_protocol_is_served_too() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let room = app.create_room(&ada, "lobby").await;
    let mut ws = app.ws("graphql-ws").await;
    ws.send_json(json!({"type": "connection_init", "payload": {"authorization": format!("Bearer {}", ada.token)}}))
        .await;
    assert_eq!(ws.recv().await["type"], "connection_ack");
    assert_eq!(ws.recv().await["type"], "ka");
    ws.send_json(json!({"id": "1", "type": "start", "payload": {"query": ROOM_EVENTS, "variables": {"r": room}}}))
        .await;
    // Legacy has no ping: a query on the same socket is the barrier.
    ws.send_json(json!({"id": "2", "type": "start", "payload": {"query": "{ me { username } }"}}))
        .await;
    let me = ws.recv().await;
    assert_eq!(
        (me["type"].as_str(), me["id"].as_str()),
        (Some("data"), Some("2")),
        "{me}"
    );
    assert_eq!(ws.recv().await, json!({"id": "2", "type": "complete"}));

    app.send(&ada, &room, "old school").await;
    let data = ws.recv().await;
    assert_eq!(
        (data["type"].as_str(), data["id"].as_str()),
        (Some("data"), Some("1"))
    );
    assert_eq!(
        data["payload"]["data"]["roomEvents"]["message"]["body"],
        "old school"
    );
    ws.send_json(json!({"id": "1", "type": "stop"})).await;
    ws.send_json(json!({"type": "connection_terminate"})).await;
    assert_eq!(ws.closed().await.0, 1000);
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let mut app = TestApp::spawn().await;
    let mut ws = app.ws(TRANSPORT).await;
    ws.init(app.signed_in().await).await;
    app.shutdown().await;
    assert_eq!(ws.closed().await.0, 1001);
}

#[tokio::test]
async fn an_id_is_free_again_as_soon_as_its_complete_arrives() {
    let app = TestApp::spawn().await;
    let mut ws = app.ws(TRANSPORT).await;
    ws.init(app.signed_in().await).await;
    for _ in 0..50 {
        ws.subscribe("reused", "{ __typename }", json!({})).await;
        assert_eq!(
            ws.next_payload("reused").await["data"]["__typename"],
            "Query"
        );
        assert_eq!(ws.recv().await, json!({"id": "reused", "type": "complete"}));
    }
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame() {
    let app = TestApp::spawn().await;
    let mut ws = app.ws(TRANSPORT).await;
    ws.init(app.signed_in().await).await;
    ws.stream
        .send(Message::Close(Some(
            tokio_tungstenite::tungstenite::protocol::CloseFrame {
                code: 1000.into(),
                reason: "bye".into(),
            },
        )))
        .await
        .unwrap();
    assert_eq!(ws.closed().await.0, 1000, "a reply, not an abnormal 1006");
}

#[tokio::test]
async fn legacy_clients_hear_why_before_the_socket_closes() {
    let app = TestApp::spawn().await;
    let mut ws = app.ws("graphql-ws").await;
    ws.send_json(
        json!({"type": "connection_init", "payload": {"authorization": "Bearer nonsense"}}),
    )
    .await;
    let error = ws.recv().await;
    assert_eq!(error["type"], "connection_error", "{error}");
    assert_eq!(ws.closed().await.0, 4403);

    // A malformed message is answered, and the socket stays open.
    let mut ws = app.ws("graphql-ws").await;
    ws.send_json(json!({"type": "connection_init", "payload": app.signed_in().await}))
        .await;
    assert_eq!(ws.recv().await["type"], "connection_ack");
    assert_eq!(ws.recv().await["type"], "ka");
    ws.send_text("not json").await;
    assert_eq!(ws.recv().await["type"], "error");
    ws.send_json(json!({"id": "1", "type": "start", "payload": {"query": "{ __typename }"}}))
        .await;
    assert_eq!(ws.recv().await["type"], "data");
}
