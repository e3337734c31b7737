//! Presence: ONLINE while a socket is open (graphql-ws or Socket.IO, on any instance), for
//! `--presence-timeout` after the last one closes, then OFFLINE; what a user chooses to show.

use std::time::Duration;

use serde_json::{Value, json};

use crate::{
    helpers::{Session, TestApp},
    inbox::{next, nothing_before_the_next, subscribe_live},
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

/// The id of the first room `user` is in.
async fn first_room(app: &TestApp, user: &Session) -> String {
    app.data(
        Some(&user.token),
        "{ myRooms(first: 1) { edges { node { id } } } }",
        json!({}),
    )
    .await["myRooms"]["edges"][0]["node"]["id"]
        .as_str()
        .expect("a room")
        .to_owned()
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
    let mut inbox = subscribe_live(&b, &ada).await;
    let mut ws = crate::instances::subscribe_at(&url_a, &bob.token, &room, None).await;
    ws.ping_pong().await;
    assert_eq!(presence_of(&b, &ada, &bob).await.0, "ONLINE", "seen from B");
    let event = next(&mut inbox).await;
    assert_eq!(
        (&event["user"]["id"], &event["presence"]),
        (&json!(bob.id), &json!("ONLINE")),
        "told on B of a socket on A: {event}"
    );

    // SIGKILL: no socket is closed, nothing is told; A's vouching just runs out.
    a.0.kill().expect("kill A");
    a.0.wait().expect("A exits");
    until_shown(&b, &ada, &bob, "OFFLINE").await;
    // Told on ada's stream too, by the instance still running: once.
    let event = next(&mut inbox).await;
    assert_eq!(
        (
            &event["__typename"],
            &event["user"]["id"],
            &event["presence"]
        ),
        (&json!("PresenceChanged"), &json!(bob.id), &json!("OFFLINE")),
        "{event}"
    );
    nothing_before_the_next(&b, &mut inbox, &ada, &room).await;
    drop(ws);
}

/// The next event on a `myEvents` stream: a presence change of `user`, to `shown`.
async fn told(ws: &mut crate::helpers::WsClient, user: &Session, shown: &str) {
    let event = next(ws).await;
    assert_eq!(event["__typename"], "PresenceChanged", "{event}");
    assert_eq!(event["user"]["id"], user.id.as_str(), "{event}");
    assert_eq!(event["presence"], shown, "{event}");
}

#[tokio::test]
async fn changes_are_told_once_to_the_people_who_share_a_room() {
    let app = TestApp::spawn_with(|c| c.presence_timeout = Duration::from_secs(1)).await;
    let (ada, bob) = pair(&app).await;
    let room = first_room(&app, &ada).await;
    // Ada shares a second room with bob: still one event per change.
    let second = app.create_room(&ada, "second").await;
    app.join(&bob, &second).await;
    // Carol shares no room with bob: she hears nothing of him.
    let carol = app.register("carol").await;
    let carols_room = app.create_room(&carol, "carol's").await;
    let mut adas = subscribe_live(&app, &ada).await;
    let mut carols = subscribe_live(&app, &carol).await;

    // Two sockets at once: one ONLINE.
    let mut ws = app.ws_as(&bob).await;
    let sio = app.socketio(&bob).await;
    told(&mut adas, &bob, "ONLINE").await;
    nothing_before_the_next(&app, &mut adas, &ada, &room).await;

    let set = "mutation($p: Presence!) { setPresence(presence: $p) { presence } }";
    app.data(Some(&bob.token), set, json!({"p": "AWAY"})).await;
    told(&mut adas, &bob, "AWAY").await;
    app.data(Some(&bob.token), set, json!({"p": "ONLINE"}))
        .await;
    told(&mut adas, &bob, "ONLINE").await;

    // Both sockets close: OFFLINE once the timeout has passed, once.
    ws.stream.close(None).await.ok();
    drop(ws);
    drop(sio);
    told(&mut adas, &bob, "OFFLINE").await;
    nothing_before_the_next(&app, &mut adas, &ada, &room).await;
    nothing_before_the_next(&app, &mut carols, &carol, &carols_room).await;
}

#[tokio::test]
async fn a_reconnect_within_the_timeout_tells_nothing() {
    let app = TestApp::spawn_with(|c| c.presence_timeout = Duration::from_secs(3600)).await;
    let (ada, bob) = pair(&app).await;
    let room = app.create_room(&ada, "marker").await;
    let mut adas = subscribe_live(&app, &ada).await;
    let mut ws = app.ws_as(&bob).await;
    told(&mut adas, &bob, "ONLINE").await;
    ws.stream.close(None).await.ok();
    drop(ws);
    // Reopened only once the server has closed it (ada's socket is the one left).
    for _ in 0..200 {
        if app.metric("confab_ws_connections").await == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.metric("confab_ws_connections").await, 1);
    let mut fresh = subscribe_live(&app, &ada).await;
    let _again = app.ws_as(&bob).await;
    // Long enough for a change to be announced (a quarter of a second collects them). A
    // stream opened since has told nothing of bob yet, so it would tell a repeated ONLINE.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let marker = app.send(&ada, &room, "marker").await;
    for stream in [&mut fresh, &mut adas] {
        let event = next(stream).await;
        assert_eq!(
            event["message"]["id"],
            marker.as_str(),
            "nothing before it: {event}"
        );
    }
}

#[tokio::test]
async fn doing_nothing_for_the_idle_time_shows_away_and_acting_shows_online() {
    // Longer than a user's changes are held back (2 s), so the ONLINE is not held past the next
    // idle time.
    let app = TestApp::spawn_with(|c| c.presence_idle = Duration::from_secs(4)).await;
    let (ada, bob) = pair(&app).await;
    let room = first_room(&app, &bob).await;
    let mut adas = subscribe_live(&app, &ada).await;
    let _ws = app.ws_as(&bob).await;
    told(&mut adas, &bob, "ONLINE").await;
    told(&mut adas, &bob, "AWAY").await;
    assert_eq!(presence_of(&app, &ada, &bob).await.0, "AWAY");
    let sent = app.send(&bob, &room, "back").await;
    let mut events = vec![next(&mut adas).await, next(&mut adas).await];
    events.sort_by_key(|e| e["__typename"].as_str().unwrap_or_default().to_owned());
    assert_eq!(events[0]["presence"], "ONLINE", "{events:?}");
    assert_eq!(events[1]["message"]["id"], sent.as_str(), "{events:?}");
}

#[tokio::test]
async fn socketio_clients_hear_presence_in_their_rooms() {
    let app = TestApp::spawn().await;
    let (ada, bob) = pair(&app).await;
    let mut sio = app.socketio(&ada).await;
    let room = first_room(&app, &ada).await;
    let joined = sio.call("join", json!({"roomID": room})).await;
    assert_eq!(joined["ok"], true, "{joined}");
    let _ws = app.ws_as(&bob).await;
    // Ada's own coming online may be told first.
    let event = loop {
        let event = sio.next_named("presence").await;
        if event["user"]["username"] != "ada" {
            break event;
        }
    };
    assert_eq!(event["roomID"], room.as_str(), "{event}");
    assert_eq!(event["user"]["username"], "bob", "{event}");
    assert_eq!(event["presence"], "ONLINE", "{event}");
}
