//! Presence: who is online, away or offline, and when each was last seen; and telling the
//! people who share a room with a user when what they show changes.
//!
//! A user is `ONLINE` while at least one authenticated socket of theirs (graphql-ws or
//! Socket.IO) is open on any instance, and for `--presence-timeout` after their last one closes,
//! so that a reconnect within that time is no OFFLINE/ONLINE flap. They are `AWAY` when they
//! chose it (`setPresence(AWAY)`) or did nothing for `--presence-idle` (sending, editing, marking
//! read, typing and choosing ONLINE count; so does opening a socket). `setPresence(OFFLINE)`
//! shows them offline (invisible); `ONLINE` lifts either choice. Sockets hold a [`Presence`]
//! guard: opening one counts the socket, dropping it (the socket closed) starts the timeout.
//!
//! On one instance the state is in memory. With `--redis-url`, every instance keeps, per user
//! with a socket here, a member of the sorted set `confab:presence:{user}` scored with the time
//! (milliseconds) until which it vouches for the user, renewed every third of the timeout, and
//! the same time in `confab:online` (the latest vouching for each user). The user is online
//! while any score lies ahead: an instance that dies (even by SIGKILL) stops renewing, its
//! vouching runs out within the timeout, and another instance's sweep finds the user in
//! `confab:online` with a past score.
//!
//! **Changes.** A tracker signals the users whose presence may have changed (a first socket, a
//! last socket's timeout run out, a choice, idleness starting or ending, an expired vouching);
//! the [`announce`] task collects signals for a moment (so a burst of them is one check per
//! user), reads each user's state, and records it as the one announced, learning whether that
//! changed it (in Redis, `SET … GET` on `confab:presence-shown:{user}`, so of several instances
//! noticing one change one announces it). A change is published as
//! [`RoomEvent::PresenceChanged`] to each room of the user with at most [`ANNOUNCE_ROOM_MAX`]
//! members; `myEvents` streams tell each person once per change.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

pub use crate::model::Shown;
use crate::{
    bus::EventBus,
    error::Result,
    model::{PageRequest, RoomEvent, UserId},
    store::Store,
};

/// Rooms with more members than this are not told presence changes: in a room of n people
/// every change reaches n streams, and n people connecting at once is n² events. Their clients
/// read `presence` of the members they show.
pub const ANNOUNCE_ROOM_MAX: u64 = 250;

/// How long signals are collected before the users they name are checked.
const COLLECT: Duration = Duration::from_millis(250);

/// A user's presence is told at most this often: a change within it waits for its end (so one
/// who flips between AWAY and ONLINE in a loop costs their rooms one event per this long).
const ANNOUNCE_EVERY: Duration = Duration::from_secs(2);

/// Activity told to Redis at most this often per user and instance.
const ACTIVITY_EVERY: Duration = Duration::from_secs(5);

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
    /// The user did something (not idle).
    async fn active(&self, user: UserId);
    /// What the user chose to show (`Online`: whatever their sockets say).
    async fn choose(&self, user: UserId, shown: Shown) -> Result<()>;
    /// Where the user's presence stands now.
    async fn state(&self, user: UserId) -> Result<PresenceState>;
    /// Records `shown` as what was last announced of `user`; whether it differs from before
    /// (nothing recorded counts as `Offline`).
    async fn settle(&self, user: UserId, shown: Shown) -> Result<bool>;
    /// The users whose presence may have changed, as signalled; the first call gets them.
    fn signals(&self) -> Option<mpsc::UnboundedReceiver<UserId>>;
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

fn shown_of(online: bool, chosen: Option<Shown>, idle: bool) -> Shown {
    match (online, chosen) {
        (false, _) => Shown::Offline,
        (true, Some(Shown::Away)) => Shown::Away,
        (true, Some(Shown::Offline)) => Shown::Offline,
        (true, _) if idle => Shown::Away,
        (true, _) => Shown::Online,
    }
}

/// The channel a tracker signals on, until its receiver is taken.
struct Signals {
    tx: mpsc::UnboundedSender<UserId>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<UserId>>>,
}

