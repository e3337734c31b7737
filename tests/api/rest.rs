//! The original service's REST routes: each success and each refusal, over real HTTP.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{ROOM_EVENTS, TestApp};

struct Rest<'a> {
    app: &'a TestApp,
}

impl Rest<'_> {
    async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.post_raw(path, token, body.to_string()).await
    }

    async fn post_raw(&self, path: &str, token: Option<&str>, body: String) -> (StatusCode, Value) {
        let mut request = self
            .app
            .http
            .post(self.app.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("POST");
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let response = self
            .app
            .http
            .get(self.app.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET");
        let status = response.status();
        (status, response.json().await.expect("a JSON body"))
    }

    /// Registers and logs in, returning (token, user id).
    async fn sign_up(&self, username: &str) -> (String, String) {
        let credentials = json!({"username": username, "password": "correct horse"});
        let (status, body) = self.post("/register", None, credentials.clone()).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let (status, body) = self.post("/login", None, credentials).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["token_type"], "Bearer");
        (
            body["access_token"].as_str().unwrap().to_owned(),
            body["user"]["id"].as_str().unwrap().to_owned(),
        )
    }

    async fn create_room(&self, token: &str, name: &str) -> String {
        let (status, body) = self
            .post("/create_room", Some(token), json!({"roomname": name}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["room"]["id"].as_str().unwrap().to_owned()
    }

    async fn send(&self, token: &str, room: &str, text: &str) -> String {
        let (status, body) = self
            .post(
                "/send_message",
                Some(token),
                json!({"roomID": room, "message": text}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["message"]["id"].as_str().unwrap().to_owned()
    }
}

fn error(body: &Value) -> (&str, &str) {
    (
        body["error"]["code"].as_str().unwrap_or("<none>"),
        body["error"]["field"].as_str().unwrap_or("<none>"),
    )
}

#[tokio::test]
async fn register_and_login() {
    let app = TestApp::spawn().await;
    let rest = Rest { app: &app };
    let (status, body) = rest
        .post(
            "/register",
            None,
            json!({"username": "ada", "password": "correct horse"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["user"]["username"], "ada");
    assert!(body["message"].is_string() && body["user"]["id"].is_string());

    let (status, body) = rest
        .post(
            "/login",
            None,
            json!({"username": "ada", "password": "correct horse"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body["access_token"].is_string());

    let (status, body) = rest
        .post(
            "/register",
            None,
            json!({"username": "ADA", "password": "correct horse"}),
        )
        .await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::CONFLICT, ("CONFLICT", "username"))
    );
    let (status, body) = rest
        .post(
            "/login",
            None,
            json!({"username": "ada", "password": "wrong horse"}),
        )
        .await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED")
    );
}

#[tokio::test]
async fn malformed_bodies_are_400s_naming_the_field() {
    let app = TestApp::spawn().await;
    let rest = Rest { app: &app };
    let cases: [(&str, &str); 7] = [
        ("{bad json", "body"),
        ("", "body"),
        ("[1, 2]", "body"),
        (r#"{"password": "correct horse"}"#, "username"),
        (
            r#"{"username": 42, "password": "correct horse"}"#,
            "username",
        ),
        (
            r#"{"username": "ab", "password": "correct horse"}"#,
            "username",
        ),
        (r#"{"username": "valid", "password": ""}"#, "password"),
    ];
    for (body, field) in cases {
        let (status, answer) = rest.post_raw("/register", None, body.to_owned()).await;
        assert_eq!(
            (status, error(&answer)),
            (StatusCode::BAD_REQUEST, ("BAD_USER_INPUT", field)),
            "{body:?}"
        );
    }
    let huge = json!({"username": "x".repeat(300 * 1024), "password": "y"}).to_string();
    let (status, answer) = rest.post_raw("/register", None, huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(error(&answer).0, "BAD_USER_INPUT");
}

#[tokio::test]
async fn bodies_that_are_not_json_are_refused_with_415() {
    let app = TestApp::spawn().await;
    let credentials = r#"{"username": "ada", "password": "correct horse"}"#;
    // What a cross-site form could send without asking: text/plain, or a form.
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = app.http.post(app.url("/register")).body(credentials);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type:?}"
        );
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["field"], "Content-Type", "{answer}");
    }
    let response = app
        .http
        .post(app.url("/register"))
        .header("content-type", "application/json; charset=utf-8")
        .body(credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn rooms_are_created_joined_and_listed() {
    let app = TestApp::spawn().await;
    let rest = Rest { app: &app };
    let (ada, ada_id) = rest.sign_up("ada").await;
    let (bob, _) = rest.sign_up("bob").await;

    let (status, body) = rest
        .post(
            "/create_room",
            Some(&ada),
            json!({"roomname": "lobby", "userID": ada_id}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let lobby = body["room"]["id"].as_str().unwrap().to_owned();
    assert_eq!(body["room"]["createdBy"], ada_id.as_str());

    let (status, body) = rest
        .post("/create_room", Some(&ada), json!({"roomname": "LOBBY"}))
        .await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::CONFLICT, ("CONFLICT", "roomname"))
    );
    let (status, body) = rest
        .post("/create_room", Some(&ada), json!({"roomname": ""}))
        .await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::BAD_REQUEST, ("BAD_USER_INPUT", "roomname"))
    );
    let (status, body) = rest
        .post("/create_room", None, json!({"roomname": "anon"}))
        .await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED")
    );
    let (status, body) = rest
        .post(
            "/create_room",
            Some(&bob),
            json!({"roomname": "spoof", "userID": ada_id}),
        )
        .await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::FORBIDDEN, "FORBIDDEN")
    );
    let (status, body) = rest
        .post(
            "/create_room",
            Some(&bob),
            json!({"roomname": "spoof", "userID": "nope"}),
        )
        .await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::BAD_REQUEST, ("BAD_USER_INPUT", "userID"))
    );

    let (status, body) = rest
        .post("/join_room", Some(&bob), json!({"roomID": lobby}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["room"]["name"], "lobby");
    let (status, body) = rest
        .post(
            "/join_room",
            Some(&bob),
            json!({"roomID": "0123456789abcdef01234567"}),
        )
        .await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
    let (status, body) = rest
        .post("/join_room", Some(&bob), json!({"roomID": "lobby"}))
        .await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::BAD_REQUEST, ("BAD_USER_INPUT", "roomID"))
    );

    let second = rest.create_room(&ada, "second").await;
    let (status, body) = rest.get("/get_rooms?limit=1", &ada).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["rooms"][0]["id"], lobby.as_str());
    let (_, body) = rest
        .get(&format!("/get_rooms?limit=5&after={lobby}"), &ada)
        .await;
    assert_eq!(body["rooms"].as_array().unwrap().len(), 1);
    assert_eq!(body["rooms"][0]["id"], second.as_str());
    let (status, body) = rest.get("/get_rooms?limit=500", &ada).await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::BAD_REQUEST, ("BAD_USER_INPUT", "limit"))
    );
}

