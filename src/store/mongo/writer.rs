//! Write ordering: ids in commit order, one write of a room at a time in this instance (the
//! room's lock), and across instances a room's write lease with its change numbers.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use mongodb::bson::{Bson, doc, oid::ObjectId};

use super::{MongoStore, now, short};
use crate::{
    error::{Error, Result},
    model::{MessageId, RoomEvent, RoomId},
};

/// Mints ObjectIds that strictly increase within this process (see the module docs).
#[derive(Default)]
pub(super) struct IdGen {
    pub(super) last: Mutex<[u8; 12]>,
}

impl IdGen {
    pub(super) fn next(&self) -> ObjectId {
        crate::store::next_object_id(&mut self.last.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// An id above `floor` too (a room's newest message, which another instance may have
    /// minted).
    pub(super) fn next_after(&self, floor: Option<MessageId>) -> ObjectId {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(floor) = floor {
            *last = (*last).max(floor.bytes());
        }
        crate::store::next_object_id(&mut last)
    }
}

/// How long a room's write lease lasts unreleased: an instance that dies holding one delays
/// the room's writes this long, at most.
/// Instances compare it with their own clocks, which must agree to well within it.
pub(super) const LEASE_TTL: Duration = Duration::from_secs(15);

/// How long a write waits for a room's lease before it fails.
pub(super) const LEASE_WAIT: Duration = Duration::from_secs(20);

/// A room's write lease, held while one message change is numbered and written. Leases order
/// the changes of a room across every instance that shares the database, without
/// transactions: each change takes the number after the last and an id above the newest, and
/// is written before the next change starts. So numbers and ids follow commit order, and a
/// reader that sees a change also sees every change numbered before it. A lease is a field of
/// the room document, taken with one atomic update; one left by a dead holder expires after
/// [`LEASE_TTL`], and the next holder recounts from the messages themselves. A unique index on
/// `(room_id, seq)` refuses a number written twice should a slow holder outlive its lease.
pub(super) struct Lease {
    pub(super) room: RoomId,
    pub(super) token: ObjectId,
    /// The last number taken; the holder's change takes the next.
    pub(super) seq: u64,
    pub(super) last_message: Option<MessageId>,
}

pub(super) fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

/// One async lock per room with writes under way; idle rooms hold none.
#[derive(Default)]
pub(super) struct RoomLocks {
    pub(super) locks: Mutex<HashMap<RoomId, Arc<tokio::sync::Mutex<()>>>>,
}

impl RoomLocks {
    pub(super) async fn lock(&self, room: RoomId) -> RoomGuard<'_> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(room)
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        RoomGuard {
            locks: self,
            room,
            lock,
            _guard: guard,
        }
    }
}

pub(super) struct RoomGuard<'a> {
    pub(super) locks: &'a RoomLocks,
    pub(super) room: RoomId,
    pub(super) lock: Arc<tokio::sync::Mutex<()>>,
    pub(super) _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for RoomGuard<'_> {
    fn drop(&mut self) {
        let mut locks = self.locks.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Ours, the map's, and the guard's own: nobody else waits for this room.
        if Arc::strong_count(&self.lock) <= 3 {
            locks.remove(&self.room);
        }
    }
}

impl MongoStore {
    /// Starts minting ids above the largest stored one, as the SQLite driver does.
    pub(super) async fn resume_ids(&self) -> Result<()> {
        let newest = doc! {"_id": -1};
        let mut last = [0u8; 12];
        let ids = [
            self.users
                .find_one(doc! {})
                .sort(newest.clone())
                .await?
                .map(|d| d.id.object_id()),
            self.rooms
                .find_one(doc! {})
                .sort(newest.clone())
                .await?
                .map(|d| d.id.object_id()),
            self.memberships
                .find_one(doc! {})
                .sort(newest.clone())
                .await?
                .map(|d| d.id),
            self.messages
                .find_one(doc! {})
                .sort(newest.clone())
                .await?
                .map(|d| d.id.object_id()),
            self.sessions
                .find_one(doc! {})
                .sort(newest.clone())
                .await?
                .map(|d| d.id.object_id()),
            self.bans
                .find_one(doc! {})
                .sort(newest.clone())
                .await?
                .map(|d| d.id),
            self.invitations
                .find_one(doc! {})
                .sort(newest.clone())
                .await?
                .map(|d| d.id),
            self.moderation
                .find_one(doc! {})
                .sort(newest)
                .await?
                .map(|d| d.id.object_id()),
        ];
        for id in ids.into_iter().flatten() {
            last = last.max(id.bytes());
        }
        *self.ids.last.lock().unwrap_or_else(|p| p.into_inner()) = last;
        Ok(())
    }

