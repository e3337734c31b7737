//! `team`: a whole team at work. N simulated users, each with ONE graphql-transport-ws socket
//! carrying `myEvents` and the `roomEvents` of the room it has open, act at the per-user rates
//! of a chat load-test agent's simulated users, while every delivery is checked.
//!
//! **Shape** (fixed seed, so runs repeat): R = max(8, N/20) public rooms; each user draws 4 to
//! 8 of them (uniformly many) without replacement, room r (from 1) with weight 1/r, so a few
//! rooms are large and most are small; a room stops taking members at `--max-room` (500). Each
//! room starts with 40 messages of history. Users, sessions, rooms, memberships and history
//! are seeded through Confab's own store on the server's SQLite file while no server runs (as
//! `history` seeds), so 10,000 users cost seconds rather than 10,000 argon2 hashes: one hash
//! is computed and shared, each user gets a stored session, and its access token is issued by
//! Confab's own `Tokens` with the key the child server is given (`process::JWT_SECRET`).
//! The server then runs on that file with durable writes (its default synchronous setting).
//!
//! **Timeline**: users connect spread over `--ramp` seconds (socket, `connection_init`,
//! `myEvents`, `roomEvents` of their first room, a `ping` whose `pong` proves both live); once
//! every user is live, actions run for `--duration` seconds; then deliveries drain and the
//! checks run. No message is sent before everyone is live, so every member is owed every
//! message sent.
//!
//! **Rates**: a user idles, then acts, then idles again. The idle time is uniform in
//! [min, 2·avg − min) as the agent draws it (min 1 s, avg 20 s); the action is drawn by the
//! agent's weights, mapped onto Confab as follows (every API call is GraphQL over HTTP
//! POST /graphql with the user's token, through a shared pool of keep-alive connections; the
//! socket carries only the two subscriptions):
//!
//! | agent action (weight) | here |
//! | --- | --- |
//! | SwitchChannel (6.52), OpenDirectOrGroupChannel (0.98) | `complete` the open room's `roomEvents`, subscribe to another of the user's rooms (ping until live), `messages(last: 30)`, `markRead` to its newest |
//! | ScrollChannel (1.99), ViewGlobalThreads (0.60), ClickPermalink (0.30), ViewThread (0.28) | `messages(last: 30, before:)` an older page of the open room |
//! | UnreadCheck (1.0) | `myRooms` with `unreadCount` and `mentionCount` |
//! | CreatePost (1.0) | `setTyping(true)`, then `sendMessage` to the open room |
//! | UpdateThreadRead (0.32) | `markRead` of the open room to its newest message seen |
//! | ReconnectWebSocket (0.144) | close the socket, reconnect, `myEvents(after: <last cursor>)`, `roomEvents(after: <last id>)` |
//! | AddReaction (0.13), EditPost (0.04) | `editMessage` of one of the user's 5 latest messages (Confab has no reactions) |
//! | drafts (DeleteDraft 1.41, UpsertDraft 0.50, GetDrafts 0.04), the other 38 actions (0.17) | nothing: Confab has no drafts; the user just idles on |
//!
//! **Checks**: every acknowledged `sendMessage` reaches every member of its room exactly once
//! as `RoomActivity` on `myEvents`, across reconnects, in increasing id order per room. On
//! `roomEvents`, a room's subscription (reconnects resume it with `after`) must bring every
//! message newer than the page read once the subscription was live, up to the last one it
//! brought (all of them for the rooms still open at the end), once and in id order. Anything
//! lost, duplicated or out of order fails the run. A reconnect needs a cursor to resume from:
//! a user who has heard nothing yet skips it (counted).

mod check;
mod seed;
mod socket;
mod user;

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use clap::Args;
use hdrhistogram::Histogram;
use tokio::sync::watch;

use crate::{
    Common,
    client::{HttpPool, Rng},
    process::{ServerProcess, machine_cpu_time, own_cpu_time, sqlite_path},
    report::{self, Measured, Report, Target},
};
use socket::{Heard, Link};
use user::{Run, User};

