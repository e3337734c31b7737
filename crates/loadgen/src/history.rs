//! `history`: a room of many messages, paged from newest to oldest with
//! `messages(last: 50, before: cursor)`; p50/p99 per page, and the newest page against the
//! deepest one (each re-read many times, so one cold read does not decide).
//!
//! Seeding goes through Confab's own store, on the server's SQLite file while no server runs:
//! Confab creates the file, the user and the room, stops, the tool opens the file with
//! `confab::store` and inserts the messages, and Confab starts again on the file. So the seed
//! is whatever the store writes (ids, change numbers, indexes), never a copy of its private
//! schema that could drift from it. Inserts are issued many at a time: the store's one writer
//! commits every waiting insert in one transaction, so a million cost a few thousand commits.
//! Against `--target` the tool can only send the messages one by one over GraphQL, which suits
//! small sizes.
//!
//! Checks: the walk returns every message exactly once, newest to oldest, each page in
//! chronological order, with the bodies seeded at those positions.

use std::{path::Path, time::Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use clap::Args;
use confab::{
    config::DatabaseUrl,
    model::{MessageId, parse_id},
    store::NewMessage,
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

const PAGE: usize = 50;
const PAGE_QUERY: &str = "query($r:ID!,$b:String){messages(roomId:$r,last:50,before:$b){edges{node{id body}} pageInfo{hasPreviousPage startCursor}}}";
/// Reads of the newest and of the deepest page for their comparison.
const REPEATS: usize = 200;
/// Inserts in flight while seeding: enough to fill the store's batches (512 writes per commit)
/// while the previous batch commits.
const SEED_IN_FLIGHT: usize = 1024;

#[derive(Debug, Clone, Default, Args)]
pub struct HistoryArgs {
    /// Messages in the room [default: 1000000; smoke: 2000].
    #[arg(long)]
    pub messages: Option<usize>,
}

pub async fn run(args: &HistoryArgs, common: &Common, report: &mut Report) -> anyhow::Result<()> {
    if common.against == Some(crate::Against::Raw) {
        bail!("history needs a store: the raw baseline keeps no messages");
    }
    let size = args
        .messages
        .unwrap_or(if common.smoke { 2000 } else { 1_000_000 });
    ensure!(size > 0, "--messages must be at least 1");
    eprintln!("loadgen: history of {size} messages against confab");
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let name = format!("lg-history-{}", client::run_tag());

    // `seeded[k]` is the index of the k-th message in history order: it has the body `h{index}`.
    let (mut process, token, room, seeded) = match common.target.as_deref() {
        Some(target) => {
            let process = ServerProcess::start(crate::Server::Confab, Some(target))?;
            let (token, room) = client::user_and_room(process.addr, &name).await?;
            let mut http = Http::connect(process.addr, Some(&token)).await?;
            for i in 0..size {
                http.send_message(&room, &format!("h{i}"), &format!("h{i}"))
                    .await?;
            }
            (process, token, room, (0..size).collect())
        }
        None => {
            let path = sqlite_path(&dir);
            let mut first = ServerProcess::spawn_confab(&path)?;
            let (token, room) = client::user_and_room(first.addr, &name).await?;
            first.stop();
            let seeding = Instant::now();
            let seeded = seed(&path, &name, &room, size).await?;
            report.note(format!(
                "history: seeded {size} messages through Confab's store in {:.1} s",
                seeding.elapsed().as_secs_f64()
            ));
            (ServerProcess::spawn_confab(&path)?, token, room, seeded)
        }
    };
    let mut http = Http::connect(process.addr, Some(&token)).await?;

    // The walk, newest to oldest.
    let deadline = Instant::now() + common.phase_limit();
    let mut pages = report::histogram();
    let mut expected = size; // the index one above the next message expected
    let mut cursor: Option<String> = None;
    let mut deepest_cursor: Option<String> = None;
    while expected > 0 {
        ensure!(
            Instant::now() < deadline,
            "paging stopped at the time limit with {expected} messages left (raise --phase-seconds)"
        );
        let (micros, page) = read_page(&mut http, &room, cursor.as_deref()).await?;
        report::record(&mut pages, micros);
        let edges = page["edges"]
            .as_array()
            .ok_or_else(|| anyhow!("a page without edges: {page}"))?;
        let want = expected.min(PAGE);
        ensure!(
            edges.len() == want,
            "a page of {} messages where {want} were expected ({expected} left)",
            edges.len()
        );
        for (k, edge) in edges.iter().enumerate() {
            let index = expected - want + k;
            let body = edge["node"]["body"].as_str().unwrap_or_default();
            let seeded_body = format!("h{}", seeded[index]);
            ensure!(
                body == seeded_body,
                "message {index} of the history came back as {body:?}, not {seeded_body:?}: a gap, duplicate or wrong order"
            );
        }
        expected -= want;
        let more = page["pageInfo"]["hasPreviousPage"].as_bool() == Some(true);
        ensure!(
            more == (expected > 0),
            "hasPreviousPage is {more} with {expected} messages left"
        );
        deepest_cursor = cursor.take();
        cursor = page["pageInfo"]["startCursor"].as_str().map(str::to_owned);
    }
    let walk = pages.len();

    let mut first = report::histogram();
    let mut deepest = report::histogram();
    for _ in 0..REPEATS {
        report::record(&mut first, read_page(&mut http, &room, None).await?.0);
        report::record(
            &mut deepest,
            read_page(&mut http, &room, deepest_cursor.as_deref())
                .await?
                .0,
        );
    }
    process.stop();

    let ms = |h: &hdrhistogram::Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let mut measured = Measured::default();
    measured.put("messages", "msgs", size as f64);
    measured.put_latency("page of 50", &pages);
    measured.put("newest page p50", "ms", ms(&first, 0.5));
    measured.put("deepest page p50", "ms", ms(&deepest, 0.5));
    measured.put(
        "deepest / newest page",
        "x",
        ms(&deepest, 0.5) / ms(&first, 0.5).max(0.001),
    );
    report.note(format!(
        "history: walked {walk} pages, every one of the {size} messages once, newest to oldest, bodies in seeded order"
    ));
    report.add(
        &format!("history ({size} messages)"),
        Some(&measured),
        None,
        &[
            ("page of 50 p99", Target::AtMost { value: 10.0 }),
            ("deepest / newest page", Target::AtMost { value: 2.0 }),
        ],
    );
    Ok(())
}

/// One page request: its latency in microseconds, and `data.messages`.
async fn read_page(
    http: &mut Http,
    room: &str,
    before: Option<&str>,
) -> anyhow::Result<(u64, Value)> {
    let body = serde_json::to_vec(&json!({
        "query": PAGE_QUERY,
        "variables": {"r": room, "b": before},
    }))?;
    let sent = Instant::now();
    let (status, answer) = http
        .request(Method::POST, "/graphql", Some(body.into()))
        .await?;
    let micros = sent.elapsed().as_micros() as u64;
    let mut answer: Value = serde_json::from_slice(&answer)
        .with_context(|| format!("messages: HTTP {status}, not JSON"))?;
    if let Some(errors) = answer.get("errors") {
        bail!("messages: HTTP {status}: {errors}");
    }
    Ok((micros, answer["data"]["messages"].take()))
}

/// Stores `size` messages (bodies `h0`, `h1`, …) from `username` in `room` through Confab's
/// store on the SQLite file at `path`, which no server may have open. Returns the indexes in
/// history (id) order: with many inserts in flight the store takes them in its own order, not
/// the order they were issued in (most positions differ), and its ids are the history.
async fn seed(path: &Path, username: &str, room: &str, size: usize) -> anyhow::Result<Vec<usize>> {
    let store = confab::store::connect(&DatabaseUrl::SqliteFile(path.to_owned()))
        .await
        .with_context(|| format!("cannot open the store at {}", path.display()))?;
    let sender = store
        .credentials(username)
        .await?
        .ok_or_else(|| anyhow!("user {username:?} is not in the store"))?
        .user
        .id;
    let room = parse_id("roomId", room)?;
    let store = &*store;
    let mut inserts = stream::iter(0..size)
        .map(|index| async move {
            let message = NewMessage {
                room_id: room,
                sender_id: sender,
                body: format!("h{index}"),
                client_id: None,
                mentions: Vec::new(),
            };
            let written = store.insert_message(message).await?;
            anyhow::Ok((written.value.id, index))
        })
        .buffer_unordered(SEED_IN_FLIGHT);
    let mut stored: Vec<(MessageId, usize)> = Vec::with_capacity(size);
    while let Some(inserted) = inserts.next().await {
        stored.push(inserted?);
    }
    stored.sort_unstable();
    Ok(stored.into_iter().map(|(_, index)| index).collect())
}
