//! The production store: MongoDB through the official driver.
//!
//! Collections `users`, `rooms`, `memberships` and `messages`, shaped as ARCHITECTURE.md says.
//! Uniqueness is the indexes' job (created idempotently at startup): usernames and room names
//! through a stored key, `store::unique_key` (letter case and look-alikes folded in Rust, so it
//! works on every MongoDB-compatible server, without collations; keys made under older rules
//! are recomputed at startup, see `upgrade_name_keys`), `(room_id, user_id)` memberships, and `(room_id, sender_id, client_id)` where a
//! client id exists (a partial index). A duplicate-key error (11000) becomes `Conflict`, or for
//! a client id the first message: no read-then-write checks. History pages are keyset queries on
//! the `(room_id, _id)` index, never `skip`. Nothing needs transactions or change streams.
//!
//! Ordering: writes to one room go one at a time through that room's lock, which mints the
//! message id, writes, and queues the room event before the next write of the room starts. So
//! within this instance a room's ids, commits and events share one order, as with SQLite. Each
//! write runs in a task of its own: a request abandoned midway (a client gone, a timeout) cannot
//! stop a write between the database and its announcement, or release the room's lock early.
//! Ids resume above the largest stored one. Across instances, a room's write lease (see
//! [`Lease`]) does for one room's message changes what the local lock does within one instance.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use bson::{Bson, Document, doc, oid::ObjectId};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::{
    Client, Collection, Database, IndexModel,
    error::{ErrorKind, WriteFailure},
    options::{ClientOptions, IndexOptions, ReturnDocument},
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{
    Credentials, EVENT_QUEUE, NewMessage, RoomHead, Store, Taken, UNIQUE_KEY_VERSION, Written,
    displaced_key, displaced_keys, keyset_page, same_name_in_any_case, unique_key,
};
use crate::{
    config::ConfigError,
    error::{Error, Result},
    model::{Message, MessageId, Page, PageRequest, Room, RoomEvent, RoomId, User, UserId},
};

/// How long startup waits for a server when the URI names no `serverSelectionTimeoutMS`.
pub const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Serialize, Deserialize)]
struct UserDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
    username: String,
    username_key: String,
    /// The `store::UNIQUE_KEY_VERSION` that made `username_key` (absent: 1, lower case).
    #[serde(default = "first_key_version")]
    key_version: i64,
    password_hash: String,
    created_at: bson::DateTime,
}

#[derive(Serialize, Deserialize)]
struct RoomDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
    name: String,
    name_key: String,
    /// The `store::UNIQUE_KEY_VERSION` that made `name_key` (absent: 1, lower case).
    #[serde(default = "first_key_version")]
    key_version: i64,
    created_by: ObjectId,
    created_at: bson::DateTime,
    /// The number of the room's last message change (see `Store::changes_after`).
    #[serde(default)]
    seq: i64,
    /// The room's newest message, set together with `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_message: Option<ObjectId>,
    /// Who holds the room's write lease, and until when (see [`Lease`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    lease: Option<LeaseDoc>,
}

#[derive(Serialize, Deserialize)]
struct LeaseDoc {
    token: ObjectId,
    until: bson::DateTime,
}

/// `_id` is minted in join order, so sorting by it lists members as they joined.
#[derive(Serialize, Deserialize)]
struct MembershipDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
    room_id: ObjectId,
    user_id: ObjectId,
    joined_at: bson::DateTime,
}

#[derive(Serialize, Deserialize)]
struct MessageDoc {
    #[serde(rename = "_id")]
    id: ObjectId,
    room_id: ObjectId,
    sender_id: ObjectId,
    body: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    client_id: Option<String>,
    created_at: bson::DateTime,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    edited_at: Option<bson::DateTime>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    deleted_at: Option<bson::DateTime>,
    /// The room change number of this message's latest change.
    #[serde(default)]
    seq: i64,
}

fn first_key_version() -> i64 {
    1
}

fn to_chrono(at: bson::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or_default()
}

fn now() -> bson::DateTime {
    bson::DateTime::now()
}

impl From<UserDoc> for User {
    fn from(d: UserDoc) -> Self {
        User {
            id: d.id,
            username: d.username,
            created_at: to_chrono(d.created_at),
        }
    }
}

impl From<RoomDoc> for Room {
    fn from(d: RoomDoc) -> Self {
        Room {
            id: d.id,
            name: d.name,
            created_by: d.created_by,
            created_at: to_chrono(d.created_at),
        }
    }
}

impl From<MessageDoc> for Message {
    fn from(d: MessageDoc) -> Self {
        Message {
            id: d.id,
            room_id: d.room_id,
            sender_id: d.sender_id,
            body: d.body,
            client_id: d.client_id,
            created_at: to_chrono(d.created_at),
            edited_at: d.edited_at.map(to_chrono),
            deleted_at: d.deleted_at.map(to_chrono),
            seq: u64::try_from(d.seq).unwrap_or(0),
        }
    }
}

