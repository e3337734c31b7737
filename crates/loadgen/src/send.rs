//! `send`: concurrent senders into one room, no subscribers. First as fast as they can (closed
//! loop: each sender sends its next message when the previous one is acknowledged, i.e.
//! committed): durable sendMessage/s. Then open loop at half that rate, latency measured from
//! each send's scheduled time, for the p99 at a sustainable load.
//!
//! Checks: every send returned an id, ids are distinct and increase per sender, and the room's
//! newest message (read back over GraphQL) is the largest id returned.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use clap::Args;
use serde_json::json;

use crate::{
    Against, Common, Server,
    client::{self, Http, IdBytes, now_ns},
    process::{ServerProcess, own_cpu_time},
    report::{self, Measured, Report, Target},
};

#[derive(Debug, Clone, Default, Args)]
pub struct SendArgs {
    /// Concurrent senders, each on its own connection [default: 64; smoke: 4].
    #[arg(long)]
    pub senders: Option<usize>,
    /// Seconds of each phase [default: 10; smoke: 1].
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Skip the max phase and send at this fixed rate (msg/s) only.
    #[arg(long)]
    pub rate: Option<f64>,
}

pub async fn run(args: &SendArgs, common: &Common, report: &mut Report) -> anyhow::Result<()> {
    let mut confab = None;
    let mut raw = None;
    for server in common.servers(Against::Confab) {
        let measured = run_one(server, args, common, report)
            .await
            .with_context(|| format!("send against {}", server.name()))?;
        match server {
            Server::Confab => confab = Some(measured),
            Server::Raw => raw = Some(measured),
        }
    }
    report.add(
        "send (embedded store, synchronous=FULL)",
        confab.as_ref(),
        raw.as_ref(),
        &[
            ("sendMessage/s (max)", Target::AtLeast { value: 5000.0 }),
            ("latency at half rate p99", Target::AtMost { value: 10.0 }),
        ],
    );
    Ok(())
}

#[derive(Default)]
struct Sent {
    ids: Vec<IdBytes>,
    latencies: Vec<u32>,
}

/// What the senders of one phase share.
struct Sending {
    room: Arc<str>,
    senders: usize,
    /// Open loop: when the schedule starts (client clock) and its rate in msg/s.
    schedule: Option<(u64, f64)>,
    /// Prefix of bodies and client ids, distinct per phase.
    phase: &'static str,
    count: AtomicUsize,
    deadline: Instant,
}

/// One sender: sends until the deadline, or (open loop) its share of the schedule.
async fn sender(mut http: Http, me: usize, sending: Arc<Sending>) -> anyhow::Result<Sent> {
    let Sending {
        room,
        senders,
        schedule,
        phase,
        count,
        deadline,
    } = &*sending;
    let (senders, deadline) = (*senders, *deadline);
    let mut sent = Sent::default();
    let mut n = 0usize;
    loop {
        let index = me + n * senders;
        let due_ns = match *schedule {
            Some((start_ns, rate)) => {
                let due_ns = start_ns + (index as f64 * 1e9 / rate) as u64;
                let now = now_ns();
                if due_ns > now {
                    tokio::time::sleep(Duration::from_nanos(due_ns - now)).await;
                }
                due_ns
            }
            None => now_ns(),
        };
        if Instant::now() >= deadline {
            break;
        }
        let tag = format!("{phase}{index}");
        let id = http
            .send_message(room, &tag, &tag)
            .await
            .with_context(|| format!("sending message {tag}"))?;
        sent.latencies
            .push((now_ns().saturating_sub(due_ns) / 1000).min(u32::MAX as u64) as u32);
        if let Some(previous) = sent.ids.last()
            && id <= *previous
        {
            bail!("sendMessage returned ids out of order for one sender");
        }
        sent.ids.push(id);
        count.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
    Ok(sent)
}

struct Phase {
    sent: usize,
    elapsed: Duration,
    latencies: hdrhistogram::Histogram<u64>,
    ids: Vec<IdBytes>,
}

async fn phase(
    addr: std::net::SocketAddr,
    token: &str,
    room: &Arc<str>,
    senders: usize,
    rate: Option<f64>,
    seconds: f64,
    name: &'static str,
) -> anyhow::Result<Phase> {
    let mut connections = Vec::with_capacity(senders);
    for _ in 0..senders {
        connections.push(Http::connect(addr, Some(token)).await?);
    }
    let started = Instant::now();
    let sending = Arc::new(Sending {
        room: room.clone(),
        senders,
        schedule: rate.map(|r| (now_ns() + 20_000_000, r)),
        phase: name,
        count: AtomicUsize::new(0),
        deadline: started + Duration::from_secs_f64(seconds),
    });
    let tasks: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(me, http)| tokio::spawn(sender(http, me, sending.clone())))
        .collect();
    let mut latencies = report::histogram();
    let mut ids = Vec::new();
    for task in tasks {
        let sent = task.await??;
        for us in sent.latencies {
            report::record(&mut latencies, u64::from(us));
        }
        ids.extend(sent.ids);
    }
    Ok(Phase {
        sent: ids.len(),
        elapsed: started.elapsed(),
        latencies,
        ids,
    })
}

