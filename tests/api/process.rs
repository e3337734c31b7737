//! The `confab` binary itself: its schema command, exit codes, durability and signals.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
};

use serde_json::{Value, json};

const SECRET: &str = "process-test-secret-process-test-secret";

fn confab() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_confab"));
    command
        .env_remove("CONFAB_DATABASE_URL")
        .env_remove("CONFAB_JWT_SECRET")
        // These tests are about the process, not its rate limits.
        .env("CONFAB_RATE_LIMITS", "off")
        .env("RUST_LOG", "info");
    command
}

/// Starts the binary on a free port and returns it with its base URL, read from its log.
fn start(database: &Path) -> (Child, String) {
    start_with(&format!("sqlite://{}", database.display()), &[])
}

/// Starts the binary on a free port with a database URL and more arguments.
pub fn start_with(database_url: &str, args: &[&str]) -> (Child, String) {
    let mut child = confab()
        .args(["--addr", "127.0.0.1:0", "--jwt-secret", SECRET])
        .args(["--database-url", database_url])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("confab starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("confab logs before it exits")
            .expect("a log line");
        if let Some(at) = line.find("listening on http://") {
            break line[at + "listening on ".len()..].trim().to_owned();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, url)
}

pub async fn gql(url: &str, token: Option<&str>, query: &str, variables: Value) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("{url}/graphql"))
        .json(&json!({"query": query, "variables": variables}));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let body: Value = request
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("JSON");
    assert!(body.get("errors").is_none(), "{body}");
    body["data"].clone()
}

#[test]
fn schema_graphql_is_what_confab_schema_prints() {
    let committed = include_str!("../../schema.graphql");
    assert_eq!(
        confab::graphql::sdl(),
        committed,
        "schema.graphql is stale: run `cargo run -- schema > schema.graphql`"
    );
    let printed = confab().arg("schema").output().expect("confab schema");
    assert!(printed.status.success());
    assert_eq!(String::from_utf8_lossy(&printed.stdout), committed);
}

#[test]
fn configuration_mistakes_exit_2_with_one_clear_line() {
    let cases: [(&[&str], &str); 8] = [
        (&["--database-url", "mongodb://"], "not a valid MongoDB URI"),
        (
            &["--database-url", "postgres://x"],
            "--database-url must start with",
        ),
        (&["--jwt-secret", "short"], "at least 32 bytes"),
        (&["--token-ttl", "forever"], "token-ttl"),
        (&["--rate-limits", "maybe"], "--rate-limits"),
        (&["--limit-messages", "0/1s"], "not a rate"),
        (
            &["--trusted-proxies", "10.0.0.0/33"],
            "not an address or CIDR",
        ),
        (&["--cors-origins", "chat.example.com"], "not an origin"),
    ];
    for (args, expected) in cases {
        let output = confab()
            .args(["--addr", "127.0.0.1:0"])
            .args(args)
            .output()
            .expect("confab runs");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(all.contains(expected), "{args:?}: {all}");
        assert!(!all.contains("panicked"), "{all}");
    }
}

#[test]
fn the_open_files_limit_is_raised_to_the_hard_limit_and_logged() {
    // A soft limit of 256, as a service manager might leave it.
    let mut child = Command::new("sh")
        .args(["-c", r#"ulimit -S -n 256 && exec "$0" "$@""#])
        .arg(env!("CARGO_BIN_EXE_confab"))
        .args(["--addr", "127.0.0.1:0", "--database-url", "sqlite::memory:"])
        .args(["--jwt-secret", SECRET])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("confab starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut limit_line = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("a log line");
        if line.contains("open files limit:") {
            limit_line = Some(line.clone());
        }
        if line.contains("listening on") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = limit_line.expect("the limit is logged");
    let number = |after: &str| -> u64 {
        let at = line.find(after).expect(after) + after.len();
        line[at..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{line}"))
    };
    assert_eq!(number("(was"), 256, "{line}");
    assert_eq!(number("open files limit:"), number("hard limit"), "{line}");
}

#[test]
fn an_unreachable_mongodb_is_one_clear_line_naming_the_host() {
    let output = confab()
        .args(["--addr", "127.0.0.1:0", "--database-url"])
        .arg("mongodb://127.0.0.1:1/chat?serverSelectionTimeoutMS=300")
        .output()
        .expect("confab runs");
    assert!(!output.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let errors: Vec<&str> = all.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{all}");
    assert!(
        errors[0].contains("cannot reach MongoDB at 127.0.0.1:1"),
        "{all}"
    );
    assert!(!all.contains("panicked"), "{all}");
}

#[tokio::test]
async fn an_acknowledged_message_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("confab.db");
    let (mut server, url) = start(&database);

    let register = gql(
        &url,
        None,
        "mutation { register(username: \"durable\", password: \"kill dash nine\") { token } }",
        json!({}),
    )
    .await;
    let token = register["register"]["token"].as_str().unwrap().to_owned();
    let room = gql(
        &url,
        Some(&token),
        "mutation { createRoom(name: \"vault\") { id } }",
        json!({}),
    )
    .await;
    let room = room["createRoom"]["id"].as_str().unwrap().to_owned();
    let send = "mutation($r: ID!, $b: String!) { sendMessage(roomId: $r, body: $b) { id } }";
    let mut sent = Vec::new();
    for i in 0..20 {
        let data = gql(
            &url,
            Some(&token),
            send,
            json!({"r": room, "b": format!("kept {i}")}),
        )
        .await;
        sent.push(data["sendMessage"]["id"].as_str().unwrap().to_owned());
    }

    server.kill().expect("SIGKILL");
    server.wait().expect("reaped");

    let (mut server, url) = start(&database);
    let page = gql(
        &url,
        Some(&token),
        "query($r: ID!) { messages(roomId: $r, first: 100) { edges { node { id } } } }",
        json!({"r": room}),
    )
    .await;
    let kept: Vec<&str> = page["messages"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(kept, sent);
    server.kill().ok();
    server.wait().ok();
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = start(&dir.path().join("confab.db"));
    let health = reqwest::get(format!("{url}/healthz"))
        .await
        .expect("healthz");
    assert!(health.status().is_success());
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || server.wait())
        .await
        .unwrap()
        .expect("exit status");
    assert!(exit.success(), "{exit:?}");
}
