//! A SQLite file copied while a server writes to it, and a copy put back in its place.
//!
//! **Backing up** uses SQLite's online backup API with every page in one step
//! (`sqlite3_backup_step(-1)`): that step copies inside one read transaction of the source, and
//! in WAL mode a read transaction sees one committed state (the file plus the WAL up to its
//! mark) while the server's writer goes on appending to the WAL. So the copy is the database
//! as of one commit, whatever is written meanwhile, and the server is never held up. Copying a
//! few pages per step, as the API's example does, would start over each time another process
//! commits, which under steady traffic may be forever. (`VACUUM INTO` reads in one transaction
//! too and is as consistent; the backup API copies pages as they are, without rebuilding every
//! table and index, so it is the cheaper of the two.) A plain file copy is not a backup: the
//! latest commits live in `-wal` until a checkpoint, and a file copied mid-checkpoint is torn.
//!
//! The copy is written beside its destination (`PATH.partial`), converted to a rollback-journal
//! file (one self-contained file, no `-wal` to forget), checked (`PRAGMA integrity_check`),
//! made private (0600: it holds password hashes), synced, and only then named `PATH`: an
//! interrupted backup never leaves a half-written `PATH`.
//!
//! **Restoring** takes the lock a serving Confab holds (`PATH.lock`, see `lock_database`), so it
//! is refused while one runs and no server can start until it is done; copies the backup beside
//! the database, checks that copy (integrity, a Confab schema no newer than this binary's),
//! gives it the old file's mode (and owner, as root), syncs it, removes the old database's
//! `-wal`, `-shm` and `-journal` (which belong to the old file and would be replayed into the new
//! one), and renames the copy over the database.

use std::{
    fs::File,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rusqlite::{
    Connection, OpenFlags,
    backup::{Backup, StepResult},
};

use super::{lock_database, schema::SCHEMA_VERSION};

/// How long a backup waits for a lock on the source (SQLite's own busy waits aside).
const LOCKED_FOR_AT_MOST: Duration = Duration::from_secs(30);

/// Why a backup or a restore did not happen. Either way the destination was left as it was.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// What was asked cannot be done as asked (a missing file, a running server, a file that is
    /// not a Confab database): exit code 2.
    #[error("{0}")]
    Refused(String),
    /// Something failed on the way (I/O, SQLite): exit code 1.
    #[error("{0}")]
    Failed(String),
}

fn refused(text: impl Into<String>) -> BackupError {
    BackupError::Refused(text.into())
}

fn failed(doing: impl std::fmt::Display, e: impl std::fmt::Display) -> BackupError {
    BackupError::Failed(format!("{doing}: {e}"))
}

/// What a backup copied, or a restore put in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// The copy's schema version (its `user_version`).
    pub schema_version: i64,
    /// Its size in pages.
    pub pages: i64,
}

/// `path` with `suffix` added to its file name.
pub fn beside(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The directory a file is in (`.` for a bare name).
fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Copies the database at `database` (which a server may be writing) to `to`, replacing `to`
/// only when `replace`.
pub fn backup(database: &Path, to: &Path, replace: bool) -> Result<Copied, BackupError> {
    if !database.is_file() {
        return Err(refused(format!(
            "no database at {}: is --database-url right?",
            database.display()
        )));
    }
    if to.is_dir() {
        return Err(refused(format!(
            "{} is a directory: name the backup file, e.g. {}",
            to.display(),
            to.join("confab-backup.db").display()
        )));
    }
    if same_file(database, to) {
        return Err(refused(format!(
            "{} is the database itself: back it up to another path",
            to.display()
        )));
    }
    if to.exists() && !replace {
        return Err(refused(format!(
            "{} exists: choose another path, or pass --force to replace it",
            to.display()
        )));
    }
    let dir = dir_of(to);
    if !dir.is_dir() {
        return Err(refused(format!(
            "the directory {} does not exist",
            dir.display()
        )));
    }
    let partial = beside(to, ".partial");
    remove_with_sidecars(&partial)?;
    let copied = match copy_online(database, &partial) {
        Ok(copied) => copied,
        Err(e) => {
            let _ = remove_with_sidecars(&partial);
            return Err(e);
        }
    };
    let placed = if replace {
        std::fs::rename(&partial, to)
    } else {
        // A hard link never replaces an existing file: a `to` made meanwhile is kept. Where
        // the file system has no hard links, a rename after a last look.
        match std::fs::hard_link(&partial, to) {
            Ok(()) => std::fs::remove_file(&partial),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists || to.exists() => Err(
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, e.to_string()),
            ),
            Err(_) => std::fs::rename(&partial, to),
        }
    };
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&partial);
        return Err(if e.kind() == std::io::ErrorKind::AlreadyExists {
            refused(format!(
                "{} exists: choose another path, or pass --force to replace it",
                to.display()
            ))
        } else {
            failed(format_args!("cannot write {}", to.display()), e)
        });
    }
    sync_dir(dir)?;
    Ok(copied)
}

