//! Presence: who is online, away or offline, and when each was last seen.
//!
//! A user is `ONLINE` while at least one authenticated socket of theirs (graphql-ws or
//! Socket.IO) is open on any instance, and for `--presence-timeout` after their last one closes,
//! so that a reconnect within that time is no OFFLINE/ONLINE flap. `setPresence(AWAY)` shows
//! them away while online; `setPresence(OFFLINE)` shows them offline (invisible); `ONLINE`
//! lifts either. Sockets hold a [`Presence`] guard: opening one counts the socket, dropping it
//! (the socket closed) starts the timeout.
//!
//! On one instance the state is in memory. With `--redis-url`, every instance keeps, per user
//! with a socket here, a member of the sorted set `confab:presence:{user}` scored with the time
//! (milliseconds) until which it vouches for the user, renewed every third of the timeout. The
//! user is online while any score lies ahead: an instance that dies (even by SIGKILL) stops
//! renewing, and its vouching runs out within the timeout.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{error::Result, model::UserId};

/// What a user chose to show, over what their sockets say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    Online,
    Away,
    Offline,
}

/// Where a user's presence stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceState {
    pub shown: Shown,
    pub last_seen: Option<DateTime<Utc>>,
}

/// Where presence is kept: this process, or Redis for every instance.
#[async_trait]
pub trait PresenceTracker: Send + Sync + 'static {
    /// A socket of `user` opened.
    async fn opened(&self, user: UserId);
    /// A socket of `user` closed.
    async fn closed(&self, user: UserId);
    /// What the user chose to show (`Online`: whatever their sockets say).
    async fn choose(&self, user: UserId, shown: Shown) -> Result<()>;
    /// Where the user's presence stands now.
    async fn state(&self, user: UserId) -> Result<PresenceState>;
}

/// A socket's hold on its user's presence: counted while it lives.
pub struct Presence {
    tracker: Arc<dyn PresenceTracker>,
    user: UserId,
}

impl Presence {
    pub async fn open(tracker: Arc<dyn PresenceTracker>, user: UserId) -> Self {
        tracker.opened(user).await;
        Self { tracker, user }
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        let (tracker, user) = (self.tracker.clone(), self.user);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { tracker.closed(user).await });
        }
    }
}

fn shown_of(online: bool, chosen: Option<Shown>) -> Shown {
    match (online, chosen) {
        (false, _) => Shown::Offline,
        (true, Some(Shown::Away)) => Shown::Away,
        (true, Some(Shown::Offline)) => Shown::Offline,
        (true, _) => Shown::Online,
    }
}

#[derive(Default)]
struct Entry {
    open: u32,
    closed_at: Option<tokio::time::Instant>,
    last_seen: Option<DateTime<Utc>>,
    chosen: Option<Shown>,
}

/// Presence for one instance, in memory.
pub struct MemoryPresence {
    timeout: Duration,
    users: Mutex<HashMap<UserId, Entry>>,
}

