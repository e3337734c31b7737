//! The embedded store: one SQLite file (or an in-memory database), WAL, `synchronous=FULL`.
//!
//! Shape, and why:
//! - **One writer thread with group commit.** Every write is a closure sent to a dedicated
//!   thread that owns the only read-write connection. It takes every write waiting in its queue,
//!   runs each inside its own SAVEPOINT of one transaction and commits once: one fsync per batch,
//!   not per message, and never "database is locked", because nothing else writes. A caller hears
//!   back only after the COMMIT succeeded, so an acknowledged write survives `kill -9`.
//! - **Readers never wait on the writer.** With a file, reads run on the blocking pool over a
//!   small pool of read-only connections (WAL lets them read while the writer commits).
//!   An in-memory database cannot be shared between connections, so there the writer thread
//!   serves reads too, after each batch's commit.
//! - **Ids in commit order.** The writer thread mints every ObjectId, strictly increasing, so
//!   a message's id order is its commit order: the `(room_id, id)` index is the history order and
//!   "everything after id X" is exact.
//! - **One process per file.** That order holds only while one process writes, so a file
//!   store holds an exclusive lock on `PATH.lock` for its lifetime, and a second Confab on the
//!   same file is refused at startup. The kernel drops the lock with the process, so it is
//!   never stale after a crash.
//! - **Writable, or not ready.** Startup commits a write (a read-only file or a full disk is
//!   refused then, not at the first message), and the writer remembers when a transaction could
//!   not be written, so `/readyz` turns unready until a commit succeeds again.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, ToSql, ffi, params};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{
    Credentials, NewMessage, RefusingWrites, RoomHead, Store, Taken, UNIQUE_KEY_VERSION, Written,
    displaced_key, displaced_keys, keyset_page, same_name_in_any_case, unique_key,
};
use crate::{
    error::{Error, Result},
    model::{
        Message, MessageId, ObjectId, Page, PageRequest, Room, RoomEvent, RoomId, User, UserId,
    },
};

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;
/// Most writes waiting for the writer; callers beyond it wait (backpressure, not memory).
const WRITE_QUEUE: usize = 4096;
/// Read-only connections (and blocking threads) serving reads at once.
const READERS: usize = 4;
const SCHEMA_VERSION: i64 = 3;

