//! Messages: history pages, resumption, the room's change numbers, edits and tombstones.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, ffi, params};

use super::{SqliteStore, constraint, id_at, now, opt_time_at, page_by_id, time_at};
use crate::{
    error::{Error, Result},
    model::{Message, MessageId, Page, PageRequest, ReadState, RoomEvent, RoomId, UserId},
    store::{COUNT_CAP, Change, MessageStore, NewMessage, RoomHead, Written},
};

pub(super) const MESSAGE_COLS: &str = "id, room_id, sender_id, body, client_id, created_at, edited_at, deleted_at, seq, deleted_by, mentions";

/// Ids as one column: their 12 bytes each, one after another.
pub(super) fn ids_blob(ids: &[UserId]) -> Option<Vec<u8>> {
    (!ids.is_empty()).then(|| ids.iter().flat_map(|id| id.bytes()).collect())
}

fn ids_from_blob(blob: Option<Vec<u8>>) -> Vec<UserId> {
    blob.unwrap_or_default()
        .chunks_exact(12)
        .filter_map(|chunk| <[u8; 12]>::try_from(chunk).ok())
        .map(UserId::from_bytes)
        .collect()
}

/// Records whom a live message mentions, for counting (replacing what it mentioned before).
fn store_mentions(conn: &Connection, message: &Message) -> Result<()> {
    conn.prepare_cached("DELETE FROM mentions WHERE message_id = ?1")?
        .execute([message.id.bytes()])?;
    if message.is_deleted() {
        return Ok(());
    }
    let mut insert = conn.prepare_cached(
        "INSERT INTO mentions (user_id, room_id, message_id) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
    )?;
    for user in &message.mentions {
        insert.execute([user.bytes(), message.room_id.bytes(), message.id.bytes()])?;
    }
    Ok(())
}

/// A member's read state: their marker, and the live messages of others after it (one range of
/// `messages_by_room`), and the mentions of them after it (one range of `mentions`).
fn read_state_of(conn: &Connection, room: RoomId, user: UserId) -> Result<Option<ReadState>> {
    let Some(marker) = conn
        .prepare_cached("SELECT last_read FROM memberships WHERE room_id = ?1 AND user_id = ?2")?
        .query_row([room.bytes(), user.bytes()], |r| {
            r.get::<_, Option<[u8; 12]>>(0)
        })
        .optional()?
    else {
        return Ok(None);
    };
    let after = marker.unwrap_or([0; 12]);
    let cap = i64::try_from(COUNT_CAP).unwrap_or(i64::MAX);
    let unread: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM (SELECT 1 FROM messages
             WHERE room_id = ?1 AND id > ?2 AND sender_id != ?3 AND deleted_at IS NULL LIMIT ?4)",
        )?
        .query_row(params![room.bytes(), after, user.bytes(), cap], |r| {
            r.get(0)
        })?;
    let mentions: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM (SELECT 1 FROM mentions
             WHERE room_id = ?1 AND user_id = ?2 AND message_id > ?3 LIMIT ?4)",
        )?
        .query_row(params![room.bytes(), user.bytes(), after, cap], |r| {
            r.get(0)
        })?;
    Ok(Some(ReadState {
        last_read: marker.map(MessageId::from_bytes),
        unread: u64::try_from(unread).unwrap_or(0),
        mentions: u64::try_from(mentions).unwrap_or(0),
    }))
}

fn last_message_of(conn: &Connection, room: RoomId) -> Result<Option<Message>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLS} FROM messages
             WHERE room_id = ?1 AND deleted_at IS NULL ORDER BY id DESC LIMIT 1"
        ))?
        .query_row([room.bytes()], message_row)
        .optional()?)
}

/// A live (not deleted) message of one room: the filter every history read uses.
pub(super) const LIVE_IN_ROOM: &str = "room_id = ? AND deleted_at IS NULL AND ";

pub(super) fn message_row(row: &Row) -> rusqlite::Result<Message> {
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
        deleted_by: row.get::<_, Option<[u8; 12]>>(9)?.map(UserId::from_bytes),
        mentions: ids_from_blob(row.get(10)?),
    })
}

pub(super) fn sql_seq(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// The number the room's next change takes; `NotFound` for no such room.
pub(super) fn next_seq(conn: &Connection, room: RoomId) -> Result<u64> {
    let seq: Option<i64> = conn
        .prepare_cached("SELECT seq + 1 FROM rooms WHERE id = ?1")?
        .query_row([room.bytes()], |r| r.get(0))
        .optional()?;
    seq.and_then(|s| u64::try_from(s).ok())
        .ok_or_else(|| Error::not_found("room not found"))
}

/// Records that the room's change `seq` is taken (inside the same transaction as the change).
pub(super) fn take_seq(conn: &Connection, room: RoomId, seq: u64) -> Result<()> {
    conn.prepare_cached("UPDATE rooms SET seq = ?2 WHERE id = ?1")?
        .execute(params![room.bytes(), sql_seq(seq)])?;
    Ok(())
}

/// Sets a message's new state (`body`, and `edited_at` or `deleted_at`) with the room's next
/// change number, unless it is a tombstone already.
pub(super) fn change_message(
    conn: &Connection,
    id: MessageId,
    change: Change,
    body: &str,
    by: Option<UserId>,
    mentions: &[UserId],
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
            "UPDATE messages SET body = ?1, {} = ?2, seq = ?3, deleted_by = ?5, mentions = ?6
             WHERE id = ?4 RETURNING {MESSAGE_COLS}",
            change.stamp()
        ))?
        .query_row(
            params![
                body,
                now().timestamp_millis(),
                sql_seq(seq),
                id.bytes(),
                by.map(|b| b.bytes()),
                ids_blob(mentions)
            ],
            message_row,
        )?;
    take_seq(conn, room, seq)?;
    store_mentions(conn, &changed)?;
    Ok(Some(changed))
}

