//! GraphQL output types over the domain values.

use async_graphql::{Context, ID, Object, Result, SimpleObject, Union};
use chrono::{DateTime, Utc};

use super::{GqlResult, page_complexity, page_size, service};
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
}

pub struct Room(pub model::Room);

#[Object]
impl Room {
    async fn id(&self) -> ID {
        ID(self.0.id.to_hex())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
    async fn created_by(&self, ctx: &Context<'_>) -> Result<User> {
        service(ctx)?.user(self.0.created_by).await.map(User).gql()
    }
    /// Members in the order they joined, at most `first` (up to 1000).
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
        let members = service(ctx)?.members(self.0.id, limit).await.gql()?;
        Ok(members.into_iter().map(User).collect())
    }
    async fn member_count(&self, ctx: &Context<'_>) -> Result<i32> {
        let count = service(ctx)?.member_count(self.0.id).await.gql()?;
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
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

#[derive(SimpleObject)]
pub struct MessageDeleted {
    pub message_id: ID,
    pub room_id: ID,
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
}

impl From<&model::RoomEvent> for RoomEvent {
    fn from(event: &model::RoomEvent) -> Self {
        use model::RoomEvent as E;

        match event {
            E::MessageAdded(m) => Self::MessageAdded(MessageAdded {
                message: Message(m.clone()),
            }),
            E::MessageEdited(m) => Self::MessageEdited(MessageEdited {
                message: Message(m.clone()),
            }),
            E::MessageDeleted {
                room_id,
                message_id,
                ..
            } => Self::MessageDeleted(MessageDeleted {
                message_id: ID(message_id.to_hex()),
                room_id: ID(room_id.to_hex()),
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
        }
    }
}
