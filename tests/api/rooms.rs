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
        .data(
            Some(&ada.token),
            "{ myRooms { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(mine["myRooms"]["edges"], json!([{"node": {"id": room}}]));
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

#[tokio::test]
async fn my_rooms_is_paged() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let mut ids = Vec::new();
    for name in ["one", "two", "three"] {
        ids.push(app.create_room(&ada, name).await);
    }
    let query = "query($after: String) { myRooms(first: 2, after: $after) {
        edges { node { name } } pageInfo { hasNextPage endCursor } } }";
    let first = app.data(Some(&ada.token), query, json!({})).await;
    assert_eq!(
        first["myRooms"]["edges"],
        json!([{"node": {"name": "one"}}, {"node": {"name": "two"}}])
    );
    assert_eq!(first["myRooms"]["pageInfo"]["hasNextPage"], true);
    let cursor = first["myRooms"]["pageInfo"]["endCursor"].clone();
    let second = app
        .data(Some(&ada.token), query, json!({"after": cursor}))
        .await;
    assert_eq!(
        second["myRooms"]["edges"],
        json!([{"node": {"name": "three"}}])
    );
    assert_eq!(second["myRooms"]["pageInfo"]["hasNextPage"], false);

    // A page holds at most 100, and the cost counts what a page can hold.
    let body = app
        .gql(
            Some(&ada.token),
            "{ myRooms(first: 101) { edges { node { id } } } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT");
    assert_eq!(error_field(&body), "first");
    let aliases: String = (0..20)
        .map(|i| format!("a{i}: myRooms(first: 100) {{ edges {{ node {{ id name }} }} }} "))
        .collect();
    let body = app
        .gql(Some(&ada.token), &format!("{{ {aliases} }}"), json!({}))
        .await;
    assert!(body["data"].is_null(), "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("too complex"),
        "{body}"
    );
}

#[tokio::test]
async fn one_user_can_be_a_member_of_so_many_rooms() {
    let app = TestApp::spawn_with(|c| c.max_rooms_per_user = 2).await;
    let ada = app.register("ada").await;
    let grace = app.register("grace").await;
    let first = app.create_room(&ada, "first").await;
    app.create_room(&ada, "second").await;
    let over = app
        .gql(
            Some(&ada.token),
            "mutation { createRoom(name: \"third\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(error_code(&over), "FORBIDDEN", "{over}");

    let theirs = app.create_room(&grace, "theirs").await;
    let join = "mutation($r: ID!) { joinRoom(roomId: $r) { id } }";
    let over = app.gql(Some(&ada.token), join, json!({"r": theirs})).await;
    assert_eq!(error_code(&over), "FORBIDDEN", "{over}");
    // Joining a room again is no new membership.
    app.join(&ada, &first).await;

    let leave = "mutation($r: ID!) { leaveRoom(roomId: $r) }";
    app.data(Some(&ada.token), leave, json!({"r": first})).await;
    app.join(&ada, &theirs).await;
}