/// The SLOs.
const DELIVERY_P99_MS: f64 = 500.0;
const CALL_P99_MS: f64 = 200.0;

#[derive(Debug, Clone, Default, Args)]
pub struct TeamArgs {
    /// Simulated users [default: 10000; smoke: 20].
    #[arg(long)]
    pub users: Option<usize>,
    /// Seconds of actions once every user is live [default: 60; smoke: 3].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds over which the users connect [default: users / 500, at least 2; smoke: 1].
    #[arg(long)]
    pub ramp: Option<f64>,
    /// Mean idle time between a user's actions, ms [default: 20000; smoke: 300].
    #[arg(long)]
    pub avg_idle_ms: Option<u64>,
    /// Shortest idle time, ms [default: 1000; smoke: 50].
    #[arg(long)]
    pub min_idle_ms: Option<u64>,
    /// Most members a room takes [default: 500].
    #[arg(long)]
    pub max_room: Option<usize>,
    /// Keep-alive HTTP connections the users share [default: users / 8, at least 256; smoke:
    /// 8]: enough that calls do not queue in the tool while the server answers within the SLO.
    #[arg(long)]
    pub http_pool: Option<usize>,
    /// Raise the users (from --users, default 1000) x1.5 per step until an SLO breaks, up to
    /// what the open-files limit allows; report the largest number that held.
    #[arg(long)]
    pub find_ceiling: bool,
}

/// The arguments with their defaults applied.
#[derive(Debug, Clone)]
struct Plan {
    users: usize,
    duration: Duration,
    ramp: Duration,
    avg_idle_ms: u64,
    min_idle_ms: u64,
    max_room: usize,
    pool: usize,
}

impl Plan {
    fn new(args: &TeamArgs, smoke: bool, users: usize) -> anyhow::Result<Self> {
        let avg_idle_ms = args.avg_idle_ms.unwrap_or(if smoke { 300 } else { 20_000 });
        let min_idle_ms = args.min_idle_ms.unwrap_or(if smoke { 50 } else { 1000 });
        ensure!(
            min_idle_ms < avg_idle_ms,
            "--min-idle-ms must be below --avg-idle-ms"
        );
        let ramp = args.ramp.unwrap_or(if smoke {
            1.0
        } else {
            (users as f64 / 500.0).max(2.0)
        });
        Ok(Self {
            users,
            duration: Duration::from_secs_f64(
                args.duration
                    .unwrap_or(if smoke { 3.0 } else { 60.0 })
                    .max(0.1),
            ),
            ramp: Duration::from_secs_f64(ramp.max(0.0)),
            avg_idle_ms,
            min_idle_ms,
            max_room: args.max_room.unwrap_or(500).max(1),
            pool: args
                .http_pool
                .unwrap_or(if smoke { 8 } else { (users / 8).max(256) })
                .max(1),
        })
    }

    /// A user's next idle time, as the agent draws it: uniform in [min, 2·avg − min).
    fn idle(&self, rng: &mut Rng) -> Duration {
        let span = (2 * (self.avg_idle_ms - self.min_idle_ms)) as f64;
        Duration::from_millis(self.min_idle_ms + (rng.unit() * span) as u64)
    }
}

/// What an agent action becomes here (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Switch,
    Scroll,
    Unread,
    Post,
    MarkRead,
    Reconnect,
    Edit,
    Idle,
}

/// The agent's actions and weights, as mapped.
const MIX: [(&str, f64, Action); 14] = [
    ("SwitchChannel", 6.5219, Action::Switch),
    ("ScrollChannel", 1.9873, Action::Scroll),
    ("UnreadCheck", 1.0, Action::Unread),
    ("CreatePost", 1.0, Action::Post),
    ("OpenDirectOrGroupChannel", 0.9843, Action::Switch),
    ("ViewGlobalThreads", 0.6023, Action::Scroll),
    ("UpdateThreadRead", 0.3236, Action::MarkRead),
    ("ClickPermalink", 0.3, Action::Scroll),
    ("ViewThread", 0.2841, Action::Scroll),
    ("ReconnectWebSocket", 0.144, Action::Reconnect),
    ("AddReaction", 0.1306, Action::Edit),
    ("EditPost", 0.04, Action::Edit),
    ("drafts (no drafts here)", 1.951, Action::Idle),
    ("the other 38 actions", 0.1749, Action::Idle),
];

