//! The production store: MongoDB through the official driver.
//!
//! Collections `users`, `rooms`, `memberships`, `messages`, `sessions`, `bans`,
//! `room_invitations` and `moderation_log` (see `schema`), `meta` (the schema version), and
//! `user_events` and `stream_checkpoints` (see `inbox`). Uniqueness is the indexes' job
//! (created idempotently at startup): usernames and room names through a stored key,
//! `store::unique_key` (letter case and look-alikes folded in Rust, so it works on every
//! MongoDB-compatible server, without collations; keys made under older rules are recomputed at
//! startup, see `upgrade_name_keys`), a direct room's pair through the same room name key
//! (`store::direct_key`), `(room_id, user_id)` memberships, bans and invitations, and
//! `(room_id, sender_id, client_id)` where a client id exists (a partial index). A duplicate-key
//! error (11000) becomes `Conflict`, or for a client id the first message: no read-then-write
//! checks. History pages are keyset queries on the `(room_id, _id)` index, never `skip`.
//! Nothing needs transactions or change streams.
//!
//! Without transactions, the rules a race could break hold by the order of single-document
//! writes: a join inserts the membership and then looks for a ban (taking the membership back
//! when it finds one), a ban inserts the ban and then ends the membership, so a join and a ban
//! that race end with the user out; a role changes only from the role it was read as (a
//! conditional update); a read marker moves only forward (a conditional update too).
//!
//! Ordering: writes to one room go one at a time through that room's lock, which mints the
//! message id, writes, and queues the room event before the next write of the room starts. So
//! within this instance a room's ids, commits and events share one order, as with SQLite. Each
//! write runs in a task of its own: a request abandoned midway (a client gone, a timeout) cannot
//! stop a write between the database and its announcement, or release the room's lock early.
//! Ids resume above the largest stored one. Across instances, a room's write lease (see
//! `writer::Lease`) numbers its message changes in commit order.
//!
//! The files: this one (the store, connecting, shared helpers), `schema` (the documents and
//! their indexes, and upgrades of stored keys, roles and read markers), `writer` (ids, the per-room locks and write
//! leases), and one per aggregate in the order of the `Store` traits: `users`, `sessions`,
//! `rooms`, `messages`. A write runs in a task of its own ([`MongoStore::in_task`]), with the store's
//! own `Arc`, so each trait method holds its whole write in one place.

mod inbox;
mod messages;
mod rooms;
mod schema;
mod sessions;
mod users;
mod writer;

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::{
    Client, Collection, Database,
    bson::{Document, doc},
    error::{ErrorKind, WriteFailure},
    event::{EventHandler, command::CommandEvent},
    options::ClientOptions,
};
use tokio::sync::mpsc;

use super::{EventChannel, Store, keyset_page};
use crate::{
    config::ConfigError,
    error::{Error, Result},
    metrics::store::StoreTimings,
    model::{Page, PageRequest, RoomEvent},
};
use schema::{
    BanDoc, InvitationDoc, MembershipDoc, MessageDoc, ModerationDoc, RoomDoc, SessionDoc, UserDoc,
};
use writer::{IdGen, RoomLocks};

/// How long startup waits for a server when the URI names no `serverSelectionTimeoutMS`.
pub const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(10);

fn to_chrono(at: bson::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or_default()
}

