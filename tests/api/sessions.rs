//! Sessions: refresh-token rotation and reuse detection, logout, the sessions list, password
//! changes, revocation reaching sockets (on another instance too), and the REST mirror.

use serde_json::{Value, json};

use crate::{
    helpers::{TestApp, WsClient, error_code, error_field},
    support::{mongo, redis::RedisServer},
};

const PASSWORD: &str = "correct horse battery";

const LOGIN: &str = "mutation($u: String!, $p: String!) {
    login(username: $u, password: $p) { token refreshToken expiresAt user { id } } }";
const REFRESH: &str = "mutation($t: String!) {
    refreshSession(refreshToken: $t) { token refreshToken expiresAt } }";
const SESSIONS: &str = "{ sessions { id createdAt lastUsedAt userAgent current } }";

/// One signed-in session: its tokens.
#[derive(Clone, Debug)]
struct Tokens {
    access: String,
    refresh: String,
}

fn tokens(payload: &Value) -> Tokens {
    Tokens {
        access: payload["token"].as_str().expect("token").to_owned(),
        refresh: payload["refreshToken"]
            .as_str()
            .expect("refreshToken")
            .to_owned(),
    }
}

/// Signs `username` in with a `User-Agent`, starting a new session.
async fn login_as(app: &TestApp, username: &str, agent: &str) -> Tokens {
    let body: Value = app
        .http
        .post(app.url("/graphql"))
        .header("user-agent", agent)
        .json(&json!({"query": LOGIN, "variables": {"u": username, "p": PASSWORD}}))
        .send()
        .await
        .expect("POST /graphql")
        .json()
        .await
        .expect("JSON");
    assert!(body.get("errors").is_none(), "{body}");
    tokens(&body["data"]["login"])
}

async fn refresh(app: &TestApp, refresh_token: &str) -> Value {
    app.gql(None, REFRESH, json!({"t": refresh_token})).await
}

async fn me(app: &TestApp, access: &str) -> Value {
    app.gql(Some(access), "{ me { username } }", json!({}))
        .await
}

fn signed_in(body: &Value) -> bool {
    body.get("errors").is_none() && body["data"]["me"]["username"].is_string()
}

async fn socket(app: &TestApp, access: &str) -> WsClient {
    let mut ws = app.ws("graphql-transport-ws").await;
    ws.init(json!({"authorization": format!("Bearer {access}")}))
        .await;
    ws
}

#[tokio::test]
async fn a_refresh_rotates_and_a_spent_refresh_token_revokes_the_session() {
    let app = TestApp::spawn().await;
    app.register("ada").await;
    let first = login_as(&app, "ada", "test").await;

    let renewed = refresh(&app, &first.refresh).await;
    assert!(renewed.get("errors").is_none(), "{renewed}");
    let second = tokens(&renewed["data"]["refreshSession"]);
    assert_ne!(second.refresh, first.refresh);
    assert!(signed_in(&me(&app, &second.access).await));

    // The first refresh token was spent: presenting it again means someone else has a copy.
    let reused = refresh(&app, &first.refresh).await;
    assert_eq!(error_code(&reused), "UNAUTHENTICATED");
    // The whole session is gone: the newest access and refresh tokens too.
    assert_eq!(
        error_code(&me(&app, &second.access).await),
        "UNAUTHENTICATED"
    );
    assert_eq!(
        error_code(&refresh(&app, &second.refresh).await),
        "UNAUTHENTICATED"
    );
}

#[tokio::test]
async fn a_made_up_refresh_token_is_refused_and_harms_no_session() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let session = login_as(&app, "ada", "test").await;
    let session_id = app.data(Some(&session.access), SESSIONS, json!({})).await["sessions"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["current"] == true))
        .map(|s| s["id"].as_str().unwrap_or_default().to_owned())
        .expect("the current session");
    for made_up in [
        "nonsense".to_owned(),
        String::new(),
        format!("{session_id}.{}", "A".repeat(43)),
        format!("{}.{}", ada.id, "A".repeat(43)),
    ] {
        assert_eq!(
            error_code(&refresh(&app, &made_up).await),
            "UNAUTHENTICATED",
            "{made_up:?}"
        );
    }
    assert!(signed_in(&me(&app, &session.access).await));
    let renewed = refresh(&app, &session.refresh).await;
    assert!(renewed.get("errors").is_none(), "{renewed}");
}

