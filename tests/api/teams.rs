//! Rooms for teams, black-box: private rooms no outsider can tell from a missing one on any
//! transport, invitations, direct rooms, roles and who may act on whom, kicks and bans that end
//! the removed member's subscriptions (on another instance too), and the moderation log.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::{
    helpers::{Session, SocketIo, TestApp, WsClient, error_code, error_field},
    instances::{Cluster, cluster},
};

const PASSWORD: &str = "correct horse battery";

const CREATE: &str = "mutation($n: String!, $v: RoomVisibility!, $t: String) {
    createRoom(name: $n, visibility: $v, topic: $t) { id name visibility topic isDirect myRole } }";
const ROOM: &str = "query($r: ID!) { room(id: $r) {
    id name visibility topic isDirect myRole memberCount } }";
const MEMBERS: &str = "query($r: ID!) { room(id: $r) { members { username } } }";
const MEMBERSHIPS: &str = "query($r: ID!, $first: Int, $after: String) { room(id: $r) {
    memberships(first: $first, after: $after) {
        edges { cursor node { user { id username } role joinedAt } }
        pageInfo { hasNextPage endCursor } } } }";
const DIRECTORY: &str = "{ rooms(first: 100) { edges { node { id } } } }";
const MY_ROOMS: &str = "{ myRooms(first: 100) { edges { node { id name isDirect } } } }";
const JOIN: &str = "mutation($r: ID!) { joinRoom(roomId: $r) { id } }";
const LEAVE: &str = "mutation($r: ID!) { leaveRoom(roomId: $r) }";
const SEND: &str = "mutation($r: ID!) { sendMessage(roomId: $r, body: \"let me in\") { id } }";
const MESSAGES: &str = "query($r: ID!) { messages(roomId: $r) { edges { node { body } } } }";
const TYPING: &str = "mutation($r: ID!) { setTyping(roomId: $r, typing: true) }";
const EDIT: &str = "mutation($m: ID!) { editMessage(messageId: $m, body: \"changed\") { id } }";
const DELETE: &str = "mutation($m: ID!) { deleteMessage(messageId: $m) }";
const INVITE: &str = "mutation($r: ID!, $u: ID!) { inviteToRoom(roomId: $r, userId: $u) {
    room { id name visibility myRole } inviter { username } createdAt } }";
const INVITATIONS: &str = "{ invitations { room { id name } inviter { username } createdAt } }";
const DECLINE: &str = "mutation($r: ID!) { declineInvitation(roomId: $r) }";
const DIRECT: &str = "mutation($u: ID!) { directRoom(userId: $u) {
    id name isDirect visibility myRole topic } }";
const SET_ROLE: &str = "mutation($r: ID!, $u: ID!, $role: RoomRole!) {
    setMemberRole(roomId: $r, userId: $u, role: $role) { user { username } role joinedAt } }";
const KICK: &str = "mutation($r: ID!, $u: ID!) { kickMember(roomId: $r, userId: $u) }";
const BAN: &str =
    "mutation($r: ID!, $u: ID!, $why: String) { banMember(roomId: $r, userId: $u, reason: $why) }";
const UNBAN: &str = "mutation($r: ID!, $u: ID!) { unbanMember(roomId: $r, userId: $u) }";
const UPDATE: &str = "mutation($r: ID!, $n: String, $t: String, $v: RoomVisibility) {
    updateRoom(roomId: $r, name: $n, topic: $t, visibility: $v) { id name topic visibility } }";
const LOG: &str = "query($r: ID!, $first: Int, $after: String) {
    moderationLog(roomId: $r, first: $first, after: $after) {
        edges { cursor node { id action actor { username } target { username } message reason createdAt } }
        pageInfo { hasNextPage endCursor } } }";
const DELETE_ACCOUNT: &str = "mutation($p: String!) { deleteAccount(password: $p) }";

/// Every kind of room event, with what says who did what.
const EVENTS: &str = "subscription($r: ID!) { roomEvents(roomId: $r) {
    __typename
    ... on MessageAdded { message { id body } }
    ... on MessageDeleted { messageId roomId deletedBy { username } }
    ... on MemberJoined { user { username } roomId }
    ... on MemberLeft { user { username } roomId }
    ... on MemberRoleChanged { user { username } roomId role }
    ... on MemberKicked { user { username } roomId by { username } }
    ... on MemberBanned { user { username } roomId by { username } reason }
    ... on RoomUpdated { room { id name topic visibility } }
} }";
const ADDED: &str = "subscription($r: ID!) { messageAdded(roomId: $r) { body } }";

/// A room id no room has.
const NO_ROOM: &str = "0123456789abcdef01234567";

/// The error code of a refused request (failing when it was not refused).
async fn code(app: &TestApp, user: &Session, query: &str, variables: Value) -> String {
    let body = app.gql(Some(&user.token), query, variables).await;
    assert!(body["errors"].is_array(), "expected a refusal: {body}");
    error_code(&body).to_owned()
}

async fn create(app: &TestApp, owner: &Session, name: &str, visibility: &str) -> String {
    let data = app
        .data(
            Some(&owner.token),
            CREATE,
            json!({"n": name, "v": visibility}),
        )
        .await;
    data["createRoom"]["id"]
        .as_str()
        .expect("a room id")
        .to_owned()
}

async fn room(app: &TestApp, viewer: &Session, room: &str) -> Value {
    app.data(Some(&viewer.token), ROOM, json!({"r": room}))
        .await["room"]
        .clone()
}

async fn my_role(app: &TestApp, viewer: &Session, id: &str) -> Value {
    room(app, viewer, id).await["myRole"].clone()
}

async fn invite(app: &TestApp, by: &Session, room: &str, user: &Session) -> Value {
    app.data(Some(&by.token), INVITE, json!({"r": room, "u": user.id}))
        .await["inviteToRoom"]
        .clone()
}

/// `updateRoom` of `room` with `fields` (`n` name, `t` topic, `v` visibility): the whole body.
async fn update(app: &TestApp, by: &Session, room: &str, fields: Value) -> Value {
    let mut variables = json!({"r": room});
    if let (Some(all), Value::Object(fields)) = (variables.as_object_mut(), fields) {
        all.extend(fields);
    }
    app.gql(Some(&by.token), UPDATE, variables).await
}

/// `deleteMessage`: the whole body.
async fn delete(app: &TestApp, user: &Session, message: &str) -> Value {
    app.gql(Some(&user.token), DELETE, json!({"m": message}))
        .await
}

/// The direct room of `from` and `to`, as `from` sees it.
async fn direct(app: &TestApp, from: &Session, to: &Session) -> Value {
    app.data(Some(&from.token), DIRECT, json!({"u": to.id}))
        .await["directRoom"]
        .clone()
}

async fn set_role(app: &TestApp, owner: &Session, room: &str, user: &Session, role: &str) -> Value {
    app.data(
        Some(&owner.token),
        SET_ROLE,
        json!({"r": room, "u": user.id, "role": role}),
    )
    .await["setMemberRole"]
        .clone()
}

/// The variables of `KICK`, `BAN` (with the reason "spam") or `UNBAN`.
fn target(query: &str, room: &str, user: &str) -> Value {
    match query {
        BAN => json!({"r": room, "u": user, "why": "spam"}),
        _ => json!({"r": room, "u": user}),
    }
}

/// What a moderation mutation (`KICK`, `BAN`, `UNBAN`) answered.
async fn moderate(app: &TestApp, by: &Session, query: &str, room: &str, user: &Session) -> bool {
    let data = app
        .data(Some(&by.token), query, target(query, room, &user.id))
        .await;
    data.as_object()
        .and_then(|fields| fields.values().next())
        .and_then(Value::as_bool)
        .expect("a Boolean answer")
}

