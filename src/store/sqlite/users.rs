//! Users: accounts, found by id or by name (in any letter case, never by a look-alike).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, ffi, params};

use super::{SqliteStore, constraint, id_at, now, time_at};
use crate::{
    error::{Error, Result},
    model::{User, UserId},
    store::{
        Credentials, DELETED_USER, Standing, Taken, TokenHash, UserStore, displaced_keys,
        same_name_in_any_case, unique_key,
    },
};

pub(super) const USER_COLS: &str = "id, username, created_at";

pub(super) fn user_row(row: &Row) -> rusqlite::Result<User> {
    Ok(User {
        id: id_at(row, 0)?,
        username: row.get(1)?,
        created_at: time_at(row, 2)?,
    })
}

pub(super) fn user_by_id(conn: &Connection, id: UserId) -> Result<Option<User>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1"))?
        .query_row([id.bytes()], user_row)
        .optional()?)
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, username: &str, password_hash: &str) -> Result<User> {
        let (username, hash) = (username.to_owned(), password_hash.to_owned());
        self.write(move |conn, ids| {
            let user = User {
                id: ids.next().into(),
                username,
                created_at: now(),
            };
            // The first account is the server's first admin, decided in the writer, so two
            // first registrations cannot both be.
            conn.prepare_cached(
                "INSERT INTO users (id, username, username_key, password_hash, created_at, is_admin)
                 VALUES (?1, ?2, ?3, ?4, ?5, NOT EXISTS (SELECT 1 FROM users))",
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
                     WHERE (username_key = ?1 OR (username_key > ?2 AND username_key < ?3))
                         AND deleted_at IS NULL"
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

    async fn credentials_by_id(&self, id: UserId) -> Result<Option<Credentials>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {USER_COLS}, password_hash FROM users
                     WHERE id = ?1 AND deleted_at IS NULL"
                ))?
                .query_row([id.bytes()], |row| {
                    Ok(Credentials {
                        user: user_row(row)?,
                        password_hash: row.get(3)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn set_password(&self, id: UserId, password_hash: &str) -> Result<()> {
        let hash = password_hash.to_owned();
        self.write(move |conn, _| {
            let changed = conn
                .prepare_cached("UPDATE users SET password_hash = ?2 WHERE id = ?1")?
                .execute(params![id.bytes(), hash])?;
            if changed == 0 {
                return Err(Error::not_found("user not found"));
            }
            Ok(())
        })
        .await
    }

    async fn has_users(&self) -> Result<bool> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM users)")?
                .query_row([], |r| r.get(0))?)
        })
        .await
    }

    async fn standing(&self, id: UserId) -> Result<Option<Standing>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT is_admin, suspended, deleted_at IS NOT NULL FROM users WHERE id = ?1",
                )?
                .query_row([id.bytes()], |r| {
                    Ok(Standing {
                        admin: r.get(0)?,
                        suspended: r.get(1)?,
                        deleted: r.get(2)?,
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn set_admin(&self, id: UserId, admin: bool) -> Result<()> {
        self.update_user(id, "UPDATE users SET is_admin = ?2 WHERE id = ?1", admin)
            .await
    }

    async fn set_suspended(&self, id: UserId, reason: Option<&str>) -> Result<()> {
        let reason = reason.map(str::to_owned);
        self.update_user(id, "UPDATE users SET suspended = ?2 WHERE id = ?1", reason)
            .await
    }

    async fn delete_user(&self, id: UserId, release_name_at: DateTime<Utc>) -> Result<()> {
        self.write(move |conn, _| {
            let at = now();
            let changed = conn
                .prepare_cached(
                    "UPDATE users SET username = ?2, password_hash = '', deleted_at = ?3,
                         name_released_at = ?4
                     WHERE id = ?1",
                )?
                .execute(params![
                    id.bytes(),
                    DELETED_USER,
                    at.timestamp_millis(),
                    release_name_at.timestamp_millis()
                ])?;
            if changed == 0 {
                return Err(Error::not_found("user not found"));
            }
            conn.prepare_cached("DELETE FROM memberships WHERE user_id = ?1")?
                .execute([id.bytes()])?;
            conn.prepare_cached("DELETE FROM room_invitations WHERE user_id = ?1")?
                .execute([id.bytes()])?;
            conn.prepare_cached("DELETE FROM sessions WHERE user_id = ?1")?
                .execute([id.bytes()])?;
            // Stored in milliseconds: compared in milliseconds.
            if release_name_at.timestamp_millis() <= at.timestamp_millis() {
                release(conn, release_name_at)?;
            }
            Ok(())
        })
        .await
    }

    async fn release_names(&self, now: DateTime<Utc>) -> Result<u64> {
        self.write(move |conn, _| release(conn, now)).await
    }

    async fn create_invite(&self, hash: TokenHash, by: Option<UserId>) -> Result<()> {
        self.write(move |conn, _| {
            conn.prepare_cached(
                "INSERT INTO invites (hash, created_by, created_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![
                hash,
                by.map(|id| id.bytes()),
                now().timestamp_millis()
            ])?;
            Ok(())
        })
        .await
    }

    async fn take_invite(&self, hash: TokenHash) -> Result<bool> {
        self.write(move |conn, _| {
            Ok(conn
                .prepare_cached(
                    "UPDATE invites SET used_at = ?2 WHERE hash = ?1 AND used_at IS NULL",
                )?
                .execute(params![hash, now().timestamp_millis()])?
                > 0)
        })
        .await
    }

    async fn return_invite(&self, hash: TokenHash) -> Result<()> {
        self.write(move |conn, _| {
            conn.prepare_cached("UPDATE invites SET used_at = NULL WHERE hash = ?1")?
                .execute([hash])?;
            Ok(())
        })
        .await
    }
}

impl SqliteStore {
    /// Runs an `UPDATE users … WHERE id = ?1` with one value as `?2`; `NotFound` when no row.
    async fn update_user<V: rusqlite::ToSql + Send + 'static>(
        &self,
        id: UserId,
        sql: &'static str,
        value: V,
    ) -> Result<()> {
        self.write(move |conn, _| {
            if conn
                .prepare_cached(sql)?
                .execute(params![id.bytes(), value])?
                == 0
            {
                return Err(Error::not_found("user not found"));
            }
            Ok(())
        })
        .await
    }
}

/// Frees the names of deleted accounts whose quarantine has ended: their key becomes one no
/// name can have (`#` is never in a username).
fn release(conn: &Connection, now: DateTime<Utc>) -> Result<u64> {
    let released = conn
        .prepare_cached(
            "UPDATE users SET username_key = '#deleted:' || hex(id), name_released_at = NULL
             WHERE name_released_at IS NOT NULL AND name_released_at <= ?1",
        )?
        .execute([now.timestamp_millis()])?;
    Ok(released as u64)
}
