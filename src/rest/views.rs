//! The REST request and response bodies, as the original service shaped them. They are also
//! the schemas of the OpenAPI document.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{error::Error, model, service::ChatService};

use crate::http::time;

/// `POST /register` and `POST /login`.
#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    /// 3–32 of A-Z a-z 0-9 _ . -
    #[schema(pattern = "^[A-Za-z0-9_.-]{3,32}$")]
    pub username: String,
    /// 8–128 characters.
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
    /// `/register` on a server that takes new accounts by invitation only: the code.
    #[serde(default)]
    pub invite_code: Option<String>,
}

/// `POST /create_room`.
#[derive(Deserialize, ToSchema)]
pub struct CreateRoom {
    /// 1–64 characters, not blank, unique in any letter case.
    #[schema(min_length = 1, max_length = 64, pattern = "\\S")]
    pub roomname: String,
    /// Optional; when given it must be the caller's own id.
    #[serde(rename = "userID")]
    #[schema(pattern = "^[0-9a-fA-F]{24}$")]
    pub user_id: Option<String>,
}

/// `POST /join_room`.
#[derive(Deserialize, ToSchema)]
pub struct JoinRoom {
    #[serde(rename = "roomID")]
    #[schema(pattern = "^[0-9a-fA-F]{24}$")]
    pub room_id: String,
    /// Optional; when given it must be the caller's own id.
    #[serde(rename = "userID")]
    #[schema(pattern = "^[0-9a-fA-F]{24}$")]
    pub user_id: Option<String>,
}

/// `POST /mark_read`.
#[derive(Deserialize, ToSchema)]
pub struct MarkRead {
    #[serde(rename = "roomID")]
    #[schema(pattern = "^[0-9a-fA-F]{24}$")]
    pub room_id: String,
    /// The newest message read; an older one than the marker changes nothing.
    #[serde(rename = "messageID")]
    #[schema(pattern = "^[0-9a-fA-F]{24}$")]
    pub message_id: String,
}

/// What `POST /mark_read` answers: where the caller's marker now stands.
#[derive(Serialize, ToSchema)]
pub struct ReadStateResponse {
    pub message: String,
    #[serde(rename = "roomID")]
    pub room_id: String,
    #[serde(rename = "lastReadMessageID")]
    pub last_read_message_id: Option<String>,
    #[serde(rename = "unreadCount")]
    pub unread_count: u64,
    #[serde(rename = "mentionCount")]
    pub mention_count: u64,
}

/// `POST /send_message`. The text may come as `message` or, as some clients send it, `content`.
#[derive(Deserialize, ToSchema)]
pub struct SendMessage {
    #[serde(rename = "roomID")]
    #[schema(pattern = "^[0-9a-fA-F]{24}$")]
    pub room_id: String,
    /// 1–4000 characters, not blank (alias: `content`).
    #[serde(alias = "content")]
    #[schema(min_length = 1, max_length = 4000, pattern = "\\S")]
    pub message: String,
    /// Optional; when given it must be the caller's own id.
    #[serde(rename = "userID")]
    #[schema(pattern = "^[0-9a-fA-F]{24}$")]
    pub user_id: Option<String>,
    /// Optional idempotency key, 1–64 characters: a retry with the same key returns the first
    /// message instead of sending it twice.
    #[serde(rename = "clientId")]
    #[schema(min_length = 1, max_length = 64)]
    pub client_id: Option<String>,
}

/// `POST /delete_message`.
#[derive(Deserialize, ToSchema)]
pub struct DeleteMessage {
    /// Optional; when given the message must be in this room.
    #[serde(rename = "roomID")]
    #[schema(pattern = "^[0-9a-fA-F]{24}$")]
    pub room_id: Option<String>,
    #[serde(rename = "messageID")]
    #[schema(pattern = "^[0-9a-fA-F]{24}$")]
    pub message_id: String,
    /// Optional; when given it must be the caller's own id.
    #[serde(rename = "userID")]
    #[schema(pattern = "^[0-9a-fA-F]{24}$")]
    pub user_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    #[serde(rename = "createdAt")]
    pub created_at: String,
}