const SCHEMA_V1: &str = "
CREATE TABLE users (
    id            BLOB PRIMARY KEY NOT NULL,
    username      TEXT NOT NULL,
    username_key  TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE rooms (
    id         BLOB PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    name_key   TEXT NOT NULL UNIQUE,
    created_by BLOB NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL
);
-- A rowid table on purpose: the rowid is the join order (joined_at ties within a millisecond).
CREATE TABLE memberships (
    room_id   BLOB NOT NULL REFERENCES rooms(id),
    user_id   BLOB NOT NULL REFERENCES users(id),
    joined_at INTEGER NOT NULL,
    UNIQUE (room_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships(user_id, room_id);
CREATE TABLE messages (
    id         BLOB PRIMARY KEY NOT NULL,
    room_id    BLOB NOT NULL REFERENCES rooms(id),
    sender_id  BLOB NOT NULL REFERENCES users(id),
    body       TEXT NOT NULL,
    client_id  TEXT,
    created_at INTEGER NOT NULL,
    edited_at  INTEGER,
    deleted_at INTEGER
);
CREATE INDEX messages_by_room ON messages(room_id, id);
CREATE UNIQUE INDEX messages_by_client_id
    ON messages(room_id, sender_id, client_id) WHERE client_id IS NOT NULL;
";

/// Version 2: room change sequence numbers (see `Store::changes_after`).
const SCHEMA_V2: &str = "
ALTER TABLE rooms ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_by_change ON messages(room_id, seq);
";

/// Version 3: facts about the database itself: which `store::UNIQUE_KEY_VERSION` its name keys
/// follow (older keys are recomputed in the migration), and the row the startup write probe
/// writes.
const SCHEMA_V3: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

const USER_COLS: &str = "id, username, created_at";
const ROOM_COLS: &str = "id, name, created_by, created_at";
const MESSAGE_COLS: &str =
    "id, room_id, sender_id, body, client_id, created_at, edited_at, deleted_at, seq";
/// A live (not deleted) message of one room: the filter every history read uses.
const LIVE_IN_ROOM: &str = "room_id = ? AND deleted_at IS NULL AND ";

type Reply = Box<dyn FnOnce(std::result::Result<(), &rusqlite::Error>) + Send>;
/// A write run inside the batch's transaction.
type WriteJob = Box<dyn FnOnce(&Connection, &mut IdGen) -> Done + Send>;
type EventSink = Arc<Mutex<Option<mpsc::Sender<RoomEvent>>>>;
type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

enum Job {
    Write(WriteJob),
    Read(ReadJob),
}

/// What a write did inside the batch's transaction: how to answer its caller once the batch is
/// committed (or not), the event to announce if it is, and why the database refused it when
/// that is the file's or the disk's fault.
struct Done {
    reply: Reply,
    event: Option<RoomEvent>,
    refused: Option<&'static str>,
}

#[derive(Clone)]
pub struct SqliteStore {
    // Declared before `_writer` (fields drop in order), so the last handle closes the queue
    // before it waits for the writer thread to end.
    jobs: mpsc::Sender<Job>,
    readers: Option<Arc<ReaderPool>>,
    events: EventSink,
    health: Arc<WriterHealth>,
    _writer: Arc<WriterThread>,
}

/// Why the writer's last transaction could not be written, while that lasts: set when BEGIN,
/// COMMIT or a write fails because the file or disk refuses (read-only, full, I/O error),
/// cleared by the next commit that succeeds. `ping` reports it, so readiness tells the truth.
#[derive(Default)]
struct WriterHealth {
    refusing: Mutex<Option<&'static str>>,
}

impl WriterHealth {
    fn refusing(&self) -> Option<&'static str> {
        *self.refusing.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, refusing: Option<&'static str>) {
        let mut slot = self.refusing.lock().unwrap_or_else(|p| p.into_inner());
        match (*slot, refusing) {
            (None, Some(reason)) => tracing::error!("SQLite refuses writes: {reason}"),
            (Some(_), None) => tracing::info!("SQLite takes writes again"),
            _ => {}
        }
        *slot = refusing;
    }
}

/// The writer thread's end, seen from the store. When the last store handle is dropped, its
/// queue closes; the writer finishes what is queued, closes the database and releases the
/// file's lock. Dropping waits for that (for a while), so the file can be opened again at once.
struct WriterThread {
    stopped: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        let stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        // The thread holds the sender: this returns once the thread has ended.
        let _ = stopped.recv_timeout(Duration::from_secs(10));
    }
}

impl SqliteStore {
    /// Opens (creating when absent) the database file at `path`, and its directory.
    pub async fn open(path: &Path) -> anyhow::Result<Self> {
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Self::start(Some(path))).await?
    }

    /// An ephemeral database that lives as long as this store.
    pub async fn open_in_memory() -> anyhow::Result<Self> {
        tokio::task::spawn_blocking(|| Self::start(None)).await?
    }

    fn start(path: Option<PathBuf>) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let name = path
            .as_ref()
            .map_or_else(|| "in memory".to_owned(), |p| p.display().to_string());
        // Errors that mean "this file or disk cannot take writes" become one sentence naming
        // the file; anything else keeps its context.
        let refused = |e: anyhow::Error, doing: &str| match e
            .downcast_ref::<rusqlite::Error>()
            .and_then(|e| unwritable(e).map(|reason| (reason, e.to_string())))
        {
            Some((reason, detail)) => {
                anyhow::anyhow!("cannot write to the database {name}: {reason} ({detail})")
            }
            None => e.context(format!("{doing} {name}")),
        };
        let (conn, lock) = match &path {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("cannot create directory {}", dir.display()))?;
                }
                // Before anything touches the file: a second process must not even migrate it.
                let lock = lock_database(path)?;
                let conn = Connection::open(path)
                    .map_err(|e| refused(e.into(), "cannot open database"))?;
                let mode: String = conn
                    .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
                    .map_err(|e| refused(e.into(), "cannot set WAL mode on"))?;
                anyhow::ensure!(
                    mode.eq_ignore_ascii_case("wal"),
                    "{} cannot use WAL mode (got {mode})",
                    path.display()
                );
                conn.pragma_update(None, "synchronous", "FULL")?;
                (conn, Some(lock))
            }
            None => (Connection::open_in_memory()?, None),
        };
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "foreign_keys", true)?;
        migrate(&conn).map_err(|e| refused(e, "cannot prepare the database schema of"))?;
        probe_write(&conn).map_err(|e| refused(e.into(), "cannot write to the database"))?;
        let ids = IdGen::resume(&conn)?;

        let (jobs, queue) = mpsc::channel(WRITE_QUEUE);
        let events = EventSink::default();
        let sink = events.clone();
        let health = Arc::new(WriterHealth::default());
        let writer_health = health.clone();
        let (stopped_tx, stopped) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                run_writer(conn, ids, queue, sink, &writer_health);
                // The connection is closed: now another store may have the file.
                drop(lock);
                drop(stopped_tx);
            })
            .context("cannot start the SQLite writer thread")?;
        let readers = path.map(|path| {
            Arc::new(ReaderPool {
                path,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(READERS),
            })
        });
        Ok(Self {
            jobs,
            readers,
            events,
            health,
            _writer: Arc::new(WriterThread {
                stopped: Mutex::new(stopped),
            }),
        })
    }

    /// Runs `f` inside the writer's next transaction and answers once that transaction committed.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut IdGen) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        self.write_announcing(move |conn, ids| f(conn, ids).map(|value| (value, None)))
            .await
    }

    /// Like [`write`](Self::write), with an event to announce once the write is committed.
    async fn write_announcing<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut IdGen) -> Result<(T, Option<RoomEvent>)> + Send + 'static,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |conn, ids| {
            let (result, event) = match in_savepoint(conn, |conn| f(conn, ids)) {
                Ok((value, event)) => (Ok(value), event),
                Err(e) => (Err(e), None),
            };
            let refused = match &result {
                Err(Error::Internal(cause)) => {
                    cause.downcast_ref::<rusqlite::Error>().and_then(unwritable)
                }
                _ => None,
            };
            let reply: Reply = Box::new(move |commit| {
                let outcome = match commit {
                    Ok(()) => result,
                    Err(e) => Err(Error::internal(format!("SQLite commit failed: {e}"))),
                };
                let _ = tx.send(outcome);
            });
            Done {
                reply,
                event,
                refused,
            }
        });
        self.jobs
            .send(Job::Write(job))
            .await
            .map_err(|_| Error::internal("the SQLite writer has stopped"))?;
        rx.await
            .map_err(|_| Error::internal("the SQLite writer dropped a write"))?
    }

    /// Runs `f` on a reader connection (or, in memory, on the writer's, between batches).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        match &self.readers {
            Some(pool) => pool.clone().run(f).await,
            None => {
                let (tx, rx) = oneshot::channel();
                let job: ReadJob = Box::new(move |conn| {
                    let _ = tx.send(f(conn));
                });
                self.jobs
                    .send(Job::Read(job))
                    .await
                    .map_err(|_| Error::internal("the SQLite writer has stopped"))?;
                rx.await
                    .map_err(|_| Error::internal("the SQLite writer dropped a read"))?
            }
        }
    }
}

