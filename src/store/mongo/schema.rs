//! The documents as stored, their indexes, and the upgrades of keys, roles and read markers
//! stored by an earlier Confab.

use std::collections::{HashMap, HashSet};

use futures_util::TryStreamExt;
use mongodb::{
    Collection, IndexModel,
    bson::{Bson, Document, doc, oid::ObjectId},
    options::IndexOptions,
};
use serde::{Deserialize, Serialize};

use super::{MongoStore, is_duplicate_key, to_chrono};
use crate::{
    error::{Error, Result},
    model::{
        Invitation, Membership, Message, MessageId, ModerationAction, ModerationEntry,
        ModerationId, Room, RoomId, RoomRole, RoomVisibility, Session, SessionId, User, UserId,
    },
    store::{SCHEMA_VERSION, UNIQUE_KEY_VERSION, displaced_key, unique_key},
};

#[derive(Serialize, Deserialize)]
pub(super) struct UserDoc {
    #[serde(rename = "_id")]
    pub(super) id: UserId,
    pub(super) username: String,
    pub(super) username_key: String,
    /// The `store::UNIQUE_KEY_VERSION` that made `username_key` (absent: 1, lower case).
    #[serde(default = "first_key_version")]
    pub(super) key_version: i64,
    pub(super) password_hash: String,
    pub(super) created_at: bson::DateTime,
    /// A server admin by grant (the first account is one anyway).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(super) is_admin: bool,
    /// Why the account is suspended, while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) suspended: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) deleted_at: Option<bson::DateTime>,
    /// When a deleted account's name is freed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) name_released_at: Option<bson::DateTime>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct RoomDoc {
    #[serde(rename = "_id")]
    pub(super) id: RoomId,
    pub(super) name: String,
    pub(super) name_key: String,
    /// The `store::UNIQUE_KEY_VERSION` that made `name_key` (absent: 1, lower case).
    #[serde(default = "first_key_version")]
    pub(super) key_version: i64,
    pub(super) created_by: UserId,
    pub(super) created_at: bson::DateTime,
    /// The number of the room's last message change (see `Store::changes_after`).
    #[serde(default)]
    pub(super) seq: i64,
    /// The room's newest message, set together with `seq`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) last_message: Option<MessageId>,
    /// Who holds the room's write lease, and until when (see [`Lease`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) lease: Option<LeaseDoc>,
    /// `"public"` or `"private"` (`RoomVisibility::as_str`); rooms from before visibilities
    /// are public.
    #[serde(default = "public_visibility")]
    pub(super) visibility: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) topic: Option<String>,
    /// The two people of a direct room, the smaller id first (`store::direct_pair`); absent for
    /// any other room. A direct room's `name_key` is `store::direct_key` of the pair.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) direct: Option<[UserId; 2]>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct LeaseDoc {
    pub(super) token: ObjectId,
    pub(super) until: bson::DateTime,
}

/// `_id` is minted in join order, so sorting by it lists members as they joined.
#[derive(Serialize, Deserialize)]
pub(super) struct MembershipDoc {
    #[serde(rename = "_id")]
    pub(super) id: ObjectId,
    pub(super) room_id: RoomId,
    pub(super) user_id: UserId,
    pub(super) joined_at: bson::DateTime,
    /// `"owner"`, `"admin"` or `"member"` (`RoomRole::as_str`). Memberships from before roles
    /// get theirs at startup (see `upgrade_roles`); until then they read as members.
    #[serde(default = "member_role")]
    pub(super) role: String,
    /// The newest message the member has read (see `MessageStore::read_state`): at joining,
    /// the room's newest message. Stored even when null (a room without messages), so that
    /// memberships from before read markers, which lack the field, are told apart and get
    /// theirs at startup (see `upgrade_read_markers`).
    #[serde(default)]
    pub(super) last_read: Option<MessageId>,
}

impl MembershipDoc {
    pub(super) fn role(&self) -> RoomRole {
        RoomRole::parse(&self.role).unwrap_or(RoomRole::Member)
    }

