//! Read state, black-box: read markers that only move forward, unread and mention counts, the
//! room's last message, and who a message mentions, over GraphQL, REST and Socket.IO.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{Session, TestApp, error_code, error_field};

const STATE: &str = "query($r: ID!) { room(id: $r) {
    unreadCount mentionCount lastReadMessageId lastMessage { id body } } }";
const MARK: &str = "mutation($r: ID!, $m: ID!) { markRead(roomId: $r, messageId: $m) {
    id unreadCount mentionCount lastReadMessageId } }";
const SEND: &str = "mutation($r: ID!, $b: String!) { sendMessage(roomId: $r, body: $b) {
    id mentions { id username } } }";
const EDIT: &str = "mutation($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) {
    id mentions { username } } }";
const DELETE: &str = "mutation($m: ID!) { deleteMessage(messageId: $m) }";
const LEAVE: &str = "mutation($r: ID!) { leaveRoom(roomId: $r) }";
const CREATE: &str = "mutation($n: String!, $v: RoomVisibility!) {
    createRoom(name: $n, visibility: $v) { id } }";
const INVITE: &str = "mutation($r: ID!, $u: ID!) { inviteToRoom(roomId: $r, userId: $u) {
    createdAt } }";
const MY_ROOMS: &str = "{ myRooms(first: 100) { edges { node {
    id unreadCount mentionCount lastReadMessageId } } } }";

/// A message id no message has.
const NO_MESSAGE: &str = "0123456789abcdef01234567";

/// The caller's view of a room's read state.
async fn state(app: &TestApp, user: &Session, room: &str) -> Value {
    app.data(Some(&user.token), STATE, json!({"r": room})).await["room"].clone()
}

/// (unreadCount, mentionCount) of a room as the caller sees it.
async fn counts(app: &TestApp, user: &Session, room: &str) -> (u64, u64) {
    let room = state(app, user, room).await;
    (
        room["unreadCount"].as_u64().expect("unreadCount"),
        room["mentionCount"].as_u64().expect("mentionCount"),
    )
}

/// `markRead`, expecting success: the room it returns.
async fn mark(app: &TestApp, user: &Session, room: &str, message: &str) -> Value {
    app.data(Some(&user.token), MARK, json!({"r": room, "m": message}))
        .await["markRead"]
        .clone()
}

/// `markRead`, expecting a refusal: its (code, field).
async fn refused(app: &TestApp, user: &Session, room: &str, message: &str) -> (String, String) {
    let body = app
        .gql(Some(&user.token), MARK, json!({"r": room, "m": message}))
        .await;
    assert!(body["errors"].is_array(), "expected a refusal: {body}");
    (error_code(&body).to_owned(), error_field(&body).to_owned())
}

/// Sends a message: its id and the usernames it mentions.
async fn send(app: &TestApp, user: &Session, room: &str, body: &str) -> (String, Vec<String>) {
    let sent = app
        .data(Some(&user.token), SEND, json!({"r": room, "b": body}))
        .await["sendMessage"]
        .clone();
    (
        sent["id"].as_str().expect("a message id").to_owned(),
        usernames(&sent["mentions"]),
    )
}

fn usernames(users: &Value) -> Vec<String> {
    users
        .as_array()
        .expect("a list of users")
        .iter()
        .map(|u| u["username"].as_str().expect("a username").to_owned())
        .collect()
}

async fn delete(app: &TestApp, user: &Session, message: &str) {
    app.data(Some(&user.token), DELETE, json!({"m": message}))
        .await;
}

/// ada's room, which bob and cid have joined.
async fn trio(app: &TestApp) -> (Session, Session, Session, String) {
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let cid = app.register("cid").await;
    let room = app.create_room(&ada, "lobby").await;
    app.join(&bob, &room).await;
    app.join(&cid, &room).await;
    (ada, bob, cid, room)
}

