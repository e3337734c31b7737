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
    model::{
        CheckpointId, Invitation, Membership, Message, MessageId, ModerationAction,
        ModerationEntry, ModerationId, Page, PageRequest, ReadState, Room, RoomEvent, RoomId,
        RoomPositions, RoomRole, RoomVisibility, Session, SessionId, User, UserEvent,
        UserEventKind, UserId,
    },
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
    /// The members it mentions (see [`Message::mentions`]).
    pub mentions: Vec<UserId>,
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

/// What [`Store::ping`] fails with when the database answers but refuses writes (a read-only
/// file, a full disk): `/readyz` names the reason.
#[derive(Debug, thiserror::Error)]
#[error("the database refuses writes: {0}")]
pub struct RefusingWrites(pub String);

/// The version of the stored data's shape this Confab writes, shown in `/readyz`. Startup
/// upgrades an older database to it (forward only) and refuses a newer one. SQLite keeps it as
/// the file's `user_version`; MongoDB in the `schema` document of the `meta` collection. Both
/// stores number their upgrades alike (5: rooms for teams, 6: read state, 7: the user log of `myEvents`), so one number says
/// where either stands.
pub const SCHEMA_VERSION: i64 = 7;

/// Events queued between a store and its publisher before writes wait for the publisher.
pub const EVENT_QUEUE: usize = 4096;

#[async_trait]
pub trait Store:
    UserStore + SessionStore + RoomStore + MessageStore + InboxStore + Send + Sync + 'static
{
    /// Answers when the database is reachable and takes writes; fails with [`RefusingWrites`]
    /// inside `Error::Internal` when it answers but its writes fail.
    async fn ping(&self) -> Result<()>;

    /// The schema version the database is at (startup brought it to [`SCHEMA_VERSION`]).
    fn schema_version(&self) -> i64;

    /// The events of writes committed from now on, in commit order: `MessageAdded` (not for an
    /// idempotent retry), `MessageEdited`, `MessageDeleted` (not for a second delete),
    /// `MemberJoined` and `MemberLeft` (only when membership changed). The first call gets the
    /// channel, later calls `None`; until it is taken, nothing is queued. An event is queued
    /// once its write is committed, which may be just after the write has returned.
    fn take_events(&self) -> Option<tokio::sync::mpsc::Receiver<RoomEvent>>;

    /// How long this driver's calls take, for `/metrics` (see `metrics::store`), when it
    /// measures them.
    fn timings(&self) -> Option<crate::metrics::store::StoreTimings> {
        None
    }
}

/// Users: accounts, by id and by name.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Creates a user, an admin when it is the first account; `Conflict { field: "username" }`
    /// when a name with the same [`unique_key`] exists (in any letter case, or a look-alike).
    async fn create_user(&self, username: &str, password_hash: &str) -> Result<User>;
    /// A user by id.
    async fn user(&self, id: UserId) -> Result<Option<User>>;
    /// A user and their password hash, by username in any letter case (never by a look-alike).
    async fn credentials(&self, username: &str) -> Result<Option<Credentials>>;
    /// A user and their password hash, by id (not for a deleted account).
    async fn credentials_by_id(&self, id: UserId) -> Result<Option<Credentials>>;
    /// Replaces a user's password hash; `NotFound` when there is no such user.
    async fn set_password(&self, id: UserId, password_hash: &str) -> Result<()>;
    /// Whether any account was ever created.
    async fn has_users(&self) -> Result<bool>;
    /// What a user may do: whether an admin, suspended, deleted. `None` for no such user.
    async fn standing(&self, id: UserId) -> Result<Option<Standing>>;
    /// Makes a user a server admin, or not; `NotFound` when there is no such user.
    async fn set_admin(&self, id: UserId, admin: bool) -> Result<()>;
    /// Suspends a user (with the reason), or lifts it (`None`); `NotFound` for no such user.
    async fn set_suspended(&self, id: UserId, reason: Option<&str>) -> Result<()>;
    /// Deletes an account: it keeps its id (its messages still name it) but is shown as
    /// [`DELETED_USER`], has no password and no memberships, and its name stays taken until
    /// `release_name_at` (at once when that is not in the future). `NotFound` for no such user.
    async fn delete_user(
        &self,
        id: UserId,
        release_name_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<()>;
    /// Frees the names of accounts deleted whose quarantine ended by `now`; returns how many.
    async fn release_names(&self, now: chrono::DateTime<chrono::Utc>) -> Result<u64>;
    /// Stores a single-use invitation code (its hash) made by `by` (`None`: the command line).
    async fn create_invite(&self, hash: TokenHash, by: Option<UserId>) -> Result<()>;
    /// Spends an invitation code: true when it existed and was unused (it is used now).
    async fn take_invite(&self, hash: TokenHash) -> Result<bool>;
    /// Makes a spent invitation code usable again (the registration it was spent on failed).
    async fn return_invite(&self, hash: TokenHash) -> Result<()>;
}

