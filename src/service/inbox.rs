//! `myEvents`: one stream of everything that concerns a user across all their rooms, resumable
//! from a cursor with no gap and no duplicate (ARCHITECTURE.md, "One stream per user").
//!
//! Two sources feed it. Each user has a log of their own ([`UserEvent`]: joined, removed,
//! invited, read marker moved), written by the service after the change it records, numbered
//! 1, 2, 3… with no gap, and announced on the user's bus channel. Messages are not logged per
//! member (a send writes nothing per member): the stream follows each room it tracks with the
//! room's own feed ([`feed::room_feed`]), which already replays from a message id and catches
//! up after lost events.
//!
//! So a position in the stream is the log position plus, for every tracked room, the newest
//! message passed. The rooms' part would make a cursor grow with the rooms, so it is split: a
//! *checkpoint* (all rooms, saved in the store when the stream starts and whenever the part not
//! in it grows past [`DELTA_MAX`] rooms) and the *delta* (rooms moved since, carried in the
//! cursor). A cursor is `(log position, checkpoint id, delta)`, a few hundred bytes at most.
//!
//! Resuming replays the log after its position (a `Joined` starts tracking a room at the
//! message the join found newest, a `Removed` stops it), then reconciles with the memberships
//! the store holds (a room left with no log entry says `RemovedFromRoom` "removed"; a room
//! joined with none is tracked from the member's read marker), then starts every tracked room's
//! feed from its position, replaying what came after it. Live, the user channel is taken
//! before anything is read, and a log entry numbered past the next one means entries were not
//! heard: they are read from the store, where every position before a stored one is stored.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::{ChatService, feed, limiter::Kind};
use crate::{
    bus::{EventBus, Received, RoomFeed},
    error::{Error, Result},
    model::{
        CheckpointId, Invitation, Message, MessageId, PageRequest, ReadState, RemovalReason, Room,
        RoomEvent, RoomId, RoomPositions, Shown, User, UserEvent, UserEventKind, UserId,
        user_channel,
    },
    store::Store,
};

/// Rooms a cursor carries beyond its checkpoint; one more and the stream saves a checkpoint.
pub const DELTA_MAX: usize = 8;

/// The longest cursor accepted (a valid one is well under this).
pub const CURSOR_CHARS_MAX: usize = 1024;

/// Log entries read per query when replaying.
const LOG_BATCH: usize = 200;

/// Rooms listed per query when reading a user's memberships.
const ROOMS_BATCH: usize = 200;

const CURSOR_VERSION: u8 = 1;

/// What `myEvents` delivers. Every event but presence carries the cursor to resume after it.
#[derive(Debug, Clone)]
pub enum InboxEvent {
    RoomActivity {
        cursor: String,
        room: Box<Room>,
        message: Box<Message>,
    },
    ReadStateChanged {
        cursor: String,
        room_id: RoomId,
        state: ReadState,
    },
    Invited {
        cursor: String,
        invitation: Invitation,
    },
    RemovedFromRoom {
        cursor: String,
        room_id: RoomId,
        reason: RemovalReason,
    },
    /// Someone who shares a room with the user shows another presence (not replayed).
    PresenceChanged { user: User, shown: Shown },
}

/// A parsed cursor (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    log: u64,
    checkpoint: CheckpointId,
    /// Per room moved since the checkpoint: where it stands, or `None` when no longer tracked.
    delta: BTreeMap<RoomId, Option<Option<MessageId>>>,
}

fn bad_cursor() -> Error {
    Error::invalid(
        "after",
        "not a cursor this server gave: pass the `cursor` of an event from `myEvents`",
    )
}

fn stale_cursor() -> Error {
    Error::invalid(
        "after",
        "this cursor is too old to resume from: read your rooms again and subscribe without `after`",
    )
}

