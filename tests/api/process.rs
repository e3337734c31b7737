//! The `confab` binary itself: its schema command, exit codes, durability, signals, and the
//! databases it refuses to start on.

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

/// The arguments that serve on a free port from the SQLite file `database`.
fn on_file(database: &Path) -> [String; 6] {
    [
        "--addr".into(),
        "127.0.0.1:0".into(),
        "--jwt-secret".into(),
        SECRET.into(),
        "--database-url".into(),
        format!("sqlite://{}", database.display()),
    ]
}

/// Starts the binary on a free port and returns it with its base URL, read from its log.
fn start(database: &Path) -> (Child, String) {
    start_with(&format!("sqlite://{}", database.display()), &[])
}

/// Starts the binary on a free port with a database URL and more arguments.
pub fn start_with(database_url: &str, args: &[&str]) -> (Child, String) {
    let mut command = confab();
    command
        .args(["--addr", "127.0.0.1:0", "--jwt-secret", SECRET])
        .args(["--database-url", database_url])
        .args(args);
    serve(command)
}

/// Runs a prepared `confab` command until it listens, and returns it with its base URL.
fn serve(mut command: Command) -> (Child, String) {
    let mut child = command
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
    assert_eq!(output.status.code(), Some(2));
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
    // Signalled the moment it says it listens, as a supervisor may: a handler installed any
    // later leaves SIGTERM's default action, death by signal, in that gap.
    let (mut server, _url) = start(&dir.path().join("confab.db"));
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

/// A server that is killed when the test ends, even by a failed assertion: one left running
/// would hold the test's output open.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command that should refuse to start, and returns its output; one still running
/// after a while (it did start) is killed, so the assertions fail rather than hang.
fn run_to_exit(command: &mut Command) -> std::process::Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("confab runs (as root, through setpriv from util-linux)");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait_with_output().expect("output")
}

/// A refused start: not a success, nothing served, and one ERROR line on stderr, returned.
fn refusal(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains("listening on"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "one clear line on stderr: {stderr}");
    errors[0].to_owned()
}

/// A database Confab cannot write is refused at startup, not served read-only with every write
/// failing. Root writes through file modes, so as root the binary runs as `nobody` (65534) on
/// a database owned by root: in a directory that user cannot write (SQLite then fails as early
/// as setting WAL mode), and in one it can (only the startup write probe notices). Otherwise
/// the file is made read-only (mode 0444).
#[tokio::test]
async fn a_database_confab_cannot_write_is_refused_at_startup() {
    use std::os::unix::fs::PermissionsExt as _;
    let chmod = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let top = tempfile::tempdir().unwrap();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let binary = if root {
        // That user must reach the binary: the build directory may sit in root's home.
        let binary = top.path().join("confab");
        std::fs::copy(env!("CARGO_BIN_EXE_confab"), &binary).unwrap();
        chmod(&binary, 0o755);
        chmod(top.path(), 0o755);
        binary
    } else {
        env!("CARGO_BIN_EXE_confab").into()
    };
    let layouts: &[(&str, u32)] = if root {
        &[
            ("read-only directory", 0o755),
            ("writable directory", 0o777),
        ]
    } else {
        &[("read-only file", 0o755)]
    };
    for &(layout, dir_mode) in layouts {
        let dir = top.path().join(layout.replace(' ', "-"));
        std::fs::create_dir(&dir).unwrap();
        let database = dir.join("confab.db");
        // A real Confab database, made and left by a normal start.
        drop(
            confab::store::sqlite::SqliteStore::open(&database)
                .await
                .expect("create the database"),
        );
        chmod(&dir, dir_mode);
        let mut command = if root {
            let mut command = Command::new("setpriv");
            command
                .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&binary);
            command
        } else {
            chmod(&database, 0o444);
            Command::new(&binary)
        };
        command
            .env_remove("CONFAB_DATABASE_URL")
            .env("RUST_LOG", "info")
            .args(on_file(&database));
        let output = run_to_exit(&mut command);

        let line = refusal(&output);
        // Like every refused start.
        assert_eq!(output.status.code(), Some(2), "{layout}: {line}");
        assert!(
            line.contains(&database.display().to_string()),
            "{layout}: {line}"
        );
        assert!(line.contains("read-only"), "{layout}: {line}");
    }
}

