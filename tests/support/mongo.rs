//! A MongoDB-wire server for tests.
//!
//! `CONFAB_TEST_MONGODB_URI` when set (a real MongoDB works: `mongodb://127.0.0.1:27017`).
//! Otherwise the jongodb binary that `.ci/run` installs under `tests/services/` (run
//! `npm ci --prefix tests/services` to get it), started once per test process on a free port
//! and stopped when the process exits. With neither, Mongo tests are skipped loudly, unless
//! `CONFAB_REQUIRE_MONGODB=1` (set by `.ci/run`), which makes them fail instead.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

const JONGODB: &str =
    "tests/services/node_modules/@jongodb/memory-server-bin-linux-x64-gnu/bin/jongodb";

/// The server's URI (no database in it), or `None` when Mongo tests should be skipped.
pub fn server_uri() -> Option<String> {
    static URI: OnceLock<Option<String>> = OnceLock::new();
    URI.get_or_init(find_or_start).clone()
}

/// A database name no other test uses (jongodb cannot drop databases, so none is reused).
pub fn fresh_database() -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "confab_test_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn find_or_start() -> Option<String> {
    if let Ok(uri) = std::env::var("CONFAB_TEST_MONGODB_URI") {
        return Some(uri.trim_end_matches('/').to_owned());
    }
    let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(JONGODB);
    if !binary.exists() {
        let why = format!(
            "no MongoDB for the Mongo tests: set CONFAB_TEST_MONGODB_URI, or run `npm ci --prefix tests/services` to install jongodb ({} is missing)",
            binary.display()
        );
        if std::env::var("CONFAB_REQUIRE_MONGODB").as_deref() == Ok("1") {
            panic!("{why}");
        }
        eprintln!("SKIPPED (MongoDB): {why}");
        return None;
    }
    Some(start(&binary))
}

/// Starts jongodb under a watchdog shell that stops it once this test process is gone.
fn start(binary: &std::path::Path) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let script = format!(
        "'{}' --port={port} & server=$!; trap 'kill $server 2>/dev/null' EXIT; \
         while kill -0 {} 2>/dev/null && kill -0 $server 2>/dev/null; do sleep 0.5; done",
        binary.display(),
        std::process::id()
    );
    let mut watchdog = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start jongodb");
    let stdout = watchdog.stdout.take().expect("jongodb's stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("JONGODB_URI=") => break,
            Some(Ok(_)) => continue,
            _ => panic!("jongodb exited before printing JONGODB_URI"),
        }
    }
    // Drain its output, and reap the watchdog once it ends with this process.
    std::thread::spawn(move || {
        for _ in lines {}
        let _ = watchdog.wait();
    });
    format!("mongodb://127.0.0.1:{port}")
}