impl Cursor {
    fn encode(&self) -> String {
        let mut bytes = Vec::with_capacity(21 + self.delta.len() * 25);
        bytes.push(CURSOR_VERSION);
        bytes.extend_from_slice(&self.log.to_be_bytes());
        bytes.extend_from_slice(&self.checkpoint.bytes());
        for (room, position) in &self.delta {
            bytes.extend_from_slice(&room.bytes());
            match position {
                None => bytes.push(0),
                Some(None) => bytes.push(1),
                Some(Some(message)) => {
                    bytes.push(2);
                    bytes.extend_from_slice(&message.bytes());
                }
            }
        }
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn decode(text: &str) -> Result<Self> {
        if text.len() > CURSOR_CHARS_MAX {
            return Err(bad_cursor());
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad_cursor())?;
        let (&[CURSOR_VERSION], rest) = bytes.split_at_checked(1).ok_or_else(bad_cursor)? else {
            return Err(bad_cursor());
        };
        let (log, rest) = rest.split_at_checked(8).ok_or_else(bad_cursor)?;
        let (checkpoint, mut rest) = rest.split_at_checked(12).ok_or_else(bad_cursor)?;
        let id12 = |b: &[u8]| <[u8; 12]>::try_from(b).map_err(|_| bad_cursor());
        let mut delta = BTreeMap::new();
        while !rest.is_empty() {
            let (room, tail) = rest.split_at_checked(12).ok_or_else(bad_cursor)?;
            let (&[tag], tail) = tail.split_at_checked(1).ok_or_else(bad_cursor)? else {
                return Err(bad_cursor());
            };
            let (position, tail) = match tag {
                0 => (None, tail),
                1 => (Some(None), tail),
                2 => {
                    let (message, tail) = tail.split_at_checked(12).ok_or_else(bad_cursor)?;
                    (Some(Some(MessageId::from_bytes(id12(message)?))), tail)
                }
                _ => return Err(bad_cursor()),
            };
            delta.insert(RoomId::from_bytes(id12(room)?), position);
            rest = tail;
        }
        if delta.len() > DELTA_MAX {
            return Err(bad_cursor());
        }
        Ok(Self {
            log: u64::from_be_bytes(<[u8; 8]>::try_from(log).map_err(|_| bad_cursor())?),
            checkpoint: CheckpointId::from_bytes(id12(checkpoint)?),
            delta,
        })
    }
}

/// Where the stream stands: what a cursor says, with the checkpoint read.
struct Tracker {
    user: UserId,
    log: u64,
    checkpoint: CheckpointId,
    base: HashMap<RoomId, Option<MessageId>>,
    delta: BTreeMap<RoomId, Option<Option<MessageId>>>,
}

impl Tracker {
    /// Where a tracked room stands; `None` when the room is not tracked.
    fn position(&self, room: RoomId) -> Option<Option<MessageId>> {
        match self.delta.get(&room) {
            Some(moved) => *moved,
            None => self.base.get(&room).copied(),
        }
    }

    fn tracked(&self) -> Vec<(RoomId, Option<MessageId>)> {
        let mut rooms: Vec<_> = self
            .base
            .iter()
            .filter(|(room, _)| !self.delta.contains_key(room))
            .map(|(room, at)| (*room, *at))
            .collect();
        rooms.extend(
            self.delta
                .iter()
                .filter_map(|(room, at)| at.map(|at| (*room, at))),
        );
        rooms
    }

    fn set(&mut self, room: RoomId, at: Option<MessageId>) {
        if self.base.get(&room) == Some(&at) {
            self.delta.remove(&room);
        } else {
            self.delta.insert(room, Some(at));
        }
    }

    fn untrack(&mut self, room: RoomId) {
        if self.base.contains_key(&room) {
            self.delta.insert(room, None);
        } else {
            self.delta.remove(&room);
        }
    }

