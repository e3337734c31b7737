//! Each user's own log and the checkpoints of their `myEvents` streams.

use async_trait::async_trait;
use rusqlite::{OptionalExtension, params};

use super::{SqliteStore, id_at, now, time_at};
use crate::{
    error::{Error, Result},
    model::{CheckpointId, RoomEvent, RoomPositions, UserEvent, UserEventKind, UserId},
    store::{CHECKPOINTS_KEPT, InboxStore, USER_LOG_KEEP, decode_positions, encode_positions},
};

/// How often (in positions) an append also prunes the entries fallen out of the kept window.
const PRUNE_EVERY: u64 = 256;

fn event_row(row: &rusqlite::Row) -> rusqlite::Result<UserEvent> {
    let kind: String = row.get(2)?;
    let kind = serde_json::from_str(&kind).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into())
    })?;
    Ok(UserEvent {
        user_id: id_at(row, 0)?,
        pos: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
        kind,
        at: time_at(row, 3)?,
    })
}

#[async_trait]
impl InboxStore for SqliteStore {
    async fn append_user_event(&self, user: UserId, kind: UserEventKind) -> Result<UserEvent> {
        self.write_announcing(move |conn, _| {
            let head: i64 = conn
                .prepare_cached("SELECT coalesce(max(pos), 0) FROM user_events WHERE user_id = ?1")?
                .query_row([user.bytes()], |r| r.get(0))?;
            let event = UserEvent {
                user_id: user,
                pos: u64::try_from(head).unwrap_or(0) + 1,
                kind,
                at: now(),
            };
            let pos =
                i64::try_from(event.pos).map_err(|_| Error::internal("log position overflow"))?;
            let kind = serde_json::to_string(&event.kind).map_err(Error::internal)?;
            conn.prepare_cached(
                "INSERT INTO user_events (user_id, pos, kind, at) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![
                user.bytes(),
                pos,
                kind,
                event.at.timestamp_millis()
            ])?;
            if event.pos.is_multiple_of(PRUNE_EVERY) && event.pos > USER_LOG_KEEP {
                conn.prepare_cached("DELETE FROM user_events WHERE user_id = ?1 AND pos <= ?2")?
                    .execute(params![user.bytes(), pos - USER_LOG_KEEP as i64])?;
            }
            Ok((event.clone(), Some(RoomEvent::ForUser(event))))
        })
        .await
    }

    async fn user_events_after(
        &self,
        user: UserId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<UserEvent>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let events = conn
                .prepare_cached(
                    "SELECT user_id, pos, kind, at FROM user_events
                     WHERE user_id = ?1 AND pos > ?2 ORDER BY pos LIMIT ?3",
                )?
                .query_map(params![user.bytes(), after, limit], event_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(events)
        })
        .await
    }

    async fn user_log_bounds(&self, user: UserId) -> Result<(u64, u64)> {
        self.read(move |conn| {
            let (head, oldest): (i64, i64) = conn
                .prepare_cached(
                    "SELECT coalesce(max(pos), 0), coalesce(min(pos), 0) FROM user_events
                     WHERE user_id = ?1",
                )?
                .query_row([user.bytes()], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok((
                u64::try_from(head).unwrap_or(0),
                u64::try_from(oldest).unwrap_or(0),
            ))
        })
        .await
    }

    async fn save_checkpoint(&self, user: UserId, rooms: RoomPositions) -> Result<CheckpointId> {
        self.write(move |conn, ids| {
            let id = CheckpointId::from(ids.next());
            conn.prepare_cached(
                "INSERT INTO stream_checkpoints (id, user_id, rooms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![id.bytes(), user.bytes(), encode_positions(&rooms)])?;
            conn.prepare_cached(
                "DELETE FROM stream_checkpoints WHERE user_id = ?1 AND id < (
                     SELECT id FROM stream_checkpoints WHERE user_id = ?1
                     ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            )?
            .execute(params![user.bytes(), (CHECKPOINTS_KEPT - 1) as i64])?;
            Ok(id)
        })
        .await
    }

    async fn checkpoint(&self, user: UserId, id: CheckpointId) -> Result<Option<RoomPositions>> {
        self.read(move |conn| {
            let rooms: Option<Vec<u8>> = conn
                .prepare_cached(
                    "SELECT rooms FROM stream_checkpoints WHERE id = ?1 AND user_id = ?2",
                )?
                .query_row([id.bytes(), user.bytes()], |r| r.get(0))
                .optional()?;
            rooms
                .map(|bytes| {
                    decode_positions(&bytes)
                        .ok_or_else(|| Error::internal("a stored checkpoint is unreadable"))
                })
                .transpose()
        })
        .await
    }
}
