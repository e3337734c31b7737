//! Users: accounts, found by id or by name (in any letter case, never by a look-alike).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use mongodb::bson::{Binary, Document, doc, spec::BinarySubtype};

use super::{MongoStore, is_duplicate_key, now, schema::UserDoc};
use crate::{
    error::{Error, Result},
    model::{User, UserId},
    store::{
        Credentials, DELETED_USER, Standing, Taken, TokenHash, UNIQUE_KEY_VERSION, UserStore,
        displaced_keys, same_name_in_any_case, unique_key,
    },
};

impl MongoStore {
    pub(super) async fn user_by_id(&self, id: UserId) -> Result<Option<User>> {
        Ok(self.users.find_one(doc! {"_id": id}).await?.map(User::from))
    }
}

#[async_trait]
impl UserStore for MongoStore {
    async fn create_user(&self, username: &str, password_hash: &str) -> Result<User> {
        let username = username.to_owned();
        let password_hash = password_hash.to_owned();
        self.in_task(move |db| async move {
            let username = username.as_str();
            let password_hash = password_hash.as_str();
            let doc = UserDoc {
                id: db.ids.next().into(),
                username: username.to_owned(),
                username_key: unique_key(username),
                key_version: UNIQUE_KEY_VERSION,
                password_hash: password_hash.to_owned(),
                created_at: now(),
                // The first account is the server's first admin. Two first registrations at
                // once on two instances may both be.
                is_admin: db.users.find_one(doc! {}).await?.is_none(),
                suspended: None,
                deleted_at: None,
                name_released_at: None,
            };
            if let Err(e) = db.users.insert_one(&doc).await {
                if is_duplicate_key(&e) {
                    return Err(Error::from(Taken::Username));
                }
                return Err(e.into());
            }
            Ok(doc.into())
        })
        .await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        self.user_by_id(id).await
    }

    async fn credentials(&self, username: &str) -> Result<Option<Credentials>> {
        let key = unique_key(username);
        let (displaced_from, displaced_to) = displaced_keys(&key);
        let found: Vec<UserDoc> = self
            .users
            .find(doc! {
                "$or": [
                    {"username_key": &key},
                    {"username_key": {"$gt": displaced_from, "$lt": displaced_to}},
                ],
                "deleted_at": null,
            })
            .await?
            .try_collect()
            .await?;
        let found = found
            .into_iter()
            .find(|d| same_name_in_any_case(&d.username, username));
        Ok(found.map(|d| {
            let password_hash = d.password_hash.clone();
            Credentials {
                user: d.into(),
                password_hash,
            }
        }))
    }

    async fn credentials_by_id(&self, id: UserId) -> Result<Option<Credentials>> {
        Ok(self
            .users
            .find_one(doc! {"_id": id, "deleted_at": null})
            .await?
            .map(|doc| Credentials {
                password_hash: doc.password_hash.clone(),
                user: doc.into(),
            }))
    }

    async fn set_password(&self, id: UserId, password_hash: &str) -> Result<()> {
        self.update_user(id, doc! {"$set": {"password_hash": password_hash}})
            .await
    }

    async fn has_users(&self) -> Result<bool> {
        Ok(self.users.find_one(doc! {}).await?.is_some())
    }

    async fn standing(&self, id: UserId) -> Result<Option<Standing>> {
        Ok(self
            .users
            .find_one(doc! {"_id": id})
            .await?
            .map(|user| Standing {
                admin: user.is_admin,
                suspended: user.suspended,
                deleted: user.deleted_at.is_some(),
            }))
    }

    async fn set_admin(&self, id: UserId, admin: bool) -> Result<()> {
        self.update_user(id, doc! {"$set": {"is_admin": admin}})
            .await
    }

    async fn set_suspended(&self, id: UserId, reason: Option<&str>) -> Result<()> {
        let update = match reason {
            Some(reason) => doc! {"$set": {"suspended": reason}},
            None => doc! {"$unset": {"suspended": ""}},
        };
        self.update_user(id, update).await
    }

    async fn delete_user(&self, id: UserId, release_name_at: DateTime<Utc>) -> Result<()> {
        self.in_task(move |db| async move {
            let at = now();
            db.update_user(
                id,
                doc! {"$set": {
                    "username": DELETED_USER,
                    "password_hash": "",
                    "deleted_at": at,
                    "name_released_at": bson::DateTime::from_millis(release_name_at.timestamp_millis()),
                }},
            )
            .await?;
            db.memberships.delete_many(doc! {"user_id": id}).await?;
            db.invitations.delete_many(doc! {"user_id": id}).await?;
            db.sessions.delete_many(doc! {"user_id": id}).await?;
            if release_name_at.timestamp_millis() <= at.timestamp_millis() {
                db.release_names(release_name_at).await?;
            }
            Ok(())
        })
        .await
    }

    async fn release_names(&self, now: DateTime<Utc>) -> Result<u64> {
        let due: Vec<UserDoc> = self
            .users
            .find(doc! {"name_released_at": {"$lte": bson::DateTime::from_millis(now.timestamp_millis())}})
            .await?
            .try_collect()
            .await?;
        for user in &due {
            // A key no name can have: `#` is never in a username.
            let key = format!("#deleted:{}", user.id.to_hex());
            self.users
                .update_one(
                    doc! {"_id": user.id},
                    doc! {"$set": {"username_key": key}, "$unset": {"name_released_at": ""}},
                )
                .await?;
        }
        Ok(due.len() as u64)
    }

    async fn create_invite(&self, hash: TokenHash, by: Option<UserId>) -> Result<()> {
        self.invites()
            .insert_one(doc! {
                "_id": Binary { subtype: BinarySubtype::Generic, bytes: hash.to_vec() },
                "created_by": by,
                "created_at": now(),
            })
            .await?;
        Ok(())
    }

    async fn take_invite(&self, hash: TokenHash) -> Result<bool> {
        let taken = self
            .invites()
            .update_one(
                doc! {
                    "_id": Binary { subtype: BinarySubtype::Generic, bytes: hash.to_vec() },
                    "used_at": null,
                },
                doc! {"$set": {"used_at": now()}},
            )
            .await?;
        Ok(taken.modified_count > 0)
    }

    async fn return_invite(&self, hash: TokenHash) -> Result<()> {
        self.invites()
            .update_one(
                doc! {"_id": Binary { subtype: BinarySubtype::Generic, bytes: hash.to_vec() }},
                doc! {"$unset": {"used_at": ""}},
            )
            .await?;
        Ok(())
    }
}

impl MongoStore {
    fn invites(&self) -> mongodb::Collection<Document> {
        self.db.collection("invites")
    }

    /// Applies `update` to one user; `NotFound` when there is no such user.
    async fn update_user(&self, id: UserId, update: Document) -> Result<()> {
        let updated = self.users.update_one(doc! {"_id": id}, update).await?;
        if updated.matched_count == 0 {
            return Err(Error::not_found("user not found"));
        }
        Ok(())
    }
}
