//! `login`: logins/s at the server's default (OWASP) argon2id parameters, with a probe on
//! `/healthz` every few milliseconds throughout, first alone (the baseline) and then during the
//! logins: its p99 shows whether the async runtime stays responsive while argon2 runs.
//!
//! Checks: every login answers a token for the right user; every probe answers 200 `ok`.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use clap::Args;
use hyper::{Method, StatusCode};
use serde_json::json;

use crate::{
    Against, Common, Server,
    client::{self, Http},
    process::ServerProcess,
    report::{self, Measured, Report, Target},
};

#[derive(Debug, Clone, Default, Args)]
pub struct LoginArgs {
    /// Concurrent logins in flight [default: 8].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Logins in all [default: 500; smoke: 10].
    #[arg(long)]
    pub logins: Option<usize>,
    /// Milliseconds between two /healthz probes [default: 5].
    #[arg(long)]
    pub probe_ms: Option<u64>,
}

pub async fn run(args: &LoginArgs, common: &Common, report: &mut Report) -> anyhow::Result<()> {
    let mut confab = None;
    let mut raw = None;
    for server in common.servers(Against::Confab) {
        let measured = run_one(server, args, common, report)
            .await
            .with_context(|| format!("login against {}", server.name()))?;
        match server {
            Server::Confab => confab = Some(measured),
            Server::Raw => raw = Some(measured),
        }
    }
    report.add(
        "login (argon2id m=19MiB t=2 p=1)",
        confab.as_ref(),
        raw.as_ref(),
        &[
            ("logins/s", Target::AtLeast { value: 100.0 }),
            (
                "logins/s over the argon2 limit",
                Target::AtLeast { value: 0.9 },
            ),
        ],
    );
    Ok(())
}

/// Probes `/healthz` every `every` until `stop`, returning the latencies in microseconds.
async fn probe(
    addr: SocketAddr,
    every: Duration,
    stop: Arc<AtomicBool>,
    limit: Duration,
) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    let mut http = Http::connect(addr, None).await?;
    let mut latencies = report::histogram();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) && started.elapsed() < limit {
        tick.tick().await;
        let sent = Instant::now();
        let (status, body) = http.request(Method::GET, "/healthz", None).await?;
        ensure!(
            status == StatusCode::OK && &body[..] == b"ok",
            "/healthz answered {status} {body:?}"
        );
        report::record(&mut latencies, sent.elapsed().as_micros() as u64);
    }
    Ok(latencies)
}

async fn run_one(
    server: Server,
    args: &LoginArgs,
    common: &Common,
    report: &mut Report,
) -> anyhow::Result<Measured> {
    eprintln!("loadgen: login against {}", server.name());
    let concurrency = args.concurrency.unwrap_or(8).max(1);
    let logins = args
        .logins
        .unwrap_or(if common.smoke { 10 } else { 500 })
        .max(1);
    let every = Duration::from_millis(args.probe_ms.unwrap_or(5).max(1));
    // Before the server starts, so nothing else runs: what one hash costs here.
    let hash_time = single_hash_time(if common.smoke { 2 } else { 9 }).await?;
    let all_cores = all_cores_hash_rate(if common.smoke { 1 } else { 20 }).await?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut process = ServerProcess::start(server, common.target.as_deref())?;
    let addr = process.addr;
    let username = format!("lg-login-{}", client::run_tag());
    Http::connect(addr, None).await?.register(&username).await?;

    // The probe alone first: what "responsive" looks like on this machine.
    let stop = Arc::new(AtomicBool::new(false));
    let idle_probe = tokio::spawn(probe(
        addr,
        every,
        stop.clone(),
        Duration::from_secs(if common.smoke { 1 } else { 3 }),
    ));
    let idle = idle_probe.await??;

    let stop = Arc::new(AtomicBool::new(false));
    let busy_probe = tokio::spawn(probe(addr, every, stop.clone(), common.phase_limit()));
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + common.phase_limit();
    let server_cpu = process.cpu_time();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut http = Http::connect(addr, None).await?;
        let next = next.clone();
        let username = username.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < logins && Instant::now() < deadline {
                let sent = Instant::now();
                let answer = http
                    .graphql(
                        client::LOGIN,
                        json!({"u": username, "p": client::PASSWORD}),
                        "login",
                    )
                    .await?;
                latencies.push(sent.elapsed().as_micros() as u64);
                ensure!(
                    answer["token"].as_str().is_some_and(|t| !t.is_empty())
                        && answer["user"]["username"] == username.as_str(),
                    "login answered {answer}"
                );
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = report::histogram();
    let mut done = 0usize;
    for task in tasks {
        for us in task.await?? {
            report::record(&mut latencies, us);
            done += 1;
        }
    }
    let elapsed = started.elapsed();
    let server_cpu = process
        .cpu_time()
        .zip(server_cpu)
        .map(|(after, before)| after.saturating_sub(before).as_secs_f64() / elapsed.as_secs_f64());
    stop.store(true, Ordering::Relaxed);
    let busy = busy_probe.await??;
    process.stop();

    let mut measured = Measured::default();
    let per_second = done as f64 / elapsed.as_secs_f64();
    // What the cores could hash if they did nothing else: the ceiling for logins.
    let limit = cores as f64 / hash_time.as_secs_f64();
    measured.put("logins/s", "login/s", per_second);
    measured.put(
        "one argon2 hash, alone",
        "ms",
        hash_time.as_secs_f64() * 1e3,
    );
    measured.put("argon2 limit (cores / one hash)", "login/s", limit);
    measured.put(
        "logins/s over the argon2 limit",
        "ratio",
        per_second / limit,
    );
    measured.put(
        "argon2 hashes/s, every core hashing, alone",
        "hash/s",
        all_cores,
    );
    measured.put("logins/s over that", "ratio", per_second / all_cores);
    measured.put_latency("login", &latencies);
    if let Some(cores) = server_cpu {
        measured.put("server CPU", "cores", cores);
    }
    measured.put_latency("/healthz probe idle", &idle);
    measured.put_latency("/healthz probe during logins", &busy);
    report.note(format!(
        "login against {}: {done} logins answered a token for {username}; {} probes answered ok",
        server.name(),
        idle.len() + busy.len()
    ));
    Ok(measured)
}

/// The median time of one hash at the server's parameters, through the server's own hasher,
/// hashes run one after another (after one to warm its buffer pool).
async fn single_hash_time(samples: usize) -> anyhow::Result<Duration> {
    let passwords = confab::auth::Passwords::new();
    passwords.hash(client::PASSWORD, None).await?;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        let started = Instant::now();
        passwords.hash(client::PASSWORD, None).await?;
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// Hashes per second with every core hashing at once through the server's own hasher (it runs
/// one per core), `rounds` hashes per core: what the machine gives when the hashes share its
/// memory bandwidth and caches, as the server's do.
async fn all_cores_hash_rate(rounds: usize) -> anyhow::Result<f64> {
    let passwords = confab::auth::Passwords::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let hashes = cores * rounds.max(1);
    let started = Instant::now();
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..hashes {
        let passwords = passwords.clone();
        running.spawn(async move { passwords.hash(client::PASSWORD, None).await });
    }
    while let Some(done) = running.join_next().await {
        done??;
    }
    Ok(hashes as f64 / started.elapsed().as_secs_f64())
}
