//! `presence`: the events sent when many users open a signed-in socket at once. Presence
//! changes must be coalesced: each observer should hear of each co-member coming online at
//! most once, never a storm.
//!
//! The shape: N connecting users (5,000 by default) and M observers (100) share rooms of 10 to
//! 50 members (sizes drawn uniformly, from a fixed seed), every user placed in 3 rooms by
//! shuffling three slots per user into the rooms (a user drawn twice into one room is a member
//! of 2, so most are in 3). Users register and join before anything is measured (argon2 is
//! paid there, at the server's own parameters). The observers open a graphql-transport-ws
//! socket each and subscribe to `myEvents`; once they are live and quiet, all N users open a
//! signed-in socket (at most `--parallel` handshakes at a time) and hold it. The run waits
//! until the observers hear nothing more for a while, then counts.
//!
//! `PresenceChanged` is selected only when the server's schema has it (introspection); without
//! it the figures are 0 and the run says the type is missing. The bound printed is what no
//! storm means: one event per (observer, connecting co-member) pair.
//!
//! Checks: every socket is acknowledged (a signed-in `connection_ack`); an observer never hears
//! of a user it shares no room with, and hears nothing but `PresenceChanged` while measured;
//! afterwards a message in one room of each observer reaches every observer as `RoomActivity`,
//! so the subscriptions counted were live throughout.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use clap::Args;
use futures_util::{SinkExt as _, StreamExt as _, stream};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::{
    Common, Server,
    client::{self, Http, Rng, Ws},
    process::ServerProcess,
    report::{Measured, Report, Target},
};

const JOIN: &str = "mutation($r:ID!){joinRoom(roomId:$r){id}}";
const HAS_PRESENCE: &str = r#"{ __type(name: "PresenceChanged") { name } }"#;
const WITH_PRESENCE: &str =
    "subscription { myEvents { __typename ... on PresenceChanged { user { id } presence } } }";
const WITHOUT_PRESENCE: &str = "subscription { myEvents { __typename } }";
/// Rooms each user is placed in.
const ROOMS_PER_USER: usize = 3;
/// Room sizes, drawn uniformly.
const ROOM_SIZES: std::ops::RangeInclusive<usize> = 10..=50;
/// Registrations in flight (each is an argon2 hash on the server).
const REGISTER_IN_FLIGHT: usize = 8;
/// What the observers are in: before the measured phase, in it, checking that they listen, done.
const WARMING: u8 = 0;
const MEASURING: u8 = 1;
const CHECKING: u8 = 2;
const DONE: u8 = 3;
/// Room creations and joins in flight.
const JOIN_IN_FLIGHT: usize = 32;

#[derive(Debug, Clone, Default, Args)]
pub struct PresenceArgs {
    /// Users who open a socket at once [default: 5000; smoke: 50].
    #[arg(long)]
    pub users: Option<usize>,
    /// Observers subscribed to `myEvents` before they connect [default: 100; smoke: 10].
    #[arg(long)]
    pub observers: Option<usize>,
    /// Socket handshakes in flight at once [default: 500].
    #[arg(long)]
    pub parallel: Option<usize>,
}

/// Rooms as lists of user indexes (no user twice in one room).
fn shape(users: usize) -> Vec<Vec<usize>> {
    let mut rng = Rng(0x00c0_ffee);
    let mut slots: Vec<usize> = (0..users)
        .flat_map(|u| std::iter::repeat_n(u, ROOMS_PER_USER))
        .collect();
    for i in (1..slots.len()).rev() {
        slots.swap(i, rng.below(i + 1));
    }
    let span = ROOM_SIZES.end() - ROOM_SIZES.start() + 1;
    let mut rooms = Vec::new();
    let mut rest = &slots[..];
    while !rest.is_empty() {
        let size = (ROOM_SIZES.start() + rng.below(span)).min(rest.len());
        let (taken, left) = rest.split_at(size);
        let mut members: Vec<usize> = Vec::with_capacity(size);
        for &u in taken {
            if !members.contains(&u) {
                members.push(u);
            }
        }
        rooms.push(members);
        rest = left;
    }
    rooms
}

/// A registered user: token and id.
struct Account {
    token: String,
    id: String,
}