    /// The membership of `user` as the API shows it.
    pub(super) fn with_user(self, user: User) -> Membership {
        Membership {
            room_id: self.room_id,
            role: self.role(),
            joined_at: to_chrono(self.joined_at),
            user,
        }
    }
}

/// A ban of one user from one room; unique per `(room_id, user_id)`.
#[derive(Serialize, Deserialize)]
pub(super) struct BanDoc {
    #[serde(rename = "_id")]
    pub(super) id: ObjectId,
    pub(super) room_id: RoomId,
    pub(super) user_id: UserId,
    pub(super) banned_by: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<String>,
    pub(super) created_at: bson::DateTime,
}

/// An invitation of `user_id` to a room; unique per `(room_id, user_id)`.
#[derive(Serialize, Deserialize)]
pub(super) struct InvitationDoc {
    #[serde(rename = "_id")]
    pub(super) id: ObjectId,
    pub(super) room_id: RoomId,
    pub(super) user_id: UserId,
    pub(super) invited_by: UserId,
    pub(super) created_at: bson::DateTime,
}

impl From<InvitationDoc> for Invitation {
    fn from(d: InvitationDoc) -> Self {
        Invitation {
            room_id: d.room_id,
            invitee: d.user_id,
            inviter: d.invited_by,
            created_at: to_chrono(d.created_at),
        }
    }
}

/// An entry of a room's moderation log; `_id` is minted in time order, so the log is read by
/// `(room_id, _id)`.
#[derive(Serialize, Deserialize)]
pub(super) struct ModerationDoc {
    #[serde(rename = "_id")]
    pub(super) id: ModerationId,
    pub(super) room_id: RoomId,
    /// `ModerationAction::as_str`.
    pub(super) action: String,
    pub(super) actor: UserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) target: Option<UserId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) message: Option<MessageId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) reason: Option<String>,
    pub(super) created_at: bson::DateTime,
}

