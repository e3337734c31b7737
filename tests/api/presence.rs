//! Presence: ONLINE while a socket is open (graphql-ws or Socket.IO, on any instance), for
//! `--presence-timeout` after the last one closes, then OFFLINE; what a user chooses to show.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    helpers::{Session, TestApp},
    instances::cluster,
};

async fn presence_of(app: &TestApp, viewer: &Session, user: &Session) -> (String, Value) {
    // Another user's presence, read through a room both are in.
    let data = app
        .data(
            Some(&viewer.token),
            "{ me { presence lastSeenAt } myRooms(first: 1) { edges { node { members(first: 10) { id presence lastSeenAt } } } } }",
            json!({}),
        )
        .await;
    if viewer.id == user.id {
        return (
            data["me"]["presence"].as_str().unwrap_or("-").to_owned(),
            data["me"]["lastSeenAt"].clone(),
        );
    }
    let members = data["myRooms"]["edges"][0]["node"]["members"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let found = members
        .iter()
        .find(|m| m["id"] == user.id.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    (
        found["presence"].as_str().unwrap_or("-").to_owned(),
        found["lastSeenAt"].clone(),
    )
}

async fn pair(app: &TestApp) -> (Session, Session) {
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&ada, "lobby").await;
    app.join(&bob, &room).await;
    (ada, bob)
}

/// Waits (bounded) until `user` shows `wanted` to `viewer`.
async fn until_shown(app: &TestApp, viewer: &Session, user: &Session, wanted: &str) {
    for _ in 0..200 {
        if presence_of(app, viewer, user).await.0 == wanted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} never showed {wanted}", user.id);
}

#[tokio::test]
async fn a_user_is_online_while_a_socket_is_open_and_a_reconnect_does_not_flap() {
    let app = TestApp::spawn_with(|c| c.presence_timeout = Duration::from_secs(3600)).await;
    let (ada, bob) = pair(&app).await;
    let (shown, seen) = presence_of(&app, &ada, &bob).await;
    assert_eq!(
        (shown.as_str(), seen),
        ("OFFLINE", Value::Null),
        "never seen"
    );

    let mut ws = app.ws_as(&bob).await;
    assert_eq!(presence_of(&app, &ada, &bob).await.0, "ONLINE");
    ws.stream.close(None).await.ok();
    drop(ws);
    // Within the timeout a closed socket changes nothing: a reconnect shows no OFFLINE.
    assert_eq!(presence_of(&app, &ada, &bob).await.0, "ONLINE");
    let _again = app.socketio(&bob).await;
    assert_eq!(presence_of(&app, &ada, &bob).await.0, "ONLINE");
}

#[tokio::test]
async fn a_user_turns_offline_once_the_timeout_passes_after_their_last_socket() {
    let app = TestApp::spawn_with(|c| c.presence_timeout = Duration::from_secs(1)).await;
    let (ada, bob) = pair(&app).await;
    let mut ws = app.ws_as(&bob).await;
    let _sio = app.socketio(&bob).await;
    assert_eq!(presence_of(&app, &ada, &bob).await.0, "ONLINE");
    ws.stream.close(None).await.ok();
    drop(ws);
    drop(_sio);
    until_shown(&app, &ada, &bob, "OFFLINE").await;
    let (_, seen) = presence_of(&app, &ada, &bob).await;
    assert!(seen.is_string(), "last seen is kept: {seen}");
}

#[tokio::test]
async fn a_user_chooses_away_or_invisible() {
    let app = TestApp::spawn().await;
    let (ada, bob) = pair(&app).await;
    let _ws = app.ws_as(&bob).await;
    let set = "mutation($p: Presence!) { setPresence(presence: $p) { presence } }";
    for (chosen, shown) in [
        ("AWAY", "AWAY"),
        ("OFFLINE", "OFFLINE"),
        ("ONLINE", "ONLINE"),
    ] {
        let data = app.data(Some(&bob.token), set, json!({"p": chosen})).await;
        assert_eq!(data["setPresence"]["presence"], shown);
        assert_eq!(presence_of(&app, &ada, &bob).await.0, shown);
    }
    // Away means nothing without a socket: offline is offline.
    app.data(Some(&ada.token), set, json!({"p": "AWAY"})).await;
    assert_eq!(presence_of(&app, &bob, &ada).await.0, "OFFLINE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_on_one_instance_shows_online_on_another() {
    let Some(cluster) = cluster().await else {
        return;
    };
    let (ada, bob) = pair(&cluster.a).await;
    assert_eq!(presence_of(&cluster.b, &ada, &bob).await.0, "OFFLINE");
    let _ws = cluster.a.ws_as(&bob).await;
    assert_eq!(presence_of(&cluster.b, &ada, &bob).await.0, "ONLINE");
}

/// Kills its process (SIGKILL) when dropped, should the test fail first.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_turns_offline_when_the_instance_holding_their_socket_is_killed() {
    let Some(redis) = crate::support::redis::RedisServer::start() else {
        return;
    };
    let Some(uri) = crate::support::mongo::server_uri() else {
        return;
    };
    let database = format!("{uri}/{}", crate::support::mongo::fresh_database());
    let (child, url_a) = crate::process::start_with(
        &database,
        &["--redis-url", &redis.url(), "--presence-timeout", "2s"],
    );
    let mut a = Killed(child);
    let (db, redis_url) = (database.clone(), redis.url());
    let b = TestApp::spawn_with(move |c| {
        c.database_url = db;
        c.redis_url = Some(redis_url);
        c.presence_timeout = Duration::from_secs(2);
    })
    .await;
    let ada = b.register("ada").await;
    let room = b.create_room(&ada, "lobby").await;
    let registered = crate::process::gql(
        &url_a,
        None,
        "mutation { register(username: \"bob\", password: \"correct horse battery\") { token user { id } } }",
        json!({}),
    )
    .await;
    let bob = Session {
        token: registered["register"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        id: registered["register"]["user"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    };
    crate::process::gql(
        &url_a,
        Some(&bob.token),
        "mutation($r: ID!) { joinRoom(roomId: $r) { id } }",
        json!({"r": room}),
    )
    .await;
    let mut ws = crate::instances::subscribe_at(&url_a, &bob.token, &room, None).await;
    ws.ping_pong().await;
    assert_eq!(presence_of(&b, &ada, &bob).await.0, "ONLINE", "seen from B");

    // SIGKILL: no socket is closed, nothing is told; A's vouching just runs out.
    a.0.kill().expect("kill A");
    a.0.wait().expect("A exits");
    until_shown(&b, &ada, &bob, "OFFLINE").await;
    drop(ws);
}
