use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::TestApp;

#[tokio::test]
async fn graphiql_for_browsers_and_queries_in_the_url() {
    let app = TestApp::spawn().await;
    let page = app
        .http
        .get(app.url("/graphql"))
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("GraphiQL") && html.contains("/graphiql/page.js"),
        "{html}"
    );

    let ada = app.register("ada").await;
    let response = app
        .http
        .get(app.url("/graphql"))
        .query(&[("query", "{ me { username } }")])
        .bearer_auth(&ada.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap()["data"]["me"]["username"],
        "ada"
    );

    let mutation = app
        .http
        .get(app.url("/graphql"))
        .query(&[("query", "mutation { createRoom(name: \"x\") { id } }")])
        .bearer_auth(&ada.token)
        .send()
        .await
        .unwrap();
    assert_eq!(mutation.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn bad_requests_get_json_errors_not_500s() {
    let app = TestApp::spawn().await;
    let post = |content_type: &'static str, body: Vec<u8>| {
        app.http
            .post(app.url("/graphql"))
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
    };
    let cases: Vec<(&str, Vec<u8>, StatusCode)> = vec![
        (
            "text/plain",
            b"{ me { id } }".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "application/json",
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            b"{\"query\": 5}".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            b"{\"variables\": {}}".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "application/json",
            vec![b' '; 300 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (content_type, body, status) in cases {
        let response = post(content_type, body).await.unwrap();
        assert_eq!(response.status(), status, "{content_type}");
        let body: Value = response.json().await.expect("a JSON error body");
        assert!(body.get("errors").or(body.get("error")).is_some(), "{body}");
    }
}

#[tokio::test]
async fn graphql_response_json_clients_get_400_for_invalid_documents() {
    let app = TestApp::spawn().await;
    let response = app
        .http
        .post(app.url("/graphql"))
        .header(header::ACCEPT, "application/graphql-response+json")
        .json(&json!({"query": "{ noSuchField }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/graphql-response+json"
    );
    let body: Value = response.json().await.unwrap();
    assert!(
        body.get("data").is_none(),
        "no data entry when nothing executed: {body}"
    );
    assert!(body["errors"][0]["message"].is_string());
    let response = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({"query": "{ noSuchField }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn health_readiness_metrics_playground_and_unknown_routes() {
    let app = TestApp::spawn().await;
    let get = |path: &str| app.http.get(app.url(path)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), StatusCode::OK);
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let ready = ready.json::<Value>().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    // Where the database stands, on either store (CONFAB_TEST_STORE=mongo runs this on MongoDB).
    assert_eq!(
        ready["schema_version"],
        confab::store::SCHEMA_VERSION,
        "{ready}"
    );
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(metrics.contains("confab_ws_connections 0"), "{metrics}");
    let page = get("/").await.unwrap().text().await.unwrap();
    assert!(page.contains("Confab") && page.contains("/graphql"));
    assert!(page.contains("/playground/app.js"));
    let script = get("/playground/app.js").await.unwrap();
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(
        script
            .text()
            .await
            .unwrap()
            .contains("graphql-transport-ws")
    );
    let style = get("/playground/style.css").await.unwrap();
    assert_eq!(style.headers()["content-type"], "text/css; charset=utf-8");
    let missing = get("/no/such/route").await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"]["code"],
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn other_origins_get_no_cors_grant_unless_listed() {
    let preflight = |app: &TestApp, origin: &'static str| {
        let request = app
            .http
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            );
        async move { request.send().await.unwrap() }
    };
    let granted = |response: &reqwest::Response| {
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_owned())
    };

    let app = TestApp::spawn().await;
    let answer = preflight(&app, "https://evil.example").await;
    assert_eq!(granted(&answer), None);
    let answer = app
        .http
        .post(app.url("/graphql"))
        .header("origin", "https://evil.example")
        .json(&serde_json::json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(granted(&answer), None);

    let app = TestApp::spawn_with(|c| c.cors_origins = vec!["https://chat.example".into()]).await;
    let answer = preflight(&app, "https://chat.example").await;
    assert_eq!(granted(&answer).as_deref(), Some("https://chat.example"));
    let answer = preflight(&app, "https://evil.example").await;
    assert_eq!(granted(&answer), None);
}

#[tokio::test]
async fn one_answer_is_at_most_4_mib_and_a_batch_stops_there() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let room = app.create_room(&ada, "lobby").await;
    // 100 messages of 4,000 four-byte characters: 1.6 MB a page.
    let body = "😀".repeat(4_000);
    for _ in 0..100 {
        app.send(&ada, &room, &body).await;
    }
    let page = "messages(roomId: $r, last: 100) { edges { node { body } } }";
    let three = format!("query($r: ID!) {{ a: {page} b: {page} c: {page} }}");
    let answer = app
        .gql(Some(&ada.token), &three, serde_json::json!({"r": room}))
        .await;
    let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("larger than"), "{message}");
    assert!(answer.get("data").is_none());

    let one = format!("query($r: ID!) {{ {page} }}");
    let batch: Vec<_> = (0..4)
        .map(|_| serde_json::json!({"query": one, "variables": {"r": room}}))
        .collect();
    let answers: serde_json::Value = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(&ada.token)
        .json(&batch)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let answers = answers.as_array().expect("a batch answer");
    for answer in &answers[..3] {
        assert_eq!(
            answer["data"]["messages"]["edges"].as_array().map(Vec::len),
            Some(100)
        );
    }
    let message = answers[3]["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("not run"), "{message}");
}