/// Each member's username and role, in the order they joined.
async fn roles(app: &TestApp, viewer: &Session, room: &str) -> Vec<(String, String)> {
    let data = app
        .data(Some(&viewer.token), MEMBERSHIPS, json!({"r": room}))
        .await;
    data["room"]["memberships"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            let node = &e["node"];
            (
                node["user"]["username"].as_str().unwrap_or("?").to_owned(),
                node["role"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

fn ids(connection: &Value) -> Vec<String> {
    connection["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["id"].as_str().expect("an id").to_owned())
        .collect()
}

fn bodies(data: &Value) -> Vec<String> {
    data["messages"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["node"]["body"].as_str().expect("a body").to_owned())
        .collect()
}

/// A room with one member of each standing: ada OWNER (its creator), bob and cid ADMIN, dan
/// and eve MEMBER, who joined in that order.
struct Team {
    room: String,
    ada: Session,
    bob: Session,
    cid: Session,
    dan: Session,
    eve: Session,
}

async fn team(app: &TestApp, visibility: &str) -> Team {
    let ada = app.register("ada").await;
    let room = create(app, &ada, "team", visibility).await;
    let mut others = Vec::new();
    for name in ["bob", "cid", "dan", "eve"] {
        let user = app.register(name).await;
        if visibility == "PRIVATE" {
            invite(app, &ada, &room, &user).await;
        }
        app.join(&user, &room).await;
        others.push(user);
    }
    let [bob, cid, dan, eve] = <[Session; 4]>::try_from(others).ok().expect("four members");
    for admin in [&bob, &cid] {
        set_role(app, &ada, &room, admin, "ADMIN").await;
    }
    Team {
        room,
        ada,
        bob,
        cid,
        dan,
        eve,
    }
}

/// A room event in a few words: `kicked bob by ada`, `role cid OWNER`, `added hello`…
fn describe(payload: &Value) -> String {
    let e = &payload["data"]["roomEvents"];
    let user = s(&e["user"]["username"]);
    match e["__typename"].as_str().unwrap_or("<none>") {
        "MessageAdded" => format!("added {}", s(&e["message"]["body"])),
        "MessageDeleted" => format!(
            "deleted {} by {}",
            s(&e["messageId"]),
            s(&e["deletedBy"]["username"])
        ),
        "MemberJoined" => format!("joined {user}"),
        "MemberLeft" => format!("left {user}"),
        "MemberRoleChanged" => format!("role {user} {}", s(&e["role"])),
        "MemberKicked" => format!("kicked {user} by {}", s(&e["by"]["username"])),
        "MemberBanned" => format!(
            "banned {user} by {}: {}",
            s(&e["by"]["username"]),
            s(&e["reason"])
        ),
        "RoomUpdated" => format!(
            "updated {} / {} / {}",
            s(&e["room"]["name"]),
            s(&e["room"]["topic"]),
            s(&e["room"]["visibility"])
        ),
        other => format!("{other}: {payload}"),
    }
}

/// A graphql-ws client of `user`, subscribed to `room`'s events as `events`, live.
async fn watching(app: &TestApp, user: &Session, room: &str) -> WsClient {
    let mut ws = app.ws_as(user).await;
    ws.subscribe("events", EVENTS, json!({"r": room})).await;
    // A write answers once committed and is published just after: a join made just before
    // may still arrive. Nothing else may.
    for early in ws.ping_pong().await {
        let kind = &early["payload"]["data"]["roomEvents"]["__typename"];
        assert_eq!(kind, "MemberJoined", "{early}");
    }
    ws
}

/// The next event of the `events` subscription, described.
async fn next_event(ws: &mut WsClient) -> String {
    describe(&ws.next_payload("events").await)
}

/// A graphql-ws client of `user` with two subscriptions to `room` under way, `events`
/// (`roomEvents`) and `added` (`messageAdded`): each has delivered a message `sender` sent, so
/// what ends them later ends operations that were running, not ones refused at their start.
async fn under_way(app: &TestApp, user: &Session, room: &str, sender: &Session) -> WsClient {
    let mut ws = app.ws_as(user).await;
    ws.subscribe("events", EVENTS, json!({"r": room})).await;
    ws.subscribe("added", ADDED, json!({"r": room})).await;
    // Both live before the message; a join made just before may still arrive (see `watching`).
    for early in ws.ping_pong().await {
        let kind = &early["payload"]["data"]["roomEvents"]["__typename"];
        assert_eq!(kind, "MemberJoined", "{early}");
    }
    app.send(sender, room, "before").await;
    let mut heard = Vec::new();
    while heard.len() < 2 {
        let frame = ws.recv().await;
        assert_eq!(frame["type"], "next", "{frame}");
        let payload = &frame["payload"];
        if payload["data"]["roomEvents"]["__typename"] == "MemberJoined" {
            continue; // a join made just before may still arrive (see `watching`)
        }
        heard.push(match frame["id"].as_str() {
            Some("events") => ("events", describe(payload)),
            _ => ("added", s(&payload["data"]["messageAdded"]["body"])),
        });
    }
    heard.sort();
    assert_eq!(
        heard,
        [
            ("added", "before".to_owned()),
            ("events", "added before".to_owned())
        ]
    );
    ws
}

fn s(value: &Value) -> String {
    value.as_str().unwrap_or("-").to_owned()
}

/// Expects `error` frames ending each of `ids` with `FORBIDDEN` (in any order, after whatever
/// `next` frames precede them), then nothing more: no `complete`. Returns the events seen
/// before each one's error, described.
async fn ended_forbidden(ws: &mut WsClient, ids: &[&str]) -> Vec<String> {
    let mut pending: Vec<&str> = ids.to_vec();
    let mut seen = Vec::new();
    while !pending.is_empty() {
        let frame = ws.recv().await;
        let id = frame["id"].as_str().unwrap_or("<none>");
        assert!(pending.contains(&id), "after its end, {id} got {frame}");
        match frame["type"].as_str() {
            Some("next") => seen.push(describe(&frame["payload"])),
            Some("error") => {
                assert_eq!(
                    frame["payload"][0]["extensions"]["code"], "FORBIDDEN",
                    "{frame}"
                );
                pending.retain(|p| *p != id);
            }
            _ => panic!("expected an error ending {id}, got {frame}"),
        }
    }
    // `error` ends an operation: no `complete` follows, and nothing else.
    assert_eq!(ws.ping_pong().await, Vec::<Value>::new());
    seen
}

// ---------------------------------------------------------------------------------------------
// Visibility

#[tokio::test]
async fn a_private_room_is_refused_to_outsiders_exactly_as_a_missing_room() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let eve = app.register("eve").await;
    let created = app
        .data(
            Some(&ada.token),
            CREATE,
            json!({"n": "secret", "v": "PRIVATE", "t": "plans"}),
        )
        .await;
    assert_eq!(
        created["createRoom"],
        json!({"id": created["createRoom"]["id"], "name": "secret", "visibility": "PRIVATE",
               "topic": "plans", "isDirect": false, "myRole": "OWNER"})
    );
    let secret = created["createRoom"]["id"].as_str().unwrap().to_owned();
    let lobby = create(&app, &ada, "lobby", "PUBLIC").await;
    let said = app.send(&ada, &secret, "for members").await;

    assert!(room(&app, &eve, &secret).await.is_null());
    // Each refusal is the one a room that does not exist gets, message and all.
    for (query, variables, missing) in [
        (MESSAGES, json!({"r": secret}), json!({"r": NO_ROOM})),
        (SEND, json!({"r": secret}), json!({"r": NO_ROOM})),
        (JOIN, json!({"r": secret}), json!({"r": NO_ROOM})),
        (TYPING, json!({"r": secret}), json!({"r": NO_ROOM})),
        (
            INVITE,
            json!({"r": secret, "u": eve.id}),
            json!({"r": NO_ROOM, "u": eve.id}),
        ),
        (LOG, json!({"r": secret}), json!({"r": NO_ROOM})),
        (
            KICK,
            json!({"r": secret, "u": ada.id}),
            json!({"r": NO_ROOM, "u": ada.id}),
        ),
    ] {
        let refused = app.gql(Some(&eve.token), query, variables).await;
        let absent = app.gql(Some(&eve.token), query, missing).await;
        assert_eq!(error_code(&refused), "NOT_FOUND", "{query}: {refused}");
        assert_eq!(
            refused["errors"][0]["message"], absent["errors"][0]["message"],
            "{query}"
        );
    }
    for query in [EDIT, DELETE] {
        assert_eq!(
            code(&app, &eve, query, json!({"m": said})).await,
            "NOT_FOUND"
        );
    }
    let mut ws = app.ws_as(&eve).await;
    ws.subscribe("events", EVENTS, json!({"r": secret})).await;
    let refused = ws.recv().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "NOT_FOUND");

    // The directory lists public rooms only, to its owner too; their own rooms list both.
    for viewer in [&ada, &eve] {
        let directory = app.data(Some(&viewer.token), DIRECTORY, json!({})).await;
        assert_eq!(ids(&directory["rooms"]), [lobby.as_str()]);
    }
    let mine = app.data(Some(&ada.token), MY_ROOMS, json!({})).await;
    assert_eq!(ids(&mine["myRooms"]), [secret.as_str(), &lobby]);
    let theirs = app.data(Some(&eve.token), MY_ROOMS, json!({})).await;
    assert_eq!(ids(&theirs["myRooms"]), Vec::<String>::new());
}

#[tokio::test]
async fn the_members_of_a_public_room_are_listed_to_anyone_of_a_private_one_to_members() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let lobby = create(&app, &ada, "lobby", "PUBLIC").await;
    let secret = create(&app, &ada, "secret", "PRIVATE").await;
    let public = app
        .data(Some(&bob.token), MEMBERS, json!({"r": lobby}))
        .await;
    assert_eq!(public["room"]["members"], json!([{"username": "ada"}]));
    assert_eq!(roles(&app, &bob, &lobby).await, pairs(&[("ada", "OWNER")]));
    assert!(my_role(&app, &bob, &lobby).await.is_null());

    // Invited, bob sees the private room but neither its members nor its history.
    invite(&app, &ada, &secret, &bob).await;
    for query in [MEMBERS, MEMBERSHIPS, MESSAGES] {
        assert_eq!(
            code(&app, &bob, query, json!({"r": secret})).await,
            "FORBIDDEN",
            "{query}"
        );
    }
    app.join(&bob, &secret).await;
    let private = app
        .data(Some(&bob.token), MEMBERS, json!({"r": secret}))
        .await;
    assert_eq!(
        private["room"]["members"],
        json!([{"username": "ada"}, {"username": "bob"}])
    );
}

// ---------------------------------------------------------------------------------------------
// Invitations

#[tokio::test]
async fn an_invitation_shows_the_room_and_joining_spends_it() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let secret = create(&app, &ada, "secret", "PRIVATE").await;
    let other = create(&app, &ada, "other", "PRIVATE").await;

    let first = invite(&app, &ada, &secret, &bob).await;
    assert_eq!(first["room"]["id"], secret.as_str());
    assert_eq!(first["room"]["name"], "secret");
    assert_eq!(first["inviter"]["username"], "ada");
    // Inviting again keeps the one invitation, as it was.
    let again = invite(&app, &ada, &secret, &bob).await;
    assert_eq!(again["createdAt"], first["createdAt"]);
    invite(&app, &ada, &other, &bob).await;
    let waiting = app.data(Some(&bob.token), INVITATIONS, json!({})).await;
    let rooms: Vec<&Value> = waiting["invitations"]
        .as_array()
        .expect("invitations")
        .iter()
        .map(|i| &i["room"]["id"])
        .collect();
    assert_eq!(rooms, [&json!(other), &json!(secret)], "newest first");

    let seen = room(&app, &bob, &secret).await;
    assert_eq!(seen["name"], "secret");
    assert!(seen["myRole"].is_null(), "invited is not a member: {seen}");
    app.join(&bob, &secret).await;
    assert_eq!(my_role(&app, &bob, &secret).await, "MEMBER");
    let waiting = app.data(Some(&bob.token), INVITATIONS, json!({})).await;
    assert_eq!(waiting["invitations"].as_array().map(Vec::len), Some(1));
    assert_eq!(waiting["invitations"][0]["room"]["id"], other.as_str());
    let mine = app.data(Some(&bob.token), MY_ROOMS, json!({})).await;
    assert_eq!(ids(&mine["myRooms"]), [secret.as_str()]);

    // A member who leaves a private room needs a new invitation to come back.
    app.data(Some(&bob.token), LEAVE, json!({"r": secret}))
        .await;
    assert!(room(&app, &bob, &secret).await.is_null());
    assert_eq!(
        code(&app, &bob, JOIN, json!({"r": secret})).await,
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn a_declined_invitation_hides_the_room_again() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let secret = create(&app, &ada, "secret", "PRIVATE").await;
    invite(&app, &ada, &secret, &bob).await;
    for declined in [true, false] {
        let data = app
            .data(Some(&bob.token), DECLINE, json!({"r": secret}))
            .await;
        assert_eq!(data["declineInvitation"], declined);
    }
    let waiting = app.data(Some(&bob.token), INVITATIONS, json!({})).await;
    assert_eq!(waiting["invitations"], json!([]));
    assert!(room(&app, &bob, &secret).await.is_null());
    assert_eq!(
        code(&app, &bob, JOIN, json!({"r": secret})).await,
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn who_may_invite_whom() {
    let app = TestApp::spawn().await;
    let t = team(&app, "PRIVATE").await;
    let (fay, gus) = (app.register("fay").await, app.register("gus").await);

    // A private room: its owner and admins invite, a member does not.
    assert_eq!(
        code(&app, &t.dan, INVITE, json!({"r": t.room, "u": fay.id})).await,
        "FORBIDDEN"
    );
    invite(&app, &t.bob, &t.room, &fay).await;
    invite(&app, &t.ada, &t.room, &gus).await;
    // Never a member, nor oneself, nor someone who is not there.
    let body = app
        .gql(
            Some(&t.bob.token),
            INVITE,
            json!({"r": t.room, "u": t.eve.id}),
        )
        .await;
    assert_eq!(
        (error_code(&body), error_field(&body)),
        ("CONFLICT", "userId")
    );
    let body = app
        .gql(
            Some(&t.bob.token),
            INVITE,
            json!({"r": t.room, "u": t.bob.id}),
        )
        .await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(
        code(&app, &t.bob, INVITE, json!({"r": t.room, "u": NO_ROOM})).await,
        "NOT_FOUND"
    );

    // A banned user is not invited until unbanned (and the ban spent their invitation).
    assert!(moderate(&app, &t.ada, BAN, &t.room, &fay).await);
    assert!(room(&app, &fay, &t.room).await.is_null());
    assert_eq!(
        code(&app, &t.bob, INVITE, json!({"r": t.room, "u": fay.id})).await,
        "FORBIDDEN"
    );
    assert!(moderate(&app, &t.ada, UNBAN, &t.room, &fay).await);
    invite(&app, &t.bob, &t.room, &fay).await;
    app.join(&fay, &t.room).await;

    // A public room needs no invitation: nobody sends one, not even its owner (so none can
    // outlive its turning private).
    let lobby = create(&app, &t.ada, "lobby", "PUBLIC").await;
    let body = app
        .gql(Some(&t.ada.token), INVITE, json!({"r": lobby, "u": fay.id}))
        .await;
    assert_eq!(
        (error_code(&body), error_field(&body)),
        ("BAD_USER_INPUT", "roomId"),
        "{body}"
    );
}

#[tokio::test]
async fn at_most_200_invitations_wait_for_one_user() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let mut rooms = Vec::new();
    for i in 0..=200 {
        let room = create(&app, &ada, &format!("room {i}"), "PRIVATE").await;
        rooms.push(room);
    }
    for room in &rooms[..200] {
        invite(&app, &ada, room, &bob).await;
    }
    let over = json!({"r": rooms[200], "u": bob.id});
    assert_eq!(code(&app, &ada, INVITE, over.clone()).await, "RATE_LIMITED");
    // Inviting again to a room they are invited to is no new invitation.
    invite(&app, &ada, &rooms[0], &bob).await;
    let waiting = app.data(Some(&bob.token), INVITATIONS, json!({})).await;
    assert_eq!(waiting["invitations"].as_array().map(Vec::len), Some(200));
    // Declining one makes room for another.
    app.data(Some(&bob.token), DECLINE, json!({"r": rooms[0]}))
        .await;
    app.data(Some(&ada.token), INVITE, over).await;
}

// ---------------------------------------------------------------------------------------------
// Direct rooms

#[tokio::test]
async fn a_direct_room_is_one_per_pair_named_for_the_other_and_theirs_alone() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bob = app.register("bob").await;
    let eve = app.register("eve").await;
    let from_ada = direct(&app, &ada, &bob).await.clone();
    let id = from_ada["id"].as_str().unwrap().to_owned();
    assert_eq!(
        from_ada,
        json!({"id": id, "name": "bob", "isDirect": true, "visibility": "PRIVATE",
               "myRole": "MEMBER", "topic": null})
    );
    assert_eq!(direct(&app, &ada, &bob).await["id"], id.as_str());
    let from_bob = direct(&app, &bob, &ada).await.clone();
    assert_eq!(
        (&from_bob["id"], &from_bob["name"]),
        (&json!(id), &json!("ada"))
    );
    assert_eq!(room(&app, &ada, &id).await["name"], "bob");
    assert_eq!(room(&app, &bob, &id).await["name"], "ada");
    let mine = app.data(Some(&bob.token), MY_ROOMS, json!({})).await;
    assert_eq!(
        mine["myRooms"]["edges"],
        json!([{"node": {"id": id, "name": "ada", "isDirect": true}}])
    );
    // Both are plain members: nobody moderates a direct room.
    assert_eq!(
        roles(&app, &ada, &id).await,
        pairs(&[("ada", "MEMBER"), ("bob", "MEMBER")])
    );
    assert_eq!(
        code(&app, &ada, KICK, json!({"r": id, "u": bob.id})).await,
        "FORBIDDEN"
    );

    // Nobody else sees it, joins it or is invited to it.
    assert!(room(&app, &eve, &id).await.is_null());
    for query in [JOIN, MESSAGES, SEND] {
        assert_eq!(code(&app, &eve, query, json!({"r": id})).await, "NOT_FOUND");
    }
    assert_eq!(
        code(&app, &ada, INVITE, json!({"r": id, "u": eve.id})).await,
        "FORBIDDEN"
    );
    let directory = app.data(Some(&ada.token), DIRECTORY, json!({})).await;
    assert_eq!(ids(&directory["rooms"]), Vec::<String>::new());

    // Not with oneself, nor with nobody.
    let body = app
        .gql(Some(&ada.token), DIRECT, json!({"u": ada.id}))
        .await;
    assert_eq!(
        (error_code(&body), error_field(&body)),
        ("BAD_USER_INPUT", "userId")
    );
    assert_eq!(
        code(&app, &ada, DIRECT, json!({"u": NO_ROOM})).await,
        "NOT_FOUND"
    );
    let zed = app.register("zed").await;
    app.data(Some(&zed.token), DELETE_ACCOUNT, json!({"p": PASSWORD}))
        .await;
    assert_eq!(
        code(&app, &ada, DIRECT, json!({"u": zed.id})).await,
        "NOT_FOUND"
    );

    // It takes no room name: a room may be called like either of them.
    create(&app, &ada, "bob", "PUBLIC").await;
    create(&app, &bob, "ada", "PUBLIC").await;
    assert_ne!(direct(&app, &ada, &eve).await["id"], id.as_str());

    // Asking again brings back the one who asks, never the other.
    app.data(Some(&bob.token), LEAVE, json!({"r": id})).await;
    assert_eq!(direct(&app, &ada, &bob).await["id"], id.as_str());
    assert!(room(&app, &bob, &id).await.is_null());
    assert_eq!(direct(&app, &bob, &ada).await["id"], id.as_str());
    assert_eq!(my_role(&app, &bob, &id).await, "MEMBER");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_rooms_asked_for_from_both_sides_at_once_are_one_room() {
    let app = TestApp::spawn().await;
    for pair in 0..4 {
        let a = app.register(&format!("ann{pair}")).await;
        let b = app.register(&format!("ben{pair}")).await;
        let (from_a, from_b) = tokio::join!(
            app.data(Some(&a.token), DIRECT, json!({"u": b.id})),
            app.data(Some(&b.token), DIRECT, json!({"u": a.id})),
        );
        assert_eq!(
            from_a["directRoom"]["id"], from_b["directRoom"]["id"],
            "pair {pair}"
        );
        for user in [&a, &b] {
            let mine = app.data(Some(&user.token), MY_ROOMS, json!({})).await;
            assert_eq!(
                ids(&mine["myRooms"]),
                [from_a["directRoom"]["id"].as_str().unwrap().to_owned()]
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Roles

#[tokio::test]
async fn memberships_carry_roles_in_join_order_and_page() {
    let app = TestApp::spawn().await;
    let t = team(&app, "PUBLIC").await;
    assert_eq!(
        roles(&app, &t.eve, &t.room).await,
        pairs(&[
            ("ada", "OWNER"),
            ("bob", "ADMIN"),
            ("cid", "ADMIN"),
            ("dan", "MEMBER"),
            ("eve", "MEMBER"),
        ])
    );
    let page = |after: Value| {
        app.data(
            Some(&t.ada.token),
            MEMBERSHIPS,
            json!({"r": t.room, "first": 2, "after": after}),
        )
    };
    let first = page(Value::Null).await["room"]["memberships"].clone();
    assert_eq!(first["pageInfo"]["hasNextPage"], true);
    assert_eq!(first["edges"][1]["cursor"], t.bob.id.as_str());
    let second = page(first["pageInfo"]["endCursor"].clone()).await["room"]["memberships"].clone();
    let names: Vec<&Value> = second["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"]["user"]["username"])
        .collect();
    assert_eq!(names, [&json!("cid"), &json!("dan")]);
    let third = page(second["pageInfo"]["endCursor"].clone()).await["room"]["memberships"].clone();
    assert_eq!(third["edges"][0]["node"]["user"]["username"], "eve");
    assert_eq!(third["pageInfo"]["hasNextPage"], false);
    let joined: Vec<&str> = [&first, &second, &third]
        .iter()
        .flat_map(|p| p["edges"].as_array().unwrap())
        .map(|e| e["node"]["joinedAt"].as_str().expect("joinedAt"))
        .collect();
    let mut sorted = joined.clone();
    sorted.sort_unstable();
    assert_eq!(joined, sorted, "join order");

    assert_eq!(my_role(&app, &t.ada, &t.room).await, "OWNER");
    assert_eq!(my_role(&app, &t.bob, &t.room).await, "ADMIN");
    assert_eq!(my_role(&app, &t.dan, &t.room).await, "MEMBER");
    let outsider = app.register("fay").await;
    assert!(my_role(&app, &outsider, &t.room).await.is_null());

    let body = app
        .gql(
            Some(&t.ada.token),
            MEMBERSHIPS,
            json!({"r": t.room, "first": 101}),
        )
        .await;
    assert_eq!(
        (error_code(&body), error_field(&body)),
        ("BAD_USER_INPUT", "first")
    );
}

#[tokio::test]
async fn only_the_owner_sets_roles_and_handing_over_makes_them_an_admin() {
    let app = TestApp::spawn().await;
    let t = team(&app, "PUBLIC").await;
    let fay = app.register("fay").await;
    assert_eq!(
        code(
            &app,
            &t.bob,
            SET_ROLE,
            json!({"r": t.room, "u": t.dan.id, "role": "ADMIN"})
        )
        .await,
        "FORBIDDEN"
    );
    assert_eq!(
        code(
            &app,
            &t.dan,
            SET_ROLE,
            json!({"r": t.room, "u": t.eve.id, "role": "ADMIN"})
        )
        .await,
        "FORBIDDEN"
    );
    assert_eq!(
        code(
            &app,
            &t.ada,
            SET_ROLE,
            json!({"r": t.room, "u": fay.id, "role": "ADMIN"})
        )
        .await,
        "NOT_FOUND"
    );
    let own = app
        .gql(
            Some(&t.ada.token),
            SET_ROLE,
            json!({"r": t.room, "u": t.ada.id, "role": "MEMBER"}),
        )
        .await;
    assert_eq!(error_code(&own), "BAD_USER_INPUT", "{own}");

    let demoted = set_role(&app, &t.ada, &t.room, &t.cid, "MEMBER").await;
    assert_eq!(demoted["role"], "MEMBER");
    assert_eq!(demoted["user"]["username"], "cid");
    assert!(demoted["joinedAt"].is_string());

    let handed = set_role(&app, &t.ada, &t.room, &t.dan, "OWNER").await;
    assert_eq!(handed["role"], "OWNER");
    assert_eq!(
        roles(&app, &t.eve, &t.room).await,
        pairs(&[
            ("ada", "ADMIN"),
            ("bob", "ADMIN"),
            ("cid", "MEMBER"),
            ("dan", "OWNER"),
            ("eve", "MEMBER"),
        ])
    );
    // The old owner is an admin now, and sets no roles.
    assert_eq!(
        code(
            &app,
            &t.ada,
            SET_ROLE,
            json!({"r": t.room, "u": t.eve.id, "role": "ADMIN"})
        )
        .await,
        "FORBIDDEN"
    );
    set_role(&app, &t.dan, &t.room, &t.eve, "ADMIN").await;
}

#[tokio::test]
async fn when_the_owner_leaves_the_longest_standing_admin_else_member_owns_the_room() {
    let app = TestApp::spawn().await;
    let t = team(&app, "PUBLIC").await;
    // dan (a member) joined before fay, who is made an admin after cid.
    let fay = app.register("fay").await;
    app.join(&fay, &t.room).await;
    set_role(&app, &t.ada, &t.room, &fay, "ADMIN").await;
    // bob, the longest-standing admin, goes first so that cid is next.
    app.data(Some(&t.bob.token), LEAVE, json!({"r": t.room}))
        .await;
    let mut watcher = watching(&app, &t.eve, &t.room).await;

    app.data(Some(&t.ada.token), LEAVE, json!({"r": t.room}))
        .await;
    assert_eq!(next_event(&mut watcher).await, "left ada");
    assert_eq!(next_event(&mut watcher).await, "role cid OWNER");
    app.data(Some(&t.cid.token), LEAVE, json!({"r": t.room}))
        .await;
    assert_eq!(next_event(&mut watcher).await, "left cid");
    assert_eq!(next_event(&mut watcher).await, "role fay OWNER");
    app.data(Some(&fay.token), LEAVE, json!({"r": t.room}))
        .await;
    assert_eq!(next_event(&mut watcher).await, "left fay");
    assert_eq!(next_event(&mut watcher).await, "role dan OWNER");
    assert_eq!(
        roles(&app, &t.eve, &t.room).await,
        pairs(&[("dan", "OWNER"), ("eve", "MEMBER")])
    );

    // Empty, the room stays, ownerless.
    for last in [&t.dan, &t.eve] {
        app.data(Some(&last.token), LEAVE, json!({"r": t.room}))
            .await;
    }
    let empty = room(&app, &fay, &t.room).await;
    assert_eq!(empty["memberCount"], 0, "{empty}");
    app.join(&fay, &t.room).await;
    assert_eq!(my_role(&app, &fay, &t.room).await, "MEMBER");
}

#[tokio::test]
async fn when_the_owner_deletes_their_account_the_room_passes_on() {
    let app = TestApp::spawn().await;
    let t = team(&app, "PRIVATE").await;
    app.data(Some(&t.bob.token), LEAVE, json!({"r": t.room}))
        .await;
    app.data(Some(&t.ada.token), DELETE_ACCOUNT, json!({"p": PASSWORD}))
        .await;
    assert_eq!(
        roles(&app, &t.eve, &t.room).await,
        pairs(&[("cid", "OWNER"), ("dan", "MEMBER"), ("eve", "MEMBER")])
    );
    // With no admin left, the longest-standing member.
    app.data(Some(&t.cid.token), DELETE_ACCOUNT, json!({"p": PASSWORD}))
        .await;
    assert_eq!(
        roles(&app, &t.eve, &t.room).await,
        pairs(&[("dan", "OWNER"), ("eve", "MEMBER")])
    );
}

// ---------------------------------------------------------------------------------------------
// Moderation

#[tokio::test]
async fn nobody_acts_on_an_equal_or_higher_role() {
    let app = TestApp::spawn().await;
    let t = team(&app, "PUBLIC").await;
    for query in [KICK, BAN, UNBAN] {
        // A member moderates nobody.
        assert_eq!(
            code(&app, &t.dan, query, target(query, &t.room, &t.eve.id)).await,
            "FORBIDDEN",
            "{query}"
        );
    }
    for query in [KICK, BAN] {
        // An admin acts on neither another admin nor the owner.
        assert_eq!(
            code(&app, &t.bob, query, target(query, &t.room, &t.cid.id)).await,
            "FORBIDDEN",
            "{query}"
        );
        assert_eq!(
            code(&app, &t.bob, query, target(query, &t.room, &t.ada.id)).await,
            "FORBIDDEN",
            "{query}"
        );
        let own = app
            .gql(
                Some(&t.bob.token),
                query,
                json!({"r": t.room, "u": t.bob.id}),
            )
            .await;
        assert_eq!(
            (error_code(&own), error_field(&own)),
            ("BAD_USER_INPUT", "userId"),
            "{query}"
        );
    }
    assert_eq!(
        code(
            &app,
            &t.dan,
            UPDATE,
            json!({"r": t.room, "n": "dan's room"})
        )
        .await,
        "FORBIDDEN"
    );
    let fay = app.register("fay").await;
    assert_eq!(
        code(&app, &t.bob, KICK, target(KICK, &t.room, &fay.id)).await,
        "NOT_FOUND"
    );
    assert_eq!(
        roles(&app, &t.ada, &t.room).await.len(),
        5,
        "nobody was removed"
    );
    // The owner outranks an admin.
    assert!(moderate(&app, &t.ada, KICK, &t.room, &t.bob).await);
    assert!(moderate(&app, &t.ada, BAN, &t.room, &t.cid).await);
}

#[tokio::test]
async fn a_kicked_member_may_come_back_a_banned_one_only_once_unbanned() {
    let app = TestApp::spawn().await;
    let t = team(&app, "PUBLIC").await;
    assert!(moderate(&app, &t.bob, KICK, &t.room, &t.dan).await);
    assert!(my_role(&app, &t.dan, &t.room).await.is_null());
    assert_eq!(
        code(&app, &t.dan, SEND, json!({"r": t.room})).await,
        "FORBIDDEN"
    );
    app.join(&t.dan, &t.room).await;
    assert_eq!(my_role(&app, &t.dan, &t.room).await, "MEMBER");

    assert!(moderate(&app, &t.bob, BAN, &t.room, &t.eve).await);
    assert!(
        !moderate(&app, &t.bob, BAN, &t.room, &t.eve).await,
        "already"
    );
    assert!(my_role(&app, &t.eve, &t.room).await.is_null());
    let refused = app
        .gql(Some(&t.eve.token), JOIN, json!({"r": t.room}))
        .await;
    assert_eq!(error_code(&refused), "FORBIDDEN", "{refused}");
    // Anyone may be banned ahead of time.
    let fay = app.register("fay").await;
    assert!(moderate(&app, &t.bob, BAN, &t.room, &fay).await);
    assert_eq!(
        code(&app, &fay, JOIN, json!({"r": t.room})).await,
        "FORBIDDEN"
    );

    assert!(moderate(&app, &t.bob, UNBAN, &t.room, &t.eve).await);
    assert!(
        !moderate(&app, &t.bob, UNBAN, &t.room, &t.eve).await,
        "already"
    );
    app.join(&t.eve, &t.room).await;
    assert_eq!(my_role(&app, &t.eve, &t.room).await, "MEMBER");
}

#[tokio::test]
async fn a_user_banned_from_a_private_room_cannot_find_it() {
    let app = TestApp::spawn().await;
    let t = team(&app, "PRIVATE").await;
    assert!(moderate(&app, &t.bob, BAN, &t.room, &t.eve).await);
    assert!(room(&app, &t.eve, &t.room).await.is_null());
    assert_eq!(
        code(&app, &t.eve, JOIN, json!({"r": t.room})).await,
        "NOT_FOUND"
    );
    // A kicked member of a private room needs a new invitation.
    assert!(moderate(&app, &t.bob, KICK, &t.room, &t.dan).await);
    assert_eq!(
        code(&app, &t.dan, JOIN, json!({"r": t.room})).await,
        "NOT_FOUND"
    );
    invite(&app, &t.bob, &t.room, &t.dan).await;
    app.join(&t.dan, &t.room).await;
}

#[tokio::test]
async fn moderators_update_a_room() {
    let app = TestApp::spawn().await;
    let t = team(&app, "PUBLIC").await;
    let fay = app.register("fay").await;
    let renamed = update(
        &app,
        &t.bob,
        &t.room,
        json!({"n": "squad", "t": "all hands"}),
    )
    .await;
    assert_eq!(
        renamed["data"]["updateRoom"],
        json!({"id": t.room, "name": "squad", "topic": "all hands", "visibility": "PUBLIC"}),
        "{renamed}"
    );
    let seen = room(&app, &t.eve, &t.room).await;
    assert_eq!(
        (&seen["name"], &seen["topic"]),
        (&json!("squad"), &json!("all hands"))
    );

    let hidden = update(&app, &t.cid, &t.room, json!({"v": "PRIVATE"})).await;
    assert_eq!(
        hidden["data"]["updateRoom"]["visibility"], "PRIVATE",
        "{hidden}"
    );
    assert!(room(&app, &fay, &t.room).await.is_null());
    let directory = app.data(Some(&fay.token), DIRECTORY, json!({})).await;
    assert_eq!(ids(&directory["rooms"]), Vec::<String>::new());
    assert_eq!(
        code(&app, &fay, JOIN, json!({"r": t.room})).await,
        "NOT_FOUND"
    );

    // A blank topic clears it; a taken name is a conflict.
    let cleared = update(&app, &t.ada, &t.room, json!({"t": "  ", "v": "PUBLIC"})).await;
    assert!(
        cleared["data"]["updateRoom"]["topic"].is_null(),
        "{cleared}"
    );
    create(&app, &fay, "taken", "PUBLIC").await;
    let taken = update(&app, &t.bob, &t.room, json!({"n": "TAKEN"})).await;
    assert_eq!(
        (error_code(&taken), error_field(&taken)),
        ("CONFLICT", "name")
    );
    assert_eq!(
        update(&app, &t.dan, &t.room, json!({"t": "mine"})).await["errors"][0]["extensions"]["code"],
        "FORBIDDEN"
    );
}

#[tokio::test]
async fn moderators_delete_messages_of_lower_roles_and_are_named_for_it() {
    let app = TestApp::spawn().await;
    let t = team(&app, "PUBLIC").await;
    let mut said = std::collections::HashMap::new();
    for (name, user) in [
        ("ada", &t.ada),
        ("bob", &t.bob),
        ("cid", &t.cid),
        ("dan", &t.dan),
        ("eve", &t.eve),
    ] {
        said.insert(name, app.send(user, &t.room, name).await);
    }
    let mut ws = watching(&app, &t.eve, &t.room).await;

    // Nobody deletes the message of an equal or higher role, nor a member anyone's but theirs.
    for (user, whose) in [
        (&t.bob, "ada"),
        (&t.bob, "cid"),
        (&t.dan, "eve"),
        (&t.dan, "bob"),
    ] {
        let refused = delete(&app, user, &said[whose]).await;
        assert_eq!(error_code(&refused), "FORBIDDEN", "{whose}'s: {refused}");
    }
    let deleted = delete(&app, &t.bob, &said["dan"]).await;
    assert_eq!(
        deleted["data"]["deleteMessage"],
        said["dan"].as_str(),
        "{deleted}"
    );
    assert_eq!(
        next_event(&mut ws).await,
        format!("deleted {} by bob", said["dan"])
    );
    delete(&app, &t.ada, &said["cid"]).await;
    assert_eq!(
        next_event(&mut ws).await,
        format!("deleted {} by ada", said["cid"])
    );
    // An author's own deletion names nobody.
    delete(&app, &t.eve, &said["eve"]).await;
    assert_eq!(
        next_event(&mut ws).await,
        format!("deleted {} by -", said["eve"])
    );
    // A message of someone who left is a member's message.
    app.data(Some(&t.bob.token), LEAVE, json!({"r": t.room}))
        .await;
    assert_eq!(next_event(&mut ws).await, "left bob");
    delete(&app, &t.cid, &said["bob"]).await;
    assert_eq!(
        next_event(&mut ws).await,
        format!("deleted {} by cid", said["bob"])
    );
    let left = app
        .data(Some(&t.ada.token), MESSAGES, json!({"r": t.room}))
        .await;
    assert_eq!(bodies(&left), ["ada"]);
}

#[tokio::test]
async fn the_moderation_log_lists_each_action_newest_first_to_moderators_only() {
    let app = TestApp::spawn().await;
    // ROLE_CHANGE bob, ROLE_CHANGE cid (by ada), when the team is made.
    let t = team(&app, "PUBLIC").await;
    let spam = app.send(&t.dan, &t.room, "buy now").await;
    assert!(moderate(&app, &t.bob, KICK, &t.room, &t.dan).await);
    app.data(
        Some(&t.bob.token),
        BAN,
        json!({"r": t.room, "u": t.eve.id, "why": "flooding"}),
    )
    .await;
    // What changes nothing is not logged: a second ban, a refused kick.
    assert!(!moderate(&app, &t.bob, BAN, &t.room, &t.eve).await);
    assert_eq!(
        code(&app, &t.bob, KICK, json!({"r": t.room, "u": t.cid.id})).await,
        "FORBIDDEN"
    );
    assert!(moderate(&app, &t.cid, UNBAN, &t.room, &t.eve).await);
    app.data(
        Some(&t.bob.token),
        UPDATE,
        json!({"r": t.room, "v": "PRIVATE"}),
    )
    .await;
    app.data(Some(&t.bob.token), DELETE, json!({"m": spam}))
        .await;

    let data = app
        .data(Some(&t.cid.token), LOG, json!({"r": t.room}))
        .await;
    let log = &data["moderationLog"];
    let entries: Vec<Value> = log["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            let n = &e["node"];
            json!([
                n["action"],
                n["actor"]["username"],
                n["target"]["username"],
                n["reason"],
                n["message"]
            ])
        })
        .collect();
    assert_eq!(
        entries,
        [
            json!(["MESSAGE_DELETE", "bob", "dan", null, spam]),
            json!([
                "ROOM_UPDATE",
                "bob",
                null,
                "visibility: PUBLIC to PRIVATE",
                null
            ]),
            json!(["UNBAN", "cid", "eve", null, null]),
            json!(["BAN", "bob", "eve", "flooding", null]),
            json!(["KICK", "bob", "dan", null, null]),
            json!(["ROLE_CHANGE", "ada", "cid", "MEMBER to ADMIN", null]),
            json!(["ROLE_CHANGE", "ada", "bob", "MEMBER to ADMIN", null]),
        ]
    );
    let times: Vec<&str> = log["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["createdAt"].as_str().expect("createdAt"))
        .collect();
    let mut newest_first = times.clone();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(times, newest_first);
    assert_eq!(log["pageInfo"]["hasNextPage"], false);

    // Paged: the older entries after a cursor.
    let first = app
        .data(Some(&t.ada.token), LOG, json!({"r": t.room, "first": 3}))
        .await;
    assert_eq!(first["moderationLog"]["pageInfo"]["hasNextPage"], true);
    let rest = app
        .data(
            Some(&t.ada.token),
            LOG,
            json!({"r": t.room, "after": first["moderationLog"]["pageInfo"]["endCursor"]}),
        )
        .await;
    let actions: Vec<&Value> = rest["moderationLog"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"]["action"])
        .collect();
    assert_eq!(
        actions,
        [
            &json!("BAN"),
            &json!("KICK"),
            &json!("ROLE_CHANGE"),
            &json!("ROLE_CHANGE")
        ]
    );

    let body = app
        .gql(Some(&t.ada.token), LOG, json!({"r": t.room, "first": 101}))
        .await;
    assert_eq!(
        (error_code(&body), error_field(&body)),
        ("BAD_USER_INPUT", "first")
    );

    // Members do not read it; outsiders of a private room do not find it.
    invite(&app, &t.bob, &t.room, &t.eve).await;
    app.join(&t.eve, &t.room).await;
    assert_eq!(
        code(&app, &t.eve, LOG, json!({"r": t.room})).await,
        "FORBIDDEN"
    );
    assert_eq!(
        code(&app, &t.dan, LOG, json!({"r": t.room})).await,
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn mutations_that_change_who_is_in_a_room_cost_100_each() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    // The most an operation may cost is 5,000: 45 of them fit, 51 do not.
    for field in [
        "kickMember(roomId: $r, userId: $u)",
        "banMember(roomId: $r, userId: $u)",
        "directRoom(userId: $u) { id }",
        "setMemberRole(roomId: $r, userId: $u, role: ADMIN) { role }",
    ] {
        for (aliases, fits) in [(45, true), (51, false)] {
            let document: String = (0..aliases).map(|i| format!("a{i}: {field} ")).collect();
            let body = app
                .gql(
                    Some(&ada.token),
                    &format!("mutation($r: ID!, $u: ID!) {{ {document} }}"),
                    json!({"r": NO_ROOM, "u": NO_ROOM}),
                )
                .await;
            let complex = body["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("too complex"));
            assert_eq!(complex, !fits, "{aliases} × {field}: {body}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Subscriptions

#[tokio::test]
async fn a_kicked_members_subscriptions_hear_the_kick_then_end_forbidden() {
    let app = TestApp::spawn().await;
    let t = team(&app, "PUBLIC").await;
    let mut dans = under_way(&app, &t.dan, &t.room, &t.ada).await;
    let mut eves = watching(&app, &t.eve, &t.room).await;

    assert!(moderate(&app, &t.bob, KICK, &t.room, &t.dan).await);
    assert_eq!(
        ended_forbidden(&mut dans, &["events", "added"]).await,
        ["kicked dan by bob"]
    );
    assert_eq!(next_event(&mut eves).await, "kicked dan by bob");
    // The room goes on without them.
    app.send(&t.ada, &t.room, "after the kick").await;
    assert_eq!(next_event(&mut eves).await, "added after the kick");
    assert!(dans.ping_pong().await.is_empty());
}

#[tokio::test]
async fn a_banned_members_subscriptions_hear_the_ban_then_end_forbidden() {
    let app = TestApp::spawn().await;
    let t = team(&app, "PRIVATE").await;
    let mut dans = under_way(&app, &t.dan, &t.room, &t.ada).await;
    let mut eves = watching(&app, &t.eve, &t.room).await;

    app.data(
        Some(&t.ada.token),
        BAN,
        json!({"r": t.room, "u": t.dan.id, "why": "spam"}),
    )
    .await;
    assert_eq!(
        ended_forbidden(&mut dans, &["events", "added"]).await,
        ["banned dan by ada: spam"]
    );
    assert_eq!(next_event(&mut eves).await, "banned dan by ada: spam");
    // Subscribing again is refused as for any room they cannot see.
    dans.subscribe("again", EVENTS, json!({"r": t.room})).await;
    let refused = dans.recv().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["payload"][0]["extensions"]["code"], "NOT_FOUND");
}

#[tokio::test]
async fn role_changes_and_room_updates_reach_members() {
    let app = TestApp::spawn().await;
    let t = team(&app, "PUBLIC").await;
    let mut ws = watching(&app, &t.eve, &t.room).await;
    let mut rooms = app.ws_as(&t.dan).await;
    let events = "subscription($r: ID!) { roomEvents(roomId: $r) {
        ... on MemberRoleChanged { roomId }
        ... on RoomUpdated { room { id } }
    } }";
    rooms.subscribe("ids", events, json!({"r": t.room})).await;
    // Only a join made just before may still arrive (see `watching`): an event this document
    // selects nothing of.
    for early in rooms.ping_pong().await {
        assert_eq!(early["payload"]["data"]["roomEvents"], json!({}), "{early}");
    }

    set_role(&app, &t.ada, &t.room, &t.dan, "ADMIN").await;
    assert_eq!(next_event(&mut ws).await, "role dan ADMIN");
    set_role(&app, &t.ada, &t.room, &t.bob, "OWNER").await;
    let mut handed = vec![next_event(&mut ws).await, next_event(&mut ws).await];
    handed.sort();
    assert_eq!(handed, ["role ada ADMIN", "role bob OWNER"]);
    app.data(
        Some(&t.cid.token),
        UPDATE,
        json!({"r": t.room, "n": "squad", "t": "standup at 9", "v": "PRIVATE"}),
    )
    .await;
    assert_eq!(
        next_event(&mut ws).await,
        "updated squad / standup at 9 / PRIVATE"
    );
    // Each event names its room.
    let mut named = Vec::new();
    while named.len() < 4 {
        let payload = rooms.next_payload("ids").await;
        let event = &payload["data"]["roomEvents"];
        if *event == json!({}) {
            continue; // a late join (see above)
        }
        named.push(
            event["roomId"]
                .as_str()
                .or(event["room"]["id"].as_str())
                .expect("a room id")
                .to_owned(),
        );
    }
    assert_eq!(named, vec![t.room.clone(); 4]);
}

// ---------------------------------------------------------------------------------------------
// REST

async fn rest_get(app: &TestApp, user: &Session, path: &str) -> (StatusCode, Value) {
    let response = app
        .http
        .get(app.url(path))
        .bearer_auth(&user.token)
        .send()
        .await
        .expect("GET");
    (response.status(), response.json().await.expect("JSON"))
}

async fn rest_post(app: &TestApp, user: &Session, path: &str, body: Value) -> (StatusCode, Value) {
    let response = app
        .http
        .post(app.url(path))
        .bearer_auth(&user.token)
        .json(&body)
        .send()
        .await
        .expect("POST");
    (response.status(), response.json().await.expect("JSON"))
}

fn rest_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn rest_routes_keep_private_rooms_private() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let (bob, eve) = (app.register("bob").await, app.register("eve").await);
    let lobby = create(&app, &ada, "lobby", "PUBLIC").await;
    let secret = create(&app, &ada, "secret", "PRIVATE").await;
    app.send(&ada, &secret, "for members").await;

    let (status, body) = rest_get(&app, &eve, "/get_rooms").await;
    assert_eq!(status, StatusCode::OK);
    let listed: Vec<&str> = body["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(listed, [lobby.as_str()]);

    let history = format!("/get_messages/{secret}");
    let (status, body) = rest_get(&app, &eve, &history).await;
    assert_eq!(
        (status, rest_code(&body)),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
    let (status, body) = rest_post(&app, &eve, "/join_room", json!({"roomID": secret})).await;
    assert_eq!(
        (status, rest_code(&body)),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
    let (status, body) = rest_post(
        &app,
        &eve,
        "/send_message",
        json!({"roomID": secret, "message": "hi"}),
    )
    .await;
    assert_eq!(
        (status, rest_code(&body)),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );

    // Invited: the room is there, its history for members only; joining spends the invitation.
    invite(&app, &ada, &secret, &bob).await;
    let (status, body) = rest_get(&app, &bob, &history).await;
    assert_eq!(
        (status, rest_code(&body)),
        (StatusCode::FORBIDDEN, "FORBIDDEN")
    );
    let (status, body) = rest_post(&app, &bob, "/join_room", json!({"roomID": secret})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room"]["name"], "secret");
    let (status, body) = rest_get(&app, &bob, &history).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["messages"][0]["body"], "for members");
    let waiting = app.data(Some(&bob.token), INVITATIONS, json!({})).await;
    assert_eq!(waiting["invitations"], json!([]));

    // A room made over REST is public.
    let (status, body) = rest_post(&app, &bob, "/create_room", json!({"roomname": "open"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let made = body["room"]["id"].as_str().unwrap().to_owned();
    assert_eq!(room(&app, &eve, &made).await["visibility"], "PUBLIC");
}

#[tokio::test]
async fn rest_deletions_follow_the_moderation_rules() {
    let app = TestApp::spawn().await;
    let t = team(&app, "PUBLIC").await;
    let dans = app.send(&t.dan, &t.room, "dan's").await;
    let eves = app.send(&t.eve, &t.room, "eve's").await;
    let adas = app.send(&t.ada, &t.room, "ada's").await;
    let mut ws = watching(&app, &t.cid, &t.room).await;

    let (status, body) =
        rest_post(&app, &t.dan, "/delete_message", json!({"messageID": eves})).await;
    assert_eq!(
        (status, rest_code(&body)),
        (StatusCode::FORBIDDEN, "FORBIDDEN")
    );
    let (status, body) =
        rest_post(&app, &t.bob, "/delete_message", json!({"messageID": adas})).await;
    assert_eq!(
        (status, rest_code(&body)),
        (StatusCode::FORBIDDEN, "FORBIDDEN")
    );

    let (status, body) =
        rest_post(&app, &t.bob, "/delete_message", json!({"messageID": dans})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["messageID"], dans.as_str());
    assert_eq!(next_event(&mut ws).await, format!("deleted {dans} by bob"));
    // Naming the room, as the original clients may.
    let (status, body) = rest_post(
        &app,
        &t.bob,
        "/delete_message",
        json!({"messageID": eves, "roomID": t.room}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(next_event(&mut ws).await, format!("deleted {eves} by bob"));
}

// ---------------------------------------------------------------------------------------------
// Socket.IO

/// The first `message` a socket hears after joining a room again. Its own `user_join` may come
/// first (announced once written, it can reach the new feed); anything else may not: an event
/// of the room from before it came back would mean its old feed had lived on.
async fn first_message_back(socket: &mut SocketIo, user: &Session) -> Value {
    loop {
        let (name, payload) = socket.next_event().await;
        match name.as_str() {
            "message" => return payload,
            "user_join" if payload["user"]["id"] == user.id.as_str() => {}
            _ => panic!("after coming back, first {name} {payload}"),
        }
    }
}

fn ack_code(ack: &Value) -> &str {
    assert_eq!(ack["ok"], false, "expected a refusal: {ack}");
    ack["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn socketio_joins_follow_the_room_rules() {
    let app = TestApp::spawn().await;
    let t = team(&app, "PRIVATE").await;
    let fay = app.register("fay").await;
    let mut fays = app.socketio(&fay).await;
    let join = |room: &str| json!({"roomID": room});

    assert_eq!(
        ack_code(&fays.call("join", join(&t.room)).await),
        "NOT_FOUND"
    );
    assert_eq!(
        ack_code(&fays.call("join", join(NO_ROOM)).await),
        "NOT_FOUND"
    );
    invite(&app, &t.bob, &t.room, &fay).await;
    let joined = fays.call("join", join(&t.room)).await;
    assert_eq!(joined["ok"], true, "{joined}");
    assert_eq!(joined["room"]["name"], "team");
    assert_eq!(my_role(&app, &fay, &t.room).await, "MEMBER");

    // A direct room: theirs alone, named for the other.
    let direct = app
        .data(Some(&t.ada.token), DIRECT, json!({"u": t.bob.id}))
        .await["directRoom"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        ack_code(&fays.call("join", join(&direct)).await),
        "NOT_FOUND"
    );
    let mut bobs = app.socketio(&t.bob).await;
    let joined = bobs.call("join", join(&direct)).await;
    assert_eq!(joined["room"]["name"], "ada", "{joined}");

    // A public room refuses whom it banned.
    let lobby = create(&app, &t.ada, "lobby", "PUBLIC").await;
    assert!(moderate(&app, &t.ada, BAN, &lobby, &fay).await);
    assert_eq!(
        ack_code(&fays.call("join", join(&lobby)).await),
        "FORBIDDEN"
    );
    let sent = fays
        .call("message", json!({"roomID": lobby, "message": "hi"}))
        .await;
    assert_eq!(ack_code(&sent), "FORBIDDEN");
}

#[tokio::test]
async fn a_kicked_socket_hears_user_kick_and_then_nothing_of_the_room() {
    let app = TestApp::spawn().await;
    let t = team(&app, "PUBLIC").await;
    let mut dans = app.socketio(&t.dan).await;
    let mut eves = app.socketio(&t.eve).await;
    for socket in [&mut dans, &mut eves] {
        let joined = socket.call("join", json!({"roomID": t.room})).await;
        assert_eq!(joined["ok"], true, "{joined}");
    }

    assert!(moderate(&app, &t.bob, KICK, &t.room, &t.dan).await);
    let kick = json!({
        "roomID": t.room,
        "user": {"id": t.dan.id, "username": "dan"},
        "by": {"id": t.bob.id, "username": "bob"},
    });
    assert_eq!(
        dans.next_event().await,
        ("user_kick".to_owned(), kick.clone())
    );
    assert_eq!(eves.next_named("user_kick").await, kick);
    app.send(&t.ada, &t.room, "after the kick").await;

    // Still connected: dan comes back (a public room), and hears only what follows. Had the
    // old feed lived on, "after the kick" would come first.
    let back = dans.call("join", json!({"roomID": t.room})).await;
    assert_eq!(back["ok"], true, "{back}");
    app.send(&t.ada, &t.room, "after coming back").await;
    assert_eq!(
        first_message_back(&mut dans, &t.dan).await["body"],
        "after coming back"
    );
}

#[tokio::test]
async fn sockets_hear_bans_role_changes_room_updates_and_who_deleted() {
    let app = TestApp::spawn().await;
    let t = team(&app, "PUBLIC").await;
    let mut dans = app.socketio(&t.dan).await;
    let mut eves = app.socketio(&t.eve).await;
    for socket in [&mut dans, &mut eves] {
        let joined = socket.call("join", json!({"roomID": t.room})).await;
        assert_eq!(joined["ok"], true, "{joined}");
    }
    let user = |s: &Session, name: &str| json!({"id": s.id, "username": name});

    app.data(
        Some(&t.cid.token),
        BAN,
        json!({"r": t.room, "u": t.dan.id, "why": "spam"}),
    )
    .await;
    let ban = json!({"roomID": t.room, "user": user(&t.dan, "dan"), "by": user(&t.cid, "cid"), "reason": "spam"});
    assert_eq!(
        dans.next_event().await,
        ("user_ban".to_owned(), ban.clone())
    );
    assert_eq!(eves.next_named("user_ban").await, ban);

    app.data(
        Some(&t.bob.token),
        UPDATE,
        json!({"r": t.room, "n": "squad", "t": "standup", "v": "PRIVATE"}),
    )
    .await;
    assert_eq!(
        eves.next_named("room_update").await,
        json!({"roomID": t.room, "room": {"id": t.room, "name": "squad", "topic": "standup", "visibility": "PRIVATE"}})
    );
    set_role(&app, &t.ada, &t.room, &t.eve, "ADMIN").await;
    assert_eq!(
        eves.next_named("user_role").await,
        json!({"roomID": t.room, "user": user(&t.eve, "eve"), "role": "ADMIN"})
    );

    // Moderators' deletions name them, authors' own do not, over the socket too.
    let ciss = app.send(&t.cid, &t.room, "cid's").await;
    let adas = app.send(&t.ada, &t.room, "ada's").await;
    let moderated = eves
        .call("delete_message", json!({"messageID": ciss}))
        .await;
    assert_eq!(ack_code(&moderated), "FORBIDDEN", "an admin on an admin");
    app.data(Some(&t.ada.token), DELETE, json!({"m": ciss}))
        .await;
    assert_eq!(
        eves.next_named("delete_message").await,
        json!({"messageID": ciss, "roomID": t.room, "deletedBy": user(&t.ada, "ada")})
    );
    app.data(Some(&t.ada.token), DELETE, json!({"m": adas}))
        .await;
    assert_eq!(
        eves.next_named("delete_message").await,
        json!({"messageID": adas, "roomID": t.room, "deletedBy": null})
    );

    // The banned socket heard nothing after its ban: back once unbanned, it hears what follows.
    assert_eq!(
        ack_code(&dans.call("join", json!({"roomID": t.room})).await),
        "NOT_FOUND",
        "now private, and their invitation is gone"
    );
    assert!(moderate(&app, &t.ada, UNBAN, &t.room, &t.dan).await);
    invite(&app, &t.ada, &t.room, &t.dan).await;
    let back = dans.call("join", json!({"roomID": t.room})).await;
    assert_eq!(back["ok"], true, "{back}");
    app.send(&t.ada, &t.room, "welcome back").await;
    assert_eq!(
        first_message_back(&mut dans, &t.dan).await["body"],
        "welcome back"
    );
}

// ---------------------------------------------------------------------------------------------
// Several instances

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_through_one_instance_ends_a_subscription_held_on_another() {
    let Some(Cluster {
        a,
        b,
        redis: _redis,
    }) = cluster().await
    else {
        return;
    };
    let ada = a.register("ada").await;
    let dan = a.register("dan").await;
    let eve = a.register("eve").await;
    let room = create(&a, &ada, "shared", "PUBLIC").await;
    a.join(&dan, &room).await;
    a.join(&eve, &room).await;
    let mut dans = under_way(&b, &dan, &room, &ada).await;
    let mut eves = watching(&b, &eve, &room).await;

    a.data(
        Some(&ada.token),
        BAN,
        json!({"r": room, "u": dan.id, "why": "spam"}),
    )
    .await;
    assert_eq!(
        ended_forbidden(&mut dans, &["events", "added"]).await,
        ["banned dan by ada: spam"]
    );
    assert_eq!(next_event(&mut eves).await, "banned dan by ada: spam");
    let refused = b.gql(Some(&dan.token), JOIN, json!({"r": room})).await;
    assert_eq!(error_code(&refused), "FORBIDDEN", "{refused}");
}

#[tokio::test]
async fn a_private_rooms_name_tells_nobody_it_exists() {
    let app = TestApp::spawn().await;
    let (ada, bob) = (app.register("ada").await, app.register("bob").await);
    let secret = create(&app, &ada, "layoffs", "PRIVATE").await;
    // Bob may name rooms as he likes: no conflict says that a private room is called so.
    let public = create(&app, &bob, "Layoffs", "PUBLIC").await;
    create(&app, &bob, "LAYOFFS", "PRIVATE").await;
    let body = app
        .gql(
            Some(&bob.token),
            UPDATE,
            json!({"r": public, "n": "layoffs", "t": null, "v": null}),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    // A private room made public needs a name no public room has.
    let body = app
        .gql(
            Some(&ada.token),
            UPDATE,
            json!({"r": secret, "n": null, "t": null, "v": "PUBLIC"}),
        )
        .await;
    assert_eq!(
        (error_code(&body), error_field(&body)),
        ("CONFLICT", "name"),
        "{body}"
    );
}

#[tokio::test]
async fn asking_for_a_direct_room_again_brings_back_only_the_one_who_asks() {
    let app = TestApp::spawn().await;
    let (ada, bob) = (app.register("ada").await, app.register("bob").await);
    let dm = s(&direct(&app, &ada, &bob).await["id"]);
    app.data(Some(&bob.token), LEAVE, json!({"r": dm})).await;
    app.data(Some(&ada.token), LEAVE, json!({"r": dm})).await;
    assert_eq!(s(&direct(&app, &ada, &bob).await["id"]), dm);
    let members = app.data(Some(&ada.token), MEMBERS, json!({"r": dm})).await;
    assert_eq!(members["room"]["members"], json!([{"username": "ada"}]));
    assert!(
        room(&app, &bob, &dm).await.is_null(),
        "bob left and stays out"
    );
}
