//! GraphQL output types over the domain values.

use async_graphql::{
    Context, Enum, ID, Object, Result, SimpleObject, Union, connection::Connection,
};
use chrono::{DateTime, Utc};

use super::{GqlResult, caller, page_complexity, page_size, service};
use crate::{model, service::limits};

pub struct User(pub model::User);

#[Object]
impl User {
    async fn id(&self) -> ID {
        ID(self.0.id.to_hex())
    }
    async fn username(&self) -> &str {
        &self.0.username
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    /// ONLINE while a socket of theirs is open (and for `--presence-timeout` after the last
    /// closes), unless they chose AWAY or OFFLINE; OFFLINE otherwise.
    async fn presence(&self, ctx: &Context<'_>) -> Result<Presence> {
        let state = service(ctx)?.presence_of(self.0.id).await.gql()?;
        Ok(state.shown.into())
    }
    /// When a socket of theirs was last open (now, while one is); null if never seen.
    async fn last_seen_at(&self, ctx: &Context<'_>) -> Result<Option<DateTime<Utc>>> {
        let state = service(ctx)?.presence_of(self.0.id).await.gql()?;
        Ok(state.last_seen)
    }
}

/// Whether someone is there.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "crate::service::presence::Shown")]
pub enum Presence {
    Online,
    Away,
    Offline,
}

/// Who may see and join a room.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "model::RoomVisibility")]
pub enum RoomVisibility {
    /// Listed in the directory; anyone signed in may read about it and join.
    Public,
    /// Seen by its members and the people invited, by nobody else.
    Private,
}

/// A member's standing in a room: the owner sets roles; the owner and admins moderate.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "model::RoomRole")]
pub enum RoomRole {
    Owner,
    Admin,
    Member,
}

/// What a moderator did.
#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(remote = "model::ModerationAction")]
pub enum ModerationAction {
    Kick,
    Ban,
    Unban,
    RoleChange,
    RoomUpdate,
    MessageDelete,
}

/// A room, with the caller's read state read once however many of its fields are asked for.
pub struct Room(
    pub model::Room,
    tokio::sync::OnceCell<Option<model::ReadState>>,
    tokio::sync::OnceCell<Option<model::Message>>,
);

impl From<model::Room> for Room {
    fn from(room: model::Room) -> Self {
        Self(
            room,
            tokio::sync::OnceCell::new(),
            tokio::sync::OnceCell::new(),
        )
    }
}

impl Room {
    /// A room whose read state for the caller is known already.
    pub fn with_read_state(room: model::Room, state: model::ReadState) -> Self {
        Self(
            room,
            tokio::sync::OnceCell::new_with(Some(Some(state))),
            tokio::sync::OnceCell::new(),
        )
    }

    /// A room whose read state and newest message (for the caller, a member) are known.
    pub fn with_summary(
        room: model::Room,
        state: Option<model::ReadState>,
        last: Option<model::Message>,
    ) -> Self {
        Self(
            room,
            tokio::sync::OnceCell::new_with(Some(state)),
            tokio::sync::OnceCell::new_with(Some(last)),
        )
    }

