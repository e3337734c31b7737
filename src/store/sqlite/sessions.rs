//! Sessions: sign-ins, their current refresh token's hash and the last ones spent.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{SqliteStore, id_at, now, opt_time_at, time_at};
use crate::{
    error::{Error, Result},
    model::{Session, SessionId, UserId},
    store::{NewSession, Rotation, SPENT_REMEMBERED, SessionStore, TokenHash, Written},
};

const SESSION_COLS: &str =
    "id, user_id, created_at, last_used_at, expires_at, user_agent, revoked_at";

fn session_row(row: &Row) -> rusqlite::Result<Session> {
    Ok(Session {
        id: id_at(row, 0)?,
        user_id: id_at(row, 1)?,
        created_at: time_at(row, 2)?,
        last_used_at: time_at(row, 3)?,
        expires_at: time_at(row, 4)?,
        user_agent: row.get(5)?,
        revoked_at: opt_time_at(row, 6)?,
    })
}

fn session_by_id(conn: &Connection, id: SessionId) -> Result<Option<Session>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {SESSION_COLS} FROM sessions WHERE id = ?1"
        ))?
        .query_row([id.bytes()], session_row)
        .optional()?)
}

fn found(session: Option<Session>) -> Result<Session> {
    session.ok_or_else(|| Error::internal("a session vanished inside its own transaction"))
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(&self, session: NewSession) -> Result<Session> {
        self.write(move |conn, ids| {
            let created = now();
            let stored = Session {
                id: ids.next().into(),
                user_id: session.user_id,
                created_at: created,
                last_used_at: created,
                // Stored in milliseconds: returned as a later read will return it.
                expires_at: DateTime::from_timestamp_millis(session.expires_at.timestamp_millis())
                    .unwrap_or(session.expires_at),
                user_agent: session.user_agent,
                revoked_at: None,
            };
            conn.prepare_cached(
                "INSERT INTO sessions
                     (id, user_id, refresh_hash, created_at, last_used_at, expires_at, user_agent)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6)",
            )?
            .execute(params![
                stored.id.bytes(),
                stored.user_id.bytes(),
                session.refresh_hash,
                created.timestamp_millis(),
                stored.expires_at.timestamp_millis(),
                stored.user_agent,
            ])?;
            Ok(stored)
        })
        .await
    }

    async fn session(&self, id: SessionId) -> Result<Option<Session>> {
        self.read(move |conn| session_by_id(conn, id)).await
    }

    async fn rotate_session(
        &self,
        id: SessionId,
        presented: TokenHash,
        next: TokenHash,
        expires_at: DateTime<Utc>,
    ) -> Result<Rotation> {
        self.write(move |conn, _| {
            let at = now();
            let row: Option<(Vec<u8>, Vec<u8>, i64, Option<i64>)> = conn
                .prepare_cached(
                    "SELECT refresh_hash, spent, expires_at, revoked_at FROM sessions WHERE id = ?1",
                )?
                .query_row([id.bytes()], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            let Some((current, spent, expires, revoked)) = row else {
                return Ok(Rotation::Refused);
            };
            if revoked.is_some() || expires <= at.timestamp_millis() {
                return Ok(Rotation::Refused);
            }
            if current == presented {
                // The presented token joins the spent ones, the oldest falling off.
                let mut remembered = presented.to_vec();
                remembered.extend(spent.iter().take((SPENT_REMEMBERED - 1) * 32));
                conn.prepare_cached(
                    "UPDATE sessions SET refresh_hash = ?2, spent = ?3, last_used_at = ?4,
                         expires_at = ?5
                     WHERE id = ?1",
                )?
                .execute(params![
                    id.bytes(),
                    next,
                    remembered,
                    at.timestamp_millis(),
                    expires_at.timestamp_millis()
                ])?;
                return Ok(Rotation::Rotated(found(session_by_id(conn, id)?)?));
            }
            if spent.chunks_exact(32).any(|hash| hash == presented) {
                conn.prepare_cached("UPDATE sessions SET revoked_at = ?2 WHERE id = ?1")?
                    .execute(params![id.bytes(), at.timestamp_millis()])?;
                return Ok(Rotation::Reused(found(session_by_id(conn, id)?)?));
            }
            Ok(Rotation::Refused)
        })
        .await
    }

    async fn revoke_session(&self, id: SessionId) -> Result<Written<Session>> {
        self.write(move |conn, _| {
            let changed = conn
                .prepare_cached(
                    "UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                )?
                .execute(params![id.bytes(), now().timestamp_millis()])?
                > 0;
            let session =
                session_by_id(conn, id)?.ok_or_else(|| Error::not_found("session not found"))?;
            Ok(Written {
                value: session,
                changed,
            })
        })
        .await
    }

    async fn revoke_sessions_of(
        &self,
        user: UserId,
        except: Option<SessionId>,
    ) -> Result<Vec<SessionId>> {
        self.write(move |conn, _| {
            let except = except.map(|id| id.bytes().to_vec()).unwrap_or_default();
            let revoked = conn
                .prepare_cached(
                    "UPDATE sessions SET revoked_at = ?3
                     WHERE user_id = ?1 AND id != ?2 AND revoked_at IS NULL
                     RETURNING id",
                )?
                .query_map(
                    params![user.bytes(), except, now().timestamp_millis()],
                    |r| id_at(r, 0),
                )?
                .collect::<rusqlite::Result<Vec<SessionId>>>()?;
            Ok(revoked)
        })
        .await
    }

    async fn sessions_of(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Session>> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {SESSION_COLS} FROM sessions
                     WHERE user_id = ?1 AND revoked_at IS NULL AND expires_at > ?2
                     ORDER BY last_used_at DESC, id DESC LIMIT ?3"
                ))?
                .query_map(
                    params![
                        user.bytes(),
                        now.timestamp_millis(),
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    session_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn purge_sessions(&self, before: DateTime<Utc>) -> Result<u64> {
        self.write(move |conn, _| {
            let at = before.timestamp_millis();
            let purged = conn
                .prepare_cached("DELETE FROM sessions WHERE expires_at < ?1 OR revoked_at < ?1")?
                .execute([at])?;
            Ok(purged as u64)
        })
        .await
    }
}
