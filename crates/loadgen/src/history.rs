//! `history`: a room of many messages, paged from newest to oldest with
//! `messages(last: 50, before: cursor)`; p50/p99 per page, and the newest page against the
//! deepest one (each re-read many times, so one cold read does not decide).
//!
//! Seeding goes straight into the SQLite file, in big transactions matching the store's schema,
//! while no server runs: Confab creates the file, the user and the room, stops, the tool appends
//! the messages (ids continuing after the largest in the file, as the store mints them), and
//! Confab starts again on the file. Against `--target` the tool can only send the messages one
//! by one over GraphQL, which suits small sizes.
//!
//! Checks: the walk returns every message exactly once, newest to oldest, each page in
//! chronological order, with the bodies seeded at those positions.

use std::{path::Path, time::Instant};

use anyhow::{Context as _, anyhow, bail, ensure};
use clap::Args;
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
/// Rows per seeding transaction.
const SEED_BATCH: usize = 100_000;

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

    let (mut process, token, room) = match common.target.as_deref() {
        Some(target) => {
            let process = ServerProcess::start(crate::Server::Confab, Some(target))?;
            let (token, room) = client::user_and_room(process.addr, &name).await?;
            let mut http = Http::connect(process.addr, Some(&token)).await?;
            for i in 0..size {
                http.send_message(&room, &format!("h{i}"), &format!("h{i}"))
                    .await?;
            }
            (process, token, room)
        }
        None => {
            let path = sqlite_path(&dir);
            let mut first = ServerProcess::spawn_confab(&path)?;
            let (token, room) = client::user_and_room(first.addr, &name).await?;
            first.stop();
            let seeding = Instant::now();
            let seeded_path = path.clone();
            tokio::task::spawn_blocking(move || seed(&seeded_path, size)).await??;
            report.note(format!(
                "history: seeded {size} messages into the SQLite file in {:.1} s",
                seeding.elapsed().as_secs_f64()
            ));
            (ServerProcess::spawn_confab(&path)?, token, room)
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
            ensure!(
                body == format!("h{index}"),
                "message {index} from the end came back as {body:?}: a gap, duplicate or wrong order"
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

/// Appends `size` messages to the file's one room, from its one user, in the store's schema,
/// with ids continuing after the largest id in the file (so the store keeps minting above them).
fn seed(path: &Path, size: usize) -> anyhow::Result<()> {
    let mut conn = rusqlite::Connection::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // Seeding is setup, not a measured write: it needs no fsync per transaction.
    conn.pragma_update(None, "synchronous", "OFF")?;
    let room: Vec<u8> = conn.query_row("SELECT id FROM rooms", [], |r| r.get(0))?;
    let sender: Vec<u8> = conn.query_row("SELECT id FROM users", [], |r| r.get(0))?;
    let mut last = [0u8; 12];
    for table in ["users", "rooms", "messages"] {
        let max: Option<Vec<u8>> =
            conn.query_row(&format!("SELECT max(id) FROM {table}"), [], |r| r.get(0))?;
        if let Some(Ok(max)) = max.map(<[u8; 12]>::try_from) {
            last = last.max(max);
        }
    }
    let mut id = u128::from_be_bytes({
        let mut wide = [0u8; 16];
        wide[4..].copy_from_slice(&last);
        wide
    });
    let created_at = chrono::Utc::now().timestamp_millis();
    let mut index = 0;
    while index < size {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO messages (id, room_id, sender_id, body, client_id, created_at)
                 VALUES (?1, ?2, ?3, ?4, NULL, ?5)",
            )?;
            for _ in 0..SEED_BATCH.min(size - index) {
                id += 1;
                let bytes = &id.to_be_bytes()[4..];
                insert.execute(rusqlite::params![
                    bytes,
                    room,
                    sender,
                    format!("h{index}"),
                    created_at
                ])?;
                index += 1;
            }
        }
        tx.commit()?;
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}
