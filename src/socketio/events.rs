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
            ..
        } => (
            "delete_message",
            json!({"messageID": message_id.to_hex(), "roomID": room_id.to_hex()}),
        ),
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
    })
}