    /// The cursor of where the stream stands now, saving a checkpoint first when the delta
    /// has outgrown a cursor.
    async fn cursor(&mut self, store: &dyn Store) -> Result<String> {
        if self.delta.len() > DELTA_MAX {
            let rooms: RoomPositions = self.tracked();
            self.checkpoint = store.save_checkpoint(self.user, rooms.clone()).await?;
            self.base = rooms.into_iter().collect();
            self.delta.clear();
        }
        Ok(Cursor {
            log: self.log,
            checkpoint: self.checkpoint,
            delta: self.delta.clone(),
        }
        .encode())
    }
}

/// Room events queued between the tracked rooms' feeds and the stream.
const ROOM_QUEUE: usize = 256;

/// One item of a tracked room's feed: the room, which start of its feed (see [`Rooms`]) sent
/// it, and the item (`None` once the feed ended).
type RoomItem = (RoomId, u64, Option<Result<Arc<RoomEvent>>>);

/// The feeds of the tracked rooms, each run by a task of its own into one queue. A feed polled
/// only while the stream is would hold what its pending read holds (a database connection)
/// whenever the stream waits on its consumer: with many rooms, the consumer's own reads would
/// then wait for a connection that never comes back.
struct Rooms {
    queue: mpsc::Sender<RoomItem>,
    items: mpsc::Receiver<RoomItem>,
    /// Per room: its feed's task, and the number of the start that made it.
    running: HashMap<RoomId, (tokio::task::AbortHandle, u64)>,
    starts: u64,
}

impl Rooms {
    fn new() -> Self {
        let (queue, items) = mpsc::channel(ROOM_QUEUE);
        Self {
            queue,
            items,
            running: HashMap::new(),
            starts: 0,
        }
    }

    fn start(
        &mut self,
        room: RoomId,
        events: impl Stream<Item = Result<Arc<RoomEvent>>> + Send + 'static,
    ) {
        self.stop(room);
        self.starts += 1;
        let start = self.starts;
        let queue = self.queue.clone();
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(events);
            while let Some(item) = events.next().await {
                // Typing, edits, joins and the like stay here: a typing notice in a room of
                // 500 would otherwise wake 500 streams that tell nothing of it.
                if !concerns_the_stream(&item) {
                    continue;
                }
                if queue.send((room, start, Some(item))).await.is_err() {
                    return;
                }
            }
            let _ = queue.send((room, start, None)).await;
        });
        self.running.insert(room, (task.abort_handle(), start));
    }

    fn stop(&mut self, room: RoomId) {
        if let Some((task, _)) = self.running.remove(&room) {
            task.abort();
        }
    }

    /// Whether an item comes from the current feed of its room (not one stopped since).
    fn current(&self, room: RoomId, start: u64) -> bool {
        self.running.get(&room).is_some_and(|(_, s)| *s == start)
    }
}

impl Drop for Rooms {
    fn drop(&mut self) {
        for (task, _) in self.running.values() {
            task.abort();
        }
    }
}

/// Whether a room feed's item is one the stream acts on (see its `Next::Room` arms): an error,
/// a new message, a room's new name or a presence change.
fn concerns_the_stream(item: &Result<Arc<RoomEvent>>) -> bool {
    match item {
        Err(_) => true,
        Ok(event) => matches!(
            **event,
            RoomEvent::MessageAdded(_)
                | RoomEvent::RoomUpdated(_)
                | RoomEvent::PresenceChanged { .. }
        ),
    }
}

/// What the stream heard next.
enum Next {
    Log(Received),
    Room(RoomId, Option<Result<Arc<RoomEvent>>>),
    Stale,
}

/// What one log entry gives the subscriber, with the tracker moved past it.
enum Step {
    Nothing,
    Emit(InboxEvent),
    /// A room to start following from this position.
    Track(RoomId, Option<MessageId>),
    /// A room tracked already, to follow again from this position if its feed has ended.
    Retrack(RoomId, Option<MessageId>),
}

impl ChatService {
    /// Records an entry of `user`'s own log, after the change it describes was stored. A
    /// failure is logged, not returned: the change stands, and a resuming stream reconciles
    /// memberships with the store.
    pub(super) async fn note(&self, user: UserId, kind: UserEventKind) {
        if let Err(e) = self.store.append_user_event(user, kind).await {
            tracing::warn!(%user, error = %e, "could not record an entry of a user's log");
        }
    }

