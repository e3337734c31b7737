//! Persistence: one [`Store`] trait, one driver per database.
//!
//! Drivers own their ids and timestamps (ObjectIds, UTC). They enforce uniqueness with the
//! database's own unique indexes and report a collision as [`Error::Conflict`]; they apply no
//! chat rule (membership, ownership, limits): that is `ChatService`'s job. Every driver passes
//! the conformance suite in `tests/store_conformance.rs`, written against this trait.
//!
//! A driver also reports the room events of its committed writes, in commit order, on the
//! channel [`Store::take_events`] hands out. Publishing from that one ordered stream (rather
//! than from each request after its write returns) keeps live events in the order of message
//! ids, which is what lets a client resume "after id X" without a gap, and announces a stored
//! write even when the request that made it was abandoned.
//!
//! Every message change (creation, edit, deletion) also takes the room's next change sequence
//! number, stored on the message, in commit order across every instance sharing the database.
//! Message ids follow commit order within a room too. A subscriber that sees a number skipped,
//! or that lost events, reads the changes after the last number it saw ([`Store::changes_after`]),
//! so it misses neither new messages nor edits and deletions of older ones.

use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    config::DatabaseUrl,
    error::Result,
    model::{Message, MessageId, Page, PageRequest, Room, RoomEvent, RoomId, User, UserId},
};

pub mod mongo;
pub mod sqlite;

/// A user as stored, with the password hash that never leaves the service layer.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: User,
    pub password_hash: String,
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub room_id: RoomId,
    pub sender_id: UserId,
    pub body: String,
    pub client_id: Option<String>,
}

/// Whether a write changed anything, with the resulting value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written<T> {
    pub value: T,
    /// `false` when the write was a no-op (an idempotent retry, an existing membership, …).
    pub changed: bool,
}

/// Where a room stands (see [`Store::room_head`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomHead {
    pub last_message: Option<MessageId>,
    pub seq: u64,
}

/// Events queued between a store and its publisher before writes wait for the publisher.
pub const EVENT_QUEUE: usize = 4096;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Answers when the database is reachable and usable.
    async fn ping(&self) -> Result<()>;

    /// The events of writes committed from now on, in commit order: `MessageAdded` (not for an
    /// idempotent retry), `MessageEdited`, `MessageDeleted` (not for a second delete),
    /// `MemberJoined` and `MemberLeft` (only when membership changed). The first call gets the
    /// channel, later calls `None`; until it is taken, nothing is queued. An event is queued
    /// once its write is committed, which may be just after the write has returned.
    fn take_events(&self) -> Option<tokio::sync::mpsc::Receiver<RoomEvent>>;

    // --- users ---

    /// Creates a user; `Conflict { field: "username" }` when the name is taken in any letter case.
    async fn create_user(&self, username: &str, password_hash: &str) -> Result<User>;
    /// A user by id.
    async fn user(&self, id: UserId) -> Result<Option<User>>;
    /// A user and their password hash, by username in any letter case.
    async fn credentials(&self, username: &str) -> Result<Option<Credentials>>;

    // --- rooms ---

    /// Creates a room with its creator as first member; `Conflict { field: "name" }` when the
    /// name is taken in any letter case.
    async fn create_room(&self, name: &str, creator: UserId) -> Result<Room>;
    /// A room by id.
    async fn room(&self, id: RoomId) -> Result<Option<Room>>;
    /// The room directory, oldest first.
    async fn rooms(&self, page: PageRequest) -> Result<Page<Room>>;

    // --- memberships ---

    /// Makes `user` a member of `room`; `changed` is false when they already were.
    /// `NotFound` when the room does not exist.
    async fn add_member(&self, room: RoomId, user: UserId) -> Result<Written<()>>;
    /// Ends a membership; `changed` is false when there was none.
    async fn remove_member(&self, room: RoomId, user: UserId) -> Result<Written<()>>;
    /// Whether `user` is a member of `room`.
    async fn is_member(&self, room: RoomId, user: UserId) -> Result<bool>;
    /// Up to `limit` members of a room, in the order they joined.
    async fn members(&self, room: RoomId, limit: usize) -> Result<Vec<User>>;
    /// How many members a room has.
    async fn member_count(&self, room: RoomId) -> Result<u64>;
    /// A page of the rooms a user belongs to, oldest room first.
    async fn rooms_of(&self, user: UserId, page: PageRequest) -> Result<Page<Room>>;
    /// How many rooms a user belongs to.
    async fn room_count_of(&self, user: UserId) -> Result<u64>;

    // --- messages ---

    /// Stores a message. With a `client_id` already used by the same sender in the same room, it
    /// stores nothing and returns the first message with `changed: false`.
    async fn insert_message(&self, message: NewMessage) -> Result<Written<Message>>;
    /// A message by id, tombstones included.
    async fn message(&self, id: MessageId) -> Result<Option<Message>>;
    /// Where a room stands: its newest message (tombstones included) and its change sequence
    /// number, read together. Every change numbered up to `seq` is readable, none after it is
    /// counted in `last_message`. `NotFound` for no such room.
    async fn room_head(&self, room: RoomId) -> Result<RoomHead>;
    /// A page of a room's history in chronological order; tombstones are hidden.
    async fn messages(&self, room: RoomId, page: PageRequest) -> Result<Page<Message>>;
    /// Up to `limit` messages created after `after`, oldest first, tombstones included: what a
    /// resuming subscriber replays.
    async fn messages_after(
        &self,
        room: RoomId,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<Message>>;
    /// Up to `limit` messages whose latest change is numbered after `seq`, in change order,
    /// tombstones included: what a subscriber that missed events reads to catch up. Once a
    /// change is readable, so is every change of the room numbered before it.
    async fn changes_after(&self, room: RoomId, seq: u64, limit: usize) -> Result<Vec<Message>>;
    /// Replaces a live message's body and sets `edited_at`; `NotFound` for a tombstone.
    async fn edit_message(&self, id: MessageId, body: &str) -> Result<Message>;
    /// Turns a message into a tombstone (body cleared, `deleted_at` set); `changed` is false when
    /// it already was one. `NotFound` when no such message exists.
    async fn delete_message(&self, id: MessageId) -> Result<Written<Message>>;
}

