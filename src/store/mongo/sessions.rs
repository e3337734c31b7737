//! Sessions: sign-ins, their current refresh token's hash and the last ones spent. Expired
//! sessions are deleted by MongoDB itself (a TTL index on `expires_at`, within about a minute of
//! their end: sooner than `purge_sessions` would).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{Binary, doc, spec::BinarySubtype};

use super::{MongoStore, now, schema::SessionDoc};
use crate::{
    error::{Error, Result},
    model::{Session, SessionId, UserId},
    store::{NewSession, Rotation, SPENT_REMEMBERED, SessionStore, TokenHash, Written},
};

fn binary(hash: TokenHash) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes: hash.to_vec(),
    }
}

fn millis(at: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(at.timestamp_millis())
}

#[async_trait]
impl SessionStore for MongoStore {
    async fn create_session(&self, session: NewSession) -> Result<Session> {
        self.in_task(move |db| async move {
            let created = now();
            let doc = SessionDoc {
                id: db.ids.next().into(),
                user_id: session.user_id,
                refresh_hash: binary(session.refresh_hash),
                spent: Vec::new(),
                created_at: created,
                last_used_at: created,
                expires_at: millis(session.expires_at),
                user_agent: session.user_agent,
                revoked_at: None,
            };
            db.sessions.insert_one(&doc).await?;
            Ok(doc.into())
        })
        .await
    }

    async fn session(&self, id: SessionId) -> Result<Option<Session>> {
        Ok(self
            .sessions
            .find_one(doc! {"_id": id})
            .await?
            .map(Session::from))
    }

    async fn rotate_session(
        &self,
        id: SessionId,
        presented: TokenHash,
        next: TokenHash,
        expires_at: DateTime<Utc>,
    ) -> Result<Rotation> {
        self.in_task(move |db| async move {
            // Compare-and-swap on the current hash (no array update operators: the test server
            // has none): a rotation that lost a race reads the session again and finds the
            // presented token spent, as a thief's copy would be.
            for _ in 0..2 {
                let at = now();
                let Some(session) = db.sessions.find_one(doc! {"_id": id}).await? else {
                    return Ok(Rotation::Refused);
                };
                if session.revoked_at.is_some() || session.expires_at <= at {
                    return Ok(Rotation::Refused);
                }
                if session.refresh_hash.bytes == presented {
                    let mut spent = vec![binary(presented)];
                    spent.extend(session.spent.into_iter().take(SPENT_REMEMBERED - 1));
                    // A plain conditional update, which every MongoDB-wire server applies
                    // atomically (find-and-modify is not atomic on every test server).
                    let swapped = db
                        .sessions
                        .update_one(
                            doc! {
                                "_id": id,
                                "refresh_hash": binary(presented),
                                "revoked_at": null,
                            },
                            doc! {"$set": {
                                "refresh_hash": binary(next),
                                "spent": spent,
                                "last_used_at": at,
                                "expires_at": millis(expires_at),
                            }},
                        )
                        .await?
                        .modified_count
                        == 1;
                    if !swapped {
                        continue;
                    }
                    return match db.sessions.find_one(doc! {"_id": id}).await? {
                        Some(session) => Ok(Rotation::Rotated(session.into())),
                        None => Err(Error::internal("a session vanished as it was renewed")),
                    };
                }
                if session.spent.iter().any(|hash| hash.bytes == presented) {
                    let revoked = db
                        .sessions
                        .update_one(
                            doc! {"_id": id, "revoked_at": null},
                            doc! {"$set": {"revoked_at": at}},
                        )
                        .await?
                        .modified_count
                        == 1;
                    if !revoked {
                        return Ok(Rotation::Refused);
                    }
                    return match db.sessions.find_one(doc! {"_id": id}).await? {
                        Some(session) => Ok(Rotation::Reused(session.into())),
                        None => Ok(Rotation::Refused),
                    };
                }
                return Ok(Rotation::Refused);
            }
            Ok(Rotation::Refused)
        })
        .await
    }

    async fn revoke_session(&self, id: SessionId) -> Result<Written<Session>> {
        self.in_task(move |db| async move {
            let changed = db
                .sessions
                .update_one(
                    doc! {"_id": id, "revoked_at": null},
                    doc! {"$set": {"revoked_at": now()}},
                )
                .await?
                .modified_count
                == 1;
            let session = db
                .sessions
                .find_one(doc! {"_id": id})
                .await?
                .ok_or_else(|| Error::not_found("session not found"))?;
            Ok(Written {
                value: session.into(),
                changed,
            })
        })
        .await
    }

    async fn revoke_sessions_of(
        &self,
        user: UserId,
        except: Option<SessionId>,
    ) -> Result<Vec<SessionId>> {
        self.in_task(move |db| async move {
            let mut filter = doc! {"user_id": user, "revoked_at": null};
            if let Some(except) = except {
                filter.insert("_id", doc! {"$ne": except});
            }
            let found: Vec<SessionDoc> = db.sessions.find(filter).await?.try_collect().await?;
            // One at a time, each only while still active: the ids returned are the ones this
            // call revoked (one revoked meanwhile by someone else is not counted twice).
            let mut revoked = Vec::with_capacity(found.len());
            let at = now();
            for session in found {
                let done = db
                    .sessions
                    .update_one(
                        doc! {"_id": session.id, "revoked_at": null},
                        doc! {"$set": {"revoked_at": at}},
                    )
                    .await?;
                if done.modified_count == 1 {
                    revoked.push(session.id);
                }
            }
            Ok(revoked)
        })
        .await
    }

    async fn sessions_of(
        &self,
        user: UserId,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Session>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let found: Vec<SessionDoc> = self
            .sessions
            .find(doc! {"user_id": user, "revoked_at": null, "expires_at": {"$gt": millis(now)}})
            .sort(doc! {"last_used_at": -1, "_id": -1})
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await?
            .try_collect()
            .await?;
        Ok(found.into_iter().map(Session::from).collect())
    }

    async fn purge_sessions(&self, before: DateTime<Utc>) -> Result<u64> {
        let before = millis(before);
        let deleted = self
            .sessions
            .delete_many(doc! {"$or": [
                {"expires_at": {"$lt": before}},
                {"revoked_at": {"$lt": before}},
            ]})
            .await?;
        Ok(deleted.deleted_count)
    }
}