fn migrate(conn: &Connection) -> anyhow::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    anyhow::ensure!(
        version <= SCHEMA_VERSION,
        "the database has schema version {version}, newer than this Confab understands ({SCHEMA_VERSION}); upgrade Confab"
    );
    // One transaction: a failed upgrade leaves the file as it was.
    let tx = conn.unchecked_transaction()?;
    let steps: &[&str] = match version {
        0 => &[SCHEMA_V1, SCHEMA_V2, SCHEMA_V3],
        1 => &[SCHEMA_V2, SCHEMA_V3],
        2 => &[SCHEMA_V3],
        _ => &[],
    };
    for step in steps {
        tx.execute_batch(step)?;
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    // Keys made before the `meta` table existed follow version 1 (lower case).
    let keys: i64 = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'name_key_version'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(1);
    anyhow::ensure!(
        keys <= UNIQUE_KEY_VERSION,
        "the database's name keys follow rules (version {keys}) newer than this Confab's ({UNIQUE_KEY_VERSION}); upgrade Confab"
    );
    if keys < UNIQUE_KEY_VERSION {
        recompute_name_keys(&tx)?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('name_key_version', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [UNIQUE_KEY_VERSION],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Recomputes every stored username and room name key with the current `store::unique_key`,
/// oldest row first, inside the migration's transaction.
///
/// Names that an earlier Confab let coexist may now share a key ("lobby" and "L0bby"). Failing
/// startup would lock everyone out over a naming problem, and renaming or deleting a room or
/// an account behind its owners' backs would be worse. So the older row keeps the key (it
/// was there first; it goes on blocking every new look-alike), the newer one gets a key no name
/// can produce (`store::displaced_key`: the key, a NUL and its id), both keep working (a login
/// finds its account by name among the keys), and a warning names both so that an operator can
/// rename one.
fn recompute_name_keys(conn: &Connection) -> rusqlite::Result<()> {
    for (table, name_col, key_col, what) in [
        ("users", "username", "username_key", "username"),
        ("rooms", "name", "name_key", "room name"),
    ] {
        // Every key becomes a placeholder no key equals (a NUL and the id in capitals), so new
        // keys meet only new keys, given to the oldest first.
        conn.execute(
            &format!("UPDATE {table} SET {key_col} = char(0) || hex(id)"),
            [],
        )?;
        let rows = conn
            .prepare(&format!("SELECT id, {name_col} FROM {table} ORDER BY id"))?
            .query_map([], |r| Ok((id_at(r, 0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut holder = conn.prepare(&format!(
            "SELECT id, {name_col} FROM {table} WHERE {key_col} = ?1"
        ))?;
        let mut update =
            conn.prepare(&format!("UPDATE {table} SET {key_col} = ?1 WHERE id = ?2"))?;
        for (id, name) in rows {
            let mut key = unique_key(&name);
            let older = holder
                .query_row([&key], |r| Ok((id_at(r, 0)?, r.get::<_, String>(1)?)))
                .optional()?;
            if let Some((older_id, older_name)) = older {
                tracing::warn!(
                    "the {what} {name:?} (id {id}) looks like the older {what} {older_name:?} (id {older_id}); \
                     both are kept and only the older blocks new look-alikes: rename one of them"
                );
                key = displaced_key(&key, id);
            }
            update.execute(params![key, id.bytes()])?;
        }
    }
    Ok(())
}

/// Proves at startup that the database takes writes: one row of `meta`, written and committed
/// (a write rolled back may never reach the file). Without it, a read-only file would serve
/// reads, pass `/readyz`, and fail every write.
fn probe_write(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('opened_at', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [Utc::now().timestamp_millis()],
    )?;
    Ok(())
}

/// Why SQLite cannot write, in words, when `e` is the file's or the disk's fault rather than
/// a bug or a broken rule: what a startup refusal and `/readyz` say.
fn unwritable(e: &rusqlite::Error) -> Option<&'static str> {
    use rusqlite::ErrorCode::*;
    let rusqlite::Error::SqliteFailure(failure, _) = e else {
        return None;
    };
    Some(match failure.code {
        ReadOnly => "it is read-only to this process",
        PermissionDenied => "permission denied",
        CannotOpen => "the file cannot be opened",
        DiskFull => "the disk (or the database's size limit) is full",
        SystemIoFailure => "an I/O error",
        DatabaseCorrupt | NotADatabase => "the file is damaged or not a database",
        _ => return None,
    })
}

/// Takes the lock that makes one process the database's only user: an exclusive `flock` on
/// `PATH.lock` beside it, held until the writer thread ends (the kernel drops it when the
/// process dies, so it never goes stale). Ids are minted in memory by the writer, so a second
/// process on the same file would interleave its ids with ours and break the order resumes and
/// subscriptions rely on; it is refused here instead.
fn lock_database(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::io::{Read as _, Seek as _, Write as _};
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        // A read-only directory with the lock file in it still locks (flock needs no write
        // access), so the refusal names the real problem, the database.
        .or_else(|e| std::fs::File::open(&lock_path).map_err(|_| e))
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot write to the database {}: cannot create its lock file {} ({e})",
                path.display(),
                lock_path.display()
            )
        })?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = match holder.trim().parse::<u32>() {
                Ok(pid) => format!(" (pid {pid})"),
                Err(_) => String::new(),
            };
            anyhow::bail!(
                "another Confab{holder} is using the database {}: stop it first, or give this one its own database (instances that share data need MongoDB)",
                path.display()
            );
        }
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("cannot lock {}: {e}", lock_path.display())
        }
    }
    // Who holds it, for the message above; best effort (the file may be read-only).
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    Ok(file)
}

/// The writer thread: drain the queue, run the writes in one transaction, commit, announce the
/// committed writes' events in commit order, answer; and record whether the database took the
/// batch (see [`WriterHealth`]).
fn run_writer(
    conn: Connection,
    mut ids: IdGen,
    mut queue: mpsc::Receiver<Job>,
    events: EventSink,
    health: &WriterHealth,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = queue.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut done: Vec<Done> = Vec::with_capacity(batch.len());
        let mut reads = Vec::new();
        let mut open = false;
        // Why the database refused this batch, if it did; `None` with `committed` clears it.
        let mut refused = None;
        let mut committed = false;
        for job in batch.drain(..) {
            match job {
                Job::Write(write) => {
                    if !open {
                        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
                            tracing::error!(error = %e, "SQLite cannot begin a transaction");
                            refused = unwritable(&e).or(refused);
                            // Dropping the job drops its reply sender: the caller gets an error.
                            continue;
                        }
                        open = true;
                    }
                    let write = write(&conn, &mut ids);
                    refused = write.refused.or(refused);
                    done.push(write);
                    if conn.is_autocommit() {
                        // A failure (disk full, I/O) rolled the whole transaction back: nothing
                        // of this batch so far is stored. Say so, and start afresh for the rest.
                        let lost = rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                            Some("the transaction was rolled back".into()),
                        );
                        for write in done.drain(..) {
                            (write.reply)(Err(&lost));
                        }
                        open = false;
                    }
                }
                Job::Read(read) => reads.push(read),
            }
        }
        if open {
            let commit = conn.execute_batch("COMMIT");
            match &commit {
                Ok(()) => {
                    committed = true;
                    let sink = events.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    // Writers hear first: their tasks are then queued ahead of the (possibly
                    // thousands of) subscriber tasks the events wake.
                    let mut events = Vec::with_capacity(done.len());
                    for write in done {
                        (write.reply)(Ok(()));
                        events.extend(write.event);
                    }
                    if let Some(sink) = &sink {
                        for event in events {
                            // Waits when the publisher is behind; fails only once it is gone.
                            let _ = sink.blocking_send(event);
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "SQLite commit failed; the batch is rolled back");
                    refused = unwritable(e).or(refused);
                    let _ = conn.execute_batch("ROLLBACK");
                    for write in done {
                        (write.reply)(Err(e));
                    }
                }
            }
        }
        if refused.is_some() || committed {
            health.set(refused);
        }
        for read in reads {
            read(&conn);
        }
    }
}