    pub(super) async fn announce(&self, event: RoomEvent) {
        if let Some(sink) = self.events.sender() {
            // Waits when the publisher is behind; fails only once it is gone.
            let _ = sink.send(event).await;
        }
    }

    /// Takes `room`'s write lease (see [`Lease`]), waiting while another holds it.
    pub(super) async fn lease(&self, room: RoomId) -> Result<Lease> {
        let token = ObjectId::new();
        let deadline = tokio::time::Instant::now() + LEASE_WAIT;
        let mut pause = Duration::from_millis(1);
        let ttl = i64::try_from(LEASE_TTL.as_millis()).unwrap_or(i64::MAX);
        loop {
            let now = now();
            let until = bson::DateTime::from_millis(now.timestamp_millis().saturating_add(ttl));
            let take = doc! {"$set": {"lease": {"token": token, "until": until}}};
            // Plain conditional updates, which every MongoDB-wire server applies atomically
            // (not find-and-modify, which some test servers do not). A free lease first; then
            // one its holder left to expire, which means recounting.
            let free = doc! {"_id": room, "lease": Bson::Null};
            let mut taken_over = false;
            let mut taken = self
                .rooms
                .update_one(free, take.clone())
                .await?
                .modified_count
                == 1;
            if !taken {
                let expired = doc! {"_id": room, "lease.until": {"$lt": now}};
                taken = self.rooms.update_one(expired, take).await?.modified_count == 1;
                taken_over = taken;
            }
            if taken {
                let Some(state) = self.rooms.find_one(doc! {"_id": room}).await? else {
                    return Err(Error::not_found("room not found"));
                };
                let mut lease = Lease {
                    room,
                    token,
                    seq: u64::try_from(state.seq).unwrap_or(0),
                    last_message: state.last_message,
                };
                if taken_over {
                    tracing::warn!(%room, "a room's write lease expired unreleased; taking it over");
                }
                // Taken over, or a room whose messages were written before rooms kept their
                // newest id: count from the messages themselves.
                if (taken_over || lease.last_message.is_none())
                    && let Err(e) = self.recount(&mut lease).await
                {
                    self.release(lease).await;
                    return Err(e);
                }
                return Ok(lease);
            }
            if self.rooms.find_one(doc! {"_id": room}).await?.is_none() {
                return Err(Error::not_found("room not found"));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::internal(format!(
                    "room {room}: timed out waiting for its write lease"
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Brings a lease's number and newest id up to what the messages hold: after a holder
    /// died, or a write failed without saying whether it landed.
    pub(super) async fn recount(&self, lease: &mut Lease) -> Result<()> {
        let newest_change = self
            .messages
            .find_one(doc! {"room_id": lease.room, "seq": {"$exists": true}})
            .sort(doc! {"seq": -1})
            .await?;
        if let Some(m) = newest_change {
            lease.seq = lease.seq.max(u64::try_from(m.seq).unwrap_or(0));
        }
        let newest = self
            .messages
            .find_one(doc! {"room_id": lease.room})
            .sort(doc! {"_id": -1})
            .await?;
        if let Some(m) = newest {
            lease.last_message = lease.last_message.max(Some(m.id));
        }
        Ok(())
    }

    /// Records the lease's number and newest id on the room and lets the lease go. A failure
    /// is logged, not returned: the change itself is stored, and the lease expires.
    pub(super) async fn release(&self, lease: Lease) {
        let released = self
            .rooms
            .update_one(
                doc! {"_id": lease.room, "lease.token": lease.token},
                doc! {"$set": {
                    "seq": seq_i64(lease.seq),
                    "last_message": lease.last_message,
                    "lease": Bson::Null,
                }},
            )
            .await;
        match released {
            Ok(r) if r.matched_count == 1 => {}
            Ok(_) => {
                tracing::warn!(room = %lease.room, "a room's write lease expired before release")
            }
            Err(e) => {
                tracing::warn!(room = %lease.room, error = %short(&e), "cannot release a room's write lease; it will expire")
            }
        }
    }

    /// Releases after a write that failed: recounted first, as it may have landed anyway.
    pub(super) async fn release_after_failure(&self, mut lease: Lease) {
        if let Err(e) = self.recount(&mut lease).await {
            tracing::warn!(room = %lease.room, error = %e, "cannot recount a room's changes; its lease will expire");
            return;
        }
        self.release(lease).await;
    }
}
