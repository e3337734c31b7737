//! Rooms and memberships: the directory, who is in which room in what role, and in what order
//! they joined; bans, invitations and the moderation log.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, ffi, params};

use super::{
    SqliteStore, constraint, id_at, now, page_by_id, time_at, users::user_by_id, users::user_row,
};
use crate::{
    error::{Error, Result},
    model::{
        Invitation, Membership, ModerationAction, ModerationEntry, ModerationId, Page, PageRequest,
        Room, RoomEvent, RoomId, RoomRole, RoomVisibility, User, UserId,
    },
    store::{
        Departure, NewModerationEntry, NewRoom, RoomStore, RoomUpdate, Taken, Written, direct_key,
        direct_pair, keyset_page, room_key,
    },
};

pub(super) const ROOM_COLS: &str =
    "id, name, created_by, created_at, visibility, topic, direct_a, direct_b";

/// [`ROOM_COLS`] of the room aliased `r`.
const R_ROOM_COLS: &str =
    "r.id, r.name, r.created_by, r.created_at, r.visibility, r.topic, r.direct_a, r.direct_b";

pub(super) fn room_row(row: &Row) -> rusqlite::Result<Room> {
    let direct_a: Option<UserId> = row.get::<_, Option<[u8; 12]>>(6)?.map(UserId::from_bytes);
    let direct_b: Option<UserId> = row.get::<_, Option<[u8; 12]>>(7)?.map(UserId::from_bytes);
    Ok(Room {
        id: id_at(row, 0)?,
        name: row.get(1)?,
        created_by: id_at(row, 2)?,
        created_at: time_at(row, 3)?,
        visibility: RoomVisibility::parse(&row.get::<_, String>(4)?)
            .unwrap_or(RoomVisibility::Private),
        topic: row.get(5)?,
        direct: direct_a.zip(direct_b).map(|(a, b)| [a, b]),
    })
}

/// A membership, from the columns `room_id, user id, username, user created_at, role,
/// joined_at`.
const MEMBERSHIP_SELECT: &str =
    "SELECT m.room_id, u.id, u.username, u.created_at, m.role, m.joined_at
     FROM memberships m JOIN users u ON u.id = m.user_id";

fn membership_row(row: &Row) -> rusqlite::Result<Membership> {
    Ok(Membership {
        room_id: id_at(row, 0)?,
        user: User {
            id: id_at(row, 1)?,
            username: row.get(2)?,
            created_at: time_at(row, 3)?,
        },
        role: RoomRole::parse(&row.get::<_, String>(4)?).unwrap_or(RoomRole::Member),
        joined_at: time_at(row, 5)?,
    })
}

fn membership_of(conn: &Connection, room: RoomId, user: UserId) -> Result<Option<Membership>> {
    Ok(conn
        .prepare_cached(&format!(
            "{MEMBERSHIP_SELECT} WHERE m.room_id = ?1 AND m.user_id = ?2"
        ))?
        .query_row([room.bytes(), user.bytes()], membership_row)
        .optional()?)
}

fn room_by_id(conn: &Connection, id: RoomId) -> Result<Option<Room>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {ROOM_COLS} FROM rooms WHERE id = ?1"))?
        .query_row([id.bytes()], room_row)
        .optional()?)
}

fn insert_membership(
    conn: &Connection,
    room: RoomId,
    user: UserId,
    role: RoomRole,
) -> Result<bool> {
    let inserted = conn
        .prepare_cached(
            "INSERT INTO memberships (room_id, user_id, joined_at, role, last_read)
             VALUES (?1, ?2, ?3, ?4, (SELECT max(id) FROM messages WHERE room_id = ?1))
             ON CONFLICT (room_id, user_id) DO NOTHING",
        )?
        .execute(params![
            room.bytes(),
            user.bytes(),
            now().timestamp_millis(),
            role.as_str()
        ])
        .map_err(|e| match constraint(&e) {
            Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => Error::not_found("room not found"),
            _ => e.into(),
        })?;
    Ok(inserted == 1)
}