    pub(super) async fn note_joined(&self, user: UserId, room: RoomId, after: Option<MessageId>) {
        self.note(
            user,
            UserEventKind::Joined {
                room_id: room,
                after,
            },
        )
        .await;
    }

    pub(super) async fn note_removed(&self, user: UserId, room: RoomId, reason: RemovalReason) {
        self.note(
            user,
            UserEventKind::Removed {
                room_id: room,
                reason,
            },
        )
        .await;
    }

    /// The caller's `myEvents` stream (see the module docs), from `after` when given.
    pub async fn my_events(
        &self,
        caller: &crate::auth::Caller,
        after: Option<&str>,
    ) -> Result<impl Stream<Item = Result<InboxEvent>> + Send + 'static + use<>> {
        let user = caller.user_id()?;
        // A bad cursor is told as such, before any allowance is spent on it.
        let resume = after.map(Cursor::decode).transpose()?;
        // Each holds a task and a feed per room of the user's: a few per user are enough for
        // their devices.
        let open = self.streams.open(user)?;
        // A fresh start saves a checkpoint: a write, so a client that resubscribes in a loop is
        // held to the joins rate.
        self.take(Kind::Streams, self.guards.rates.joins, &user.to_hex())
            .await?;
        let inbox = Inbox {
            store: self.store.clone(),
            bus: self.bus.clone(),
        };
        let events = inbox.stream(user, resume).await?;
        Ok(events.map(move |event| {
            let _open = &open;
            event
        }))
    }
}

/// `myEvents` streams one user may have open at once on one instance.
pub const STREAMS_PER_USER: usize = 8;

/// The `myEvents` streams open on this instance, per user.
#[derive(Default, Clone)]
pub(super) struct OpenStreams(Arc<std::sync::Mutex<HashMap<UserId, usize>>>);

/// One open stream, counted until dropped.
pub(super) struct OpenStream {
    streams: OpenStreams,
    user: UserId,
}

impl OpenStreams {
    fn open(&self, user: UserId) -> Result<OpenStream> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(user).or_default();
        if *count >= STREAMS_PER_USER {
            return Err(Error::forbidden(format!(
                "you have {STREAMS_PER_USER} myEvents subscriptions open already: close one first"
            )));
        }
        *count += 1;
        Ok(OpenStream {
            streams: self.clone(),
            user,
        })
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let mut open = self.streams.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// What a `myEvents` stream reads from.
struct Inbox {
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
}

impl Inbox {
    /// Every entry of `user`'s log after `pos` (at most the kept window).
    async fn log_after(&self, user: UserId, mut pos: u64) -> Result<Vec<UserEvent>> {
        let mut entries = Vec::new();
        loop {
            let batch = self.store.user_events_after(user, pos, LOG_BATCH).await?;
            let complete = batch.len() < LOG_BATCH;
            pos = batch.last().map_or(pos, |e| e.pos);
            entries.extend(batch);
            if complete || entries.len() as u64 > crate::store::USER_LOG_KEEP {
                return Ok(entries);
            }
        }
    }

    /// Every room `user` is a member of.
    async fn all_rooms_of(&self, user: UserId) -> Result<Vec<Room>> {
        let mut rooms = Vec::new();
        let mut after = None;
        loop {
            let page = self
                .store
                .rooms_of(
                    user,
                    PageRequest::Forward {
                        after,
                        first: ROOMS_BATCH,
                    },
                )
                .await?;
            after = page.items.last().map(|r| r.id.object_id());
            let more = page.has_next;
            rooms.extend(page.items);
            if !more || after.is_none() || rooms.len() > 10 * super::limits::MAX_ROOMS_PER_USER {
                return Ok(rooms);
            }
        }
    }

    /// A room's feed for a stream that stands at `at` in it, replaying what came after.
    async fn room_feed_from(
        &self,
        user: UserId,
        room: RoomId,
        at: Option<MessageId>,
    ) -> Result<impl Stream<Item = Result<Arc<RoomEvent>>> + Send + 'static + use<>> {
        let subscription: RoomFeed = self.bus.subscribe(room);
        let head = self.store.room_head(room).await?;
        Ok(feed::room_feed(
            self.store.clone(),
            subscription,
            feed::Start {
                room,
                subscriber: user,
                after: at.unwrap_or_else(|| MessageId::from_bytes([0; 12])),
                seq: head.seq,
                replay: true,
            },
        ))
    }