fn pick(rng: &mut Rng) -> usize {
    let total: f64 = MIX.iter().map(|m| m.1).sum();
    let mut x = rng.unit() * total;
    for (i, (_, weight, _)) in MIX.iter().enumerate() {
        if x < *weight {
            return i;
        }
        x -= weight;
    }
    MIX.len() - 1
}

/// The API calls timed, by kind.
#[derive(Debug, Clone, Copy)]
enum Call {
    NewestPage,
    OlderPage,
    MarkRead,
    MyRooms,
    SetTyping,
    SendMessage,
    EditMessage,
    /// Not an API call: closing a socket and having both subscriptions live again.
    Reconnect,
}

const CALLS: [(&str, Call); 8] = [
    ("messages (newest page)", Call::NewestPage),
    ("messages (older page)", Call::OlderPage),
    ("markRead", Call::MarkRead),
    ("myRooms", Call::MyRooms),
    ("setTyping", Call::SetTyping),
    ("sendMessage", Call::SendMessage),
    ("editMessage", Call::EditMessage),
    ("reconnect (socket + 2 subscriptions)", Call::Reconnect),
];

/// The open-files limit (soft), which bounds the sockets either process can hold.
fn open_files_limit() -> u64 {
    // SAFETY: getrlimit fills the struct it is given.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        limit.rlim_cur
    }
}

/// The result of one size: its figures, the latency SLOs it broke, and what went wrong
/// (deliveries lost, duplicated or unknown; failed calls and sockets).
struct Step {
    measured: Measured,
    slow: Vec<String>,
    failures: Vec<String>,
}

pub async fn run(args: &TeamArgs, common: &Common, report: &mut Report) -> anyhow::Result<()> {
    if common.against == Some(crate::Against::Raw) {
        bail!("team needs accounts, rooms and a store: the raw baseline has none");
    }
    ensure!(
        common.target.is_none(),
        "team seeds the server's SQLite file directly, so it cannot run against --target"
    );
    // Each process holds a socket per user plus the pool (an eighth of the users unless given),
    // and 512 to spare; the server's own connection cap is 20,000.
    let budget = (open_files_limit().min(20_000) as usize).saturating_sub(512);
    let most = match args.http_pool {
        Some(pool) => budget.saturating_sub(pool),
        None => budget * 8 / 9,
    };
    let first = args.users.unwrap_or(if common.smoke {
        20
    } else if args.find_ceiling {
        1000
    } else {
        10_000
    });
    ensure!(
        (1..=most).contains(&first),
        "--users must be between 1 and {most} (the open-files limit and the server's connection cap)"
    );
    if !args.find_ceiling {
        let plan = Plan::new(args, common.smoke, first)?;
        let step = run_step(&plan, common, report).await?;
        add_step(report, &plan, &step);
        if !step.failures.is_empty() {
            bail!("team {first} users: {}", step.failures.join("; "));
        }
        return Ok(());
    }
    let mut users = first;
    let mut held: Option<usize> = None;
    loop {
        let plan = Plan::new(args, common.smoke, users)?;
        let step = run_step(&plan, common, report).await?;
        add_step(report, &plan, &step);
        // Failures while the latencies held are not overload: they are wrong.
        if step.slow.is_empty() && !step.failures.is_empty() {
            bail!("team {users} users: {}", step.failures.join("; "));
        }
        if !step.slow.is_empty() || !step.failures.is_empty() {
            let broken: Vec<String> = step.slow.iter().chain(&step.failures).cloned().collect();
            report.note(format!(
                "team ceiling: {} held; at {users} users these SLOs broke: {}",
                held.map_or("no size".into(), |n| format!("{n} users")),
                broken.join("; ")
            ));
            return Ok(());
        }
        held = Some(users);
        let next = ((users as f64 * 1.5 / 100.0).ceil() as usize * 100).min(most);
        if next <= users {
            report.note(format!(
                "team ceiling: {users} users held, and the open-files limit or the server's connection cap allows no more ({most})"
            ));
            return Ok(());
        }
        users = next;
    }
}