#[tokio::test]
async fn the_read_marker_moves_forward_only() {
    let app = TestApp::spawn().await;
    let (ada, bob, _, room) = trio(&app).await;
    let mut ids = Vec::new();
    for i in 1..=3 {
        ids.push(send(&app, &ada, &room, &format!("m{i}")).await.0);
    }
    let before = state(&app, &bob, &room).await;
    assert_eq!(before["unreadCount"], 3, "{before}");
    assert!(before["lastReadMessageId"].is_null(), "{before}");

    let marked = mark(&app, &bob, &room, &ids[1]).await;
    assert_eq!(
        marked,
        json!({"id": room, "unreadCount": 1, "mentionCount": 0, "lastReadMessageId": ids[1]})
    );
    // An older message than the marker changes nothing.
    let older = mark(&app, &bob, &room, &ids[0]).await;
    assert_eq!(older, marked, "the marker does not move back");
    let again = state(&app, &bob, &room).await;
    assert_eq!(again["lastReadMessageId"], ids[1].as_str(), "{again}");
    assert_eq!(again["unreadCount"], 1, "{again}");

    let latest = mark(&app, &bob, &room, &ids[2]).await;
    assert_eq!(latest["unreadCount"], 0, "{latest}");
    assert_eq!(latest["lastReadMessageId"], ids[2].as_str());
    // The marker is bob's own: ada's is where it was.
    let adas = state(&app, &ada, &room).await;
    assert!(adas["lastReadMessageId"].is_null(), "{adas}");
}

#[tokio::test]
async fn a_new_member_has_read_everything_sent_before_they_joined() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&ada, "lobby").await;
    send(&app, &ada, &room, "before").await;
    let (last, _) = send(&app, &ada, &room, "@bob before you came").await;

    app.join(&bob, &room).await;
    let joined = state(&app, &bob, &room).await;
    assert_eq!(joined["unreadCount"], 0, "{joined}");
    assert_eq!(joined["mentionCount"], 0, "{joined}");
    assert_eq!(joined["lastReadMessageId"], last.as_str(), "{joined}");

    send(&app, &ada, &room, "after").await;
    assert_eq!(counts(&app, &bob, &room).await, (1, 0));

    // Coming back after leaving starts afresh at that moment too.
    app.data(Some(&bob.token), LEAVE, json!({"r": room})).await;
    let (gone, _) = send(&app, &ada, &room, "while bob was away").await;
    app.join(&bob, &room).await;
    let back = state(&app, &bob, &room).await;
    assert_eq!(back["unreadCount"], 0, "{back}");
    assert_eq!(back["lastReadMessageId"], gone.as_str(), "{back}");
}

#[tokio::test]
async fn unread_counts_neither_the_callers_own_nor_deleted_messages() {
    let app = TestApp::spawn().await;
    let (ada, bob, cid, room) = trio(&app).await;
    send(&app, &ada, &room, "from ada").await;
    send(&app, &bob, &room, "from bob").await;
    let (doomed, _) = send(&app, &cid, &room, "from cid, @bob").await;
    assert_eq!(counts(&app, &bob, &room).await, (2, 1), "bob's own is read");
    assert_eq!(counts(&app, &ada, &room).await, (2, 0));

    delete(&app, &cid, &doomed).await;
    assert_eq!(
        counts(&app, &bob, &room).await,
        (1, 0),
        "a deleted message is neither unread nor a mention"
    );
    assert_eq!(counts(&app, &ada, &room).await, (1, 0));

    // myRooms lists each room with the caller's own counts.
    let listed = app.data(Some(&bob.token), MY_ROOMS, json!({})).await;
    assert_eq!(
        listed["myRooms"]["edges"],
        json!([{"node": {"id": room, "unreadCount": 1, "mentionCount": 0,
            "lastReadMessageId": null}}])
    );
}