    /// What a log entry gives a stream (see [`Step`]). `later_read` says whether a later entry
    /// of the same batch moves the same room's marker again (this one is then skipped).
    async fn step(
        &self,
        tracker: &mut Tracker,
        entry: UserEvent,
        later_read: bool,
    ) -> Result<Step> {
        tracker.log = tracker.log.max(entry.pos);
        Ok(match entry.kind {
            UserEventKind::Joined { room_id, after } => match tracker.position(room_id) {
                // Tracked already: followed again from where it stands, if its feed had ended
                // (a removal whose entry was lost, then this join).
                Some(at) => Step::Retrack(room_id, at),
                None => {
                    tracker.set(room_id, after);
                    Step::Track(room_id, after)
                }
            },
            UserEventKind::Removed { room_id, reason } => {
                if tracker.position(room_id).is_none() {
                    Step::Nothing
                } else {
                    tracker.untrack(room_id);
                    Step::Emit(InboxEvent::RemovedFromRoom {
                        cursor: tracker.cursor(&*self.store).await?,
                        room_id,
                        reason,
                    })
                }
            }
            UserEventKind::Invited(invitation) => Step::Emit(InboxEvent::Invited {
                cursor: tracker.cursor(&*self.store).await?,
                invitation,
            }),
            UserEventKind::ReadMoved { room_id } => {
                if later_read {
                    return Ok(Step::Nothing);
                }
                match self.store.read_state(room_id, tracker.user).await? {
                    Some(state) => Step::Emit(InboxEvent::ReadStateChanged {
                        cursor: tracker.cursor(&*self.store).await?,
                        room_id,
                        state,
                    }),
                    None => Step::Nothing,
                }
            }
        })
    }

