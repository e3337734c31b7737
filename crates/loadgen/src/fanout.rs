//! `fanout`: N subscribers in one room; senders at a fixed rate, or as fast as the fan-out
//! allows (a window of messages not yet delivered to every subscriber).
//!
//! A message's body carries its index and the time its send was due (fixed rate: the scheduled
//! time, so a sender that falls behind shows up as latency, not as a slower schedule) or issued
//! (max rate). Each subscriber checks that message ids strictly increase (no duplicate, no
//! reordering), and at the end that it got as many messages as were sent, with the same ids:
//! the fingerprint of the ids it received equals that of the ids `sendMessage` returned.

use std::{
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use clap::Args;
use futures_util::StreamExt as _;
use tokio::sync::{Semaphore, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::{
    Against, Common, Server,
    client::{self, Http, IdBytes, Incoming, Ws, id_bytes, id_hash, now_ns},
    process::{ServerProcess, own_cpu_time},
    report::{self, Measured, Report, Target},
};

/// Handshakes in flight while subscribers connect.
const CONNECT_PARALLEL: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Messages per second, all senders together.
    Fixed(f64),
    /// As fast as the fan-out allows.
    Max,
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "max" {
            return Ok(Self::Max);
        }
        match s.parse::<f64>() {
            Ok(r) if r > 0.0 && r.is_finite() => Ok(Self::Fixed(r)),
            _ => Err("a positive number of messages per second, or `max`".into()),
        }
    }
}

#[derive(Debug, Clone, Default, Args)]
pub struct FanoutArgs {
    /// Subscribers in the room [default: 1000; smoke: 20].
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// Messages per second (all senders together), or `max` [default: 20].
    #[arg(long)]
    pub rate: Option<Rate>,
    /// How long a fixed-rate run sends, in seconds [default: 10; smoke: 1].
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Messages a `max` run sends [default: 3000; smoke: 100].
    #[arg(long)]
    pub messages: Option<usize>,
    /// Sending connections [default: 4].
    #[arg(long)]
    pub senders: Option<usize>,
    /// `max` runs: messages sent but not yet delivered to every subscriber [default: 32].
    #[arg(long)]
    pub window: Option<usize>,
}

impl FanoutArgs {
    /// The runs of the target table: 1k subscribers at 20 and 300 msg/s, 10k at 2 msg/s, 1k at max
    /// rate.
    pub fn target_table(smoke: bool) -> Vec<Self> {
        let case = |subscribers, rate| Self {
            subscribers: Some(if smoke { 20 } else { subscribers }),
            rate: Some(rate),
            ..Self::default()
        };
        vec![
            case(1000, Rate::Fixed(20.0)),
            case(1000, Rate::Fixed(300.0)),
            case(10_000, Rate::Fixed(2.0)),
            case(1000, Rate::Max),
        ]
    }
}

/// The arguments with their defaults applied.
#[derive(Debug, Clone)]
struct Plan {
    subscribers: usize,
    rate: Rate,
    messages: usize,
    senders: usize,
    window: usize,
}

impl Plan {
    fn new(args: &FanoutArgs, smoke: bool) -> anyhow::Result<Self> {
        let rate = args.rate.unwrap_or(Rate::Fixed(20.0));
        let seconds = args.seconds.unwrap_or(if smoke { 1.0 } else { 10.0 });
        let messages = match rate {
            Rate::Fixed(r) => (r * seconds).round().max(1.0) as usize,
            Rate::Max => args.messages.unwrap_or(if smoke { 100 } else { 3000 }),
        };
        let plan = Self {
            subscribers: args.subscribers.unwrap_or(if smoke { 20 } else { 1000 }),
            rate,
            messages,
            senders: args.senders.unwrap_or(4).max(1),
            window: args.window.unwrap_or(32).max(1),
        };
        ensure!(plan.subscribers > 0, "--subscribers must be at least 1");
        Ok(plan)
    }

    fn name(&self) -> String {
        match self.rate {
            Rate::Fixed(r) => format!("fanout {} subs @ {r} msg/s", self.subscribers),
            Rate::Max => format!("fanout {} subs, max rate", self.subscribers),
        }
    }
}