fn insert_room(conn: &Connection, room: &Room, key: &str) -> Result<()> {
    let [direct_a, direct_b] = match room.direct {
        Some([a, b]) => [Some(a.bytes()), Some(b.bytes())],
        None => [None, None],
    };
    conn.prepare_cached(
        "INSERT INTO rooms (id, name, name_key, created_by, created_at, visibility, topic,
                            direct_a, direct_b)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        room.id.bytes(),
        room.name,
        key,
        room.created_by.bytes(),
        room.created_at.timestamp_millis(),
        room.visibility.as_str(),
        room.topic,
        direct_a,
        direct_b,
    ])
    .map_err(|e| match constraint(&e) {
        Some(ffi::SQLITE_CONSTRAINT_UNIQUE) => Error::from(Taken::RoomName),
        Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => Error::not_found("user not found"),
        _ => e.into(),
    })?;
    Ok(())
}

/// When `room` has members and no owner, makes its longest-standing admin (else member) the
/// owner, and returns the event that says so.
fn hand_over_ownership(conn: &Connection, room: RoomId) -> Result<Option<RoomEvent>> {
    let heir: Option<UserId> = conn
        .prepare_cached(
            "SELECT user_id FROM memberships
             WHERE room_id = ?1
               AND NOT EXISTS (SELECT 1 FROM memberships WHERE room_id = ?1 AND role = 'owner')
               AND NOT EXISTS (SELECT 1 FROM rooms WHERE id = ?1 AND direct_a IS NOT NULL)
             ORDER BY role = 'admin' DESC, rowid LIMIT 1",
        )?
        .query_row([room.bytes()], |r| id_at(r, 0))
        .optional()?;
    let Some(heir) = heir else {
        return Ok(None);
    };
    conn.prepare_cached(
        "UPDATE memberships SET role = 'owner' WHERE room_id = ?1 AND user_id = ?2",
    )?
    .execute([room.bytes(), heir.bytes()])?;
    Ok(
        user_by_id(conn, heir)?.map(|user| RoomEvent::MemberRoleChanged {
            room_id: room,
            user,
            role: RoomRole::Owner,
        }),
    )
}

fn remove_invitation(conn: &Connection, room: RoomId, user: UserId) -> Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM room_invitations WHERE room_id = ?1 AND user_id = ?2")?
        .execute([room.bytes(), user.bytes()])?
        == 1)
}

/// Ends a membership; the events of the departure (and of an ownership handed over).
fn end_membership(
    conn: &Connection,
    room: RoomId,
    user: UserId,
    event: impl FnOnce(User) -> Result<RoomEvent>,
) -> Result<(bool, Vec<RoomEvent>)> {
    let removed = conn
        .prepare_cached("DELETE FROM memberships WHERE room_id = ?1 AND user_id = ?2")?
        .execute([room.bytes(), user.bytes()])?;
    // An invitation that raced the membership goes with it: nobody comes back without a new
    // one.
    remove_invitation(conn, room, user)?;
    if removed == 0 {
        return Ok((false, Vec::new()));
    }
    let mut events = Vec::new();
    if let Some(user) = user_by_id(conn, user)? {
        events.push(event(user)?);
    }
    events.extend(hand_over_ownership(conn, room)?);
    Ok((true, events))
}

fn invitation_row(row: &Row) -> rusqlite::Result<Invitation> {
    Ok(Invitation {
        room_id: id_at(row, 0)?,
        invitee: id_at(row, 1)?,
        inviter: id_at(row, 2)?,
        created_at: time_at(row, 3)?,
    })
}

const INVITATION_COLS: &str = "room_id, user_id, invited_by, created_at";

fn invitation_of(conn: &Connection, room: RoomId, user: UserId) -> Result<Option<Invitation>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {INVITATION_COLS} FROM room_invitations WHERE room_id = ?1 AND user_id = ?2"
        ))?
        .query_row([room.bytes(), user.bytes()], invitation_row)
        .optional()?)
}

const ENTRY_COLS: &str = "id, room_id, action, actor, target, message, reason, created_at";