/// Opens the store a `--database-url` names, creating or migrating its schema (SQLite) or its
/// indexes (MongoDB).
pub async fn connect(url: &DatabaseUrl) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match url {
        DatabaseUrl::SqliteFile(path) => Arc::new(sqlite::SqliteStore::open(path).await?),
        DatabaseUrl::SqliteMemory => Arc::new(sqlite::SqliteStore::open_in_memory().await?),
        DatabaseUrl::Mongo(url) => Arc::new(mongo::MongoStore::connect(url).await?),
    })
}

/// A fresh ObjectId strictly greater than `last`, which becomes it. Drivers mint ids through
/// this so that, within one process, a later id is always a larger one, even within one second
/// or when the clock steps back.
pub(crate) fn next_object_id(last: &mut [u8; 12]) -> crate::model::ObjectId {
    let mut id = crate::model::ObjectId::new().bytes();
    if id <= *last {
        id = *last;
        for byte in id.iter_mut().rev() {
            let (value, carry) = byte.overflowing_add(1);
            *byte = value;
            if !carry {
                break;
            }
        }
    }
    *last = id;
    crate::model::ObjectId::from_bytes(id)
}

/// Puts a keyset page together, the same way for every list and driver. `items` are as read:
/// up to `limit + 1` from the cursor outwards (newest first when paging `backward`);
/// `beyond_cursor` says whether anything lies on the cursor's other side.
pub(crate) fn keyset_page<T>(
    mut items: Vec<T>,
    limit: usize,
    backward: bool,
    beyond_cursor: bool,
) -> Page<T> {
    let more = items.len() > limit;
    items.truncate(limit);
    if backward {
        items.reverse();
        Page {
            items,
            has_previous: more,
            has_next: beyond_cursor,
        }
    } else {
        Page {
            items,
            has_previous: beyond_cursor,
            has_next: more,
        }
    }
}

/// What a driver reports when a unique index refused a name: `Conflict` naming the field, in
/// the same words whichever database said so.
pub(crate) enum Taken {
    Username,
    RoomName,
}

impl From<Taken> for crate::error::Error {
    fn from(taken: Taken) -> Self {
        match taken {
            Taken::Username => Self::Conflict {
                field: "username",
                message: "that username is already taken".into(),
            },
            Taken::RoomName => Self::Conflict {
                field: "name",
                message: "a room with that name already exists".into(),
            },
        }
    }
}

/// The case-folded key that makes usernames and room names unique regardless of letter case.
pub fn unique_key(name: &str) -> String {
    name.to_lowercase()
}
