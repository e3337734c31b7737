//! `myEvents`, black-box: one stream per user across their rooms, resumable from any event's
//! cursor with no gap and no duplicate.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::{Session, TestApp, WsClient, error_code, error_field};

const MY_EVENTS: &str = "subscription($after: String) { myEvents(after: $after) {
    __typename
    ... on RoomActivity { cursor room { id unreadCount mentionCount } message { id body } }
    ... on ReadStateChanged { cursor roomId unreadCount mentionCount lastReadMessageId }
    ... on Invited { cursor invitation { room { id name } inviter { username } } }
    ... on RemovedFromRoom { cursor roomId reason }
    ... on PresenceChanged { user { id username } presence }
} }";
const MARK: &str = "mutation($r: ID!, $m: ID!) { markRead(roomId: $r, messageId: $m) { id } }";
const CREATE_PRIVATE: &str =
    "mutation($n: String!) { createRoom(name: $n, visibility: PRIVATE) { id } }";
const INVITE: &str =
    "mutation($r: ID!, $u: ID!) { inviteToRoom(roomId: $r, userId: $u) { createdAt } }";
const KICK: &str = "mutation($r: ID!, $u: ID!) { kickMember(roomId: $r, userId: $u) }";
const BAN: &str = "mutation($r: ID!, $u: ID!) { banMember(roomId: $r, userId: $u) }";
const LEAVE: &str = "mutation($r: ID!) { leaveRoom(roomId: $r) }";
const ROOMS: usize = 20;
const DELETE_ROOM: &str = "mutation($r: ID!) { deleteRoom(roomId: $r) }";

/// A live `myEvents` stream of `user`'s, resuming after `after` when given.
pub(crate) async fn subscribe(app: &TestApp, user: &Session, after: Option<&str>) -> WsClient {
    let mut ws = app.ws_as(user).await;
    ws.subscribe("inbox", MY_EVENTS, json!({"after": after}))
        .await;
    ws
}

/// A fresh `myEvents` stream of `user`'s, live (nothing is replayed without a cursor).
pub(crate) async fn subscribe_live(app: &TestApp, user: &Session) -> WsClient {
    let mut ws = subscribe(app, user, None).await;
    let early = ws.ping_pong().await;
    assert!(
        early.is_empty(),
        "before the subscription was live: {early:?}"
    );
    ws
}

/// The next `myEvents` event (keep-alives skipped).
pub(crate) async fn next(ws: &mut WsClient) -> Value {
    loop {
        let message = ws.recv().await;
        if message["type"] == "ka" {
            continue;
        }
        assert_eq!(message["type"], "next", "{message}");
        return message["payload"]["data"]["myEvents"].clone();
    }
}

/// The next `n` events.
async fn take(ws: &mut WsClient, n: usize) -> Vec<Value> {
    let mut events = Vec::with_capacity(n);
    for _ in 0..n {
        events.push(next(ws).await);
    }
    events
}

/// The ids of the messages in `RoomActivity` events, checking no other kind came.
fn activity(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            assert_eq!(e["__typename"], "RoomActivity", "{e}");
            e["message"]["id"]
                .as_str()
                .expect("a message id")
                .to_owned()
        })
        .collect()
}

fn cursor(event: &Value) -> String {
    event["cursor"].as_str().expect("a cursor").to_owned()
}

/// Sends one more message and expects it as the next event: nothing else was queued before it.
pub(crate) async fn nothing_before_the_next(
    app: &TestApp,
    ws: &mut WsClient,
    from: &Session,
    room: &str,
) {
    let sent = app.send(from, room, "marker").await;
    let event = next(ws).await;
    assert_eq!(event["__typename"], "RoomActivity", "{event}");
    assert_eq!(
        event["message"]["id"],
        sent.as_str(),
        "an event came twice or late: {event}"
    );
}

#[tokio::test]
async fn messages_in_any_of_the_users_rooms_arrive_on_one_stream_with_counts() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let rooms = [
        app.create_room(&ada, "one").await,
        app.create_room(&ada, "two").await,
    ];
    let elsewhere = app.create_room(&bob, "elsewhere").await;
    for room in &rooms {
        app.join(&bob, room).await;
    }
    let mut ws = subscribe_live(&app, &ada).await;
    app.send(&bob, &elsewhere, "not ada's room").await;
    let first = app.send(&bob, &rooms[0], "hello @ada").await;
    let second = app.send(&bob, &rooms[1], "hi").await;
    let events = take(&mut ws, 2).await;
    assert_eq!(activity(&events), [first, second]);
    assert_eq!(events[0]["room"]["id"], rooms[0].as_str());
    assert_eq!(events[0]["room"]["unreadCount"], 1);
    assert_eq!(events[0]["room"]["mentionCount"], 1);
    assert_eq!(events[1]["room"]["id"], rooms[1].as_str());
    assert_eq!(events[1]["room"]["mentionCount"], 0);
}