    async fn stream(
        self,
        user: UserId,
        resume: Option<Cursor>,
    ) -> Result<impl Stream<Item = Result<InboxEvent>> + Send + 'static + use<>> {
        // Taken before anything is read: no entry written from now on is missed.
        let mut channel = self.bus.subscribe(user_channel(user));
        let (head, oldest) = self.store.user_log_bounds(user).await?;
        let mut rooms = Rooms::new();
        let mut tracker;
        let mut replay_from = None;
        match resume {
            Some(cursor) => {
                let base = self
                    .store
                    .checkpoint(user, cursor.checkpoint)
                    .await?
                    .ok_or_else(stale_cursor)?;
                if cursor.log > head {
                    return Err(bad_cursor());
                }
                if cursor.log < head && cursor.log + 1 < oldest {
                    return Err(stale_cursor());
                }
                tracker = Tracker {
                    user,
                    log: cursor.log,
                    checkpoint: cursor.checkpoint,
                    base: base.into_iter().collect(),
                    delta: cursor.delta,
                };
                replay_from = Some(cursor.log);
            }
            None => {
                let mut positions = Vec::new();
                for room in self.all_rooms_of(user).await? {
                    let subscription = self.bus.subscribe(room.id);
                    let head = self.store.room_head(room.id).await?;
                    positions.push((room.id, head.last_message));
                    rooms.start(
                        room.id,
                        feed::room_feed(
                            self.store.clone(),
                            subscription,
                            feed::Start {
                                room: room.id,
                                subscriber: user,
                                after: head
                                    .last_message
                                    .unwrap_or_else(|| MessageId::from_bytes([0; 12])),
                                seq: head.seq,
                                replay: false,
                            },
                        ),
                    );
                }
                let checkpoint = self.store.save_checkpoint(user, positions.clone()).await?;
                tracker = Tracker {
                    user,
                    log: head,
                    checkpoint,
                    base: positions.into_iter().collect(),
                    delta: BTreeMap::new(),
                };
            }
        }
        let service = self;
        Ok(async_stream::try_stream! {
            let mut names: HashMap<RoomId, Room> = HashMap::new();
            // The presence last told of each person (told again only when it changes).
            let mut presence: HashMap<UserId, (Shown, chrono::DateTime<chrono::Utc>)> =
                HashMap::new();
            if let Some(from) = replay_from {
                // The log after the cursor.
                let mut pos = from;
                loop {
                    let batch = service.store.user_events_after(user, pos, LOG_BATCH).await?;
                    let complete = batch.len() < LOG_BATCH;
                    let moved_later: Vec<bool> = batch
                        .iter()
                        .enumerate()
                        .map(|(i, e)| match e.kind {
                            UserEventKind::ReadMoved { room_id } => batch[i + 1..].iter().any(|l| {
                                matches!(l.kind, UserEventKind::ReadMoved { room_id: r } if r == room_id)
                            }),
                            _ => false,
                        })
                        .collect();
                    for (entry, later) in batch.into_iter().zip(moved_later) {
                        pos = entry.pos;
                        if let Step::Emit(event) = service.step(&mut tracker, entry, later).await? {
                            yield event;
                        }
                    }
                    if complete {
                        break;
                    }
                }
                // Reconcile with the memberships stored now.
                let members: HashMap<RoomId, Room> = service
                    .all_rooms_of(user)
                    .await?
                    .into_iter()
                    .map(|r| (r.id, r))
                    .collect();
                for (room, _) in tracker.tracked() {
                    if !members.contains_key(&room) {
                        tracker.untrack(room);
                        yield InboxEvent::RemovedFromRoom {
                            cursor: tracker.cursor(&*service.store).await?,
                            room_id: room,
                            reason: RemovalReason::Unknown,
                        };
                    }
                }
                for room in members.keys() {
                    if tracker.position(*room).is_none() {
                        let marker = service.store.read_state(*room, user).await?.and_then(|s| s.last_read);
                        tracker.set(*room, marker);
                    }
                }
                for (room, at) in tracker.tracked() {
                    let events = service.room_feed_from(user, room, at).await?;
                    rooms.start(room, events);
                }
                names = members;
            }
            loop {
                let next = tokio::select! {
                    received = channel.recv() => Next::Log(received),
                    Some((room, start, item)) = rooms.items.recv() => {
                        if rooms.current(room, start) { Next::Room(room, item) } else { Next::Stale }
                    }
                };
                match next {
                    Next::Log(received) => {
                        let entries = match received {
                            Received::Event(event) => match &*event {
                                RoomEvent::ForUser(entry) if entry.user_id == user => {
                                    if entry.pos <= tracker.log {
                                        Vec::new()
                                    } else if entry.pos == tracker.log + 1 {
                                        vec![entry.clone()]
                                    } else {
                                        // Entries before it were not heard: they are stored.
                                        service.log_after(user, tracker.log).await?
                                    }
                                }
                                _ => Vec::new(),
                            },
                            Received::Lagged(_) => service.log_after(user, tracker.log).await?,
                            Received::Closed => Err(Error::internal("the event bus closed"))?,
                        };
                        for entry in entries {
                            if entry.pos <= tracker.log {
                                continue;
                            }
                            match service.step(&mut tracker, entry, false).await? {
                                Step::Nothing => {}
                                Step::Emit(event) => {
                                    if let InboxEvent::RemovedFromRoom { room_id, .. } = &event {
                                        rooms.stop(*room_id);
                                    }
                                    yield event;
                                }
                                Step::Track(room, at) => {
                                    let events = service.room_feed_from(user, room, at).await?;
                                    rooms.start(room, events);
                                }
                                Step::Retrack(room, at) if !rooms.running.contains_key(&room) => {
                                    let events = service.room_feed_from(user, room, at).await?;
                                    rooms.start(room, events);
                                }
                                Step::Retrack(..) => {}
                            }
                        }
                    }
                    // Ended (the member left or was removed; the log says how).
                    Next::Room(room, None) => {
                        rooms.running.remove(&room);
                    }
                    Next::Stale => {}
                    Next::Room(_, Some(Err(e))) if e.code() == crate::error::Code::Forbidden => {}
                    Next::Room(_, Some(Err(e))) => Err(e)?,
                    // Only what `concerns_the_stream` lets through comes here.
                    Next::Room(room, Some(Ok(event))) => match &*event {
                        RoomEvent::MessageAdded(message) if tracker.position(room).is_some() => {
                            tracker.set(room, Some(message.id));
                            let about = match names.get(&room) {
                                Some(known) => known.clone(),
                                // A room deleted meanwhile: its removal is told from the log.
                                None => match service.store.room(room).await? {
                                    Some(found) => {
                                        names.insert(room, found.clone());
                                        found
                                    }
                                    None => continue,
                                },
                            };
                            yield InboxEvent::RoomActivity {
                                cursor: tracker.cursor(&*service.store).await?,
                                room: Box::new(about),
                                message: Box::new(message.clone()),
                            };
                        }
                        RoomEvent::RoomUpdated(updated) => {
                            names.insert(room, updated.clone());
                        }
                        // Told once per change, though it comes from every room shared.
                        RoomEvent::PresenceChanged { user: who, shown, at, .. }
                            if who.id != user
                                && presence.get(&who.id).is_none_or(|(told, when)| {
                                    told != shown && when <= at
                                }) =>
                        {
                            presence.insert(who.id, (*shown, *at));
                            yield InboxEvent::PresenceChanged {
                                user: who.clone(),
                                shown: *shown,
                            };
                        }
                        _ => {}
                    },
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> [u8; 12] {
        [n; 12]
    }

    #[test]
    fn a_cursor_reads_back_as_written() {
        let mut delta = BTreeMap::new();
        delta.insert(RoomId::from_bytes(id(1)), None);
        delta.insert(RoomId::from_bytes(id(2)), Some(None));
        delta.insert(
            RoomId::from_bytes(id(3)),
            Some(Some(MessageId::from_bytes(id(4)))),
        );
        let cursor = Cursor {
            log: 42,
            checkpoint: CheckpointId::from_bytes(id(9)),
            delta,
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
    }

    #[test]
    fn anything_else_is_refused_naming_after() {
        let good = Cursor {
            log: 1,
            checkpoint: CheckpointId::from_bytes(id(9)),
            delta: BTreeMap::new(),
        }
        .encode();
        let long = "A".repeat(CURSOR_CHARS_MAX + 1);
        let truncated = &good[..good.len() - 2];
        for text in ["", "not base64!", "AAAA", truncated, long.as_str()] {
            match Cursor::decode(text) {
                Err(Error::Invalid { field, .. }) => assert_eq!(field, "after"),
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }
}

#[cfg(test)]
mod stream_tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::{
        bus::LocalBus,
        store::{NewMessage, NewRoom, sqlite::SqliteStore},
    };

    #[tokio::test]
    async fn a_message_in_a_room_arrives() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.unwrap());
        let bus = Arc::new(LocalBus::new());
        let mut events = store.take_events().unwrap();
        let relay = bus.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                relay.publish(e).await;
            }
        });
        let ada = store.create_user("ada", "h").await.unwrap();
        let room = store
            .create_room(NewRoom::public("lobby", ada.id))
            .await
            .unwrap();
        let inbox = Inbox {
            store: store.clone(),
            bus: bus.clone(),
        };
        let stream = inbox.stream(ada.id, None).await.unwrap();
        let mut stream = Box::pin(stream);
        store
            .insert_message(NewMessage {
                room_id: room.id,
                sender_id: ada.id,
                body: "hi".into(),
                client_id: None,
                mentions: vec![],
            })
            .await
            .unwrap();
        let event = tokio::time::timeout(std::time::Duration::from_secs(5), stream.next())
            .await
            .expect("in time");
        assert!(
            matches!(event, Some(Ok(InboxEvent::RoomActivity { .. }))),
            "{event:?}"
        );
    }
}
