//! The original service's Socket.IO payloads: how a message, a user and each room event look to
//! its clients (`roomID`, `messageID`), in one place.

use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    error::Error,
    http::time,
    model::{Message, RoomEvent, User},
    service::ChatService,
};

#[derive(Serialize)]
pub struct UserPayload {
    pub id: String,
    pub username: String,
}

impl From<&User> for UserPayload {
    fn from(user: &User) -> Self {
        Self {
            id: user.id.to_hex(),
            username: user.username.clone(),
        }
    }
}

/// A room: what `join` acknowledges and `room_update` carries. A direct room has no name of its
/// own (and is never updated).
#[derive(Serialize)]
pub struct RoomPayload {
    pub id: String,
    pub name: String,
    pub topic: Option<String>,
    pub visibility: &'static str,
}

impl From<&crate::model::Room> for RoomPayload {
    fn from(room: &crate::model::Room) -> Self {
        Self {
            id: room.id.to_hex(),
            name: room.name.clone(),
            topic: room.topic.clone(),
            visibility: match room.visibility {
                crate::model::RoomVisibility::Public => "PUBLIC",
                crate::model::RoomVisibility::Private => "PRIVATE",
            },
        }
    }
}

/// A message: the `message` event, and what the `message` acknowledgement carries.
#[derive(Serialize)]
pub struct MessagePayload {
    pub id: String,
    #[serde(rename = "roomID")]
    pub room_id: String,
    pub body: String,
    pub sender: UserPayload,
    #[serde(rename = "createdAt")]
    pub created_at: String,
    #[serde(rename = "editedAt")]
    pub edited_at: Option<String>,
    #[serde(rename = "clientId")]
    pub client_id: Option<String>,
}

impl MessagePayload {
    /// The payload of a message, with its sender's name.
    pub async fn load(service: &ChatService, message: &Message) -> Result<Self, Error> {
        let sender = service.user(message.sender_id).await?;
        Ok(Self {
            id: message.id.to_hex(),
            room_id: message.room_id.to_hex(),
            body: message.body.clone(),
            sender: UserPayload::from(&sender),
            created_at: time(&message.created_at),
            edited_at: message.edited_at.as_ref().map(time),
            client_id: message.client_id.clone(),
        })
    }
}

/// The seed's event name and payload for a room event.
pub async fn event(
    service: &ChatService,
    event: &RoomEvent,
) -> Result<(&'static str, Value), Error> {
    Ok(match event {
        RoomEvent::MessageAdded(m) => ("message", json!(MessagePayload::load(service, m).await?)),
        RoomEvent::MessageEdited(m) => (
            "message_edited",
            json!(MessagePayload::load(service, m).await?),
        ),
        RoomEvent::MessageDeleted {
            room_id,
            message_id,
            deleted_by,
            ..
        } => {
            let deleted_by = match deleted_by {
                Some(id) => Some(UserPayload::from(&service.user(*id).await?)),
                None => None,
            };
            (
                "delete_message",
                json!({
                    "messageID": message_id.to_hex(),
                    "roomID": room_id.to_hex(),
                    "deletedBy": deleted_by,
                }),
            )
        }
        RoomEvent::MemberJoined { room_id, user } => (
            "user_join",
            json!({"roomID": room_id.to_hex(), "user": UserPayload::from(user)}),
        ),
        RoomEvent::MemberLeft { room_id, user } => (
            "user_leave",
            json!({"roomID": room_id.to_hex(), "user": UserPayload::from(user)}),
        ),
        RoomEvent::Typing {
            room_id,
            user,
            typing,
        } => (
            "typing",
            json!({"roomID": room_id.to_hex(), "user": UserPayload::from(user), "typing": typing}),
        ),
        RoomEvent::MemberRoleChanged {
            room_id,
            user,
            role,
        } => (
            "user_role",
            json!({
                "roomID": room_id.to_hex(),
                "user": UserPayload::from(user),
                "role": crate::service::role_name(*role),
            }),
        ),
        RoomEvent::MemberKicked { room_id, user, by } => (
            "user_kick",
            json!({
                "roomID": room_id.to_hex(),
                "user": UserPayload::from(user),
                "by": UserPayload::from(by),
            }),
        ),
        RoomEvent::MemberBanned {
            room_id,
            user,
            by,
            reason,
        } => (
            "user_ban",
            json!({
                "roomID": room_id.to_hex(),
                "user": UserPayload::from(user),
                "by": UserPayload::from(by),
                "reason": reason,
            }),
        ),
        RoomEvent::RoomUpdated(room) => (
            "room_update",
            json!({"roomID": room.id.to_hex(), "room": RoomPayload::from(room)}),
        ),
        RoomEvent::PresenceChanged {
            room_id,
            user,
            shown,
            ..
        } => (
            "presence",
            json!({
                "roomID": room_id.to_hex(),
                "user": UserPayload::from(user),
                "presence": crate::service::presence::shown_name(*shown).to_uppercase(),
            }),
        ),
        RoomEvent::ForUser(_) => {
            return Err(Error::internal(
                "a user's own log entry is not a room event",
            ));
        }
    })
}
