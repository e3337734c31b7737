use serde_json::json;

use crate::helpers::{TestApp, error_code, error_field};

const ROOM: &str = "query($id: ID!) { room(id: $id) { id name createdAt createdBy { username } members { username } memberCount } }";

#[tokio::test]
async fn the_creator_of_a_room_is_its_first_member() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let room = app.create_room(&ada, "  lobby ").await;

    let data = app.data(Some(&ada.token), ROOM, json!({"id": room})).await;
    assert_eq!(data["room"]["name"], "lobby");
    assert_eq!(data["room"]["createdBy"]["username"], "ada");
    assert_eq!(data["room"]["members"], json!([{"username": "ada"}]));
    assert_eq!(data["room"]["memberCount"], 1);

    let mine = app
        .data(Some(&ada.token), "{ myRooms { id } }", json!({}))
        .await;
    assert_eq!(mine["myRooms"], json!([{"id": room}]));
}

#[tokio::test]
async fn room_names_are_checked_and_unique_in_any_letter_case() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    app.create_room(&ada, "General").await;
    let create = "mutation($n: String!) { createRoom(name: $n) { id } }";
    let body = app
        .gql(Some(&ada.token), create, json!({"n": "general"}))
        .await;
    assert_eq!(
        (error_code(&body), error_field(&body)),
        ("CONFLICT", "name"),
        "{body}"
    );
    for bad in ["", "   ", &"r".repeat(65)] {
        let body = app.gql(Some(&ada.token), create, json!({"n": bad})).await;
        assert_eq!(
            (error_code(&body), error_field(&body)),
            ("BAD_USER_INPUT", "name"),
            "{bad:?}"
        );
    }
    let body = app.gql(None, create, json!({"n": "anonymous room"})).await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED");
}

#[tokio::test]
async fn look_alike_and_invisible_room_names_are_refused() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let create = "mutation($n: String!) { createRoom(name: $n) { id name } }";
    let lobby = app
        .data(Some(&ada.token), create, json!({"n": "lobby"}))
        .await;
    assert_eq!(lobby["createRoom"]["name"], "lobby");

    // Capital I and zero for l and o; Cyrillic о (U+043E).
    for look_alike in ["I0bby", "l\u{43E}bby"] {
        let body = app
            .gql(Some(&ada.token), create, json!({"n": look_alike}))
            .await;
        assert_eq!(
            (error_code(&body), error_field(&body)),
            ("CONFLICT", "name"),
            "{look_alike:?}: {body}"
        );
    }
    // A zero-width space is refused as input, not as a conflict.
    for invisible in ["lob\u{200B}by", "\u{202E}ybbol"] {
        let body = app
            .gql(Some(&ada.token), create, json!({"n": invisible}))
            .await;
        assert_eq!(
            (error_code(&body), error_field(&body)),
            ("BAD_USER_INPUT", "name"),
            "{invisible:?}: {body}"
        );
    }
    // Names come back in NFC: e and a combining acute are stored as é.
    let cafe = app
        .data(Some(&ada.token), create, json!({"n": "cafe\u{301}"}))
        .await;
    assert_eq!(cafe["createRoom"]["name"], "caf\u{E9}");
}

#[tokio::test]
async fn joining_is_idempotent_and_leaving_says_whether_it_left() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&ada, "lobby").await;

    app.join(&bob, &room).await;
    app.join(&bob, &room).await;
    let data = app.data(Some(&ada.token), ROOM, json!({"id": room})).await;
    assert_eq!(data["room"]["memberCount"], 2);
    assert_eq!(
        data["room"]["members"],
        json!([{"username": "ada"}, {"username": "bob"}])
    );

    let leave = "mutation($r: ID!) { leaveRoom(roomId: $r) }";
    assert_eq!(
        app.data(Some(&bob.token), leave, json!({"r": room})).await["leaveRoom"],
        true
    );
    assert_eq!(
        app.data(Some(&bob.token), leave, json!({"r": room})).await["leaveRoom"],
        false
    );
    let data = app.data(Some(&ada.token), ROOM, json!({"id": room})).await;
    assert_eq!(data["room"]["memberCount"], 1);
}

#[tokio::test]
async fn unknown_and_malformed_room_ids() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let join = "mutation($r: ID!) { joinRoom(roomId: $r) { id } }";
    let body = app
        .gql(
            Some(&ada.token),
            join,
            json!({"r": "0123456789abcdef01234567"}),
        )
        .await;
    assert_eq!(error_code(&body), "NOT_FOUND", "{body}");
    let body = app.gql(Some(&ada.token), join, json!({"r": "lobby"})).await;
    assert_eq!(
        (error_code(&body), error_field(&body)),
        ("BAD_USER_INPUT", "roomId"),
        "{body}"
    );
    let data = app
        .data(
            Some(&ada.token),
            ROOM,
            json!({"id": "0123456789abcdef01234567"}),
        )
        .await;
    assert!(data["room"].is_null());
}

#[tokio::test]
async fn the_room_directory_pages_oldest_first() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let mut rooms = Vec::new();
    for i in 0..5 {
        rooms.push(app.create_room(&ada, &format!("room {i}")).await);
    }
    let query = "query($first: Int, $after: String) { rooms(first: $first, after: $after) {
        edges { cursor node { id } } pageInfo { hasPreviousPage hasNextPage endCursor } } }";
    let mut seen = Vec::new();
    let mut after = serde_json::Value::Null;
    let mut pages = 0;
    loop {
        let data = app
            .data(Some(&ada.token), query, json!({"first": 2, "after": after}))
            .await;
        let page = &data["rooms"];
        for edge in page["edges"].as_array().unwrap() {
            seen.push(edge["node"]["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(page["pageInfo"]["hasPreviousPage"], pages > 0, "{page}");
        pages += 1;
        if page["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen, rooms);
    assert_eq!(pages, 3);

    let body = app
        .gql(Some(&ada.token), query, json!({"first": 101}))
        .await;
    assert_eq!(
        (error_code(&body), error_field(&body)),
        ("BAD_USER_INPUT", "first")
    );
}