fn entry_row(row: &Row) -> rusqlite::Result<ModerationEntry> {
    let opt_id = |i: usize| -> rusqlite::Result<Option<[u8; 12]>> { row.get(i) };
    Ok(ModerationEntry {
        id: id_at(row, 0)?,
        room_id: id_at(row, 1)?,
        action: ModerationAction::parse(&row.get::<_, String>(2)?)
            .unwrap_or(ModerationAction::RoomUpdate),
        actor: id_at(row, 3)?,
        target: opt_id(4)?.map(UserId::from_bytes),
        message: opt_id(5)?.map(crate::model::MessageId::from_bytes),
        reason: row.get(6)?,
        created_at: time_at(row, 7)?,
    })
}

#[async_trait]
impl RoomStore for SqliteStore {
    async fn create_room(&self, new: NewRoom) -> Result<Room> {
        self.write(move |conn, ids| {
            let room = Room {
                id: ids.next().into(),
                name: new.name,
                created_by: new.creator,
                created_at: now(),
                visibility: new.visibility,
                topic: new.topic,
                direct: None,
            };
            insert_room(conn, &room, &room_key(&room))?;
            insert_membership(conn, room.id, new.creator, RoomRole::Owner)?;
            Ok(room)
        })
        .await
    }

    async fn direct_room(&self, creator: UserId, other: UserId) -> Result<Written<Room>> {
        self.write_announcing_all(move |conn, ids| {
            let pair = direct_pair(creator, other);
            let key = direct_key(pair);
            let found = conn
                .prepare_cached(&format!(
                    "SELECT {ROOM_COLS} FROM rooms WHERE name_key = ?1"
                ))?
                .query_row([&key], room_row)
                .optional()?;
            if let Some(room) = found {
                return Ok((
                    Written {
                        value: room,
                        changed: false,
                    },
                    Vec::new(),
                ));
            }
            let room = Room {
                id: ids.next().into(),
                name: String::new(),
                created_by: creator,
                created_at: now(),
                visibility: RoomVisibility::Private,
                topic: None,
                direct: Some(pair),
            };
            insert_room(conn, &room, &key)?;
            let mut events = Vec::new();
            for user in [creator, other] {
                insert_membership(conn, room.id, user, RoomRole::Member)?;
                if let Some(user) = user_by_id(conn, user)? {
                    events.push(RoomEvent::MemberJoined {
                        room_id: room.id,
                        user,
                    });
                }
            }
            Ok((
                Written {
                    value: room,
                    changed: true,
                },
                events,
            ))
        })
        .await
    }

    async fn update_room(&self, id: RoomId, update: RoomUpdate) -> Result<Written<Room>> {
        self.write_announcing(move |conn, _| {
            let before = room_by_id(conn, id)?.ok_or_else(|| Error::not_found("room not found"))?;
            let after = update.applied_to(&before);
            if after == before {
                return Ok((
                    Written {
                        value: after,
                        changed: false,
                    },
                    None,
                ));
            }
            // The key changes with the name or the visibility only: a room whose key an upgrade
            // set aside (see `schema::recompute_name_keys`) keeps it while its topic changes.
            let key = (after.name != before.name || after.visibility != before.visibility)
                .then(|| room_key(&after));
            conn.prepare_cached(
                "UPDATE rooms SET name = ?2, name_key = coalesce(?3, name_key), topic = ?4,
                     visibility = ?5
                 WHERE id = ?1",
            )?
            .execute(params![
                id.bytes(),
                after.name,
                key,
                after.topic,
                after.visibility.as_str()
            ])
            .map_err(|e| match constraint(&e) {
                Some(ffi::SQLITE_CONSTRAINT_UNIQUE) => Error::from(Taken::RoomName),
                _ => e.into(),
            })?;
            Ok((
                Written {
                    value: after.clone(),
                    changed: true,
                },
                Some(RoomEvent::RoomUpdated(after)),
            ))
        })
        .await
    }

