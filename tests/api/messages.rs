use serde_json::{Value, json};

use crate::helpers::{Session, TestApp, error_code, error_field};

const SEND: &str = "mutation($r: ID!, $b: String!, $c: String) { sendMessage(roomId: $r, body: $b, clientId: $c) { id roomId body clientId sender { username } createdAt editedAt } }";
const PAGE: &str = "query($r: ID!, $first: Int, $after: String, $last: Int, $before: String) {
    messages(roomId: $r, first: $first, after: $after, last: $last, before: $before) {
        edges { cursor node { id body } }
        pageInfo { hasPreviousPage hasNextPage startCursor endCursor } } }";

async fn page(app: &TestApp, user: &Session, room: &str, args: Value) -> Value {
    let mut variables = json!({"r": room});
    variables
        .as_object_mut()
        .unwrap()
        .extend(args.as_object().unwrap().clone());
    app.data(Some(&user.token), PAGE, variables).await["messages"].clone()
}

fn bodies(page: &Value) -> Vec<String> {
    page["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["body"].as_str().unwrap().to_owned())
        .collect()
}

fn flags(page: &Value) -> (bool, bool) {
    (
        page["pageInfo"]["hasPreviousPage"].as_bool().unwrap(),
        page["pageInfo"]["hasNextPage"].as_bool().unwrap(),
    )
}

#[tokio::test]
async fn members_send_and_read_messages_others_cannot() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let eve = app.register("eve").await;
    let room = app.create_room(&ada, "lobby").await;

    let sent = app
        .data(
            Some(&ada.token),
            SEND,
            json!({"r": room, "b": "hello\nworld"}),
        )
        .await;
    let message = &sent["sendMessage"];
    assert_eq!(message["body"], "hello\nworld");
    assert_eq!(message["roomId"], room.as_str());
    assert_eq!(message["sender"]["username"], "ada");
    assert!(message["editedAt"].is_null() && message["clientId"].is_null());

    let body = app
        .gql(Some(&eve.token), SEND, json!({"r": room, "b": "let me in"}))
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    let body = app.gql(Some(&eve.token), PAGE, json!({"r": room})).await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");
    let body = app
        .gql(
            Some(&eve.token),
            "mutation($r: ID!) { setTyping(roomId: $r, typing: true) }",
            json!({"r": room}),
        )
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN", "{body}");

    assert_eq!(
        bodies(&page(&app, &ada, &room, json!({})).await),
        ["hello\nworld"]
    );
}

#[tokio::test]
async fn message_bodies_are_checked() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let room = app.create_room(&ada, "lobby").await;
    for bad in ["", "  \n ", &"x".repeat(4001)] {
        let body = app
            .gql(Some(&ada.token), SEND, json!({"r": room, "b": bad}))
            .await;
        assert_eq!(
            (error_code(&body), error_field(&body)),
            ("BAD_USER_INPUT", "body"),
            "{}",
            bad.len()
        );
    }
    let body = app
        .gql(
            Some(&ada.token),
            SEND,
            json!({"r": room, "b": "ok", "c": "c".repeat(65)}),
        )
        .await;
    assert_eq!(
        (error_code(&body), error_field(&body)),
        ("BAD_USER_INPUT", "clientId")
    );
    let longest = "é".repeat(4000);
    let sent = app
        .data(Some(&ada.token), SEND, json!({"r": room, "b": longest}))
        .await;
    assert_eq!(sent["sendMessage"]["body"], longest.as_str());
}

#[tokio::test]
async fn a_repeated_client_id_returns_the_first_message() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&ada, "lobby").await;
    app.join(&bob, &room).await;

    let first = app
        .data(
            Some(&ada.token),
            SEND,
            json!({"r": room, "b": "once", "c": "k1"}),
        )
        .await;
    let retry = app
        .data(
            Some(&ada.token),
            SEND,
            json!({"r": room, "b": "once again?", "c": "k1"}),
        )
        .await;
    assert_eq!(first["sendMessage"]["id"], retry["sendMessage"]["id"]);
    assert_eq!(retry["sendMessage"]["body"], "once");
    assert_eq!(retry["sendMessage"]["clientId"], "k1");
    // Another sender's key is their own.
    let bobs = app
        .data(
            Some(&bob.token),
            SEND,
            json!({"r": room, "b": "mine", "c": "k1"}),
        )
        .await;
    assert_ne!(bobs["sendMessage"]["id"], first["sendMessage"]["id"]);

    assert_eq!(
        bodies(&page(&app, &ada, &room, json!({})).await),
        ["once", "mine"]
    );
}

