//! Each user's own log (`user_events`) and the checkpoints of their `myEvents` streams
//! (`stream_checkpoints`).
//!
//! A log position is taken by inserting `(user_id, pos)` under a unique index, `pos` one past
//! the newest stored: of two instances appending at once, one wins and the other reads the new
//! head and tries the next. So a position exists only once every position before it does, and
//! a reader that sees position `p` can read every earlier one.

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{Binary, doc, spec::BinarySubtype};
use serde::{Deserialize, Serialize};

use super::{MongoStore, is_duplicate_key, now, to_chrono};
use crate::{
    error::{Error, Result},
    model::{
        CheckpointId, ObjectId, RoomEvent, RoomPositions, UserEvent, UserEventKind, UserId,
        user_channel,
    },
    store::{CHECKPOINTS_KEPT, InboxStore, USER_LOG_KEEP, decode_positions, encode_positions},
};

/// Appends that lose the race for a position this many times in a row give up.
const RETRIES: usize = 16;

/// How often (in positions) an append also prunes the entries fallen out of the kept window.
const PRUNE_EVERY: u64 = 256;

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct UserEventDoc {
    #[serde(rename = "_id")]
    pub(super) id: ObjectId,
    pub(super) user_id: UserId,
    pub(super) pos: i64,
    /// The entry's [`UserEventKind`], as JSON.
    pub(super) kind: String,
    pub(super) at: bson::DateTime,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct CheckpointDoc {
    #[serde(rename = "_id")]
    pub(super) id: CheckpointId,
    pub(super) user_id: UserId,
    /// [`encode_positions`] of the rooms.
    pub(super) rooms: Binary,
}

impl TryFrom<UserEventDoc> for UserEvent {
    type Error = Error;

    fn try_from(doc: UserEventDoc) -> Result<Self> {
        Ok(UserEvent {
            user_id: doc.user_id,
            pos: u64::try_from(doc.pos).unwrap_or(0),
            kind: serde_json::from_str(&doc.kind)
                .map_err(|e| Error::internal(format!("an unreadable user log entry: {e}")))?,
            at: to_chrono(doc.at),
        })
    }
}

impl MongoStore {
    /// The newest position of `user`'s log (0 when empty).
    async fn user_log_head(&self, user: UserId) -> Result<u64> {
        Ok(self
            .user_events
            .find_one(doc! {"user_id": user})
            .sort(doc! {"pos": -1})
            .await?
            .map_or(0, |d| u64::try_from(d.pos).unwrap_or(0)))
    }
}

#[async_trait]
impl InboxStore for MongoStore {
    async fn append_user_event(&self, user: UserId, kind: UserEventKind) -> Result<UserEvent> {
        self.in_task(move |db| async move {
            // Appends of one user from this instance go one at a time, in the order announced.
            let _user = db.room_locks.lock(user_channel(user)).await;
            let json = serde_json::to_string(&kind).map_err(Error::internal)?;
            for _ in 0..RETRIES {
                let pos = db.user_log_head(user).await? + 1;
                let doc = UserEventDoc {
                    id: db.ids.next(),
                    user_id: user,
                    pos: i64::try_from(pos)
                        .map_err(|_| Error::internal("log position overflow"))?,
                    kind: json.clone(),
                    at: now(),
                };
                let at = doc.at;
                match db.user_events.insert_one(&doc).await {
                    Ok(_) => {
                        if pos.is_multiple_of(PRUNE_EVERY) && pos > USER_LOG_KEEP {
                            let below = doc.pos - USER_LOG_KEEP as i64;
                            db.user_events
                                .delete_many(doc! {"user_id": user, "pos": {"$lte": below}})
                                .await?;
                        }
                        let event = UserEvent {
                            user_id: user,
                            pos,
                            kind,
                            at: to_chrono(at),
                        };
                        db.announce(RoomEvent::ForUser(event.clone())).await;
                        return Ok(event);
                    }
                    Err(e) if is_duplicate_key(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(Error::internal(
                "another instance kept taking this user's next log position",
            ))
        })
        .await
    }

    async fn user_events_after(
        &self,
        user: UserId,
        after: u64,
        limit: usize,
    ) -> Result<Vec<UserEvent>> {
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let docs: Vec<UserEventDoc> = self
            .user_events
            .find(doc! {"user_id": user, "pos": {"$gt": after}})
            .sort(doc! {"pos": 1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await?
            .try_collect()
            .await?;
        docs.into_iter().map(UserEvent::try_from).collect()
    }

    async fn user_log_bounds(&self, user: UserId) -> Result<(u64, u64)> {
        let head = self.user_log_head(user).await?;
        let oldest = self
            .user_events
            .find_one(doc! {"user_id": user})
            .sort(doc! {"pos": 1})
            .await?
            .map_or(0, |d| u64::try_from(d.pos).unwrap_or(0));
        Ok((head, oldest))
    }

    async fn save_checkpoint(&self, user: UserId, rooms: RoomPositions) -> Result<CheckpointId> {
        self.in_task(move |db| async move {
            let id = CheckpointId::from(db.ids.next());
            let doc = CheckpointDoc {
                id,
                user_id: user,
                rooms: Binary {
                    subtype: BinarySubtype::Generic,
                    bytes: encode_positions(&rooms),
                },
            };
            db.checkpoints.insert_one(&doc).await?;
            // The oldest beyond the kept number go.
            let kept: Vec<CheckpointDoc> = db
                .checkpoints
                .find(doc! {"user_id": user})
                .sort(doc! {"_id": -1})
                .skip(CHECKPOINTS_KEPT as u64 - 1)
                .limit(1)
                .await?
                .try_collect()
                .await?;
            if let Some(oldest) = kept.first() {
                db.checkpoints
                    .delete_many(doc! {"user_id": user, "_id": {"$lt": oldest.id}})
                    .await?;
            }
            Ok(id)
        })
        .await
    }

    async fn checkpoint(&self, user: UserId, id: CheckpointId) -> Result<Option<RoomPositions>> {
        self.checkpoints
            .find_one(doc! {"_id": id, "user_id": user})
            .await?
            .map(|doc| {
                decode_positions(&doc.rooms.bytes)
                    .ok_or_else(|| Error::internal("a stored checkpoint is unreadable"))
            })
            .transpose()
    }
}