/// The online copy itself: every page in one step of the backup API, then checked and synced.
fn copy_online(database: &Path, partial: &Path) -> Result<Copied, BackupError> {
    let sqlite = |doing: &str| {
        let doing = doing.to_owned();
        move |e: rusqlite::Error| not_a_database(&e, database).unwrap_or_else(|| failed(&doing, e))
    };
    // Read-write (never created): a server's WAL needs its shared memory, which a read-only
    // connection could not set up on a database no server has open. (SQLite falls back to
    // reading alone on a file the caller may not write.)
    let source = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite(&format!("cannot open {}", database.display())))?;
    source
        .busy_timeout(Duration::from_secs(5))
        .map_err(sqlite("cannot set a busy timeout"))?;
    let version: i64 = source
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sqlite(&format!("cannot read {}", database.display())))?;
    if version == 0 {
        return Err(refused(format!(
            "{} is not a Confab database (it has no schema version)",
            database.display()
        )));
    }
    let mut target = Connection::open(partial)
        .map_err(|e| failed(format_args!("cannot create {}", partial.display()), e))?;
    {
        let copy =
            Backup::new(&source, &mut target).map_err(|e| failed("cannot start the backup", e))?;
        let deadline = Instant::now() + LOCKED_FOR_AT_MOST;
        loop {
            match copy.step(-1).map_err(|e| failed("the backup failed", e))? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    return Err(failed(
                        "the backup failed",
                        format_args!(
                            "{} stayed locked for {}s",
                            database.display(),
                            LOCKED_FOR_AT_MOST.as_secs()
                        ),
                    ));
                }
            }
        }
    }
    drop(source);
    // A damaged copy means a damaged database: name that.
    let copied = check(&target, partial).map_err(|e| match e {
        BackupError::Refused(text) => BackupError::Refused(text.replace(
            &partial.display().to_string(),
            &database.display().to_string(),
        )),
        failed => failed,
    })?;
    drop(target);
    // It holds password and token hashes: for its owner alone, like the signing key.
    set_mode(partial, 0o600)?;
    sync_file(partial)?;
    Ok(copied)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> Result<(), BackupError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| failed(format_args!("cannot set the mode of {}", path.display()), e))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> Result<(), BackupError> {
    Ok(())
}

/// Gives the restored file the mode and, where allowed (as root), the owner of the database it
/// replaces, so that a restore run as root leaves a file the server's user can still open.
fn like_the_old_one(staged: &Path, database: &Path) -> Result<(), BackupError> {
    let Ok(old) = std::fs::metadata(database) else {
        return Ok(());
    };
    std::fs::set_permissions(staged, old.permissions()).map_err(|e| {
        failed(
            format_args!("cannot set the mode of {}", staged.display()),
            e,
        )
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        // Not allowed unless root (or already the owner): then the file stays the caller's.
        let _ = std::os::unix::fs::chown(staged, Some(old.uid()), Some(old.gid()));
    }
    Ok(())
}

/// Checks a copy (integrity, a Confab schema this binary knows) and leaves it one
/// self-contained file in rollback-journal mode.
fn check(conn: &Connection, path: &Path) -> Result<Copied, BackupError> {
    let read = |e: rusqlite::Error| {
        not_a_database(&e, path)
            .unwrap_or_else(|| failed(format_args!("cannot read {}", path.display()), e))
    };
    let problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check(5)")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| r.get::<_, String>(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(read)?;
    if problems != ["ok"] {
        return Err(refused(format!(
            "{} is damaged (integrity check: {})",
            path.display(),
            problems.join("; ")
        )));
    }
    let schema_version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(read)?;
    if schema_version == 0 {
        return Err(refused(format!(
            "{} is not a Confab database (it has no schema version)",
            path.display()
        )));
    }
    if schema_version > SCHEMA_VERSION {
        return Err(refused(format!(
            "{} has schema version {schema_version}, newer than this Confab understands ({SCHEMA_VERSION}): use the Confab that made it, or a newer one",
            path.display()
        )));
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "DELETE", |r| r.get(0))
        .map_err(read)?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(failed(
            format_args!("cannot take {} out of WAL mode", path.display()),
            mode,
        ));
    }
    let pages: i64 = conn
        .pragma_query_value(None, "page_count", |r| r.get(0))
        .map_err(read)?;
    Ok(Copied {
        schema_version,
        pages,
    })
}