pub async fn run(args: &FanoutArgs, common: &Common, report: &mut Report) -> anyhow::Result<()> {
    let plan = Plan::new(args, common.smoke)?;
    let mut confab = None;
    let mut raw = None;
    for server in common.servers(Against::Both) {
        let measured = run_one(server, &plan, common, report)
            .await
            .with_context(|| format!("{} against {}", plan.name(), server.name()))?;
        match server {
            Server::Confab => confab = Some(measured),
            Server::Raw => raw = Some(measured),
        }
    }
    let targets = match plan.rate {
        Rate::Fixed(_) => [("delivery p99", Target::RatioAtMost { value: 1.5 })],
        Rate::Max => [("deliveries/s", Target::RatioAtLeast { value: 0.8 })],
    };
    report.add(&plan.name(), confab.as_ref(), raw.as_ref(), &targets);
    Ok(())
}

/// What every subscriber and sender of one run share.
struct Shared {
    subscribers: u32,
    /// Deliveries so far of each message, by index.
    deliveries: Vec<AtomicU32>,
    /// Messages delivered to every subscriber.
    complete: AtomicUsize,
    last_delivery_ns: AtomicU64,
    /// `max` runs: permits for messages that may be in flight; closed when a subscriber fails,
    /// so that senders stop at once instead of waiting for deliveries that will not come.
    window: Semaphore,
}

impl Shared {
    fn delivered(&self, index: usize, at_ns: u64) -> anyhow::Result<()> {
        let counter = self
            .deliveries
            .get(index)
            .ok_or_else(|| anyhow!("a message with index {index}, which was never sent"))?;
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        if n > self.subscribers {
            bail!(
                "message {index} was delivered {n} times to {} subscribers",
                self.subscribers
            );
        }
        if n == self.subscribers {
            self.last_delivery_ns.fetch_max(at_ns, Ordering::Relaxed);
            self.complete.fetch_add(1, Ordering::Release);
            self.window.add_permits(1);
        }
        Ok(())
    }
}

#[derive(Default)]
struct Received {
    count: u64,
    fingerprint: u64,
    /// Delivery latencies in microseconds.
    latencies: Vec<u32>,
    error: Option<anyhow::Error>,
}

/// A message body: its index and the time (client clock) its send was due or issued.
fn body(index: usize, due_ns: u64) -> String {
    format!("m{index}-{due_ns}")
}

fn parse_body(body: &str) -> anyhow::Result<(usize, u64)> {
    body.strip_prefix('m')
        .and_then(|rest| rest.split_once('-'))
        .and_then(|(i, t)| Some((i.parse().ok()?, t.parse().ok()?)))
        .ok_or_else(|| anyhow!("a message body the tool did not send: {body:?}"))
}

async fn subscriber(mut ws: Ws, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) -> Received {
    let mut received = Received::default();
    let mut last: IdBytes = [b'0'; 24];
    let outcome: anyhow::Result<()> = async {
        loop {
            tokio::select! {
                biased;
                frame = ws.next() => match frame {
                    Some(Ok(WsMessage::Text(text))) => {
                        if let Incoming::Message { id, body } = client::parse_frame(text.as_str())? {
                            let now = now_ns();
                            let id = id_bytes(id)?;
                            if id <= last {
                                bail!(
                                    "message {} arrived after {}: ids must strictly increase (a duplicate or reordering)",
                                    String::from_utf8_lossy(&id),
                                    String::from_utf8_lossy(&last),
                                );
                            }
                            last = id;
                            let (index, due_ns) = parse_body(body)?;
                            received.count += 1;
                            received.fingerprint = received.fingerprint.wrapping_add(id_hash(&id));
                            received.latencies.push((now.saturating_sub(due_ns) / 1000) as u32);
                            shared.delivered(index, now)?;
                        }
                    }
                    Some(Ok(WsMessage::Close(close))) => bail!("the server closed the socket: {close:?}"),
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e).context("reading the socket"),
                    None => bail!("the socket closed"),
                },
                _ = stop.changed() => return Ok(()),
            }
        }
    }
    .await;
    if outcome.is_err() {
        shared.window.close();
    }
    received.error = outcome.err();
    received
}

