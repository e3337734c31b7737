//! The writer thread: the only read-write connection, group commit, ids in commit order, and
//! whether the file still takes writes.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use rusqlite::Connection;
use tokio::sync::mpsc;

use crate::{
    error::Result,
    model::{ObjectId, RoomEvent},
};

/// Most writes committed in one transaction.
pub(super) const MAX_BATCH: usize = 512;

/// Most writes waiting for the writer; callers beyond it wait (backpressure, not memory).
pub(super) const WRITE_QUEUE: usize = 4096;

pub(super) type Reply = Box<dyn FnOnce(std::result::Result<(), &rusqlite::Error>) + Send>;

/// A write run inside the batch's transaction.
pub(super) type WriteJob = Box<dyn FnOnce(&Connection, &mut IdGen) -> Done + Send>;

pub(super) type EventSink = Arc<crate::store::EventChannel>;

pub(super) type ReadJob = Box<dyn FnOnce(&Connection) + Send>;

pub(super) enum Job {
    Write(WriteJob),
    Read(ReadJob),
}

/// What a write did inside the batch's transaction: how to answer its caller once the batch is
/// committed (or not), the event to announce if it is, and why the database refused it when
/// that is the file's or the disk's fault.
pub(super) struct Done {
    pub(super) reply: Reply,
    pub(super) events: Vec<RoomEvent>,
    pub(super) refused: Option<&'static str>,
}

/// Why the writer's last transaction could not be written, while that lasts: set when BEGIN,
/// COMMIT or a write fails because the file or disk refuses (read-only, full, I/O error),
/// cleared by the next commit that succeeds. `ping` reports it, so readiness tells the truth.
#[derive(Default)]
pub(super) struct WriterHealth {
    pub(super) refusing: Mutex<Option<&'static str>>,
}

impl WriterHealth {
    pub(super) fn refusing(&self) -> Option<&'static str> {
        *self.refusing.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn set(&self, refusing: Option<&'static str>) {
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
pub(super) struct WriterThread {
    pub(super) stopped: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Drop for WriterThread {
    fn drop(&mut self) {
        let stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        // The thread holds the sender: this returns once the thread has ended.
        let _ = stopped.recv_timeout(Duration::from_secs(10));
    }
}

/// Why SQLite cannot write, in words, when `e` is the file's or the disk's fault rather than
/// a bug or a broken rule: what a startup refusal and `/readyz` say.
pub(super) fn unwritable(e: &rusqlite::Error) -> Option<&'static str> {
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

/// The writer thread: drain the queue, run the writes in one transaction, commit, announce the
/// committed writes' events in commit order, answer; and record whether the database took the
/// batch (see [`WriterHealth`]).
pub(super) fn run_writer(
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
        // Why the database refused this batch, if it did; a commit without one clears it.
        let mut refused = None;
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
                        // Readiness first, as below: the callers may ask right after.
                        if let Some(reason) = refused {
                            health.set(Some(reason));
                        }
                        for write in done.drain(..) {
                            (write.reply)(Err(&lost));
                        }
                        open = false;
                    }
                }
                Job::Read(read) => reads.push(read),
            }
        }
        let commit = open.then(|| conn.execute_batch("COMMIT"));
        match &commit {
            Some(Ok(())) => health.set(refused),
            Some(Err(e)) => {
                tracing::error!(error = %e, "SQLite commit failed; the batch is rolled back");
                let _ = conn.execute_batch("ROLLBACK");
                if let Some(reason) = unwritable(e).or(refused) {
                    health.set(Some(reason));
                }
            }
            None => {
                if let Some(reason) = refused {
                    health.set(Some(reason));
                }
            }
        }
        // Writers hear only now, once readiness says what this batch found: a caller told its
        // write failed for a full disk finds the store not ready when it asks next.
        match commit {
            Some(Ok(())) => {
                let sink = events.sender();
                // Writers hear first: their tasks are then queued ahead of the (possibly
                // thousands of) subscriber tasks the events wake.
                let mut events = Vec::with_capacity(done.len());
                for write in done {
                    (write.reply)(Ok(()));
                    events.extend(write.events);
                }
                if let Some(sink) = &sink {
                    for event in events {
                        // Waits when the publisher is behind; fails only once it is gone.
                        let _ = sink.blocking_send(event);
                    }
                }
            }
            Some(Err(e)) => {
                for write in done {
                    (write.reply)(Err(&e));
                }
            }
            None => {}
        }
        for read in reads {
            read(&conn);
        }
    }
}

/// Runs one write in its own savepoint, so a failing write (a duplicate, say) leaves the rest
/// of the batch intact.
pub(super) fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
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

/// Mints strictly increasing ObjectIds (see the module docs).
pub(crate) struct IdGen {
    last: [u8; 12],
}

impl IdGen {
    pub(super) fn resume(conn: &Connection) -> rusqlite::Result<Self> {
        let mut last = [0u8; 12];
        for table in [
            "users",
            "sessions",
            "rooms",
            "messages",
            "stream_checkpoints",
        ] {
            let max: Option<Vec<u8>> =
                conn.query_row(&format!("SELECT max(id) FROM {table}"), [], |r| r.get(0))?;
            if let Some(Ok(max)) = max.map(<[u8; 12]>::try_from) {
                last = last.max(max);
            }
        }
        Ok(Self { last })
    }

    pub(super) fn next(&mut self) -> ObjectId {
        crate::store::next_object_id(&mut self.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn ids_strictly_increase_even_within_one_second() {
        let mut ids = IdGen { last: [0; 12] };
        let mut previous = ids.next();
        for _ in 0..10_000 {
            let next = ids.next();
            assert!(next > previous);
            previous = next;
        }
    }

    #[test]
    pub(super) fn ids_never_go_backwards_after_a_later_id_was_seen() {
        let mut ids = IdGen {
            last: [0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0xff, 0xff],
        };
        let next = ids.next();
        assert_eq!(
            next.bytes(),
            [0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 0, 0, 1, 0, 0]
        );
    }
}