impl From<ModerationDoc> for ModerationEntry {
    fn from(d: ModerationDoc) -> Self {
        ModerationEntry {
            id: d.id,
            room_id: d.room_id,
            // As the SQLite driver reads an action it does not know.
            action: ModerationAction::parse(&d.action).unwrap_or(ModerationAction::RoomUpdate),
            actor: d.actor,
            target: d.target,
            message: d.message,
            reason: d.reason,
            created_at: to_chrono(d.created_at),
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct MessageDoc {
    #[serde(rename = "_id")]
    pub(super) id: MessageId,
    pub(super) room_id: RoomId,
    pub(super) sender_id: UserId,
    pub(super) body: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(super) client_id: Option<String>,
    pub(super) created_at: bson::DateTime,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(super) edited_at: Option<bson::DateTime>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(super) deleted_at: Option<bson::DateTime>,
    /// The moderator who deleted it, when its author did not.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub(super) deleted_by: Option<UserId>,
    /// The room change number of this message's latest change.
    #[serde(default)]
    pub(super) seq: i64,
    /// The members it mentions, as of its latest edit; a tombstone mentions nobody, so only
    /// live messages count towards a member's mentions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) mentions: Vec<UserId>,
}

/// A session: its refresh token's hash, and the hashes of the last ones spent (newest first).
#[derive(Serialize, Deserialize)]
pub(super) struct SessionDoc {
    #[serde(rename = "_id")]
    pub(super) id: SessionId,
    pub(super) user_id: UserId,
    pub(super) refresh_hash: bson::Binary,
    #[serde(default)]
    pub(super) spent: Vec<bson::Binary>,
    pub(super) created_at: bson::DateTime,
    pub(super) last_used_at: bson::DateTime,
    /// A TTL index deletes the document once this has passed.
    pub(super) expires_at: bson::DateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) user_agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) revoked_at: Option<bson::DateTime>,
}

impl From<SessionDoc> for Session {
    fn from(d: SessionDoc) -> Self {
        Session {
            id: d.id,
            user_id: d.user_id,
            created_at: to_chrono(d.created_at),
            last_used_at: to_chrono(d.last_used_at),
            expires_at: to_chrono(d.expires_at),
            user_agent: d.user_agent,
            revoked_at: d.revoked_at.map(to_chrono),
        }
    }
}

pub(super) fn first_key_version() -> i64 {
    1
}

fn public_visibility() -> String {
    RoomVisibility::Public.as_str().to_owned()
}

fn member_role() -> String {
    RoomRole::Member.as_str().to_owned()
}

impl From<UserDoc> for User {
    fn from(d: UserDoc) -> Self {
        User {
            id: d.id,
            username: d.username,
            created_at: to_chrono(d.created_at),
        }
    }
}

impl From<RoomDoc> for Room {
    fn from(d: RoomDoc) -> Self {
        Room {
            id: d.id,
            name: d.name,
            created_by: d.created_by,
            created_at: to_chrono(d.created_at),
            // As the SQLite driver reads a visibility it does not know: the safer one.
            visibility: RoomVisibility::parse(&d.visibility).unwrap_or(RoomVisibility::Private),
            topic: d.topic,
            direct: d.direct,
        }
    }
}

impl From<MessageDoc> for Message {
    fn from(d: MessageDoc) -> Self {
        Message {
            id: d.id,
            room_id: d.room_id,
            sender_id: d.sender_id,
            body: d.body,
            client_id: d.client_id,
            created_at: to_chrono(d.created_at),
            edited_at: d.edited_at.map(to_chrono),
            deleted_at: d.deleted_at.map(to_chrono),
            seq: u64::try_from(d.seq).unwrap_or(0),
            deleted_by: d.deleted_by,
            mentions: d.mentions,
        }
    }
}

/// The `_id` of the document in the `meta` collection that holds the schema version
/// (`{"_id": "schema", "version": 6}`): absent in a database from before it, which the upgrades
/// at startup bring to the current version like any other.
const SCHEMA_DOC: &str = "schema";

impl MongoStore {
    /// The schema version a database records; 0 when it records none (an older Confab's).
    async fn stored_schema_version(&self) -> Result<i64> {
        let meta = self.db.collection::<Document>("meta");
        let found = meta.find_one(doc! {"_id": SCHEMA_DOC}).await?;
        Ok(found
            .and_then(|d| match d.get("version") {
                Some(Bson::Int32(v)) => Some(i64::from(*v)),
                Some(Bson::Int64(v)) => Some(*v),
                _ => None,
            })
            .unwrap_or(0))
    }

    /// Refuses a database whose schema is newer than this Confab's: upgrades go forward only,
    /// and an older Confab would write documents a newer one does not expect.
    pub(super) async fn check_schema_version(&self) -> anyhow::Result<()> {
        let version = self.stored_schema_version().await?;
        anyhow::ensure!(
            version <= SCHEMA_VERSION,
            "the database has schema version {version}, newer than this Confab understands ({SCHEMA_VERSION}); upgrade Confab"
        );
        Ok(())
    }

    /// Records that the upgrades ran: the version only moves forward (a conditional update),
    /// so instances starting together agree, and returns where the database stands.
    pub(super) async fn record_schema_version(&self) -> Result<i64> {
        let meta = self.db.collection::<Document>("meta");
        let version = self.stored_schema_version().await?;
        if version == 0 {
            match meta
                .insert_one(doc! {"_id": SCHEMA_DOC, "version": SCHEMA_VERSION})
                .await
            {
                Ok(_) => {}
                // Another instance recorded it first.
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(e.into()),
            }
        } else if version < SCHEMA_VERSION {
            meta.update_one(
                doc! {"_id": SCHEMA_DOC, "version": {"$lt": SCHEMA_VERSION}},
                doc! {"$set": {"version": SCHEMA_VERSION}},
            )
            .await?;
        }
        self.stored_schema_version().await
    }