fn add_step(report: &mut Report, plan: &Plan, step: &Step) {
    let mut targets: Vec<(String, Target)> = vec![
        (
            "delivery p99".into(),
            Target::AtMost {
                value: DELIVERY_P99_MS,
            },
        ),
        ("lost".into(), Target::AtMost { value: 0.0 }),
        ("duplicated".into(), Target::AtMost { value: 0.0 }),
        ("API errors".into(), Target::AtMost { value: 0.0 }),
        ("sockets failed".into(), Target::AtMost { value: 0.0 }),
    ];
    for (name, call) in CALLS {
        if !matches!(call, Call::Reconnect) {
            targets.push((format!("{name} p99"), Target::AtMost { value: CALL_P99_MS }));
        }
    }
    let targets: Vec<(&str, Target)> = targets.iter().map(|(n, t)| (n.as_str(), *t)).collect();
    report.add(
        &format!("team {} users", plan.users),
        Some(&step.measured),
        None,
        &targets,
    );
}

async fn run_step(plan: &Plan, common: &Common, report: &mut Report) -> anyhow::Result<Step> {
    let n = plan.users;
    eprintln!("loadgen: team, {n} users, against confab");
    let shape = seed::shape(n, plan.max_room)?;
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let path = sqlite_path(&dir);
    let seeding = Instant::now();
    let seeded = seed::seed(&path, &shape).await?;
    let memberships: usize = shape.rooms.iter().map(Vec::len).sum();
    let largest = shape.rooms.iter().map(Vec::len).max().unwrap_or(0);
    report.note(format!(
        "team {n}: seeded {n} users with sessions, {} rooms (largest {largest}, {memberships} memberships), {} messages through Confab's store in {:.1} s",
        shape.rooms.len(),
        shape.rooms.len() * seed::HISTORY,
        seeding.elapsed().as_secs_f64()
    ));
    let mut process = ServerProcess::spawn_confab(&path)?;
    let run = Arc::new(Run {
        plan: plan.clone(),
        addr: process.addr,
        pool: HttpPool::new(process.addr, plan.pool),
        room_index: seeded
            .room_ids
            .iter()
            .enumerate()
            .map(|(r, id)| (id.clone(), r as u32))
            .collect(),
        room_ids: seeded.room_ids,
        members: shape.rooms.iter().map(|m| m.len() as u32).collect(),
        connected: AtomicUsize::new(0),
        connect_failed: AtomicUsize::new(0),
        delivered: AtomicU64::new(0),
        owed: AtomicU64::new(0),
        room_delivered: AtomicU64::new(0),
        actions: Default::default(),
        skipped_reconnects: AtomicU64::new(0),
        skipped_edits: AtomicU64::new(0),
        dropped_on_close: AtomicU64::new(0),
        calls: Mutex::new(CALLS.iter().map(|_| report::histogram()).collect()),
        call_errors: Default::default(),
        first_error: Mutex::new(None),
        sent: Mutex::new(Vec::new()),
        unacked: Mutex::new(Vec::new()),
    });

    // Connect, spread over the ramp.
    let (go, going) = watch::channel(None);
    let started = Instant::now();
    let mut links = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    for (u, rooms) in shape.of_user.iter().enumerate() {
        let link = Arc::new(Link {
            heard: Mutex::new(Heard::default()),
            pongs: watch::channel(0).0,
            closing: AtomicBool::new(false),
        });
        links.push(link.clone());
        let mut rng = Rng(0x5eed_0000 ^ (u as u64).wrapping_mul(0x9e37_79b9));
        let open = rng.below(rooms.len());
        let user = User {
            index: u as u32,
            bearer: seeded.bearers[u].clone(),
            rooms: rooms.clone(),
            open,
            session: 0,
            ops: 0,
            scroll: None,
            seq: 0,
            edits: 0,
            own: VecDeque::new(),
            rng,
            link,
            run: run.clone(),
            sink: None,
            reader: None,
        };
        let connect_at = started + plan.ramp.mul_f64(u as f64 / n as f64);
        let newest = seeded.newest[rooms[open] as usize];
        tasks.push(tokio::spawn(user::user_task(
            user,
            newest,
            connect_at,
            going.clone(),
        )));
    }
    let limit = plan.ramp + common.phase_limit();
    while run.connected.load(Ordering::SeqCst) + run.connect_failed.load(Ordering::SeqCst) < n
        && started.elapsed() < limit
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_time = started.elapsed();
    let connected = run.connected.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(if common.smoke { 200 } else { 2000 })).await;
    let rss_connected = process.rss_kib();

    // Act.
    let server_cpu = process.cpu_time();
    let client_cpu = own_cpu_time();
    let machine_cpu = machine_cpu_time();
    let acting = Instant::now();
    let _ = go.send(Some(acting + plan.duration));
    let mut users = Vec::with_capacity(n);
    for task in tasks {
        users.push(task.await.context("a user's task failed")?);
    }
    let acted = acting.elapsed();
    let server_cpu = process
        .cpu_time()
        .zip(server_cpu)
        .map(|(after, before)| after.saturating_sub(before));
    let client_cpu = own_cpu_time().saturating_sub(client_cpu);
    let machine_cpu = machine_cpu_time()
        .zip(machine_cpu)
        .map(|(after, before)| after.saturating_sub(before));
    let rss = process.rss_kib();

    // Drain: until every owed RoomActivity came (bounded), then a little more for roomEvents.
    let draining = Instant::now();
    while run.delivered.load(Ordering::Relaxed) < run.owed.load(Ordering::Relaxed)
        && draining.elapsed() < common.phase_limit().min(Duration::from_secs(30))
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(if common.smoke { 200 } else { 1000 })).await;
    for user in &mut users {
        if let Some(reader) = user.reader.take() {
            reader.abort();
        }
    }
    drop(users);
    process.stop();

    let sent = std::mem::take(&mut *run.sent.lock().unwrap_or_else(|p| p.into_inner()));
    let unacked = std::mem::take(&mut *run.unacked.lock().unwrap_or_else(|p| p.into_inner()));
    let verdict = check::check(&shape, &links, &sent, &unacked);
    let mut latencies = report::histogram();
    for link in &links {
        for &us in &link.heard().latencies {
            report::record(&mut latencies, u64::from(us));
        }
    }

    let secs = acted.as_secs_f64().max(0.001);
    let actions: u64 = run.actions.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    let api_errors: u64 = run
        .call_errors
        .iter()
        .map(|e| e.load(Ordering::Relaxed))
        .sum();
    let failed_sockets = n - connected;
    let mut measured = Measured::default();
    measured.put("users", "users", n as f64);
    measured.put("rooms", "rooms", shape.rooms.len() as f64);
    measured.put("largest room", "members", largest as f64);
    measured.put("time to connect all", "s", connect_time.as_secs_f64());
    measured.put("actions/s", "actions/s", actions as f64 / secs);
    measured.put("messages sent/s", "msg/s", sent.len() as f64 / secs);
    measured.put(
        "myEvents deliveries/s",
        "events/s",
        run.delivered.load(Ordering::Relaxed) as f64 / secs,
    );
    measured.put(
        "roomEvents deliveries/s",
        "events/s",
        run.room_delivered.load(Ordering::Relaxed) as f64 / secs,
    );
    measured.put_latency("delivery", &latencies);
    {
        let calls = run.calls.lock().unwrap_or_else(|p| p.into_inner());
        for ((name, _), histogram) in CALLS.iter().zip(calls.iter()) {
            measured.put_latency(name, histogram);
        }
    }
    if let Some(cpu) = server_cpu {
        measured.put("server CPU", "cores", cpu.as_secs_f64() / secs);
    }
    measured.put("client CPU", "cores", client_cpu.as_secs_f64() / secs);
    // The machine is shared: what others took is what the server could not have.
    if let (Some(machine), Some(server)) = (machine_cpu, server_cpu) {
        let others = machine.saturating_sub(server).saturating_sub(client_cpu);
        measured.put(
            "CPU of other processes",
            "cores",
            others.as_secs_f64() / secs,
        );
    }
    if let Some(rss) = rss_connected {
        measured.put("server RSS, all connected", "MiB", rss as f64 / 1024.0);
    }
    if let Some(rss) = rss {
        measured.put("server RSS, end of actions", "MiB", rss as f64 / 1024.0);
    }
    measured.put("lost", "events", (verdict.lost + verdict.room_lost) as f64);
    measured.put(
        "duplicated",
        "events",
        (verdict.duplicated + verdict.room_duplicated) as f64,
    );
    measured.put("API errors", "calls", api_errors as f64);
    measured.put("sockets failed", "sockets", failed_sockets as f64);

    let mix: Vec<String> = MIX
        .iter()
        .zip(&run.actions)
        .map(|((name, _, _), count)| format!("{name} {}", count.load(Ordering::Relaxed)))
        .collect();
    report.note(format!(
        "team {n}: {actions} actions in {secs:.1} s ({}); reconnects skipped for want of a cursor: {}, edits skipped for want of an own message: {}",
        mix.join(", "),
        run.skipped_reconnects.load(Ordering::Relaxed),
        run.skipped_edits.load(Ordering::Relaxed),
    ));
    report.note(format!(
        "team {n}: sockets the server dropped instead of answering the tool's close frame (on reconnect): {}",
        run.dropped_on_close.load(Ordering::Relaxed)
    ));
    report.note(format!(
        "team {n}: checked {} RoomActivity owed on myEvents ({} lost, {} duplicated or out of order, {} unknown) and {} MessageAdded owed on roomEvents ({} lost, {} duplicated or out of order; {} room subscriptions unchecked, their page read failed)",
        verdict.owed,
        verdict.lost,
        verdict.duplicated,
        verdict.unknown,
        verdict.room_owed,
        verdict.room_lost,
        verdict.room_duplicated,
        verdict.room_unchecked,
    ));
    if let Some(first) = run
        .first_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
    {
        report.note(format!("team {n}: first API error: {first}"));
    }
    for error in verdict.socket_errors.iter().take(3) {
        report.note(format!("team {n}: socket: {error}"));
    }

    let mut slow = Vec::new();
    let p99 = |h: &Histogram<u64>| h.value_at_quantile(0.99) as f64 / 1000.0;
    if p99(&latencies) > DELIVERY_P99_MS {
        slow.push(format!(
            "delivery p99 {:.1} ms > {DELIVERY_P99_MS} ms",
            p99(&latencies)
        ));
    }
    {
        let calls = run.calls.lock().unwrap_or_else(|p| p.into_inner());
        for ((name, call), histogram) in CALLS.iter().zip(calls.iter()) {
            if !matches!(call, Call::Reconnect)
                && !histogram.is_empty()
                && p99(histogram) > CALL_P99_MS
            {
                slow.push(format!(
                    "{name} p99 {:.1} ms > {CALL_P99_MS} ms",
                    p99(histogram)
                ));
            }
        }
    }
    let mut failures = Vec::new();
    if api_errors > 0 {
        failures.push(format!("{api_errors} API calls failed"));
    }
    if failed_sockets > 0 {
        failures.push(format!("{failed_sockets} sockets failed to connect"));
    }
    let errors: usize = links.iter().map(|l| l.heard().errors.len()).sum();
    if errors > 0 {
        failures.push(format!("{errors} socket errors"));
    }
    if verdict.lost + verdict.duplicated + verdict.unknown > 0 {
        failures.push(format!(
            "myEvents: {} lost, {} duplicated or out of order, {} unknown",
            verdict.lost, verdict.duplicated, verdict.unknown
        ));
    }
    if verdict.room_lost + verdict.room_duplicated > 0 {
        failures.push(format!(
            "roomEvents: {} lost, {} duplicated or out of order",
            verdict.room_lost, verdict.room_duplicated
        ));
    }
    Ok(Step {
        measured,
        slow,
        failures,
    })
}
