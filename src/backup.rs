//! `confab backup PATH` and `confab restore PATH`: the database `--database-url` names, and the
//! signing key Confab generated beside it.
//!
//! The database part is `store::sqlite::backup` (an online copy; a restore under the server's
//! own lock). The signing key (`jwt-secret` in the data directory, when no `--jwt-secret` is
//! given) signs every access token: without it, every token in circulation is refused. A backup
//! copies it to `PATH.jwt-secret` (mode 0600). A restore puts it back only where the data
//! directory has none (a new machine, a lost directory); a key that is there is kept, since it
//! may have been replaced on purpose (say, after a leak), and the command says so.
//!
//! MongoDB is backed up with its own tools (`mongodump --oplog`, see the README): refused here.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
};

use crate::{
    config::{Config, DatabaseUrl},
    store::sqlite::backup::{self as sqlite, BackupError, beside},
};

/// The signing key's file name in the data directory (see `auth::signing_key`).
const KEY_FILE: &str = "jwt-secret";

/// Runs `confab backup`: prints what it did, or one line saying why not (exit 2 for a refusal,
/// 1 for a failure).
pub fn backup_command(config: &Config, to: &Path, replace: bool) -> ExitCode {
    report(backup(config, to, replace))
}

/// Runs `confab restore`, as [`backup_command`].
pub fn restore_command(config: &Config, from: &Path) -> ExitCode {
    report(restore(config, from))
}

fn report(outcome: Result<Vec<String>, BackupError>) -> ExitCode {
    match outcome {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            match e {
                BackupError::Refused(_) => ExitCode::from(2),
                BackupError::Failed(_) => ExitCode::FAILURE,
            }
        }
    }
}

/// The SQLite file `--database-url` names, or why there is none to back up or restore.
fn database_file(config: &Config, command: &str, verb: &str) -> Result<PathBuf, BackupError> {
    match DatabaseUrl::parse(&config.database_url).map_err(BackupError::Refused)? {
        DatabaseUrl::SqliteFile(path) => Ok(path),
        DatabaseUrl::SqliteMemory => Err(BackupError::Refused(format!(
            "--database-url is {}: a database in memory has nothing to {verb}",
            config.database_url
        ))),
        DatabaseUrl::Mongo(_) => Err(BackupError::Refused(format!(
            "`confab {command}` is for SQLite: {verb} a MongoDB database with mongo{} (see the README's Backups section)",
            if verb == "back up" {
                "dump --oplog"
            } else {
                "restore --oplogReplay"
            }
        ))),
    }
}

/// The generated signing key's file, when the server uses one (no `--jwt-secret`).
fn key_file(config: &Config, database: &Path) -> Option<PathBuf> {
    if config.jwt_secret.is_some() {
        return None;
    }
    DatabaseUrl::SqliteFile(database.to_owned())
        .data_dir()
        .map(|dir| dir.join(KEY_FILE))
}

fn backup(config: &Config, to: &Path, replace: bool) -> Result<Vec<String>, BackupError> {
    let database = database_file(config, "backup", "back up")?;
    let key = key_file(config, &database).filter(|key| key.is_file());
    let key_copy = beside(to, ".jwt-secret");
    for taken in [Some(to), key.as_ref().map(|_| key_copy.as_path())]
        .into_iter()
        .flatten()
    {
        if taken.exists() && !replace {
            return Err(BackupError::Refused(format!(
                "{} exists: choose another path, or pass --force to replace it",
                taken.display()
            )));
        }
    }
    let copied = sqlite::backup(&database, to, replace)?;
    let mut lines = vec![format!(
        "backed up {} to {} (schema version {}, {} pages)",
        database.display(),
        to.display(),
        copied.schema_version,
        copied.pages
    )];
    match key {
        Some(key) => {
            let secret = std::fs::read(&key).map_err(|e| {
                BackupError::Failed(format!("cannot read {}: {e}", key.display()))
            })?;
            write_private(&key_copy, &secret)?;
            lines.push(format!(
                "copied the signing key {} to {} (mode 0600): keep it as safe as a password",
                key.display(),
                key_copy.display()
            ));
        }
        None if config.jwt_secret.is_some() => lines.push(
            "the signing key is the one --jwt-secret (or CONFAB_JWT_SECRET) gives: keep it with your backups"
                .into(),
        ),
        None => {}
    }
    Ok(lines)
}

fn restore(config: &Config, from: &Path) -> Result<Vec<String>, BackupError> {
    let database = database_file(config, "restore", "restore")?;
    let copied = sqlite::restore(from, &database)?;
    let mut lines = vec![format!(
        "restored {} from {} (schema version {}, {} pages)",
        database.display(),
        from.display(),
        copied.schema_version,
        copied.pages
    )];
    let saved = beside(from, ".jwt-secret");
    match key_file(config, &database) {
        None => {}
        Some(key) if key.exists() => {
            let same = match (std::fs::read(&key), std::fs::read(&saved)) {
                (Ok(current), Ok(saved)) => current.trim_ascii() == saved.trim_ascii(),
                _ => true,
            };
            if !same {
                lines.push(format!(
                    "kept the signing key {}, which differs from {}: tokens signed with the backup's key are refused; to use it instead, copy it over {} while Confab is stopped",
                    key.display(),
                    saved.display(),
                    key.display()
                ));
            }
        }
        Some(key) if saved.is_file() => {
            let secret = std::fs::read(&saved).map_err(|e| {
                BackupError::Failed(format!("cannot read {}: {e}", saved.display()))
            })?;
            write_private(&key, &secret)?;
            lines.push(format!(
                "restored the signing key {} from {} (mode 0600)",
                key.display(),
                saved.display()
            ));
        }
        Some(key) => lines.push(format!(
            "no signing key at {} nor {}: Confab makes a new one when it starts, and everyone signs in again",
            key.display(),
            saved.display()
        )),
    }
    Ok(lines)
}

/// Writes a secret readable by its owner alone (0600), whole or not at all: written beside
/// `path`, synced, then renamed over it.
fn write_private(path: &Path, secret: &[u8]) -> Result<(), BackupError> {
    let failed =
        |e: std::io::Error| BackupError::Failed(format!("cannot write {}: {e}", path.display()));
    let partial = beside(path, ".partial");
    let _ = std::fs::remove_file(&partial);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&partial).and_then(|mut file| {
        file.write_all(secret)?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&partial, path)) {
        let _ = std::fs::remove_file(&partial);
        return Err(failed(e));
    }
    Ok(())
}