    pub(super) async fn create_indexes(&self) -> Result<()> {
        let unique = || Some(IndexOptions::builder().unique(true).build());
        // Unique where the field exists: messages without a client id, or from before change
        // numbers, are not indexed.
        let unique_where_present = |field: &str| {
            Some(
                IndexOptions::builder()
                    .unique(true)
                    .partial_filter_expression(doc! {field: {"$exists": true}})
                    .build(),
            )
        };
        index(&self.users, doc! {"username_key": 1}, unique()).await?;
        index(&self.rooms, doc! {"name_key": 1}, unique()).await?;
        index(
            &self.memberships,
            doc! {"room_id": 1, "user_id": 1},
            unique(),
        )
        .await?;
        index(&self.memberships, doc! {"user_id": 1, "room_id": 1}, None).await?;
        index(&self.messages, doc! {"room_id": 1, "_id": 1}, None).await?;
        index(&self.messages, doc! {"sender_id": 1, "_id": 1}, None).await?;
        index(
            &self.sessions,
            doc! {"user_id": 1, "last_used_at": -1},
            None,
        )
        .await?;
        // MongoDB deletes a session once its end has passed (checked about once a minute).
        index(
            &self.sessions,
            doc! {"expires_at": 1},
            Some(
                IndexOptions::builder()
                    .expire_after(std::time::Duration::ZERO)
                    .build(),
            ),
        )
        .await?;
        index(
            &self.messages,
            doc! {"room_id": 1, "seq": 1},
            unique_where_present("seq"),
        )
        .await?;
        index(
            &self.messages,
            doc! {"room_id": 1, "sender_id": 1, "client_id": 1},
            unique_where_present("client_id"),
        )
        .await?;
        // One ban and one invitation per user and room, whoever writes them.
        index(&self.bans, doc! {"room_id": 1, "user_id": 1}, unique()).await?;
        index(
            &self.invitations,
            doc! {"room_id": 1, "user_id": 1},
            unique(),
        )
        .await?;
        index(
            &self.invitations,
            doc! {"user_id": 1, "created_at": -1},
            None,
        )
        .await?;
        index(&self.moderation, doc! {"room_id": 1, "_id": 1}, None).await?;
        // A user's log positions: unique, which is what hands each position out once.
        index(&self.user_events, doc! {"user_id": 1, "pos": 1}, unique()).await?;
        index(&self.checkpoints, doc! {"user_id": 1, "_id": 1}, None).await?;
        // A member's mentions after their read marker: one range of this (multikey) index.
        // Partial: only messages that mention someone are in it.
        index(
            &self.messages,
            doc! {"room_id": 1, "mentions": 1, "_id": 1},
            Some(
                IndexOptions::builder()
                    .partial_filter_expression(doc! {"mentions": {"$exists": true}})
                    .build(),
            ),
        )
        .await?;
        Ok(())
    }

