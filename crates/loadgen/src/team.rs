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

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use clap::Args;
use confab::{
    auth::{Passwords, Tokens},
    config::DatabaseUrl,
    model::{RoomId, RoomRole},
    store::{NewMessage, NewRoom, NewSession, Store},
};
use futures_util::{
    SinkExt as _, StreamExt as _,
    stream::{self, SplitSink, SplitStream},
};
use hdrhistogram::Histogram;
use hyper::body::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::{
    Common,
    client::{self, HttpPool, IdBytes, Rng, Ws, id_bytes, now_ns},
    process::{JWT_SECRET, ServerProcess, own_cpu_time, sqlite_path},
    report::{self, Measured, Report, Target},
};

const MY_EVENTS: &str = "subscription($a:String){myEvents(after:$a){__typename ... on RoomActivity{cursor room{id} message{id body}} ... on ReadStateChanged{cursor} ... on Invited{cursor} ... on RemovedFromRoom{cursor}}}";
const ROOM_EVENTS: &str = "subscription($r:ID!,$a:ID){roomEvents(roomId:$r,after:$a){__typename ... on MessageAdded{message{id body}}}}";
const PAGE: &str = "query($r:ID!,$b:String){messages(roomId:$r,last:30,before:$b){edges{node{id}} pageInfo{hasPreviousPage startCursor}}}";
const MARK_READ: &str = "mutation($r:ID!,$m:ID!){markRead(roomId:$r,messageId:$m){id unreadCount}}";
const MY_ROOMS: &str = "{myRooms(first:10){edges{node{id unreadCount mentionCount}}}}";
const TYPING: &str = "mutation($r:ID!){setTyping(roomId:$r,typing:true)}";
const EDIT: &str = "mutation($m:ID!,$b:String!){editMessage(messageId:$m,body:$b){id}}";
/// The operation id of every socket's `myEvents`.
const MY_EVENTS_ID: &str = "m";

/// Rooms each user is in.
const ROOMS_PER_USER: std::ops::RangeInclusive<usize> = 4..=8;
/// Messages each room starts with.
const HISTORY: usize = 40;
/// Store writes in flight while seeding (the store's writer batches them).
const SEED_IN_FLIGHT: usize = 1024;
/// Own messages a user remembers, to edit one.
const OWN_KEPT: usize = 5;
/// How long a `pong`, a socket's end or a connect may take before it counts as failed.
const SOCKET_WAIT: Duration = Duration::from_secs(10);
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
    /// Keep-alive HTTP connections the users share [default: 256; smoke: 8].
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
            pool: args.http_pool.unwrap_or(if smoke { 8 } else { 256 }).max(1),
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

/// Rooms and memberships: `rooms[r]` its members, `of_user[u]` the user's rooms.
struct Shape {
    rooms: Vec<Vec<u32>>,
    of_user: Vec<Vec<u32>>,
}

fn shape(users: usize, max_room: usize) -> anyhow::Result<Shape> {
    let mut rng = Rng(0x7ea3_5eed);
    let count = (users / 20).max(8);
    let mut cumulative = Vec::with_capacity(count);
    let mut total = 0.0;
    for r in 0..count {
        total += 1.0 / (r + 1) as f64;
        cumulative.push(total);
    }
    let cap = max_room.min(users).max(1);
    let mut rooms: Vec<Vec<u32>> = vec![Vec::new(); count];
    let mut of_user = Vec::with_capacity(users);
    let span = ROOMS_PER_USER.end() - ROOMS_PER_USER.start() + 1;
    for u in 0..users {
        let k = (ROOMS_PER_USER.start() + rng.below(span)).min(count);
        let mut mine: Vec<usize> = Vec::with_capacity(k);
        for _ in 0..100 * k {
            if mine.len() == k {
                break;
            }
            let x = rng.unit() * total;
            let r = cumulative.partition_point(|&c| c <= x).min(count - 1);
            if !mine.contains(&r) && rooms[r].len() < cap {
                mine.push(r);
                rooms[r].push(u as u32);
            }
        }
        ensure!(!mine.is_empty(), "user {u} found no room with space");
        of_user.push(mine);
    }
    // Rooms nobody drew are not created: renumber the others.
    let mut renumber = vec![u32::MAX; count];
    let mut kept = Vec::new();
    for (r, members) in rooms.into_iter().enumerate() {
        if !members.is_empty() {
            renumber[r] = kept.len() as u32;
            kept.push(members);
        }
    }
    Ok(Shape {
        rooms: kept,
        of_user: of_user
            .into_iter()
            .map(|mine| mine.into_iter().map(|r| renumber[r]).collect())
            .collect(),
    })
}