    async fn room(&self, id: RoomId) -> Result<Option<Room>> {
        self.read(move |conn| room_by_id(conn, id)).await
    }

    async fn rooms(&self, page: PageRequest) -> Result<Page<Room>> {
        self.read(move |conn| {
            page_by_id(
                conn,
                ROOM_COLS,
                "rooms",
                "visibility = 'public' AND ",
                None,
                page,
                room_row,
            )
        })
        .await
    }

    async fn add_member(&self, room: RoomId, user: UserId, role: RoomRole) -> Result<Written<()>> {
        self.write_announcing(move |conn, _| {
            let banned: bool = conn
                .prepare_cached(
                    "SELECT EXISTS(SELECT 1 FROM bans WHERE room_id = ?1 AND user_id = ?2)",
                )?
                .query_row([room.bytes(), user.bytes()], |r| r.get(0))?;
            if banned {
                return Err(Error::forbidden("you are banned from this room"));
            }
            let changed = insert_membership(conn, room, user, role)?;
            remove_invitation(conn, room, user)?;
            let announce = match changed {
                true => user_by_id(conn, user)?.map(|user| RoomEvent::MemberJoined {
                    room_id: room,
                    user,
                }),
                false => None,
            };
            Ok((Written { value: (), changed }, announce))
        })
        .await
    }

    async fn remove_member(
        &self,
        room: RoomId,
        user: UserId,
        departure: Departure,
    ) -> Result<Written<()>> {
        self.write_announcing_all(move |conn, _| {
            let (changed, events) = end_membership(conn, room, user, |user| {
                Ok(match departure {
                    Departure::Left => RoomEvent::MemberLeft {
                        room_id: room,
                        user,
                    },
                    Departure::Kicked { by } => RoomEvent::MemberKicked {
                        room_id: room,
                        user,
                        by: user_by_id(conn, by)?
                            .ok_or_else(|| Error::not_found("user not found"))?,
                    },
                })
            })?;
            Ok((Written { value: (), changed }, events))
        })
        .await
    }

