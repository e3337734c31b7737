//! `ChatService`: the one place for chat rules.
//!
//! Transports call it with a [`Caller`] and plain arguments. It checks input limits and who may
//! do what (members read and write a room, authors edit and delete their messages), then commits
//! to the [`Store`]. The store reports the events of committed writes in commit order, and one
//! publisher task puts them on the [`EventBus`] in that order: nothing is announced that is not
//! stored, live events follow message-id order, and a write is announced even when the request
//! that made it is gone. Typing, which is not stored, is published directly.
//!
//! The methods are split by domain: `accounts`, `rooms`, `messages` (with the live room feed in
//! `feed`); page arguments in `page`.

mod accounts;
pub mod admin;
mod feed;
mod inbox;
pub mod limiter;
pub mod limits;
mod messages;
mod moderation;
mod page;
pub mod presence;
mod rooms;
mod sessions;

use std::sync::Arc;

use crate::{
    auth::{ClientIp, Passwords, Tokens},
    bus::EventBus,
    error::{Error, Result},
    model::{User, UserId},
    store::Store,
};
use limiter::{Kind, Limiter, Rate, RateLimits};

pub use accounts::AuthPayload;
pub use inbox::{CURSOR_CHARS_MAX, InboxEvent};
pub use moderation::{LOG_PAGE_DEFAULT, LOG_PAGE_MAX, role_name};
pub use page::PageArgs;
pub use rooms::Seen;
pub use sessions::{
    CACHE_FOR as SESSION_CACHE_FOR, MAX_SESSIONS_LISTED, RECHECK_SOCKETS as SESSION_RECHECK,
    SessionStats,
};

/// What bounds each account and each client address: rates, and how many rooms one may join.
pub struct Guards {
    pub rates: RateLimits,
    /// Where the rates are counted: this process, or Redis for every instance.
    pub limiter: Arc<dyn Limiter>,
    /// Most rooms one user may be a member of.
    pub max_rooms_per_user: usize,
}

impl Guards {
    /// No rate limits, counted in memory; the default room cap.
    pub fn off() -> Self {
        Self {
            rates: RateLimits::off(),
            limiter: limiter::memory::MemoryLimiter::new(),
            max_rooms_per_user: limits::MAX_ROOMS_PER_USER,
        }
    }
}

pub struct ChatService {
    /// The task that puts the store's committed events on the bus, in commit order.
    publisher: Option<tokio::task::AbortHandle>,
    /// Tasks that live as long as the service: applying revocations, purging old sessions.
    tasks: Vec<tokio::task::AbortHandle>,
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
    passwords: Passwords,
    tokens: Tokens,
    users: UserCache,
    guards: Guards,
    sessions: Arc<sessions::SessionGate>,
    policy: AccountPolicy,
    presence: Arc<dyn presence::PresenceTracker>,
    /// The task telling rooms of presence changes.
    announcer: Option<tokio::task::AbortHandle>,
    /// `myEvents` streams open on this instance, per user.
    streams: inbox::OpenStreams,
}

/// How accounts come and go: session lifetime, who may register, how long a deleted account's
/// name stays taken.
#[derive(Debug, Clone)]
pub struct AccountPolicy {
    pub session_ttl: std::time::Duration,
    /// Most sessions one user may have active (the least recently used end beyond it).
    pub max_sessions: usize,
    pub registration: crate::config::Registration,
    pub username_quarantine: std::time::Duration,
}

impl AccountPolicy {
    /// The policy the flags ask for.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            session_ttl: config.session_ttl,
            max_sessions: usize::from(config.max_sessions_per_user),
            registration: config.registration,
            username_quarantine: config.username_quarantine,
        }
    }
}