/// Runs one write in its own savepoint, so a failing write (a duplicate, say) leaves the rest
/// of the batch intact.
fn in_savepoint<T>(conn: &Connection, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
    conn.execute_batch("SAVEPOINT job")?;
    let result = f(conn);
    match result {
        Ok(value) => {
            conn.execute_batch("RELEASE job")?;
            Ok(value)
        }
        Err(e) => {
            // When the failure rolled back the whole transaction (a full disk, say), the
            // savepoint is gone too: the failure, not that, is what the caller must hear.
            if !conn.is_autocommit() {
                conn.execute_batch("ROLLBACK TO job; RELEASE job")?;
            }
            Err(e)
        }
    }
}

struct ReaderPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

impl ReaderPool {
    async fn run<T: Send + 'static>(
        self: Arc<Self>,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::internal("SQLite reader pool closed"))?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = match pool.idle.lock().unwrap_or_else(|p| p.into_inner()).pop() {
                Some(conn) => conn,
                None => open_reader(&pool.path)?,
            };
            let result = f(&conn);
            pool.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
            result
        })
        .await
        .map_err(|e| Error::internal(format!("SQLite read task failed: {e}")))?
    }
}

fn open_reader(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(conn)
}

/// Mints strictly increasing ObjectIds (see the module docs).
pub(crate) struct IdGen {
    last: [u8; 12],
}

impl IdGen {
    fn resume(conn: &Connection) -> rusqlite::Result<Self> {
        let mut last = [0u8; 12];
        for table in ["users", "rooms", "messages"] {
            let max: Option<Vec<u8>> =
                conn.query_row(&format!("SELECT max(id) FROM {table}"), [], |r| r.get(0))?;
            if let Some(Ok(max)) = max.map(<[u8; 12]>::try_from) {
                last = last.max(max);
            }
        }
        Ok(Self { last })
    }

    fn next(&mut self) -> ObjectId {
        super::next_object_id(&mut self.last)
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Internal(anyhow::Error::new(e).context("SQLite"))
    }
}

fn constraint(e: &rusqlite::Error) -> Option<i32> {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Some(f.extended_code)
        }
        _ => None,
    }
}

fn now() -> DateTime<Utc> {
    // Stored with millisecond precision; return exactly what a later read will return.
    DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap_or_default()
}

fn id_at(row: &Row, i: usize) -> rusqlite::Result<ObjectId> {
    Ok(ObjectId::from_bytes(row.get::<_, [u8; 12]>(i)?))
}

fn time_at(row: &Row, i: usize) -> rusqlite::Result<DateTime<Utc>> {
    let ms: i64 = row.get(i)?;
    DateTime::from_timestamp_millis(ms).ok_or(rusqlite::Error::IntegralValueOutOfRange(i, ms))
}

fn opt_time_at(row: &Row, i: usize) -> rusqlite::Result<Option<DateTime<Utc>>> {
    match row.get::<_, Option<i64>>(i)? {
        None => Ok(None),
        Some(ms) => DateTime::from_timestamp_millis(ms)
            .map(Some)
            .ok_or(rusqlite::Error::IntegralValueOutOfRange(i, ms)),
    }
}

fn user_row(row: &Row) -> rusqlite::Result<User> {
    Ok(User {
        id: id_at(row, 0)?,
        username: row.get(1)?,
        created_at: time_at(row, 2)?,
    })
}

fn room_row(row: &Row) -> rusqlite::Result<Room> {
    Ok(Room {
        id: id_at(row, 0)?,
        name: row.get(1)?,
        created_by: id_at(row, 2)?,
        created_at: time_at(row, 3)?,
    })
}

fn message_row(row: &Row) -> rusqlite::Result<Message> {
    Ok(Message {
        id: id_at(row, 0)?,
        room_id: id_at(row, 1)?,
        sender_id: id_at(row, 2)?,
        body: row.get(3)?,
        client_id: row.get(4)?,
        created_at: time_at(row, 5)?,
        edited_at: opt_time_at(row, 6)?,
        deleted_at: opt_time_at(row, 7)?,
        seq: u64::try_from(row.get::<_, i64>(8)?).unwrap_or(0),
    })
}

fn sql_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// The number the room's next change takes; `NotFound` for no such room.
fn next_seq(conn: &Connection, room: RoomId) -> Result<u64> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT seq + 1 FROM rooms WHERE id = ?1")?
        .query_row([room.bytes()], |r| r.get(0))
        .optional()?;
    seq.and_then(|s| u64::try_from(s).ok())
        .ok_or_else(|| Error::not_found("room not found"))
}

/// Records that the room's change `seq` is taken (inside the same transaction as the change).
fn take_seq(conn: &Connection, room: RoomId, seq: u64) -> Result<()> {
    conn.prepare_cached("UPDATE rooms SET seq = ?2 WHERE id = ?1")?
        .execute(params![room.bytes(), sql_seq(seq)])?;
    Ok(())
}

