//! The chat domain's values: users, rooms, messages, the events of a room, and pages of them.
//!
//! These are plain data shared by every layer. Ids are BSON ObjectIds on every backend (hex
//! strings at the edges), each kind its own type, so a room's id cannot be passed where a
//! user's is meant; times are UTC.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use bson::oid::ObjectId;

use crate::error::{Error, Result};

/// An id type of its own for each kind of thing, over an ObjectId.
macro_rules! id_types {
    ($($(#[$doc:meta])* $name:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(ObjectId);

        impl $name {
            pub fn from_bytes(bytes: [u8; 12]) -> Self {
                Self(ObjectId::from_bytes(bytes))
            }

            pub fn bytes(&self) -> [u8; 12] {
                self.0.bytes()
            }

            /// The 24 hex characters every API shows.
            pub fn to_hex(&self) -> String {
                self.0.to_hex()
            }

            pub fn object_id(&self) -> ObjectId {
                self.0
            }
        }

        impl From<ObjectId> for $name {
            fn from(id: ObjectId) -> Self {
                Self(id)
            }
        }

        impl From<$name> for ObjectId {
            fn from(id: $name) -> Self {
                id.0
            }
        }

        impl From<$name> for bson::Bson {
            fn from(id: $name) -> Self {
                Self::ObjectId(id.0)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(&self.0, f)
            }
        }
    )*};
}

id_types! {
    /// A user's id.
    UserId;
    /// A room's id.
    RoomId;
    /// A message's id, which is also its place in its room's history.
    MessageId;
    /// A session's id: one sign-in, the family of the refresh tokens rotated from it.
    SessionId;
    /// An entry of a room's moderation log.
    ModerationId;
    /// A `myEvents` stream's saved positions (see [`UserEventKind`]).
    CheckpointId;
}

/// Parses a client-supplied id of the kind `T` wants, naming the field when it is not 24 hex
/// characters.
pub fn parse_id<T: From<ObjectId>>(field: &'static str, value: &str) -> Result<T> {
    if value.len() != 24 {
        return Err(Error::invalid(field, "must be a 24-character hex id"));
    }
    ObjectId::parse_str(value)
        .map(T::from)
        .map_err(|_| Error::invalid(field, "must be a 24-character hex id"))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    pub username: String,
    pub created_at: DateTime<Utc>,
}

/// One sign-in of a user: what its refresh tokens renew and what logging out revokes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    pub created_at: DateTime<Utc>,
    /// When it was last refreshed (or created).
    pub last_used_at: DateTime<Utc>,
    /// When it ends unless refreshed before (each refresh moves it `--session-ttl` ahead).
    pub expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Session {
    /// Whether its tokens may still be used at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Room {
    pub id: RoomId,
    /// Empty for a direct room, which is named after the other person by whoever looks.
    pub name: String,
    pub created_by: UserId,
    pub created_at: DateTime<Utc>,
    pub visibility: RoomVisibility,
    pub topic: Option<String>,
    /// The two people of a direct room (the smaller id first); `None` for any other room.
    pub direct: Option<[UserId; 2]>,
}

impl Room {
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    pub fn is_private(&self) -> bool {
        self.visibility == RoomVisibility::Private
    }
}

/// Who may see and join a room: anyone signed in (`Public`), or its members and the people
/// they invite (`Private`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RoomVisibility {
    Public,
    Private,
}

impl RoomVisibility {
    /// How stores spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        match stored {
            "public" => Some(Self::Public),
            "private" => Some(Self::Private),
            _ => None,
        }
    }
}

/// A member's standing in a room. Ordered: `Owner > Admin > Member`; one acts only on those of
/// a lower role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RoomRole {
    Member,
    Admin,
    Owner,
}

impl RoomRole {
    /// How stores spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Member => "member",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        match stored {
            "owner" => Some(Self::Owner),
            "admin" => Some(Self::Admin),
            "member" => Some(Self::Member),
            _ => None,
        }
    }

    /// Whether this role moderates a room (kicks, bans, edits it, deletes any message).
    pub fn moderates(self) -> bool {
        self >= Self::Admin
    }
}