#[tokio::test]
async fn mentions_count_until_read() {
    let app = TestApp::spawn().await;
    let (ada, bob, cid, room) = trio(&app).await;
    let (first, _) = send(&app, &ada, &room, "@bob one").await;
    send(&app, &ada, &room, "no one").await;
    let (third, _) = send(&app, &cid, &room, "@bob @ada two").await;
    assert_eq!(counts(&app, &bob, &room).await, (3, 2));
    assert_eq!(counts(&app, &ada, &room).await, (1, 1));

    let marked = mark(&app, &bob, &room, &first).await;
    assert_eq!(
        (&marked["unreadCount"], &marked["mentionCount"]),
        (&json!(2), &json!(1)),
        "{marked}"
    );
    let marked = mark(&app, &bob, &room, &third).await;
    assert_eq!(
        (&marked["unreadCount"], &marked["mentionCount"]),
        (&json!(0), &json!(0)),
        "{marked}"
    );
}

#[tokio::test]
async fn non_members_see_no_counts_no_marker_and_no_last_message() {
    let app = TestApp::spawn().await;
    let (ada, bob, _, room) = trio(&app).await;
    let eve = app.register("eve").await;
    send(&app, &ada, &room, "@eve @bob hello").await;
    let outsider = json!({"unreadCount": 0, "mentionCount": 0, "lastReadMessageId": null,
        "lastMessage": null});
    assert_eq!(state(&app, &eve, &room).await, outsider);

    // A member who leaves is an outsider again.
    let (read, _) = send(&app, &ada, &room, "read").await;
    mark(&app, &bob, &room, &read).await;
    send(&app, &ada, &room, "unread").await;
    assert_eq!(counts(&app, &bob, &room).await, (1, 0));
    app.data(Some(&bob.token), LEAVE, json!({"r": room})).await;
    assert_eq!(state(&app, &bob, &room).await, outsider);
}

#[tokio::test]
async fn the_last_message_is_the_newest_not_deleted() {
    let app = TestApp::spawn().await;
    let (ada, bob, _, room) = trio(&app).await;
    assert!(state(&app, &bob, &room).await["lastMessage"].is_null());
    let (first, _) = send(&app, &ada, &room, "first").await;
    let (second, _) = send(&app, &bob, &room, "second").await;
    let last = state(&app, &bob, &room).await["lastMessage"].clone();
    assert_eq!(last, json!({"id": second, "body": "second"}));

    delete(&app, &bob, &second).await;
    let last = state(&app, &bob, &room).await["lastMessage"].clone();
    assert_eq!(last, json!({"id": first, "body": "first"}));
    delete(&app, &ada, &first).await;
    assert!(state(&app, &ada, &room).await["lastMessage"].is_null());
}

#[tokio::test]
async fn a_mention_names_a_member_in_any_case_never_the_sender() {
    let app = TestApp::spawn().await;
    let (ada, bob, cid, room) = trio(&app).await;
    // Registered in mixed case, mentioned in another.
    let dee = app.register("Dee_9").await;
    app.join(&dee, &room).await;

    let (_, mentioned) = send(&app, &ada, &room, "hi @BOB and (@cid), @dee_9.").await;
    assert_eq!(mentioned, ["bob", "cid", "Dee_9"]);
    let (_, mentioned) = send(&app, &ada, &room, "@ada talking to myself").await;
    assert!(mentioned.is_empty(), "never the sender: {mentioned:?}");
    let (_, mentioned) = send(&app, &ada, &room, "twice: @bob @Bob").await;
    assert_eq!(mentioned, ["bob"], "each once");
    assert_eq!(counts(&app, &bob, &room).await, (3, 2));
    assert_eq!(counts(&app, &cid, &room).await, (3, 1));
    assert_eq!(counts(&app, &dee, &room).await, (3, 1));
}