pub(super) fn message_by_id(conn: &Connection, id: MessageId) -> Result<Option<Message>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {MESSAGE_COLS} FROM messages WHERE id = ?1"
        ))?
        .query_row([id.bytes()], message_row)
        .optional()?)
}

#[async_trait]
impl MessageStore for SqliteStore {
    async fn insert_message(&self, message: NewMessage) -> Result<Written<Message>> {
        self.write_announcing(move |conn, ids| {
            let seq = next_seq(conn, message.room_id)?;
            let stored = Message {
                id: ids.next().into(),
                room_id: message.room_id,
                sender_id: message.sender_id,
                body: message.body,
                client_id: message.client_id,
                created_at: now(),
                edited_at: None,
                deleted_at: None,
                deleted_by: None,
                mentions: message.mentions,
                seq,
            };
            // The partial unique index decides idempotency: a repeated clientId inserts nothing.
            let inserted = conn
                .prepare_cached(
                    "INSERT INTO messages (id, room_id, sender_id, body, client_id, created_at, seq,
                                           mentions)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
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
                    sql_seq(seq),
                    ids_blob(&stored.mentions)
                ])
                .map_err(|e| match constraint(&e) {
                    Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => Error::not_found("room not found"),
                    _ => e.into(),
                })?;
            if inserted == 1 {
                take_seq(conn, stored.room_id, seq)?;
                store_mentions(conn, &stored)?;
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
                last_message: last.map(MessageId::from_bytes),
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

    async fn edit_message(
        &self,
        id: MessageId,
        body: &str,
        mentions: &[UserId],
    ) -> Result<Message> {
        let (body, mentions) = (body.to_owned(), mentions.to_vec());
        self.write_announcing(move |conn, _| {
            let edited = change_message(conn, id, Change::Edit, &body, None, &mentions)?
                .ok_or_else(|| Error::not_found("message not found"))?;
            let event = RoomEvent::MessageEdited(edited.clone());
            Ok((edited, Some(event)))
        })
        .await
    }

    async fn messages_by(
        &self,
        user: UserId,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<Message>> {
        self.read(move |conn| {
            let after = after.map(|id| id.bytes()).unwrap_or([0; 12]);
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {MESSAGE_COLS} FROM messages
                     WHERE sender_id = ?1 AND id > ?2 AND deleted_at IS NULL
                     ORDER BY id LIMIT ?3"
                ))?
                .query_map(
                    params![
                        user.bytes(),
                        after,
                        i64::try_from(limit).unwrap_or(i64::MAX)
                    ],
                    message_row,
                )?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn delete_message(&self, id: MessageId, by: Option<UserId>) -> Result<Written<Message>> {
        self.write_announcing(move |conn, _| {
            let deleted = change_message(conn, id, Change::Delete, "", by, &[])?;
            match deleted {
                Some(message) => {
                    let event = RoomEvent::MessageDeleted {
                        room_id: message.room_id,
                        message_id: message.id,
                        seq: message.seq,
                        deleted_by: message.deleted_by,
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

    async fn read_state(&self, room: RoomId, user: UserId) -> Result<Option<ReadState>> {
        self.read(move |conn| read_state_of(conn, room, user)).await
    }

    async fn mark_read(
        &self,
        room: RoomId,
        user: UserId,
        message: MessageId,
    ) -> Result<Written<ReadState>> {
        // Only the marker is written; the counts are read after, off the writer.
        let moved = self
            .write(move |conn, _| {
                Ok(conn
                    .prepare_cached(
                        "UPDATE memberships SET last_read = ?3
                         WHERE room_id = ?1 AND user_id = ?2
                           AND (last_read IS NULL OR last_read < ?3)
                           AND EXISTS (SELECT 1 FROM messages WHERE id = ?3 AND room_id = ?1)",
                    )?
                    .execute([room.bytes(), user.bytes(), message.bytes()])?)
            })
            .await?;
        let state = self
            .read_state(room, user)
            .await?
            .ok_or_else(|| Error::not_found("not a member of this room"))?;
        Ok(Written {
            value: state,
            changed: moved == 1,
        })
    }

    async fn last_message(&self, room: RoomId) -> Result<Option<Message>> {
        self.read(move |conn| last_message_of(conn, room)).await
    }

    async fn room_summaries(
        &self,
        user: UserId,
        rooms: Vec<RoomId>,
    ) -> Result<Vec<(Option<ReadState>, Option<Message>)>> {
        // One reader, one snapshot, for the whole list.
        self.read(move |conn| {
            rooms
                .into_iter()
                .map(|room| {
                    Ok((
                        read_state_of(conn, room, user)?,
                        last_message_of(conn, room)?,
                    ))
                })
                .collect()
        })
        .await
    }
}