impl From<mongodb::error::Error> for Error {
    fn from(e: mongodb::error::Error) -> Self {
        Error::Internal(anyhow::Error::new(e).context("MongoDB"))
    }
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => w.code == 11000,
        ErrorKind::Command(c) => c.code == 11000,
        _ => false,
    }
}

/// Mints ObjectIds that strictly increase within this process (see the module docs).
#[derive(Default)]
struct IdGen {
    last: Mutex<[u8; 12]>,
}

impl IdGen {
    fn next(&self) -> ObjectId {
        super::next_object_id(&mut self.last.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// An id above `floor` too (a room's newest message, which another instance may have
    /// minted).
    fn next_after(&self, floor: Option<ObjectId>) -> ObjectId {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(floor) = floor {
            *last = (*last).max(floor.bytes());
        }
        super::next_object_id(&mut last)
    }
}

/// How long a room's write lease lasts unreleased: an instance that dies holding one delays
/// the room's writes this long, at most.
/// Instances compare it with their own clocks, which must agree to well within it.
const LEASE_TTL: Duration = Duration::from_secs(15);
/// How long a write waits for a room's lease before it fails.
const LEASE_WAIT: Duration = Duration::from_secs(20);

/// A room's write lease, held while one message change is numbered and written. Leases order
/// the changes of a room across every instance that shares the database, without
/// transactions: each change takes the number after the last and an id above the newest, and
/// is written before the next change starts. So numbers and ids follow commit order, and a
/// reader that sees a change also sees every change numbered before it. A lease is a field of
/// the room document, taken with one atomic update; one left by a dead holder expires after
/// [`LEASE_TTL`], and the next holder recounts from the messages themselves. A unique index on
/// `(room_id, seq)` refuses a number written twice should a slow holder outlive its lease.
struct Lease {
    room: RoomId,
    token: ObjectId,
    /// The last number taken; the holder's change takes the next.
    seq: u64,
    last_message: Option<ObjectId>,
}

fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// One async lock per room with writes under way; idle rooms hold none.
#[derive(Default)]
struct RoomLocks {
    locks: Mutex<HashMap<RoomId, Arc<tokio::sync::Mutex<()>>>>,
}

impl RoomLocks {
    async fn lock(&self, room: RoomId) -> RoomGuard<'_> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(room)
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        RoomGuard {
            locks: self,
            room,
            lock,
            _guard: guard,
        }
    }
}

struct RoomGuard<'a> {
    locks: &'a RoomLocks,
    room: RoomId,
    lock: Arc<tokio::sync::Mutex<()>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for RoomGuard<'_> {
    fn drop(&mut self) {
        let mut locks = self.locks.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Ours, the map's, and the guard's own: nobody else waits for this room.
        if Arc::strong_count(&self.lock) <= 3 {
            locks.remove(&self.room);
        }
    }
}

/// The handle: cheap to clone into the task that runs a write.
pub struct MongoStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    users: Collection<UserDoc>,
    rooms: Collection<RoomDoc>,
    memberships: Collection<MembershipDoc>,
    messages: Collection<MessageDoc>,
    ids: IdGen,
    room_locks: RoomLocks,
    events: Mutex<Option<mpsc::Sender<RoomEvent>>>,
}

impl MongoStore {
    /// Connects to the URI's servers, checks one answers within the server-selection timeout,
    /// and creates the indexes. The database is the URI's path, `confab` when it has none.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner::connect(url).await?),
        })
    }

    /// Like [`connect`](Self::connect), with the database named explicitly (tests use one
    /// database each).
    pub async fn connect_database(url: &str, database: &str) -> anyhow::Result<Self> {
        Ok(Self {
            inner: Arc::new(Inner::connect_database(url, database).await?),
        })
    }

    /// Runs a write in a task of its own (see the module docs) and waits for it.
    async fn write<T, F>(&self, write: impl FnOnce(Arc<Inner>) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        tokio::spawn(write(self.inner.clone()))
            .await
            .map_err(|e| Error::internal(format!("a MongoDB write task failed: {e}")))?
    }
}

