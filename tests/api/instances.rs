//! Several instances sharing one MongoDB database and one Redis: events cross instances once,
//! a Redis restart loses no message, edit or deletion for a connected subscriber, messages sent
//! through both instances at once reach every subscriber once and in order, and a client whose
//! instance dies resumes on another.

use serde_json::{Value, json};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    helpers::{PATIENCE, ROOM_EVENTS, TestApp, WsClient},
    process::{gql, start_with},
    support::{mongo, redis::RedisServer},
};

pub struct Cluster {
    pub a: TestApp,
    pub b: TestApp,
    pub redis: RedisServer,
}

/// Two instances sharing a fresh MongoDB database and one Redis; `None` when either is missing
/// (said loudly; `CONFAB_REQUIRE_REDIS=1` and `CONFAB_REQUIRE_MONGODB=1` make that a failure).
pub async fn cluster() -> Option<Cluster> {
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

/// A room event in a few words: `added BODY`, `edited BODY`, `deleted ID`, or its type.
fn describe(payload: &Value) -> String {
    let event = &payload["data"]["roomEvents"];
    let text = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    match event["__typename"].as_str() {
        Some("MessageAdded") => format!("added {}", text(&event["message"]["body"])),
        Some("MessageEdited") => format!("edited {}", text(&event["message"]["body"])),
        Some("MessageDeleted") => format!("deleted {}", text(&event["messageId"])),
        other => format!("{other:?}"),
    }
}

/// Sends a message and returns its id.
async fn send(app: &TestApp, token: &str, room: &str, body: &str) -> String {
    let data = app
        .data(
            Some(token),
            "mutation($r: ID!, $b: String!) { sendMessage(roomId: $r, body: $b) { id } }",
            json!({"r": room, "b": body}),
        )
        .await;
    data["sendMessage"]["id"]
        .as_str()
        .expect("a message id")
        .to_owned()
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
async fn a_redis_restart_loses_no_change_for_a_connected_subscriber() {
    let Some(Cluster { a, b, mut redis }) = cluster().await else {
        return;
    };
    let ada = a.register("ada").await;
    let room = a.create_room(&ada, "shared").await;
    let mut on_a = subscribed(&a, &ada.token, &room).await;
    let doomed = send(&b, &ada.token, &room, "doomed").await;
    let kept = send(&b, &ada.token, &room, "kept").await;
    for body in ["doomed", "kept"] {
        assert_eq!(added(&on_a.next_payload("events").await), body);
    }

    // While Redis is down, B adds messages, and edits and deletes ones A's subscriber has.
    redis.stop();
    send(&b, &ada.token, &room, "during 1").await;
    let edit = "mutation($m: ID!) { editMessage(messageId: $m, body: \"kept, edited\") { id } }";
    b.data(Some(&ada.token), edit, json!({"m": kept})).await;
    send(&b, &ada.token, &room, "during 2").await;
    let delete = "mutation($m: ID!) { deleteMessage(messageId: $m) }";
    b.data(Some(&ada.token), delete, json!({"m": doomed})).await;
    send(&b, &ada.token, &room, "during 3").await;
    redis.resume();
    send(&b, &ada.token, &room, "after").await;

    // A catches up from the store once its subscription is back: every change, once; first
    // those to messages the subscriber had, then new messages in order.
    let mut received = Vec::new();
    while received.len() < 6 {
        received.push(describe(&on_a.next_payload("events").await));
    }
    assert_eq!(
        received,
        [
            "edited kept, edited".to_owned(),
            format!("deleted {doomed}"),
            "added during 1".to_owned(),
            "added during 2".to_owned(),
            "added during 3".to_owned(),
            "added after".to_owned(),
        ]
    );
    send(&b, &ada.token, &room, "sentinel").await;
    assert_eq!(added(&on_a.next_payload("events").await), "sentinel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sent_through_both_instances_at_once_reach_everyone_once_in_order() {
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
    let mut on_b = subscribed(&b, &ada.token, &room).await;

    // Two senders, one per instance, at once: ids minted by both within the same seconds.
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let senders: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .enumerate()
        .map(|(n, app)| {
            let (token, room) = (ada.token.clone(), room.clone());
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for i in 0..25 {
                    ids.push(send(&app, &token, &room, &format!("{n}-{i}")).await);
                }
                ids
            })
        })
        .collect();
    let mut sent = Vec::new();
    for sender in senders {
        sent.extend(sender.await.expect("a sender"));
    }
    sent.sort();

    for ws in [&mut on_a, &mut on_b] {
        let mut ids = Vec::new();
        while ids.len() < sent.len() {
            let payload = ws.next_payload("events").await;
            let id = &payload["data"]["roomEvents"]["message"]["id"];
            ids.push(id.as_str().expect("a message").to_owned());
        }
        assert_eq!(ids, sent, "every message once, in id order");
    }
    send(&b, &ada.token, &room, "sentinel").await;
    for ws in [&mut on_a, &mut on_b] {
        assert_eq!(added(&ws.next_payload("events").await), "sentinel");
    }
}

/// A graphql-transport-ws socket to `base` (an `http://` URL), signed in, subscribed to a
/// room's events after `after`, live.
pub async fn subscribe_at(base: &str, token: &str, room: &str, after: Option<&str>) -> WsClient {
    let url = format!("{}/graphql", base.replacen("http", "ws", 1));
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
            .expect("a request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("a header"),
    );
    let (stream, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("connect");
    let mut ws = WsClient { stream };
    ws.init(json!({"authorization": format!("Bearer {token}")}))
        .await;
    ws.subscribe("events", ROOM_EVENTS, json!({"r": room, "after": after}))
        .await;
    ws
}

/// The next message id and body, or `None` once the server is gone.
async fn next_message(ws: &mut WsClient) -> Option<(String, String)> {
    loop {
        let frame = tokio::time::timeout(PATIENCE, ws.stream.next())
            .await
            .expect("in time");
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            _ => return None,
        };
        let value: Value = serde_json::from_str(text.as_str()).expect("JSON");
        if value["type"] == "pong" {
            continue;
        }
        assert_eq!(value["type"], "next", "{value}");
        let message = &value["payload"]["data"]["roomEvents"]["message"];
        return Some((
            message["id"].as_str().expect("an id").to_owned(),
            message["body"].as_str().expect("a body").to_owned(),
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_instance_after_sigkill() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let Some(uri) = mongo::server_uri() else {
        return;
    };
    let database = format!("{uri}/{}", mongo::fresh_database());
    let redis_url = redis.url();
    let (a, url_a) = start_with(&database, &["--redis-url", &redis_url]);
    let (b, url_b) = start_with(&database, &["--redis-url", &redis_url]);
    // Killed when the test ends, whatever happens in it.
    let (mut a, _b) = (Instance(a), Instance(b));

    let register =
        "mutation { register(username: \"failover\", password: \"kill dash nine\") { token } }";
    let token = gql(&url_b, None, register, json!({})).await["register"]["token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let room = gql(
        &url_b,
        Some(&token),
        "mutation { createRoom(name: \"ha\") { id } }",
        json!({}),
    )
    .await["createRoom"]["id"]
        .as_str()
        .expect("a room")
        .to_owned();

    // Subscribed on A; everything is sent through B, by GraphQL and by REST in turn.
    let mut on_a = subscribe_at(&url_a, &token, &room, None).await;
    on_a.send_json(json!({"type": "ping"})).await;
    assert_eq!(on_a.recv().await["type"], "pong");
    let bodies: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    // Ten messages go out while A lives, twenty only once it is dead.
    let (killed, after_kill) = tokio::sync::oneshot::channel::<()>();
    let sender = {
        let (url, token, room, bodies) =
            (url_b.clone(), token.clone(), room.clone(), bodies.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut after_kill = Some(after_kill);
            for (i, body) in bodies.iter().enumerate() {
                if i == 10
                    && let Some(signal) = after_kill.take()
                {
                    signal.await.expect("A was killed");
                }
                if i % 2 == 0 {
                    gql(&url, Some(&token), "mutation($r: ID!, $b: String!) { sendMessage(roomId: $r, body: $b) { id } }", json!({"r": room, "b": body})).await;
                } else {
                    let response = http
                        .post(format!("{url}/send_message"))
                        .bearer_auth(&token)
                        .json(&json!({"roomID": room, "message": body}))
                        .send()
                        .await
                        .expect("REST send");
                    assert_eq!(response.status(), 201);
                }
            }
        })
    };

    // A few arrive on A, then A dies while B goes on.
    let mut received = Vec::new();
    while received.len() < 5 {
        let (id, body) = next_message(&mut on_a).await.expect("A is alive");
        received.push((id, body));
    }
    a.0.kill().expect("SIGKILL");
    a.0.wait().expect("reaped");
    killed.send(()).expect("the sender waits");
    while let Some(message) = next_message(&mut on_a).await {
        received.push(message);
    }

    // The client resumes on B after the last message it saw.
    assert!(
        received.len() <= 10,
        "nothing sent after the kill came through A"
    );
    let last = received.last().map(|(id, _)| id.clone());
    let mut on_b = subscribe_at(&url_b, &token, &room, last.as_deref()).await;
    while received.len() < bodies.len() {
        received.push(next_message(&mut on_b).await.expect("B is alive"));
    }
    sender.await.expect("the sender finishes");
    let got: Vec<&str> = received.iter().map(|(_, body)| body.as_str()).collect();
    assert_eq!(
        got,
        bodies.iter().map(String::as_str).collect::<Vec<_>>(),
        "every message once, in order"
    );

    // Nothing further is queued on B: the next event is a new message.
    gql(
        &url_b,
        Some(&token),
        "mutation($r: ID!) { sendMessage(roomId: $r, body: \"last\") { id } }",
        json!({"r": room}),
    )
    .await;
    assert_eq!(
        next_message(&mut on_b)
            .await
            .map(|(_, body)| body)
            .as_deref(),
        Some("last")
    );
    let _ = on_b.stream.send(Message::Close(None)).await;
    drop(redis);
}

/// A confab process that is killed when dropped.
struct Instance(std::process::Child);

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