/// Sets a message's new state (`body`, and `edited_at` or `deleted_at`) with the room's next
/// change number, unless it is a tombstone already.
fn change_message(
    conn: &Connection,
    id: MessageId,
    change: &str,
    body: &str,
) -> Result<Option<Message>> {
    let Some(room) = conn
        .prepare_cached("SELECT room_id FROM messages WHERE id = ?1 AND deleted_at IS NULL")?
        .query_row([id.bytes()], |r| id_at(r, 0))
        .optional()?
    else {
        return Ok(None);
    };
    let seq = next_seq(conn, room)?;
    let changed = conn
        .prepare_cached(&format!(
            "UPDATE messages SET body = ?1, {change} = ?2, seq = ?3
             WHERE id = ?4 RETURNING {MESSAGE_COLS}"
        ))?
        .query_row(
            params![body, now().timestamp_millis(), sql_seq(seq), id.bytes()],
            message_row,
        )?;
    take_seq(conn, room, seq)?;
    Ok(Some(changed))
}

/// One keyset page over a table ordered by `id`: `filter` (ending in `AND `, or empty) scopes
/// it, with `scope` bound to its one placeholder. Costs O(log n + page) at any depth.
fn page_by_id<T>(
    conn: &Connection,
    cols: &str,
    table: &str,
    filter: &str,
    scope: Option<[u8; 12]>,
    page: PageRequest,
    map: fn(&Row) -> rusqlite::Result<T>,
) -> Result<Page<T>> {
    let (sql, cursor, limit, far_side) = match page {
        PageRequest::Backward { before, last } => (
            format!("SELECT {cols} FROM {table} WHERE {filter}id < ? ORDER BY id DESC LIMIT ?"),
            before.map_or([0xff; 12], |b| b.bytes()),
            last,
            before.map(|_| format!("SELECT EXISTS(SELECT 1 FROM {table} WHERE {filter}id >= ?)")),
        ),
        PageRequest::Forward { after, first } => (
            format!("SELECT {cols} FROM {table} WHERE {filter}id > ? ORDER BY id ASC LIMIT ?"),
            after.map_or([0x00; 12], |a| a.bytes()),
            first,
            after.map(|_| format!("SELECT EXISTS(SELECT 1 FROM {table} WHERE {filter}id <= ?)")),
        ),
    };
    let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
    let mut args: Vec<&dyn ToSql> = Vec::with_capacity(3);
    if let Some(scope) = &scope {
        args.push(scope);
    }
    args.push(&cursor);
    let items = {
        let mut query_args = args.clone();
        query_args.push(&fetch);
        let mut stmt = conn.prepare_cached(&sql)?;
        stmt.query_map(query_args.as_slice(), map)?
            .collect::<rusqlite::Result<Vec<T>>>()?
    };
    let beyond_cursor = match far_side {
        Some(sql) => conn
            .prepare_cached(&sql)?
            .query_row(args.as_slice(), |r| r.get::<_, bool>(0))?,
        None => false,
    };
    let backward = matches!(page, PageRequest::Backward { .. });
    Ok(keyset_page(items, limit, backward, beyond_cursor))
}

fn user_by_id(conn: &Connection, id: UserId) -> Result<Option<User>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1"))?
        .query_row([id.bytes()], user_row)
        .optional()?)
}

/// The result of a membership write, announcing `event` with the user when it changed anything.
fn membership_change(
    conn: &Connection,
    changed: bool,
    user: UserId,
    event: impl FnOnce(User) -> RoomEvent,
) -> Result<(Written<()>, Option<RoomEvent>)> {
    let announce = match changed {
        true => user_by_id(conn, user)?.map(event),
        false => None,
    };
    Ok((Written { value: (), changed }, announce))
}