/// How a deleted account is shown.
pub const DELETED_USER: &str = "deleted user";

/// What a user may do (see [`UserStore::standing`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    pub admin: bool,
    /// Why the account is suspended, when it is.
    pub suspended: Option<String>,
    pub deleted: bool,
}

/// A refresh token as stored: its SHA-256, never the token.
pub type TokenHash = [u8; 32];

/// Spent refresh tokens a session remembers, so that one presented again is known for what it
/// is (a copy in someone else's hands) and revokes the session.
pub const SPENT_REMEMBERED: usize = 16;

/// A session to store.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub user_id: UserId,
    pub refresh_hash: TokenHash,
    pub user_agent: Option<String>,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// What presenting a refresh token did (see [`SessionStore::rotate_session`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// It was the session's current token: the next one replaces it.
    Rotated(Session),
    /// It was one the session had already spent: the session is revoked now.
    Reused(Session),
    /// No active session has it (unknown, expired, or revoked before).
    Refused,
}

/// Sessions: sign-ins and their refresh tokens.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session, created and last used now.
    async fn create_session(&self, session: NewSession) -> Result<Session>;
    /// A session by id, revoked and expired ones included until purged (a driver may purge
    /// expired ones on its own, as MongoDB's TTL index does).
    async fn session(&self, id: SessionId) -> Result<Option<Session>>;
    /// Presents `presented` as the refresh token of session `id`, in one atomic step: when it
    /// is the current token of an active session, `next` replaces it (the presented one is
    /// remembered as spent), `last_used_at` becomes now and `expires_at` becomes `expires_at`;
    /// when it is one of the [`SPENT_REMEMBERED`] spent tokens, the session is revoked.
    async fn rotate_session(
        &self,
        id: SessionId,
        presented: TokenHash,
        next: TokenHash,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Rotation>;
    /// Revokes one session; `changed` is false when it was already revoked. `NotFound` when
    /// there is no such session.
    async fn revoke_session(&self, id: SessionId) -> Result<Written<Session>>;
    /// Revokes every active session of `user` but `except`; returns the ids revoked.
    async fn revoke_sessions_of(
        &self,
        user: UserId,
        except: Option<SessionId>,
    ) -> Result<Vec<SessionId>>;
    /// A user's active sessions at `now`, the most recently used first, at most `limit`.
    async fn sessions_of(
        &self,
        user: UserId,
        now: chrono::DateTime<chrono::Utc>,
        limit: usize,
    ) -> Result<Vec<Session>>;
    /// Deletes the sessions that expired before `before`, and those revoked before it; returns
    /// how many.
    async fn purge_sessions(&self, before: chrono::DateTime<chrono::Utc>) -> Result<u64>;
}

/// Where unread and mention counts stop: a room's counts cost at most this many index entries
/// each, however long the backlog (clients show "999+").
pub const COUNT_CAP: u64 = 999;

/// A room to store.
#[derive(Debug, Clone)]
pub struct NewRoom {
    pub name: String,
    pub creator: UserId,
    pub visibility: RoomVisibility,
    pub topic: Option<String>,
}

impl RoomUpdate {
    /// `room` as this update leaves it.
    pub fn applied_to(self, room: &Room) -> Room {
        Room {
            name: self.name.unwrap_or_else(|| room.name.clone()),
            topic: self.topic.unwrap_or_else(|| room.topic.clone()),
            visibility: self.visibility.unwrap_or(room.visibility),
            ..room.clone()
        }
    }
}

impl NewRoom {
    /// A public room without a topic.
    pub fn public(name: impl Into<String>, creator: UserId) -> Self {
        Self {
            name: name.into(),
            creator,
            visibility: RoomVisibility::Public,
            topic: None,
        }
    }
}