#[tokio::test]
async fn messages_are_sent_listed_and_deleted() {
    let app = TestApp::spawn().await;
    let rest = Rest { app: &app };
    let (ada, _) = rest.sign_up("ada").await;
    let (bob, _) = rest.sign_up("bob").await;
    let lobby = rest.create_room(&ada, "lobby").await;

    let (status, body) = rest
        .post(
            "/send_message",
            Some(&bob),
            json!({"roomID": lobby, "message": "hi"}),
        )
        .await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::FORBIDDEN, "FORBIDDEN"),
        "only members send"
    );
    let (status, body) = rest
        .post(
            "/send_message",
            Some(&ada),
            json!({"roomID": lobby, "message": ""}),
        )
        .await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::BAD_REQUEST, ("BAD_USER_INPUT", "message"))
    );
    let text = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("message:"),
        "the text names the field as sent: {body}"
    );
    let (status, body) = rest
        .post("/send_message", Some(&ada), json!({"roomID": lobby}))
        .await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::BAD_REQUEST, ("BAD_USER_INPUT", "message"))
    );

    let (status, body) = rest
        .post(
            "/send_message",
            Some(&ada),
            json!({"roomID": lobby, "content": "via content", "clientId": "c1"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["message"]["body"], "via content");
    assert_eq!(body["message"]["sender"]["username"], "ada");
    let first = body["message"]["id"].clone();
    let (_, retry) = rest
        .post(
            "/send_message",
            Some(&ada),
            json!({"roomID": lobby, "content": "again", "clientId": "c1"}),
        )
        .await;
    assert_eq!(
        retry["message"]["id"], first,
        "a repeated clientId is not sent twice"
    );

    let mut ids = vec![first.as_str().unwrap().to_owned()];
    for i in 2..=5 {
        ids.push(rest.send(&ada, &lobby, &format!("m{i}")).await);
    }
    let (status, body) = rest
        .get(&format!("/get_messages/{lobby}?limit=2"), &ada)
        .await;
    assert_eq!(status, StatusCode::OK);
    let page: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        page,
        [ids[3].as_str(), ids[4].as_str()],
        "the newest, oldest first"
    );
    let (_, body) = rest
        .get(
            &format!("/get_messages/{lobby}?limit=10&before={}", ids[3]),
            &ada,
        )
        .await;
    let older: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        older,
        ids[..3].iter().map(String::as_str).collect::<Vec<_>>()
    );
    let (status, body) = rest.get(&format!("/get_messages/{lobby}"), &bob).await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::FORBIDDEN, "FORBIDDEN")
    );
    let (status, body) = rest.get("/get_messages/%FF%FE", &ada).await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::BAD_REQUEST, ("BAD_USER_INPUT", "roomID"))
    );
    let (status, body) = rest
        .get(&format!("/get_messages/{lobby}?limit=0"), &ada)
        .await;
    assert_eq!(
        (status, error(&body)),
        (StatusCode::BAD_REQUEST, ("BAD_USER_INPUT", "limit"))
    );

    let (status, body) = rest
        .post("/delete_message", Some(&bob), json!({"messageID": ids[4]}))
        .await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::FORBIDDEN, "FORBIDDEN")
    );
    let other = rest.create_room(&ada, "other").await;
    let (status, body) = rest
        .post(
            "/delete_message",
            Some(&ada),
            json!({"messageID": ids[4], "roomID": other}),
        )
        .await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
    let (status, body) = rest
        .post(
            "/delete_message",
            Some(&ada),
            json!({"messageID": ids[4], "roomID": lobby}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["messageID"], ids[4].as_str());
    let (status, body) = rest
        .post(
            "/delete_message",
            Some(&ada),
            json!({"messageID": "0123456789abcdef01234567"}),
        )
        .await;
    assert_eq!(
        (status, error(&body).0),
        (StatusCode::NOT_FOUND, "NOT_FOUND")
    );
    let (_, body) = rest.get(&format!("/get_messages/{lobby}"), &ada).await;
    assert_eq!(
        body["messages"].as_array().unwrap().len(),
        4,
        "the deleted message is gone"
    );
}