    /// The caller's read state here (`None` for a non-member), read on first use.
    async fn read_state(&self, ctx: &Context<'_>) -> Result<Option<model::ReadState>> {
        self.1
            .get_or_try_init(|| async {
                service(ctx)?.read_state(caller(ctx), self.0.id).await.gql()
            })
            .await
            .copied()
    }
}

#[Object]
impl Room {
    async fn id(&self) -> ID {
        ID(self.0.id.to_hex())
    }
    /// The room's name; for a direct room, the other person's username.
    async fn name(&self, ctx: &Context<'_>) -> Result<String> {
        service(ctx)?.room_name(caller(ctx), &self.0).await.gql()
    }
    async fn topic(&self) -> Option<&str> {
        self.0.topic.as_deref()
    }
    async fn visibility(&self) -> RoomVisibility {
        self.0.visibility.into()
    }
    /// Whether this is the direct room of two people.
    async fn is_direct(&self) -> bool {
        self.0.is_direct()
    }
    /// The caller's role here; null when not a member.
    async fn my_role(&self, ctx: &Context<'_>) -> Result<Option<RoomRole>> {
        let mine = service(ctx)?
            .my_membership(caller(ctx), self.0.id)
            .await
            .gql()?;
        Ok(mine.map(|m| m.role.into()))
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn created_by(&self, ctx: &Context<'_>) -> Result<User> {
        service(ctx)?.user(self.0.created_by).await.map(User).gql()
    }
    /// Messages after the caller's read marker that others sent and that are not deleted (0
    /// for a non-member).
    async fn unread_count(&self, ctx: &Context<'_>) -> Result<i32> {
        let state = self.read_state(ctx).await?;
        Ok(state.map_or(0, |s| i32::try_from(s.unread).unwrap_or(i32::MAX)))
    }
    /// Those of the unread messages that mention the caller.
    async fn mention_count(&self, ctx: &Context<'_>) -> Result<i32> {
        let state = self.read_state(ctx).await?;
        Ok(state.map_or(0, |s| i32::try_from(s.mentions).unwrap_or(i32::MAX)))
    }
    /// The newest message the caller has read (null for a non-member, or before any).
    async fn last_read_message_id(&self, ctx: &Context<'_>) -> Result<Option<ID>> {
        let state = self.read_state(ctx).await?;
        Ok(state.and_then(|s| s.last_read).map(|id| ID(id.to_hex())))
    }
    /// The room's newest message that is not deleted (members only; null otherwise).
    async fn last_message(&self, ctx: &Context<'_>) -> Result<Option<Message>> {
        let last = self
            .2
            .get_or_try_init(|| async {
                service(ctx)?
                    .last_message(caller(ctx), self.0.id)
                    .await
                    .gql()
            })
            .await?;
        Ok(last.clone().map(Message))
    }
    /// Members in the order they joined, at most `first` (up to 1000). Those of a private room
    /// are listed to its members only.
    #[graphql(complexity = "page_complexity(
        page_size(Some(first), 100, limits::MEMBERS_MAX),
        child_complexity
    )")]
    async fn members(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 100)] first: i32,
    ) -> Result<Vec<User>> {
        let limit = usize::try_from(first).unwrap_or(0).min(limits::MEMBERS_MAX);
        let members = service(ctx)?
            .members(caller(ctx), self.0.id, limit)
            .await
            .gql()?;
        Ok(members.into_iter().map(User).collect())
    }
    /// Memberships with their roles, in the order members joined (at most 100 a page, 50 by
    /// default); `after` is a cursor from an earlier page. Listed to members only for a
    /// private room.
    #[graphql(complexity = "page_complexity(
        page_size(first, limits::PAGE_DEFAULT, limits::PAGE_MAX),
        child_complexity
    )")]
    async fn memberships(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> Result<Connection<String, Membership>> {
        let limit = match first {
            None => limits::PAGE_DEFAULT,
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|n| *n <= limits::PAGE_MAX)
                .ok_or_else(|| {
                    crate::error::Error::invalid(
                        "first",
                        format!("must be between 0 and {}", limits::PAGE_MAX),
                    )
                })
                .gql()?,
        };
        let after = after
            .map(|a| crate::model::parse_id::<model::UserId>("after", &a))
            .transpose()
            .gql()?;
        let mut items = service(ctx)?
            .memberships(caller(ctx), self.0.id, after, limit + 1)
            .await
            .gql()?;
        let more = items.len() > limit;
        items.truncate(limit);
        let mut connection = Connection::new(after.is_some(), more);
        connection.edges.extend(
            items
                .into_iter()
                .map(|m| async_graphql::connection::Edge::new(m.user.id.to_hex(), Membership(m))),
        );
        Ok(connection)
    }
    async fn member_count(&self, ctx: &Context<'_>) -> Result<i32> {
        let count = service(ctx)?.member_count(self.0.id).await.gql()?;
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    }
}

/// One person's membership of a room.
pub struct Membership(pub model::Membership);

#[Object]
impl Membership {
    async fn user(&self) -> User {
        User(self.0.user.clone())
    }
    async fn role(&self) -> RoomRole {
        self.0.role.into()
    }
    async fn joined_at(&self) -> DateTime<Utc> {
        self.0.joined_at
    }
}

/// An invitation to join a room: `joinRoom` accepts it, `declineInvitation` declines it.
pub struct Invitation(pub model::Invitation);