#[tokio::test]
async fn history_pages_both_ways_with_exact_edges() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let room = app.create_room(&ada, "lobby").await;
    let names: Vec<String> = (1..=7).map(|i| format!("m{i}")).collect();
    for name in &names {
        app.send(&ada, &room, name).await;
    }

    // Backwards from the newest, as a chat client scrolls up.
    let newest = page(&app, &ada, &room, json!({"last": 3})).await;
    assert_eq!(bodies(&newest), ["m5", "m6", "m7"]);
    assert_eq!(flags(&newest), (true, false));
    let older = page(
        &app,
        &ada,
        &room,
        json!({"last": 3, "before": newest["pageInfo"]["startCursor"]}),
    )
    .await;
    assert_eq!(bodies(&older), ["m2", "m3", "m4"]);
    assert_eq!(flags(&older), (true, true));
    let oldest = page(
        &app,
        &ada,
        &room,
        json!({"last": 3, "before": older["pageInfo"]["startCursor"]}),
    )
    .await;
    assert_eq!(bodies(&oldest), ["m1"]);
    assert_eq!(flags(&oldest), (false, true));

    // Forwards from the start.
    let first = page(&app, &ada, &room, json!({"first": 3})).await;
    assert_eq!(bodies(&first), ["m1", "m2", "m3"]);
    assert_eq!(flags(&first), (false, true));
    let last = page(
        &app,
        &ada,
        &room,
        json!({"first": 3, "after": older["pageInfo"]["endCursor"]}),
    )
    .await;
    assert_eq!(bodies(&last), ["m5", "m6", "m7"]);
    assert_eq!(flags(&last), (true, false));
    let all = page(&app, &ada, &room, json!({"first": 7})).await;
    assert_eq!(bodies(&all), names);
    assert_eq!(flags(&all), (false, false));

    let body = app
        .gql(
            Some(&ada.token),
            PAGE,
            json!({"r": room, "first": 1, "last": 1}),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    let body = app
        .gql(
            Some(&ada.token),
            PAGE,
            json!({"r": room, "before": "not-a-cursor"}),
        )
        .await;
    assert_eq!(
        (error_code(&body), error_field(&body)),
        ("BAD_USER_INPUT", "before")
    );
}

#[tokio::test]
async fn only_authors_edit_and_delete_and_deleted_messages_leave_the_history() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&ada, "lobby").await;
    app.join(&bob, &room).await;
    let id = app.send(&ada, &room, "typo").await;
    app.send(&bob, &room, "reply").await;

    let edit = "mutation($m: ID!, $b: String!) { editMessage(messageId: $m, body: $b) { id body editedAt } }";
    let delete = "mutation($m: ID!) { deleteMessage(messageId: $m) }";
    let body = app
        .gql(Some(&bob.token), edit, json!({"m": id, "b": "hijack"}))
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN");
    let body = app.gql(Some(&bob.token), delete, json!({"m": id})).await;
    assert_eq!(error_code(&body), "FORBIDDEN");

    let edited = app
        .data(Some(&ada.token), edit, json!({"m": id, "b": "fixed"}))
        .await;
    assert_eq!(edited["editMessage"]["body"], "fixed");
    assert!(edited["editMessage"]["editedAt"].is_string());

    let deleted = app.data(Some(&ada.token), delete, json!({"m": id})).await;
    assert_eq!(deleted["deleteMessage"], id.as_str());
    assert_eq!(bodies(&page(&app, &ada, &room, json!({})).await), ["reply"]);
    let body = app
        .gql(Some(&ada.token), edit, json!({"m": id, "b": "back?"}))
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND");
    let body = app
        .gql(
            Some(&ada.token),
            delete,
            json!({"m": "0123456789abcdef01234567"}),
        )
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND");
}

#[tokio::test]
async fn after_leaving_a_room_its_author_can_no_longer_edit_or_delete_there() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&ada, "lobby").await;
    app.join(&bob, &room).await;
    let id = app.send(&bob, &room, "said before leaving").await;
    app.data(
        Some(&bob.token),
        "mutation($r: ID!) { leaveRoom(roomId: $r) }",
        json!({"r": room}),
    )
    .await;

    let edit = "mutation($m: ID!) { editMessage(messageId: $m, body: \"changed\") { id } }";
    let delete = "mutation($m: ID!) { deleteMessage(messageId: $m) }";
    let edited = app.gql(Some(&bob.token), edit, json!({"m": id})).await;
    assert_eq!(error_code(&edited), "FORBIDDEN", "{edited}");
    let deleted = app.gql(Some(&bob.token), delete, json!({"m": id})).await;
    assert_eq!(error_code(&deleted), "FORBIDDEN", "{deleted}");
    let rest = app
        .http
        .post(app.url("/delete_message"))
        .bearer_auth(&bob.token)
        .json(&json!({"messageID": id}))
        .send()
        .await
        .expect("POST /delete_message");
    assert_eq!(rest.status(), 403);
    assert_eq!(
        bodies(&page(&app, &ada, &room, json!({})).await),
        ["said before leaving"]
    );
}
