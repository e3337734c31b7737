//! `unread`: `myRooms` with unread and mention counts for a user in many rooms (100 by
//! default) over a large history (1M messages by default), on the SQLite file with durable
//! writes; p50/p99/max of the query, re-run many times.
//!
//! Seeding goes through Confab's own store, as `history` does: Confab creates the file, the
//! reader, two senders and the rooms (the reader creates them, the senders join), stops; the
//! tool opens the file with `confab::store`, inserts the messages (every 7th one the reader's
//! own, every 20th of the others mentioning the reader, with the mention recorded as a send
//! records it) and moves the reader's read marker in each room with the store's `mark_read`;
//! Confab starts again on the file. The markers take four shapes, by room: none (everything
//! unread, so at 1M the counts stop at the cap of 999), at the newest message (nothing
//! unread), a few hundred messages back, and halfway (capped at 1M).
//!
//! Checks: one `myRooms` answer is compared, room by room, with the counts the seed implies
//! (unread: others' messages after the marker; mentions: those of them that mention the
//! reader; both capped at 999), the marker and the newest message; every timed answer lists
//! every room.

use std::{collections::HashMap, path::Path, time::Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use clap::Args;
use confab::{
    config::DatabaseUrl,
    model::{MessageId, RoomId, UserId, parse_id},
    store::{COUNT_CAP, NewMessage},
};
use futures_util::{StreamExt as _, stream};
use hyper::Method;
use serde_json::{Value, json};

use crate::{
    Common,
    client::{self, Http},
    process::{ServerProcess, sqlite_path},
    report::{self, Measured, Report, Target},
};

const MY_ROOMS: &str = "{ myRooms(first: 100) { edges { node { id unreadCount mentionCount lastReadMessageId lastMessage { id body } } } } }";
const JOIN: &str = "mutation($r:ID!){joinRoom(roomId:$r){id}}";
/// Inserts in flight while seeding (see `history`).
const SEED_IN_FLIGHT: usize = 1024;
/// Every `OWN_EVERY`-th message of a room is the reader's own (not unread).
const OWN_EVERY: usize = 7;
/// Every `MENTION_EVERY`-th message of a room (when not the reader's) mentions the reader.
const MENTION_EVERY: usize = 20;

#[derive(Debug, Clone, Default, Args)]
pub struct UnreadArgs {
    /// Rooms the reader is a member of, at most 100 (one page of `myRooms`) [default: 100;
    /// smoke: 10].
    #[arg(long)]
    pub rooms: Option<usize>,
    /// Messages stored across those rooms [default: 1000000; smoke: 20000, enough for counts
    /// at the cap].
    #[arg(long)]
    pub messages: Option<usize>,
    /// Timed `myRooms` queries [default: 1000; smoke: 50].
    #[arg(long)]
    pub queries: Option<usize>,
}

/// What the seed implies for one room, in the order its messages were stored.
struct SeededRoom {
    id: RoomId,
    /// (id, sender is the reader, mentions the reader), in id order.
    messages: Vec<(MessageId, bool, bool)>,
    /// The index in `messages` of the reader's marker.
    marker: Option<usize>,
}

impl SeededRoom {
    fn expected(&self) -> (u64, u64) {
        let after = self.marker.map_or(0, |m| m + 1);
        let unread = self.messages[after..].iter().filter(|m| !m.1);
        let (mut unread_n, mut mentions) = (0u64, 0u64);
        for message in unread {
            unread_n += 1;
            mentions += u64::from(message.2);
        }
        (unread_n.min(COUNT_CAP), mentions.min(COUNT_CAP))
    }
}

pub async fn run(args: &UnreadArgs, common: &Common, report: &mut Report) -> anyhow::Result<()> {
    if common.against == Some(crate::Against::Raw) {
        bail!("unread needs a store: the raw baseline keeps no messages");
    }
    ensure!(
        common.target.is_none(),
        "unread seeds the server's SQLite file directly, so it cannot run against --target"
    );
    let rooms = args.rooms.unwrap_or(if common.smoke { 10 } else { 100 });
    ensure!(
        (1..=100).contains(&rooms),
        "--rooms must be between 1 and 100 (one page of myRooms)"
    );
    let size = args
        .messages
        .unwrap_or(if common.smoke { 20_000 } else { 1_000_000 });
    ensure!(size >= rooms, "--messages must be at least --rooms");
    let queries = args
        .queries
        .unwrap_or(if common.smoke { 50 } else { 1000 })
        .max(1);
    eprintln!("loadgen: unread, {rooms} rooms, {size} messages, against confab");
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let path = sqlite_path(&dir);
    let tag = client::run_tag();
    let reader = format!("lg-reader-{tag}");
    let senders = [format!("lg-alice-{tag}"), format!("lg-bob-{tag}")];

    let mut first = ServerProcess::spawn_confab(&path)?;
    let mut http = Http::connect(first.addr, None).await?;
    let token = http.register(&reader).await?;
    http.set_token(&token);
    let mut room_ids = Vec::with_capacity(rooms);
    for r in 0..rooms {
        room_ids.push(http.create_room(&format!("lg-unread-{tag}-{r}")).await?);
    }
    for sender in &senders {
        let mut http = Http::connect(first.addr, None).await?;
        let token = http.register(sender).await?;
        http.set_token(&token);
        for room in &room_ids {
            http.graphql(JOIN, json!({"r": room}), "joinRoom").await?;
        }
    }
    first.stop();

    let seeding = Instant::now();
    let seeded = seed(&path, &reader, &senders, &room_ids, size).await?;
    report.note(format!(
        "unread: seeded {size} messages in {rooms} rooms through Confab's store in {:.1} s",
        seeding.elapsed().as_secs_f64()
    ));

    let mut process = ServerProcess::spawn_confab(&path)?;
    let mut http = Http::connect(process.addr, Some(&token)).await?;
    let (_, answer) = my_rooms(&mut http).await?;
    let capped = check(&answer, &seeded)?;
    let (unread_sum, mention_sum) = seeded.iter().fold((0, 0), |(u, m), room| {
        let (ru, rm) = room.expected();
        (u + ru, m + rm)
    });
    report.note(format!(
        "unread: myRooms answered all {rooms} rooms with the counts, markers and newest messages the seed implies (unread counts sum to {unread_sum}, mention counts to {mention_sum}; {capped} counts at the cap of {COUNT_CAP})"
    ));

    // A few untimed reads first, so the first timed one is not the server's first.
    for _ in 0..10 {
        my_rooms(&mut http).await?;
    }
    let deadline = Instant::now() + common.phase_limit();
    let mut latencies = report::histogram();
    for _ in 0..queries {
        ensure!(
            Instant::now() < deadline,
            "myRooms queries stopped at the time limit (raise --phase-seconds)"
        );
        let (micros, answer) = my_rooms(&mut http).await?;
        let listed = answer["edges"].as_array().map_or(0, Vec::len);
        ensure!(
            listed == rooms,
            "myRooms listed {listed} rooms, not {rooms}"
        );
        report::record(&mut latencies, micros);
    }
    process.stop();

    let mut measured = Measured::default();
    measured.put("messages", "msgs", size as f64);
    measured.put("rooms", "rooms", rooms as f64);
    measured.put_latency("myRooms", &latencies);
    report.add(
        &format!("unread (myRooms, {rooms} rooms, {size} messages)"),
        Some(&measured),
        None,
        &[("myRooms p99", Target::AtMost { value: 20.0 })],
    );
    Ok(())
}

/// One `myRooms` query: its latency in microseconds, and `data.myRooms`.
async fn my_rooms(http: &mut Http) -> anyhow::Result<(u64, Value)> {
    let body = serde_json::to_vec(&json!({ "query": MY_ROOMS }))?;
    let sent = Instant::now();
    let (status, answer) = http
        .request(Method::POST, "/graphql", Some(body.into()))
        .await?;
    let micros = sent.elapsed().as_micros() as u64;
    let mut answer: Value = serde_json::from_slice(&answer)
        .with_context(|| format!("myRooms: HTTP {status}, not JSON"))?;
    if let Some(errors) = answer.get("errors") {
        bail!("myRooms: HTTP {status}: {errors}");
    }
    Ok((micros, answer["data"]["myRooms"].take()))
}

/// Compares a `myRooms` answer with the seed; returns how many counts are at the cap.
fn check(answer: &Value, seeded: &[SeededRoom]) -> anyhow::Result<usize> {
    let edges = answer["edges"]
        .as_array()
        .ok_or_else(|| anyhow!("myRooms without edges: {answer}"))?;
    ensure!(
        edges.len() == seeded.len(),
        "myRooms listed {} rooms, not {}",
        edges.len(),
        seeded.len()
    );
    let by_id: HashMap<String, &Value> = edges
        .iter()
        .filter_map(|e| Some((e["node"]["id"].as_str()?.to_owned(), &e["node"])))
        .collect();
    let mut capped = 0;
    for room in seeded {
        let node = by_id
            .get(&room.id.to_string())
            .ok_or_else(|| anyhow!("myRooms does not list room {}", room.id))?;
        let (unread, mentions) = room.expected();
        capped += usize::from(unread == COUNT_CAP) + usize::from(mentions == COUNT_CAP);
        let marker = room.marker.map(|m| room.messages[m].0.to_string());
        let newest = room.messages.last().map(|m| m.0.to_string());
        let got = (
            node["unreadCount"].as_u64(),
            node["mentionCount"].as_u64(),
            node["lastReadMessageId"].as_str().map(str::to_owned),
            node["lastMessage"]["id"].as_str().map(str::to_owned),
        );
        let want = (Some(unread), Some(mentions), marker, newest);
        ensure!(
            got == want,
            "room {}: myRooms answered (unread, mentions, marker, newest) {got:?}, the seed implies {want:?}",
            room.id
        );
    }
    Ok(capped)
}

/// Stores `size` messages across `rooms` through Confab's store on the SQLite file at `path`
/// (no server may have it open), then sets the reader's markers. Returns each room's messages
/// in id order with the marker chosen.
async fn seed(
    path: &Path,
    reader: &str,
    senders: &[String; 2],
    rooms: &[String],
    size: usize,
) -> anyhow::Result<Vec<SeededRoom>> {
    let store = confab::store::connect(&DatabaseUrl::SqliteFile(path.to_owned()))
        .await
        .with_context(|| format!("cannot open the store at {}", path.display()))?;
    let user = |name: String| {
        let store = store.clone();
        async move {
            anyhow::Ok(
                store
                    .credentials(&name)
                    .await?
                    .ok_or_else(|| anyhow!("user {name:?} is not in the store"))?
                    .user
                    .id,
            )
        }
    };
    let reader_id: UserId = user(reader.to_owned()).await?;
    let sender_ids = [
        user(senders[0].clone()).await?,
        user(senders[1].clone()).await?,
    ];
    let room_ids: Vec<RoomId> = rooms
        .iter()
        .map(|r| parse_id("roomId", r))
        .collect::<Result<_, _>>()?;
    let store_ref = &*store;
    let room_ids_ref = &room_ids;
    let n_rooms = rooms.len();
    // Message `i` goes to room `i % rooms`, the `i / rooms`-th issued there.
    let mut inserts = stream::iter(0..size)
        .map(|i| async move {
            let (room, k) = (i % n_rooms, i / n_rooms);
            let own = k % OWN_EVERY == 0;
            let mention = !own && k % MENTION_EVERY == 3;
            let sender = if own { reader_id } else { sender_ids[k % 2] };
            let body = if mention {
                format!("@{reader} u{i}")
            } else {
                format!("u{i}")
            };
            let message = NewMessage {
                room_id: room_ids_ref[room],
                sender_id: sender,
                body,
                client_id: None,
                mentions: if mention { vec![reader_id] } else { Vec::new() },
            };
            let written = store_ref.insert_message(message).await?;
            anyhow::Ok((room, written.value.id, own, mention))
        })
        .buffer_unordered(SEED_IN_FLIGHT);
    let mut seeded: Vec<SeededRoom> = room_ids
        .iter()
        .map(|&id| SeededRoom {
            id,
            messages: Vec::with_capacity(size / n_rooms + 1),
            marker: None,
        })
        .collect();
    while let Some(inserted) = inserts.next().await {
        let (room, id, own, mention) = inserted?;
        seeded[room].messages.push((id, own, mention));
    }
    drop(inserts);
    for (r, room) in seeded.iter_mut().enumerate() {
        room.messages.sort_unstable_by_key(|m| m.0);
        let n = room.messages.len();
        room.marker = match r % 4 {
            0 => None,
            1 => Some(n - 1),
            2 => Some(n.saturating_sub(2 + (r * 37) % 500)),
            _ => Some(n / 2),
        };
        if let Some(m) = room.marker {
            let written = store
                .mark_read(room.id, reader_id, room.messages[m].0)
                .await?;
            ensure!(
                written.value.last_read == Some(room.messages[m].0),
                "the store did not move the marker in room {}",
                room.id
            );
        }
    }
    Ok(seeded)
}
