//! Hostile documents, at every door: nesting that would overflow the parser's stack, fragments
//! that expand exponentially, and documents over the size budget are refused as GraphQL errors,
//! and the server goes on answering.

use serde_json::{Value, json};

use crate::helpers::{PATIENCE, TestApp, error_code};

/// About 3 KB: 1,600 nested lists in an argument, which used to abort the process.
fn nested_value() -> String {
    format!(
        "{{ room(id: {}\"x\"{}) {{ id }} }}",
        "[".repeat(1_600),
        "]".repeat(1_600)
    )
}

/// 1.2 KB of fragments that expand to 2^30 fields.
fn fragment_bomb() -> String {
    let mut text = String::from("query { ...F30 }\nfragment F0 on Query { me { id } }\n");
    for i in 1..=30 {
        text.push_str(&format!(
            "fragment F{i} on Query {{ ...F{j} ...F{j} }}\n",
            j = i - 1
        ));
    }
    text
}

async fn healthy(app: &TestApp) {
    let answer = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("the server still answers");
    assert_eq!(answer.text().await.unwrap(), "ok");
}

async fn post(app: &TestApp, body: Value) -> Value {
    let response = tokio::time::timeout(
        PATIENCE,
        app.http.post(app.url("/graphql")).json(&body).send(),
    )
    .await
    .expect("answered in time")
    .expect("POST /graphql");
    response.json().await.expect("a JSON body")
}

#[tokio::test]
async fn deep_nesting_is_refused_at_every_door_and_the_server_keeps_serving() {
    let app = TestApp::spawn().await;
    let query = nested_value();
    // Variable defaults and list types nest as deep.
    let in_default = format!(
        "query($v: ID = {}\"x\"{}) {{ room(id: $v) {{ id }} }}",
        "[".repeat(1_600),
        "]".repeat(1_600)
    );
    let in_type = format!(
        "query($v: {}ID{}) {{ __typename }}",
        "[".repeat(1_600),
        "]".repeat(1_600)
    );

    for document in [&query, &in_default, &in_type] {
        let body = post(&app, json!({"query": document})).await;
        assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], "query");
        healthy(&app).await;
    }

    // GET with the document in the URL.
    let body: Value = app
        .http
        .get(app.url("/graphql"))
        .query(&[("query", &query)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    healthy(&app).await;

    // One entry of a batch: refused alone, the others run.
    let body = post(
        &app,
        json!([{"query": "{ __typename }"}, {"query": query}, {"query": "{ __typename }"}]),
    )
    .await;
    assert_eq!(body[0]["data"]["__typename"], "Query", "{body}");
    assert_eq!(body[1]["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(body[2]["data"]["__typename"], "Query");
    healthy(&app).await;

    // graphql-transport-ws `subscribe`: an `error` for that operation, and the socket lives on.
    let mut ws = app.ws("graphql-transport-ws").await;
    ws.init(app.signed_in().await).await;
    ws.subscribe("deep", &query, json!({})).await;
    let error = ws.recv().await;
    assert_eq!(
        (error["type"].as_str(), error["id"].as_str()),
        (Some("error"), Some("deep"))
    );
    assert_eq!(error["payload"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert!(ws.ping_pong().await.is_empty());

    // Legacy graphql-ws `start`.
    let mut legacy = app.ws("graphql-ws").await;
    legacy
        .send_json(json!({"type": "connection_init", "payload": app.signed_in().await}))
        .await;
    assert_eq!(legacy.recv().await["type"], "connection_ack");
    legacy
        .send_json(json!({"id": "deep", "type": "start", "payload": {"query": query}}))
        .await;
    let error = loop {
        let message = legacy.recv().await;
        if message["type"] != "ka" {
            break message;
        }
    };
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["payload"][0]["extensions"]["code"], "BAD_USER_INPUT");
    healthy(&app).await;
}

#[tokio::test]
async fn an_exponential_fragment_chain_is_refused_without_being_expanded() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let bomb = fragment_bomb();
    assert!(bomb.len() < 1_500, "{} bytes", bomb.len());

    // Two at once used to hold both worker threads for minutes.
    let (first, second) = tokio::join!(
        post(&app, json!({"query": bomb})),
        post(&app, json!({"query": bomb}))
    );
    for body in [first, second] {
        assert_eq!(error_code(&body), "QUERY_TOO_COMPLEX", "{body}");
        assert!(body["data"].is_null());
    }
    healthy(&app).await;

    // Over a socket, too.
    let mut ws = app.ws_as(&ada).await;
    ws.subscribe("bomb", &bomb, json!({})).await;
    let error = ws.recv().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(
        error["payload"][0]["extensions"]["code"],
        "QUERY_TOO_COMPLEX"
    );

    // A fragment spread twice is fine while it stays small.
    let fine =
        "query { ...A } fragment A on Query { ...B ...B } fragment B on Query { me { username } }";
    let body = app.gql(Some(&ada.token), fine, json!({})).await;
    assert_eq!(body["data"]["me"]["username"], "ada", "{body}");
}

#[tokio::test]
async fn documents_over_the_size_budget_are_refused() {
    let app = TestApp::spawn().await;
    // Many small tokens: aliases of a cheap field.
    let aliases: String = (0..1_400).map(|i| format!("a{i}: __typename ")).collect();
    let body = post(&app, json!({"query": format!("{{ {aliases} }}")})).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("tokens"), "{message}");

    // Large in bytes: a long comment.
    let padded = format!("{{ __typename }}\n# {}", "x".repeat(40_000));
    let body = post(&app, json!({"query": padded})).await;
    assert_eq!(error_code(&body), "BAD_USER_INPUT", "{body}");
    healthy(&app).await;
}
