//! Messages: history pages, resumption, the room's change numbers, edits and tombstones.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::{
    bson::{Bson, Document, doc},
    options::ReturnDocument,
};

use super::{MongoStore, is_duplicate_key, now, schema::MessageDoc, writer::seq_i64};
use crate::{
    error::{Error, Result},
    model::{Message, MessageId, Page, PageRequest, ReadState, RoomEvent, RoomId, UserId},
    store::{Change, MessageStore, NewMessage, RoomHead, Written},
};

pub(super) fn live_in_room(room: RoomId) -> Document {
    doc! {"room_id": room, "deleted_at": Bson::Null}
}

impl MongoStore {
    /// Sets a live message's new state (`body`, and `edited_at` or `deleted_at`, and who
    /// deleted it when a moderator did) as the room's next change, under the room's lease;
    /// `None` for a tombstone. The caller holds the room's local lock, which covers announcing
    /// the change too.
    pub(super) async fn change_message(
        &self,
        id: MessageId,
        room: RoomId,
        change: Change,
        body: &str,
        by: Option<UserId>,
    ) -> Result<Option<Message>> {
        let mut lease = self.lease(room).await?;
        let seq = lease.seq + 1;
        let mut set = doc! {"body": body, change.stamp(): now(), "seq": seq_i64(seq)};
        if let Some(by) = by {
            set.insert("deleted_by", by);
        }
        let changed = self
            .messages
            .find_one_and_update(
                doc! {"_id": id, "deleted_at": Bson::Null},
                doc! {"$set": set},
            )
            .return_document(ReturnDocument::After)
            .await;
        match changed {
            Ok(changed) => {
                if changed.is_some() {
                    lease.seq = seq;
                }
                self.release(lease).await;
                Ok(changed.map(Message::from))
            }
            Err(e) => {
                self.release_after_failure(lease).await;
                Err(e.into())
            }
        }
    }
}

#[async_trait]
impl MessageStore for MongoStore {
    async fn insert_message(&self, message: NewMessage) -> Result<Written<Message>> {
        self.in_task(move |db| async move {
            let _room = db.room_locks.lock(message.room_id).await;
            let mut lease = db.lease(message.room_id).await?;
            let seq = lease.seq + 1;
            let doc = MessageDoc {
                id: db.ids.next_after(lease.last_message).into(),
                room_id: message.room_id,
                sender_id: message.sender_id,
                body: message.body,
                client_id: message.client_id,
                created_at: now(),
                edited_at: None,
                deleted_at: None,
                deleted_by: None,
                seq: seq_i64(seq),
            };
            match db.messages.insert_one(&doc).await {
                Ok(_) => {
                    lease.seq = seq;
                    lease.last_message = Some(doc.id);
                    db.release(lease).await;
                    let stored = Message::from(doc);
                    db.announce(RoomEvent::MessageAdded(stored.clone())).await;
                    Ok(Written {
                        value: stored,
                        changed: true,
                    })
                }
                // The partial unique index decides idempotency: the first message stands.
                Err(e) if is_duplicate_key(&e) && doc.client_id.is_some() => {
                    db.release(lease).await;
                    let first = db
                        .messages
                        .find_one(doc! {
                            "room_id": doc.room_id,
                            "sender_id": doc.sender_id,
                            "client_id": doc.client_id.clone(),
                        })
                        .await?;
                    match first {
                        Some(first) => Ok(Written {
                            value: first.into(),
                            changed: false,
                        }),
                        None => Err(Error::internal(format!(
                            "room {}: change {seq} was written twice",
                            doc.room_id
                        ))),
                    }
                }
                Err(e) => {
                    db.release_after_failure(lease).await;
                    Err(e.into())
                }
            }
        })
        .await
    }

    async fn message(&self, id: MessageId) -> Result<Option<Message>> {
        Ok(self
            .messages
            .find_one(doc! {"_id": id})
            .await?
            .map(Message::from))
    }