/// What the seed made: each user's `Bearer` token, each room's id and newest message.
struct Seeded {
    bearers: Vec<String>,
    room_ids: Vec<String>,
    newest: Vec<IdBytes>,
}

/// Seeds users, sessions, rooms, memberships and history through Confab's store on the
/// SQLite file at `path`, which no server may have open.
async fn seed(path: &Path, shape: &Shape) -> anyhow::Result<Seeded> {
    let store = confab::store::connect(&DatabaseUrl::SqliteFile(path.to_owned()))
        .await
        .with_context(|| format!("cannot open the store at {}", path.display()))?;
    let store: &dyn Store = &*store;
    // One real hash for every user: nobody signs in with it, but it is a valid one.
    let hash = Passwords::new().hash(client::PASSWORD, None).await?;
    let hash = hash.as_str();
    // The child server checks tokens with JWT_SECRET; these outlive any run.
    let tokens = Tokens::new(JWT_SECRET.as_bytes(), Duration::from_secs(24 * 3600));
    let tokens = &tokens;
    let expires_at = chrono::Utc::now() + chrono::Duration::days(1);
    let users = shape.of_user.len();
    let mut accounts: Vec<(usize, confab::model::User, String)> = stream::iter(0..users)
        .map(|u| async move {
            let user = store.create_user(&format!("lg-t{u}"), hash).await?;
            let mut refresh_hash = [0u8; 32];
            refresh_hash[..8].copy_from_slice(&(u as u64).to_be_bytes());
            let session = store
                .create_session(NewSession {
                    user_id: user.id,
                    refresh_hash,
                    user_agent: Some("loadgen team".into()),
                    expires_at,
                })
                .await?;
            let (token, _) = tokens.issue(&user, session.id)?;
            anyhow::Ok((u, user, format!("Bearer {token}")))
        })
        .buffer_unordered(SEED_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    accounts.sort_unstable_by_key(|(u, _, _)| *u);
    let user_ids: Vec<_> = accounts.iter().map(|(_, user, _)| user.id).collect();
    let user_ids = &user_ids;

    let mut rooms: Vec<(usize, RoomId)> = stream::iter(shape.rooms.iter().enumerate())
        .map(|(r, members)| async move {
            let creator = user_ids[members[0] as usize];
            let room = store
                .create_room(NewRoom::public(format!("lg-team-{r}"), creator))
                .await?;
            anyhow::Ok((r, room.id))
        })
        .buffer_unordered(SEED_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    rooms.sort_unstable_by_key(|(r, _)| *r);
    let room_ids: Vec<RoomId> = rooms.into_iter().map(|(_, id)| id).collect();
    let room_ids = &room_ids;

    let joins = shape.rooms.iter().enumerate().flat_map(|(r, members)| {
        members[1..]
            .iter()
            .map(move |&u| (room_ids[r], user_ids[u as usize]))
    });
    let joined: Vec<anyhow::Result<()>> = stream::iter(joins)
        .map(|(room, user)| async move {
            store.add_member(room, user, RoomRole::Member).await?;
            anyhow::Ok(())
        })
        .buffer_unordered(SEED_IN_FLIGHT)
        .collect()
        .await;
    joined.into_iter().collect::<anyhow::Result<()>>()?;

    let posts = (0..shape.rooms.len()).flat_map(|r| (0..HISTORY).map(move |k| (r, k)));
    let written: Vec<anyhow::Result<(usize, IdBytes)>> = stream::iter(posts)
        .map(|(r, k)| async move {
            let members = &shape.rooms[r];
            let message = NewMessage {
                room_id: room_ids[r],
                sender_id: user_ids[members[k % members.len()] as usize],
                body: format!("s{k}"),
                client_id: None,
                mentions: Vec::new(),
            };
            let written = store.insert_message(message).await?;
            anyhow::Ok((r, id_bytes(&written.value.id.to_string())?))
        })
        .buffer_unordered(SEED_IN_FLIGHT)
        .collect()
        .await;
    let mut newest = vec![[b'0'; 24]; shape.rooms.len()];
    for result in written {
        let (r, id) = result?;
        newest[r] = newest[r].max(id);
    }
    Ok(Seeded {
        bearers: accounts.into_iter().map(|(_, _, bearer)| bearer).collect(),
        room_ids: room_ids.iter().map(ToString::to_string).collect(),
        newest,
    })
}

/// One room subscription of a user: from its subscribe to its `complete` (a reconnect resumes
/// it under a new operation id).
struct RoomSession {
    op: String,
    room: u32,
    /// The newest message of the page read once the subscription was live: everything newer
    /// is owed. `None` when that read failed (the session is not checked).
    bound: Option<IdBytes>,
    received: Vec<IdBytes>,
    out_of_order: u64,
    closed: bool,
}

/// What one user's socket heard, written by its reader task, read by its actor and the checks.
#[derive(Default)]
struct Heard {
    /// `RoomActivity` heard: (sender, sequence number) of the message.
    activity: Vec<(u32, u32)>,
    /// Their delivery latencies, µs.
    latencies: Vec<u32>,
    /// Per room, the newest message heard on `myEvents`.
    last_by_room: HashMap<u32, IdBytes>,
    /// `RoomActivity` not newer than the last one of its room: a duplicate or reordering.
    out_of_order: u64,
    /// The newest `myEvents` cursor.
    cursor: Option<String>,
    sessions: Vec<RoomSession>,
    /// The first few things that went wrong on the socket.
    errors: Vec<String>,
}

impl Heard {
    fn error(&mut self, what: String) {
        if self.errors.len() < 3 {
            self.errors.push(what);
        }
    }
}

/// A user's link between its actor and its socket's reader.
struct Link {
    heard: Mutex<Heard>,
    /// `pong`s heard so far.
    pongs: watch::Sender<u64>,
}

impl Link {
    fn heard(&self) -> std::sync::MutexGuard<'_, Heard> {
        self.heard.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An acknowledged message.
struct Sent {
    sender: u32,
    seq: u32,
    room: u32,
    id: IdBytes,
}

/// What every user of one run shares.
struct Run {
    plan: Plan,
    addr: SocketAddr,
    pool: HttpPool,
    room_ids: Vec<String>,
    room_index: HashMap<String, u32>,
    members: Vec<u32>,
    connected: AtomicUsize,
    connect_failed: AtomicUsize,
    /// `RoomActivity` heard, and owed so far (members of each acknowledged message's room).
    delivered: AtomicU64,
    owed: AtomicU64,
    room_delivered: AtomicU64,
    actions: [AtomicU64; MIX.len()],
    skipped_reconnects: AtomicU64,
    skipped_edits: AtomicU64,
    calls: Mutex<Vec<Histogram<u64>>>,
    call_errors: [AtomicU64; CALLS.len()],
    first_error: Mutex<Option<String>>,
    sent: Mutex<Vec<Sent>>,
    /// (sender, sequence) of sends that failed: a delivery of one is not unknown.
    unacked: Mutex<Vec<(u32, u32)>>,
}

impl Run {
    fn record(&self, call: Call, started: Instant) {
        let micros = started.elapsed().as_micros() as u64;
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        report::record(&mut calls[call as usize], micros);
    }

    fn failed(&self, call: Call, e: &anyhow::Error) {
        self.call_errors[call as usize].fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(format!("{}: {e:#}", CALLS[call as usize].0));
        }
    }

    /// One timed GraphQL call; `data.<field>`, or `None` when it failed (counted).
    async fn call(
        &self,
        bearer: &str,
        call: Call,
        query: &str,
        variables: Value,
        field: &str,
    ) -> Option<Value> {
        let started = Instant::now();
        let answer = async {
            let body = serde_json::to_vec(&json!({"query": query, "variables": variables}))?;
            let (status, answer) = self.pool.post(bearer, Bytes::from(body)).await?;
            client::data_field(status, &answer, field)
        }
        .await;
        self.record(call, started);
        answer.map_err(|e| self.failed(call, &e)).ok()
    }
}

/// One simulated user: its actor's state.
struct User {
    index: u32,
    bearer: String,
    rooms: Vec<u32>,
    /// Which of `rooms` is open, and its session in `Heard::sessions`.
    open: usize,
    session: usize,
    ops: u32,
    /// Where the next older page of the open room starts.
    scroll: Option<String>,
    seq: u32,
    edits: u32,
    own: VecDeque<(IdBytes, String)>,
    rng: Rng,
    link: Arc<Link>,
    run: Arc<Run>,
    sink: Option<SplitSink<Ws, WsMessage>>,
    reader: Option<JoinHandle<()>>,
}

fn subscribe_frame(id: &str, query: &str, variables: Value) -> WsMessage {
    WsMessage::text(
        json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}})
            .to_string(),
    )
}

