//! The servers under test as child processes: started by re-executing this binary with a hidden
//! subcommand, so their RSS and CPU time are their own and `cargo run -p loadgen` needs no
//! other binary; stopped with SIGTERM (then SIGKILL) whatever way the run ends.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use confab::{
    config::{Config, Secret},
    server::Application,
};

use crate::Server;

/// The signing key both the child server and (for the history seed) the tool use.
pub const JWT_SECRET: &str = "loadgen-signing-key-loadgen-signing-key";
/// An environment variable: a command (with its arguments) the child server runs under.
pub const WRAPPER: &str = "LOADGEN_SERVER_WRAPPER";
/// The line a child prints once it listens: `LISTENING <addr>`.
const LISTENING: &str = "LISTENING ";

#[derive(Debug, Clone, Args)]
pub struct ServeConfabArgs {
    /// `sqlite://PATH` or `sqlite::memory:`.
    #[arg(long)]
    database_url: String,
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
}

/// The hidden `serve-confab` subcommand: Confab exactly as `main` builds it, on a port of its
/// choosing, announcing the bound address on stdout.
pub async fn serve_confab(args: ServeConfabArgs) -> ExitCode {
    init_tracing();
    let mut config = Config::ephemeral();
    config.addr = args.addr.into();
    config.database_url = args.database_url;
    config.jwt_secret = Some(Secret::new(JWT_SECRET));
    let app = match Application::build(&config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("serve-confab: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    announce(app.addr());
    match app.run_until_stopped(terminated()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("serve-confab: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs as the `confab` binary does (RUST_LOG, `info` by default), to stderr without colour:
/// stdout carries the `LISTENING` announcement.
pub fn init_tracing() {
    confab::telemetry::init("info", std::io::stderr, false);
}

pub fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{LISTENING}{addr}");
    let _ = out.flush();
}

/// Resolves on SIGTERM or SIGINT.
pub async fn terminated() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// A server under test: a child process we own, or one already running at `--target`.
pub struct ServerProcess {
    pub addr: SocketAddr,
    child: Option<Child>,
    /// Keeps the SQLite file's directory alive as long as the server.
    _dir: Option<tempfile::TempDir>,
}

impl ServerProcess {
    /// Starts `server` on a fresh SQLite file in a temporary directory (Confab), or in memory
    /// (raw), or targets `--target`.
    pub fn start(server: Server, target: Option<&str>) -> anyhow::Result<Self> {
        if let Some(target) = target {
            if server == Server::Raw {
                bail!("--target names a Confab server; the raw baseline always runs locally");
            }
            return Ok(Self {
                addr: parse_target(target)?,
                child: None,
                _dir: None,
            });
        }
        match server {
            Server::Confab => {
                let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
                let path = dir.path().join("confab.db");
                let mut started = Self::spawn_confab(&path)?;
                started._dir = Some(dir);
                Ok(started)
            }
            Server::Raw => Self::spawn(&["serve-raw"]),
        }
    }

    /// Starts Confab on an existing SQLite file (the history seed).
    pub fn spawn_confab(path: &Path) -> anyhow::Result<Self> {
        let url = format!("sqlite://{}", path.display());
        Self::spawn(&["serve-confab", "--database-url", &url])
    }

    fn spawn(args: &[&str]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find this executable")?;
        // A profiler to run the server under, e.g. `valgrind --tool=callgrind`: its words,
        // then the server's command line (see README "Performance").
        let wrapper = std::env::var(WRAPPER).unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut command = std::process::Command::new(program);
                command.args(words).arg(exe);
                command
            }
            None => std::process::Command::new(exe),
        };
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the server process")?;
        let stdout = child.stdout.take().expect("stdout is piped");
        // Reading the announcement on a thread keeps a silent child from hanging the run.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let addr = lines.find_map(|line| {
                line.ok()
                    .and_then(|l| l.strip_prefix(LISTENING).map(str::to_owned))
            });
            let _ = tx.send(addr);
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let mut process = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            child: Some(child),
            _dir: None,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(Some(addr)) => {
                process.addr = addr.parse().context("the server announced a bad address")?;
                Ok(process)
            }
            Ok(None) => Err(anyhow!("the server process exited before listening")),
            Err(_) => Err(anyhow!("the server did not listen within 60 s")),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's resident set, in KiB (None for a `--target` server).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// The server's CPU time so far (user + system).
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Some(Duration::from_millis(ticks * 1000 / hz))
    }

    /// Stops the server: SIGTERM, up to 10 s for a graceful exit, then SIGKILL.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill with a pid we own and a valid signal.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("loadgen: the server did not stop within 10 s of SIGTERM; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn parse_target(target: &str) -> anyhow::Result<SocketAddr> {
    let hostport = target
        .strip_prefix("http://")
        .unwrap_or(target)
        .trim_end_matches('/');
    use std::net::ToSocketAddrs as _;
    hostport
        .to_socket_addrs()
        .with_context(|| format!("--target {target:?} is not http://HOST:PORT"))?
        .next()
        .ok_or_else(|| anyhow!("--target {target:?} resolves to no address"))
}

/// This process's own CPU time (user + system), for the client side of the figures.
pub fn own_cpu_time() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// A temporary directory's SQLite file path, for the history seed.
pub fn sqlite_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("confab.db")
}

/// The CPU time every process on the machine has used so far (all cores, user + system +
/// interrupts, idle and I/O wait excluded), from `/proc/stat`: with the server's and this
/// process's own, it tells how much of the machine other processes took during a run.
pub fn machine_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let busy: u64 = fields.iter().take(8).sum::<u64>()
        - fields.get(3).copied().unwrap_or(0)
        - fields.get(4).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_millis(busy * 1000 / hz))
}