/// One person's membership of a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub room_id: RoomId,
    pub user: User,
    pub role: RoomRole,
    pub joined_at: DateTime<Utc>,
}

/// An invitation to join a room, until the invitee joins or declines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    pub room_id: RoomId,
    pub invitee: UserId,
    pub inviter: UserId,
    pub created_at: DateTime<Utc>,
}

/// What a moderator did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ModerationAction {
    Kick,
    Ban,
    Unban,
    RoleChange,
    RoomUpdate,
    MessageDelete,
}

impl ModerationAction {
    /// How stores spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kick => "kick",
            Self::Ban => "ban",
            Self::Unban => "unban",
            Self::RoleChange => "role_change",
            Self::RoomUpdate => "room_update",
            Self::MessageDelete => "message_delete",
        }
    }

    pub fn parse(stored: &str) -> Option<Self> {
        [
            Self::Kick,
            Self::Ban,
            Self::Unban,
            Self::RoleChange,
            Self::RoomUpdate,
            Self::MessageDelete,
        ]
        .into_iter()
        .find(|action| action.as_str() == stored)
    }
}

/// One entry of a room's moderation log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModerationEntry {
    pub id: ModerationId,
    pub room_id: RoomId,
    pub action: ModerationAction,
    pub actor: UserId,
    pub target: Option<UserId>,
    pub message: Option<MessageId>,
    /// The reason given (a ban), or what changed (a role change, a room update).
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: MessageId,
    pub room_id: RoomId,
    pub sender_id: UserId,
    /// Empty once the message is deleted (a tombstone).
    pub body: String,
    pub client_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub edited_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
    /// Who deleted it, when someone other than its author did (a moderator).
    pub deleted_by: Option<UserId>,
    /// The members it mentions by `@username` (never its sender), as of its latest edit.
    pub mentions: Vec<UserId>,
    /// The room's change sequence number of this message's latest change (its creation, edit
    /// or deletion): every message change in a room takes the next number, in commit order,
    /// across every instance. Internal: a subscriber that misses events reads the changes
    /// after the last number it saw.
    pub seq: u64,
}

impl Message {
    pub fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// Where one member stands in a room: their read marker and what lies after it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadState {
    /// The newest message they have read (everything up to it counts as read).
    pub last_read: Option<MessageId>,
    /// Live messages after the marker that others sent.
    pub unread: u64,
    /// Those of them that mention the member.
    pub mentions: u64,
}

/// Something that happened in a room, as published on the event bus after it was stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoomEvent {
    MessageAdded(Message),
    MessageEdited(Message),
    MessageDeleted {
        room_id: RoomId,
        message_id: MessageId,
        /// The deletion's change sequence number (see [`Message::seq`]).
        seq: u64,
        /// The moderator who deleted it, when its author did not.
        deleted_by: Option<UserId>,
    },
    MemberJoined {
        room_id: RoomId,
        user: User,
    },
    MemberLeft {
        room_id: RoomId,
        user: User,
    },
    Typing {
        room_id: RoomId,
        user: User,
        typing: bool,
    },
    MemberRoleChanged {
        room_id: RoomId,
        user: User,
        role: RoomRole,
    },
    /// A moderator removed `user` from the room (a departure, like `MemberLeft`).
    MemberKicked {
        room_id: RoomId,
        user: User,
        by: User,
    },
    /// A moderator banned `user` from the room (a departure when they were a member).
    MemberBanned {
        room_id: RoomId,
        user: User,
        by: User,
        reason: Option<String>,
    },
    /// The room's name, topic or visibility changed.
    RoomUpdated(Room),
    /// An entry of one user's own log, on that user's channel (see [`user_channel`]).
    ForUser(UserEvent),
    /// A member's presence changed (told to each room they are in, up to a size).
    PresenceChanged {
        room_id: RoomId,
        user: User,
        shown: Shown,
        /// When it was announced: of the copies that reach a stream through several rooms, an
        /// older one than told already is stale.
        at: DateTime<Utc>,
    },
}

/// What a user's presence shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Shown {
    Online,
    Away,
    Offline,
}