#[tokio::test]
async fn a_room_joined_on_another_device_is_followed_at_once() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&bob, "later").await;
    let mut ws = subscribe_live(&app, &ada).await;
    app.join(&ada, &room).await;
    let sent = app.send(&bob, &room, "welcome").await;
    assert_eq!(activity(&[next(&mut ws).await]), [sent]);
}

#[tokio::test]
async fn resuming_after_a_cursor_replays_what_was_missed_across_rooms_then_goes_live() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let rooms = [
        app.create_room(&ada, "one").await,
        app.create_room(&ada, "two").await,
        app.create_room(&bob, "three").await,
    ];
    for room in &rooms[..2] {
        app.join(&bob, room).await;
    }
    let mut ws = subscribe_live(&app, &ada).await;
    app.send(&bob, &rooms[0], "seen").await;
    let seen = next(&mut ws).await;
    drop(ws);

    // While ada is away: invited to a private room, joins a third room on another device,
    // and messages arrive in all three rooms.
    let private = app
        .data(Some(&bob.token), CREATE_PRIVATE, json!({"n": "secret"}))
        .await["createRoom"]["id"]
        .as_str()
        .expect("room id")
        .to_owned();
    app.data(Some(&bob.token), INVITE, json!({"r": private, "u": ada.id}))
        .await;
    app.join(&ada, &rooms[2]).await;
    let mut missed = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        for n in 0..3 {
            missed.push(app.send(&bob, room, &format!("room {i} #{n}")).await);
        }
    }

    let mut ws = subscribe(&app, &ada, Some(&cursor(&seen))).await;
    let mut events = take(&mut ws, 1 + missed.len()).await;
    let invited = events.remove(0);
    assert_eq!(invited["__typename"], "Invited", "{invited}");
    assert_eq!(invited["invitation"]["room"]["id"], private.as_str());
    assert_eq!(invited["invitation"]["inviter"]["username"], "bob");
    let replayed = activity(&events);
    assert_eq!(
        replayed.iter().collect::<BTreeSet<_>>(),
        missed.iter().collect::<BTreeSet<_>>(),
        "every missed message once"
    );
    assert_eq!(replayed.len(), missed.len(), "no duplicate");
    nothing_before_the_next(&app, &mut ws, &bob, &rooms[2]).await;

    // The last event's cursor resumes with nothing to replay.
    let last = cursor(events.last().expect("events"));
    drop(ws);
    let mut ws = subscribe(&app, &ada, Some(&last)).await;
    let after_last = next(&mut ws).await;
    assert_eq!(after_last["__typename"], "RoomActivity");
    assert_eq!(
        after_last["message"]["body"], "marker",
        "only the message sent after it"
    );
}

#[tokio::test]
async fn many_rooms_resume_exactly_through_checkpoints() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    // More rooms than a cursor carries beyond its checkpoint.
    let mut rooms = Vec::new();
    for i in 0..ROOMS {
        let room = app.create_room(&bob, &format!("room {i}")).await;
        app.join(&ada, &room).await;
        rooms.push(room);
    }
    let mut ws = subscribe_live(&app, &ada).await;
    let mut sent = Vec::new();
    for room in &rooms {
        sent.push(app.send(&bob, room, "one each").await);
    }
    let events = take(&mut ws, sent.len()).await;
    assert_eq!(activity(&events), sent);
    drop(ws);
    // From the fifth event on, every later message comes back, once.
    let mut ws = subscribe(&app, &ada, Some(&cursor(&events[4]))).await;
    let again = activity(&take(&mut ws, sent.len() - 5).await);
    assert_eq!(
        again.iter().collect::<BTreeSet<_>>(),
        sent[5..].iter().collect::<BTreeSet<_>>()
    );
    nothing_before_the_next(&app, &mut ws, &bob, &rooms[0]).await;
}