impl User {
    fn room_id(&self) -> &str {
        &self.run.room_ids[self.rooms[self.open] as usize]
    }

    async fn send(&mut self, frame: WsMessage) -> anyhow::Result<()> {
        let sink = self.sink.as_mut().ok_or_else(|| anyhow!("no socket"))?;
        sink.send(frame).await.context("writing to the socket")
    }

    /// A `ping` answered by its `pong`: the server reads a client's next message only once the
    /// subscriptions sent before it are live.
    async fn ping(&mut self) -> anyhow::Result<()> {
        let mut pongs = self.link.pongs.subscribe();
        let before = *pongs.borrow_and_update();
        self.send(WsMessage::text(r#"{"type":"ping"}"#)).await?;
        tokio::time::timeout(SOCKET_WAIT, pongs.wait_for(|&n| n > before))
            .await
            .context("no pong within 10 s")?
            .context("the reader stopped")?;
        Ok(())
    }

    fn next_op(&mut self) -> String {
        self.ops += 1;
        format!("r{}", self.ops)
    }

    /// Opens the socket with `myEvents` (from `cursor`) and the open room's `roomEvents` (from
    /// `after`), both live on return.
    async fn open_socket(
        &mut self,
        cursor: Option<String>,
        after: Option<IdBytes>,
    ) -> anyhow::Result<()> {
        let token = self.bearer.trim_start_matches("Bearer ");
        let ws = tokio::time::timeout(
            SOCKET_WAIT,
            client::connect_initialised(self.run.addr, token),
        )
        .await
        .context("no connection_ack within 10 s")??;
        let (sink, stream) = ws.split();
        self.sink = Some(sink);
        self.reader = Some(tokio::spawn(read_socket(
            stream,
            self.link.clone(),
            self.run.clone(),
        )));
        self.send(subscribe_frame(
            MY_EVENTS_ID,
            MY_EVENTS,
            json!({ "a": cursor }),
        ))
        .await?;
        let op = self.link.heard().sessions[self.session].op.clone();
        let after = after.map(|id| String::from_utf8_lossy(&id).into_owned());
        let room = self.room_id().to_owned();
        self.send(subscribe_frame(
            &op,
            ROOM_EVENTS,
            json!({"r": room, "a": after}),
        ))
        .await?;
        self.ping().await
    }

    /// Connects at the start: the first room's session owes everything after its history.
    async fn connect(&mut self, newest: IdBytes) -> anyhow::Result<()> {
        let op = self.next_op();
        self.link.heard().sessions.push(RoomSession {
            op,
            room: self.rooms[self.open],
            bound: Some(newest),
            received: Vec::new(),
            out_of_order: 0,
            closed: false,
        });
        self.session = 0;
        let mut tries = 0;
        loop {
            match self.open_socket(None, None).await {
                Ok(()) => return Ok(()),
                Err(e) if tries < 3 => {
                    tries += 1;
                    eprintln!("loadgen: a user's socket failed to open, retrying: {e:#}");
                    self.close().await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes the socket and waits for its reader to have read everything (bounded).
    async fn close(&mut self) {
        if let Some(mut sink) = self.sink.take() {
            // Sends a close frame; the reader reads on until the server's answers it.
            let _ = sink.close().await;
        }
        if let Some(mut reader) = self.reader.take()
            && tokio::time::timeout(SOCKET_WAIT, &mut reader)
                .await
                .is_err()
        {
            reader.abort();
            self.link
                .heard()
                .error("a socket did not close within 10 s".into());
        }
    }

    async fn act(&mut self, action: Action) -> anyhow::Result<()> {
        match action {
            Action::Switch if self.rooms.len() > 1 => {
                let mut next = self.rng.below(self.rooms.len() - 1);
                if next >= self.open {
                    next += 1;
                }
                self.switch(next).await?;
            }
            Action::Switch | Action::Idle => {}
            Action::Scroll => self.scroll().await,
            Action::Unread => {
                self.run
                    .call(&self.bearer, Call::MyRooms, MY_ROOMS, json!({}), "myRooms")
                    .await;
            }
            Action::Post => self.post().await,
            Action::MarkRead => {
                let newest = {
                    let heard = self.link.heard();
                    let session = &heard.sessions[self.session];
                    session.received.last().copied().or(session.bound)
                };
                if let Some(newest) = newest {
                    self.mark_read(newest).await;
                }
            }
            Action::Reconnect => self.reconnect().await?,
            Action::Edit => self.edit().await,
        }
        Ok(())
    }

    async fn switch(&mut self, next: usize) -> anyhow::Result<()> {
        let old = {
            let mut heard = self.link.heard();
            let session = &mut heard.sessions[self.session];
            session.closed = true;
            session.op.clone()
        };
        self.send(WsMessage::text(
            json!({"id": old, "type": "complete"}).to_string(),
        ))
        .await?;
        self.open = next;
        self.scroll = None;
        let op = self.next_op();
        let room = self.rooms[next];
        {
            let mut heard = self.link.heard();
            heard.sessions.push(RoomSession {
                op: op.clone(),
                room,
                bound: None,
                received: Vec::new(),
                out_of_order: 0,
                closed: false,
            });
            self.session = heard.sessions.len() - 1;
        }
        let room_id = self.room_id().to_owned();
        self.send(subscribe_frame(&op, ROOM_EVENTS, json!({"r": room_id})))
            .await?;
        self.ping().await?;
        // Read once the subscription is live: everything newer than this page is owed.
        let Some(page) = self
            .run
            .call(
                &self.bearer,
                Call::NewestPage,
                PAGE,
                json!({"r": room_id}),
                "messages",
            )
            .await
        else {
            return Ok(());
        };
        let newest = page["edges"]
            .as_array()
            .and_then(|edges| edges.last())
            .and_then(|edge| edge["node"]["id"].as_str())
            .map(id_bytes)
            .transpose()?;
        self.link.heard().sessions[self.session].bound = Some(newest.unwrap_or([b'0'; 24]));
        self.scroll = older_cursor(&page);
        if let Some(newest) = newest {
            self.mark_read(newest).await;
        }
        Ok(())
    }

    async fn mark_read(&mut self, message: IdBytes) {
        let message = String::from_utf8_lossy(&message).into_owned();
        let room = self.room_id().to_owned();
        self.run
            .call(
                &self.bearer,
                Call::MarkRead,
                MARK_READ,
                json!({"r": room, "m": message}),
                "markRead",
            )
            .await;
    }

    async fn scroll(&mut self) {
        let room = self.room_id().to_owned();
        let before = self.scroll.take();
        if let Some(page) = self
            .run
            .call(
                &self.bearer,
                Call::OlderPage,
                PAGE,
                json!({"r": room, "b": before}),
                "messages",
            )
            .await
        {
            self.scroll = older_cursor(&page);
        }
    }

    async fn post(&mut self) {
        let room = self.rooms[self.open];
        let room_id = self.room_id().to_owned();
        self.run
            .call(
                &self.bearer,
                Call::SetTyping,
                TYPING,
                json!({"r": room_id}),
                "setTyping",
            )
            .await;
        let seq = self.seq;
        self.seq += 1;
        let body = format!("t{}-{seq}-{}", self.index, now_ns());
        let client_id = format!("c{}-{seq}", self.index);
        let started = Instant::now();
        let request = client::send_request(&room_id, &body, &client_id);
        let answer = async {
            let (status, answer) = self.run.pool.post(&self.bearer, request.into()).await?;
            client::sent_id(status, &answer)
        }
        .await;
        self.run.record(Call::SendMessage, started);
        match answer {
            Ok(id) => {
                self.run
                    .sent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Sent {
                        sender: self.index,
                        seq,
                        room,
                        id,
                    });
                self.run.owed.fetch_add(
                    u64::from(self.run.members[room as usize]),
                    Ordering::Relaxed,
                );
                if self.own.len() == OWN_KEPT {
                    self.own.pop_front();
                }
                self.own.push_back((id, body));
            }
            Err(e) => {
                self.run.failed(Call::SendMessage, &e);
                self.run
                    .unacked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((self.index, seq));
            }
        }
    }

    async fn edit(&mut self) {
        if self.own.is_empty() {
            self.run.skipped_edits.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let (id, body) = &self.own[self.rng.below(self.own.len())];
        self.edits += 1;
        // The send time stays first: a replay of the edited message still says when it was sent.
        let variables =
            json!({"m": String::from_utf8_lossy(id), "b": format!("{body}-e{}", self.edits)});
        self.run
            .call(
                &self.bearer,
                Call::EditMessage,
                EDIT,
                variables,
                "editMessage",
            )
            .await;
    }

    async fn reconnect(&mut self) -> anyhow::Result<()> {
        if self.link.heard().cursor.is_none() {
            self.run.skipped_reconnects.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let started = Instant::now();
        self.close().await;
        let (cursor, after) = {
            let mut heard = self.link.heard();
            let cursor = heard.cursor.clone();
            let session = &heard.sessions[self.session];
            let after = session.received.last().copied().or(session.bound);
            heard.sessions[self.session].op = format!("r{}", self.ops + 1);
            (cursor, after)
        };
        self.ops += 1;
        self.open_socket(cursor, after).await?;
        self.run.record(Call::Reconnect, started);
        Ok(())
    }
}

/// The cursor of the page before `page`, when there is one.
fn older_cursor(page: &Value) -> Option<String> {
    let info = &page["pageInfo"];
    (info["hasPreviousPage"].as_bool() == Some(true))
        .then(|| info["startCursor"].as_str().map(str::to_owned))
        .flatten()
}

/// A frame, parsed just enough to check it.
#[derive(Deserialize)]
struct Next<'a> {
    #[serde(borrow)]
    id: Option<&'a str>,
    #[serde(borrow)]
    payload: Option<Payload<'a>>,
}

#[derive(Deserialize)]
struct Payload<'a> {
    #[serde(borrow)]
    data: Option<Data<'a>>,
    errors: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(rename = "myEvents", borrow)]
    my_events: Option<Event<'a>>,
    #[serde(rename = "roomEvents", borrow)]
    room_events: Option<Event<'a>>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "__typename")]
    typename: &'a str,
    #[serde(borrow)]
    cursor: Option<&'a str>,
    #[serde(borrow)]
    room: Option<RoomRef<'a>>,
    #[serde(borrow)]
    message: Option<MessageRef<'a>>,
}

#[derive(Deserialize)]
struct RoomRef<'a> {
    id: &'a str,
}

#[derive(Deserialize)]
struct MessageRef<'a> {
    id: &'a str,
    body: &'a str,
}

#[derive(Deserialize)]
struct Kind<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    id: Option<&'a str>,
}

/// (sender, sequence, send time) from a body the tool sent: `t{sender}-{seq}-{ns}[-e{n}]`.
fn parse_body(body: &str) -> Option<(u32, u32, u64)> {
    let mut fields = body.strip_prefix('t')?.split('-');
    Some((
        fields.next()?.parse().ok()?,
        fields.next()?.parse().ok()?,
        fields.next()?.parse().ok()?,
    ))
}

/// Reads a user's socket until it ends, recording what it hears in the link.
async fn read_socket(mut stream: SplitStream<Ws>, link: Arc<Link>, run: Arc<Run>) {
    while let Some(frame) = stream.next().await {
        match frame {
            Ok(WsMessage::Text(text)) => {
                if let Err(e) = heard_frame(text.as_str(), &link, &run) {
                    link.heard().error(format!("{e:#}"));
                }
            }
            Ok(_) => {}
            Err(e) => {
                link.heard().error(format!("reading the socket: {e}"));
                return;
            }
        }
    }
}

fn heard_frame(text: &str, link: &Link, run: &Run) -> anyhow::Result<()> {
    let now = now_ns();
    // The server writes compact JSON, so a `next` frame says so verbatim.
    if !text.contains(r#""type":"next""#) {
        let frame: Kind =
            serde_json::from_str(text).with_context(|| format!("not a frame: {text}"))?;
        return match frame.kind {
            "pong" => {
                link.pongs.send_modify(|n| *n += 1);
                Ok(())
            }
            "complete" => {
                // Only a room subscription the user completed itself may end.
                let heard = link.heard();
                let ours = heard
                    .sessions
                    .iter()
                    .any(|s| s.closed && Some(s.op.as_str()) == frame.id);
                ensure!(ours, "a subscription ended: {text}");
                Ok(())
            }
            "error" => bail!("a subscription failed: {text}"),
            _ => Ok(()),
        };
    }
    let next: Next =
        serde_json::from_str(text).with_context(|| format!("unreadable next frame: {text}"))?;
    let payload = next
        .payload
        .ok_or_else(|| anyhow!("next without payload: {text}"))?;
    if payload.errors.is_some() {
        bail!("a subscription reported errors: {text}");
    }
    let data = payload
        .data
        .ok_or_else(|| anyhow!("next without data: {text}"))?;
    if let Some(event) = data.my_events {
        let mut heard = link.heard();
        if let Some(cursor) = event.cursor {
            heard.cursor = Some(cursor.to_owned());
        }
        match event.typename {
            "RoomActivity" => {
                let (Some(room), Some(message)) = (event.room, event.message) else {
                    bail!("RoomActivity without room or message: {text}");
                };
                let room = *run
                    .room_index
                    .get(room.id)
                    .ok_or_else(|| anyhow!("RoomActivity in a room not seeded: {text}"))?;
                let id = id_bytes(message.id)?;
                let (sender, seq, sent_ns) = parse_body(message.body)
                    .ok_or_else(|| anyhow!("RoomActivity for a message not sent here: {text}"))?;
                let last = heard.last_by_room.entry(room).or_insert([b'0'; 24]);
                if id <= *last {
                    heard.out_of_order += 1;
                } else {
                    *last = id;
                }
                heard.activity.push((sender, seq));
                heard
                    .latencies
                    .push((now.saturating_sub(sent_ns) / 1000).min(u64::from(u32::MAX)) as u32);
                run.delivered.fetch_add(1, Ordering::Relaxed);
            }
            "RemovedFromRoom" => bail!("removed from a room, though memberships are fixed: {text}"),
            _ => {}
        }
    } else if let Some(event) = data.room_events {
        if event.typename != "MessageAdded" {
            return Ok(());
        }
        let message = event
            .message
            .ok_or_else(|| anyhow!("MessageAdded without message: {text}"))?;
        let id = id_bytes(message.id)?;
        let mut heard = link.heard();
        let session = heard
            .sessions
            .iter_mut()
            .rev()
            .find(|s| Some(s.op.as_str()) == next.id)
            .ok_or_else(|| anyhow!("an event for no subscription of ours: {text}"))?;
        if session.received.last().is_some_and(|last| id <= *last) {
            session.out_of_order += 1;
        } else {
            session.received.push(id);
        }
        run.room_delivered.fetch_add(1, Ordering::Relaxed);
    } else {
        bail!("next with neither myEvents nor roomEvents: {text}");
    }
    Ok(())
}

/// One user, from connecting to its last action; returns its actor (socket still open).
async fn user_task(
    mut user: User,
    newest: IdBytes,
    connect_at: Instant,
    mut go: watch::Receiver<Option<Instant>>,
) -> User {
    tokio::time::sleep_until(connect_at.into()).await;
    match user.connect(newest).await {
        Ok(()) => user.run.connected.fetch_add(1, Ordering::SeqCst),
        Err(e) => {
            user.link.heard().error(format!("connecting: {e:#}"));
            user.run.connect_failed.fetch_add(1, Ordering::SeqCst)
        }
    };
    let Ok(end) = go.wait_for(Option::is_some).await.map(|end| *end) else {
        return user;
    };
    let Some(end) = end else { return user };
    if user.sink.is_none() {
        return user;
    }
    // The first action comes somewhere within a first idle time, so the users do not act in step.
    let first = user.run.plan.idle(&mut user.rng).mul_f64(user.rng.unit());
    tokio::time::sleep_until((Instant::now() + first).min(end).into()).await;
    while Instant::now() < end {
        let choice = pick(&mut user.rng);
        user.run.actions[choice].fetch_add(1, Ordering::Relaxed);
        if let Err(e) = user.act(MIX[choice].2).await {
            user.link.heard().error(format!("{}: {e:#}", MIX[choice].0));
            return user;
        }
        let idle = user.run.plan.idle(&mut user.rng);
        tokio::time::sleep_until((Instant::now() + idle).min(end).into()).await;
    }
    user
}

/// Lost, duplicated and otherwise wrong deliveries, as the checks count them.
#[derive(Default, Debug)]
struct Verdict {
    owed: u64,
    lost: u64,
    duplicated: u64,
    unknown: u64,
    room_owed: u64,
    room_lost: u64,
    room_duplicated: u64,
    room_unchecked: u64,
    socket_errors: Vec<String>,
}

/// Compares what every user heard with what was acknowledged.
fn check(shape: &Shape, links: &[Arc<Link>], sent: &[Sent], unacked: &[(u32, u32)]) -> Verdict {
    let mut verdict = Verdict::default();
    let mut by_room: Vec<Vec<(u32, u32)>> = vec![Vec::new(); shape.rooms.len()];
    let mut ids_by_room: Vec<Vec<IdBytes>> = vec![Vec::new(); shape.rooms.len()];
    for s in sent {
        by_room[s.room as usize].push((s.sender, s.seq));
        ids_by_room[s.room as usize].push(s.id);
    }
    for ids in &mut ids_by_room {
        ids.sort_unstable();
    }
    let mut unacked = unacked.to_vec();
    unacked.sort_unstable();
    for (u, link) in links.iter().enumerate() {
        let heard = link.heard();
        verdict.socket_errors.extend(
            heard
                .errors
                .iter()
                .take(1)
                .map(|e| format!("user {u}: {e}")),
        );
        // myEvents: every message of every room of the user, once.
        let mut owed: Vec<(u32, u32)> = shape.of_user[u]
            .iter()
            .flat_map(|&r| by_room[r as usize].iter().copied())
            .collect();
        owed.sort_unstable();
        let mut got = heard.activity.clone();
        got.sort_unstable();
        verdict.owed += owed.len() as u64;
        verdict.duplicated += heard.out_of_order;
        let (lost, extra) = difference(&owed, &got);
        verdict.lost += lost;
        verdict.duplicated += extra
            .iter()
            .filter(|m| owed.binary_search(m).is_ok())
            .count() as u64;
        verdict.unknown += extra
            .iter()
            .filter(|m| owed.binary_search(m).is_err() && unacked.binary_search(m).is_err())
            .count() as u64;
        // roomEvents: each session, from its bound to its last delivery (or to the end).
        for session in &heard.sessions {
            let Some(bound) = session.bound else {
                verdict.room_unchecked += 1;
                continue;
            };
            let ids = &ids_by_room[session.room as usize];
            let from = ids.partition_point(|id| *id <= bound);
            let to = match (session.closed, session.received.last()) {
                (false, _) => ids.len(),
                (true, Some(last)) => ids.partition_point(|id| id <= last),
                (true, None) => from,
            };
            let owed = &ids[from..to.max(from)];
            let got: Vec<IdBytes> = session
                .received
                .iter()
                .copied()
                .filter(|id| *id > bound)
                .collect();
            verdict.room_owed += owed.len() as u64;
            verdict.room_duplicated += session.out_of_order;
            verdict.room_lost += difference(owed, &got).0;
        }
    }
    verdict
}

/// How many of `owed` are missing from `got` (both sorted), and what `got` has beyond `owed`
/// (a second copy counts as beyond).
fn difference<T: Ord + Copy>(owed: &[T], got: &[T]) -> (u64, Vec<T>) {
    let (mut i, mut j, mut lost, mut extra) = (0, 0, 0u64, Vec::new());
    while i < owed.len() || j < got.len() {
        match (owed.get(i), got.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                lost += 1;
                i += 1;
            }
            (Some(_), None) => {
                lost += 1;
                i += 1;
            }
            (_, Some(b)) => {
                extra.push(*b);
                j += 1;
            }
            (None, None) => break,
        }
    }
    (lost, extra)
}

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
    let pool = Plan::new(args, common.smoke, 1)?.pool;
    // Each process holds a socket per user plus the pool; the server's own cap is 20,000.
    let most = (open_files_limit().saturating_sub(pool as u64 + 512) as usize)
        .min(20_000usize.saturating_sub(pool + 512));
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
    let shape = shape(n, plan.max_room)?;
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let path = sqlite_path(&dir);
    let seeding = Instant::now();
    let seeded = seed(&path, &shape).await?;
    let memberships: usize = shape.rooms.iter().map(Vec::len).sum();
    let largest = shape.rooms.iter().map(Vec::len).max().unwrap_or(0);
    report.note(format!(
        "team {n}: seeded {n} users with sessions, {} rooms (largest {largest}, {memberships} memberships), {} messages through Confab's store in {:.1} s",
        shape.rooms.len(),
        shape.rooms.len() * HISTORY,
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
        tasks.push(tokio::spawn(user_task(
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
    let verdict = check(&shape, &links, &sent, &unacked);
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
