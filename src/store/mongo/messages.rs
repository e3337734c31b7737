//! Messages: history pages, resumption, the room's change numbers, edits and tombstones.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::{
    bson::{Bson, Document, doc},
    options::ReturnDocument,
};

use super::{
    MongoStore, is_duplicate_key, now,
    rooms::member,
    schema::{MessageDoc, RoomDoc},
    writer::seq_i64,
};
use crate::{
    error::{Error, Result},
    model::{Message, MessageId, Page, PageRequest, ReadState, RoomEvent, RoomId, UserId},
    store::{COUNT_CAP, Change, MessageStore, NewMessage, RoomHead, Written},
};

pub(super) fn live_in_room(room: RoomId) -> Document {
    doc! {"room_id": room, "deleted_at": Bson::Null}
}

impl MongoStore {
    /// The id of `room`'s newest message, tombstones included: the one the room keeps with its
    /// change number, else (a room none of whose messages was written since rooms kept it)
    /// the newest stored.
    pub(super) async fn newest_message(&self, room: &RoomDoc) -> Result<Option<MessageId>> {
        if let Some(id) = room.last_message {
            return Ok(Some(id));
        }
        Ok(self
            .messages
            .find_one(doc! {"room_id": room.id})
            .sort(doc! {"_id": -1})
            .await?
            .map(|m| m.id))
    }

    /// A member's read state (see `MessageStore::read_state`): their marker, and two counts
    /// after it: others' live messages (the `(room_id, _id)` index), and live messages that
    /// mention them (the `(room_id, mentions, _id)` index).
    async fn read_state_of(&self, room: RoomId, user: UserId) -> Result<Option<ReadState>> {
        let Some(membership) = self.memberships.find_one(member(room, user)).await? else {
            return Ok(None);
        };
        let marker = membership.last_read;
        let mut unread =
            doc! {"room_id": room, "sender_id": {"$ne": user}, "deleted_at": Bson::Null};
        let mut mentions = doc! {"room_id": room, "mentions": user, "deleted_at": Bson::Null};
        if let Some(marker) = marker {
            unread.insert("_id", doc! {"$gt": marker});
            mentions.insert("_id", doc! {"$gt": marker});
        }
        Ok(Some(ReadState {
            last_read: marker,
            unread: self
                .messages
                .count_documents(unread)
                .limit(COUNT_CAP)
                .await?,
            mentions: self
                .messages
                .count_documents(mentions)
                .limit(COUNT_CAP)
                .await?,
        }))
    }

    /// Sets a live message's new state (`body`, `mentions`, and `edited_at` or `deleted_at`,
    /// and who deleted it when a moderator did) as the room's next change, under the room's lease;
    /// `None` for a tombstone. The caller holds the room's local lock, which covers announcing
    /// the change too.
    pub(super) async fn change_message(
        &self,
        id: MessageId,
        room: RoomId,
        change: Change,
        body: &str,
        by: Option<UserId>,
        mentions: &[UserId],
    ) -> Result<Option<Message>> {
        let mut lease = self.lease(room).await?;
        let seq = lease.seq + 1;
        let mut set = doc! {"body": body, change.stamp(): now(), "seq": seq_i64(seq)};
        if let Some(by) = by {
            set.insert("deleted_by", by);
        }
        // As stored on insert: the field only when someone is mentioned.
        let mut update = doc! {};
        if mentions.is_empty() {
            update.insert("$unset", doc! {"mentions": ""});
        } else {
            set.insert("mentions", mentions);
        }
        update.insert("$set", set);
        let changed = self
            .messages
            .find_one_and_update(doc! {"_id": id, "deleted_at": Bson::Null}, update)
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
                mentions: message.mentions,
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
        Ok(RoomHead {
            last_message: self.newest_message(&room).await?,
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

    async fn read_state(&self, room: RoomId, user: UserId) -> Result<Option<ReadState>> {
        self.read_state_of(room, user).await
    }

    async fn mark_read(
        &self,
        room: RoomId,
        user: UserId,
        message: MessageId,
    ) -> Result<Written<ReadState>> {
        // Forward only, in one conditional update: a marker is null (absent only before the
        // startup upgrade) or an id, and `$lt` compares ids with ids only.
        let mut behind = member(room, user);
        behind.insert(
            "$or",
            vec![
                doc! {"last_read": Bson::Null},
                doc! {"last_read": {"$lt": message}},
            ],
        );
        let in_room = self
            .messages
            .find_one(doc! {"_id": message, "room_id": room})
            .await?
            .is_some();
        let moved = match in_room {
            true => {
                self.memberships
                    .update_one(behind, doc! {"$set": {"last_read": message}})
                    .await?
                    .modified_count
            }
            false => 0,
        };
        let state = self
            .read_state_of(room, user)
            .await?
            .ok_or_else(|| Error::not_found("not a member of this room"))?;
        Ok(Written {
            value: state,
            changed: moved == 1,
        })
    }

    async fn last_message(&self, room: RoomId) -> Result<Option<Message>> {
        Ok(self
            .messages
            .find_one(live_in_room(room))
            .sort(doc! {"_id": -1})
            .await?
            .map(Message::from))
    }

    async fn edit_message(
        &self,
        id: MessageId,
        body: &str,
        mentions: &[UserId],
    ) -> Result<Message> {
        let (body, mentions) = (body.to_owned(), mentions.to_vec());
        self.in_task(move |db| async move {
            let body = body.as_str();
            let room = db
                .message(id)
                .await?
                .ok_or_else(|| Error::not_found("message not found"))?
                .room_id;
            let _room = db.room_locks.lock(room).await;
            let edited = db
                .change_message(id, room, Change::Edit, body, None, &mentions)
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
            let deleted = db
                .change_message(id, room, Change::Delete, "", by, &[])
                .await?;
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