impl Inner {
    /// Connects to the URI's servers, checks one answers within the server-selection timeout,
    /// and creates the indexes. The database is the URI's path, `confab` when it has none.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let mut options = ClientOptions::parse(url).await.map_err(|e| {
            ConfigError(format!(
                "--database-url is not a valid MongoDB URI: {}",
                short(&e)
            ))
        })?;
        let database = options
            .default_database
            .clone()
            .unwrap_or_else(|| "confab".into());
        Self::connect_to(options_with_defaults(&mut options), &database).await
    }

    /// Like [`connect`](Self::connect), with the database named explicitly (tests use one
    /// database each).
    pub async fn connect_database(url: &str, database: &str) -> anyhow::Result<Self> {
        let mut options = ClientOptions::parse(url)
            .await
            .map_err(|e| anyhow::anyhow!("not a valid MongoDB URI: {e}"))?;
        Self::connect_to(options_with_defaults(&mut options), database).await
    }

    async fn connect_to(options: ClientOptions, database: &str) -> anyhow::Result<Self> {
        let hosts: Vec<String> = options.hosts.iter().map(ToString::to_string).collect();
        let client = Client::with_options(options)?;
        let db = client.database(database);
        db.run_command(doc! {"ping": 1}).await.map_err(|e| {
            anyhow::anyhow!("cannot reach MongoDB at {}: {}", hosts.join(","), short(&e))
        })?;
        let store = Inner {
            users: db.collection("users"),
            rooms: db.collection("rooms"),
            memberships: db.collection("memberships"),
            messages: db.collection("messages"),
            db,
            ids: IdGen::default(),
            room_locks: RoomLocks::default(),
            events: Mutex::new(None),
        };
        store.create_indexes().await?;
        store.upgrade_name_keys().await?;
        store.resume_ids().await?;
        Ok(store)
    }

    /// Starts minting ids above the largest stored one, as the SQLite driver does.
    async fn resume_ids(&self) -> Result<()> {
        let newest = doc! {"_id": -1};
        let mut last = [0u8; 12];
        let ids = [
            self.users
                .find_one(doc! {})
                .sort(newest.clone())
                .await?
                .map(|d| d.id),
            self.rooms
                .find_one(doc! {})
                .sort(newest.clone())
                .await?
                .map(|d| d.id),
            self.memberships
                .find_one(doc! {})
                .sort(newest.clone())
                .await?
                .map(|d| d.id),
            self.messages
                .find_one(doc! {})
                .sort(newest)
                .await?
                .map(|d| d.id),
        ];
        for id in ids.into_iter().flatten() {
            last = last.max(id.bytes());
        }
        *self.ids.last.lock().unwrap_or_else(|p| p.into_inner()) = last;
        Ok(())
    }

    async fn create_indexes(&self) -> Result<()> {
        let unique = || Some(IndexOptions::builder().unique(true).build());
        // Unique where the field exists: messages without a client id, or from before change
        // numbers, are not indexed.
        let unique_where_present = |field: &str| {
            Some(
                IndexOptions::builder()
                    .unique(true)
                    .partial_filter_expression(doc! {field: {"$exists": true}})
                    .build(),
            )
        };
        index(&self.users, doc! {"username_key": 1}, unique()).await?;
        index(&self.rooms, doc! {"name_key": 1}, unique()).await?;
        index(
            &self.memberships,
            doc! {"room_id": 1, "user_id": 1},
            unique(),
        )
        .await?;
        index(&self.memberships, doc! {"user_id": 1, "room_id": 1}, None).await?;
        index(&self.messages, doc! {"room_id": 1, "_id": 1}, None).await?;
        index(
            &self.messages,
            doc! {"room_id": 1, "seq": 1},
            unique_where_present("seq"),
        )
        .await?;
        index(
            &self.messages,
            doc! {"room_id": 1, "sender_id": 1, "client_id": 1},
            unique_where_present("client_id"),
        )
        .await?;
        Ok(())
    }

    /// Recomputes the name keys stored under older `unique_key` rules (documents whose
    /// `key_version` is not the current one), oldest document first, one conditional update
    /// each: rerunning it changes nothing, and instances starting together agree. It runs once
    /// the unique indexes exist, so the index itself reports two names that now share a key.
    /// Then, as in the SQLite migration (see `sqlite::recompute_name_keys` for why), the older
    /// keeps the key, the newer gets `store::displaced_key`, and a warning names both.
    async fn upgrade_name_keys(&self) -> Result<()> {
        for (collection, name_field, key_field, what) in [
            ("users", "username", "username_key", "username"),
            ("rooms", "name", "name_key", "room name"),
        ] {
            let docs = self.db.collection::<Document>(collection);
            // A further pass only for documents that an older instance wrote meanwhile.
            for _ in 0..3 {
                let stale: Vec<Document> = docs
                    .find(doc! {"key_version": {"$ne": UNIQUE_KEY_VERSION}})
                    .sort(doc! {"_id": 1})
                    .await?
                    .try_collect()
                    .await?;
                if stale.is_empty() {
                    break;
                }
                for stale in &stale {
                    let (Ok(id), Ok(name)) =
                        (stale.get_object_id("_id"), stale.get_str(name_field))
                    else {
                        continue;
                    };
                    let key = unique_key(name);
                    upgrade_name_key(&docs, id, name, key, key_field, name_field, what).await?;
                }
            }
        }
        Ok(())
    }

    async fn announce(&self, event: RoomEvent) {
        let sink = self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(sink) = sink {
            // Waits when the publisher is behind; fails only once it is gone.
            let _ = sink.send(event).await;
        }
    }

    /// Takes `room`'s write lease (see [`Lease`]), waiting while another holds it.
    async fn lease(&self, room: RoomId) -> Result<Lease> {
        let token = ObjectId::new();
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        let mut pause = Duration::from_millis(1);
        let ttl = i64::try_from(LEASE_TTL.as_millis()).unwrap_or(i64::MAX);
        loop {
            let now = now();
            let until = bson::DateTime::from_millis(now.timestamp_millis().saturating_add(ttl));
            let take = doc! {"$set": {"lease": {"token": token, "until": until}}};
            // Plain conditional updates, which every MongoDB-wire server applies atomically
            // (not find-and-modify, which some test servers do not). A free lease first; then
            // one its holder left to expire, which means recounting.
            let free = doc! {"_id": room, "lease": Bson::Null};
            let mut taken_over = false;
            let mut taken = self
                .rooms
                .update_one(free, take.clone())
                .await?
                .modified_count
                == 1;
            if !taken {
                let expired = doc! {"_id": room, "lease.until": {"$lt": now}};
                taken = self.rooms.update_one(expired, take).await?.modified_count == 1;
                taken_over = taken;
            }
            if taken {
                let Some(state) = self.rooms.find_one(doc! {"_id": room}).await? else {
                    return Err(Error::not_found("room not found"));
                };
                let mut lease = Lease {
                    room,
                    token,
                    seq: u64::try_from(state.seq).unwrap_or(0),
                    last_message: state.last_message,
                };
                if taken_over {
                    tracing::warn!(%room, "a room's write lease expired unreleased; taking it over");
                }
                // Taken over, or a room whose messages were written before rooms kept their
                // newest id: count from the messages themselves.
                if (taken_over || lease.last_message.is_none())
                    && let Err(e) = self.recount(&mut lease).await
                {
                    self.release(lease).await;
                    return Err(e);
                }
                return Ok(lease);
            }
            if self.rooms.find_one(doc! {"_id": room}).await?.is_none() {
                return Err(Error::not_found("room not found"));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::internal(format!(
                    "room {room}: timed out waiting for its write lease"
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Brings a lease's number and newest id up to what the messages hold: after a holder
    /// died, or a write failed without saying whether it landed.
    async fn recount(&self, lease: &mut Lease) -> Result<()> {
        let newest_change = self
            .messages
            .find_one(doc! {"room_id": lease.room, "seq": {"$exists": true}})
            .sort(doc! {"seq": -1})
            .await?;
        if let Some(m) = newest_change {
            lease.seq = lease.seq.max(u64::try_from(m.seq).unwrap_or(0));
        }
        let newest = self
            .messages
            .find_one(doc! {"room_id": lease.room})
            .sort(doc! {"_id": -1})
            .await?;
        if let Some(m) = newest {
            lease.last_message = lease.last_message.max(Some(m.id));
        }
        Ok(())
    }

    /// Records the lease's number and newest id on the room and lets the lease go. A failure
    /// is logged, not returned: the change itself is stored, and the lease expires.
    async fn release(&self, lease: Lease) {
        let released = self
            .rooms
            .update_one(
                doc! {"_id": lease.room, "lease.token": lease.token},
                doc! {"$set": {
                    "seq": seq_i64(lease.seq),
                    "last_message": lease.last_message,
                    "lease": Bson::Null,
                }},
            )
            .await;
        match released {
            Ok(r) if r.matched_count == 1 => {}
            Ok(_) => {
                tracing::warn!(room = %lease.room, "a room's write lease expired before release")
            }
            Err(e) => {
                tracing::warn!(room = %lease.room, error = %short(&e), "cannot release a room's write lease; it will expire")
            }
        }
    }

    /// Releases after a write that failed: recounted first, as it may have landed anyway.
    async fn release_after_failure(&self, mut lease: Lease) {
        if let Err(e) = self.recount(&mut lease).await {
            tracing::warn!(room = %lease.room, error = %e, "cannot recount a room's changes; its lease will expire");
            return;
        }
        self.release(lease).await;
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>> {
        Ok(self.users.find_one(doc! {"_id": id}).await?.map(User::from))
    }

    /// One keyset page over `collection` ordered by `_id`, within `scope`.
    async fn page<D, T>(
        &self,
        collection: &Collection<D>,
        scope: Document,
        page: PageRequest,
    ) -> Result<Page<T>>
    where
        D: serde::de::DeserializeOwned + Send + Sync + Unpin,
        T: From<D>,
    {
        let (cursor, limit, backward) = match page {
            PageRequest::Backward { before, last } => (before.map(|b| ("$lt", b)), last, true),
            PageRequest::Forward { after, first } => (after.map(|a| ("$gt", a)), first, false),
        };
        let mut filter = scope.clone();
        if let Some((op, id)) = cursor {
            filter.insert("_id", doc! {op: id});
        }
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let items: Vec<D> = collection
            .find(filter)
            .sort(doc! {"_id": if backward { -1 } else { 1 }})
            .limit(fetch)
            .await?
            .try_collect()
            .await?;
        let beyond_cursor = match cursor {
            Some((op, id)) => {
                let mut far = scope;
                far.insert("_id", doc! {if op == "$lt" { "$gte" } else { "$lte" }: id});
                collection.find_one(far).await?.is_some()
            }
            None => false,
        };
        let items = items.into_iter().map(T::from).collect();
        Ok(keyset_page(items, limit, backward, beyond_cursor))
    }
}

/// Gives one stale document (`id`, `name`) its current key, settling a collision with the
/// document holding that key by age (see [`Inner::upgrade_name_keys`]).
async fn upgrade_name_key(
    docs: &Collection<Document>,
    id: ObjectId,
    name: &str,
    mut key: String,
    key_field: &str,
    name_field: &str,
    what: &str,
) -> Result<()> {
    for _ in 0..4 {
        let set = docs
            .update_one(
                doc! {"_id": id, "key_version": {"$ne": UNIQUE_KEY_VERSION}},
                doc! {"$set": {key_field: &key, "key_version": UNIQUE_KEY_VERSION}},
            )
            .await;
        let e = match set {
            Ok(_) => return Ok(()),
            Err(e) if is_duplicate_key(&e) => e,
            Err(e) => return Err(e.into()),
        };
        let Some(holder) = docs.find_one(doc! {key_field: &key}).await? else {
            continue; // it moved meanwhile: try again
        };
        let holder_id = holder.get_object_id("_id").map_err(|_| Error::from(e))?;
        let holder_name = holder.get_str(name_field).unwrap_or_default();
        if holder_id < id {
            tracing::warn!(
                "the {what} {name:?} (id {id}) looks like the older {what} {holder_name:?} (id {holder_id}); \
                 both are kept and only the older blocks new look-alikes: rename one of them"
            );
            key = displaced_key(&key, id);
            continue;
        }
        // The holder is newer, so it gives way. One already under current rules is displaced
        // for good; a stale one gets a placeholder no key equals and is settled in its turn.
        let current = holder
            .get("key_version")
            .and_then(Bson::as_i64)
            .is_some_and(|v| v == UNIQUE_KEY_VERSION);
        let moved = if current {
            tracing::warn!(
                "the {what} {holder_name:?} (id {holder_id}) looks like the older {what} {name:?} (id {id}); \
                 both are kept and only the older blocks new look-alikes: rename one of them"
            );
            displaced_key(&key, holder_id)
        } else {
            format!("\u{0}{}", holder_id.to_hex())
        };
        docs.update_one(
            doc! {"_id": holder_id, key_field: &key},
            doc! {"$set": {key_field: moved}},
        )
        .await?;
    }
    Err(Error::internal(format!(
        "cannot settle the key of the {what} {name:?} (id {id})"
    )))
}

/// Creates an index unless it exists.
async fn index<T: Send + Sync>(
    collection: &Collection<T>,
    keys: Document,
    options: Option<IndexOptions>,
) -> Result<()> {
    let model = IndexModel::builder().keys(keys).options(options).build();
    collection.create_index(model).await?;
    Ok(())
}

fn options_with_defaults(options: &mut ClientOptions) -> ClientOptions {
    if options.server_selection_timeout.is_none() {
        options.server_selection_timeout = Some(DEFAULT_SERVER_SELECTION_TIMEOUT);
    }
    options.app_name.get_or_insert_with(|| "confab".into());
    options.clone()
}

/// The first line of a driver error: enough to say what failed, not a stack of them.
fn short(e: &mongodb::error::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.chars().take(300).collect()
}

fn live_in_room(room: RoomId) -> Document {
    doc! {"room_id": room, "deleted_at": Bson::Null}
}

/// The work of each `Store` method; writes are called in a task of their own.
impl Inner {
    async fn ping(&self) -> Result<()> {
        self.db.run_command(doc! {"ping": 1}).await?;
        Ok(())
    }

    fn take_events(&self) -> Option<mpsc::Receiver<RoomEvent>> {
        let mut slot = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return None;
        }
        let (sender, receiver) = mpsc::channel(EVENT_QUEUE);
        *slot = Some(sender);
        Some(receiver)
    }

    async fn create_user(&self, username: &str, password_hash: &str) -> Result<User> {
        let doc = UserDoc {
            id: self.ids.next(),
            username: username.to_owned(),
            username_key: unique_key(username),
            key_version: UNIQUE_KEY_VERSION,
            password_hash: password_hash.to_owned(),
            created_at: now(),
        };
        if let Err(e) = self.users.insert_one(&doc).await {
            if is_duplicate_key(&e) {
                return Err(Error::from(Taken::Username));
            }
            return Err(e.into());
        }
        Ok(doc.into())
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        self.user_by_id(id).await
    }

    async fn credentials(&self, username: &str) -> Result<Option<Credentials>> {
        let key = unique_key(username);
        let (displaced_from, displaced_to) = displaced_keys(&key);
        let found: Vec<UserDoc> = self
            .users
            .find(doc! {"$or": [
                {"username_key": &key},
                {"username_key": {"$gt": displaced_from, "$lt": displaced_to}},
            ]})
            .await?
            .try_collect()
            .await?;
        let found = found
            .into_iter()
            .find(|d| same_name_in_any_case(&d.username, username));
        Ok(found.map(|d| {
            let password_hash = d.password_hash.clone();
            Credentials {
                user: d.into(),
                password_hash,
            }
        }))
    }

    async fn create_room(&self, name: &str, creator: UserId) -> Result<Room> {
        if self.user_by_id(creator).await?.is_none() {
            return Err(Error::not_found("user not found"));
        }
        let room = RoomDoc {
            id: self.ids.next(),
            name: name.to_owned(),
            name_key: unique_key(name),
            key_version: UNIQUE_KEY_VERSION,
            created_by: creator,
            created_at: now(),
            seq: 0,
            last_message: None,
            lease: None,
        };
        // Without transactions: the creator's membership goes first, so the room is never
        // seen without its first member, and nobody can join ahead of its creator.
        let _room = self.room_locks.lock(room.id).await;
        let membership = MembershipDoc {
            id: self.ids.next(),
            room_id: room.id,
            user_id: creator,
            joined_at: room.created_at,
        };
        self.memberships.insert_one(&membership).await?;
        if let Err(e) = self.rooms.insert_one(&room).await {
            let _ = self
                .memberships
                .delete_one(doc! {"_id": membership.id})
                .await;
            if is_duplicate_key(&e) {
                return Err(Error::from(Taken::RoomName));
            }
            return Err(e.into());
        }
        Ok(room.into())
    }

    async fn room(&self, id: RoomId) -> Result<Option<Room>> {
        Ok(self.rooms.find_one(doc! {"_id": id}).await?.map(Room::from))
    }

    async fn rooms(&self, page: PageRequest) -> Result<Page<Room>> {
        self.page(&self.rooms, Document::new(), page).await
    }

    async fn add_member(&self, room: RoomId, user: UserId) -> Result<Written<()>> {
        let _room = self.room_locks.lock(room).await;
        if self.rooms.find_one(doc! {"_id": room}).await?.is_none() {
            return Err(Error::not_found("room not found"));
        }
        let membership = MembershipDoc {
            id: self.ids.next(),
            room_id: room,
            user_id: user,
            joined_at: now(),
        };
        match self.memberships.insert_one(&membership).await {
            Ok(_) => {}
            Err(e) if is_duplicate_key(&e) => {
                return Ok(Written {
                    value: (),
                    changed: false,
                });
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(user) = self.user_by_id(user).await? {
            self.announce(RoomEvent::MemberJoined {
                room_id: room,
                user,
            })
            .await;
        }
        Ok(Written {
            value: (),
            changed: true,
        })
    }

    async fn remove_member(&self, room: RoomId, user: UserId) -> Result<Written<()>> {
        let _room = self.room_locks.lock(room).await;
        let removed = self
            .memberships
            .delete_one(doc! {"room_id": room, "user_id": user})
            .await?;
        let changed = removed.deleted_count == 1;
        if changed && let Some(user) = self.user_by_id(user).await? {
            self.announce(RoomEvent::MemberLeft {
                room_id: room,
                user,
            })
            .await;
        }
        Ok(Written { value: (), changed })
    }

    async fn is_member(&self, room: RoomId, user: UserId) -> Result<bool> {
        Ok(self
            .memberships
            .find_one(doc! {"room_id": room, "user_id": user})
            .await?
            .is_some())
    }

    async fn members(&self, room: RoomId, limit: usize) -> Result<Vec<User>> {
        // MongoDB reads a limit of 0 as "no limit".
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let memberships: Vec<MembershipDoc> = self
            .memberships
            .find(doc! {"room_id": room})
            .sort(doc! {"_id": 1})
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        let ids: Vec<ObjectId> = memberships.iter().map(|m| m.user_id).collect();
        let mut users: HashMap<ObjectId, User> = self
            .users
            .find(doc! {"_id": {"$in": &ids}})
            .await?
            .map_ok(|d| (d.id, User::from(d)))
            .try_collect()
            .await?;
        Ok(ids.iter().filter_map(|id| users.remove(id)).collect())
    }

    async fn member_count(&self, room: RoomId) -> Result<u64> {
        Ok(self
            .memberships
            .count_documents(doc! {"room_id": room})
            .await?)
    }

    async fn rooms_of(&self, user: UserId, page: PageRequest) -> Result<Page<Room>> {
        // The user's memberships in room id order (the `(user_id, room_id)` index), then
        // their rooms.
        let (cursor, limit, backward) = match page {
            PageRequest::Backward { before, last } => (before.map(|b| ("$lt", b)), last, true),
            PageRequest::Forward { after, first } => (after.map(|a| ("$gt", a)), first, false),
        };
        let mut filter = doc! {"user_id": user};
        if let Some((op, id)) = cursor {
            filter.insert("room_id", doc! {op: id});
        }
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let ids: Vec<ObjectId> = self
            .memberships
            .find(filter)
            .sort(doc! {"user_id": 1, "room_id": if backward { -1 } else { 1 }})
            .limit(fetch)
            .await?
            .map_ok(|m| m.room_id)
            .try_collect()
            .await?;
        let beyond_cursor = match cursor {
            Some((op, id)) => {
                let far = doc! {"user_id": user, "room_id": {if op == "$lt" { "$gte" } else { "$lte" }: id}};
                self.memberships.find_one(far).await?.is_some()
            }
            None => false,
        };
        let page = keyset_page(ids, limit, backward, beyond_cursor);
        let mut rooms: HashMap<ObjectId, Room> = self
            .rooms
            .find(doc! {"_id": {"$in": &page.items}})
            .await?
            .map_ok(|d| (d.id, Room::from(d)))
            .try_collect()
            .await?;
        Ok(Page {
            items: page
                .items
                .iter()
                .filter_map(|id| rooms.remove(id))
                .collect(),
            has_previous: page.has_previous,
            has_next: page.has_next,
        })
    }

    async fn room_count_of(&self, user: UserId) -> Result<u64> {
        Ok(self
            .memberships
            .count_documents(doc! {"user_id": user})
            .await?)
    }

    async fn insert_message(&self, message: NewMessage) -> Result<Written<Message>> {
        let _room = self.room_locks.lock(message.room_id).await;
        let mut lease = self.lease(message.room_id).await?;
        let seq = lease.seq + 1;
        let doc = MessageDoc {
            id: self.ids.next_after(lease.last_message),
            room_id: message.room_id,
            sender_id: message.sender_id,
            body: message.body,
            client_id: message.client_id,
            created_at: now(),
            edited_at: None,
            deleted_at: None,
            seq: seq_i64(seq),
        };
        match self.messages.insert_one(&doc).await {
            Ok(_) => {
                lease.seq = seq;
                lease.last_message = Some(doc.id);
                self.release(lease).await;
                let stored = Message::from(doc);
                self.announce(RoomEvent::MessageAdded(stored.clone())).await;
                Ok(Written {
                    value: stored,
                    changed: true,
                })
            }
            // The partial unique index decides idempotency: the first message stands.
            Err(e) if is_duplicate_key(&e) && doc.client_id.is_some() => {
                self.release(lease).await;
                let first = self
                    .messages
                    .find_one(doc! {
                        "room_id": doc.room_id,
                        "sender_id": doc.sender_id,
                        "client_id": doc.client_id.clone(),
                    })
                    .await?;
                match first {
                    Some(first) => Ok(Written {
                        value: first.into(),
                        changed: false,
                    }),
                    None => Err(Error::internal(format!(
                        "room {}: change {seq} was written twice",
                        doc.room_id
                    ))),
                }
            }
            Err(e) => {
                self.release_after_failure(lease).await;
                Err(e.into())
            }
        }
    }

    async fn message(&self, id: MessageId) -> Result<Option<Message>> {
        Ok(self
            .messages
            .find_one(doc! {"_id": id})
            .await?
            .map(Message::from))
    }

    async fn room_head(&self, room: RoomId) -> Result<RoomHead> {
        let room = self
            .rooms
            .find_one(doc! {"_id": room})
            .await?
            .ok_or_else(|| Error::not_found("room not found"))?;
        let last_message = match room.last_message {
            Some(id) => Some(id),
            // A room none of whose messages was written since rooms kept their newest id.
            None => self
                .messages
                .find_one(doc! {"room_id": room.id})
                .sort(doc! {"_id": -1})
                .await?
                .map(|m| m.id),
        };
        Ok(RoomHead {
            last_message,
            seq: u64::try_from(room.seq).unwrap_or(0),
        })
    }

    async fn changes_after(&self, room: RoomId, seq: u64, limit: usize) -> Result<Vec<Message>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let found: Vec<MessageDoc> = self
            .messages
            .find(doc! {"room_id": room, "seq": {"$gt": seq_i64(seq)}})
            .sort(doc! {"seq": 1})
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        Ok(found.into_iter().map(Message::from).collect())
    }

    async fn messages(&self, room: RoomId, page: PageRequest) -> Result<Page<Message>> {
        self.page(&self.messages, live_in_room(room), page).await
    }

    async fn messages_after(
        &self,
        room: RoomId,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<Message>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let found: Vec<MessageDoc> = self
            .messages
            .find(doc! {"room_id": room, "_id": {"$gt": after}})
            .sort(doc! {"_id": 1})
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        Ok(found.into_iter().map(Message::from).collect())
    }

    /// Sets a live message's new state (`body`, and `edited_at` or `deleted_at`) as the room's
    /// next change, under the room's lease; `None` for a tombstone. The caller holds the room's
    /// local lock, which covers announcing the change too.
    async fn change_message(
        &self,
        id: MessageId,
        room: RoomId,
        change: &str,
        body: &str,
    ) -> Result<Option<Message>> {
        let mut lease = self.lease(room).await?;
        let seq = lease.seq + 1;
        let changed = self
            .messages
            .find_one_and_update(
                doc! {"_id": id, "deleted_at": Bson::Null},
                doc! {"$set": {"body": body, change: now(), "seq": seq_i64(seq)}},
            )
            .return_document(ReturnDocument::After)
            .await;
        match changed {
            Ok(changed) => {
                if changed.is_some() {
                    lease.seq = seq;
                }
                self.release(lease).await;
                Ok(changed.map(Message::from))
            }
            Err(e) => {
                self.release_after_failure(lease).await;
                Err(e.into())
            }
        }
    }

    async fn edit_message(&self, id: MessageId, body: &str) -> Result<Message> {
        let room = self
            .message(id)
            .await?
            .ok_or_else(|| Error::not_found("message not found"))?
            .room_id;
        let _room = self.room_locks.lock(room).await;
        let edited = self
            .change_message(id, room, "edited_at", body)
            .await?
            .ok_or_else(|| Error::not_found("message not found"))?;
        self.announce(RoomEvent::MessageEdited(edited.clone()))
            .await;
        Ok(edited)
    }

    async fn delete_message(&self, id: MessageId) -> Result<Written<Message>> {
        let room = self
            .message(id)
            .await?
            .ok_or_else(|| Error::not_found("message not found"))?
            .room_id;
        let _room = self.room_locks.lock(room).await;
        let deleted = self.change_message(id, room, "deleted_at", "").await?;
        match deleted {
            Some(message) => {
                self.announce(RoomEvent::MessageDeleted {
                    room_id: message.room_id,
                    message_id: message.id,
                    seq: message.seq,
                })
                .await;
                Ok(Written {
                    value: message,
                    changed: true,
                })
            }
            None => match self.message(id).await? {
                Some(tombstone) => Ok(Written {
                    value: tombstone,
                    changed: false,
                }),
                None => Err(Error::not_found("message not found")),
            },
        }
    }
}

#[async_trait]
impl Store for MongoStore {
    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    fn take_events(&self) -> Option<mpsc::Receiver<RoomEvent>> {
        self.inner.take_events()
    }

    async fn create_user(&self, username: &str, password_hash: &str) -> Result<User> {
        let (username, hash) = (username.to_owned(), password_hash.to_owned());
        self.write(move |inner| async move { inner.create_user(&username, &hash).await })
            .await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        self.inner.user(id).await
    }

    async fn credentials(&self, username: &str) -> Result<Option<Credentials>> {
        self.inner.credentials(username).await
    }

    async fn create_room(&self, name: &str, creator: UserId) -> Result<Room> {
        let name = name.to_owned();
        self.write(move |inner| async move { inner.create_room(&name, creator).await })
            .await
    }

    async fn room(&self, id: RoomId) -> Result<Option<Room>> {
        self.inner.room(id).await
    }

    async fn rooms(&self, page: PageRequest) -> Result<Page<Room>> {
        self.inner.rooms(page).await
    }

    async fn add_member(&self, room: RoomId, user: UserId) -> Result<Written<()>> {
        self.write(move |inner| async move { inner.add_member(room, user).await })
            .await
    }

    async fn remove_member(&self, room: RoomId, user: UserId) -> Result<Written<()>> {
        self.write(move |inner| async move { inner.remove_member(room, user).await })
            .await
    }

    async fn is_member(&self, room: RoomId, user: UserId) -> Result<bool> {
        self.inner.is_member(room, user).await
    }

    async fn members(&self, room: RoomId, limit: usize) -> Result<Vec<User>> {
        self.inner.members(room, limit).await
    }

    async fn member_count(&self, room: RoomId) -> Result<u64> {
        self.inner.member_count(room).await
    }

    async fn rooms_of(&self, user: UserId, page: PageRequest) -> Result<Page<Room>> {
        self.inner.rooms_of(user, page).await
    }

    async fn room_count_of(&self, user: UserId) -> Result<u64> {
        self.inner.room_count_of(user).await
    }

    async fn insert_message(&self, message: NewMessage) -> Result<Written<Message>> {
        self.write(move |inner| async move { inner.insert_message(message).await })
            .await
    }

    async fn message(&self, id: MessageId) -> Result<Option<Message>> {
        self.inner.message(id).await
    }

    async fn room_head(&self, room: RoomId) -> Result<RoomHead> {
        self.inner.room_head(room).await
    }

    async fn changes_after(&self, room: RoomId, seq: u64, limit: usize) -> Result<Vec<Message>> {
        self.inner.changes_after(room, seq, limit).await
    }

    async fn messages(&self, room: RoomId, page: PageRequest) -> Result<Page<Message>> {
        self.inner.messages(room, page).await
    }

    async fn messages_after(
        &self,
        room: RoomId,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<Message>> {
        self.inner.messages_after(room, after, limit).await
    }

    async fn edit_message(&self, id: MessageId, body: &str) -> Result<Message> {
        let body = body.to_owned();
        self.write(move |inner| async move { inner.edit_message(id, &body).await })
            .await
    }

    async fn delete_message(&self, id: MessageId) -> Result<Written<Message>> {
        self.write(move |inner| async move { inner.delete_message(id).await })
            .await
    }
}