fn message_by_id(conn: &Connection, id: MessageId) -> Result<Option<Message>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLS} FROM messages WHERE id = ?1"
        ))?
        .query_row([id.bytes()], message_row)
        .optional()?)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await?;
        // The writer must be alive too, or no write would ever be answered.
        if self.jobs.is_closed() {
            return Err(Error::internal("the SQLite writer has stopped"));
        }
        // And the file must take its writes.
        if let Some(reason) = self.health.refusing() {
            return Err(Error::Internal(RefusingWrites(reason.to_owned()).into()));
        }
        Ok(())
    }

    fn take_events(&self) -> Option<mpsc::Receiver<RoomEvent>> {
        let mut slot = self.events.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return None;
        }
        let (sender, receiver) = mpsc::channel(super::EVENT_QUEUE);
        *slot = Some(sender);
        Some(receiver)
    }

    async fn create_user(&self, username: &str, password_hash: &str) -> Result<User> {
        let (username, hash) = (username.to_owned(), password_hash.to_owned());
        self.write(move |conn, ids| {
            let user = User {
                id: ids.next(),
                username,
                created_at: now(),
            };
            conn.prepare_cached(
                "INSERT INTO users (id, username, username_key, password_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                user.id.bytes(),
                user.username,
                unique_key(&user.username),
                hash,
                user.created_at.timestamp_millis()
            ])
            .map_err(|e| match constraint(&e) {
                Some(ffi::SQLITE_CONSTRAINT_UNIQUE) => Error::from(Taken::Username),
                _ => e.into(),
            })?;
            Ok(user)
        })
        .await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        self.read(move |conn| user_by_id(conn, id)).await
    }

    async fn credentials(&self, username: &str) -> Result<Option<Credentials>> {
        let asked = username.to_owned();
        let key = unique_key(username);
        let (displaced_from, displaced_to) = displaced_keys(&key);
        self.read(move |conn| {
            let found = conn
                .prepare_cached(&format!(
                    "SELECT {USER_COLS}, password_hash FROM users
                     WHERE username_key = ?1 OR (username_key > ?2 AND username_key < ?3)"
                ))?
                .query_map(params![key, displaced_from, displaced_to], |row| {
                    Ok(Credentials {
                        user: user_row(row)?,
                        password_hash: row.get(3)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(found
                .into_iter()
                .find(|c| same_name_in_any_case(&c.user.username, &asked)))
        })
        .await
    }

    async fn create_room(&self, name: &str, creator: UserId) -> Result<Room> {
        let name = name.to_owned();
        self.write(move |conn, ids| {
            let room = Room {
                id: ids.next(),
                name,
                created_by: creator,
                created_at: now(),
            };
            conn.prepare_cached(
                "INSERT INTO rooms (id, name, name_key, created_by, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                room.id.bytes(),
                room.name,
                unique_key(&room.name),
                creator.bytes(),
                room.created_at.timestamp_millis()
            ])
            .map_err(|e| match constraint(&e) {
                Some(ffi::SQLITE_CONSTRAINT_UNIQUE) => Error::from(Taken::RoomName),
                Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => Error::not_found("user not found"),
                _ => e.into(),
            })?;
            conn.prepare_cached(
                "INSERT INTO memberships (room_id, user_id, joined_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![
                room.id.bytes(),
                creator.bytes(),
                room.created_at.timestamp_millis()
            ])?;
            Ok(room)
        })
        .await
    }

    async fn room(&self, id: RoomId) -> Result<Option<Room>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!("SELECT {ROOM_COLS} FROM rooms WHERE id = ?1"))?
                .query_row([id.bytes()], room_row)
                .optional()?)
        })
        .await
    }

    async fn rooms(&self, page: PageRequest) -> Result<Page<Room>> {
        self.read(move |conn| page_by_id(conn, ROOM_COLS, "rooms", "", None, page, room_row))
            .await
    }

    async fn add_member(&self, room: RoomId, user: UserId) -> Result<Written<()>> {
        self.write_announcing(move |conn, _| {
            let changed = conn
                .prepare_cached(
                    "INSERT INTO memberships (room_id, user_id, joined_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (room_id, user_id) DO NOTHING",
                )?
                .execute(params![
                    room.bytes(),
                    user.bytes(),
                    now().timestamp_millis()
                ])
                .map_err(|e| match constraint(&e) {
                    Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => Error::not_found("room not found"),
                    _ => e.into(),
                })?;
            membership_change(conn, changed == 1, user, |user| RoomEvent::MemberJoined {
                room_id: room,
                user,
            })
        })
        .await
    }

    async fn remove_member(&self, room: RoomId, user: UserId) -> Result<Written<()>> {
        self.write_announcing(move |conn, _| {
            let changed = conn
                .prepare_cached("DELETE FROM memberships WHERE room_id = ?1 AND user_id = ?2")?
                .execute([room.bytes(), user.bytes()])?;
            membership_change(conn, changed == 1, user, |user| RoomEvent::MemberLeft {
                room_id: room,
                user,
            })
        })
        .await
    }

    async fn is_member(&self, room: RoomId, user: UserId) -> Result<bool> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT EXISTS(SELECT 1 FROM memberships WHERE room_id = ?1 AND user_id = ?2)",
                )?
                .query_row([room.bytes(), user.bytes()], |r| r.get(0))?)
        })
        .await
    }

    async fn members(&self, room: RoomId, limit: usize) -> Result<Vec<User>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT u.id, u.username, u.created_at FROM memberships m
                     JOIN users u ON u.id = m.user_id
                     WHERE m.room_id = ?1 ORDER BY m.rowid LIMIT ?2",
                )?
                .query_map(params![room.bytes(), limit], user_row)?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn member_count(&self, room: RoomId) -> Result<u64> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT count(*) FROM memberships WHERE room_id = ?1")?
                .query_row([room.bytes()], |r| r.get::<_, i64>(0))?)
        })
        .await
        .map(|n| u64::try_from(n).unwrap_or(0))
    }

    async fn rooms_of(&self, user: UserId, page: PageRequest) -> Result<Page<Room>> {
        self.read(move |conn| {
            // Keyed on the membership's room id: one range of `memberships_by_user`.
            let (sql, cursor, limit, far_side) = match page {
                PageRequest::Forward { after, first } => (
                    "SELECT r.id, r.name, r.created_by, r.created_at FROM memberships m
                     JOIN rooms r ON r.id = m.room_id
                     WHERE m.user_id = ?1 AND m.room_id > ?2 ORDER BY m.room_id ASC LIMIT ?3",
                    after.map_or([0x00; 12], |a| a.bytes()),
                    first,
                    after.map(|_| {
                        "SELECT EXISTS(SELECT 1 FROM memberships WHERE user_id = ?1 AND room_id <= ?2)"
                    }),
                ),
                PageRequest::Backward { before, last } => (
                    "SELECT r.id, r.name, r.created_by, r.created_at FROM memberships m
                     JOIN rooms r ON r.id = m.room_id
                     WHERE m.user_id = ?1 AND m.room_id < ?2 ORDER BY m.room_id DESC LIMIT ?3",
                    before.map_or([0xff; 12], |b| b.bytes()),
                    last,
                    before.map(|_| {
                        "SELECT EXISTS(SELECT 1 FROM memberships WHERE user_id = ?1 AND room_id >= ?2)"
                    }),
                ),
            };
            let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
            let items = conn
                .prepare_cached(sql)?
                .query_map(params![user.bytes(), cursor, fetch], room_row)?
                .collect::<rusqlite::Result<Vec<Room>>>()?;
            let beyond_cursor = match far_side {
                Some(sql) => conn
                    .prepare_cached(sql)?
                    .query_row(params![user.bytes(), cursor], |r| r.get::<_, bool>(0))?,
                None => false,
            };
            let backward = matches!(page, PageRequest::Backward { .. });
            Ok(keyset_page(items, limit, backward, beyond_cursor))
        })
        .await
    }

    async fn room_count_of(&self, user: UserId) -> Result<u64> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT count(*) FROM memberships WHERE user_id = ?1")?
                .query_row([user.bytes()], |r| r.get::<_, i64>(0))?)
        })
        .await
        .map(|n| u64::try_from(n).unwrap_or(0))
    }

    async fn insert_message(&self, message: NewMessage) -> Result<Written<Message>> {
        self.write_announcing(move |conn, ids| {
            let seq = next_seq(conn, message.room_id)?;
            let stored = Message {
                id: ids.next(),
                room_id: message.room_id,
                sender_id: message.sender_id,
                body: message.body,
                client_id: message.client_id,
                created_at: now(),
                edited_at: None,
                deleted_at: None,
                seq,
            };
            // The partial unique index decides idempotency: a repeated clientId inserts nothing.
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO messages (id, room_id, sender_id, body, client_id, created_at, seq)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (room_id, sender_id, client_id) WHERE client_id IS NOT NULL
                     DO NOTHING",
                )?
                .execute(params![
                    stored.id.bytes(),
                    stored.room_id.bytes(),
                    stored.sender_id.bytes(),
                    stored.body,
                    stored.client_id,
                    stored.created_at.timestamp_millis(),
                    sql_seq(seq)
                ])
                .map_err(|e| match constraint(&e) {
                    Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => Error::not_found("room not found"),
                    _ => e.into(),
                })?;
            if inserted == 1 {
                take_seq(conn, stored.room_id, seq)?;
                let event = RoomEvent::MessageAdded(stored.clone());
                return Ok((
                    Written {
                        value: stored,
                        changed: true,
                    },
                    Some(event),
                ));
            }
            let first = conn
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLS} FROM messages
                     WHERE room_id = ?1 AND sender_id = ?2 AND client_id = ?3"
                ))?
                .query_row(
                    params![
                        stored.room_id.bytes(),
                        stored.sender_id.bytes(),
                        stored.client_id
                    ],
                    message_row,
                )?;
            Ok((
                Written {
                    value: first,
                    changed: false,
                },
                None,
            ))
        })
        .await
    }

    async fn message(&self, id: MessageId) -> Result<Option<Message>> {
        self.read(move |conn| message_by_id(conn, id)).await
    }

    async fn room_head(&self, room: RoomId) -> Result<RoomHead> {
        self.read(move |conn| {
            // One statement, so one snapshot: the number and the newest id agree.
            let head: Option<(i64, Option<[u8; 12]>)> = conn
                .prepare_cached(
                    "SELECT seq, (SELECT max(id) FROM messages WHERE room_id = ?1)
                     FROM rooms WHERE id = ?1",
                )?
                .query_row([room.bytes()], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let (seq, last) = head.ok_or_else(|| Error::not_found("room not found"))?;
            Ok(RoomHead {
                last_message: last.map(ObjectId::from_bytes),
                seq: u64::try_from(seq).unwrap_or(0),
            })
        })
        .await
    }

    async fn changes_after(&self, room: RoomId, seq: u64, limit: usize) -> Result<Vec<Message>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLS} FROM messages
                     WHERE room_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                ))?
                .query_map(params![room.bytes(), sql_seq(seq), limit], message_row)?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn messages(&self, room: RoomId, page: PageRequest) -> Result<Page<Message>> {
        self.read(move |conn| {
            page_by_id(
                conn,
                MESSAGE_COLS,
                "messages",
                LIVE_IN_ROOM,
                Some(room.bytes()),
                page,
                message_row,
            )
        })
        .await
    }

    async fn messages_after(
        &self,
        room: RoomId,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<Message>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLS} FROM messages
                     WHERE room_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
                ))?
                .query_map(params![room.bytes(), after.bytes(), limit], message_row)?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn edit_message(&self, id: MessageId, body: &str) -> Result<Message> {
        let body = body.to_owned();
        self.write_announcing(move |conn, _| {
            let edited = change_message(conn, id, "edited_at", &body)?
                .ok_or_else(|| Error::not_found("message not found"))?;
            let event = RoomEvent::MessageEdited(edited.clone());
            Ok((edited, Some(event)))
        })
        .await
    }

    async fn delete_message(&self, id: MessageId) -> Result<Written<Message>> {
        self.write_announcing(move |conn, _| {
            let deleted = change_message(conn, id, "deleted_at", "")?;
            match deleted {
                Some(message) => {
                    let event = RoomEvent::MessageDeleted {
                        room_id: message.room_id,
                        message_id: message.id,
                        seq: message.seq,
                    };
                    Ok((
                        Written {
                            value: message,
                            changed: true,
                        },
                        Some(event),
                    ))
                }
                None => match message_by_id(conn, id)? {
                    Some(tombstone) => Ok((
                        Written {
                            value: tombstone,
                            changed: false,
                        },
                        None,
                    )),
                    None => Err(Error::not_found("message not found")),
                },
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_strictly_increase_even_within_one_second() {
        let mut ids = IdGen { last: [0; 12] };
        let mut previous = ids.next();
        for _ in 0..10_000 {
            let next = ids.next();
            assert!(next > previous);
            previous = next;
        }
    }

    #[test]
    fn ids_never_go_backwards_after_a_later_id_was_seen() {
        let mut ids = IdGen {
            last: [0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0xff, 0xff],
        };
        let next = ids.next();
        assert_eq!(
            next.bytes(),
            [0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }

    #[tokio::test]
    async fn a_version_1_database_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "{SCHEMA_V1}
                 INSERT INTO users VALUES (x'000000000000000000000001', 'ada', 'ada', 'h', 0);
                 INSERT INTO rooms VALUES (x'000000000000000000000002', 'lobby', 'lobby',
                     x'000000000000000000000001', 0);
                 INSERT INTO messages (id, room_id, sender_id, body, created_at) VALUES
                     (x'000000000000000000000003', x'000000000000000000000002',
                      x'000000000000000000000001', 'old', 0);
                 PRAGMA user_version = 1;"
            ))
            .unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let room = ObjectId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        let old = ObjectId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(
            store.room_head(room).await.unwrap(),
            RoomHead {
                last_message: Some(old),
                seq: 0
            }
        );
        let message = store
            .insert_message(NewMessage {
                room_id: room,
                sender_id: ObjectId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                body: "new".into(),
                client_id: None,
            })
            .await
            .unwrap()
            .value;
        assert_eq!(message.seq, 1);
        let edited = store.edit_message(old, "old, edited").await.unwrap();
        assert_eq!(edited.seq, 2);
        let changes = store.changes_after(room, 0, 10).await.unwrap();
        assert_eq!(changes, [message, edited]);
    }

    fn id(n: u8) -> ObjectId {
        ObjectId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n])
    }

    /// A version 2 database (keys in lower case) where an earlier Confab let look-alikes in.
    fn version_2_database(path: &Path) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(&format!(
            "{SCHEMA_V1} {SCHEMA_V2}
             INSERT INTO users (id, username, username_key, password_hash, created_at) VALUES
                 (x'000000000000000000000001', 'ilse', 'ilse', 'h1', 0),
                 (x'000000000000000000000002', 'llse', 'llse', 'h2', 0),
                 (x'000000000000000000000003', 'Ada', 'ada', 'h3', 0);
             -- The older room's new key is the newer room's old one: the upgrade must still
             -- give it to the older.
             INSERT INTO rooms (id, name, name_key, created_by, created_at) VALUES
                 (x'000000000000000000000004', 'L0bby', 'l0bby', x'000000000000000000000001', 0),
                 (x'000000000000000000000005', 'lobby', 'lobby', x'000000000000000000000001', 0),
                 (x'000000000000000000000006', 'lo' || char(8203) || 'bby', 'lo' || char(8203) || 'bby',
                  x'000000000000000000000001', 0),
                 (x'000000000000000000000007', 'General', 'general', x'000000000000000000000001', 0);
             PRAGMA user_version = 2;"
        ))
        .unwrap();
    }

    fn stored_keys(path: &Path, table: &str, key: &str) -> Vec<(ObjectId, String)> {
        let conn = Connection::open(path).unwrap();
        conn.prepare(&format!("SELECT id, {key} FROM {table} ORDER BY id"))
            .unwrap()
            .query_map([], |r| Ok((id_at(r, 0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[tokio::test]
    async fn a_version_2_database_gets_look_alike_keys_and_keeps_every_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        version_2_database(&path);

        let store = SqliteStore::open(&path).await.unwrap();
        // Every row is kept; look-alikes now conflict, against the oldest of each group.
        for (name, field) in [("LOBBY", "name"), ("I0bby", "name"), ("general", "name")] {
            let err = store.create_room(name, id(1)).await.unwrap_err();
            assert!(
                matches!(err, Error::Conflict { field: f, .. } if f == field),
                "{name:?}: {err:?}"
            );
        }
        for name in ["ILSE", "Llse", "ADA"] {
            let err = store.create_user(name, "h").await.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Conflict {
                        field: "username",
                        ..
                    }
                ),
                "{name:?}: {err:?}"
            );
        }
        // Each user still logs in by their own name, in any case, and only by it.
        for (asked, hash) in [
            ("ilse", "h1"),
            ("ILSE", "h1"),
            ("llse", "h2"),
            ("LLSE", "h2"),
        ] {
            let found = store.credentials(asked).await.unwrap();
            assert_eq!(
                found.map(|c| c.password_hash).as_deref(),
                Some(hash),
                "{asked:?}"
            );
        }
        assert!(store.credentials("IIse").await.unwrap().is_none());
        assert_eq!(
            store
                .rooms(PageRequest::Forward {
                    after: None,
                    first: 10
                })
                .await
                .unwrap()
                .items
                .len(),
            4
        );
        drop(store);

        assert_eq!(
            stored_keys(&path, "rooms", "name_key"),
            [
                (id(4), "lobby".to_owned()),
                (id(5), displaced_key("lobby", id(5))),
                (id(6), displaced_key("lobby", id(6))),
                (id(7), "general".to_owned()),
            ]
        );
        assert_eq!(
            stored_keys(&path, "users", "username_key"),
            [
                (id(1), "llse".to_owned()),
                (id(2), displaced_key("llse", id(2))),
                (id(3), "ada".to_owned()),
            ]
        );
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        let keys: i64 = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'name_key_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!((version, keys), (SCHEMA_VERSION, UNIQUE_KEY_VERSION));
        drop(conn);

        // Opening again changes nothing.
        let before = stored_keys(&path, "rooms", "name_key");
        drop(SqliteStore::open(&path).await.unwrap());
        assert_eq!(stored_keys(&path, "rooms", "name_key"), before);
    }

    #[tokio::test]
    async fn a_second_store_on_one_file_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("confab.db");
        let first = SqliteStore::open(&path).await.unwrap();
        let clone = first.clone();
        let err = SqliteStore::open(&path)
            .await
            .err()
            .expect("a second open is refused");
        let text = format!("{err:#}");
        assert!(text.contains("another Confab"), "{text}");
        assert!(
            text.contains(&format!("(pid {})", std::process::id())),
            "{text}"
        );
        assert!(text.contains(&path.display().to_string()), "{text}");
        // A clone is the same store: the lock lasts until the last handle is gone.
        drop(first);
        assert!(SqliteStore::open(&path).await.is_err());
        drop(clone);
        let again = SqliteStore::open(&path)
            .await
            .expect("the lock was released");
        again.create_user("ada", "h").await.unwrap();
    }

    /// Fills the database to a size limit set on the writer's connection (a full disk, as SQLite
    /// sees it): the store turns unready with the reason, and ready again after a write commits.
    #[tokio::test]
    async fn a_store_whose_writes_fail_is_not_ready_until_a_write_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("confab.db"))
            .await
            .unwrap();
        let ada = store.create_user("ada", "h").await.unwrap();
        let room = store.create_room("lobby", ada.id).await.unwrap();
        store.ping().await.expect("ready");
        let size_limit = |pages: Option<i64>| {
            store.write(move |conn, _| {
                let pages = match pages {
                    Some(pages) => pages,
                    None => conn.query_row("PRAGMA page_count", [], |r| r.get(0))?,
                };
                conn.pragma_update(None, "max_page_count", pages)?;
                Ok(())
            })
        };
        size_limit(None).await.unwrap();
        let message = || NewMessage {
            room_id: room.id,
            sender_id: ada.id,
            body: "x".repeat(4000),
            client_id: None,
        };
        let mut failed = None;
        for _ in 0..100 {
            if let Err(e) = store.insert_message(message()).await {
                failed = Some(e);
                break;
            }
        }
        let failed = failed.expect("a write fails once the database is full");
        assert_eq!(failed.code().as_str(), "INTERNAL_SERVER_ERROR");

        let err = store.ping().await.expect_err("not ready while writes fail");
        let Error::Internal(cause) = &err else {
            panic!("{err:?}")
        };
        let refusing = cause.downcast_ref::<RefusingWrites>().expect("the reason");
        assert!(refusing.0.contains("full"), "{refusing}");
        // Reads go on, and say nothing about writes.
        assert!(store.room(room.id).await.unwrap().is_some());
        assert!(store.ping().await.is_err());

        size_limit(Some(1_000_000)).await.unwrap();
        store.insert_message(message()).await.unwrap();
        store
            .ping()
            .await
            .expect("ready again after a write committed");
    }
}
