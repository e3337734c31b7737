use serde_json::{Value, json};

use crate::helpers::{ROOM_EVENTS, TestApp, error_code};

fn kind(payload: &Value) -> &str {
    payload["data"]["roomEvents"]["__typename"]
        .as_str()
        .unwrap_or("<none>")
}

fn added_body(payload: &Value) -> &str {
    payload["data"]["roomEvents"]["message"]["body"]
        .as_str()
        .unwrap_or("<none>")
}

#[tokio::test]
async fn a_member_sees_messages_sent_by_another_member() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&ada, "lobby").await;
    app.join(&bob, &room).await;

    let mut ws = app.ws_as(&bob).await;
    ws.subscribe(
        "added",
        "subscription($r: ID!) { messageAdded(roomId: $r) { id body sender { username } } }",
        json!({"r": room}),
    )
    .await;
    ws.subscribe(
        "deleted",
        "subscription($r: ID!) { messageDeleted(roomId: $r) }",
        json!({"r": room}),
    )
    .await;
    assert!(ws.ping_pong().await.is_empty());

    let id = app.send(&ada, &room, "hi bob").await;
    let payload = ws.next_payload("added").await;
    assert_eq!(payload["data"]["messageAdded"]["body"], "hi bob");
    assert_eq!(payload["data"]["messageAdded"]["sender"]["username"], "ada");

    app.data(
        Some(&ada.token),
        "mutation($m: ID!) { deleteMessage(messageId: $m) }",
        json!({"m": id}),
    )
    .await;
    let payload = ws.next_payload("deleted").await;
    assert_eq!(payload["data"]["messageDeleted"], id.as_str());
}

#[tokio::test]
async fn room_events_carry_every_kind_of_event() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let cid = app.register("cid").await;
    let room = app.create_room(&ada, "lobby").await;
    app.join(&bob, &room).await;

    let mut ws = app.ws_as(&bob).await;
    ws.subscribe("events", ROOM_EVENTS, json!({"r": room}))
        .await;
    // A write answers once committed; its event may be published just after, so bob's own
    // join can still reach a subscription taken right after it. Nothing else may.
    for early in ws.ping_pong().await {
        assert_eq!(kind(&early["payload"]), "MemberJoined", "{early}");
    }

    let id = app.send(&ada, &room, "first").await;
    let added = ws.next_payload("events").await;
    assert_eq!(
        (kind(&added), added_body(&added)),
        ("MessageAdded", "first")
    );

    let edit = "mutation($m: ID!) { editMessage(messageId: $m, body: \"first!\") { id } }";
    app.data(Some(&ada.token), edit, json!({"m": id})).await;
    let edited = ws.next_payload("events").await;
    assert_eq!(kind(&edited), "MessageEdited");
    assert_eq!(edited["data"]["roomEvents"]["message"]["body"], "first!");
    assert!(edited["data"]["roomEvents"]["message"]["editedAt"].is_string());

    app.data(
        Some(&ada.token),
        "mutation($m: ID!) { deleteMessage(messageId: $m) }",
        json!({"m": id}),
    )
    .await;
    let deleted = ws.next_payload("events").await;
    assert_eq!(kind(&deleted), "MessageDeleted");
    assert_eq!(deleted["data"]["roomEvents"]["messageId"], id.as_str());

    app.join(&cid, &room).await;
    let joined = ws.next_payload("events").await;
    assert_eq!(kind(&joined), "MemberJoined");
    assert_eq!(joined["data"]["roomEvents"]["user"]["username"], "cid");

    app.data(
        Some(&cid.token),
        "mutation($r: ID!) { setTyping(roomId: $r, typing: true) }",
        json!({"r": room}),
    )
    .await;
    let typing = ws.next_payload("events").await;
    assert_eq!(kind(&typing), "Typing");
    assert_eq!(typing["data"]["roomEvents"]["typing"], true);

    app.data(
        Some(&cid.token),
        "mutation($r: ID!) { leaveRoom(roomId: $r) }",
        json!({"r": room}),
    )
    .await;
    let left = ws.next_payload("events").await;
    assert_eq!(kind(&left), "MemberLeft");
    assert_eq!(left["data"]["roomEvents"]["user"]["username"], "cid");
}