impl Signals {
    fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }

    fn signal(&self, user: UserId) {
        // An error means nobody announces (a tracker without a service): nothing to tell.
        let _ = self.tx.send(user);
    }

    fn take(&self) -> Option<mpsc::UnboundedReceiver<UserId>> {
        self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Signals `user` once `after` has passed (a last socket's timeout), a little later so that
/// the state read then has run out.
fn signal_after(signals: &Signals, user: UserId, after: Duration) {
    let tx = signals.tx.clone();
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            tokio::time::sleep(after + Duration::from_millis(50)).await;
            let _ = tx.send(user);
        });
    }
}

/// Runs `tick` on `tracker` every `every` while it lives.
fn every<T: Send + Sync + 'static, F: std::future::Future<Output = ()> + Send>(
    tracker: &Arc<T>,
    every: Duration,
    tick: impl Fn(Arc<T>) -> F + Send + 'static,
) {
    let weak = Arc::downgrade(tracker);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(tracker) = weak.upgrade() else {
                    return;
                };
                tick(tracker).await;
            }
        });
    }
}

/// How often idleness is looked for: a quarter of the idle time, at least every second.
fn idle_sweep(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

#[derive(Default)]
struct Entry {
    open: u32,
    closed_at: Option<tokio::time::Instant>,
    last_seen: Option<DateTime<Utc>>,
    chosen: Option<Shown>,
    active_at: Option<tokio::time::Instant>,
    /// Idle as of the last sweep or activity (so the change is signalled once).
    idle: bool,
    announced: Option<Shown>,
}

/// Presence for one instance, in memory.
pub struct MemoryPresence {
    timeout: Duration,
    idle: Duration,
    users: Mutex<HashMap<UserId, Entry>>,
    signals: Signals,
}

impl MemoryPresence {
    pub fn new(timeout: Duration, idle: Duration) -> Arc<Self> {
        let presence = Arc::new(Self {
            timeout,
            idle,
            users: Mutex::default(),
            signals: Signals::new(),
        });
        every(
            &presence,
            idle_sweep(idle),
            |p| async move { p.sweep_idle() },
        );
        presence
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<UserId, Entry>) -> T) -> T {
        f(&mut self.users.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn online_at(&self, entry: &Entry, now: tokio::time::Instant) -> bool {
        entry.open > 0
            || entry
                .closed_at
                .is_some_and(|at| now.saturating_duration_since(at) < self.timeout)
    }

    fn idle_at(&self, entry: &Entry, now: tokio::time::Instant) -> bool {
        entry
            .active_at
            .is_some_and(|at| now.saturating_duration_since(at) >= self.idle)
    }

    /// Signals the users who went idle since the last sweep.
    fn sweep_idle(&self) {
        let now = tokio::time::Instant::now();
        let went_idle: Vec<UserId> = self.with(|users| {
            users
                .iter_mut()
                .filter(|(_, e)| e.open > 0 && !e.idle)
                .filter_map(|(user, e)| {
                    let idle = e
                        .active_at
                        .is_some_and(|at| now.saturating_duration_since(at) >= self.idle);
                    e.idle = idle;
                    idle.then_some(*user)
                })
                .collect()
        });
        for user in went_idle {
            self.signals.signal(user);
        }
    }
}

#[async_trait]
impl PresenceTracker for MemoryPresence {
    async fn opened(&self, user: UserId) {
        let first = self.with(|users| {
            let entry = users.entry(user).or_default();
            entry.open += 1;
            entry.closed_at = None;
            entry.last_seen = Some(Utc::now());
            entry.active_at = Some(tokio::time::Instant::now());
            std::mem::take(&mut entry.idle) || entry.open == 1
        });
        if first {
            self.signals.signal(user);
        }
    }

    async fn closed(&self, user: UserId) {
        let last = self.with(|users| {
            let entry = users.entry(user).or_default();
            entry.open = entry.open.saturating_sub(1);
            entry.last_seen = Some(Utc::now());
            if entry.open == 0 {
                entry.closed_at = Some(tokio::time::Instant::now());
            }
            entry.open == 0
        });
        if last {
            // Nothing changes until the timeout has run out: check then.
            signal_after(&self.signals, user, self.timeout);
        }
    }

    async fn active(&self, user: UserId) {
        let was_idle = self.with(|users| {
            let entry = users.entry(user).or_default();
            entry.active_at = Some(tokio::time::Instant::now());
            std::mem::take(&mut entry.idle)
        });
        if was_idle {
            self.signals.signal(user);
        }
    }

    async fn choose(&self, user: UserId, shown: Shown) -> Result<()> {
        self.with(|users| {
            users.entry(user).or_default().chosen = (shown != Shown::Online).then_some(shown);
        });
        self.signals.signal(user);
        Ok(())
    }

    async fn state(&self, user: UserId) -> Result<PresenceState> {
        Ok(self.state_at(user, tokio::time::Instant::now()))
    }

    async fn settle(&self, user: UserId, shown: Shown) -> Result<bool> {
        Ok(self.with(|users| {
            let entry = users.entry(user).or_default();
            let before = entry.announced.unwrap_or(Shown::Offline);
            entry.announced = Some(shown);
            before != shown
        }))
    }

    fn signals(&self) -> Option<mpsc::UnboundedReceiver<UserId>> {
        self.signals.take()
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
            let online = self.online_at(entry, now);
            let last_seen = match entry.open > 0 {
                true => Some(Utc::now()),
                false => entry.last_seen,
            };
            PresenceState {
                shown: shown_of(online, entry.chosen, self.idle_at(entry, now)),
                last_seen,
            }
        })
    }
}

