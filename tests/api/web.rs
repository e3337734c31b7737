//! The pages work offline and carry the headers that keep them and their tokens safe: GraphiQL
//! loads nothing from another host, both pages forbid framing and inline scripts, and no API
//! answer may be stored by a browser or a proxy.

use reqwest::{StatusCode, header};
use serde_json::{Value, json};

use crate::helpers::TestApp;

async fn graphiql_page(app: &TestApp) -> reqwest::Response {
    let response = app
        .http
        .get(app.url("/graphql"))
        .header(header::ACCEPT, "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header on {}", response.url()))
        .to_str()
        .unwrap()
}

/// Every `src="…"` and `href="…"` in a page.
fn references(html: &str) -> Vec<&str> {
    ["src=\"", "href=\""]
        .iter()
        .flat_map(|attribute| {
            html.match_indices(attribute)
                .map(|(at, _)| at + attribute.len())
        })
        .map(|start| &html[start..start + html[start..].find('"').unwrap()])
        .collect()
}

/// The value of one CSP directive (`None` when absent).
fn directive<'a>(policy: &'a str, name: &str) -> Option<&'a str> {
    policy.split(';').map(str::trim).find_map(|part| {
        let (key, value) = part.split_once(' ').unwrap_or((part, ""));
        (key == name).then_some(value)
    })
}

#[tokio::test]
async fn graphiql_loads_nothing_from_another_host_and_everything_it_loads_is_served() {
    let app = TestApp::spawn().await;
    let html = graphiql_page(&app).await.text().await.unwrap();

    for other_host in ["http://", "https://", "\"//", "'//", "(//"] {
        assert!(!html.contains(other_host), "{other_host} in {html}");
    }
    let loaded: Vec<&str> = references(&html)
        .into_iter()
        .filter(|url| !url.starts_with("data:"))
        .collect();
    let scripts = loaded.iter().filter(|url| url.ends_with(".js")).count();
    let styles = loaded.iter().filter(|url| url.ends_with(".css")).count();
    // React, ReactDOM, graphql-ws, GraphiQL and the page's own script; two stylesheets.
    assert_eq!((scripts, styles), (5, 2), "{loaded:?}");
    for url in loaded {
        assert!(url.starts_with("/graphiql/"), "{url} is Confab's own");
        let response = app.http.get(app.url(url)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        let expected = if url.ends_with(".js") {
            "text/javascript; charset=utf-8"
        } else {
            "text/css; charset=utf-8"
        };
        assert_eq!(header(&response, "content-type"), expected, "{url}");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
        // A third-party file's URL names its version, so it may be kept for good.
        let caching = if url.contains('@') {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        };
        assert_eq!(header(&response, "cache-control"), caching, "{url}");
        assert!(!response.bytes().await.unwrap().is_empty(), "{url}");
    }
}

#[tokio::test]
async fn pages_forbid_framing_inline_scripts_and_other_hosts() {
    let app = TestApp::spawn().await;
    let chat = app.http.get(app.url("/")).send().await.unwrap();
    let graphiql = graphiql_page(&app).await;

    for page in [&chat, &graphiql] {
        let policy = header(page, "content-security-policy");
        for (name, value) in [
            ("default-src", "'self'"),
            ("script-src", "'self'"),
            ("connect-src", "'self'"),
            ("img-src", "'self' data:"),
            ("font-src", "'self' data:"),
            ("object-src", "'none'"),
            ("base-uri", "'none'"),
            ("form-action", "'self'"),
            ("frame-ancestors", "'none'"),
        ] {
            assert_eq!(directive(policy, name), Some(value), "{name} in {policy}");
        }
        assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"));
        assert_eq!(header(page, "x-frame-options"), "DENY");
        assert_eq!(header(page, "x-content-type-options"), "nosniff");
        assert_eq!(header(page, "referrer-policy"), "no-referrer");
        assert_eq!(header(page, "cache-control"), "no-cache");
    }
    let chat_policy = header(&chat, "content-security-policy");
    assert_eq!(directive(chat_policy, "style-src"), Some("'self'"));

    // GraphiQL's dialogs need a <style> element: allowed by a nonce fresh for each page, the one
    // the page hands to GraphiQL, and by nothing broader.
    let policy = header(&graphiql, "content-security-policy").to_owned();
    let style_src = directive(&policy, "style-src").unwrap().to_owned();
    let html = graphiql.text().await.unwrap();
    let nonce = html
        .split("name=\"confab-style-nonce\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the page carries its nonce");
    assert!(nonce.len() >= 32, "{nonce}");
    assert!(
        style_src.starts_with(&format!("'self' 'nonce-{nonce}' 'unsafe-hashes' 'sha256-")),
        "{style_src}"
    );
    let again = graphiql_page(&app).await;
    assert!(
        !header(&again, "content-security-policy").contains(nonce),
        "a nonce is never reused"
    );
}

#[tokio::test]
async fn api_answers_are_never_stored_and_never_sniffed() {
    let app = TestApp::spawn().await;
    let credentials = json!({"username": "grace", "password": "correct horse battery"});
    let register = app
        .http
        .post(app.url("/register"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(register.status(), StatusCode::CREATED);
    let login = app
        .http
        .post(app.url("/login"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let gql_login = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({
            "query": "mutation($u: String!, $p: String!) { login(username: $u, password: $p) { token } }",
            "variables": {"u": "grace", "p": "correct horse battery"},
        }))
        .send()
        .await
        .unwrap();
    let gql_get = app
        .http
        .get(app.url("/graphql"))
        .query(&[("query", "{ __typename }")])
        .send()
        .await
        .unwrap();
    let missing = app
        .http
        .get(app.url("/no/such/route"))
        .send()
        .await
        .unwrap();

    for response in [&register, &login, &gql_login, &gql_get, &missing] {
        let url = response.url().path();
        assert!(
            header(response, "content-type").contains("json"),
            "{url} answers JSON"
        );
        assert_eq!(header(response, "cache-control"), "no-store", "{url}");
        assert_eq!(
            header(response, "x-content-type-options"),
            "nosniff",
            "{url}"
        );
        assert_eq!(header(response, "referrer-policy"), "no-referrer", "{url}");
        assert!(
            response.headers().get("content-security-policy").is_none(),
            "{url}: the page policy is for pages"
        );
    }
    assert!(login.json::<Value>().await.unwrap()["access_token"].is_string());
    let body = gql_login.json::<Value>().await.unwrap();
    assert!(body["data"]["login"]["token"].is_string(), "{body}");
}

#[tokio::test]
async fn the_chat_page_files_are_revalidated_on_every_load() {
    let app = TestApp::spawn().await;
    for (path, content_type) in [
        ("/", "text/html; charset=utf-8"),
        ("/playground/app.js", "text/javascript; charset=utf-8"),
        ("/playground/style.css", "text/css; charset=utf-8"),
    ] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&response, "content-type"), content_type, "{path}");
        assert_eq!(header(&response, "cache-control"), "no-cache", "{path}");
        assert_eq!(header(&response, "x-content-type-options"), "nosniff");
    }
}