#[tokio::test]
async fn resuming_after_a_message_replays_the_rest_then_goes_live() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&ada, "lobby").await;
    app.join(&bob, &room).await;
    let seen = app.send(&ada, &room, "seen before the disconnect").await;
    let missed = app.send(&ada, &room, "missed").await;
    app.data(
        Some(&ada.token),
        "mutation($m: ID!) { deleteMessage(messageId: $m) }",
        json!({"m": missed}),
    )
    .await;
    app.send(&ada, &room, "also missed").await;

    let mut ws = app.ws_as(&bob).await;
    ws.subscribe("events", ROOM_EVENTS, json!({"r": room, "after": seen}))
        .await;
    let deleted = ws.next_payload("events").await;
    assert_eq!(
        kind(&deleted),
        "MessageDeleted",
        "a message deleted meanwhile replays as its deletion"
    );
    assert_eq!(deleted["data"]["roomEvents"]["messageId"], missed.as_str());
    let replayed = ws.next_payload("events").await;
    assert_eq!(added_body(&replayed), "also missed");

    app.send(&ada, &room, "live").await;
    assert_eq!(added_body(&ws.next_payload("events").await), "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_during_a_burst_has_no_gap_and_no_duplicate() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&ada, "lobby").await;
    app.join(&bob, &room).await;
    let start = app.send(&ada, &room, "start").await;
    let expected: Vec<String> = (0..60).map(|i| format!("burst {i}")).collect();
    for body in &expected[..20] {
        app.send(&ada, &room, body).await;
    }

    // The rest is sent while bob's subscription replays.
    let sender = {
        let (http, url, token, room) = (
            app.http.clone(),
            app.url("/graphql"),
            ada.token.clone(),
            room.clone(),
        );
        let rest = expected[20..].to_vec();
        tokio::spawn(async move {
            for body in rest {
                let response = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({
                        "query": "mutation($r: ID!, $b: String!) { sendMessage(roomId: $r, body: $b) { id } }",
                        "variables": {"r": room, "b": body}
                    }))
                    .send()
                    .await
                    .expect("send");
                assert!(response.status().is_success());
            }
        })
    };
    let mut ws = app.ws_as(&bob).await;
    ws.subscribe("events", ROOM_EVENTS, json!({"r": room, "after": start}))
        .await;
    let mut received = Vec::new();
    while received.len() < expected.len() {
        let payload = ws.next_payload("events").await;
        assert_eq!(kind(&payload), "MessageAdded", "{payload}");
        received.push(added_body(&payload).to_owned());
    }
    sender.await.expect("the sender finishes");
    assert_eq!(received, expected);
    // Nothing more is queued: the next thing bob gets is a new message, not a duplicate.
    app.send(&ada, &room, "after the burst").await;
    assert_eq!(
        added_body(&ws.next_payload("events").await),
        "after the burst"
    );
}

#[tokio::test]
async fn only_members_may_subscribe_and_leaving_ends_the_subscription() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&ada, "lobby").await;

    let mut ws = app.ws_as(&bob).await;
    ws.subscribe("events", ROOM_EVENTS, json!({"r": room}))
        .await;
    let refused = ws.recv().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["id"], "events");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "FORBIDDEN");
    // `error` ends the operation: no `complete` follows.
    assert!(ws.ping_pong().await.is_empty());

    app.join(&bob, &room).await;
    ws.subscribe("events", ROOM_EVENTS, json!({"r": room}))
        .await;
    assert!(ws.ping_pong().await.is_empty());
    app.data(
        Some(&bob.token),
        "mutation($r: ID!) { leaveRoom(roomId: $r) }",
        json!({"r": room}),
    )
    .await;
    assert_eq!(kind(&ws.next_payload("events").await), "MemberLeft");
    let complete = ws.recv().await;
    assert_eq!(
        (complete["type"].as_str(), complete["id"].as_str()),
        (Some("complete"), Some("events"))
    );

    let body = app
        .gql(
            Some(&bob.token),
            "mutation($r: ID!) { setTyping(roomId: $r, typing: false) }",
            json!({"r": room}),
        )
        .await;
    assert_eq!(error_code(&body), "FORBIDDEN");
}