impl MemoryPresence {
    pub fn new(timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            timeout,
            users: Mutex::default(),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<UserId, Entry>) -> T) -> T {
        f(&mut self.users.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[async_trait]
impl PresenceTracker for MemoryPresence {
    async fn opened(&self, user: UserId) {
        self.with(|users| {
            let entry = users.entry(user).or_default();
            entry.open += 1;
            entry.closed_at = None;
            entry.last_seen = Some(Utc::now());
        });
    }

    async fn closed(&self, user: UserId) {
        self.with(|users| {
            let entry = users.entry(user).or_default();
            entry.open = entry.open.saturating_sub(1);
            entry.last_seen = Some(Utc::now());
            if entry.open == 0 {
                entry.closed_at = Some(tokio::time::Instant::now());
            }
        });
    }

    async fn choose(&self, user: UserId, shown: Shown) -> Result<()> {
        self.with(|users| {
            users.entry(user).or_default().chosen = (shown != Shown::Online).then_some(shown);
        });
        Ok(())
    }

    async fn state(&self, user: UserId) -> Result<PresenceState> {
        Ok(self.state_at(user, tokio::time::Instant::now()))
    }
}

impl MemoryPresence {
    /// Where `user` stands at `now` (a later instant in the tests).
    fn state_at(&self, user: UserId, now: tokio::time::Instant) -> PresenceState {
        self.with(|users| {
            let Some(entry) = users.get(&user) else {
                return PresenceState {
                    shown: Shown::Offline,
                    last_seen: None,
                };
            };
            let online = entry.open > 0
                || entry
                    .closed_at
                    .is_some_and(|at| now.saturating_duration_since(at) < self.timeout);
            let last_seen = match entry.open > 0 {
                true => Some(Utc::now()),
                false => entry.last_seen,
            };
            PresenceState {
                shown: shown_of(online, entry.chosen),
                last_seen,
            }
        })
    }
}

/// Presence shared by every instance through Redis (see the module docs).
pub struct RedisPresence {
    conn: redis::aio::ConnectionManager,
    timeout: Duration,
    /// This instance's name in the users' sets.
    instance: String,
    /// Sockets open here, per user.
    local: Mutex<HashMap<UserId, u32>>,
}

fn presence_key(user: UserId) -> String {
    format!("confab:presence:{}", user.to_hex())
}

fn seen_key(user: UserId) -> String {
    format!("confab:seen:{}", user.to_hex())
}

fn chosen_key(user: UserId) -> String {
    format!("confab:presence-choice:{}", user.to_hex())
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl RedisPresence {
    /// Connects, and renews this instance's vouching every third of `timeout` while it runs.
    pub async fn connect(url: &str, timeout: Duration) -> anyhow::Result<Arc<Self>> {
        let client = redis::Client::open(url)?;
        let conn = tokio::time::timeout(Duration::from_secs(10), client.get_connection_manager())
            .await
            .map_err(|_| anyhow::anyhow!("Redis did not answer within 10 s"))??;
        let instance = crate::model::ObjectId::new().to_hex();
        let presence = Arc::new(Self {
            conn,
            timeout,
            instance,
            local: Mutex::default(),
        });
        let weak = Arc::downgrade(&presence);
        tokio::spawn(async move {
            let mut every = tokio::time::interval((timeout / 3).max(Duration::from_millis(100)));
            loop {
                every.tick().await;
                let Some(presence) = weak.upgrade() else {
                    return;
                };
                presence.renew().await;
            }
        });
        Ok(presence)
    }

    fn local_users(&self) -> Vec<UserId> {
        let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        local.keys().copied().collect()
    }

    /// Vouches for `users` until a timeout from now, and marks them seen now.
    async fn vouch(&self, users: &[UserId]) {
        if users.is_empty() {
            return;
        }
        let now = now_ms();
        let until = now + i64::try_from(self.timeout.as_millis()).unwrap_or(i64::MAX / 2);
        let keep = i64::try_from(self.timeout.as_secs()).unwrap_or(0) * 2 + 60;
        let mut pipe = redis::pipe();
        for user in users {
            pipe.zadd(presence_key(*user), &self.instance, until)
                .ignore()
                .expire(presence_key(*user), keep)
                .ignore()
                .set(seen_key(*user), now)
                .ignore();
        }
        let mut conn = self.conn.clone();
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            tracing::warn!(error = %e, "cannot record presence in Redis");
        }
    }

    async fn renew(&self) {
        let users = self.local_users();
        self.vouch(&users).await;
    }
}

#[async_trait]
impl PresenceTracker for RedisPresence {
    async fn opened(&self, user: UserId) {
        *self
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(user)
            .or_default() += 1;
        self.vouch(&[user]).await;
    }

    async fn closed(&self, user: UserId) {
        {
            let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(open) = local.get_mut(&user) {
                *open = open.saturating_sub(1);
                if *open == 0 {
                    local.remove(&user);
                }
            }
        }
        // Vouched for a timeout from now: a reconnect meanwhile is no flap.
        self.vouch(&[user]).await;
    }

    async fn choose(&self, user: UserId, shown: Shown) -> Result<()> {
        let mut conn = self.conn.clone();
        let key = chosen_key(user);
        let result: redis::RedisResult<()> = match shown {
            Shown::Online => redis::cmd("DEL").arg(&key).query_async(&mut conn).await,
            Shown::Away => {
                redis::cmd("SET")
                    .arg(&key)
                    .arg("away")
                    .query_async(&mut conn)
                    .await
            }
            Shown::Offline => {
                redis::cmd("SET")
                    .arg(&key)
                    .arg("offline")
                    .query_async(&mut conn)
                    .await
            }
        };
        result.map_err(|e| crate::error::Error::internal(format!("Redis: {e}")))
    }

    async fn state(&self, user: UserId) -> Result<PresenceState> {
        let mut conn = self.conn.clone();
        let (vouched, seen, chosen): (i64, Option<i64>, Option<String>) = redis::pipe()
            .zcount(presence_key(user), now_ms(), "+inf")
            .get(seen_key(user))
            .get(chosen_key(user))
            .query_async(&mut conn)
            .await
            .map_err(|e| crate::error::Error::internal(format!("Redis: {e}")))?;
        let chosen = match chosen.as_deref() {
            Some("away") => Some(Shown::Away),
            Some("offline") => Some(Shown::Offline),
            _ => None,
        };
        let online = vouched > 0;
        Ok(PresenceState {
            shown: shown_of(online, chosen),
            last_seen: match online {
                true => Some(Utc::now()),
                false => seen.and_then(DateTime::from_timestamp_millis),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn online_until_the_timeout_after_the_last_socket_closes() {
        let presence = MemoryPresence::new(Duration::from_secs(30));
        let ada = UserId::from_bytes([1; 12]);
        let at = |secs: u64| tokio::time::Instant::now() + Duration::from_secs(secs);
        assert_eq!(presence.state_at(ada, at(0)).shown, Shown::Offline);
        presence.opened(ada).await;
        presence.opened(ada).await;
        presence.closed(ada).await;
        assert_eq!(
            presence.state_at(ada, at(600)).shown,
            Shown::Online,
            "one socket is still open"
        );
        presence.closed(ada).await;
        assert_eq!(
            presence.state_at(ada, at(29)).shown,
            Shown::Online,
            "no flap within the timeout"
        );
        assert_eq!(presence.state_at(ada, at(31)).shown, Shown::Offline);
        presence.opened(ada).await;
        presence.closed(ada).await;
        assert_eq!(
            presence.state_at(ada, at(29)).shown,
            Shown::Online,
            "a reconnect starts it again"
        );
        assert!(presence.state_at(ada, at(31)).last_seen.is_some());
    }

    #[tokio::test]
    async fn a_choice_shows_only_while_online() {
        let presence = MemoryPresence::new(Duration::from_secs(30));
        let ada = UserId::from_bytes([1; 12]);
        presence.choose(ada, Shown::Away).await.unwrap();
        assert_eq!(presence.state(ada).await.unwrap().shown, Shown::Offline);
        presence.opened(ada).await;
        assert_eq!(presence.state(ada).await.unwrap().shown, Shown::Away);
        presence.choose(ada, Shown::Online).await.unwrap();
        assert_eq!(presence.state(ada).await.unwrap().shown, Shown::Online);
    }
}
