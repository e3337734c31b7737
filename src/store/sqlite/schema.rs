//! The tables, and how a database made by an earlier Confab is brought up to date.

use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, params};

use super::id_at;
use crate::{
    model::ObjectId,
    store::{UNIQUE_KEY_VERSION, displaced_key, unique_key},
};

/// The file's `user_version` once migrated: one number for both stores.
pub(super) const SCHEMA_VERSION: i64 = crate::store::SCHEMA_VERSION;

pub(super) const SCHEMA_V1: &str = "
CREATE TABLE users (
    id            BLOB PRIMARY KEY NOT NULL,
    username      TEXT NOT NULL,
    username_key  TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE rooms (
    id         BLOB PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    name_key   TEXT NOT NULL UNIQUE,
    created_by BLOB NOT NULL REFERENCES users(id),
    created_at INTEGER NOT NULL
);
-- A rowid table on purpose: the rowid is the join order (joined_at ties within a millisecond).
CREATE TABLE memberships (
    room_id   BLOB NOT NULL REFERENCES rooms(id),
    user_id   BLOB NOT NULL REFERENCES users(id),
    joined_at INTEGER NOT NULL,
    UNIQUE (room_id, user_id)
);
CREATE INDEX memberships_by_user ON memberships(user_id, room_id);
CREATE TABLE messages (
    id         BLOB PRIMARY KEY NOT NULL,
    room_id    BLOB NOT NULL REFERENCES rooms(id),
    sender_id  BLOB NOT NULL REFERENCES users(id),
    body       TEXT NOT NULL,
    client_id  TEXT,
    created_at INTEGER NOT NULL,
    edited_at  INTEGER,
    deleted_at INTEGER
);
CREATE INDEX messages_by_room ON messages(room_id, id);
CREATE UNIQUE INDEX messages_by_client_id
    ON messages(room_id, sender_id, client_id) WHERE client_id IS NOT NULL;
";

/// Version 2: room change sequence numbers (see `Store::changes_after`).
pub(super) const SCHEMA_V2: &str = "
ALTER TABLE rooms ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_by_change ON messages(room_id, seq);
";

/// Version 3: facts about the database itself: which `store::UNIQUE_KEY_VERSION` its name keys
/// follow (older keys are recomputed in the migration), and the row the startup write probe
/// writes.
pub(super) const SCHEMA_V3: &str = "
CREATE TABLE meta (
    key   TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 4: accounts and sessions: sessions (sign-ins, their refresh token's hash and the
/// hashes of the last ones spent, concatenated); server admins, suspensions and deleted
/// accounts (whose name is freed at `name_released_at`); invitation codes; messages by sender
/// (for a user's export).
pub(super) const SCHEMA_V4: &str = "
ALTER TABLE users ADD COLUMN is_admin INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN suspended TEXT;
ALTER TABLE users ADD COLUMN deleted_at INTEGER;
ALTER TABLE users ADD COLUMN name_released_at INTEGER;
CREATE INDEX users_by_name_release ON users(name_released_at)
    WHERE name_released_at IS NOT NULL;
CREATE INDEX messages_by_sender ON messages(sender_id, id);
CREATE TABLE invites (
    hash       BLOB PRIMARY KEY NOT NULL,
    created_by BLOB REFERENCES users(id),
    created_at INTEGER NOT NULL,
    used_at    INTEGER
) WITHOUT ROWID;
CREATE TABLE sessions (
    id           BLOB PRIMARY KEY NOT NULL,
    user_id      BLOB NOT NULL REFERENCES users(id),
    refresh_hash BLOB NOT NULL,
    spent        BLOB NOT NULL DEFAULT x'',
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    user_agent   TEXT,
    revoked_at   INTEGER
);
CREATE INDEX sessions_by_user ON sessions(user_id, last_used_at);
CREATE INDEX sessions_by_expiry ON sessions(expires_at);
CREATE INDEX sessions_by_revocation ON sessions(revoked_at) WHERE revoked_at IS NOT NULL;
";

/// Version 5: rooms for teams. Rooms gain a visibility, a topic and, for a direct room, its two
/// people; memberships a role (an existing room's creator, or its longest-standing member when
/// the creator has left, becomes its owner); messages who deleted them when a moderator did.
/// Bans, invitations and the moderation log are new.
pub(super) const SCHEMA_V5: &str = "
ALTER TABLE rooms ADD COLUMN visibility TEXT NOT NULL DEFAULT 'public';
ALTER TABLE rooms ADD COLUMN topic TEXT;
ALTER TABLE rooms ADD COLUMN direct_a BLOB REFERENCES users(id);
ALTER TABLE rooms ADD COLUMN direct_b BLOB REFERENCES users(id);
CREATE INDEX rooms_in_directory ON rooms(id) WHERE visibility = 'public';
ALTER TABLE memberships ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
UPDATE memberships SET role = 'owner' WHERE EXISTS (
    SELECT 1 FROM rooms r WHERE r.id = memberships.room_id AND r.created_by = memberships.user_id
);
UPDATE memberships SET role = 'owner' WHERE rowid IN (
    SELECT min(m.rowid) FROM memberships m
    WHERE NOT EXISTS (
        SELECT 1 FROM memberships o WHERE o.room_id = m.room_id AND o.role = 'owner'
    )
    GROUP BY m.room_id
);
ALTER TABLE messages ADD COLUMN deleted_by BLOB;
CREATE TABLE bans (
    room_id    BLOB NOT NULL REFERENCES rooms(id),
    user_id    BLOB NOT NULL REFERENCES users(id),
    banned_by  BLOB NOT NULL,
    reason     TEXT,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
CREATE TABLE room_invitations (
    room_id    BLOB NOT NULL REFERENCES rooms(id),
    user_id    BLOB NOT NULL REFERENCES users(id),
    invited_by BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
CREATE INDEX room_invitations_by_user ON room_invitations(user_id, created_at);
CREATE TABLE moderation_log (
    id         BLOB PRIMARY KEY NOT NULL,
    room_id    BLOB NOT NULL REFERENCES rooms(id),
    action     TEXT NOT NULL,
    actor      BLOB NOT NULL,
    target     BLOB,
    message    BLOB,
    reason     TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX moderation_log_by_room ON moderation_log(room_id, id);
";

/// Version 6: read state. A membership's read marker (members of an upgraded database have read
/// everything so far); the members a message mentions, on the message (to show) and one row
/// each in `mentions` (to count), kept for live messages only.
pub(super) const SCHEMA_V6: &str = "
ALTER TABLE memberships ADD COLUMN last_read BLOB;
UPDATE memberships SET last_read =
    (SELECT max(id) FROM messages WHERE messages.room_id = memberships.room_id);
ALTER TABLE messages ADD COLUMN mentions BLOB;
CREATE TABLE mentions (
    room_id    BLOB NOT NULL,
    user_id    BLOB NOT NULL,
    message_id BLOB NOT NULL,
    PRIMARY KEY (room_id, user_id, message_id)
) WITHOUT ROWID;
CREATE INDEX mentions_by_message ON mentions(message_id);
";

/// Version 7: each user's own log (what `myEvents` replays besides messages) and the
/// checkpoints of their streams; and the room index of messages widened with the sender and the
/// deletion, so that counting a member's unread messages reads the index alone (with it, the
/// unread counts of 100 rooms over 1M messages take a tenth of the time).
pub(super) const SCHEMA_V7: &str = "
DROP INDEX messages_by_room;
CREATE INDEX messages_by_room ON messages(room_id, id, sender_id, deleted_at);
CREATE TABLE user_events (
    user_id BLOB NOT NULL,
    pos     INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    at      INTEGER NOT NULL,
    PRIMARY KEY (user_id, pos)
) WITHOUT ROWID;
CREATE TABLE stream_checkpoints (
    id      BLOB PRIMARY KEY NOT NULL,
    user_id BLOB NOT NULL,
    rooms   BLOB NOT NULL
);
CREATE INDEX stream_checkpoints_by_user ON stream_checkpoints(user_id, id);
";

pub(super) fn migrate(conn: &Connection) -> anyhow::Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    anyhow::ensure!(
        version <= SCHEMA_VERSION,
        "the database has schema version {version}, newer than this Confab understands ({SCHEMA_VERSION}); upgrade Confab"
    );
    // One transaction: a failed upgrade leaves the file as it was.
    let tx = conn.unchecked_transaction()?;
    const STEPS: [&str; SCHEMA_VERSION as usize] = [
        SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6, SCHEMA_V7,
    ];
    // Every step after the file's version (a negative version is taken as none).
    let steps = STEPS
        .get(usize::try_from(version).unwrap_or(0)..)
        .unwrap_or_default();
    for step in steps {
        tx.execute_batch(step)?;
    }
    if version < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    // Keys made before the `meta` table existed follow version 1 (lower case).
    let keys: i64 = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'name_key_version'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(1);
    anyhow::ensure!(
        keys <= UNIQUE_KEY_VERSION,
        "the database's name keys follow rules (version {keys}) newer than this Confab's ({UNIQUE_KEY_VERSION}); upgrade Confab"
    );
    if keys < UNIQUE_KEY_VERSION {
        recompute_name_keys(&tx)?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('name_key_version', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [UNIQUE_KEY_VERSION],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Recomputes every stored username and room name key with the current `store::unique_key`,
/// oldest row first, inside the migration's transaction.
///
/// Names that an earlier Confab let coexist may now share a key ("lobby" and "L0bby"). Failing
/// startup would lock everyone out over a naming problem, and renaming or deleting a room or
/// an account behind its owners' backs would be worse. So the older row keeps the key (it
/// was there first; it goes on blocking every new look-alike), the newer one gets a key no name
/// can produce (`store::displaced_key`: the key, a NUL and its id), both keep working (a login
/// finds its account by name among the keys), and a warning names both so that an operator can
/// rename one.
pub(super) fn recompute_name_keys(conn: &Connection) -> rusqlite::Result<()> {
    // Direct and private rooms keep keys of their own (`store::room_key`), which no name rule
    // makes.
    for (table, name_col, key_col, what, named) in [
        ("users", "username", "username_key", "username", "1"),
        (
            "rooms",
            "name",
            "name_key",
            "room name",
            "direct_a IS NULL AND visibility = 'public'",
        ),
    ] {
        // Every key becomes a placeholder no key equals (a NUL and the id in capitals), so new
        // keys meet only new keys, given to the oldest first.
        conn.execute(
            &format!("UPDATE {table} SET {key_col} = char(0) || hex(id) WHERE {named}"),
            [],
        )?;
        let rows = conn
            .prepare(&format!(
                "SELECT id, {name_col} FROM {table} WHERE {named} ORDER BY id"
            ))?
            .query_map([], |r| Ok((id_at(r, 0)?, r.get::<_, String>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut holder = conn.prepare(&format!(
            "SELECT id, {name_col} FROM {table} WHERE {key_col} = ?1"
        ))?;
        let mut update =
            conn.prepare(&format!("UPDATE {table} SET {key_col} = ?1 WHERE id = ?2"))?;
        for (id, name) in rows {
            let mut key = unique_key(&name);
            let older = holder
                .query_row([&key], |r| {
                    Ok((id_at::<ObjectId>(r, 0)?, r.get::<_, String>(1)?))
                })
                .optional()?;
            if let Some((older_id, older_name)) = older {
                tracing::warn!(
                    "the {what} {name:?} (id {id}) looks like the older {what} {older_name:?} (id {older_id}); \
                     both are kept and only the older blocks new look-alikes: rename one of them"
                );
                key = displaced_key(&key, id);
            }
            update.execute(params![key, id.bytes()])?;
        }
    }
    Ok(())
}

/// Proves at startup that the database takes writes: one row of `meta`, written and committed
/// (a write rolled back may never reach the file). Without it, a read-only file would serve
/// reads, pass `/readyz`, and fail every write.
pub(super) fn probe_write(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('opened_at', ?1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [Utc::now().timestamp_millis()],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{
        error::Error,
        model::{MessageId, ObjectId, PageRequest, RoomId, RoomRole, RoomVisibility, UserId},
        store::{
            MessageStore, NewMessage, RoomHead, RoomStore, RoomUpdate, UserStore,
            sqlite::SqliteStore,
        },
    };

    #[tokio::test]
    async fn a_version_1_database_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(&format!(
                "{SCHEMA_V1}
                 INSERT INTO users VALUES (x'000000000000000000000001', 'ada', 'ada', 'h', 0);
                 INSERT INTO rooms VALUES (x'000000000000000000000002', 'lobby', 'lobby',
                     x'000000000000000000000001', 0);
                 INSERT INTO messages (id, room_id, sender_id, body, created_at) VALUES
                     (x'000000000000000000000003', x'000000000000000000000002',
                      x'000000000000000000000001', 'old', 0);
                 PRAGMA user_version = 1;"
            ))
            .unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let room = RoomId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        let old = MessageId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(
            store.room_head(room).await.unwrap(),
            RoomHead {
                last_message: Some(old),
                seq: 0
            }
        );
        let message = store
            .insert_message(NewMessage {
                room_id: room,
                sender_id: UserId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                body: "new".into(),
                client_id: None,
                mentions: Vec::new(),
            })
            .await
            .unwrap()
            .value;
        assert_eq!(message.seq, 1);
        let edited = store.edit_message(old, "old, edited", &[]).await.unwrap();
        assert_eq!(edited.seq, 2);
        let changes = store.changes_after(room, 0, 10).await.unwrap();
        assert_eq!(changes, [message, edited]);
    }

    fn id(n: u8) -> ObjectId {
        ObjectId::from_bytes([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, n])
    }

    /// A version 2 database (keys in lower case) where an earlier Confab let look-alikes in.
    fn version_2_database(path: &Path) {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(&format!(
            "{SCHEMA_V1} {SCHEMA_V2}
             INSERT INTO users (id, username, username_key, password_hash, created_at) VALUES
                 (x'000000000000000000000001', 'ilse', 'ilse', 'h1', 0),
                 (x'000000000000000000000002', 'llse', 'llse', 'h2', 0),
                 (x'000000000000000000000003', 'Ada', 'ada', 'h3', 0);
             -- The older room's new key is the newer room's old one: the upgrade must still
             -- give it to the older.
             INSERT INTO rooms (id, name, name_key, created_by, created_at) VALUES
                 (x'000000000000000000000004', 'L0bby', 'l0bby', x'000000000000000000000001', 0),
                 (x'000000000000000000000005', 'lobby', 'lobby', x'000000000000000000000001', 0),
                 (x'000000000000000000000006', 'lo' || char(8203) || 'bby', 'lo' || char(8203) || 'bby',
                  x'000000000000000000000001', 0),
                 (x'000000000000000000000007', 'General', 'general', x'000000000000000000000001', 0);
             PRAGMA user_version = 2;"
        ))
        .unwrap();
    }

    #[tokio::test]
    async fn a_version_2_database_gets_public_rooms_owned_by_their_creators() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        version_2_database(&path);
        {
            let conn = Connection::open(&path).unwrap();
            // "L0bby" (4) keeps its creator (1); "General" (7) lost its creator, so its
            // longest-standing member (3, before 2) owns it.
            conn.execute_batch(
                "INSERT INTO memberships (room_id, user_id, joined_at) VALUES
                     (x'000000000000000000000004', x'000000000000000000000002', 0),
                     (x'000000000000000000000004', x'000000000000000000000001', 0),
                     (x'000000000000000000000007', x'000000000000000000000003', 0),
                     (x'000000000000000000000007', x'000000000000000000000002', 0);",
            )
            .unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let role = async |room: u8, user: u8| {
            store
                .membership(id(room).into(), id(user).into())
                .await
                .unwrap()
                .map(|m| m.role)
        };
        assert_eq!(role(4, 1).await, Some(RoomRole::Owner));
        assert_eq!(role(4, 2).await, Some(RoomRole::Member));
        assert_eq!(role(7, 3).await, Some(RoomRole::Owner));
        assert_eq!(role(7, 2).await, Some(RoomRole::Member));
        let directory = store
            .rooms(PageRequest::Forward {
                after: None,
                first: 10,
            })
            .await
            .unwrap();
        assert_eq!(directory.items.len(), 4, "every old room is public");
        for room in directory.items {
            assert_eq!(
                (room.visibility, room.topic, room.direct),
                (RoomVisibility::Public, None, None)
            );
        }
        // A room whose look-alike key was set aside keeps it while its topic changes.
        let topic = RoomUpdate {
            topic: Some(Some("still here".into())),
            ..RoomUpdate::default()
        };
        let updated = store.update_room(id(5).into(), topic).await.unwrap();
        assert_eq!(updated.value.topic.as_deref(), Some("still here"));
        // The rules of teams hold on the upgraded file.
        store
            .ban(id(4).into(), id(2).into(), id(1).into(), Some("spam"))
            .await
            .unwrap();
        assert_eq!(role(4, 2).await, None);
    }

    fn stored_keys(path: &Path, table: &str, key: &str) -> Vec<(ObjectId, String)> {
        let conn = Connection::open(path).unwrap();
        conn.prepare(&format!("SELECT id, {key} FROM {table} ORDER BY id"))
            .unwrap()
            .query_map([], |r| Ok((id_at(r, 0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[tokio::test]
    async fn a_version_2_database_gets_look_alike_keys_and_keeps_every_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        version_2_database(&path);

        let store = SqliteStore::open(&path).await.unwrap();
        // Every row is kept; look-alikes now conflict, against the oldest of each group.
        for (name, field) in [("LOBBY", "name"), ("I0bby", "name"), ("general", "name")] {
            let err = store
                .create_room(crate::store::NewRoom::public(name, id(1).into()))
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::Conflict { field: f, .. } if f == field),
                "{name:?}: {err:?}"
            );
        }
        for name in ["ILSE", "Llse", "ADA"] {
            let err = store.create_user(name, "h").await.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Conflict {
                        field: "username",
                        ..
                    }
                ),
                "{name:?}: {err:?}"
            );
        }
        // Each user still logs in by their own name, in any case, and only by it.
        for (asked, hash) in [
            ("ilse", "h1"),
            ("ILSE", "h1"),
            ("llse", "h2"),
            ("LLSE", "h2"),
        ] {
            let found = store.credentials(asked).await.unwrap();
            assert_eq!(
                found.map(|c| c.password_hash).as_deref(),
                Some(hash),
                "{asked:?}"
            );
        }
        assert!(store.credentials("IIse").await.unwrap().is_none());
        assert_eq!(
            store
                .rooms(PageRequest::Forward {
                    after: None,
                    first: 10
                })
                .await
                .unwrap()
                .items
                .len(),
            4
        );
        drop(store);

        assert_eq!(
            stored_keys(&path, "rooms", "name_key"),
            [
                (id(4), "lobby".to_owned()),
                (id(5), displaced_key("lobby", id(5))),
                (id(6), displaced_key("lobby", id(6))),
                (id(7), "general".to_owned()),
            ]
        );
        assert_eq!(
            stored_keys(&path, "users", "username_key"),
            [
                (id(1), "llse".to_owned()),
                (id(2), displaced_key("llse", id(2))),
                (id(3), "ada".to_owned()),
            ]
        );
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        let keys: i64 = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'name_key_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!((version, keys), (SCHEMA_VERSION, UNIQUE_KEY_VERSION));
        drop(conn);

        // Opening again changes nothing.
        let before = stored_keys(&path, "rooms", "name_key");
        drop(SqliteStore::open(&path).await.unwrap());
        assert_eq!(stored_keys(&path, "rooms", "name_key"), before);
    }
}
