//! Messages: history, sending, editing, deleting, typing, and the live events of a room.

use std::sync::Arc;

use futures_util::Stream;

use super::{ChatService, PageArgs, feed, limits};
use crate::model::UserEventKind;
use crate::{
    auth::Caller,
    error::{Error, Result},
    model::{Message, MessageId, Page, PageRequest, RoomEvent, RoomId, UserId},
    service::limiter::{Kind, Rate},
    store::NewMessage,
};

impl ChatService {
    /// A page of a room's history (members only), newest page when no arguments are given.
    pub async fn messages(
        &self,
        caller: &Caller,
        room: RoomId,
        page: &PageArgs,
    ) -> Result<Page<Message>> {
        let page = page.resolve(PageRequest::Backward {
            before: None,
            last: limits::PAGE_DEFAULT,
        })?;
        self.require_member(caller, room).await?;
        self.store.messages(room, page).await
    }

    pub async fn send_message(
        &self,
        caller: &Caller,
        room: RoomId,
        body: &str,
        client_id: Option<&str>,
    ) -> Result<Message> {
        limits::body(body)?;
        if let Some(client_id) = client_id {
            limits::client_id(client_id)?;
        }
        self.take_message(caller).await?;
        let sender = self.require_member(caller, room).await?;
        self.active(sender).await;
        let mentions = self.mentioned(room, sender, body).await?;
        let written = self
            .store
            .insert_message(NewMessage {
                room_id: room,
                sender_id: sender,
                body: body.to_owned(),
                client_id: client_id.map(str::to_owned),
                mentions,
            })
            .await?;
        Ok(written.value)
    }

    pub async fn edit_message(
        &self,
        caller: &Caller,
        id: MessageId,
        body: &str,
    ) -> Result<Message> {
        limits::body(body)?;
        self.take_message(caller).await?;
        let message = self.own_message(caller, id).await?;
        self.active(message.sender_id).await;
        let mentions = self
            .mentioned(message.room_id, message.sender_id, body)
            .await?;
        self.store.edit_message(id, body, &mentions).await
    }

    /// Deletes a message, leaving a tombstone: one of the caller's own, or as an owner or admin
    /// of its room, one of a member of a lower role (the tombstone then names the moderator).
    /// Deleting again is a no-op.
    pub async fn delete_message(&self, caller: &Caller, id: MessageId) -> Result<Message> {
        let user = caller.user_id()?;
        let message = self.message_seen(caller, id).await?;
        if message.sender_id != user
            && let Some(deleted) = self.moderator_delete(caller, &message).await?
        {
            return Ok(deleted);
        }
        self.take_message(caller).await?;
        self.own_message(caller, id).await?;
        Ok(self.store.delete_message(id, None).await?.value)
    }

    /// The members of `room` that `body` mentions by `@username` (at most
    /// [`limits::MENTIONS_MAX`]), never its sender. A name that is nobody's, or someone's who
    /// is not a member, mentions nobody.
    async fn mentioned(&self, room: RoomId, sender: UserId, body: &str) -> Result<Vec<UserId>> {
        let mut found = Vec::new();
        for name in limits::mentioned_names(body) {
            // The name as written ("bob-"), else without what may be punctuation ("ada.").
            let trimmed = limits::without_punctuation(&name);
            let mut user = None;
            if limits::USERNAME_CHARS.contains(&name.len()) {
                user = self.store.credentials(&name).await?;
            }
            if user.is_none() && trimmed != name {
                user = self.store.credentials(trimmed).await?;
            }
            let Some(user) = user else {
                continue;
            };
            let id = user.user.id;
            if id != sender && !found.contains(&id) && self.store.is_member(room, id).await? {
                found.push(id);
            }
        }
        Ok(found)
    }

    /// Moves the caller's read marker in `room` forward to `message` (a message of that room;
    /// an older one than their marker changes nothing).
    pub async fn mark_read(
        &self,
        caller: &Caller,
        room: RoomId,
        message: MessageId,
    ) -> Result<crate::model::ReadState> {
        let me = self.require_member(caller, room).await?;
        self.take(Kind::MarkRead, self.guards.rates.messages, &me.to_hex())
            .await?;
        self.active(me).await;
        match self.store.message(message).await? {
            Some(found) if found.room_id == room => {}
            _ => {
                return Err(Error::invalid(
                    "messageId",
                    "no message with this id in this room",
                ));
            }
        }
        let marked = self.store.mark_read(room, me, message).await?;
        if marked.changed {
            self.note(me, UserEventKind::ReadMoved { room_id: room })
                .await;
        }
        Ok(marked.value)
    }

    /// The caller's read state in a room; `None` when not a member.
    pub async fn read_state(
        &self,
        caller: &Caller,
        room: RoomId,
    ) -> Result<Option<crate::model::ReadState>> {
        let me = caller.user_id()?;
        self.store.read_state(room, me).await
    }

