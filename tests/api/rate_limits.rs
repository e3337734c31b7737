//! Rate limits, as a flood from one client meets them: every alias, batch entry and REST call is
//! an attempt; refusals are `RATE_LIMITED` with `retryAfter` (REST: 429 with `Retry-After`);
//! limits are kept per account or per client address, and shared by instances through Redis.

use confab::{config::Switch, service::limiter::Rate};
use serde_json::{Value, json};

use crate::{
    helpers::{ROOM_EVENTS, Session, TestApp, error_code},
    support::redis::RedisServer,
};

fn rate(text: &str) -> Rate {
    text.parse().expect("a rate")
}

/// A server with rate limits on, and `configure`'s changes.
async fn limited(configure: impl FnOnce(&mut confab::config::Config)) -> TestApp {
    TestApp::spawn_with(|c| {
        c.rate_limits = Switch::On;
        configure(c);
    })
    .await
}

const PASSWORD: &str = "correct horse battery";

fn logins(username: &str, passwords: &[&str]) -> String {
    let fields: String = passwords
        .iter()
        .enumerate()
        .map(|(i, password)| {
            format!("l{i}: login(username: \"{username}\", password: \"{password}\") {{ token }} ")
        })
        .collect();
    format!("mutation {{ {fields} }}")
}

/// Asserts a GraphQL error is a rate limit with a positive `retryAfter`.
fn assert_limited(error: &Value) {
    assert_eq!(error["extensions"]["code"], "RATE_LIMITED", "{error}");
    let wait = error["extensions"]["retryAfter"].as_u64().unwrap_or(0);
    assert!(wait >= 1, "{error}");
}