#[tokio::test]
async fn a_message_sent_over_rest_reaches_graphql_subscribers() {
    let app = TestApp::spawn().await;
    let rest = Rest { app: &app };
    let ada = app.register("ada").await;
    let room = app.create_room(&ada, "lobby").await;
    let mut ws = app.ws_as(&ada).await;
    ws.subscribe("events", ROOM_EVENTS, json!({"r": room}))
        .await;
    assert!(ws.ping_pong().await.is_empty());
    let id = rest.send(&ada.token, &room, "from REST").await;
    let payload = ws.next_payload("events").await;
    assert_eq!(payload["data"]["roomEvents"]["message"]["id"], id.as_str());
    assert_eq!(
        payload["data"]["roomEvents"]["message"]["body"],
        "from REST"
    );
}

#[tokio::test]
async fn the_openapi_document_covers_every_route() {
    let app = TestApp::spawn().await;
    let document: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/register",
        "/login",
        "/create_room",
        "/join_room",
        "/send_message",
        "/delete_message",
        "/get_messages/{roomID}",
        "/get_rooms",
    ] {
        assert!(paths.contains_key(path), "{path} is missing");
    }
    assert!(document["components"]["schemas"]["ErrorBody"].is_object());
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    // The licence the package declares, and a server relative to wherever it is served.
    assert_eq!(
        document["info"]["license"]["identifier"],
        env!("CARGO_PKG_LICENSE")
    );
    assert_eq!(
        document["servers"][0]["url"], "/",
        "{}",
        document["servers"]
    );
}

/// Every REST reply, and the server's own JSON routes', ends with a newline, so that `curl`
/// output does not run into what follows; a success, a refusal, a route that does not exist,
/// the export stream, `/readyz` and the OpenAPI document alike.
#[tokio::test]
async fn every_rest_reply_ends_with_a_newline() {
    let app = TestApp::spawn().await;
    let rest = Rest { app: &app };
    let (token, _) = rest.sign_up("newline").await;
    let room = rest.create_room(&token, "lines").await;
    rest.send(&token, &room, "one").await;
    let requests = [
        app.http
            .get(app.url(&format!("/get_messages/{room}")))
            .bearer_auth(&token),
        app.http.get(app.url("/get_rooms")).bearer_auth(&token),
        app.http.get(app.url("/get_rooms")),
        app.http.get(app.url("/me/export")).bearer_auth(&token),
        app.http
            .post(app.url("/login"))
            .header("content-type", "application/json")
            .body("{"),
        app.http.get(app.url("/no/such/route")),
        app.http.get(app.url("/readyz")),
        app.http.get(app.url("/openapi.json")),
    ];
    for request in requests {
        let response = request.send().await.expect("a reply");
        let what = format!("{} {}", response.status(), response.url().path());
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("application/json"),
            "{what}: {content_type}"
        );
        let body = response.bytes().await.expect("a body");
        assert!(
            body.ends_with(b"}\n"),
            "{what}: {:?}",
            String::from_utf8_lossy(&body)
        );
        let _: Value = serde_json::from_slice(&body).expect("still one JSON document");
    }
}