#[tokio::test]
async fn a_name_that_is_no_members_mentions_nobody() {
    let app = TestApp::spawn().await;
    let (ada, bob, _, room) = trio(&app).await;
    let eve = app.register("eve").await;
    // A private room: ivy is invited, so she can see it, but she is no member.
    let ivy = app.register("ivy").await;
    let secret = app
        .data(
            Some(&ada.token),
            CREATE,
            json!({"n": "secret", "v": "PRIVATE"}),
        )
        .await["createRoom"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.data(Some(&ada.token), INVITE, json!({"r": secret, "u": ivy.id}))
        .await;

    for (room, body) in [
        (&room, "@eve have a look"),
        (&room, "@nobody_here have a look"),
        (&room, "mail me at ada@bob or ada@bob.example"),
        (&secret, "@ivy have a look"),
    ] {
        let (_, mentioned) = send(&app, &ada, room, body).await;
        assert!(mentioned.is_empty(), "{body:?} mentions {mentioned:?}");
    }
    assert_eq!(counts(&app, &bob, &room).await, (3, 0));
    // Joining later does not bring the mentions back.
    app.join(&eve, &room).await;
    app.join(&ivy, &secret).await;
    assert_eq!(counts(&app, &eve, &room).await, (0, 0));
    assert_eq!(counts(&app, &ivy, &secret).await, (0, 0));
}

#[tokio::test]
async fn an_edit_replaces_the_mentions() {
    let app = TestApp::spawn().await;
    let (ada, bob, cid, room) = trio(&app).await;
    // eve is someone, but no member.
    app.register("eve").await;
    let (id, mentioned) = send(&app, &ada, &room, "@bob look").await;
    assert_eq!(mentioned, ["bob"]);
    assert_eq!(counts(&app, &bob, &room).await, (1, 1));

    let edited = app
        .data(
            Some(&ada.token),
            EDIT,
            json!({"m": id, "b": "@cid look, @eve too"}),
        )
        .await;
    assert_eq!(usernames(&edited["editMessage"]["mentions"]), ["cid"]);
    assert_eq!(counts(&app, &bob, &room).await, (1, 0), "bob's went");
    assert_eq!(counts(&app, &cid, &room).await, (1, 1), "cid's came");

    let edited = app
        .data(Some(&ada.token), EDIT, json!({"m": id, "b": "never mind"}))
        .await;
    assert_eq!(
        usernames(&edited["editMessage"]["mentions"]),
        Vec::<String>::new()
    );
    assert_eq!(counts(&app, &cid, &room).await, (1, 0));
}

#[tokio::test]
async fn a_message_mentions_at_most_20_people() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let room = app.create_room(&ada, "crowd").await;
    let mut crowd = Vec::new();
    for i in 0..22 {
        let user = app.register(&format!("user{i:02}")).await;
        app.join(&user, &room).await;
        crowd.push(user);
    }
    let body: String = (0..22).map(|i| format!("@user{i:02} ")).collect();
    let (_, mentioned) = send(&app, &ada, &room, &body).await;
    let expected: Vec<String> = (0..20).map(|i| format!("user{i:02}")).collect();
    assert_eq!(mentioned, expected);
    assert_eq!(counts(&app, &crowd[19], &room).await, (1, 1));
    assert_eq!(
        counts(&app, &crowd[20], &room).await,
        (1, 0),
        "the 21st @name is plain text"
    );
}

