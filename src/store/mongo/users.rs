//! Users: accounts, found by id or by name (in any letter case, never by a look-alike).

use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::doc;

use super::{MongoStore, is_duplicate_key, now, schema::UserDoc};
use crate::{
    error::{Error, Result},
    model::{User, UserId},
    store::{
        Credentials, Taken, UNIQUE_KEY_VERSION, UserStore, displaced_keys, same_name_in_any_case,
        unique_key,
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
            .find(doc! {"$or": [
                {"username_key": &key},
                {"username_key": {"$gt": displaced_from, "$lt": displaced_to}},
            ]})
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
            .find_one(doc! {"_id": id})
            .await?
            .map(|doc| Credentials {
                password_hash: doc.password_hash.clone(),
                user: doc.into(),
            }))
    }

    async fn set_password(&self, id: UserId, password_hash: &str) -> Result<()> {
        let updated = self
            .users
            .update_one(
                doc! {"_id": id},
                doc! {"$set": {"password_hash": password_hash}},
            )
            .await?;
        if updated.matched_count == 0 {
            return Err(Error::not_found("user not found"));
        }
        Ok(())
    }
}