#[Object]
impl Invitation {
    async fn room(&self, ctx: &Context<'_>) -> Result<Room> {
        let room = service(ctx)?
            .seen_room(caller(ctx), self.0.room_id)
            .await
            .gql()?;
        Ok(Room::from(room.room))
    }
    async fn inviter(&self, ctx: &Context<'_>) -> Result<User> {
        service(ctx)?.user(self.0.inviter).await.map(User).gql()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

/// One entry of a room's moderation log.
pub struct ModerationEntry(pub model::ModerationEntry);

#[Object]
impl ModerationEntry {
    async fn id(&self) -> ID {
        ID(self.0.id.to_hex())
    }
    async fn action(&self) -> ModerationAction {
        self.0.action.into()
    }
    /// Who did it.
    async fn actor(&self, ctx: &Context<'_>) -> Result<User> {
        service(ctx)?.user(self.0.actor).await.map(User).gql()
    }
    /// Whom it was done to (none for a room update).
    async fn target(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        match self.0.target {
            Some(id) => service(ctx)?.user(id).await.map(|u| Some(User(u))).gql(),
            None => Ok(None),
        }
    }
    /// The message deleted (`MESSAGE_DELETE`).
    async fn message(&self) -> Option<ID> {
        self.0.message.map(|m| ID(m.to_hex()))
    }
    /// The reason given for a ban; what changed, for a role change or a room update.
    async fn reason(&self) -> Option<&str> {
        self.0.reason.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

pub struct Message(pub model::Message);

#[Object]
impl Message {
    async fn id(&self) -> ID {
        ID(self.0.id.to_hex())
    }
    async fn room_id(&self) -> ID {
        ID(self.0.room_id.to_hex())
    }
    async fn body(&self) -> &str {
        &self.0.body
    }
    async fn sender(&self, ctx: &Context<'_>) -> Result<User> {
        service(ctx)?.user(self.0.sender_id).await.map(User).gql()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn edited_at(&self) -> Option<DateTime<Utc>> {
        self.0.edited_at
    }
    /// The members it mentions by `@username` (never its sender).
    async fn mentions(&self, ctx: &Context<'_>) -> Result<Vec<User>> {
        let service = service(ctx)?;
        let mut users = Vec::with_capacity(self.0.mentions.len());
        for id in &self.0.mentions {
            users.push(User(service.user(*id).await.gql()?));
        }
        Ok(users)
    }
    /// The sender's idempotency key, when they gave one.
    async fn client_id(&self) -> Option<&str> {
        self.0.client_id.as_deref()
    }
}

/// A signed-in session's tokens: send `token` as `Authorization: Bearer <token>` until
/// `expiresAt`, then trade `refreshToken` for new ones with `refreshSession`.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// The access token (short-lived).
    pub token: String,
    /// Renews the session once (each use returns a new one); keep it secret.
    pub refresh_token: String,
    /// When `token` expires.
    pub expires_at: DateTime<Utc>,
    pub user: User,
}

impl From<crate::service::AuthPayload> for AuthPayload {
    fn from(payload: crate::service::AuthPayload) -> Self {
        Self {
            token: payload.token,
            refresh_token: payload.refresh_token,
            expires_at: payload.expires_at,
            user: User(payload.user),
        }
    }
}

/// One signed-in session of the caller's.
pub struct Session {
    pub session: model::Session,
    /// Whether the request came with this session's token.
    pub current: bool,
}

#[Object]
impl Session {
    async fn id(&self) -> ID {
        ID(self.session.id.to_hex())
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.session.created_at
    }
    /// When it was last refreshed (or signed in).
    async fn last_used_at(&self) -> DateTime<Utc> {
        self.session.last_used_at
    }
    /// The `User-Agent` it signed in with.
    async fn user_agent(&self) -> Option<&str> {
        self.session.user_agent.as_deref()
    }
    /// Whether this is the session of the request's own token.
    async fn current(&self) -> bool {
        self.current
    }
}

#[derive(SimpleObject)]
pub struct MessageAdded {
    pub message: Message,
}

#[derive(SimpleObject)]
pub struct MessageEdited {
    pub message: Message,
}

pub struct MessageDeleted {
    pub message_id: ID,
    pub room_id: ID,
    pub deleted_by: Option<model::UserId>,
}

#[Object]
impl MessageDeleted {
    async fn message_id(&self) -> &ID {
        &self.message_id
    }
    async fn room_id(&self) -> &ID {
        &self.room_id
    }
    /// The moderator who deleted it; null when its author did.
    async fn deleted_by(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        match self.deleted_by {
            Some(id) => service(ctx)?.user(id).await.map(|u| Some(User(u))).gql(),
            None => Ok(None),
        }
    }
}

#[derive(SimpleObject)]
pub struct MemberJoined {
    pub user: User,
    pub room_id: ID,
}

#[derive(SimpleObject)]
pub struct MemberLeft {
    pub user: User,
    pub room_id: ID,
}

#[derive(SimpleObject)]
pub struct MemberRoleChanged {
    pub user: User,
    pub room_id: ID,
    pub role: RoomRole,
}

/// A moderator removed a member; they may come back (a public room) or be invited again.
#[derive(SimpleObject)]
pub struct MemberKicked {
    pub user: User,
    pub room_id: ID,
    pub by: User,
}

/// A moderator banned a user from the room.
#[derive(SimpleObject)]
pub struct MemberBanned {
    pub user: User,
    pub room_id: ID,
    pub by: User,
    pub reason: Option<String>,
}

/// The room's name, topic or visibility changed.
#[derive(SimpleObject)]
pub struct RoomUpdated {
    pub room: Box<Room>,
}

#[derive(SimpleObject)]
pub struct Typing {
    pub user: User,
    pub room_id: ID,
    pub typing: bool,
}

/// Something that happened in a room.
#[derive(Union)]
pub enum RoomEvent {
    MessageAdded(MessageAdded),
    MessageEdited(MessageEdited),
    MessageDeleted(MessageDeleted),
    MemberJoined(MemberJoined),
    MemberLeft(MemberLeft),
    Typing(Typing),
    MemberRoleChanged(MemberRoleChanged),
    MemberKicked(MemberKicked),
    MemberBanned(MemberBanned),
    RoomUpdated(RoomUpdated),
}

impl RoomEvent {
    /// The union member a room event shows as; `None` for a user's own log entry, which is
    /// never on a room's feed.
    pub fn of(event: &model::RoomEvent) -> Option<Self> {
        use model::RoomEvent as E;

        Some(match event {
            E::MessageAdded(m) => Self::MessageAdded(MessageAdded {
                message: Message(m.clone()),
            }),
            E::MessageEdited(m) => Self::MessageEdited(MessageEdited {
                message: Message(m.clone()),
            }),
            E::MessageDeleted {
                room_id,
                message_id,
                deleted_by,
                ..
            } => Self::MessageDeleted(MessageDeleted {
                message_id: ID(message_id.to_hex()),
                room_id: ID(room_id.to_hex()),
                deleted_by: *deleted_by,
            }),
            E::MemberJoined { room_id, user } => Self::MemberJoined(MemberJoined {
                user: User(user.clone()),
                room_id: ID(room_id.to_hex()),
            }),
            E::MemberLeft { room_id, user } => Self::MemberLeft(MemberLeft {
                user: User(user.clone()),
                room_id: ID(room_id.to_hex()),
            }),
            E::Typing {
                room_id,
                user,
                typing,
            } => Self::Typing(Typing {
                user: User(user.clone()),
                room_id: ID(room_id.to_hex()),
                typing: *typing,
            }),
            E::MemberRoleChanged {
                room_id,
                user,
                role,
            } => Self::MemberRoleChanged(MemberRoleChanged {
                user: User(user.clone()),
                room_id: ID(room_id.to_hex()),
                role: (*role).into(),
            }),
            E::MemberKicked { room_id, user, by } => Self::MemberKicked(MemberKicked {
                user: User(user.clone()),
                room_id: ID(room_id.to_hex()),
                by: User(by.clone()),
            }),
            E::MemberBanned {
                room_id,
                user,
                by,
                reason,
            } => Self::MemberBanned(MemberBanned {
                user: User(user.clone()),
                room_id: ID(room_id.to_hex()),
                by: User(by.clone()),
                reason: reason.clone(),
            }),
            E::RoomUpdated(room) => Self::RoomUpdated(RoomUpdated {
                room: Box::new(Room::from(room.clone())),
            }),
            E::ForUser(_) | E::PresenceChanged { .. } => return None,
        })
    }
}