/// The bus channel of one user's own events: keyed like a room, by the user's id (ids are
/// ObjectIds minted by one generator, so no room has a user's id).
pub fn user_channel(user: UserId) -> RoomId {
    RoomId::from_bytes(user.bytes())
}

/// Why a user's membership ended, as `RemovedFromRoom.reason` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemovalReason {
    Left,
    Kicked,
    Banned,
    /// The room was deleted.
    Deleted,
    /// Found out of the room with no record of how (a stream resuming sees it).
    Unknown,
}

impl RemovalReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Left => "left",
            Self::Kicked => "kicked",
            Self::Banned => "banned",
            Self::Deleted => "deleted",
            Self::Unknown => "removed",
        }
    }
}

/// What one entry of a user's own log records: the things that concern that user alone, which
/// `myEvents` replays from a cursor. Messages are not here (a send writes nothing per member):
/// the stream reads them from each room's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEventKind {
    /// They became a member of a room whose newest message then was `after`: what follows it
    /// is theirs to hear.
    Joined {
        room_id: RoomId,
        after: Option<MessageId>,
    },
    /// Their membership ended.
    Removed {
        room_id: RoomId,
        reason: RemovalReason,
    },
    /// They were invited to a private room.
    Invited(Invitation),
    /// Their read marker in a room moved forward.
    ReadMoved { room_id: RoomId },
}

/// One entry of a user's own log: `pos` counts up from 1 per user, with no gaps once written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEvent {
    pub user_id: UserId,
    pub pos: u64,
    pub kind: UserEventKind,
    pub at: DateTime<Utc>,
}

/// Where a `myEvents` stream stood in each room: the newest message it had passed (`None`
/// before the room's first message).
pub type RoomPositions = Vec<(RoomId, Option<MessageId>)>;

impl RoomEvent {
    pub fn room_id(&self) -> RoomId {
        match self {
            Self::MessageAdded(m) | Self::MessageEdited(m) => m.room_id,
            Self::MessageDeleted { room_id, .. }
            | Self::MemberJoined { room_id, .. }
            | Self::MemberLeft { room_id, .. }
            | Self::Typing { room_id, .. }
            | Self::MemberRoleChanged { room_id, .. }
            | Self::MemberKicked { room_id, .. }
            | Self::MemberBanned { room_id, .. }
            | Self::PresenceChanged { room_id, .. } => *room_id,
            Self::RoomUpdated(room) => room.id,
            Self::ForUser(event) => user_channel(event.user_id),
        }
    }

    /// The user whose membership this event ends, if it ends one: they left, were kicked or
    /// were banned.
    pub fn departed(&self) -> Option<UserId> {
        match self {
            Self::MemberLeft { user, .. }
            | Self::MemberKicked { user, .. }
            | Self::MemberBanned { user, .. } => Some(user.id),
            _ => None,
        }
    }

    /// The room change sequence number of a message event; `None` for membership and typing.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Self::MessageAdded(m) | Self::MessageEdited(m) => Some(m.seq),
            Self::MessageDeleted { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    /// Whether losing this event would lose state a client cannot get back otherwise.
    pub fn is_durable(&self) -> bool {
        !matches!(self, Self::Typing { .. } | Self::PresenceChanged { .. })
    }
}

/// Which slice of an ordered list to read: forwards from a cursor or backwards from one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageRequest {
    /// The first `first` items after `after` (from the start when `None`).
    Forward {
        after: Option<ObjectId>,
        first: usize,
    },
    /// The last `last` items before `before` (from the end when `None`).
    Backward {
        before: Option<ObjectId>,
        last: usize,
    },
}

/// A slice of an ordered list, oldest first, with whether more exists on either side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_previous: bool,
    pub has_next: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(parse_id::<RoomId>("roomId", "0123456789abcdef01234567").is_ok());
        for bad in [
            "",
            "xyz",
            "0123456789abcdef0123456z",
            "0123456789abcdef012345670",
        ] {
            let err = parse_id::<RoomId>("roomId", bad).unwrap_err();
            assert_eq!(err.field(), Some("roomId"), "{bad}");
        }
    }
}