impl ChatService {
    /// Builds the service and starts publishing the store's events (so: inside a runtime).
    pub fn new(
        store: Arc<dyn Store>,
        bus: Arc<dyn EventBus>,
        tokens: Tokens,
        guards: Guards,
        policy: AccountPolicy,
    ) -> Self {
        // The one publisher: it ends when the store's event channel closes, or with the service.
        let publisher = store.take_events().map(|mut events| {
            let bus = bus.clone();
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    bus.publish(event).await;
                }
            })
            .abort_handle()
        });
        let sessions = Arc::new(sessions::SessionGate::new(tokens.ttl()));
        let users = UserCache::new();
        let tasks = vec![
            Self::follow_revocations(&bus, &sessions, &users),
            Self::purge_hourly(&store),
        ];
        Self {
            publisher,
            tasks,
            store,
            bus,
            passwords: Passwords::new(),
            tokens,
            users,
            guards,
            sessions,
            policy,
            presence: presence::MemoryPresence::new(
                std::time::Duration::from_secs(30),
                std::time::Duration::from_secs(600),
            ),
            announcer: None,
            streams: inbox::OpenStreams::default(),
        }
        .announcing()
    }

    /// Keeps presence in `tracker` (Redis, for several instances; or with other times) instead
    /// of the default.
    pub fn with_presence(mut self, tracker: Arc<dyn presence::PresenceTracker>) -> Self {
        self.presence = tracker;
        self.announcing()
    }

    /// Starts announcing the tracker's presence changes (in place of any earlier announcer).
    fn announcing(mut self) -> Self {
        if let Some(old) = self.announcer.take() {
            old.abort();
        }
        let task = tokio::spawn(presence::announce(
            self.presence.clone(),
            self.store.clone(),
            self.bus.clone(),
        ));
        self.announcer = Some(task.abort_handle());
        self
    }

    /// The caller did something: they are not idle.
    pub(crate) async fn active(&self, user: UserId) {
        self.presence.active(user).await;
    }

    /// A socket's hold on its user's presence, for as long as it is open.
    pub async fn socket_opened(&self, user: UserId) -> presence::Presence {
        presence::Presence::open(self.presence.clone(), user).await
    }

    /// Where a user's presence stands.
    pub async fn presence_of(&self, user: UserId) -> Result<presence::PresenceState> {
        self.presence.state(user).await
    }

    /// What the caller shows: `Online` (what their sockets say), `Away`, or `Offline`.
    pub async fn set_presence(
        &self,
        caller: &crate::auth::Caller,
        shown: presence::Shown,
    ) -> Result<User> {
        let me = self.me(caller).await?;
        self.take(Kind::Presence, self.guards.rates.messages, &me.id.to_hex())
            .await?;
        self.presence.choose(me.id, shown).await?;
        if shown == presence::Shown::Online {
            self.presence.active(me.id).await;
        }
        Ok(me)
    }

    /// Takes one of `key`'s allowance of `kind`, or says how long to wait.
    pub(super) async fn take(&self, kind: Kind, rate: Rate, key: &str) -> Result<()> {
        if !self.guards.rates.enabled {
            return Ok(());
        }
        self.guards
            .limiter
            .take(kind, rate, key)
            .await
            .map_err(|wait| {
                let what = match kind {
                    Kind::LoginsPerIp => "login attempts from your address",
                    Kind::RefreshesPerIp => "session refreshes from your address",
                    Kind::RegistrationsPerIp => "accounts registered from your address",
                    Kind::Messages => "messages",
                    Kind::RoomsCreated => "rooms created",
                    Kind::Joins => "rooms joined",
                    Kind::Invitations => "invitations sent",
                    Kind::Moderation => "moderation actions",
                    Kind::MarkRead => "read markers moved",
                    Kind::Presence => "presence changes",
                    Kind::Streams => "myEvents subscriptions started",
                    Kind::TypingStarted | Kind::TypingStopped => "typing notices",
                };
                Error::rate_limited(format!("too many {what} (at most {rate})"), wait)
            })
    }

    /// Which queue a password hash waits in: one per client address while limits are on, so
    /// that a flood from one address waits behind itself, not in front of everyone else.
    pub(super) fn hash_queue(&self, client: ClientIp) -> Option<String> {
        self.guards.rates.enabled.then(|| client.rate_key())
    }

    /// Refuses a new membership beyond the most rooms one user may be in.
    pub(super) async fn room_allowance(&self, user: UserId) -> Result<()> {
        let max = self.guards.max_rooms_per_user;
        if self.store.room_count_of(user).await? >= max as u64 {
            return Err(Error::forbidden(format!(
                "you are a member of {max} rooms, the most one account may be; leave one first"
            )));
        }
        Ok(())
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }

    /// The event bus's state, for `/readyz`.
    pub fn bus_health(&self) -> &'static str {
        self.bus.health()
    }

    /// The database's schema version, for `/readyz`.
    pub fn schema_version(&self) -> i64 {
        self.store.schema_version()
    }

    /// Whether the store answers (readiness).
    pub async fn ready(&self) -> Result<()> {
        self.store.ping().await
    }

    // --- accounts ---
}

impl Drop for ChatService {
    fn drop(&mut self) {
        if let Some(publisher) = &self.publisher {
            publisher.abort();
        }
        for task in &self.tasks {
            task.abort();
        }
        if let Some(announcer) = &self.announcer {
            announcer.abort();
        }
    }
}

/// Users change only when deleted (which every instance hears of, as a revocation), so they are
/// cached by id, the least used going first when the cache is full.
#[derive(Clone)]
struct UserCache(moka::sync::Cache<UserId, User>);

impl UserCache {
    const CAPACITY: u64 = 100_000;

    fn new() -> Self {
        Self(moka::sync::Cache::new(Self::CAPACITY))
    }

    fn get(&self, id: UserId) -> Option<User> {
        self.0.get(&id)
    }

    fn put(&self, user: &User) {
        self.0.insert(user.id, user.clone());
    }

    fn forget(&self, id: UserId) {
        self.0.invalidate(&id);
    }

    fn forget_all(&self) {
        self.0.invalidate_all();
    }
}