impl From<&model::User> for UserView {
    fn from(user: &model::User) -> Self {
        Self {
            id: user.id.to_hex(),
            username: user.username.clone(),
            created_at: time(&user.created_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RoomView {
    pub id: String,
    pub name: String,
    /// The creator's user id.
    #[serde(rename = "createdBy")]
    pub created_by: String,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    /// For a member: messages after their read marker that others sent.
    #[serde(rename = "unreadCount", skip_serializing_if = "Option::is_none")]
    pub unread_count: Option<u64>,
    /// For a member: those of them that mention them.
    #[serde(rename = "mentionCount", skip_serializing_if = "Option::is_none")]
    pub mention_count: Option<u64>,
}

impl From<&model::Room> for RoomView {
    fn from(room: &model::Room) -> Self {
        Self {
            id: room.id.to_hex(),
            name: room.name.clone(),
            created_by: room.created_by.to_hex(),
            created_at: time(&room.created_at),
            unread_count: None,
            mention_count: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SenderView {
    pub id: String,
    pub username: String,
}

#[derive(Serialize, ToSchema)]
pub struct MessageView {
    pub id: String,
    #[serde(rename = "roomId")]
    pub room_id: String,
    pub body: String,
    pub sender: SenderView,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(rename = "editedAt")]
    pub edited_at: Option<String>,
    #[serde(rename = "clientId")]
    #[schema(min_length = 1, max_length = 64)]
    pub client_id: Option<String>,
}

impl MessageView {
    /// The view of a message, with its sender's name.
    pub async fn load(service: &ChatService, message: model::Message) -> Result<Self, Error> {
        let sender = service.user(message.sender_id).await?;
        Ok(Self {
            id: message.id.to_hex(),
            room_id: message.room_id.to_hex(),
            sender: SenderView {
                id: sender.id.to_hex(),
                username: sender.username,
            },
            created_at: time(&message.created_at),
            edited_at: message.edited_at.as_ref().map(time),
            client_id: message.client_id,
            body: message.body,
        })
    }
}

#[derive(Serialize, ToSchema)]
pub struct RegisterResponse {
    pub message: String,
    pub user: UserView,
}

#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Trade it for new tokens at `POST /refresh` before `expires_at`; each works once.
    pub refresh_token: String,
    /// When `access_token` expires (RFC 3339).
    pub expires_at: String,
    pub user: UserView,
}

impl From<crate::service::AuthPayload> for LoginResponse {
    fn from(payload: crate::service::AuthPayload) -> Self {
        Self {
            access_token: payload.token,
            token_type: "Bearer".into(),
            refresh_token: payload.refresh_token,
            expires_at: time(&payload.expires_at),
            user: UserView::from(&payload.user),
        }
    }
}

/// `POST /refresh`.
#[derive(Deserialize, ToSchema)]
pub struct Refresh {
    pub refresh_token: String,
}

/// `POST /logout`.
#[derive(Serialize, ToSchema)]
pub struct LogoutResponse {
    pub message: String,
}

#[derive(Serialize, ToSchema)]
pub struct RoomResponse {
    pub message: String,
    pub room: RoomView,
}

#[derive(Serialize, ToSchema)]
pub struct SendResponse {
    pub message: MessageView,
}

#[derive(Serialize, ToSchema)]
pub struct DeleteResponse {
    pub message: String,
    #[serde(rename = "messageID")]
    pub message_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct MessagesResponse {
    /// Oldest first.
    pub messages: Vec<MessageView>,
}

#[derive(Serialize, ToSchema)]
pub struct RoomsResponse {
    /// Oldest first.
    pub rooms: Vec<RoomView>,
}

/// Every error: `{"error": {"code", "message", "field"?}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// `BAD_USER_INPUT`, `UNAUTHENTICATED`, `FORBIDDEN`, `NOT_FOUND`, `CONFLICT`,
    /// `RATE_LIMITED` or `INTERNAL_SERVER_ERROR`.
    pub code: String,
    pub message: String,
    /// The request field the error is about, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// With `RATE_LIMITED`: whole seconds before the request will be taken again (also the
    /// `Retry-After` header).
    #[serde(rename = "retryAfter", skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}