#[tokio::test]
async fn failed_logins_lock_the_account_even_for_the_right_password() {
    let app = limited(|c| c.limit_login_failures = rate("3/1h")).await;
    app.register("ada").await;
    app.register("grace").await;

    // Three wrong guesses as aliases of one request: each one counts.
    let body = app
        .gql(
            None,
            &logins("ada", &["wrong one", "wrong two", "wrong three"]),
            json!({}),
        )
        .await;
    let errors = body["errors"].as_array().expect("errors");
    assert_eq!(errors.len(), 3, "{body}");
    assert!(
        errors
            .iter()
            .all(|e| e["extensions"]["code"] == "UNAUTHENTICATED")
    );

    // Now a batch with the right password: refused, both entries.
    let batch = json!([
        {"query": logins("ada", &[PASSWORD])},
        {"query": logins("ada", &[PASSWORD])},
    ]);
    let answers: Value = app
        .http
        .post(app.url("/graphql"))
        .json(&batch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for answer in answers.as_array().expect("a batch answer") {
        assert_limited(&answer["errors"][0]);
    }

    // REST says so with 429 and Retry-After.
    let response = app
        .http
        .post(app.url("/login"))
        .json(&json!({"username": "ada", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    assert_eq!(body["error"]["retryAfter"], retry_after);

    // Another account is not locked; its name in another letter case is the same account.
    let body = app
        .gql(None, &logins("grace", &[PASSWORD]), json!({}))
        .await;
    assert!(body["data"]["l0"]["token"].is_string(), "{body}");
    let body = app.gql(None, &logins("ADA", &[PASSWORD]), json!({})).await;
    assert_limited(&body["errors"][0]);
}

#[tokio::test]
async fn a_lock_ends_and_a_successful_login_clears_the_count() {
    let app = limited(|c| c.limit_login_failures = rate("2/2s")).await;
    app.register("ada").await;
    let body = app
        .gql(None, &logins("ada", &["wrong one", "wrong two"]), json!({}))
        .await;
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(2));
    let body = app.gql(None, &logins("ada", &[PASSWORD]), json!({})).await;
    assert_limited(&body["errors"][0]);
    // The first lock lasts 2s / 2; wait it out.
    let wait = body["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
    let body = app.gql(None, &logins("ada", &[PASSWORD]), json!({})).await;
    assert!(body["data"]["l0"]["token"].is_string(), "{body}");
    // A success forgot the failures: one more wrong guess does not lock.
    app.gql(None, &logins("ada", &["wrong guess"]), json!({}))
        .await;
    let body = app.gql(None, &logins("ada", &[PASSWORD]), json!({})).await;
    assert!(body["data"]["l0"]["token"].is_string(), "{body}");
}

#[tokio::test]
async fn logins_and_registrations_are_limited_per_client_address() {
    let app = limited(|c| {
        c.limit_logins_per_ip = rate("3/1h");
        c.limit_registrations_per_ip = rate("2/1h");
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let from = |ip: &'static str| {
        let app = &app;
        move |path: &'static str, body: Value| async move {
            app.http
                .post(app.url(path))
                .header("x-forwarded-for", ip)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let one = from("198.51.100.1");
    let two = from("198.51.100.2");
    let who = |name: &str| json!({"username": name, "password": PASSWORD});

    assert_eq!(one("/register", who("ada")).await, 201);
    assert_eq!(one("/register", who("grace")).await, 201);
    assert_eq!(one("/register", who("alan")).await, 429);
    assert_eq!(two("/register", who("alan")).await, 201);

    for _ in 0..3 {
        assert_eq!(one("/login", who("ada")).await, 200);
    }
    assert_eq!(one("/login", who("ada")).await, 429);
    // The same account from another address is not this address's problem.
    assert_eq!(two("/login", who("ada")).await, 200);
}

/// Guessing through `changePassword` (or `deleteAccount`) with a stolen token counts toward the
/// same lock-out as logins: no side door for guessing the password.
#[tokio::test]
async fn wrong_current_passwords_count_toward_the_login_lock_out() {
    let app = limited(|c| c.limit_login_failures = rate("3/1h")).await;
    let ada = app.register("ada").await;
    let change = "mutation($c: String!) { changePassword(currentPassword: $c, newPassword: \"a new secret\") }";
    for guess in ["guess one", "guess two", "guess three"] {
        let wrong = app.gql(Some(&ada.token), change, json!({"c": guess})).await;
        assert_eq!(error_code(&wrong), "BAD_USER_INPUT", "{wrong}");
    }
    let locked = app
        .gql(Some(&ada.token), change, json!({"c": PASSWORD}))
        .await;
    assert_eq!(error_code(&locked), "RATE_LIMITED", "{locked}");
    let login = app
        .gql(
            None,
            "mutation($p: String!) { login(username: \"ada\", password: $p) { token } }",
            json!({"p": PASSWORD}),
        )
        .await;
    assert_eq!(error_code(&login), "RATE_LIMITED", "{login}");
}

/// Each refresh is a database write, so a flood of made-up refresh tokens is bounded per
/// address, as logins are.
#[tokio::test]
async fn session_refreshes_are_limited_per_client_address() {
    let app = limited(|c| c.limit_refreshes_per_ip = rate("3/1h")).await;
    let ada = app.register("ada").await;
    let login = app
        .http
        .post(app.url("/login"))
        .json(&json!({"username": "ada", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    let mut refresh_token = login.json::<Value>().await.unwrap()["refresh_token"]
        .as_str()
        .expect("refresh_token")
        .to_owned();
    let made_up = format!("{}.{}", ada.id, "A".repeat(43));
    let refresh = |token: String| {
        let app = &app;
        async move {
            app.http
                .post(app.url("/refresh"))
                .json(&json!({"refresh_token": token}))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(refresh(made_up.clone()).await.status(), 401);
    for _ in 0..2 {
        let renewed = refresh(refresh_token).await;
        assert_eq!(renewed.status(), 200);
        refresh_token = renewed.json::<Value>().await.unwrap()["refresh_token"]
            .as_str()
            .expect("refresh_token")
            .to_owned();
    }
    let refused = refresh(refresh_token).await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn an_untrusted_peer_cannot_choose_its_address() {
    let app = limited(|c| c.limit_logins_per_ip = rate("2/1h")).await;
    app.register("ada").await;
    for (i, status) in [200, 200, 429].into_iter().enumerate() {
        let response = app
            .http
            .post(app.url("/login"))
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .json(&json!({"username": "ada", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "login {i}");
    }
}

async fn send_aliases(app: &TestApp, user: &Session, room: &str, count: usize) -> Value {
    let fields: String = (0..count)
        .map(|i| format!("m{i}: sendMessage(roomId: $r, body: \"hello {i}\") {{ id }} "))
        .collect();
    app.gql(
        Some(&user.token),
        &format!("mutation($r: ID!) {{ {fields} }}"),
        json!({"r": room}),
    )
    .await
}

#[tokio::test]
async fn messages_rooms_and_joins_are_limited_per_user() {
    let app = limited(|c| {
        c.limit_messages = rate("3/1h");
        c.limit_rooms = rate("2/1h");
        c.limit_joins = rate("1/1h");
    })
    .await;
    let ada = app.register("ada").await;
    let grace = app.register("grace").await;
    let room = app.create_room(&ada, "lobby").await;

    // Four sends as aliases: three are taken.
    let body = send_aliases(&app, &ada, &room, 4).await;
    assert!(body["data"]["m2"]["id"].is_string(), "{body}");
    assert!(body["data"]["m3"].is_null(), "{body}");
    assert_limited(&body["errors"][0]);
    assert_eq!(body["errors"][0]["path"], json!(["m3"]));
    // Edits count too.
    let edit = app
        .gql(
            Some(&ada.token),
            "mutation($m: ID!) { editMessage(messageId: $m, body: \"x\") { id } }",
            json!({"m": body["data"]["m0"]["id"]}),
        )
        .await;
    assert_limited(&edit["errors"][0]);
    // REST: 429 with Retry-After.
    let response = app
        .http
        .post(app.url("/send_message"))
        .bearer_auth(&ada.token)
        .json(&json!({"roomID": room, "message": "over REST"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));

    // Grace has her own allowance.
    app.join(&grace, &room).await;
    let body = send_aliases(&app, &grace, &room, 1).await;
    assert!(body["data"]["m0"]["id"].is_string(), "{body}");

    // Rooms: ada made one already; one more, then refused.
    app.create_room(&ada, "second").await;
    let body = app
        .gql(
            Some(&ada.token),
            "mutation { createRoom(name: \"third\") { id } }",
            json!({}),
        )
        .await;
    assert_limited(&body["errors"][0]);

    // Joins: grace used hers.
    let other = app.create_room(&grace, "other").await;
    let again = app
        .gql(
            Some(&grace.token),
            "mutation($r: ID!) { joinRoom(roomId: $r) { id } }",
            json!({"r": other}),
        )
        .await;
    assert_limited(&again["errors"][0]);
}

#[tokio::test]
async fn typing_is_coalesced_per_user_and_room() {
    let app = limited(|c| c.typing_interval = std::time::Duration::from_secs(3600)).await;
    let ada = app.register("ada").await;
    let grace = app.register("grace").await;
    let room = app.create_room(&ada, "lobby").await;
    app.join(&grace, &room).await;
    let mut ws = app.ws_as(&grace).await;
    ws.subscribe("events", ROOM_EVENTS, json!({"r": room}))
        .await;
    // Live from here (grace's own join may still arrive: it is announced after its commit).
    ws.ping_pong().await;

    let typing = |on: bool| {
        let (app, ada, room) = (&app, &ada, &room);
        async move {
            let data = app
                .data(
                    Some(&ada.token),
                    "mutation($r: ID!, $t: Boolean!) { setTyping(roomId: $r, typing: $t) }",
                    json!({"r": room, "t": on}),
                )
                .await;
            assert_eq!(data["setTyping"], true);
        }
    };
    for _ in 0..5 {
        typing(true).await;
    }
    for _ in 0..5 {
        typing(false).await;
    }
    app.send(&ada, &room, "marker").await;

    let mut seen = Vec::new();
    loop {
        let payload = ws.next_payload("events").await;
        let event = &payload["data"]["roomEvents"];
        match event["__typename"].as_str() {
            Some("Typing") => seen.push(event["typing"].as_bool().unwrap()),
            Some("MessageAdded") => break,
            Some("MemberJoined") => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [true, false],
        "one start and one stop, not five of each"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_redis_share_the_limits() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let instance = || {
        let url = redis.url();
        limited(move |c| {
            c.redis_url = Some(url);
            c.limit_logins_per_ip = rate("3/1h");
            c.limit_login_failures = rate("2/1h");
        })
    };
    let (a, b) = (instance().await, instance().await);
    // Each instance has its own in-memory store here: the same name on both.
    a.register("ada").await;
    b.register("ada").await;

    // One failure on each instance locks the account on both.
    let body = a
        .gql(None, &logins("ada", &["wrong guess"]), json!({}))
        .await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED");
    let body = b
        .gql(None, &logins("ada", &["wrong guess"]), json!({}))
        .await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED");
    let body = a.gql(None, &logins("ada", &[PASSWORD]), json!({})).await;
    assert_limited(&body["errors"][0]);

    // Three attempts from this address, across both: the fourth is refused on either.
    let body = b
        .gql(None, &logins("grace", &["whatever"]), json!({}))
        .await;
    assert_limited(&body["errors"][0]);
    let body = a
        .gql(None, &logins("grace", &["whatever"]), json!({}))
        .await;
    assert_limited(&body["errors"][0]);
}

/// The same cases against both limiters: the Lua scripts must count as the Rust code does.
#[tokio::test]
async fn the_redis_limiter_counts_as_the_memory_one_does() {
    use confab::service::limiter::{
        Kind, Limiter, Lockout, memory::MemoryLimiter, redis::RedisLimiter,
    };
    use std::{sync::Arc, time::Duration};

    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limiters: [(&str, Arc<dyn Limiter>); 2] = [
        ("memory", MemoryLimiter::new()),
        (
            "redis",
            Arc::new(RedisLimiter::connect(&redis.url()).await.expect("Redis")),
        ),
    ];
    for (name, limiter) in limiters {
        let burst = rate("3/30s");
        for _ in 0..3 {
            assert_eq!(
                limiter.take(Kind::Messages, burst, "ada").await,
                Ok(()),
                "{name}"
            );
        }
        let wait = limiter
            .take(Kind::Messages, burst, "ada")
            .await
            .expect_err(name);
        assert!(
            wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
            "{name}: {wait:?}"
        );
        assert_eq!(
            limiter.take(Kind::Messages, burst, "grace").await,
            Ok(()),
            "{name}"
        );
        assert_eq!(
            limiter.take(Kind::Joins, burst, "ada").await,
            Ok(()),
            "{name}"
        );

        let rule = Lockout(rate("2/60s"));
        limiter.failed(rule, "ada").await;
        assert_eq!(
            limiter.locked_for(rule, "ada").await,
            Duration::ZERO,
            "{name}"
        );
        limiter.failed(rule, "ada").await;
        let first = limiter.locked_for(rule, "ada").await;
        assert!(
            first > Duration::from_secs(29) && first <= Duration::from_secs(30),
            "{name}: {first:?}"
        );
        limiter.failed(rule, "ada").await;
        let doubled = limiter.locked_for(rule, "ada").await;
        assert!(
            doubled > Duration::from_secs(59) && doubled <= Duration::from_secs(60),
            "{name}: {doubled:?}"
        );
        assert_eq!(
            limiter.locked_for(rule, "grace").await,
            Duration::ZERO,
            "{name}"
        );
        limiter.succeeded("ada").await;
        assert_eq!(
            limiter.locked_for(rule, "ada").await,
            Duration::ZERO,
            "{name}"
        );
    }
}

/// Moving a read marker is a write: a client that marks in a loop meets the messages rate,
/// counted apart from the messages it sends.
#[tokio::test]
async fn read_markers_are_moved_at_the_messages_rate() {
    let app = limited(|c| c.limit_messages = rate("3/1h")).await;
    let ada = app.register("ada").await;
    let room = app.create_room(&ada, "lobby").await;
    let message = app.send(&ada, &room, "hello").await;
    let mark = "mutation($r: ID!, $m: ID!) { markRead(roomId: $r, messageId: $m) { id } }";
    for _ in 0..3 {
        app.data(Some(&ada.token), mark, json!({"r": room, "m": message}))
            .await;
    }
    let refused = app
        .gql(Some(&ada.token), mark, json!({"r": room, "m": message}))
        .await;
    assert_eq!(error_code(&refused), "RATE_LIMITED", "{refused}");
    // Its own allowance: sending is still allowed.
    app.send(&ada, &room, "still here").await;
}

/// Choosing a presence is a write (to Redis, with several instances): a client that flips it in
/// a loop meets the messages rate, in an allowance of its own.
#[tokio::test]
async fn presence_is_chosen_at_the_messages_rate() {
    let app = limited(|c| c.limit_messages = rate("3/1h")).await;
    let ada = app.register("ada").await;
    let set = "mutation { setPresence(presence: AWAY) { id } }";
    for _ in 0..3 {
        app.data(Some(&ada.token), set, json!({})).await;
    }
    let refused = app.gql(Some(&ada.token), set, json!({})).await;
    assert_eq!(error_code(&refused), "RATE_LIMITED", "{refused}");
    let room = app.create_room(&ada, "lobby").await;
    app.send(&ada, &room, "still here").await;
}

/// Starting `myEvents` saves a checkpoint: a client that resubscribes in a loop meets the joins
/// rate, in an allowance of its own.
#[tokio::test]
async fn my_events_streams_start_at_the_joins_rate() {
    let app = limited(|c| c.limit_joins = rate("3/1h")).await;
    let ada = app.register("ada").await;
    let mut ws = app.ws_as(&ada).await;
    let query = "subscription { myEvents { __typename } }";
    for i in 0..3 {
        let id = format!("s{i}");
        ws.subscribe(&id, query, json!({})).await;
        let early = ws.ping_pong().await;
        assert!(early.is_empty(), "started: {early:?}");
        ws.send_json(json!({"id": id, "type": "complete"})).await;
    }
    ws.subscribe("s3", query, json!({})).await;
    let refused = ws.recv().await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(
        refused["payload"][0]["extensions"]["code"], "RATE_LIMITED",
        "{refused}"
    );
    // Joining rooms has an allowance of its own.
    let bob = app.register("bob").await;
    let room = app.create_room(&bob, "lobby").await;
    let joined = app
        .gql(
            Some(&ada.token),
            "mutation($r: ID!) { joinRoom(roomId: $r) { id } }",
            json!({"r": room}),
        )
        .await;
    assert!(joined["errors"].is_null(), "{joined}");
}