    async fn delete_room(&self, room: RoomId) -> Result<Vec<UserId>> {
        self.write(move |conn, _| {
            let left = conn
                .prepare_cached("DELETE FROM memberships WHERE room_id = ?1 RETURNING user_id")?
                .query_map([room.bytes()], |r| id_at(r, 0))?
                .collect::<rusqlite::Result<Vec<UserId>>>()?;
            for table in [
                "messages",
                "mentions",
                "bans",
                "room_invitations",
                "moderation_log",
            ] {
                conn.prepare_cached(&format!("DELETE FROM {table} WHERE room_id = ?1"))?
                    .execute([room.bytes()])?;
            }
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

    async fn membership(&self, room: RoomId, user: UserId) -> Result<Option<Membership>> {
        self.read(move |conn| membership_of(conn, room, user)).await
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

    async fn memberships(
        &self,
        room: RoomId,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<Vec<Membership>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            // Join order is the rowid; a cursor that is no longer a member starts over.
            let from: i64 = match after {
                Some(after) => conn
                    .prepare_cached(
                        "SELECT rowid FROM memberships WHERE room_id = ?1 AND user_id = ?2",
                    )?
                    .query_row([room.bytes(), after.bytes()], |r| r.get(0))
                    .optional()?
                    .unwrap_or(0),
                None => 0,
            };
            Ok(conn
                .prepare_cached(&format!(
                    "{MEMBERSHIP_SELECT} WHERE m.room_id = ?1 AND m.rowid > ?2
                     ORDER BY m.rowid LIMIT ?3"
                ))?
                .query_map(params![room.bytes(), from, limit], membership_row)?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn set_role(
        &self,
        room: RoomId,
        user: UserId,
        role: RoomRole,
        expect: Option<RoomRole>,
    ) -> Result<Written<Membership>> {
        self.write_announcing(move |conn, _| {
            let mut membership = membership_of(conn, room, user)?
                .ok_or_else(|| Error::not_found("not a member of this room"))?;
            if expect.is_some_and(|expected| expected != membership.role) {
                return Err(Error::Conflict {
                    field: "role",
                    message: "their role changed meanwhile; look again".into(),
                });
            }
            if membership.role == role {
                return Ok((
                    Written {
                        value: membership,
                        changed: false,
                    },
                    None,
                ));
            }
            conn.prepare_cached(
                "UPDATE memberships SET role = ?3 WHERE room_id = ?1 AND user_id = ?2",
            )?
            .execute(params![room.bytes(), user.bytes(), role.as_str()])?;
            membership.role = role;
            let event = RoomEvent::MemberRoleChanged {
                room_id: room,
                user: membership.user.clone(),
                role,
            };
            Ok((
                Written {
                    value: membership,
                    changed: true,
                },
                Some(event),
            ))
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
                    format!(
                        "SELECT {R_ROOM_COLS} FROM memberships m
                         JOIN rooms r ON r.id = m.room_id
                         WHERE m.user_id = ?1 AND m.room_id > ?2 ORDER BY m.room_id ASC LIMIT ?3"
                    ),
                    after.map_or([0x00; 12], |a| a.bytes()),
                    first,
                    after.map(|_| {
                        "SELECT EXISTS(SELECT 1 FROM memberships WHERE user_id = ?1 AND room_id <= ?2)"
                    }),
                ),
                PageRequest::Backward { before, last } => (
                    format!(
                        "SELECT {R_ROOM_COLS} FROM memberships m
                         JOIN rooms r ON r.id = m.room_id
                         WHERE m.user_id = ?1 AND m.room_id < ?2 ORDER BY m.room_id DESC LIMIT ?3"
                    ),
                    before.map_or([0xff; 12], |b| b.bytes()),
                    last,
                    before.map(|_| {
                        "SELECT EXISTS(SELECT 1 FROM memberships WHERE user_id = ?1 AND room_id >= ?2)"
                    }),
                ),
            };
            let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
            let items = conn
                .prepare_cached(&sql)?
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

    async fn ban(
        &self,
        room: RoomId,
        user: UserId,
        by: UserId,
        reason: Option<&str>,
    ) -> Result<Written<()>> {
        let reason = reason.map(str::to_owned);
        self.write_announcing_all(move |conn, _| {
            let banned = conn
                .prepare_cached(
                    "INSERT INTO bans (room_id, user_id, banned_by, reason, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (room_id, user_id) DO NOTHING",
                )?
                .execute(params![
                    room.bytes(),
                    user.bytes(),
                    by.bytes(),
                    reason,
                    now().timestamp_millis()
                ])
                .map_err(|e| match constraint(&e) {
                    Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => {
                        Error::not_found("no such room or user")
                    }
                    _ => e.into(),
                })?;
            remove_invitation(conn, room, user)?;
            let (_, events) = end_membership(conn, room, user, |user| {
                Ok(RoomEvent::MemberBanned {
                    room_id: room,
                    user,
                    by: user_by_id(conn, by)?.ok_or_else(|| Error::not_found("user not found"))?,
                    reason: reason.clone(),
                })
            })?;
            Ok((
                Written {
                    value: (),
                    changed: banned == 1,
                },
                events,
            ))
        })
        .await
    }

    async fn unban(&self, room: RoomId, user: UserId) -> Result<Written<()>> {
        self.write(move |conn, _| {
            let removed = conn
                .prepare_cached("DELETE FROM bans WHERE room_id = ?1 AND user_id = ?2")?
                .execute([room.bytes(), user.bytes()])?;
            Ok(Written {
                value: (),
                changed: removed == 1,
            })
        })
        .await
    }

    async fn is_banned(&self, room: RoomId, user: UserId) -> Result<bool> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT EXISTS(SELECT 1 FROM bans WHERE room_id = ?1 AND user_id = ?2)",
                )?
                .query_row([room.bytes(), user.bytes()], |r| r.get(0))?)
        })
        .await
    }

    async fn invite(&self, room: RoomId, user: UserId, by: UserId) -> Result<Written<Invitation>> {
        self.write(move |conn, _| {
            let banned: bool = conn
                .prepare_cached(
                    "SELECT EXISTS(SELECT 1 FROM bans WHERE room_id = ?1 AND user_id = ?2)",
                )?
                .query_row([room.bytes(), user.bytes()], |r| r.get(0))?;
            if banned {
                return Err(Error::forbidden(
                    "they are banned from this room: unban them first",
                ));
            }
            let invitation = Invitation {
                room_id: room,
                invitee: user,
                inviter: by,
                created_at: now(),
            };
            let inserted = conn
                .prepare_cached(&format!(
                    "INSERT INTO room_invitations ({INVITATION_COLS}) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (room_id, user_id) DO NOTHING"
                ))?
                .execute(params![
                    room.bytes(),
                    user.bytes(),
                    by.bytes(),
                    invitation.created_at.timestamp_millis()
                ])
                .map_err(|e| match constraint(&e) {
                    Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => {
                        Error::not_found("no such room or user")
                    }
                    _ => e.into(),
                })?;
            if inserted == 1 {
                return Ok(Written {
                    value: invitation,
                    changed: true,
                });
            }
            let first = invitation_of(conn, room, user)?
                .ok_or_else(|| Error::internal("an invitation vanished while read"))?;
            Ok(Written {
                value: first,
                changed: false,
            })
        })
        .await
    }

    async fn invitation(&self, room: RoomId, user: UserId) -> Result<Option<Invitation>> {
        self.read(move |conn| invitation_of(conn, room, user)).await
    }

    async fn invitations_of(&self, user: UserId, limit: usize) -> Result<Vec<Invitation>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {INVITATION_COLS} FROM room_invitations WHERE user_id = ?1
                     ORDER BY created_at DESC, room_id DESC LIMIT ?2"
                ))?
                .query_map(params![user.bytes(), limit], invitation_row)?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }

    async fn remove_invitation(&self, room: RoomId, user: UserId) -> Result<bool> {
        self.write(move |conn, _| remove_invitation(conn, room, user))
            .await
    }

    async fn invitation_count(&self, user: UserId) -> Result<u64> {
        self.read(move |conn| {
            Ok(conn
                .prepare_cached("SELECT count(*) FROM room_invitations WHERE user_id = ?1")?
                .query_row([user.bytes()], |r| r.get::<_, i64>(0))?)
        })
        .await
        .map(|n| u64::try_from(n).unwrap_or(0))
    }

    async fn log_moderation(&self, entry: NewModerationEntry) -> Result<ModerationEntry> {
        self.write(move |conn, ids| {
            let entry = ModerationEntry {
                id: ModerationId::from(ids.next()),
                room_id: entry.room_id,
                action: entry.action,
                actor: entry.actor,
                target: entry.target,
                message: entry.message,
                reason: entry.reason,
                created_at: now(),
            };
            conn.prepare_cached(&format!(
                "INSERT INTO moderation_log ({ENTRY_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
            ))?
            .execute(params![
                entry.id.bytes(),
                entry.room_id.bytes(),
                entry.action.as_str(),
                entry.actor.bytes(),
                entry.target.map(|t| t.bytes()),
                entry.message.map(|m| m.bytes()),
                entry.reason,
                entry.created_at.timestamp_millis()
            ])
            .map_err(|e| match constraint(&e) {
                Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => Error::not_found("room not found"),
                _ => e.into(),
            })?;
            Ok(entry)
        })
        .await
    }

    async fn moderation_log(
        &self,
        room: RoomId,
        before: Option<ModerationId>,
        limit: usize,
    ) -> Result<Vec<ModerationEntry>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT {ENTRY_COLS} FROM moderation_log WHERE room_id = ?1 AND id < ?2
                     ORDER BY id DESC LIMIT ?3"
                ))?
                .query_map(
                    params![
                        room.bytes(),
                        before.map_or([0xff; 12], |b| b.bytes()),
                        limit
                    ],
                    entry_row,
                )?
                .collect::<rusqlite::Result<_>>()?)
        })
        .await
    }
}