/// "Not a database" (a file of something else) and "malformed" as refusals naming the file.
fn not_a_database(e: &rusqlite::Error, path: &Path) -> Option<BackupError> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase => {
            Some(refused(format!(
                "{} is not a SQLite database",
                path.display()
            )))
        }
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DatabaseCorrupt => {
            Some(refused(format!("{} is damaged ({e})", path.display())))
        }
        _ => None,
    }
}

/// Puts the backup at `from` in place of the database at `database`, which no server may have
/// open.
pub fn restore(from: &Path, database: &Path) -> Result<Copied, BackupError> {
    if !from.is_file() {
        return Err(refused(format!("no backup at {}", from.display())));
    }
    if same_file(from, database) {
        return Err(refused(format!(
            "{} is the database itself: restore from a backup made by `confab backup`",
            from.display()
        )));
    }
    let dir = dir_of(database);
    std::fs::create_dir_all(dir)
        .map_err(|e| failed(format_args!("cannot create {}", dir.display()), e))?;
    // Held to the end: no server starts on a half-restored database.
    let _lock = lock_database(database).map_err(|e| {
        let text = format!("{e:#}");
        match text.split_once(": stop it first") {
            // "another Confab (pid N) is using the database PATH"
            Some((serving, _)) => refused(format!(
                "{serving}: stop it first (a database is restored while no Confab serves it)"
            )),
            None => refused(text),
        }
    })?;

    let staged = beside(database, ".restoring");
    remove_with_sidecars(&staged)?;
    let copied = (|| {
        std::fs::copy(from, &staged).map_err(|e| {
            failed(
                format_args!("cannot copy {} to {}", from.display(), staged.display()),
                e,
            )
        })?;
        let conn = Connection::open_with_flags(
            &staged,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| failed(format_args!("cannot open {}", staged.display()), e))?;
        // Refusals name the backup the operator gave, not the staged copy.
        let copied = check(&conn, &staged).map_err(|e| match e {
            BackupError::Refused(text) => BackupError::Refused(
                text.replace(&staged.display().to_string(), &from.display().to_string()),
            ),
            failed => failed,
        })?;
        drop(conn);
        like_the_old_one(&staged, database)?;
        sync_file(&staged)?;
        Ok(copied)
    })();
    let copied = match copied {
        Ok(copied) => copied,
        Err(e) => {
            let _ = remove_with_sidecars(&staged);
            return Err(e);
        }
    };
    // The old file's journals would be replayed into the new one: gone first.
    for suffix in ["-wal", "-shm", "-journal"] {
        remove_if_present(&beside(database, suffix))?;
    }
    std::fs::rename(&staged, database).map_err(|e| {
        failed(
            format_args!("cannot move {} to {}", staged.display(), database.display()),
            e,
        )
    })?;
    sync_dir(dir)?;
    Ok(copied)
}

fn remove_if_present(path: &Path) -> Result<(), BackupError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(failed(format_args!("cannot remove {}", path.display()), e)),
    }
}

/// Removes a database file left by an interrupted run, with its journals.
fn remove_with_sidecars(path: &Path) -> Result<(), BackupError> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        remove_if_present(&beside(path, suffix))?;
    }
    Ok(())
}

fn sync_file(path: &Path) -> Result<(), BackupError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| failed(format_args!("cannot sync {}", path.display()), e))
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| failed(format_args!("cannot sync {}", dir.display()), e))
}
