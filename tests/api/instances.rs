//! Several instances sharing one MongoDB database and one Redis: events cross instances once,
//! and a Redis restart loses no message for a connected subscriber.

use serde_json::{Value, json};

use crate::{
    helpers::{ROOM_EVENTS, TestApp, WsClient},
    support::{mongo, redis::RedisServer},
};

struct Cluster {
    a: TestApp,
    b: TestApp,
    redis: RedisServer,
}

async fn cluster() -> Option<Cluster> {
    let redis = RedisServer::start()?;
    let uri = mongo::server_uri()?;
    let database = format!("{uri}/{}", mongo::fresh_database());
    let url = redis.url();
    let instance = |database: String, url: String| {
        TestApp::spawn_with(move |c| {
            c.database_url = database;
            c.redis_url = Some(url);
        })
    };
    let a = instance(database.clone(), url.clone()).await;
    let b = instance(database, url).await;
    Some(Cluster { a, b, redis })
}

fn added(payload: &Value) -> &str {
    payload["data"]["roomEvents"]["message"]["body"]
        .as_str()
        .unwrap_or("<not a message>")
}

async fn send(app: &TestApp, token: &str, room: &str, body: &str) {
    app.data(
        Some(token),
        "mutation($r: ID!, $b: String!) { sendMessage(roomId: $r, body: $b) { id } }",
        json!({"r": room, "b": body}),
    )
    .await;
}

async fn subscribed(app: &TestApp, token: &str, room: &str) -> WsClient {
    let mut ws = app.ws("graphql-transport-ws").await;
    ws.init(json!({"authorization": format!("Bearer {token}")}))
        .await;
    ws.subscribe("events", ROOM_EVENTS, json!({"r": room}))
        .await;
    assert!(ws.ping_pong().await.is_empty());
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_cross_instances_once() {
    let Some(Cluster {
        a,
        b,
        redis: _redis,
    }) = cluster().await
    else {
        return;
    };
    let ada = a.register("ada").await;
    let room = a.create_room(&ada, "shared").await;
    let mut on_a = subscribed(&a, &ada.token, &room).await;

    // Through instance B, by GraphQL and by REST.
    send(&b, &ada.token, &room, "via B").await;
    assert_eq!(added(&on_a.next_payload("events").await), "via B");
    let response = b
        .http
        .post(b.url("/send_message"))
        .bearer_auth(&ada.token)
        .json(&json!({"roomID": room, "message": "via B's REST"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    assert_eq!(added(&on_a.next_payload("events").await), "via B's REST");

    // Through A itself: delivered once, not once locally and once more through Redis.
    send(&a, &ada.token, &room, "via A").await;
    assert_eq!(added(&on_a.next_payload("events").await), "via A");
    send(&b, &ada.token, &room, "sentinel").await;
    assert_eq!(added(&on_a.next_payload("events").await), "sentinel");

    let ready: Value = a
        .http
        .get(a.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["bus"], "redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_loses_no_message_for_a_connected_subscriber() {
    let Some(Cluster { a, b, mut redis }) = cluster().await else {
        return;
    };
    let ada = a.register("ada").await;
    let room = a.create_room(&ada, "shared").await;
    let mut on_a = subscribed(&a, &ada.token, &room).await;
    send(&b, &ada.token, &room, "before").await;
    assert_eq!(added(&on_a.next_payload("events").await), "before");

    redis.stop();
    for body in ["during 1", "during 2", "during 3"] {
        send(&b, &ada.token, &room, body).await;
    }
    redis.resume();
    send(&b, &ada.token, &room, "after").await;

    // A resyncs from the store once its subscription is back: every message, once, in order.
    let mut received = Vec::new();
    while received.len() < 4 {
        received.push(added(&on_a.next_payload("events").await).to_owned());
    }
    assert_eq!(received, ["during 1", "during 2", "during 3", "after"]);
    send(&b, &ada.token, &room, "sentinel").await;
    assert_eq!(added(&on_a.next_payload("events").await), "sentinel");
}
