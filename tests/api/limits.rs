//! Query cost: a list or connection costs its page size times what one item selects, so one
//! request cannot ask for an unbounded response by repeating or nesting pages.

use async_graphql::{Request, Schema, Variables, extensions::Analyzer};
use confab::graphql::{MAX_COMPLEXITY, Mutation, Query, Subscription};
use serde_json::{Value, json};

use crate::helpers::{ROOM_EVENTS, TestApp};

/// What a client loads for its main screen: who it is, the directory, a room's latest page.
const ORDINARY: &str = "query($r: ID!) {
    me { id username }
    rooms(first: 50) { edges { node { id name memberCount } } }
    messages(roomId: $r, last: 100) {
        edges { cursor node { id body createdAt editedAt clientId sender { id username } } }
        pageInfo { hasPreviousPage hasNextPage startCursor endCursor }
    }
}";

/// The cost the schema gives `query`, measured on a schema without limits (and without a
/// service: only validation matters here).
async fn cost(query: &str) -> usize {
    let schema = Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
    .extension(Analyzer)
    .finish();
    let variables = Variables::from_json(json!({"r": "0123456789abcdef01234567"}));
    let response = schema
        .execute(Request::new(query).variables(variables))
        .await;
    let extensions = serde_json::to_value(&response.extensions).expect("extensions as JSON");
    extensions["analyzer"]["complexity"]
        .as_u64()
        .unwrap_or_else(|| panic!("no complexity for {query}: {extensions}")) as usize
}

/// Asserts the request was refused as a whole for its cost, before anything ran.
fn assert_too_complex(body: &Value) {
    let shown: String = body.to_string().chars().take(500).collect();
    let errors = body["errors"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    assert!(!errors.is_empty(), "expected a refusal, got {shown}");
    assert!(body["data"].is_null(), "nothing may run: {shown}");
    let message = errors[0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("too complex"), "{shown}");
    assert_eq!(
        errors[0]["extensions"]["code"], "QUERY_TOO_COMPLEX",
        "{shown}"
    );
}

#[tokio::test]
async fn a_document_the_schema_refuses_says_so_with_a_code() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    for (query, code) in [
        ("{ me { id nonsense } }", "GRAPHQL_VALIDATION_FAILED"),
        (
            "mutation { createRoom(name: \"x\", visibility: SECRET) { id } }",
            "GRAPHQL_VALIDATION_FAILED",
        ),
    ] {
        let body = app.gql(Some(&ada.token), query, json!({})).await;
        assert_eq!(body["errors"][0]["extensions"]["code"], code, "{body}");
    }
}

#[tokio::test]
async fn an_ordinary_screen_costs_its_pages_and_fits_with_room_to_spare() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let room = app.create_room(&ada, "lobby").await;
    app.create_room(&ada, "random").await;
    for i in 0..3 {
        app.send(&ada, &room, &format!("message {i}")).await;
    }

    let data = app
        .data(Some(&ada.token), ORDINARY, json!({"r": room}))
        .await;
    assert_eq!(data["me"]["username"], "ada");
    assert_eq!(data["rooms"]["edges"].as_array().unwrap().len(), 2);
    let edges = data["messages"]["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 3);
    assert_eq!(edges[2]["node"]["body"], "message 2");
    assert_eq!(edges[2]["node"]["sender"]["username"], "ada");

    // me 1 + 2; rooms 1 + 50 × (edges 1 + node 1 + 3); messages 1 + 100 × (edges 1 + cursor 1 +
    // node 1 + 5 scalars + sender 1 + 2, pageInfo 1 + 4): each page counts once per item.
    let ordinary = cost(ORDINARY).await;
    assert_eq!(ordinary, 3 + (1 + 50 * 5) + (1 + 100 * 16));
    assert!(
        2 * ordinary <= MAX_COMPLEXITY,
        "an ordinary screen ({ordinary}) should fit twice in the limit ({MAX_COMPLEXITY})"
    );
    // Subscriptions select one event at a time, and stay cheap.
    assert!(cost(ROOM_EVENTS).await < 100);
}

#[tokio::test]
async fn repeating_a_page_under_aliases_is_refused() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    let room = app.create_room(&ada, "lobby").await;
    app.send(&ada, &room, "hello").await;

    let fields: String = (0..20)
        .map(|i| {
            format!("a{i}: messages(roomId: $r, last: 100) {{ edges {{ node {{ body }} }} }}\n")
        })
        .collect();
    let query = format!("query($r: ID!) {{\n{fields}}}");
    let body = app.gql(Some(&ada.token), &query, json!({"r": room})).await;
    assert_too_complex(&body);

    // One such page is cheap.
    let one = "query($r: ID!) { messages(roomId: $r, last: 100) { edges { node { body } } } }";
    let data = app.data(Some(&ada.token), one, json!({"r": room})).await;
    assert_eq!(data["messages"]["edges"][0]["node"]["body"], "hello");
}

#[tokio::test]
async fn nesting_pages_multiplies_their_cost_and_is_refused() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;
    app.create_room(&ada, "lobby").await;

    let query = "{ rooms(first: 100) { edges { node { members(first: 1000) { username } } } } }";
    let body = app.gql(Some(&ada.token), query, json!({})).await;
    assert_too_complex(&body);

    // Either page alone is fine.
    let query = "{ rooms(first: 100) { edges { node { members(first: 10) { username } } } } }";
    let data = app.data(Some(&ada.token), query, json!({})).await;
    assert_eq!(
        data["rooms"]["edges"][0]["node"]["members"],
        json!([{"username": "ada"}])
    );
}

#[tokio::test]
async fn one_request_cannot_queue_many_password_hashes_or_operations() {
    let app = TestApp::spawn().await;
    app.register("ada").await;
    let logins: String = (0..20)
        .map(|i| {
            format!(
                "l{i}: login(username: \"ada\", password: \"correct horse battery\") {{ token }} "
            )
        })
        .collect();
    let body = app
        .gql(
            None,
            &format!("mutation {{ {logins} }}"),
            serde_json::json!({}),
        )
        .await;
    assert!(body["data"].is_null(), "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap_or("")
            .contains("complex"),
        "{body}"
    );

    let batch: Vec<_> = (0..11)
        .map(|_| serde_json::json!({"query": "{ __typename }"}))
        .collect();
    let response = app
        .http
        .post(app.url("/graphql"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::BAD_REQUEST);
    let batch: Vec<_> = (0..10)
        .map(|_| serde_json::json!({"query": "{ __typename }"}))
        .collect();
    let response = app
        .http
        .post(app.url("/graphql"))
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let answers: serde_json::Value = response.json().await.unwrap();
    assert_eq!(answers.as_array().map(Vec::len), Some(10));
}
