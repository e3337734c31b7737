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
//!
//! The files: this one (the store, its readers and shared row helpers), `writer` (the writer
//! thread and its health), `schema` (the tables and their upgrades), and one per aggregate in
//! the order of the `Store` traits: `users`, `rooms`, `messages`. This one is the longest
//! because it holds what every aggregate shares (opening and locking the file, the reader pool,
//! row and page helpers) and the tests of the file as a whole (the lock, readiness).

pub mod backup;
mod inbox;
mod messages;
mod rooms;
mod schema;
mod sessions;
mod users;
mod writer;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, Row, ToSql};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{RefusingWrites, Store, keyset_page};
use crate::metrics::store::StoreTimings;
use crate::{
    error::{Error, Result},
    model::{ObjectId, Page, PageRequest, RoomEvent},
};
use schema::{migrate, probe_write};
use writer::{
    Done, EventSink, IdGen, Job, ReadJob, Reply, WRITE_QUEUE, WriteJob, WriterHealth, WriterThread,
    in_savepoint, run_writer, unwritable,
};

/// Read-only connections (and blocking threads) serving reads at once.
const READERS: usize = 4;

#[derive(Clone)]
pub struct SqliteStore {
    // Declared before `_writer` (fields drop in order), so the last handle closes the queue
    // before it waits for the writer thread to end.
    jobs: mpsc::Sender<Job>,
    readers: Option<Arc<ReaderPool>>,
    events: EventSink,
    health: Arc<WriterHealth>,
    /// The file's `user_version` once migrated.
    schema_version: i64,
    /// How long reads and writes take, for `/metrics`.
    timings: StoreTimings,
    _writer: Arc<WriterThread>,
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
        let schema_version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
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
            schema_version,
            timings: StoreTimings::default(),
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
        self.write_announcing_all(move |conn, ids| {
            f(conn, ids).map(|(value, event)| (value, event.into_iter().collect()))
        })
        .await
    }

    /// Like [`write`](Self::write), with events to announce, in order, once the write is
    /// committed.
    async fn write_announcing_all<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection, &mut IdGen) -> Result<(T, Vec<RoomEvent>)> + Send + 'static,
    ) -> Result<T> {
        let started = std::time::Instant::now();
        let (tx, rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |conn, ids| {
            let (result, events) = match in_savepoint(conn, |conn| f(conn, ids)) {
                Ok((value, events)) => (Ok(value), events),
                Err(e) => (Err(e), Vec::new()),
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
                events,
                refused,
            }
        });
        self.jobs
            .send(Job::Write(job))
            .await
            .map_err(|_| Error::internal("the SQLite writer has stopped"))?;
        let written = rx
            .await
            .map_err(|_| Error::internal("the SQLite writer dropped a write"))?;
        self.timings.sqlite(true, started.elapsed());
        written
    }

    /// Runs `f` on a reader connection (or, in memory, on the writer's, between batches).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let started = std::time::Instant::now();
        let read = match &self.readers {
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
        };
        self.timings.sqlite(false, started.elapsed());
        read
    }
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

/// An id of the kind `T` from a 12-byte column.
fn id_at<T: From<ObjectId>>(row: &Row, i: usize) -> rusqlite::Result<T> {
    Ok(ObjectId::from_bytes(row.get::<_, [u8; 12]>(i)?).into())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{MessageStore, NewMessage, RoomStore, UserStore};

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
        let room = store
            .create_room(crate::store::NewRoom::public("lobby", ada.id))
            .await
            .unwrap();
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
            mentions: Vec::new(),
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
