//! Accounts that end or are bounded: deletion, export, who may register, server admins and
//! suspension.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{Session, TestApp, error_code, error_field};

const PASSWORD: &str = "correct horse battery";

const DELETE: &str = "mutation($p: String!, $purge: Boolean) {
    deleteAccount(password: $p, purgeMessages: $purge) }";

async fn history(app: &TestApp, reader: &Session, room: &str) -> Vec<(String, String)> {
    let data = app
        .data(
            Some(&reader.token),
            "query($r: ID!) { messages(roomId: $r, last: 50) {
                edges { node { body sender { username } } } } }",
            json!({"r": room}),
        )
        .await;
    data["messages"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            (
                e["node"]["body"].as_str().unwrap_or_default().to_owned(),
                e["node"]["sender"]["username"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

async fn members(app: &TestApp, reader: &Session, room: &str) -> Vec<String> {
    let data = app
        .data(
            Some(&reader.token),
            "query($r: ID!) { room(id: $r) { members { username } } }",
            json!({"r": room}),
        )
        .await;
    data["room"]["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(|m| m["username"].as_str().map(str::to_owned))
        .collect()
}

async fn login(app: &TestApp, username: &str, password: &str) -> Value {
    app.gql(
        None,
        "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }",
        json!({"u": username, "p": password}),
    )
    .await
}

async fn register_with(app: &TestApp, username: &str, code: Option<&str>) -> Value {
    app.gql(
        None,
        "mutation($u: String!, $p: String!, $c: String) {
            register(username: $u, password: $p, inviteCode: $c) { token user { id } } }",
        json!({"u": username, "p": PASSWORD, "c": code}),
    )
    .await
}

#[tokio::test]
async fn a_deleted_account_leaves_its_rooms_signs_out_and_its_messages_read_as_deleted_user() {
    let app = TestApp::spawn().await;
    let (ada, bob) = (app.register("ada").await, app.register("bob").await);
    let room = app.create_room(&bob, "lobby").await;
    app.join(&ada, &room).await;
    app.send(&ada, &room, "hello from ada").await;
    let mut socket = app.ws_as(&ada).await;

    let wrong = app
        .gql(Some(&ada.token), DELETE, json!({"p": "not my password"}))
        .await;
    assert_eq!(
        (error_code(&wrong), error_field(&wrong)),
        ("BAD_USER_INPUT", "password"),
        "{wrong}"
    );
    let deleted = app
        .data(Some(&ada.token), DELETE, json!({"p": PASSWORD}))
        .await;
    assert_eq!(deleted["deleteAccount"], true);

    assert_eq!(socket.closed().await.0, 4403);
    let me = app.gql(Some(&ada.token), "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&me), "UNAUTHENTICATED");
    assert_eq!(
        error_code(&login(&app, "ada", PASSWORD).await),
        "UNAUTHENTICATED"
    );
    assert_eq!(
        history(&app, &bob, &room).await,
        vec![("hello from ada".to_owned(), "deleted user".to_owned())]
    );
    assert_eq!(members(&app, &bob, &room).await, vec!["bob".to_owned()]);
    // The name is kept from others for the quarantine (30 days by default).
    let again = register_with(&app, "ADA", None).await;
    assert_eq!(
        (error_code(&again), error_field(&again)),
        ("CONFLICT", "username")
    );
}

#[tokio::test]
async fn purging_deletes_the_messages_and_without_quarantine_the_name_is_free_at_once() {
    let app = TestApp::spawn_with(|c| c.username_quarantine = Duration::ZERO).await;
    let (ada, bob) = (app.register("ada").await, app.register("bob").await);
    let room = app.create_room(&bob, "lobby").await;
    app.join(&ada, &room).await;
    app.send(&ada, &room, "one").await;
    app.send(&bob, &room, "two").await;
    app.send(&ada, &room, "three").await;
    app.data(
        Some(&ada.token),
        DELETE,
        json!({"p": PASSWORD, "purge": true}),
    )
    .await;
    assert_eq!(
        history(&app, &bob, &room).await,
        vec![("two".to_owned(), "bob".to_owned())]
    );
    let fresh = register_with(&app, "ada", None).await;
    assert!(fresh.get("errors").is_none(), "{fresh}");
    assert_ne!(fresh["data"]["register"]["user"]["id"], ada.id.as_str());
}

#[tokio::test]
async fn an_export_holds_the_account_its_rooms_and_only_its_own_messages() {
    let app = TestApp::spawn().await;
    let (ada, bob) = (app.register("ada").await, app.register("bob").await);
    let lobby = app.create_room(&ada, "lobby").await;
    let den = app.create_room(&ada, "den").await;
    app.join(&bob, &lobby).await;
    app.send(&ada, &lobby, "first").await;
    app.send(&bob, &lobby, "not ada's").await;
    app.send(&ada, &den, "second").await;

    let data = app
        .data(Some(&ada.token), "{ exportMyData }", json!({}))
        .await;
    let export = &data["exportMyData"];
    assert_eq!(export["account"]["username"], "ada");
    let rooms: Vec<&str> = export["rooms"]
        .as_array()
        .expect("rooms")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(rooms, ["lobby", "den"]);
    let bodies = |export: &Value| -> Vec<String> {
        export["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["body"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(bodies(export), ["first", "second"]);
    assert_eq!(export["messagesComplete"], true);
    assert_eq!(export["sessions"].as_array().map(Vec::len), Some(1));

    let response = app
        .http
        .get(app.url("/me/export"))
        .bearer_auth(&ada.token)
        .send()
        .await
        .expect("GET /me/export");
    assert_eq!(response.status(), 200);
    let streamed: Value = response.json().await.expect("one JSON document");
    assert_eq!(bodies(&streamed), ["first", "second"]);
    assert_eq!(streamed["account"], export["account"]);

    let anonymous = app
        .http
        .get(app.url("/me/export"))
        .send()
        .await
        .expect("GET");
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn a_closed_server_takes_its_first_account_and_then_no_more() {
    let app = TestApp::spawn_with(|c| c.registration = confab::config::Registration::Closed).await;
    let first = register_with(&app, "ada", None).await;
    assert!(first.get("errors").is_none(), "{first}");
    let refused = register_with(&app, "bob", None).await;
    assert_eq!(error_code(&refused), "FORBIDDEN");
    let rest = app
        .http
        .post(app.url("/register"))
        .json(&json!({"username": "bob", "password": PASSWORD}))
        .send()
        .await
        .expect("POST /register");
    assert_eq!(rest.status(), 403);
}

#[tokio::test]
async fn invitation_codes_are_made_by_admins_and_work_once() {
    let app = TestApp::spawn_with(|c| c.registration = confab::config::Registration::Invite).await;
    // The first account needs no code, and is the server's admin.
    let ada = app.register("ada").await;
    let without = register_with(&app, "bob", None).await;
    assert_eq!(
        (error_code(&without), error_field(&without)),
        ("BAD_USER_INPUT", "inviteCode")
    );
    let code = |data: Value| data["createInviteCode"].as_str().expect("code").to_owned();
    let one = code(
        app.data(Some(&ada.token), "mutation { createInviteCode }", json!({}))
            .await,
    );
    let bob = register_with(&app, "bob", Some(&one)).await;
    assert!(bob.get("errors").is_none(), "{bob}");
    let reused = register_with(&app, "carol", Some(&one)).await;
    assert_eq!(
        (error_code(&reused), error_field(&reused)),
        ("BAD_USER_INPUT", "inviteCode")
    );
    let bob_token = bob["data"]["register"]["token"].as_str().expect("token");
    let not_admin = app
        .gql(Some(bob_token), "mutation { createInviteCode }", json!({}))
        .await;
    assert_eq!(error_code(&not_admin), "FORBIDDEN");

    // A code spent on a registration that failed is given back.
    let two = code(
        app.data(Some(&ada.token), "mutation { createInviteCode }", json!({}))
            .await,
    );
    let taken = register_with(&app, "Ada", Some(&two)).await;
    assert_eq!(error_code(&taken), "CONFLICT");
    let dave = register_with(&app, "dave", Some(&two)).await;
    assert!(dave.get("errors").is_none(), "{dave}");
}

#[tokio::test]
async fn a_suspended_account_is_signed_out_everywhere_until_reinstated() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await; // the first account: an admin
    let bob = app.register("bob").await;
    let mut socket = app.ws_as(&bob).await;
    let suspend = "mutation($u: ID!, $r: String!) { suspendUser(userId: $u, reason: $r) }";
    let unsuspend = "mutation($u: ID!) { unsuspendUser(userId: $u) }";

    let by_member = app
        .gql(Some(&bob.token), suspend, json!({"u": ada.id, "r": "spam"}))
        .await;
    assert_eq!(error_code(&by_member), "FORBIDDEN");
    let own = app
        .gql(Some(&ada.token), suspend, json!({"u": ada.id, "r": "spam"}))
        .await;
    assert_eq!(error_code(&own), "FORBIDDEN");
    let blank = app
        .gql(Some(&ada.token), suspend, json!({"u": bob.id, "r": "  "}))
        .await;
    assert_eq!(
        (error_code(&blank), error_field(&blank)),
        ("BAD_USER_INPUT", "reason")
    );

    app.data(Some(&ada.token), suspend, json!({"u": bob.id, "r": "spam"}))
        .await;
    assert_eq!(socket.closed().await.0, 4403);
    let me = app.gql(Some(&bob.token), "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&me), "UNAUTHENTICATED");
    let refused = login(&app, "bob", PASSWORD).await;
    assert_eq!(error_code(&refused), "FORBIDDEN");
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("spam")),
        "{refused}"
    );

    let lifted = app
        .data(Some(&ada.token), unsuspend, json!({"u": bob.id}))
        .await;
    assert_eq!(lifted["unsuspendUser"], true);
    let back = login(&app, "bob", PASSWORD).await;
    let token = back["data"]["login"]["token"].as_str().expect("signed in");
    app.data(Some(token), "{ me { id } }", json!({})).await;
}

#[tokio::test]
async fn an_admin_deletes_a_room_its_members_leave_and_its_name_is_free() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await; // the first account: an admin
    let bob = app.register("bob").await;
    let room = app.create_room(&bob, "lobby").await;
    app.send(&bob, &room, "hello").await;
    let mut ws = app.ws_as(&bob).await;
    ws.subscribe("events", crate::helpers::ROOM_EVENTS, json!({"r": room}))
        .await;
    ws.ping_pong().await;
    let delete = "mutation($r: ID!) { deleteRoom(roomId: $r) }";

    let by_owner = app.gql(Some(&bob.token), delete, json!({"r": room})).await;
    assert_eq!(error_code(&by_owner), "FORBIDDEN");
    let deleted = app.data(Some(&ada.token), delete, json!({"r": room})).await;
    assert_eq!(deleted["deleteRoom"], true);

    let left = ws.next_payload("events").await;
    assert_eq!(
        left["data"]["roomEvents"]["__typename"], "MemberLeft",
        "{left}"
    );
    let complete = ws.recv().await;
    assert_eq!(complete["type"], "complete", "{complete}");
    let gone = app
        .data(
            Some(&bob.token),
            "query($r: ID!) { room(id: $r) { id } }",
            json!({"r": room}),
        )
        .await;
    assert!(gone["room"].is_null(), "{gone}");
    let again = app.create_room(&bob, "lobby").await;
    assert_ne!(again, room);
    let missing = app.gql(Some(&ada.token), delete, json!({"r": room})).await;
    assert_eq!(error_code(&missing), "NOT_FOUND");
}

#[tokio::test]
async fn checking_a_session_on_every_request_does_not_read_the_store_every_time() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let before = app.metric("confab_session_store_reads_total").await;
    for _ in 0..20 {
        app.data(Some(&ada.token), "{ me { id } }", json!({})).await;
    }
    let reads = app.metric("confab_session_store_reads_total").await - before;
    assert!(reads <= 1, "{reads} store reads for 20 requests");
    // And a revocation is heard, not waited out.
    app.data(Some(&ada.token), "mutation { logout }", json!({}))
        .await;
    assert!(app.metric("confab_session_revocations_total").await >= 1);
}
