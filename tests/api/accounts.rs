use serde_json::json;

use crate::helpers::{TestApp, error_code, error_field};

const REGISTER: &str = "mutation($u: String!, $p: String!) { register(username: $u, password: $p) { token user { id username } } }";
const LOGIN: &str = "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token user { id username } } }";

#[tokio::test]
async fn register_log_in_and_ask_who_i_am() {
    let app = TestApp::spawn().await;
    let ada = app.register("ada").await;

    let login = app
        .data(
            None,
            LOGIN,
            json!({"u": "ADA", "p": "correct horse battery"}),
        )
        .await;
    assert_eq!(login["login"]["user"]["id"], ada.id.as_str());
    let token = login["login"]["token"].as_str().unwrap();

    let me = app
        .data(Some(token), "{ me { id username createdAt } }", json!({}))
        .await;
    assert_eq!(me["me"]["username"], "ada");
    assert_eq!(me["me"]["id"], ada.id.as_str());
    let created = me["me"]["createdAt"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(created).is_ok(),
        "{created}"
    );
}

#[tokio::test]
async fn registration_input_is_checked_field_by_field() {
    let app = TestApp::spawn().await;
    let cases = [
        ("ab", "long enough pw", "username"),
        (&"a".repeat(33) as &str, "long enough pw", "username"),
        ("has space", "long enough pw", "username"),
        ("emoji😀", "long enough pw", "username"),
        ("valid_name", "short", "password"),
        ("valid_name", &"p".repeat(129), "password"),
    ];
    for (username, password, field) in cases {
        let body = app
            .gql(None, REGISTER, json!({"u": username, "p": password}))
            .await;
        assert_eq!(
            error_code(&body),
            "BAD_USER_INPUT",
            "{username:?}/{password:?}: {body}"
        );
        assert_eq!(error_field(&body), field, "{username:?}: {body}");
    }
}

#[tokio::test]
async fn usernames_are_unique_in_any_letter_case() {
    let app = TestApp::spawn().await;
    app.register("Grace.Hopper").await;
    let body = app
        .gql(
            None,
            REGISTER,
            json!({"u": "grace.hopper", "p": "another password"}),
        )
        .await;
    assert_eq!(error_code(&body), "CONFLICT", "{body}");
    assert_eq!(error_field(&body), "username");
}

#[tokio::test]
async fn wrong_passwords_and_unknown_users_get_the_same_answer() {
    let app = TestApp::spawn().await;
    app.register("linus").await;
    let wrong = app
        .gql(None, LOGIN, json!({"u": "linus", "p": "not the password"}))
        .await;
    let unknown = app
        .gql(None, LOGIN, json!({"u": "nobody", "p": "not the password"}))
        .await;
    assert_eq!(error_code(&wrong), "UNAUTHENTICATED");
    assert_eq!(error_code(&unknown), "UNAUTHENTICATED");
    assert_eq!(
        wrong["errors"][0]["message"],
        unknown["errors"][0]["message"]
    );
}

#[tokio::test]
async fn tokens_are_required_and_checked() {
    let app = TestApp::spawn().await;
    let anonymous = app.gql(None, "{ me { id } }", json!({})).await;
    assert_eq!(error_code(&anonymous), "UNAUTHENTICATED");

    let forged = app
        .gql(Some("eyJhbGciOiJub25lIn0.e30."), "{ me { id } }", json!({}))
        .await;
    assert_eq!(error_code(&forged), "UNAUTHENTICATED");

    // A token signed with another server's key is refused.
    let other = TestApp::spawn_with(|c| {
        c.jwt_secret = Some(confab::config::Secret::new(
            "another-secret-another-secret-another",
        ))
    })
    .await;
    let stranger = other.register("stranger").await;
    let body = app
        .gql(Some(&stranger.token), "{ me { id } }", json!({}))
        .await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED");

    // Logging in works even when a stale token is still attached.
    app.register("stale").await;
    let body = app
        .gql(
            Some("garbage"),
            LOGIN,
            json!({"u": "stale", "p": "correct horse battery"}),
        )
        .await;
    assert!(body["data"]["login"]["token"].is_string(), "{body}");
}