/// Ids are minted in each process, so two processes writing one file would break their order:
/// a second Confab on the same file is refused. The lock is the kernel's, so it dies with the
/// process that held it, even by SIGKILL.
#[tokio::test]
async fn a_second_confab_on_one_database_is_refused_and_the_lock_never_goes_stale() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("confab.db");
    let (first, url) = start(&database);
    let mut first = Running(first);

    let second = run_to_exit(confab().args(on_file(&database)));
    let line = refusal(&second);
    assert_eq!(second.status.code(), Some(2), "{line}");
    assert!(line.contains("another Confab"), "{line}");
    assert!(line.contains(&format!("pid {}", first.0.id())), "{line}");
    assert!(line.contains(&database.display().to_string()), "{line}");
    // The first one never noticed.
    let ready = reqwest::get(format!("{url}/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 200);

    first.0.kill().expect("SIGKILL");
    first.0.wait().expect("reaped");
    let (next, url) = start(&database);
    let _next = Running(next);
    let ready = reqwest::get(format!("{url}/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 200);
}

/// A database that stops taking writes while Confab runs turns `/readyz` to 503, naming why,
/// instead of reporting ready while every write fails. The process may write files only up to
/// a size limit (RLIMIT_FSIZE, with SIGXFSZ ignored so that a write fails instead of killing
/// it), so its database stops growing after some messages.
#[tokio::test]
async fn readyz_turns_503_with_the_reason_when_writes_start_failing() {
    use std::os::unix::process::CommandExt as _;
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("confab.db");
    let mut command = confab();
    command.args(on_file(&database));
    // SAFETY: between fork and exec this calls only async-signal-safe functions.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 512 * 1024,
                rlim_max: 512 * 1024,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let (server, url) = serve(command);
    let _server = Running(server);
    let ready = reqwest::get(format!("{url}/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 200);

    let register =
        "mutation { register(username: \"filler\", password: \"fills the disk\") { token } }";
    let token = gql(&url, None, register, json!({})).await["register"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let create = "mutation { createRoom(name: \"attic\") { id } }";
    let room = gql(&url, Some(&token), create, json!({})).await["createRoom"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let send = "mutation($r: ID!, $b: String!) { sendMessage(roomId: $r, body: $b) { id } }";
    let client = reqwest::Client::new();
    let mut failed = None;
    for _ in 0..400 {
        let body: Value = client
            .post(format!("{url}/graphql"))
            .bearer_auth(&token)
            .json(&json!({"query": send, "variables": {"r": room, "b": "x".repeat(4000)}}))
            .send()
            .await
            .expect("POST")
            .json()
            .await
            .expect("JSON");
        if body.get("errors").is_some() {
            failed = Some(body);
            break;
        }
    }
    let failed = failed.expect("a write fails once the files cannot grow");
    assert_eq!(
        failed["errors"][0]["extensions"]["code"], "INTERNAL_SERVER_ERROR",
        "{failed}"
    );

    let ready = reqwest::get(format!("{url}/readyz")).await.expect("readyz");
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.expect("JSON");
    assert_eq!(body["status"], "unavailable", "{body}");
    assert_eq!(body["store"], "refusing writes", "{body}");
    assert!(
        body["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
}

/// `confab admin` changes the database of a stopped server: an invitation code for a server
/// that takes accounts by invitation, and admin rights for an account.
#[tokio::test]
async fn admin_commands_make_invitations_and_admins_for_a_stopped_server() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("confab.db").display());
    let admin = |args: &[&str]| {
        let output = run_to_exit(
            confab()
                .args(["admin"])
                .args(args)
                .args(["--database-url", &url]),
        );
        let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        (output.status.success(), stdout)
    };
    let register = "mutation($u: String!, $c: String) {
        register(username: $u, password: \"correct horse battery\", inviteCode: $c) { token } }";
    let invite = "mutation { createInviteCode }";

    let (mut server, base) = start_with(&url, &["--registration", "invite"]);
    // The first account needs no code.
    gql(&base, None, register, json!({"u": "ada", "c": null})).await;
    server.kill().ok();
    server.wait().ok();

    let (granted, _) = admin(&["grant", "nobody"]);
    assert!(!granted, "granting a name no account has must fail");
    let (made, code) = admin(&["invite"]);
    assert!(made && !code.is_empty(), "{code}");

    let (mut server, base) = start_with(&url, &["--registration", "invite"]);
    let bob = gql(&base, None, register, json!({"u": "bob", "c": code})).await;
    let token = bob["register"]["token"]
        .as_str()
        .expect("bob's token")
        .to_owned();
    let refused: Value = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .bearer_auth(&token)
        .json(&json!({"query": invite}))
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("JSON");
    assert_eq!(refused["errors"][0]["extensions"]["code"], "FORBIDDEN");
    server.kill().ok();
    server.wait().ok();

    let (granted, said) = admin(&["grant", "bob"]);
    assert!(granted, "{said}");
    let (mut server, base) = start_with(&url, &["--registration", "invite"]);
    let made = gql(&base, Some(&token), invite, json!({})).await;
    assert!(made["createInviteCode"].is_string(), "{made}");
    server.kill().ok();
    server.wait().ok();
}

/// `--addr` takes a host name, resolved at startup, as well as IP addresses (IPv6 in brackets);
/// a name that does not resolve is a refused start in one line.
#[test]
fn addr_takes_host_names_and_ip_addresses() {
    let ipv6 = std::net::TcpListener::bind("[::1]:0").is_ok();
    let mut addrs = vec!["localhost:0", "127.0.0.1:0"];
    if ipv6 {
        addrs.push("[::1]:0");
    }
    for addr in addrs {
        let mut command = confab();
        command.args(["--addr", addr, "--database-url", "sqlite::memory:"]);
        command.args(["--jwt-secret", SECRET]);
        let (server, url) = serve(command);
        let _server = Running(server);
        let answer = std::net::TcpStream::connect(url.trim_start_matches("http://"));
        assert!(answer.is_ok(), "{addr}: {url}");
    }

    let output = run_to_exit(confab().args([
        "--addr",
        "no-such-host.invalid:8080",
        "--database-url",
        "sqlite::memory:",
    ]));
    let line = refusal(&output);
    assert_eq!(output.status.code(), Some(2), "{line}");
    assert!(
        line.contains("cannot resolve \"no-such-host.invalid\""),
        "{line}"
    );
}

/// Names every file and directory under `dir`, for a message.
fn listing(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("read the directory")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// A refused start writes nothing: started in an empty directory with the defaults (which
/// create `data/confab.db` and `data/jwt-secret`), it leaves the directory empty, and exits 2
/// like every other refusal.
#[test]
fn a_port_in_use_is_refused_with_code_2_and_nothing_written() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let output = run_to_exit(confab().current_dir(dir.path()).args(["--addr", &addr]));
    let line = refusal(&output);
    assert_eq!(output.status.code(), Some(2), "{line}");
    assert!(line.contains(&format!("cannot listen on {addr}")), "{line}");
    assert!(line.contains("in use"), "{line}");
    assert_eq!(listing(dir.path()), Vec::<String>::new());
}

/// An unreachable Redis refuses the start in one line, fast, and before anything is written:
/// whether nothing listens there, or something accepts connections and never answers. (Only
/// a generous upper bound on the time: the connection managers' retries took about 10 s.)
#[test]
fn an_unreachable_redis_is_one_line_within_seconds_and_nothing_written() {
    // Accepts connections (the kernel completes them) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let silent = format!("redis://{}", silent.local_addr().unwrap());
    for redis in ["redis://127.0.0.1:1", silent.as_str()] {
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let output = run_to_exit(confab().current_dir(dir.path()).args([
            "--addr",
            "127.0.0.1:0",
            "--redis-url",
            redis,
        ]));
        let took = started.elapsed();
        let line = refusal(&output);
        assert_eq!(output.status.code(), Some(2), "{redis}: {line}");
        assert!(line.contains("cannot reach Redis at 127.0.0.1:"), "{line}");
        assert!(
            took < std::time::Duration::from_secs(5),
            "{redis}: refused after {took:?}"
        );
        assert_eq!(listing(dir.path()), Vec::<String>::new(), "{redis}");
    }
}

/// The values a refusal suggests ("e.g. …", "examples: …", and "from MIN to MAX"), parsed
/// out of its message.
fn suggestions(message: &str) -> Vec<String> {
    let mut found = Vec::new();
    for marker in ["e.g. ", "examples: "] {
        for (at, _) in message.match_indices(marker) {
            let rest = &message[at + marker.len()..];
            let end = rest.find([';', '(', ')', '\n']).unwrap_or(rest.len());
            found.extend(
                rest[..end]
                    .split(", ")
                    .flat_map(|part| part.split(" or "))
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty()),
            );
        }
    }
    for (at, _) in message.match_indices("from ") {
        let words: Vec<&str> = message[at + "from ".len()..].split_whitespace().collect();
        if let [min, "to", max, ..] = words[..] {
            let clean = |s: &str| s.trim_end_matches([',', ')', ';']).to_owned();
            found.extend([clean(min), clean(max)]);
        }
    }
    found
}

/// A refused value's message suggests only values its flag takes: each suggestion, given to
/// the flag, gets past it (the start is then refused by the database URL, checked later).
#[test]
fn every_suggestion_in_a_refusal_is_a_value_the_flag_takes() {
    let cases: &[(&str, &str)] = &[
        ("--token-ttl", "forever"),
        ("--token-ttl", "5s"),
        ("--session-ttl", "forever"),
        ("--session-ttl", "30s"),
        ("--presence-timeout", "2h"),
        ("--username-quarantine", "forever"),
        ("--ws-init-timeout", "0s"),
        ("--ws-idle-timeout", "forever"),
        ("--header-read-timeout", "0s"),
        ("--typing-interval", "0s"),
        ("--limit-messages", "0/1s"),
        ("--addr", "localhost"),
        ("--addr", "::1:8080"),
        ("--trusted-proxies", "10.0.0.0/33"),
        ("--cors-origins", "chat.example.com"),
    ];
    for &(flag, bad) in cases {
        let output = run_to_exit(confab().args([flag, bad]));
        assert_eq!(output.status.code(), Some(2), "{flag} {bad}");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let suggested = suggestions(&stderr);
        assert!(
            !suggested.is_empty(),
            "{flag} {bad}: no suggestion in {stderr}"
        );
        for value in suggested {
            let output =
                run_to_exit(confab().args([flag, &value, "--database-url", "postgres://x"]));
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(
                stderr.contains("--database-url must start with"),
                "{flag} {bad} suggests {value:?}, which {flag} refuses: {stderr}"
            );
        }
    }
}

/// `confab healthcheck` (a container's HEALTHCHECK): 0 while the server on `--addr` answers
/// `/healthz`, reaching a server that listens on every interface through loopback; 1 once it
/// is gone.
#[test]
fn healthcheck_is_0_while_the_server_answers_and_1_after() {
    let mut command = confab();
    command.args(["--addr", "0.0.0.0:0", "--database-url", "sqlite::memory:"]);
    command.args(["--jwt-secret", SECRET]);
    let (server, url) = serve(command);
    let mut server = Running(server);
    let port = url.rsplit(':').next().expect("a port").to_owned();
    let check = |addr: &str| run_to_exit(confab().args(["healthcheck", "--addr", addr]));

    for addr in [format!("0.0.0.0:{port}"), format!("localhost:{port}")] {
        let healthy = check(&addr);
        assert!(
            healthy.status.success(),
            "{addr}: {}",
            String::from_utf8_lossy(&healthy.stderr)
        );
    }
    server.0.kill().expect("SIGKILL");
    server.0.wait().expect("reaped");
    let gone = check(&format!("127.0.0.1:{port}"));
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("unhealthy"));
}