    /// Gives memberships from before roles their role, as the SQLite migration to schema v5
    /// does: a room's creator owns it, everyone else is a member. Then every room with members
    /// and no owner (its creator had left; or a hand-over that two instances raced on lost
    /// its heir) gets its longest-standing member as owner, direct rooms excepted: nobody owns
    /// those. Plain conditional updates, so rerunning it changes nothing and instances
    /// starting together agree. The second step reads two fields of every membership at each
    /// startup, as the key upgrade reads every name.
    pub(super) async fn upgrade_roles(&self) -> Result<()> {
        let memberships = self.db.collection::<Document>("memberships");
        let roleless = doc! {"role": {"$exists": false}};
        let mut stale_rooms = HashSet::new();
        let mut stale = memberships
            .find(roleless.clone())
            .projection(doc! {"room_id": 1})
            .await?;
        while let Some(m) = stale.try_next().await? {
            if let Ok(room) = m.get_object_id("room_id") {
                stale_rooms.insert(room);
            }
        }
        let stale_rooms: Vec<ObjectId> = stale_rooms.into_iter().collect();
        for rooms in stale_rooms.chunks(500) {
            let mut found = self.rooms.find(doc! {"_id": {"$in": rooms}}).await?;
            while let Some(room) = found.try_next().await? {
                let mut creator = roleless.clone();
                creator.insert("room_id", room.id);
                creator.insert("user_id", room.created_by);
                memberships
                    .update_many(creator, doc! {"$set": {"role": RoomRole::Owner.as_str()}})
                    .await?;
            }
        }
        if !stale_rooms.is_empty() {
            memberships
                .update_many(roleless, doc! {"$set": {"role": RoomRole::Member.as_str()}})
                .await?;
        }

        // Rooms with members and no owner: one pass over the memberships in join order.
        let mut owned = HashSet::new();
        let mut first_member: HashMap<ObjectId, ObjectId> = HashMap::new();
        let mut all = memberships
            .find(doc! {})
            .projection(doc! {"room_id": 1, "role": 1})
            .sort(doc! {"_id": 1})
            .await?;
        while let Some(m) = all.try_next().await? {
            let (Ok(id), Ok(room)) = (m.get_object_id("_id"), m.get_object_id("room_id")) else {
                continue;
            };
            if m.get_str("role") == Ok(RoomRole::Owner.as_str()) {
                owned.insert(room);
            }
            first_member.entry(room).or_insert(id);
        }
        first_member.retain(|room, _| !owned.contains(room));
        let ownerless: Vec<ObjectId> = first_member.keys().copied().collect();
        for rooms in ownerless.chunks(500) {
            // Rooms that exist and are not direct.
            let mut found = self
                .rooms
                .find(doc! {"_id": {"$in": rooms}, "direct": Bson::Null})
                .await?;
            while let Some(room) = found.try_next().await? {
                let Some(&heir) = first_member.get(&room.id.object_id()) else {
                    continue;
                };
                let has_owner = memberships
                    .find_one(doc! {"room_id": room.id, "role": RoomRole::Owner.as_str()})
                    .await?
                    .is_some();
                if has_owner {
                    continue;
                }
                memberships
                    .update_one(
                        doc! {"_id": heir},
                        doc! {"$set": {"role": RoomRole::Owner.as_str()}},
                    )
                    .await?;
                tracing::info!(room = %room.id, "a room without an owner: its longest-standing member owns it now");
            }
        }
        Ok(())
    }

    /// Gives memberships from before read markers (no `last_read` field) the newest message
    /// of their room, tombstones included, as the SQLite migration to schema v6 does: members
    /// of an upgraded database have read everything so far. A room without messages gives a
    /// null marker, which is stored, so the field exists afterwards either way. One
    /// conditional update per room, only where the field is still missing: rerunning it
    /// changes nothing, and instances starting together agree.
    pub(super) async fn upgrade_read_markers(&self) -> Result<()> {
        let memberships = self.db.collection::<Document>("memberships");
        let unmarked = doc! {"last_read": {"$exists": false}};
        let mut stale_rooms = HashSet::new();
        let mut stale = memberships
            .find(unmarked.clone())
            .projection(doc! {"room_id": 1})
            .await?;
        while let Some(m) = stale.try_next().await? {
            if let Ok(room) = m.get_object_id("room_id") {
                stale_rooms.insert(room);
            }
        }
        for room in stale_rooms {
            let newest = self
                .messages
                .find_one(doc! {"room_id": room})
                .sort(doc! {"_id": -1})
                .await?
                .map(|m| m.id);
            let mut filter = unmarked.clone();
            filter.insert("room_id", room);
            memberships
                .update_many(filter, doc! {"$set": {"last_read": newest}})
                .await?;
        }
        Ok(())
    }

