//! A user's socket as heard: its reader task parses every frame just enough to check it and
//! records what it heard for the user's actor and for the checks.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::{Context as _, anyhow, bail, ensure};
use futures_util::{StreamExt as _, stream::SplitStream};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::user::Run;
use crate::client::{IdBytes, Ws, id_bytes, now_ns};

/// One room subscription of a user: from its subscribe to its `complete` (a reconnect resumes
/// it under a new operation id).
pub(super) struct RoomSession {
    pub(super) op: String,
    pub(super) room: u32,
    /// The newest message of the page read once the subscription was live: everything newer
    /// is owed. `None` when that read failed (the session is not checked).
    pub(super) bound: Option<IdBytes>,
    pub(super) received: Vec<IdBytes>,
    pub(super) out_of_order: u64,
    pub(super) closed: bool,
}

/// What one user's socket heard, written by its reader task, read by its actor and the checks.
#[derive(Default)]
pub(super) struct Heard {
    /// `RoomActivity` heard: (sender, sequence number) of the message.
    pub(super) activity: Vec<(u32, u32)>,
    /// Their delivery latencies, µs.
    pub(super) latencies: Vec<u32>,
    /// Per room, the newest message heard on `myEvents`.
    pub(super) last_by_room: HashMap<u32, IdBytes>,
    /// `RoomActivity` not newer than the last one of its room: a duplicate or reordering.
    pub(super) out_of_order: u64,
    /// The newest `myEvents` cursor.
    pub(super) cursor: Option<String>,
    pub(super) sessions: Vec<RoomSession>,
    /// The first few things that went wrong on the socket.
    pub(super) errors: Vec<String>,
}

impl Heard {
    pub(super) fn error(&mut self, what: String) {
        if self.errors.len() < 3 {
            self.errors.push(what);
        }
    }
}

/// A user's link between its actor and its socket's reader.
pub(super) struct Link {
    pub(super) heard: Mutex<Heard>,
    /// `pong`s heard so far.
    pub(super) pongs: watch::Sender<u64>,
    /// Set while the actor closes the socket: the reader then reads on to the end, and a
    /// connection dropped instead of answering our close frame is not a failure.
    pub(super) closing: AtomicBool,
}

impl Link {
    pub(super) fn heard(&self) -> std::sync::MutexGuard<'_, Heard> {
        self.heard.lock().unwrap_or_else(|p| p.into_inner())
    }
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
pub(super) async fn read_socket(mut stream: SplitStream<Ws>, link: Arc<Link>, run: Arc<Run>) {
    while let Some(frame) = stream.next().await {
        match frame {
            Ok(WsMessage::Text(text)) => {
                if let Err(e) = heard_frame(text.as_str(), &link, &run) {
                    link.heard().error(format!("{e:#}"));
                }
            }
            Ok(_) => {}
            Err(_) if link.closing.load(Ordering::SeqCst) => {
                run.dropped_on_close.fetch_add(1, Ordering::Relaxed);
                return;
            }
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
