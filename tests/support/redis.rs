//! A real `redis-server` for tests, one per test, restartable on its port.
//!
//! Found on PATH (Debian's `redis-server`; `.ci/run` installs it). Without it, Redis tests are
//! skipped loudly, unless `CONFAB_REQUIRE_REDIS=1` (set by `.ci/run`) makes them fail.

use std::{
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one, or `None` (after saying so) when there is no `redis-server` here.
    pub fn start() -> Option<Self> {
        let found = Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok();
        if !found {
            let why = "no redis-server on PATH for the Redis tests (apt-get install redis-server)";
            if std::env::var("CONFAB_REQUIRE_REDIS").as_deref() == Ok("1") {
                panic!("{why}");
            }
            eprintln!("SKIPPED (Redis): {why}");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = Self { port, child: None };
        server.resume();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (as a crash would, with nothing persisted).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and waits until it accepts connections.
    pub fn resume(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start listening"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