#[derive(Default)]
struct Sent {
    /// (index, id) of every message this sender sent, in order.
    messages: Vec<(usize, IdBytes)>,
    /// sendMessage round trips in microseconds.
    round_trips: Vec<u32>,
}

/// What the senders of one run share.
struct Sending {
    room: String,
    plan: Plan,
    shared: Arc<Shared>,
    /// `max` runs: the next message index to send.
    next: AtomicUsize,
    /// When a fixed schedule starts (client clock).
    start_ns: u64,
    deadline: Instant,
}

async fn sender(mut http: Http, me: usize, sending: Arc<Sending>) -> anyhow::Result<Sent> {
    let Sending {
        room,
        plan,
        shared,
        next,
        start_ns,
        deadline,
    } = &*sending;
    let (start_ns, deadline) = (*start_ns, *deadline);
    let mut sent = Sent::default();
    let mut index = me;
    loop {
        if Instant::now() > deadline || shared.window.is_closed() {
            break;
        }
        let due_ns = match plan.rate {
            Rate::Fixed(rate) => {
                if index >= plan.messages {
                    break;
                }
                let due_ns = start_ns + (index as f64 * 1e9 / rate) as u64;
                let now = now_ns();
                if due_ns > now {
                    tokio::time::sleep(Duration::from_nanos(due_ns - now)).await;
                }
                due_ns
            }
            Rate::Max => {
                // Bounded: a message that never completes must not hang the sender.
                match tokio::time::timeout_at(deadline.into(), shared.window.acquire()).await {
                    Ok(Ok(permit)) => permit.forget(),
                    Ok(Err(_)) | Err(_) => break,
                }
                index = next.fetch_add(1, Ordering::Relaxed);
                if index >= plan.messages {
                    break;
                }
                now_ns()
            }
        };
        let issued = Instant::now();
        let id = http
            .send_message(room, &body(index, due_ns), &format!("c{index}"))
            .await
            .with_context(|| format!("sending message {index}"))?;
        sent.round_trips
            .push(issued.elapsed().as_micros().min(u32::MAX as u128) as u32);
        if let Some((_, previous)) = sent.messages.last()
            && id <= *previous
        {
            bail!(
                "sendMessage returned {} after {} from the same sender: ids must increase",
                String::from_utf8_lossy(&id),
                String::from_utf8_lossy(previous)
            );
        }
        sent.messages.push((index, id));
        if plan.rate != Rate::Max {
            index += plan.senders;
        }
    }
    Ok(sent)
}

