//! One simulated user's actor: connects, idles and acts by the mix, and what all users of a
//! run share (the HTTP pool, the counters, the acknowledged messages).

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use futures_util::{SinkExt as _, StreamExt as _, stream::SplitSink};
use hdrhistogram::Histogram;
use hyper::body::Bytes;
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::{
    Action, CALLS, Call, MIX, Plan, pick,
    socket::{Link, RoomSession, read_socket},
};
use crate::{
    client::{self, HttpPool, IdBytes, Rng, Ws, id_bytes, now_ns},
    report,
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
/// Own messages a user remembers, to edit one.
const OWN_KEPT: usize = 5;
/// How long a `pong`, a socket's end or a connect may take before it counts as failed.
const SOCKET_WAIT: Duration = Duration::from_secs(10);

/// An acknowledged message.
pub(super) struct Sent {
    pub(super) sender: u32,
    pub(super) seq: u32,
    pub(super) room: u32,
    pub(super) id: IdBytes,
}

/// What every user of one run shares.
pub(super) struct Run {
    pub(super) plan: Plan,
    pub(super) addr: SocketAddr,
    pub(super) pool: HttpPool,
    pub(super) room_ids: Vec<String>,
    pub(super) room_index: HashMap<String, u32>,
    pub(super) members: Vec<u32>,
    pub(super) connected: AtomicUsize,
    pub(super) connect_failed: AtomicUsize,
    /// `RoomActivity` heard, and owed so far (members of each acknowledged message's room).
    pub(super) delivered: AtomicU64,
    pub(super) owed: AtomicU64,
    pub(super) room_delivered: AtomicU64,
    pub(super) actions: [AtomicU64; MIX.len()],
    pub(super) skipped_reconnects: AtomicU64,
    pub(super) skipped_edits: AtomicU64,
    /// Sockets dropped by the server instead of answering our close frame.
    pub(super) dropped_on_close: AtomicU64,
    pub(super) calls: Mutex<Vec<Histogram<u64>>>,
    pub(super) call_errors: [AtomicU64; CALLS.len()],
    pub(super) first_error: Mutex<Option<String>>,
    pub(super) sent: Mutex<Vec<Sent>>,
    /// (sender, sequence) of sends that failed: a delivery of one is not unknown.
    pub(super) unacked: Mutex<Vec<(u32, u32)>>,
}

impl Run {
    pub(super) fn record(&self, call: Call, started: Instant) {
        let micros = started.elapsed().as_micros() as u64;
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        report::record(&mut calls[call as usize], micros);
    }

    pub(super) fn failed(&self, call: Call, e: &anyhow::Error) {
        self.call_errors[call as usize].fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if first.is_none() {
            *first = Some(format!("{}: {e:#}", CALLS[call as usize].0));
        }
    }

    /// One timed GraphQL call; `data.<field>`, or `None` when it failed (counted).
    pub(super) async fn call(
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
pub(super) struct User {
    pub(super) index: u32,
    pub(super) bearer: String,
    pub(super) rooms: Vec<u32>,
    /// Which of `rooms` is open, and its session in `Heard::sessions`.
    pub(super) open: usize,
    pub(super) session: usize,
    pub(super) ops: u32,
    /// Where the next older page of the open room starts.
    pub(super) scroll: Option<String>,
    pub(super) seq: u32,
    pub(super) edits: u32,
    pub(super) own: VecDeque<(IdBytes, String)>,
    pub(super) rng: Rng,
    pub(super) link: Arc<Link>,
    pub(super) run: Arc<Run>,
    pub(super) sink: Option<SplitSink<Ws, WsMessage>>,
    pub(super) reader: Option<JoinHandle<()>>,
}

fn subscribe_frame(id: &str, query: &str, variables: Value) -> WsMessage {
    WsMessage::text(
        json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}})
            .to_string(),
    )
}

impl User {
    pub(super) fn room_id(&self) -> &str {
        &self.run.room_ids[self.rooms[self.open] as usize]
    }

    pub(super) async fn send(&mut self, frame: WsMessage) -> anyhow::Result<()> {
        let sink = self.sink.as_mut().ok_or_else(|| anyhow!("no socket"))?;
        sink.send(frame).await.context("writing to the socket")
    }

    /// A `ping` answered by its `pong`: the server reads a client's next message only once the
    /// subscriptions sent before it are live.
    pub(super) async fn ping(&mut self) -> anyhow::Result<()> {
        let mut pongs = self.link.pongs.subscribe();
        let before = *pongs.borrow_and_update();
        self.send(WsMessage::text(r#"{"type":"ping"}"#)).await?;
        tokio::time::timeout(SOCKET_WAIT, pongs.wait_for(|&n| n > before))
            .await
            .context("no pong within 10 s")?
            .context("the reader stopped")?;
        Ok(())
    }

    pub(super) fn next_op(&mut self) -> String {
        self.ops += 1;
        format!("r{}", self.ops)
    }

    /// Opens the socket with `myEvents` (from `cursor`) and the open room's `roomEvents` (from
    /// `after`), both live on return.
    pub(super) async fn open_socket(
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
        self.link.closing.store(false, Ordering::SeqCst);
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
    pub(super) async fn connect(&mut self, newest: IdBytes) -> anyhow::Result<()> {
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
    pub(super) async fn close(&mut self) {
        self.link.closing.store(true, Ordering::SeqCst);
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

    pub(super) async fn act(&mut self, action: Action) -> anyhow::Result<()> {
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

    pub(super) async fn switch(&mut self, next: usize) -> anyhow::Result<()> {
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

    pub(super) async fn mark_read(&mut self, message: IdBytes) {
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

    pub(super) async fn scroll(&mut self) {
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

    pub(super) async fn post(&mut self) {
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

    pub(super) async fn edit(&mut self) {
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

    pub(super) async fn reconnect(&mut self) -> anyhow::Result<()> {
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

/// One user, from connecting to its last action; returns its actor (socket still open).
pub(super) async fn user_task(
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