#[tokio::test]
async fn a_read_marker_moved_elsewhere_is_told_with_the_new_counts() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&ada, "lobby").await;
    app.join(&bob, &room).await;
    let first = app.send(&bob, &room, "one").await;
    let last = app.send(&bob, &room, "two").await;
    let mut ws = subscribe_live(&app, &ada).await;
    app.data(Some(&ada.token), MARK, json!({"r": room, "m": first}))
        .await;
    let event = next(&mut ws).await;
    assert_eq!(event["__typename"], "ReadStateChanged", "{event}");
    assert_eq!(event["roomId"], room.as_str());
    assert_eq!(event["unreadCount"], 1);
    assert_eq!(event["lastReadMessageId"], first.as_str());
    // Resumed from before both moves, the two are told as one: where the marker is now.
    app.data(Some(&ada.token), MARK, json!({"r": room, "m": last}))
        .await;
    let second = next(&mut ws).await;
    assert_eq!(second["unreadCount"], 0);
    drop(ws);
    let before: Value = event.clone();
    let _ = before;
    let mut ws = subscribe(&app, &ada, Some(&cursor(&event))).await;
    let replayed = next(&mut ws).await;
    assert_eq!(replayed["__typename"], "ReadStateChanged");
    assert_eq!(replayed["lastReadMessageId"], last.as_str());
    nothing_before_the_next(&app, &mut ws, &bob, &room).await;
}

#[tokio::test]
async fn removals_say_why_live_and_when_resumed() {
    let app = TestApp::spawn().await;
    // The first account is the server admin, who may delete rooms.
    let admin = app.register("admin").await;
    let ada = app.register("ada").await;
    let names = ["kicked", "banned", "left", "deleted"];
    let mut rooms = Vec::new();
    for name in names {
        let room = app.create_room(&admin, name).await;
        app.join(&ada, &room).await;
        rooms.push(room);
    }
    let mut ws = subscribe_live(&app, &ada).await;
    let remove = |i: usize| {
        let (query, token) = match i {
            0 => (KICK, &admin.token),
            1 => (BAN, &admin.token),
            2 => (LEAVE, &ada.token),
            _ => (DELETE_ROOM, &admin.token),
        };
        (query, token.clone(), json!({"r": rooms[i], "u": ada.id}))
    };
    let mut first_cursor = None;
    for (i, name) in names.iter().enumerate() {
        let (query, token, variables) = remove(i);
        let body = app.gql(Some(&token), query, variables).await;
        assert!(body["errors"].is_null(), "{body}");
        let event = next(&mut ws).await;
        assert_eq!(event["__typename"], "RemovedFromRoom", "{event}");
        assert_eq!(event["roomId"], rooms[i].as_str());
        assert_eq!(event["reason"], *name);
        first_cursor.get_or_insert_with(|| cursor(&event));
    }
    drop(ws);
    // Resumed after the first removal: the other three again, each once.
    let first_cursor = first_cursor.expect("a cursor");
    let mut ws = subscribe(&app, &ada, Some(&first_cursor)).await;
    let events = take(&mut ws, 3).await;
    let reasons: Vec<_> = events.iter().map(|e| e["reason"].clone()).collect();
    assert_eq!(reasons, [json!("banned"), json!("left"), json!("deleted")]);
    let lobby = app.create_room(&admin, "lobby").await;
    app.join(&ada, &lobby).await;
    nothing_before_the_next(&app, &mut ws, &admin, &lobby).await;
}

#[tokio::test]
async fn a_cursor_that_is_not_ours_is_refused_naming_after() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&ada, "lobby").await;
    let mut ws = subscribe_live(&app, &ada).await;
    app.send(&ada, &room, "hello").await;
    let adas = cursor(&next(&mut ws).await);
    let long = "A".repeat(2000);
    for after in ["nonsense", "", long.as_str(), adas.as_str()] {
        // Ada's cursor is refused to bob: its checkpoint is not his.
        let mut ws = subscribe(&app, &bob, Some(after)).await;
        let message = ws.recv().await;
        assert_eq!(message["type"], "error", "{after:?}: {message}");
        let body = json!({"errors": message["payload"]});
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{message}");
        assert_eq!(error_field(&body), "after", "{message}");
    }
}

#[tokio::test]
async fn a_user_may_hold_a_few_streams_open_at_once() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let mut ws = app.ws_as(&ada).await;
    let query = "subscription { myEvents { __typename } }";
    for i in 0..8 {
        ws.subscribe(&format!("s{i}"), query, json!({})).await;
    }
    assert!(ws.ping_pong().await.is_empty(), "eight are open");
    ws.subscribe("s8", query, json!({})).await;
    let refused = ws.recv().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(
        refused["payload"][0]["extensions"]["code"], "FORBIDDEN",
        "{refused}"
    );
    // A bad cursor is told as such even then.
    ws.subscribe(
        "bad",
        "subscription($a: String) { myEvents(after: $a) { __typename } }",
        json!({"a": "not a cursor"}),
    )
    .await;
    let bad = ws.recv().await;
    assert_eq!(
        bad["payload"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{bad}"
    );
    // Closing one makes room for another.
    ws.send_json(json!({"id": "s0", "type": "complete"})).await;
    ws.ping_pong().await;
    ws.subscribe("again", query, json!({})).await;
    assert!(ws.ping_pong().await.is_empty(), "one more once one closed");
}
