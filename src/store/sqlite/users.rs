//! Users: accounts, found by id or by name (in any letter case, never by a look-alike).

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, ffi, params};

use super::{SqliteStore, constraint, id_at, now, time_at};
use crate::{
    error::{Error, Result},
    model::{User, UserId},
    store::{Credentials, Taken, UserStore, displaced_keys, same_name_in_any_case, unique_key},
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

    async fn credentials_by_id(&self, id: UserId) -> Result<Option<Credentials>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {USER_COLS}, password_hash FROM users WHERE id = ?1"
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
}