    /// Recomputes the name keys stored under older `unique_key` rules (documents whose
    /// `key_version` is not the current one), oldest document first, one conditional update
    /// each: rerunning it changes nothing, and instances starting together agree. It runs once
    /// the unique indexes exist, so the index itself reports two names that now share a key.
    /// Then, as in the SQLite migration (see `sqlite::recompute_name_keys` for why), the older
    /// keeps the key, the newer gets `store::displaced_key`, and a warning names both.
    pub(super) async fn upgrade_name_keys(&self) -> Result<()> {
        for (collection, name_field, key_field, what) in [
            ("users", "username", "username_key", "username"),
            ("rooms", "name", "name_key", "room name"),
        ] {
            let docs = self.db.collection::<Document>(collection);
            let mut stale_filter = doc! {"key_version": {"$ne": UNIQUE_KEY_VERSION}};
            if collection == "rooms" {
                // Direct and private rooms keep keys of their own (`store::room_key`), which
                // no name rule makes.
                stale_filter.insert("direct", Bson::Null);
                stale_filter.insert("visibility", doc! {"$ne": "private"});
            }
            // A further pass only for documents that an older instance wrote meanwhile.
            for _ in 0..3 {
                let stale: Vec<Document> = docs
                    .find(stale_filter.clone())
                    .sort(doc! {"_id": 1})
                    .await?
                    .try_collect()
                    .await?;
                if stale.is_empty() {
                    break;
                }
                for stale in &stale {
                    let (Ok(id), Ok(name)) =
                        (stale.get_object_id("_id"), stale.get_str(name_field))
                    else {
                        continue;
                    };
                    let key = unique_key(name);
                    upgrade_name_key(&docs, id, name, key, key_field, name_field, what).await?;
                }
            }
        }
        Ok(())
    }
}

/// Gives one stale document (`id`, `name`) its current key, settling a collision with the
/// document holding that key by age (see [`Inner::upgrade_name_keys`]).
pub(super) async fn upgrade_name_key(
    docs: &Collection<Document>,
    id: ObjectId,
    name: &str,
    mut key: String,
    key_field: &str,
    name_field: &str,
    what: &str,
) -> Result<()> {
    for _ in 0..4 {
        let set = docs
            .update_one(
                doc! {"_id": id, "key_version": {"$ne": UNIQUE_KEY_VERSION}},
                doc! {"$set": {key_field: &key, "key_version": UNIQUE_KEY_VERSION}},
            )
            .await;
        let e = match set {
            Ok(_) => return Ok(()),
            Err(e) if is_duplicate_key(&e) => e,
            Err(e) => return Err(e.into()),
        };
        let Some(holder) = docs.find_one(doc! {key_field: &key}).await? else {
            continue; // it moved meanwhile: try again
        };
        let holder_id = holder.get_object_id("_id").map_err(|_| Error::from(e))?;
        let holder_name = holder.get_str(name_field).unwrap_or_default();
        if holder_id < id {
            tracing::warn!(
                "the {what} {name:?} (id {id}) looks like the older {what} {holder_name:?} (id {holder_id}); \
                 both are kept and only the older blocks new look-alikes: rename one of them"
            );
            key = displaced_key(&key, id);
            continue;
        }
        // The holder is newer, so it gives way. One already under current rules is displaced
        // for good; a stale one gets a placeholder no key equals and is settled in its turn.
        let current = holder
            .get("key_version")
            .and_then(Bson::as_i64)
            .is_some_and(|v| v == UNIQUE_KEY_VERSION);
        let moved = if current {
            tracing::warn!(
                "the {what} {holder_name:?} (id {holder_id}) looks like the older {what} {name:?} (id {id}); \
                 both are kept and only the older blocks new look-alikes: rename one of them"
            );
            displaced_key(&key, holder_id)
        } else {
            format!("\u{0}{}", holder_id.to_hex())
        };
        docs.update_one(
            doc! {"_id": holder_id, key_field: &key},
            doc! {"$set": {key_field: moved}},
        )
        .await?;
    }
    Err(Error::internal(format!(
        "cannot settle the key of the {what} {name:?} (id {id})"
    )))
}

/// Creates an index unless it exists.
pub(super) async fn index<T: Send + Sync>(
    collection: &Collection<T>,
    keys: Document,
    options: Option<IndexOptions>,
) -> Result<()> {
    let model = IndexModel::builder().keys(keys).options(options).build();
    collection.create_index(model).await?;
    Ok(())
}