async fn run_one(
    server: Server,
    plan: &Plan,
    common: &Common,
    report: &mut Report,
) -> anyhow::Result<Measured> {
    let name = plan.name();
    eprintln!("loadgen: {name} against {}", server.name());
    let mut process = ServerProcess::start(server, common.target.as_deref())?;
    let addr = process.addr;
    let (token, room) =
        client::user_and_room(addr, &format!("lg-fanout-{}", client::run_tag())).await?;

    let connecting = Instant::now();
    let sockets = client::subscribe_many(
        addr,
        &token,
        Some(&room),
        plan.subscribers,
        CONNECT_PARALLEL,
        common.phase_limit(),
    )
    .await
    .context("opening the subscribers")?;
    let connect_secs = connecting.elapsed().as_secs_f64();

    let shared = Arc::new(Shared {
        subscribers: plan.subscribers as u32,
        deliveries: (0..plan.messages).map(|_| AtomicU32::new(0)).collect(),
        complete: AtomicUsize::new(0),
        last_delivery_ns: AtomicU64::new(0),
        window: Semaphore::new(plan.window),
    });
    let (stop, stopped) = watch::channel(false);
    let subscribers: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(subscriber(ws, shared.clone(), stopped.clone())))
        .collect();

    let mut connections = Vec::with_capacity(plan.senders);
    for _ in 0..plan.senders {
        connections.push(Http::connect(addr, Some(&token)).await?);
    }
    let server_cpu = process.cpu_time();
    let client_cpu = own_cpu_time();
    let started = Instant::now();
    // A fixed schedule starts a little ahead, so the first sends are not already late.
    let start_ns = now_ns()
        + match plan.rate {
            Rate::Fixed(_) => 20_000_000,
            Rate::Max => 0,
        };
    let sending = Arc::new(Sending {
        room,
        plan: plan.clone(),
        shared: shared.clone(),
        next: AtomicUsize::new(0),
        start_ns,
        deadline: started + common.phase_limit(),
    });
    let senders: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(me, http)| tokio::spawn(sender(http, me, sending.clone())))
        .collect();
    let mut sent = Vec::new();
    for task in senders {
        sent.push(task.await??);
    }
    let total: usize = sent.iter().map(|s| s.messages.len()).sum();

    // Wait (bounded) until every message reached every subscriber, or a subscriber failed.
    let drain_deadline = Instant::now() + common.phase_limit();
    while shared.complete.load(Ordering::Acquire) < total
        && Instant::now() < drain_deadline
        && !subscribers.iter().any(|s| s.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall_ns = shared
        .last_delivery_ns
        .load(Ordering::Relaxed)
        .saturating_sub(start_ns.min(now_ns()));
    let server_cpu = process
        .cpu_time()
        .zip(server_cpu)
        .map(|(after, before)| after.saturating_sub(before));
    let client_cpu = own_cpu_time().saturating_sub(client_cpu);
    let elapsed = started.elapsed();
    let _ = stop.send(true);

    // Checks: every subscriber got every message once, in id order, with the returned ids.
    ensure!(total > 0, "no message was sent");
    let expected_fingerprint = sent
        .iter()
        .flat_map(|s| &s.messages)
        .fold(0u64, |acc, (_, id)| acc.wrapping_add(id_hash(id)));
    let mut latencies = report::histogram();
    for (n, task) in subscribers.into_iter().enumerate() {
        let received = task.await?;
        if let Some(e) = received.error {
            return Err(e.context(format!("subscriber {n}")));
        }
        ensure!(
            received.count == total as u64,
            "subscriber {n} received {} messages of the {total} sent",
            received.count
        );
        ensure!(
            received.fingerprint == expected_fingerprint,
            "subscriber {n} received ids other than those sendMessage returned"
        );
        for us in received.latencies {
            report::record(&mut latencies, u64::from(us));
        }
    }
    for sender in &sent {
        for (index, _) in &sender.messages {
            let n = shared.deliveries[*index].load(Ordering::Relaxed);
            ensure!(
                n == plan.subscribers as u32,
                "message {index} reached {n} of {} subscribers",
                plan.subscribers
            );
        }
    }
    let mut round_trips = report::histogram();
    for us in sent.iter().flat_map(|s| &s.round_trips) {
        report::record(&mut round_trips, u64::from(*us));
    }
    process.stop();

    let deliveries = total as f64 * plan.subscribers as f64;
    let mut measured = Measured::default();
    measured.put("messages sent", "msgs", total as f64);
    measured.put("deliveries", "msgs", deliveries);
    measured.put(
        "deliveries/s",
        "msg/s",
        deliveries / (wall_ns.max(1) as f64 / 1e9),
    );
    measured.put_latency("delivery", &latencies);
    measured.put_latency("sendMessage round trip", &round_trips);
    if let Some(cpu) = server_cpu {
        measured.put(
            "server CPU",
            "cores",
            cpu.as_secs_f64() / elapsed.as_secs_f64(),
        );
        measured.put(
            "server CPU per delivery",
            "us",
            cpu.as_secs_f64() * 1e6 / deliveries,
        );
    }
    measured.put(
        "client CPU",
        "cores",
        client_cpu.as_secs_f64() / elapsed.as_secs_f64(),
    );
    measured.put(
        "subscribe handshakes/s",
        "conn/s",
        plan.subscribers as f64 / connect_secs,
    );
    report.note(format!(
        "{name} against {}: checked {total} messages x {} subscribers: every one delivered once, ids strictly increasing, ids as returned",
        server.name(),
        plan.subscribers
    ));
    Ok(measured)
}