#[tokio::test]
async fn logout_ends_one_session_and_logout_everywhere_ends_them_all() {
    let app = TestApp::spawn().await;
    app.register("ada").await;
    let phone = login_as(&app, "ada", "phone").await;
    let laptop = login_as(&app, "ada", "laptop").await;
    let tablet = login_as(&app, "ada", "tablet").await;

    let out = app
        .data(Some(&phone.access), "mutation { logout }", json!({}))
        .await;
    assert_eq!(out["logout"], true);
    assert_eq!(
        error_code(&me(&app, &phone.access).await),
        "UNAUTHENTICATED"
    );
    let rest = app
        .http
        .get(app.url("/get_rooms"))
        .bearer_auth(&phone.access)
        .send()
        .await
        .expect("GET /get_rooms");
    assert_eq!(rest.status(), 401);
    assert!(signed_in(&me(&app, &laptop.access).await));

    let everywhere = app
        .data(
            Some(&laptop.access),
            "mutation { logoutEverywhere }",
            json!({}),
        )
        .await;
    // laptop, tablet and the session `register` started.
    assert_eq!(everywhere["logoutEverywhere"], 3);
    for access in [&laptop.access, &tablet.access] {
        assert_eq!(error_code(&me(&app, access).await), "UNAUTHENTICATED");
    }
    assert_eq!(
        error_code(&refresh(&app, &tablet.refresh).await),
        "UNAUTHENTICATED"
    );
}

#[tokio::test]
async fn sessions_lists_ones_own_and_revoke_session_ends_one() {
    let app = TestApp::spawn().await;
    app.register("ada").await;
    let bob = app.register("bob").await;
    let phone = login_as(&app, "ada", "phone/1.0").await;
    let laptop = login_as(&app, "ada", "laptop/2.0").await;

    let listed = app.data(Some(&laptop.access), SESSIONS, json!({})).await;
    let sessions = listed["sessions"].as_array().expect("sessions").clone();
    assert_eq!(sessions.len(), 3, "{listed}");
    let current: Vec<&Value> = sessions.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["userAgent"], "laptop/2.0");
    let phone_session = sessions
        .iter()
        .find(|s| s["userAgent"] == "phone/1.0")
        .expect("the phone's session");
    let phone_id = phone_session["id"].as_str().expect("id");

    let revoke = "mutation($id: ID!) { revokeSession(id: $id) }";
    let by_bob = app
        .gql(Some(&bob.token), revoke, json!({"id": phone_id}))
        .await;
    assert_eq!(error_code(&by_bob), "NOT_FOUND");
    assert!(signed_in(&me(&app, &phone.access).await));
    let malformed = app
        .gql(Some(&laptop.access), revoke, json!({"id": "x"}))
        .await;
    assert_eq!(
        (error_code(&malformed), error_field(&malformed)),
        ("BAD_USER_INPUT", "id")
    );

    let revoked = app
        .data(Some(&laptop.access), revoke, json!({"id": phone_id}))
        .await;
    assert_eq!(revoked["revokeSession"], true);
    assert_eq!(
        error_code(&me(&app, &phone.access).await),
        "UNAUTHENTICATED"
    );
    let left = app.data(Some(&laptop.access), SESSIONS, json!({})).await;
    assert_eq!(left["sessions"].as_array().map(Vec::len), Some(2), "{left}");
    let anonymous = app.gql(None, SESSIONS, json!({})).await;
    assert_eq!(error_code(&anonymous), "UNAUTHENTICATED");
}