pub async fn run(args: &PresenceArgs, common: &Common, report: &mut Report) -> anyhow::Result<()> {
    if common.against == Some(crate::Against::Raw) {
        bail!("presence needs accounts and rooms: the raw baseline has neither");
    }
    let n = args
        .users
        .unwrap_or(if common.smoke { 50 } else { 5000 })
        .max(1);
    let m = args
        .observers
        .unwrap_or(if common.smoke { 10 } else { 100 })
        .max(1);
    let parallel = args.parallel.unwrap_or(500).max(1);
    eprintln!("loadgen: presence, {n} users connecting, {m} observers, against confab");
    let mut process = ServerProcess::start(Server::Confab, common.target.as_deref())?;
    let addr = process.addr;
    let tag = client::run_tag();

    // Users 0..m are the observers, m..m+n the connecting users.
    let rooms = shape(m + n);
    let setup = Instant::now();
    let accounts = register_all(addr, &tag, m + n).await?;
    let room_ids = create_and_join(addr, &tag, &rooms, &accounts).await?;
    report.note(format!(
        "presence: {} users registered, {} rooms of {}-{} members created and joined in {:.1} s (not measured)",
        m + n,
        room_ids.len(),
        ROOM_SIZES.start(),
        ROOM_SIZES.end(),
        setup.elapsed().as_secs_f64()
    ));

    // Whom each observer shares a room with, and which of those connect in the measured phase.
    let mut co_members: Vec<HashSet<usize>> = vec![HashSet::new(); m];
    for room in &rooms {
        for &o in room.iter().filter(|&&u| u < m) {
            co_members[o].extend(room.iter().copied().filter(|&u| u != o));
        }
    }
    let bounds: Vec<usize> = co_members
        .iter()
        .map(|c| c.iter().filter(|&&u| u >= m).count())
        .collect();
    let bound: usize = bounds.iter().sum();
    let index_of: Arc<HashMap<String, usize>> = Arc::new(
        accounts
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.clone(), i))
            .collect(),
    );

    let mut http = Http::connect(addr, Some(&accounts[0].token)).await?;
    // `graphql` refuses a null answer: no such type (or no introspection) is no presence.
    let has_type = http
        .graphql(HAS_PRESENCE, json!({}), "__type")
        .await
        .is_ok();
    let query = if has_type {
        WITH_PRESENCE
    } else {
        WITHOUT_PRESENCE
    };

    // The observers, live and then quiet.
    let phase = Arc::new(AtomicU8::new(WARMING));
    let live = Arc::new(AtomicUsize::new(0));
    let heard = Arc::new(AtomicU64::new(0));
    let mut observers = Vec::with_capacity(m);
    for (o, account) in accounts.iter().enumerate().take(m) {
        let mut ws = client::connect_initialised(addr, &account.token).await?;
        let subscribe = json!({
            "id": client::OPERATION_ID,
            "type": "subscribe",
            "payload": {"query": query},
        });
        ws.send(WsMessage::text(subscribe.to_string())).await?;
        client::ping(&mut ws).await?;
        // Hearing of oneself is allowed (not counted: an observer's own presence does not
        // change while it is measured).
        let mut may_hear = co_members[o].clone();
        may_hear.insert(o);
        observers.push(tokio::spawn(observe(
            ws,
            Arc::new(may_hear),
            index_of.clone(),
            phase.clone(),
            heard.clone(),
            live.clone(),
        )));
    }
    let quiet = Duration::from_millis(if common.smoke { 500 } else { 2000 });
    settle(&heard, quiet, common.phase_limit()).await;
    let before = server_counts(addr).await;

    // The measured phase: every user opens a signed-in socket at once.
    phase.store(MEASURING, Ordering::SeqCst);
    heard.store(0, Ordering::SeqCst);
    let started = Instant::now();
    let limit = common.phase_limit();
    let opened: Vec<anyhow::Result<Ws>> = stream::iter(&accounts[m..])
        .map(|account| async move {
            let mut tries = 0;
            loop {
                match client::connect_initialised(addr, &account.token).await {
                    Ok(ws) => return Ok(ws),
                    Err(e) if tries < 3 && started.elapsed() < limit => {
                        tries += 1;
                        eprintln!("loadgen: a socket failed to open, retrying: {e:#}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let connect_time = started.elapsed();
    let sockets: Vec<Ws> = opened.into_iter().collect::<anyhow::Result<_>>()?;
    ensure!(
        sockets.len() == n,
        "{} of {n} sockets opened",
        sockets.len()
    );
    settle(&heard, quiet, limit).await;
    let after = server_counts(addr).await;

    // The check that the observers were listening all along: a message in one room of each
    // must reach every one of them as `RoomActivity`.
    phase.store(CHECKING, Ordering::SeqCst);
    let mut checked = HashSet::new();
    for o in 0..m {
        let r = rooms
            .iter()
            .position(|members| members.contains(&o))
            .ok_or_else(|| anyhow!("observer {o} is in no room"))?;
        if checked.insert(r) {
            let mut http = Http::connect(addr, Some(&accounts[rooms[r][0]].token)).await?;
            http.send_message(&room_ids[r], "presence-check", &format!("check-{r}"))
                .await?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while live.load(Ordering::SeqCst) < m && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let listening = live.load(Ordering::SeqCst);
    phase.store(DONE, Ordering::SeqCst);
    ensure!(
        listening == m,
        "only {listening} of {m} observers heard the check message: their myEvents was not live"
    );

    let mut per_observer = Vec::with_capacity(m);
    let mut repeated = 0u64;
    for task in observers {
        let seen = task.await??;
        repeated += seen.values().map(|&c| c.saturating_sub(1)).sum::<u64>();
        per_observer.push(seen.values().sum::<u64>());
    }
    drop(sockets);
    process.stop();

    let total: u64 = per_observer.iter().sum();
    let min = per_observer.iter().copied().min().unwrap_or(0);
    let max = per_observer.iter().copied().max().unwrap_or(0);
    let mut measured = Measured::default();
    measured.put("sockets connected", "sockets", n as f64);
    measured.put("time to connect all", "s", connect_time.as_secs_f64());
    measured.put("PresenceChanged per observer, min", "events", min as f64);
    measured.put(
        "PresenceChanged per observer, avg",
        "events",
        total as f64 / m as f64,
    );
    measured.put("PresenceChanged per observer, max", "events", max as f64);
    measured.put("PresenceChanged, all observers", "events", total as f64);
    measured.put(
        "bound: observer x connecting co-member pairs",
        "events",
        bound as f64,
    );
    measured.put(
        "PresenceChanged per connecting user",
        "events",
        total as f64 / n as f64,
    );
    measured.put(
        "repeated (same observer, same user)",
        "events",
        repeated as f64,
    );
    for (name, value) in &after {
        let delta = value - before.get(name).copied().unwrap_or(0.0);
        measured.put(&format!("server {name} (delta)"), "events", delta);
    }
    if !has_type {
        report.note(
            "presence: the schema has no PresenceChanged type (introspection answered null), so no observer can hear presence: 0 events",
        );
    }
    report.note(format!(
        "presence: {n} sockets acknowledged in {:.2} s; {m} observers heard {total} PresenceChanged events (bound {bound}: one per observer and connecting co-member), none about a user they share no room with; afterwards every observer heard the check message",
        connect_time.as_secs_f64()
    ));
    // Without the type there is nothing to hold to the bound.
    let target = [(
        "PresenceChanged, all observers",
        Target::AtMost {
            value: bound as f64,
        },
    )];
    report.add(
        &format!("presence ({n} sockets connect, {m} observers)"),
        Some(&measured),
        None,
        if has_type { &target } else { &[] },
    );
    Ok(())
}

/// Registers `count` users (`lg-p{i}-{tag}`), `REGISTER_IN_FLIGHT` at a time, in index order.
async fn register_all(addr: SocketAddr, tag: &str, count: usize) -> anyhow::Result<Vec<Account>> {
    let mut results: Vec<(usize, Account)> = stream::iter(0..count)
        .map(|i| async move {
            let mut http = Http::connect(addr, None).await?;
            let answer = http
                .graphql(
                    client::REGISTER,
                    json!({"u": format!("lg-p{i}-{tag}"), "p": client::PASSWORD}),
                    "register",
                )
                .await?;
            let token = answer["token"].as_str().unwrap_or_default().to_owned();
            let id = answer["user"]["id"].as_str().unwrap_or_default().to_owned();
            ensure!(
                !token.is_empty() && !id.is_empty(),
                "register answered {answer}"
            );
            anyhow::Ok((i, Account { token, id }))
        })
        .buffer_unordered(REGISTER_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    results.sort_unstable_by_key(|(i, _)| *i);
    Ok(results.into_iter().map(|(_, a)| a).collect())
}

/// Each room's first member creates it (public); every other member joins. Returns the ids.
async fn create_and_join(
    addr: SocketAddr,
    tag: &str,
    rooms: &[Vec<usize>],
    accounts: &[Account],
) -> anyhow::Result<Vec<String>> {
    let ids: Vec<String> = stream::iter(rooms.iter().enumerate())
        .map(|(r, members)| async move {
            let mut http = Http::connect(addr, Some(&accounts[members[0]].token)).await?;
            http.create_room(&format!("lg-presence-{tag}-{r}")).await
        })
        .buffered(JOIN_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let mut joins: Vec<Vec<&str>> = vec![Vec::new(); accounts.len()];
    for (room, members) in ids.iter().zip(rooms) {
        for &u in &members[1..] {
            joins[u].push(room);
        }
    }
    let results: Vec<anyhow::Result<()>> = stream::iter(joins.iter().enumerate())
        .filter(|(_, rooms)| std::future::ready(!rooms.is_empty()))
        .map(|(u, rooms)| async move {
            let mut http = Http::connect(addr, Some(&accounts[u].token)).await?;
            for room in rooms {
                http.graphql(JOIN, json!({"r": room}), "joinRoom").await?;
            }
            anyhow::Ok(())
        })
        .buffer_unordered(JOIN_IN_FLIGHT)
        .collect()
        .await;
    results.into_iter().collect::<anyhow::Result<()>>()?;
    Ok(ids)
}

/// Waits until the observers have heard nothing for `quiet` (at most `limit`).
async fn settle(heard: &AtomicU64, quiet: Duration, limit: Duration) {
    let started = Instant::now();
    let mut last = heard.load(Ordering::SeqCst);
    let mut still_since = Instant::now();
    while started.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = heard.load(Ordering::SeqCst);
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() >= quiet {
            return;
        }
    }
}

/// One observer's socket, until the phase is `DONE`: counts `PresenceChanged` per user while
/// `MEASURING`, and counts itself in `live` at its first `RoomActivity` while `CHECKING`.
/// Hearing of a user it shares no room with, or any other event while measuring, is a failure.
async fn observe(
    mut ws: Ws,
    may_hear: Arc<HashSet<usize>>,
    index_of: Arc<HashMap<String, usize>>,
    phase: Arc<AtomicU8>,
    heard: Arc<AtomicU64>,
    live: Arc<AtomicUsize>,
) -> anyhow::Result<HashMap<usize, u64>> {
    let mut seen: HashMap<usize, u64> = HashMap::new();
    let mut checked = false;
    while phase.load(Ordering::SeqCst) != DONE {
        let frame = match tokio::time::timeout(Duration::from_millis(50), ws.next()).await {
            Err(_) => continue,
            Ok(None) => bail!("an observer's socket closed"),
            Ok(Some(frame)) => frame.context("an observer's socket failed")?,
        };
        let WsMessage::Text(text) = frame else {
            continue;
        };
        let frame: Value = serde_json::from_str(text.as_str())
            .with_context(|| format!("not a graphql-transport-ws frame: {text}"))?;
        match frame["type"].as_str() {
            Some("next") => {}
            Some("error" | "complete") => bail!("an observer's myEvents ended: {text}"),
            _ => continue,
        }
        if frame["payload"].get("errors").is_some() {
            bail!("myEvents reported errors: {text}");
        }
        heard.fetch_add(1, Ordering::SeqCst);
        let event = &frame["payload"]["data"]["myEvents"];
        let now = phase.load(Ordering::SeqCst);
        if event["__typename"] == "RoomActivity" && now == CHECKING {
            if !checked {
                checked = true;
                live.fetch_add(1, Ordering::SeqCst);
            }
            continue;
        }
        if event["__typename"] != "PresenceChanged" {
            ensure!(
                now != MEASURING,
                "an observer heard something other than presence: {text}"
            );
            continue;
        }
        let user = event["user"]["id"]
            .as_str()
            .and_then(|id| index_of.get(id))
            .ok_or_else(|| anyhow!("PresenceChanged about an unknown user: {text}"))?;
        ensure!(
            may_hear.contains(user),
            "an observer heard of a user it shares no room with: {text}"
        );
        if now == MEASURING {
            *seen.entry(*user).or_default() += 1;
        }
    }
    Ok(seen)
}

/// The server's own counters from `/metrics` that bear on this run: room-event deliveries and
/// renders, and any presence counter. Empty when `/metrics` does not answer.
async fn server_counts(addr: SocketAddr) -> HashMap<String, f64> {
    let Ok(mut http) = Http::connect(addr, None).await else {
        return HashMap::new();
    };
    let Ok((StatusCode::OK, body)) = http.request(Method::GET, "/metrics", None).await else {
        return HashMap::new();
    };
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter(|(name, _)| {
            name.starts_with("confab_event_deliveries")
                || name.starts_with("confab_event_renders")
                || name.contains("presence")
        })
        .filter_map(|(name, value)| Some((name.to_owned(), value.trim().parse().ok()?)))
        .collect()
}