#[tokio::test]
async fn resuming_from_a_message_of_another_room_is_refused() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let lobby = app.create_room(&ada, "lobby").await;
    let other = app.create_room(&ada, "other").await;
    let foreign = app.send(&ada, &other, "elsewhere").await;
    let mut ws = app.ws_as(&ada).await;
    ws.subscribe("events", ROOM_EVENTS, json!({"r": lobby, "after": foreign}))
        .await;
    let refused = ws.recv().await;
    assert_eq!(refused["type"], "error");
    assert_eq!(
        refused["payload"][0]["extensions"]["code"],
        "BAD_USER_INPUT"
    );
    assert_eq!(refused["payload"][0]["extensions"]["field"], "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_rendered_once_for_every_subscriber_of_one_operation() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let room = app.create_room(&ada, "lobby").await;
    let first = app.send(&ada, &room, "first").await;
    app.send(&ada, &room, "before").await;
    // Four subscribers of one operation: different users, different sockets, and starting
    // points (`after` changes where a feed starts, not how an event looks). A fifth asks for
    // other fields, and gets its own rendering.
    let mut users = Vec::new();
    for i in 0..4 {
        let user = app.register(&format!("user{i}")).await;
        app.join(&user, &room).await;
        users.push(user);
    }
    let mut sockets = Vec::new();
    for (user, after) in users.iter().zip([None, Some(&first), None, Some(&first)]) {
        let mut ws = app.ws_as(user).await;
        ws.subscribe("events", ROOM_EVENTS, json!({"r": room, "after": after}))
            .await;
        if after.is_some() {
            // Replayed, so the replay is over before anything below is sent.
            assert_eq!(added_body(&ws.next_payload("events").await), "before");
        }
        assert!(ws.ping_pong().await.is_empty());
        sockets.push(ws);
    }
    let mut other = app.ws_as(&ada).await;
    other
        .subscribe(
            "bodies",
            "subscription($r: ID!) { roomEvents(roomId: $r) { ... on MessageAdded { message { body } } } }",
            json!({"r": room}),
        )
        .await;
    assert!(other.ping_pong().await.is_empty());
    let (renders, deliveries) = (
        app.metric("confab_event_renders_total").await,
        app.metric("confab_event_deliveries_total").await,
    );

    let id = app.send(&ada, &room, "for everyone").await;
    for ws in &mut sockets {
        let payload = ws.next_payload("events").await;
        assert_eq!(kind(&payload), "MessageAdded");
        assert_eq!(payload["data"]["roomEvents"]["message"]["id"], id.as_str());
        assert_eq!(added_body(&payload), "for everyone");
        assert_eq!(
            payload["data"]["roomEvents"]["message"]["sender"]["username"],
            "ada"
        );
    }
    let payload = other.next_payload("bodies").await;
    assert_eq!(
        payload,
        json!({"data": {"roomEvents": {"message": {"body": "for everyone"}}}})
    );
    assert_eq!(
        app.metric("confab_event_deliveries_total").await - deliveries,
        5
    );
    assert_eq!(
        app.metric("confab_event_renders_total").await - renders,
        2,
        "one rendering per distinct operation"
    );
}

/// One operation, two subscribers: most of an event renders once for both, but a field whose
/// value depends on who asks (`Room.myRole`) must be each subscriber's own.
#[tokio::test]
async fn a_field_that_depends_on_the_caller_is_rendered_for_each_subscriber() {
    const UPDATED: &str = "subscription($r: ID!) { roomEvents(roomId: $r) {
        __typename ... on RoomUpdated { room { topic myRole } } } }";
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let room = app.create_room(&ada, "lobby").await;
    app.join(&bob, &room).await;
    let mut owner = app.ws_as(&ada).await;
    let mut member = app.ws_as(&bob).await;
    for ws in [&mut owner, &mut member] {
        ws.subscribe("updates", UPDATED, json!({"r": room})).await;
        ws.ping_pong().await;
    }
    app.data(
        Some(&ada.token),
        r#"mutation($r: ID!) { updateRoom(roomId: $r, topic: "news") { id } }"#,
        json!({"r": room}),
    )
    .await;
    for (ws, role) in [(&mut owner, "OWNER"), (&mut member, "MEMBER")] {
        // Bob's join may be published after his subscription started (see above).
        let mut payload = ws.next_payload("updates").await;
        while kind(&payload) == "MemberJoined" {
            payload = ws.next_payload("updates").await;
        }
        let seen = &payload["data"]["roomEvents"]["room"];
        assert_eq!(
            (seen["topic"].as_str(), seen["myRole"].as_str()),
            (Some("news"), Some(role)),
            "{payload}"
        );
    }
}