    async fn room_head(&self, room: RoomId) -> Result<RoomHead> {
        let room = self
            .rooms
            .find_one(doc! {"_id": room})
            .await?
            .ok_or_else(|| Error::not_found("room not found"))?;
        let last_message = match room.last_message {
            Some(id) => Some(id),
            // A room none of whose messages was written since rooms kept their newest id.
            None => self
                .messages
                .find_one(doc! {"room_id": room.id})
                .sort(doc! {"_id": -1})
                .await?
                .map(|m| m.id),
        };
        Ok(RoomHead {
            last_message,
            seq: u64::try_from(room.seq).unwrap_or(0),
        })
    }

    async fn changes_after(&self, room: RoomId, seq: u64, limit: usize) -> Result<Vec<Message>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let found: Vec<MessageDoc> = self
            .messages
            .find(doc! {"room_id": room, "seq": {"$gt": seq_i64(seq)}})
            .sort(doc! {"seq": 1})
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        Ok(found.into_iter().map(Message::from).collect())
    }

    async fn messages(&self, room: RoomId, page: PageRequest) -> Result<Page<Message>> {
        self.page(&self.messages, live_in_room(room), page).await
    }

    async fn messages_after(
        &self,
        room: RoomId,
        after: MessageId,
        limit: usize,
    ) -> Result<Vec<Message>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let found: Vec<MessageDoc> = self
            .messages
            .find(doc! {"room_id": room, "_id": {"$gt": after}})
            .sort(doc! {"_id": 1})
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        Ok(found.into_iter().map(Message::from).collect())
    }

    async fn messages_by(
        &self,
        user: UserId,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<Message>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut filter = doc! {"sender_id": user, "deleted_at": null};
        if let Some(after) = after {
            filter.insert("_id", doc! {"$gt": after});
        }
        let found: Vec<MessageDoc> = self
            .messages
            .find(filter)
            .sort(doc! {"_id": 1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await?
            .try_collect()
            .await?;
        Ok(found.into_iter().map(Message::from).collect())
    }

    async fn read_state(&self, _room: RoomId, _user: UserId) -> Result<Option<ReadState>> {
        Err(Error::internal("read state is not on MongoDB yet"))
    }

    async fn mark_read(
        &self,
        _room: RoomId,
        _user: UserId,
        _message: MessageId,
    ) -> Result<Written<ReadState>> {
        Err(Error::internal("read state is not on MongoDB yet"))
    }

    async fn last_message(&self, _room: RoomId) -> Result<Option<Message>> {
        Err(Error::internal("read state is not on MongoDB yet"))
    }

    async fn edit_message(
        &self,
        id: MessageId,
        body: &str,
        _mentions: &[UserId],
    ) -> Result<Message> {
        let body = body.to_owned();
        self.in_task(move |db| async move {
            let body = body.as_str();
            let room = db
                .message(id)
                .await?
                .ok_or_else(|| Error::not_found("message not found"))?
                .room_id;
            let _room = db.room_locks.lock(room).await;
            let edited = db
                .change_message(id, room, Change::Edit, body, None)
                .await?
                .ok_or_else(|| Error::not_found("message not found"))?;
            db.announce(RoomEvent::MessageEdited(edited.clone())).await;
            Ok(edited)
        })
        .await
    }

    async fn delete_message(&self, id: MessageId, by: Option<UserId>) -> Result<Written<Message>> {
        self.in_task(move |db| async move {
            let room = db
                .message(id)
                .await?
                .ok_or_else(|| Error::not_found("message not found"))?
                .room_id;
            let _room = db.room_locks.lock(room).await;
            let deleted = db.change_message(id, room, Change::Delete, "", by).await?;
            match deleted {
                Some(message) => {
                    db.announce(RoomEvent::MessageDeleted {
                        room_id: message.room_id,
                        message_id: message.id,
                        seq: message.seq,
                        deleted_by: message.deleted_by,
                    })
                    .await;
                    Ok(Written {
                        value: message,
                        changed: true,
                    })
                }
                None => match db.message(id).await? {
                    Some(tombstone) => Ok(Written {
                        value: tombstone,
                        changed: false,
                    }),
                    None => Err(Error::not_found("message not found")),
                },
            }
        })
        .await
    }
}