#[tokio::test]
async fn mark_read_refuses_what_is_not_the_callers_to_mark() {
    let app = TestApp::spawn().await;
    let (ada, bob, _, room) = trio(&app).await;
    let eve = app.register("eve").await;
    let other = app.create_room(&ada, "other").await;
    let (mine, _) = send(&app, &ada, &room, "in the lobby").await;
    let (elsewhere, _) = send(&app, &ada, &other, "elsewhere").await;
    let secret = app
        .data(
            Some(&ada.token),
            CREATE,
            json!({"n": "secret", "v": "PRIVATE"}),
        )
        .await["createRoom"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (hidden, _) = send(&app, &ada, &secret, "hidden").await;
    let pair = |code: &str, field: &str| (code.to_owned(), field.to_owned());

    // Another room's message, or no message at all, is bad input naming messageId.
    assert_eq!(
        refused(&app, &bob, &room, &elsewhere).await,
        pair("BAD_USER_INPUT", "messageId")
    );
    assert_eq!(
        refused(&app, &bob, &room, NO_MESSAGE).await,
        pair("BAD_USER_INPUT", "messageId")
    );
    // Malformed ids name their argument.
    assert_eq!(
        refused(&app, &bob, "lobby", &mine).await,
        pair("BAD_USER_INPUT", "roomId")
    );
    assert_eq!(
        refused(&app, &bob, &room, "not-an-id").await,
        pair("BAD_USER_INPUT", "messageId")
    );
    // A room one is no member of: forbidden where one can see it, missing where one cannot.
    assert_eq!(refused(&app, &eve, &room, &mine).await.0, "FORBIDDEN");
    assert_eq!(refused(&app, &eve, &secret, &hidden).await.0, "NOT_FOUND");
    assert_eq!(refused(&app, &bob, NO_MESSAGE, &mine).await.0, "NOT_FOUND");
    app.data(Some(&ada.token), INVITE, json!({"r": secret, "u": eve.id}))
        .await;
    assert_eq!(
        refused(&app, &eve, &secret, &hidden).await.0,
        "FORBIDDEN",
        "invited, eve sees the room but is no member"
    );
    // Signed out.
    let body = app.gql(None, MARK, json!({"r": room, "m": mine})).await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED", "{body}");

    // Nothing moved.
    let bobs = state(&app, &bob, &room).await;
    assert!(bobs["lastReadMessageId"].is_null(), "{bobs}");
    assert_eq!(bobs["unreadCount"], 1, "{bobs}");
}

// REST.

async fn post(app: &TestApp, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
    let mut request = app.http.post(app.url(path)).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("POST");
    let status = response.status();
    (status, response.json().await.expect("a JSON body"))
}

/// The `get_rooms` entry of `room` as `user` sees it.
async fn listed(app: &TestApp, user: &Session, room: &str) -> Value {
    let response = app
        .http
        .get(app.url("/get_rooms"))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("GET");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.expect("a JSON body");
    body["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .find(|r| r["id"] == room)
        .unwrap_or_else(|| panic!("{room} is not listed: {body}"))
        .clone()
}

fn rest_error(body: &Value) -> (&str, &str) {
    (
        body["error"]["code"].as_str().unwrap_or("<none>"),
        body["error"]["field"].as_str().unwrap_or("<none>"),
    )
}

#[tokio::test]
async fn rest_marks_read_and_lists_counts_for_members_only() {
    let app = TestApp::spawn().await;
    let (ada, bob, _, room) = trio(&app).await;
    let eve = app.register("eve").await;
    let other = app.create_room(&ada, "other").await;
    let (first, _) = send(&app, &ada, &room, "@bob first").await;
    let (second, _) = send(&app, &ada, &room, "second").await;
    let (elsewhere, _) = send(&app, &ada, &other, "elsewhere").await;

    let entry = listed(&app, &bob, &room).await;
    assert_eq!(
        (&entry["unreadCount"], &entry["mentionCount"]),
        (&json!(2), &json!(1)),
        "{entry}"
    );
    let entry = listed(&app, &eve, &room).await;
    let keys = entry.as_object().unwrap();
    assert!(
        !keys.contains_key("unreadCount") && !keys.contains_key("mentionCount"),
        "no counts for a non-member: {entry}"
    );

    let mark = |message: &str| json!({"roomID": room, "messageID": message});
    let (status, body) = post(&app, "/mark_read", Some(&bob.token), mark(&first)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"message": "marked read", "roomID": room, "lastReadMessageID": first,
            "unreadCount": 1, "mentionCount": 0})
    );
    let entry = listed(&app, &bob, &room).await;
    assert_eq!(
        (&entry["unreadCount"], &entry["mentionCount"]),
        (&json!(1), &json!(0)),
        "{entry}"
    );
    let (status, again) = post(&app, "/mark_read", Some(&bob.token), mark(&first)).await;
    assert_eq!((status, again), (StatusCode::OK, body), "idempotent");
    let (_, body) = post(&app, "/mark_read", Some(&bob.token), mark(&second)).await;
    assert_eq!(body["lastReadMessageID"], second.as_str());
    assert_eq!(body["unreadCount"], 0);

    // Refusals name the fields as the request did.
    let (status, body) = post(&app, "/mark_read", Some(&bob.token), mark(&elsewhere)).await;
    assert_eq!(
        (status, rest_error(&body)),
        (StatusCode::BAD_REQUEST, ("BAD_USER_INPUT", "messageID")),
        "{body}"
    );
    let (status, body) = post(&app, "/mark_read", Some(&bob.token), mark("nope")).await;
    assert_eq!(
        (status, rest_error(&body)),
        (StatusCode::BAD_REQUEST, ("BAD_USER_INPUT", "messageID")),
        "{body}"
    );
    let (status, body) = post(
        &app,
        "/mark_read",
        Some(&bob.token),
        json!({"roomID": "lobby", "messageID": first}),
    )
    .await;
    assert_eq!(
        (status, rest_error(&body)),
        (StatusCode::BAD_REQUEST, ("BAD_USER_INPUT", "roomID")),
        "{body}"
    );
    let (status, body) = post(&app, "/mark_read", None, mark(&first)).await;
    assert_eq!(
        (status, rest_error(&body).0),
        (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
        "{body}"
    );
    let (status, body) = post(&app, "/mark_read", Some(&eve.token), mark(&first)).await;
    assert_eq!(
        (status, rest_error(&body).0),
        (StatusCode::FORBIDDEN, "FORBIDDEN"),
        "{body}"
    );
    let (status, body) = post(
        &app,
        "/mark_read",
        Some(&bob.token),
        json!({"roomID": NO_MESSAGE, "messageID": first}),
    )
    .await;
    assert_eq!(
        (status, rest_error(&body).0),
        (StatusCode::NOT_FOUND, "NOT_FOUND"),
        "{body}"
    );
}

// Socket.IO.

#[tokio::test]
async fn socketio_mark_read_acknowledges_the_read_state() {
    let app = TestApp::spawn().await;
    let (ada, bob, _, room) = trio(&app).await;
    let eve = app.register("eve").await;
    let other = app.create_room(&ada, "other").await;
    let (first, _) = send(&app, &ada, &room, "first").await;
    let (second, _) = send(&app, &ada, &room, "@bob second").await;
    let (elsewhere, _) = send(&app, &ada, &other, "elsewhere").await;
    let mark = |message: &str| json!({"roomID": room, "messageID": message});

    let mut bobs = app.socketio(&bob).await;
    let ack = bobs.call("mark_read", mark(&first)).await;
    assert_eq!(
        ack,
        json!({"ok": true, "roomID": room, "lastReadMessageID": first,
            "unreadCount": 1, "mentionCount": 1})
    );
    let ack = bobs.call("mark_read", mark(&second)).await;
    assert_eq!(
        (
            &ack["lastReadMessageID"],
            &ack["unreadCount"],
            &ack["mentionCount"]
        ),
        (&json!(second), &json!(0), &json!(0)),
        "{ack}"
    );
    let ack = bobs.call("mark_read", mark(&first)).await;
    assert_eq!(
        ack["lastReadMessageID"],
        second.as_str(),
        "never back: {ack}"
    );

    let ack = bobs.call("mark_read", mark(&elsewhere)).await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(
        (&ack["error"]["code"], &ack["error"]["field"]),
        (&json!("BAD_USER_INPUT"), &json!("messageID")),
        "{ack}"
    );
    let mut eves = app.socketio(&eve).await;
    let ack = eves.call("mark_read", mark(&first)).await;
    assert_eq!(ack["ok"], false, "{ack}");
    assert_eq!(ack["error"]["code"], "FORBIDDEN", "{ack}");
}

#[tokio::test]
async fn a_name_ending_in_a_dot_or_dash_is_mentioned_whole_when_it_is_someones() {
    let app = TestApp::spawn().await;
    let (ada, bob, _, room) = trio(&app).await;
    let dashed = app.register("bob-").await;
    app.join(&dashed, &room).await;
    let (_, mentioned) = send(&app, &ada, &room, "over to @bob- now").await;
    assert_eq!(mentioned, ["bob-"], "the whole name is someone's");
    let (_, mentioned) = send(&app, &ada, &room, "thanks @bob.").await;
    assert_eq!(mentioned, ["bob"], "a trailing dot is punctuation");
    assert_eq!(counts(&app, &bob, &room).await.1, 1);
}