async fn run_one(
    server: Server,
    args: &SendArgs,
    common: &Common,
    report: &mut Report,
) -> anyhow::Result<Measured> {
    eprintln!("loadgen: send against {}", server.name());
    let senders = args
        .senders
        .unwrap_or(if common.smoke { 4 } else { 64 })
        .max(1);
    let seconds = args
        .seconds
        .unwrap_or(if common.smoke { 1.0 } else { 10.0 })
        .min(common.phase_limit().as_secs_f64());
    let mut process = ServerProcess::start(server, common.target.as_deref())?;
    let addr = process.addr;
    let (token, room) =
        client::user_and_room(addr, &format!("lg-send-{}", client::run_tag())).await?;
    let room: Arc<str> = room.into();
    let mut measured = Measured::default();
    let mut all_ids = Vec::new();

    let rate = match args.rate {
        Some(rate) => rate,
        None => {
            let server_cpu = process.cpu_time();
            let client_cpu = own_cpu_time();
            let max = phase(addr, &token, &room, senders, None, seconds, "a").await?;
            let per_second = max.sent as f64 / max.elapsed.as_secs_f64();
            measured.put("sendMessage/s (max)", "msg/s", per_second);
            measured.put_latency("latency at max", &max.latencies);
            if let Some((after, before)) = process.cpu_time().zip(server_cpu) {
                measured.put(
                    "server CPU at max",
                    "cores",
                    after.saturating_sub(before).as_secs_f64() / max.elapsed.as_secs_f64(),
                );
            }
            measured.put(
                "client CPU at max",
                "cores",
                own_cpu_time().saturating_sub(client_cpu).as_secs_f64() / max.elapsed.as_secs_f64(),
            );
            all_ids.extend(max.ids);
            per_second / 2.0
        }
    };
    let half = phase(addr, &token, &room, senders, Some(rate), seconds, "b").await?;
    measured.put("fixed rate", "msg/s", rate);
    measured.put(
        "achieved rate",
        "msg/s",
        half.sent as f64 / half.elapsed.as_secs_f64(),
    );
    measured.put_latency("latency at half rate", &half.latencies);
    all_ids.extend(half.ids);

    // Checks: distinct ids, and the newest stored message is the newest acknowledged.
    let total = all_ids.len();
    ensure!(total > 0, "no message was sent");
    all_ids.sort_unstable();
    all_ids.dedup();
    ensure!(
        all_ids.len() == total,
        "sendMessage returned {} duplicate ids",
        total - all_ids.len()
    );
    if server == Server::Confab {
        let mut http = Http::connect(addr, Some(&token)).await?;
        let page = http
            .graphql(
                "query($r:ID!){messages(roomId:$r,last:1){edges{node{id}}}}",
                json!({"r": &*room}),
                "messages",
            )
            .await?;
        let newest = page["edges"][0]["node"]["id"].as_str().unwrap_or_default();
        let expected = String::from_utf8_lossy(all_ids.last().expect("not empty")).into_owned();
        ensure!(
            newest == expected,
            "the room's newest message is {newest:?}, not the last acknowledged {expected:?}"
        );
    }
    process.stop();
    report.note(format!(
        "send against {}: {total} messages from {senders} senders, every id distinct and increasing per sender",
        server.name()
    ));
    Ok(measured)
}