    /// For each of the caller's rooms (`rooms` from [`ChatService::my_rooms`], so rooms they
    /// are in): their read state there and the newest live message.
    pub async fn room_summaries(
        &self,
        caller: &Caller,
        rooms: Vec<RoomId>,
    ) -> Result<Vec<(Option<crate::model::ReadState>, Option<Message>)>> {
        let me = caller.user_id()?;
        self.store.room_summaries(me, rooms).await
    }

    /// A room's newest live message, for its members.
    pub async fn last_message(&self, caller: &Caller, room: RoomId) -> Result<Option<Message>> {
        let me = caller.user_id()?;
        if !self.store.is_member(room, me).await? {
            return Ok(None);
        }
        self.store.last_message(room).await
    }

    /// A message of a room the caller may see; `NOT_FOUND` otherwise, as for no message.
    pub async fn message_seen(&self, caller: &Caller, id: MessageId) -> Result<Message> {
        let not_found = || Error::not_found("message not found");
        let message = self.store.message(id).await?.ok_or_else(not_found)?;
        match self.seen_room(caller, message.room_id).await {
            Ok(_) => Ok(message),
            Err(Error::NotFound(_)) => Err(not_found()),
            Err(e) => Err(e),
        }
    }

    /// One message write (a send, an edit, a deletion) against the caller's allowance.
    async fn take_message(&self, caller: &Caller) -> Result<()> {
        let user = caller.user_id()?;
        self.take(Kind::Messages, self.guards.rates.messages, &user.to_hex())
            .await
    }

    /// Tells the room the caller is (or stopped) typing. Not stored. Coalesced: at most one
    /// "typing" and one "stopped" per user and room every `typing_every`; the rest are dropped
    /// (the caller still hears `true`, since the room already knows).
    pub async fn set_typing(&self, caller: &Caller, room: RoomId, typing: bool) -> Result<()> {
        self.require_member(caller, room).await?;
        let user = self.me(caller).await?;
        self.active(user.id).await;
        let every = self.guards.rates.typing_every;
        let once = Rate {
            count: std::num::NonZeroU32::MIN,
            period: every,
        };
        let kind = if typing {
            Kind::TypingStarted
        } else {
            Kind::TypingStopped
        };
        let key = format!("{}:{}", user.id.to_hex(), room.to_hex());
        if self.take(kind, once, &key).await.is_err() {
            return Ok(());
        }
        self.bus
            .publish(RoomEvent::Typing {
                room_id: room,
                user,
                typing,
            })
            .await;
        Ok(())
    }

    /// The live events of a room (members only). With `after`, every message created after that
    /// message is replayed from the store first, with no gap and no duplicate.
    pub async fn room_events(
        &self,
        caller: &Caller,
        room: RoomId,
        after: Option<MessageId>,
    ) -> Result<impl Stream<Item = Result<Arc<RoomEvent>>> + Send + 'static + use<>> {
        let me = self.require_member(caller, room).await?;
        if let Some(after) = after {
            match self.store.message(after).await? {
                Some(message) if message.room_id == room => {}
                _ => {
                    return Err(Error::invalid(
                        "after",
                        "no message with this id in this room",
                    ));
                }
            }
        }
        // The feed is taken before anything is read from the store: see `feed`.
        let subscription = self.bus.subscribe(room);
        // Removed between the check above and the subscription, the caller would never hear
        // their own removal: check again now that nothing published can be missed.
        if !self.store.is_member(room, me).await? {
            return Err(Error::forbidden(
                "join the room first: only members may do this",
            ));
        }
        // Where the feed starts: every change numbered up to `head.seq` is in the store; a
        // subscription without `after` starts after the newest message stored now.
        let head = self.store.room_head(room).await?;
        let start = after
            .or(head.last_message)
            .unwrap_or_else(|| MessageId::from_bytes([0; 12]));
        Ok(feed::room_feed(
            self.store.clone(),
            subscription,
            feed::Start {
                room,
                subscriber: me,
                after: start,
                seq: head.seq,
                replay: after.is_some(),
            },
        ))
    }

    /// The caller's id when they are a member of `room`; `NOT_FOUND` for no such room, or one
    /// the caller may not see.
    pub(super) async fn require_member(&self, caller: &Caller, room: RoomId) -> Result<UserId> {
        let user = caller.user_id()?;
        if self.store.is_member(room, user).await? {
            return Ok(user);
        }
        self.seen_room(caller, room).await?;
        Err(Error::forbidden(
            "join the room first: only members may do this",
        ))
    }

    /// One of the caller's own messages (tombstones included), in a room they are still a
    /// member of; `FORBIDDEN` for another's, or once they have left the room.
    pub async fn own_message(&self, caller: &Caller, id: MessageId) -> Result<Message> {
        let user = caller.user_id()?;
        let message = self.message_seen(caller, id).await?;
        if message.sender_id != user {
            return Err(Error::forbidden("only the author may change a message"));
        }
        self.require_member(caller, message.room_id).await?;
        Ok(message)
    }
}