#[tokio::test]
async fn changing_the_password_ends_the_other_sessions_only() {
    let app = TestApp::spawn().await;
    app.register("ada").await;
    let other = login_as(&app, "ada", "other").await;
    let this = login_as(&app, "ada", "this").await;
    let change = "mutation($c: String!, $n: String!) {
        changePassword(currentPassword: $c, newPassword: $n) }";

    let wrong = app
        .gql(
            Some(&this.access),
            change,
            json!({"c": "not it at all", "n": "a new secret"}),
        )
        .await;
    assert_eq!(
        (error_code(&wrong), error_field(&wrong)),
        ("BAD_USER_INPUT", "currentPassword")
    );
    let short = app
        .gql(
            Some(&this.access),
            change,
            json!({"c": PASSWORD, "n": "short"}),
        )
        .await;
    assert_eq!(
        (error_code(&short), error_field(&short)),
        ("BAD_USER_INPUT", "newPassword")
    );
    assert!(signed_in(&me(&app, &other.access).await));

    let changed = app
        .data(
            Some(&this.access),
            change,
            json!({"c": PASSWORD, "n": "a new secret"}),
        )
        .await;
    assert_eq!(changed["changePassword"], true);
    assert!(signed_in(&me(&app, &this.access).await));
    assert_eq!(
        error_code(&me(&app, &other.access).await),
        "UNAUTHENTICATED"
    );
    let old = app
        .gql(None, LOGIN, json!({"u": "ada", "p": PASSWORD}))
        .await;
    assert_eq!(error_code(&old), "UNAUTHENTICATED");
    let new = app
        .gql(None, LOGIN, json!({"u": "ada", "p": "a new secret"}))
        .await;
    assert!(new.get("errors").is_none(), "{new}");
}

#[tokio::test]
async fn a_socket_closes_4403_when_its_own_session_is_revoked_only() {
    let app = TestApp::spawn().await;
    app.register("ada").await;
    let phone = login_as(&app, "ada", "phone").await;
    let laptop = login_as(&app, "ada", "laptop").await;
    let mut phone_socket = socket(&app, &phone.access).await;
    let mut laptop_socket = socket(&app, &laptop.access).await;

    app.data(Some(&phone.access), "mutation { logout }", json!({}))
        .await;
    let (code, reason) = phone_socket.closed().await;
    assert_eq!(code, 4403);
    assert!(reason.contains("session has ended"), "{reason}");
    // The other session's socket still answers.
    laptop_socket.ping_pong().await;
}