/// Presence shared by every instance through Redis (see the module docs).
pub struct RedisPresence {
    conn: redis::aio::ConnectionManager,
    timeout: Duration,
    idle: Duration,
    /// This instance's name in the users' sets.
    instance: String,
    /// Per user with sockets here: how many, when last told active, whether idle as of the last
    /// sweep.
    local: Mutex<HashMap<UserId, Local>>,
    signals: Signals,
}

struct Local {
    open: u32,
    told_active: tokio::time::Instant,
    idle: bool,
}

const ONLINE_KEY: &str = "confab:online";

fn presence_key(user: UserId) -> String {
    format!("confab:presence:{}", user.to_hex())
}

fn seen_key(user: UserId) -> String {
    format!("confab:seen:{}", user.to_hex())
}

fn chosen_key(user: UserId) -> String {
    format!("confab:presence-choice:{}", user.to_hex())
}

fn active_key(user: UserId) -> String {
    format!("confab:active:{}", user.to_hex())
}

fn shown_key(user: UserId) -> String {
    format!("confab:presence-shown:{}", user.to_hex())
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

fn redis_error(e: redis::RedisError) -> crate::error::Error {
    crate::error::Error::internal(format!("Redis: {e}"))
}

impl RedisPresence {
    /// Connects, and renews this instance's vouching every third of `timeout` while it runs.
    pub async fn connect(
        url: &str,
        timeout: Duration,
        idle: Duration,
    ) -> anyhow::Result<Arc<Self>> {
        let client = redis::Client::open(url)?;
        let conn = tokio::time::timeout(Duration::from_secs(10), client.get_connection_manager())
            .await
            .map_err(|_| anyhow::anyhow!("Redis did not answer within 10 s"))??;
        let instance = crate::model::ObjectId::new().to_hex();
        let presence = Arc::new(Self {
            conn,
            timeout,
            idle,
            instance,
            local: Mutex::default(),
            signals: Signals::new(),
        });
        let renew_every = (timeout / 3).max(Duration::from_millis(100));
        every(&presence, renew_every, |p| async move {
            p.renew().await;
            p.sweep_expired().await;
        });
        every(&presence, idle_sweep(idle), |p| async move {
            p.sweep_idle().await
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
        let until = now + millis(self.timeout);
        let keep = i64::try_from(self.timeout.as_secs()).unwrap_or(0) * 2 + 60;
        let mut pipe = redis::pipe();
        for user in users {
            pipe.zadd(presence_key(*user), &self.instance, until)
                .ignore()
                .expire(presence_key(*user), keep)
                .ignore()
                .set(seen_key(*user), now)
                .ignore()
                .cmd("ZADD")
                .arg(ONLINE_KEY)
                .arg("GT")
                .arg(until)
                .arg(user.to_hex())
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

    /// Signals the users whose latest vouching has run out (their last socket closed a timeout
    /// ago, or the instance holding it died), and forgets them in `confab:online`.
    async fn sweep_expired(&self) {
        let mut conn = self.conn.clone();
        let now = now_ms();
        let expired: redis::RedisResult<Vec<String>> = redis::cmd("ZRANGEBYSCORE")
            .arg(ONLINE_KEY)
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(10_000)
            .query_async(&mut conn)
            .await;
        let expired = match expired {
            Ok(expired) => expired,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read presence from Redis");
                return;
            }
        };
        if expired.is_empty() {
            return;
        }
        // Removed only while still expired: of several instances sweeping, each user is taken
        // by one (ZREM answers 1 once), and one renewed meanwhile stays.
        for hex in expired {
            let Ok(id) = crate::model::ObjectId::parse_str(&hex) else {
                continue;
            };
            let removed: redis::RedisResult<i64> = redis::Script::new(
                "local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
                 if s and tonumber(s) <= tonumber(ARGV[2]) then
                   return redis.call('ZREM', KEYS[1], ARGV[1])
                 end
                 return 0",
            )
            .key(ONLINE_KEY)
            .arg(&hex)
            .arg(now)
            .invoke_async(&mut conn)
            .await;
            if matches!(removed, Ok(1)) {
                self.signals.signal(UserId::from(id));
            }
        }
    }

    /// Signals the users here who went idle since the last sweep (by what any instance saw).
    async fn sweep_idle(&self) {
        let candidates: Vec<UserId> = {
            let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
            local
                .iter()
                .filter(|(_, l)| !l.idle && l.told_active.elapsed() >= self.idle)
                .map(|(user, _)| *user)
                .collect()
        };
        for user in candidates {
            let idle = match self.is_idle(user).await {
                Ok(idle) => idle,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read presence from Redis");
                    return;
                }
            };
            if idle {
                if let Some(l) = self
                    .local
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_mut(&user)
                {
                    l.idle = true;
                }
                self.signals.signal(user);
            }
        }
    }

    async fn is_idle(&self, user: UserId) -> Result<bool> {
        let mut conn = self.conn.clone();
        let active: Option<i64> = redis::cmd("GET")
            .arg(active_key(user))
            .query_async(&mut conn)
            .await
            .map_err(redis_error)?;
        Ok(active.is_some_and(|at| now_ms() - at >= millis(self.idle)))
    }

    /// Tells Redis `user` was active now; `force` skips the per-instance throttle.
    async fn tell_active(&self, user: UserId, force: bool) -> bool {
        let (due, mut was_idle) = {
            let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
            match local.get_mut(&user) {
                Some(l) => {
                    let due = force || l.told_active.elapsed() >= ACTIVITY_EVERY;
                    if due {
                        l.told_active = tokio::time::Instant::now();
                    }
                    (due, std::mem::take(&mut l.idle))
                }
                None => (true, false),
            }
        };
        if due {
            let keep = self.idle.as_secs().saturating_mul(2).max(60);
            let mut conn = self.conn.clone();
            let now = now_ms();
            let told: redis::RedisResult<Option<i64>> = redis::cmd("SET")
                .arg(active_key(user))
                .arg(now)
                .arg("EX")
                .arg(keep)
                .arg("GET")
                .query_async(&mut conn)
                .await;
            match told {
                // Idle by what every instance told (the act may come through an instance that
                // holds none of the user's sockets, which never saw them go idle).
                Ok(before) => was_idle |= before.is_none_or(|at| now - at >= millis(self.idle)),
                Err(e) => tracing::warn!(error = %e, "cannot record activity in Redis"),
            }
        }
        was_idle
    }
}

#[async_trait]
impl PresenceTracker for RedisPresence {
    async fn opened(&self, user: UserId) {
        let first = {
            let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
            let entry = local.entry(user).or_insert_with(|| Local {
                open: 0,
                told_active: tokio::time::Instant::now(),
                idle: false,
            });
            entry.open += 1;
            entry.open == 1
        };
        self.vouch(&[user]).await;
        let was_idle = self.tell_active(user, true).await;
        if first || was_idle {
            self.signals.signal(user);
        }
    }

    async fn closed(&self, user: UserId) {
        let last = {
            let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
            match local.get_mut(&user) {
                Some(entry) => {
                    entry.open = entry.open.saturating_sub(1);
                    let last = entry.open == 0;
                    if last {
                        local.remove(&user);
                    }
                    last
                }
                None => false,
            }
        };
        // Vouched for a timeout from now: a reconnect meanwhile is no flap.
        self.vouch(&[user]).await;
        if last {
            signal_after(&self.signals, user, self.timeout);
        }
    }

    async fn active(&self, user: UserId) {
        if self.tell_active(user, false).await {
            self.signals.signal(user);
        }
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
        result.map_err(redis_error)?;
        self.signals.signal(user);
        Ok(())
    }

    async fn state(&self, user: UserId) -> Result<PresenceState> {
        let mut conn = self.conn.clone();
        let now = now_ms();
        let (vouched, seen, chosen, active): (i64, Option<i64>, Option<String>, Option<i64>) =
            redis::pipe()
                .zcount(presence_key(user), now, "+inf")
                .get(seen_key(user))
                .get(chosen_key(user))
                .get(active_key(user))
                .query_async(&mut conn)
                .await
                .map_err(redis_error)?;
        let chosen = match chosen.as_deref() {
            Some("away") => Some(Shown::Away),
            Some("offline") => Some(Shown::Offline),
            _ => None,
        };
        let online = vouched > 0;
        // No activity kept (it expires after twice the idle time) is idle too.
        let idle = active.is_none_or(|at| now - at >= millis(self.idle));
        Ok(PresenceState {
            shown: shown_of(online, chosen, idle),
            last_seen: match online {
                true => Some(Utc::now()),
                false => seen.and_then(DateTime::from_timestamp_millis),
            },
        })
    }

    async fn settle(&self, user: UserId, shown: Shown) -> Result<bool> {
        let mut conn = self.conn.clone();
        let key = shown_key(user);
        let before: Option<String> = match shown {
            // Offline is the default: nothing kept for users offline.
            Shown::Offline => redis::cmd("GETDEL").arg(&key).query_async(&mut conn).await,
            _ => {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(shown_name(shown))
                    .arg("GET")
                    .query_async(&mut conn)
                    .await
            }
        }
        .map_err(redis_error)?;
        Ok(before.as_deref().unwrap_or(shown_name(Shown::Offline)) != shown_name(shown))
    }

    fn signals(&self) -> Option<mpsc::UnboundedReceiver<UserId>> {
        self.signals.take()
    }
}

/// How a presence is named in Redis (and, upper-cased, to clients).
pub fn shown_name(shown: Shown) -> &'static str {
    match shown {
        Shown::Online => "online",
        Shown::Away => "away",
        Shown::Offline => "offline",
    }
}

/// Announces presence changes (see the module docs) until the tracker's signals end.
pub async fn announce(
    tracker: Arc<dyn PresenceTracker>,
    store: Arc<dyn Store>,
    bus: Arc<dyn EventBus>,
) {
    let Some(mut signals) = tracker.signals() else {
        return;
    };
    // When each user was last announced, and the users held back since (see ANNOUNCE_EVERY).
    let mut announced: HashMap<UserId, tokio::time::Instant> = HashMap::new();
    let mut held: HashSet<UserId> = HashSet::new();
    loop {
        let first = if held.is_empty() {
            match signals.recv().await {
                Some(user) => Some(user),
                None => return,
            }
        } else {
            // Held users are looked at again a moment from now, signalled or not.
            match tokio::time::timeout(ANNOUNCE_EVERY / 4, signals.recv()).await {
                Ok(None) => return,
                Ok(Some(user)) => Some(user),
                Err(_) => None,
            }
        };
        // A moment's signals, each user once.
        let mut users: HashSet<UserId> = first.into_iter().collect();
        let deadline = tokio::time::Instant::now() + COLLECT;
        while let Ok(Some(user)) = tokio::time::timeout_at(deadline, signals.recv()).await {
            users.insert(user);
        }
        users.extend(held.drain());
        let now = tokio::time::Instant::now();
        announced.retain(|_, at| now.saturating_duration_since(*at) < ANNOUNCE_EVERY);
        for user in users {
            if announced.contains_key(&user) {
                // Told moments ago: one who flips in a loop is told at most this often.
                held.insert(user);
                continue;
            }
            match announce_one(&*tracker, &*store, &*bus, user).await {
                Ok(true) => {
                    announced.insert(user, now);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(%user, error = %e, "cannot announce a presence change"),
            }
        }
    }
}

/// Announces `user`'s presence if it changed; whether it did.
async fn announce_one(
    tracker: &dyn PresenceTracker,
    store: &dyn Store,
    bus: &dyn EventBus,
    user: UserId,
) -> Result<bool> {
    let state = tracker.state(user).await?;
    if !tracker.settle(user, state.shown).await? {
        return Ok(false);
    }
    let Some(who) = store.user(user).await? else {
        return Ok(true);
    };
    let at = Utc::now();
    let mut after = None;
    loop {
        let page = store
            .rooms_of(user, PageRequest::Forward { after, first: 200 })
            .await?;
        for room in &page.items {
            if store.member_count(room.id).await? <= ANNOUNCE_ROOM_MAX {
                bus.publish(RoomEvent::PresenceChanged {
                    room_id: room.id,
                    user: who.clone(),
                    shown: state.shown,
                    at,
                })
                .await;
            }
        }
        after = page.items.last().map(|r| r.id.object_id());
        if !page.has_next || after.is_none() {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn online_until_the_timeout_after_the_last_socket_closes() {
        let presence = MemoryPresence::new(Duration::from_secs(30), Duration::from_secs(3600));
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
        let presence = MemoryPresence::new(Duration::from_secs(30), Duration::from_secs(3600));
        let ada = UserId::from_bytes([1; 12]);
        presence.choose(ada, Shown::Away).await.unwrap();
        assert_eq!(presence.state(ada).await.unwrap().shown, Shown::Offline);
        presence.opened(ada).await;
        assert_eq!(presence.state(ada).await.unwrap().shown, Shown::Away);
        presence.choose(ada, Shown::Online).await.unwrap();
        assert_eq!(presence.state(ada).await.unwrap().shown, Shown::Online);
    }

    #[tokio::test]
    async fn doing_nothing_for_the_idle_time_shows_away_until_the_next_act() {
        let presence = MemoryPresence::new(Duration::from_secs(30), Duration::from_secs(600));
        let ada = UserId::from_bytes([1; 12]);
        let at = |secs: u64| tokio::time::Instant::now() + Duration::from_secs(secs);
        presence.opened(ada).await;
        assert_eq!(presence.state_at(ada, at(599)).shown, Shown::Online);
        assert_eq!(presence.state_at(ada, at(601)).shown, Shown::Away);
        presence.choose(ada, Shown::Offline).await.unwrap();
        assert_eq!(
            presence.state_at(ada, at(601)).shown,
            Shown::Offline,
            "a choice of invisible wins over idleness"
        );
    }

    #[tokio::test]
    async fn a_change_is_recorded_as_announced_once() {
        let presence = MemoryPresence::new(Duration::from_secs(30), Duration::from_secs(600));
        let ada = UserId::from_bytes([1; 12]);
        assert!(
            !presence.settle(ada, Shown::Offline).await.unwrap(),
            "offline by default"
        );
        assert!(presence.settle(ada, Shown::Online).await.unwrap());
        assert!(!presence.settle(ada, Shown::Online).await.unwrap());
        assert!(presence.settle(ada, Shown::Away).await.unwrap());
    }
}