/// What to change of a room (see [`RoomStore::update_room`]); `None` keeps a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomUpdate {
    pub name: Option<String>,
    /// `Some(None)` clears the topic.
    pub topic: Option<Option<String>>,
    pub visibility: Option<RoomVisibility>,
}

/// Why a membership ends (see [`RoomStore::remove_member`]): the event each announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Departure {
    /// `MemberLeft`.
    Left,
    /// `MemberKicked`, by this moderator.
    Kicked { by: UserId },
}

/// A moderation log entry to store.
#[derive(Debug, Clone)]
pub struct NewModerationEntry {
    pub room_id: RoomId,
    pub action: ModerationAction,
    pub actor: UserId,
    pub target: Option<UserId>,
    pub message: Option<MessageId>,
    pub reason: Option<String>,
}

/// Rooms, and who is a member of which, in what role; bans, invitations, the moderation log.
///
/// The few rules that a race could break are the store's: one membership per user and room,
/// one direct room per pair, one invitation per invitee and room, a banned user never a member
/// (a join and a ban that race end with the user out), and a room with members always having
/// an owner once its owner leaves.
#[async_trait]
pub trait RoomStore: Send + Sync {
    /// Creates a room with its creator as first member and `Owner`; `Conflict { field: "name" }`
    /// when a name with the same [`unique_key`] exists (in any letter case, or a look-alike).
    async fn create_room(&self, room: NewRoom) -> Result<Room>;
    /// The direct room of two users, created (private, both members with role `Member`) when
    /// there is none; `changed` says whether it was created. Two concurrent calls, from either
    /// side, return the same room. Its name is empty and takes no name's place.
    async fn direct_room(&self, creator: UserId, other: UserId) -> Result<Written<Room>>;
    /// Changes a room's name, topic or visibility and announces `RoomUpdated` when anything
    /// changed; `NotFound` for no such room, `Conflict { field: "name" }` as `create_room`.
    async fn update_room(&self, id: RoomId, update: RoomUpdate) -> Result<Written<Room>>;
    /// A room by id.
    async fn room(&self, id: RoomId) -> Result<Option<Room>>;
    /// The room directory: public rooms, oldest first.
    async fn rooms(&self, page: PageRequest) -> Result<Page<Room>>;
    /// Makes `user` a member of `room` in `role`; `changed` is false when they already were
    /// (their role stays). `NotFound` when the room does not exist, `Forbidden` when the user
    /// is banned from it. Takes away the user's invitation to the room, if any.
    async fn add_member(&self, room: RoomId, user: UserId, role: RoomRole) -> Result<Written<()>>;
    /// Ends a membership, announcing the departure; `changed` is false when there was none.
    /// When the owner leaves, the longest-standing admin becomes owner, else the
    /// longest-standing member (announced as `MemberRoleChanged`); an empty room stays, with
    /// no owner.
    async fn remove_member(
        &self,
        room: RoomId,
        user: UserId,
        departure: Departure,
    ) -> Result<Written<()>>;
    /// Whether `user` is a member of `room`.
    async fn is_member(&self, room: RoomId, user: UserId) -> Result<bool>;
    /// A user's membership of a room, if any.
    async fn membership(&self, room: RoomId, user: UserId) -> Result<Option<Membership>>;
    /// Up to `limit` members of a room, in the order they joined.
    async fn members(&self, room: RoomId, limit: usize) -> Result<Vec<User>>;
    /// Up to `limit` memberships of a room in the order they joined, after the member `after`
    /// (from the first when `None`, or when `after` is no longer a member: from the start).
    async fn memberships(
        &self,
        room: RoomId,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<Vec<Membership>>;
    /// Sets a member's role and announces `MemberRoleChanged` when it changed. With `expect`,
    /// only when their role is that now (else `Conflict { field: "role" }`). `NotFound` when
    /// they are not a member.
    async fn set_role(
        &self,
        room: RoomId,
        user: UserId,
        role: RoomRole,
        expect: Option<RoomRole>,
    ) -> Result<Written<Membership>>;
    /// How many members a room has.
    async fn member_count(&self, room: RoomId) -> Result<u64>;
    /// A page of the rooms a user belongs to, oldest room first.
    async fn rooms_of(&self, user: UserId, page: PageRequest) -> Result<Page<Room>>;
    /// How many rooms a user belongs to.
    async fn room_count_of(&self, user: UserId) -> Result<u64>;
    /// Deletes a room with its messages, memberships, bans, invitations and log, announcing
    /// nothing (the service has each member leave first), and returns the members it still
    /// found (someone who joined meanwhile); `NotFound` when there is no such room. Its name
    /// is free again.
    async fn delete_room(&self, room: RoomId) -> Result<Vec<UserId>>;

    /// Bans `user` from `room` (idempotent: a second ban keeps the first's reason), takes away
    /// their invitation, and ends their membership if any, announcing `MemberBanned`.
    /// `changed` is false when they were banned already.
    async fn ban(
        &self,
        room: RoomId,
        user: UserId,
        by: UserId,
        reason: Option<&str>,
    ) -> Result<Written<()>>;
    /// Lifts a ban; `changed` is false when there was none.
    async fn unban(&self, room: RoomId, user: UserId) -> Result<Written<()>>;
    /// Whether `user` is banned from `room`.
    async fn is_banned(&self, room: RoomId, user: UserId) -> Result<bool>;

    /// Invites `user` to `room`; inviting again keeps the first invitation (`changed` false).
    /// `NotFound` for no such room or user, `Forbidden` when the user is banned from it (an
    /// invitation and a ban that race end with no invitation). A membership that ends takes
    /// the member's invitation with it.
    async fn invite(&self, room: RoomId, user: UserId, by: UserId) -> Result<Written<Invitation>>;
    /// A user's invitation to a room, if any.
    async fn invitation(&self, room: RoomId, user: UserId) -> Result<Option<Invitation>>;
    /// Up to `limit` of a user's invitations, newest first.
    async fn invitations_of(&self, user: UserId, limit: usize) -> Result<Vec<Invitation>>;
    /// Takes an invitation back (or declines it); false when there was none.
    async fn remove_invitation(&self, room: RoomId, user: UserId) -> Result<bool>;
    /// How many invitations a user has.
    async fn invitation_count(&self, user: UserId) -> Result<u64>;

    /// Adds an entry to a room's moderation log.
    async fn log_moderation(&self, entry: NewModerationEntry) -> Result<ModerationEntry>;
    /// Up to `limit` entries of a room's moderation log, newest first, older than `before`.
    async fn moderation_log(
        &self,
        room: RoomId,
        before: Option<ModerationId>,
        limit: usize,
    ) -> Result<Vec<ModerationEntry>>;
}

/// Messages, and the changes to them that subscribers follow.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Stores a message. With a `client_id` already used by the same sender in the same room, it
    /// stores nothing and returns the first message with `changed: false`.
    async fn insert_message(&self, message: NewMessage) -> Result<Written<Message>>;
    /// A message by id, tombstones included.
    async fn message(&self, id: MessageId) -> Result<Option<Message>>;
    /// Where a room stands: its newest message (tombstones included) and its change sequence
    /// number, read together. Every change numbered up to `seq` is readable, none after it is
    /// counted in `last_message`. `NotFound` for no such room.
    async fn room_head(&self, room: RoomId) -> Result<RoomHead>;
    /// Up to `limit` messages whose latest change is numbered after `seq`, in change order,
    /// tombstones included: what a subscriber that missed events reads to catch up. Once a
    /// change is readable, so is every change of the room numbered before it.
    async fn changes_after(&self, room: RoomId, seq: u64, limit: usize) -> Result<Vec<Message>>;
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
    /// Replaces a live message's body and mentions and sets `edited_at`; `NotFound` for a
    /// tombstone.
    async fn edit_message(&self, id: MessageId, body: &str, mentions: &[UserId])
    -> Result<Message>;
    /// A member's read state in a room (see [`ReadState`]), its counts stopping at
    /// [`COUNT_CAP`]; `None` when not a member. A new member has read everything sent before
    /// they joined.
    async fn read_state(&self, room: RoomId, user: UserId) -> Result<Option<ReadState>>;
    /// Moves a member's read marker forward to `message`, a message of `room` (an older one, or
    /// one of another room, changes nothing: `changed` false); `NotFound` when they are not a
    /// member.
    async fn mark_read(
        &self,
        room: RoomId,
        user: UserId,
        message: MessageId,
    ) -> Result<Written<ReadState>>;
    /// A room's newest live message.
    async fn last_message(&self, room: RoomId) -> Result<Option<Message>>;
    /// For each of `rooms`, `user`'s read state there and the room's newest live message: what
    /// a list of rooms shows, read in one go where the driver can.
    async fn room_summaries(
        &self,
        user: UserId,
        rooms: Vec<RoomId>,
    ) -> Result<Vec<(Option<ReadState>, Option<Message>)>> {
        let mut summaries = Vec::with_capacity(rooms.len());
        for room in rooms {
            summaries.push((
                self.read_state(room, user).await?,
                self.last_message(room).await?,
            ));
        }
        Ok(summaries)
    }
    /// Up to `limit` messages sent by `user`, tombstones excluded, in id order after `after`.
    async fn messages_by(
        &self,
        user: UserId,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<Message>>;
    /// Turns a message into a tombstone (body cleared, `deleted_at` set, `deleted_by` set to
    /// `by` when given: a moderator); `changed` is false when it already was one. `NotFound`
    /// when no such message exists.
    async fn delete_message(&self, id: MessageId, by: Option<UserId>) -> Result<Written<Message>>;
}

/// Entries of a user's own log kept: older ones are pruned, and a cursor from before them is
/// refused as too old.
pub const USER_LOG_KEEP: u64 = 10_000;

/// Checkpoints kept per user (the newest); a cursor naming an older one is refused as too old.
pub const CHECKPOINTS_KEPT: usize = 64;

/// Each user's own log (what `myEvents` replays besides messages) and the checkpoints of
/// their streams.
#[async_trait]
pub trait InboxStore: Send + Sync {
    /// Appends an entry to `user`'s log at the next position and announces it as
    /// [`RoomEvent::ForUser`]. Positions count up from 1 with no gap, across every instance
    /// sharing the database; entries more than [`USER_LOG_KEEP`] behind are pruned now and then.
    async fn append_user_event(&self, user: UserId, kind: UserEventKind) -> Result<UserEvent>;
    /// Up to `limit` entries of `user`'s log after position `after`, in order.
    async fn user_events_after(
        &self,
        user: UserId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<UserEvent>>;
    /// The position of `user`'s newest log entry (0 when none), and of their oldest kept.
    async fn user_log_bounds(&self, user: UserId) -> Result<(u64, u64)>;
    /// Saves where a stream of `user` stood in each room; the newest [`CHECKPOINTS_KEPT`] are
    /// kept.
    async fn save_checkpoint(&self, user: UserId, rooms: RoomPositions) -> Result<CheckpointId>;
    /// A checkpoint of `user`'s (`None` for another user's, or one pruned).
    async fn checkpoint(&self, user: UserId, id: CheckpointId) -> Result<Option<RoomPositions>>;
}

/// Checkpoint positions as bytes: per room, its id then a flag and the message id.
pub(crate) fn encode_positions(rooms: &RoomPositions) -> Vec<u8> {
    let mut out = Vec::with_capacity(rooms.len() * 25);
    for (room, message) in rooms {
        out.extend_from_slice(&room.bytes());
        match message {
            Some(id) => {
                out.push(1);
                out.extend_from_slice(&id.bytes());
            }
            None => out.push(0),
        }
    }
    out
}

/// The inverse of [`encode_positions`]; `None` for bytes it did not write.
pub(crate) fn decode_positions(mut bytes: &[u8]) -> Option<RoomPositions> {
    let mut rooms = Vec::new();
    while !bytes.is_empty() {
        let room: [u8; 12] = bytes.get(..12)?.try_into().ok()?;
        let (message, rest) = match bytes.get(12)? {
            0 => (None, &bytes[13..]),
            1 => (
                Some(MessageId::from_bytes(bytes.get(13..25)?.try_into().ok()?)),
                &bytes[25..],
            ),
            _ => return None,
        };
        rooms.push((RoomId::from_bytes(room), message));
        bytes = rest;
    }
    Some(rooms)
}

/// Opens the store a `--database-url` names, creating or migrating its schema (SQLite) or its
/// indexes (MongoDB).
pub async fn connect(url: &DatabaseUrl) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match url {
        DatabaseUrl::SqliteFile(path) => Arc::new(sqlite::SqliteStore::open(path).await?),
        DatabaseUrl::SqliteMemory => Arc::new(sqlite::SqliteStore::open_in_memory().await?),
        DatabaseUrl::Mongo(url) => mongo::MongoStore::connect(url).await?,
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

/// Where a driver puts the events of its committed writes: empty until the publisher takes the
/// receiving end ([`Store::take_events`]), then a bounded channel to it. The same for every
/// driver.
#[derive(Default)]
pub(crate) struct EventChannel(std::sync::Mutex<Option<tokio::sync::mpsc::Sender<RoomEvent>>>);

impl EventChannel {
    /// The receiving end, the first time; `None` after.
    pub(crate) fn take(&self) -> Option<tokio::sync::mpsc::Receiver<RoomEvent>> {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return None;
        }
        let (sender, receiver) = tokio::sync::mpsc::channel(EVENT_QUEUE);
        *slot = Some(sender);
        Some(receiver)
    }

    /// Where to send events now, if anyone listens.
    pub(crate) fn sender(&self) -> Option<tokio::sync::mpsc::Sender<RoomEvent>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// How a message changes after it is sent: each sets its time stamp, and takes the room's next
/// change number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Edit,
    Delete,
}

impl Change {
    /// The stored field (SQLite column, MongoDB field) its time stamp goes in.
    pub(crate) fn stamp(self) -> &'static str {
        match self {
            Self::Edit => "edited_at",
            Self::Delete => "deleted_at",
        }
    }
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

/// The version of [`unique_key`]'s rules. Stores keep it beside every stored key and recompute
/// older keys at startup (SQLite in its schema migration, MongoDB per document), so bump it
/// whenever `unique_key` returns something new for some name: a changed rule, or new Unicode
/// tables in `unicode-security` (the pinned examples in this module's tests then fail).
/// Version 1 was `name.to_lowercase()`.
pub const UNIQUE_KEY_VERSION: i64 = 2;

/// The key that makes usernames and room names unique: two names with one key look alike, in
/// any letter case, so only one of them may exist. Both drivers store it under a unique index.
///
/// It joins two equivalences that a single pass of either cannot: letter case and the TR39
/// confusable skeleton (`unicode_security::skeleton`: NFD, default-ignorable characters such as
/// U+200B dropped, each character replaced by its prototype, e.g. `0`→`O`, `I`→`l`, Cyrillic
/// `о`→`o`, `m`→`rn`). The skeleton is case-sensitive: capital `I` looks like `l` but small `i`
/// does not, and it yields capitals (`0`→`O`). So
/// - lowercase before the skeleton would key "I0bby" as "iobby", apart from "lobby";
/// - skeleton before lowercase would key "Ilse" as "llse" but "ilse" as "ilse", breaking the
///   any-letter-case rule (and logins in another case);
/// - so the key is upper-case (every case variant of a name becomes one string), skeleton,
///   lower-case, skeleton (which turns the lowered prototypes' own look-alikes, such as
///   "rn"/"m", into one), repeated until nothing changes (at most three rounds for any single
///   character; [`KEY_ROUNDS`] bounds it).
///
/// "Lobby", "lobby", "LOBBY", "L0bby", "I0bby", "lobby\u{200B}" and Cyrillic "lоbby" all key as
/// "lobby"; "arnold" and "amold" as "arnold". Letter case never splits a key (checked for every
/// character). The cost: a letter whose two cases resemble different Latin letters is keyed by
/// its capital, so Greek "ν" (capital "Ν") keys as "n", not "v"; and "i" shares "l"'s key,
/// because "I" looks like "l" ("ilse" and "llse" conflict).
pub fn unique_key(name: &str) -> String {
    use unicode_security::skeleton;
    let mut key = name.to_owned();
    for _ in 0..KEY_ROUNDS {
        let upper: String = skeleton(&key.to_uppercase()).collect();
        let next: String = skeleton(&upper.to_lowercase()).collect();
        if next == key {
            break;
        }
        key = next;
    }
    key
}

/// Most rounds [`unique_key`] takes; every single character settles within three.
const KEY_ROUNDS: usize = 6;

/// Whether `stored` is the name `asked` in some letter case: how a login picks its account
/// among the names sharing a key (a look-alike of a username does not log in as that user).
pub(crate) fn same_name_in_any_case(stored: &str, asked: &str) -> bool {
    use unicode_normalization::UnicodeNormalization as _;
    let fold = |s: &str| s.nfc().collect::<String>().to_lowercase();
    fold(stored) == fold(asked)
}

/// The name key of the direct room of `pair` (the smaller id first): no name has one like it
/// (names cannot hold control characters), so it takes no room name's place, and the unique
/// index on name keys makes the pair's room one.
pub(crate) fn direct_key(pair: [UserId; 2]) -> String {
    format!("\u{2}direct:{}:{}", pair[0].to_hex(), pair[1].to_hex())
}

/// The name key a room is stored under. Only public rooms' names are unique (by
/// [`unique_key`]): a private room's name would otherwise tell anyone who tries it that the room
/// exists, so each private room has a key of its own (its id, which no name can produce), as
/// does each direct room (its pair, [`direct_key`]).
pub fn room_key(room: &Room) -> String {
    match (room.direct, room.visibility) {
        (Some(pair), _) => direct_key(pair),
        (None, RoomVisibility::Private) => format!("\u{3}private:{}", room.id.to_hex()),
        (None, RoomVisibility::Public) => unique_key(&room.name),
    }
}

/// Two users as a direct room stores them: the smaller id first.
pub fn direct_pair(a: UserId, b: UserId) -> [UserId; 2] {
    if a <= b { [a, b] } else { [b, a] }
}

/// The range of keys given to the newer of two names that an older Confab let coexist and
/// that now share `key` (see the drivers' key upgrades): `key`, a NUL and the row's id. No
/// name can produce a NUL, so these never block a new name; a lookup by name scans the range.
pub(crate) fn displaced_keys(key: &str) -> (String, String) {
    (format!("{key}\u{0}"), format!("{key}\u{1}"))
}

/// The key given to a name displaced by an older look-alike (see [`displaced_keys`]).
pub(crate) fn displaced_key(key: &str, id: crate::model::ObjectId) -> String {
    format!("{key}\u{0}{}", id.to_hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_alikes_share_a_key() {
        let groups: &[&[&str]] = &[
            &[
                "lobby",
                "Lobby",
                "LOBBY",
                "L0bby",
                "I0bby",
                "l0bby",
                "1obby",
                "lobby\u{200B}",
            ],
            // Cyrillic о (U+043E), Cyrillic а (U+0430), Greek ο (U+03BF).
            &["lobby", "l\u{43E}bby", "LOBBY"],
            &["papa", "p\u{430}p\u{430}", "PAPA"],
            &["polo", "p\u{3BF}l\u{3BF}", "POLO"],
            &["arnold", "amold", "ARNOLD", "AMOLD"],
            &["m", "rn", "RN"],
            &["Ilse", "ilse", "ILSE", "llse"],
            // Canonically equivalent spellings: precomposed é and e + combining acute.
            &["caf\u{E9}", "cafe\u{301}", "CAF\u{C9}"],
        ];
        for group in groups {
            let key = unique_key(group[0]);
            for name in *group {
                assert_eq!(unique_key(name), key, "{name:?} vs {:?}", group[0]);
            }
        }
        for (a, b) in [
            ("lobby", "lobbies"),
            ("ada", "bob"),
            ("rn", "rm"),
            ("caf\u{E9}", "cafe"),
        ] {
            assert_ne!(unique_key(a), unique_key(b), "{a:?} vs {b:?}");
        }
    }

    /// The keys of some names, written down: when a dependency update changes them, bump
    /// [`UNIQUE_KEY_VERSION`] so stored keys are recomputed, then update this table.
    #[test]
    fn keys_are_pinned_to_their_version() {
        assert_eq!(UNIQUE_KEY_VERSION, 2);
        let pinned = [
            ("Lobby", "lobby"),
            ("I0bby", "lobby"),
            ("amold", "arnold"),
            ("Stra\u{DF}e", "strasse"),
            ("\u{3BD}uln", "nuln"),
            ("Caf\u{E9} 1", "cafe\u{301} l"),
        ];
        for (name, key) in pinned {
            assert_eq!(unique_key(name), key, "{name:?}");
        }
    }

    #[test]
    fn letter_case_never_splits_a_key() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let name = c.to_string();
            let cases = [c.to_uppercase().to_string(), c.to_lowercase().to_string()];
            if cases.iter().all(|other| *other == name) {
                continue; // a character without case
            }
            let key = unique_key(&name);
            for other in cases {
                assert_eq!(unique_key(&other), key, "{name:?} vs {other:?}");
            }
        }
    }

    #[test]
    fn a_login_finds_its_own_name_only() {
        assert!(same_name_in_any_case("Alice", "aLICE"));
        assert!(same_name_in_any_case("caf\u{E9}", "CAFE\u{301}"));
        assert!(!same_name_in_any_case("arnold", "amold"));
    }
}