#[tokio::test]
async fn rest_login_refresh_and_logout_mirror_the_mutations() {
    let app = TestApp::spawn().await;
    app.register("ada").await;
    let post = |path: &'static str, token: Option<String>, body: Value| {
        let app = &app;
        async move {
            let mut request = app.http.post(app.url(path)).json(&body);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("POST");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, login) = post(
        "/login",
        None,
        json!({"username": "ada", "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    let expires_at = login["expires_at"].as_str().expect("expires_at");
    assert!(
        chrono::DateTime::parse_from_rfc3339(expires_at).is_ok(),
        "{expires_at}"
    );
    let refresh_token = login["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();

    let (status, renewed) = post("/refresh", None, json!({"refresh_token": refresh_token})).await;
    assert_eq!(status, 200, "{renewed}");
    let access = renewed["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    assert_ne!(renewed["refresh_token"], login["refresh_token"]);
    let (status, missing) = post("/refresh", None, json!({})).await;
    assert_eq!(status, 400, "{missing}");
    assert_eq!(missing["error"]["field"], "refresh_token", "{missing}");

    let (status, out) = post("/logout", Some(access.clone()), json!({})).await;
    assert_eq!(status, 200, "{out}");
    let (status, _) = post("/logout", Some(access), json!({})).await;
    assert_eq!(status, 401);
}

/// Two instances sharing a MongoDB database and Redis: a revocation made through one reaches
/// the other's cache and sockets.
#[tokio::test]
async fn a_revocation_on_one_instance_reaches_a_socket_and_the_cache_of_another() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let Some(uri) = mongo::server_uri() else {
        return;
    };
    let database = format!("{uri}/{}", mongo::fresh_database());
    let instance = |database: String, url: String| {
        TestApp::spawn_with(move |c| {
            c.database_url = database;
            c.redis_url = Some(url);
        })
    };
    let a = instance(database.clone(), redis.url()).await;
    let b = instance(database, redis.url()).await;
    a.register("ada").await;
    let session = login_as(&a, "ada", "test").await;
    // B has checked (and cached) the session before it is revoked.
    assert!(signed_in(&me(&b, &session.access).await));
    let mut on_b = socket(&b, &session.access).await;

    a.data(Some(&session.access), "mutation { logout }", json!({}))
        .await;
    assert_eq!(on_b.closed().await.0, 4403);
    assert_eq!(
        error_code(&me(&b, &session.access).await),
        "UNAUTHENTICATED"
    );

    // A suspension through A (ada, the first account, is an admin) reaches bob on B.
    let admin = login_as(&a, "ada", "admin").await;
    let bob = b.register("bob").await;
    assert!(signed_in(&me(&b, &bob.token).await));
    let mut bob_on_b = socket(&b, &bob.token).await;
    a.data(
        Some(&admin.access),
        "mutation($u: ID!) { suspendUser(userId: $u, reason: \"spam\") }",
        json!({"u": bob.id}),
    )
    .await;
    assert_eq!(bob_on_b.closed().await.0, 4403);
    assert_eq!(error_code(&me(&b, &bob.token).await), "UNAUTHENTICATED");
    let login = b.gql(None, LOGIN, json!({"u": "bob", "p": PASSWORD})).await;
    assert_eq!(error_code(&login), "FORBIDDEN");
}

#[tokio::test]
async fn signing_in_beyond_the_most_sessions_ends_the_least_recently_used() {
    let app = TestApp::spawn_with(|c| c.max_sessions_per_user = 2).await;
    app.register("ada").await; // one session
    let second = login_as(&app, "ada", "second").await;
    // The session `register` started is the least recently used: it ends.
    let third = login_as(&app, "ada", "third").await;
    let listed = app.data(Some(&third.access), SESSIONS, json!({})).await;
    let agents: Vec<&Value> = listed["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| &s["userAgent"])
        .collect();
    assert_eq!(agents, [&json!("third"), &json!("second")], "{listed}");
    assert!(signed_in(&me(&app, &second.access).await));
    let fourth = login_as(&app, "ada", "fourth").await;
    assert_eq!(
        error_code(&me(&app, &second.access).await),
        "UNAUTHENTICATED"
    );
    assert!(signed_in(&me(&app, &fourth.access).await));
}

/// Ending a session is told to every instance: a repeated logout tells nothing, and one
/// document cannot end sessions by the thousand.
#[tokio::test]
async fn a_repeated_logout_is_not_broadcast_and_aliases_are_bounded() {
    let app = TestApp::spawn().await;
    app.register("ada").await;
    let session = login_as(&app, "ada", "test").await;
    let before = app.metric("confab_session_revocations_total").await;
    let twice = app
        .data(
            Some(&session.access),
            "mutation { a: logout b: logout }",
            json!({}),
        )
        .await;
    assert_eq!((&twice["a"], &twice["b"]), (&json!(true), &json!(false)));
    let heard = app.metric("confab_session_revocations_total").await - before;
    assert_eq!(heard, 1);

    let other = login_as(&app, "ada", "other").await;
    let aliases: String = (0..60).map(|i| format!("l{i}: logout ")).collect();
    let flood = app
        .gql(
            Some(&other.access),
            &format!("mutation {{ {aliases} }}"),
            json!({}),
        )
        .await;
    assert!(
        flood["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("too complex")),
        "{flood}"
    );
    assert!(signed_in(&me(&app, &other.access).await));
}
