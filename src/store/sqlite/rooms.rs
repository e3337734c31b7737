//! Rooms and memberships: the directory, who is in which room, and in what order they joined.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, ffi, params};

use super::{
    SqliteStore, constraint, id_at, now, page_by_id, time_at, users::user_by_id, users::user_row,
};
use crate::{
    error::{Error, Result},
    model::{Page, PageRequest, Room, RoomEvent, RoomId, User, UserId},
    store::{RoomStore, Taken, Written, keyset_page, unique_key},
};

pub(super) const ROOM_COLS: &str = "id, name, created_by, created_at";

pub(super) fn room_row(row: &Row) -> rusqlite::Result<Room> {
    Ok(Room {
        id: id_at(row, 0)?,
        name: row.get(1)?,
        created_by: id_at(row, 2)?,
        created_at: time_at(row, 3)?,
    })
}

/// The result of a membership write, announcing `event` with the user when it changed anything.
pub(super) fn membership_change(
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

#[async_trait]
impl RoomStore for SqliteStore {
    async fn create_room(&self, name: &str, creator: UserId) -> Result<Room> {
        let name = name.to_owned();
        self.write(move |conn, ids| {
            let room = Room {
                id: ids.next().into(),
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

    async fn delete_room(&self, room: RoomId) -> Result<Vec<UserId>> {
        self.write(move |conn, _| {
            let left = conn
                .prepare_cached("DELETE FROM memberships WHERE room_id = ?1 RETURNING user_id")?
                .query_map([room.bytes()], |r| id_at(r, 0))?
                .collect::<rusqlite::Result<Vec<UserId>>>()?;
            conn.prepare_cached("DELETE FROM messages WHERE room_id = ?1")?
                .execute([room.bytes()])?;
            let deleted = conn
                .prepare_cached("DELETE FROM rooms WHERE id = ?1")?
                .execute([room.bytes()])?;
            if deleted == 0 {
                return Err(Error::not_found("room not found"));
            }
            Ok(left)
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
}