fn now() -> bson::DateTime {
    bson::DateTime::now()
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

/// The store: its collections, id minting and room ordering. Always behind an `Arc` (see
/// [`connect`](Self::connect)), which it can hand to the task running a write.
pub struct MongoStore {
    me: Weak<MongoStore>,
    db: Database,
    users: Collection<UserDoc>,
    rooms: Collection<RoomDoc>,
    memberships: Collection<MembershipDoc>,
    messages: Collection<MessageDoc>,
    sessions: Collection<SessionDoc>,
    bans: Collection<BanDoc>,
    invitations: Collection<InvitationDoc>,
    moderation: Collection<ModerationDoc>,
    user_events: Collection<inbox::UserEventDoc>,
    checkpoints: Collection<inbox::CheckpointDoc>,
    ids: IdGen,
    room_locks: RoomLocks,
    events: EventChannel,
    /// Where startup left the database (see `schema::SCHEMA_DOC`).
    schema_version: i64,
    /// How long each command takes, for `/metrics` (the driver's command monitoring).
    timings: StoreTimings,
}

impl MongoStore {
    /// Connects to the URI's servers, checks one answers within the server-selection timeout,
    /// and creates the indexes. The database is the URI's path, `confab` when it has none.
    pub async fn connect(url: &str) -> anyhow::Result<Arc<Self>> {
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
    pub async fn connect_database(url: &str, database: &str) -> anyhow::Result<Arc<Self>> {
        let mut options = ClientOptions::parse(url)
            .await
            .map_err(|e| anyhow::anyhow!("not a valid MongoDB URI: {e}"))?;
        Self::connect_to(options_with_defaults(&mut options), database).await
    }

    async fn connect_to(mut options: ClientOptions, database: &str) -> anyhow::Result<Arc<Self>> {
        let hosts: Vec<String> = options.hosts.iter().map(ToString::to_string).collect();
        let timings = StoreTimings::default();
        let measured = timings.clone();
        // Every command's round trip, timed by the driver: the one seam all store calls share.
        options.command_event_handler = Some(EventHandler::callback(move |event| match event {
            CommandEvent::Succeeded(done) => measured.mongodb(&done.command_name, done.duration),
            CommandEvent::Failed(failed) => measured.mongodb(&failed.command_name, failed.duration),
            _ => {}
        }));
        let client = Client::with_options(options)?;
        let db = client.database(database);
        db.run_command(doc! {"ping": 1}).await.map_err(|e| {
            anyhow::anyhow!("cannot reach MongoDB at {}: {}", hosts.join(","), short(&e))
        })?;
        let store = MongoStore {
            me: Weak::new(),
            users: db.collection("users"),
            rooms: db.collection("rooms"),
            memberships: db.collection("memberships"),
            messages: db.collection("messages"),
            sessions: db.collection("sessions"),
            bans: db.collection("bans"),
            invitations: db.collection("room_invitations"),
            moderation: db.collection("moderation_log"),
            user_events: db.collection("user_events"),
            checkpoints: db.collection("stream_checkpoints"),
            db,
            ids: IdGen::default(),
            room_locks: RoomLocks::default(),
            events: EventChannel::default(),
            schema_version: 0,
            timings,
        };
        // Before any upgrade: a database a newer Confab left is refused untouched.
        store.check_schema_version().await?;
        store.create_indexes().await?;
        store.upgrade_name_keys().await?;
        store.upgrade_roles().await?;
        store.upgrade_read_markers().await?;
        store.resume_ids().await?;
        let schema_version = store.record_schema_version().await?;
        Ok(Arc::new_cyclic(|me| MongoStore {
            me: me.clone(),
            schema_version,
            ..store
        }))
    }

    /// Runs a write in a task of its own (see the module docs) and waits for it.
    async fn in_task<T, F>(&self, write: impl FnOnce(Arc<Self>) -> F) -> Result<T>
    where
        T: Send + 'static,
        F: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let me = self
            .me
            .upgrade()
            .ok_or_else(|| Error::internal("the MongoDB store is shutting down"))?;
        tokio::spawn(write(me))
            .await
            .map_err(|e| Error::internal(format!("a MongoDB write task failed: {e}")))?
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

#[async_trait]
impl Store for MongoStore {
    async fn ping(&self) -> Result<()> {
        self.db.run_command(doc! {"ping": 1}).await?;
        Ok(())
    }

    fn schema_version(&self) -> i64 {
        self.schema_version
    }

    fn take_events(&self) -> Option<mpsc::Receiver<RoomEvent>> {
        self.events.take()
    }

    fn timings(&self) -> Option<StoreTimings> {
        Some(self.timings.clone())
    }
}
