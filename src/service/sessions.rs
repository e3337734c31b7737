//! Sessions: one per sign-in. The access token (a JWT) names its session; the refresh token
//! renews both and is rotated on every use. Revoking a session refuses its access tokens and
//! closes its sockets on every instance, through the bus.
//!
//! Checking a session must not cost a database read per request, so each instance caches what
//! it read for a short while ([`SessionGate`]). Revocations are heard on the bus and applied to
//! the cache at once; a revoked session is remembered as such for longer than any of its access
//! tokens can live, so a read that raced the revocation cannot bring it back. Should the bus
//! lose revocations (Redis down), the cache forgets every entry within [`CACHE_FOR`].

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};

use super::{AuthPayload, ChatService};
use crate::{
    auth::{Caller, Claims, hash_refresh_token, new_refresh_token, refresh_token_session},
    bus::Revocation,
    error::{Error, Result},
    model::{Session, SessionId, User, UserId},
    store::{NewSession, Rotation, Store},
};

/// How long a session read from the store is trusted without hearing of it again.
pub const CACHE_FOR: Duration = Duration::from_secs(60);

/// How often an open socket checks its session even when it hears nothing: bounds how long a
/// socket outlives a revocation that was lost (Redis down, and the instance that revoked
/// stopped before it could tell the others).
pub const RECHECK_SOCKETS: Duration = Duration::from_secs(600);

/// Most sessions `sessions` lists (`--max-sessions-per-user` is at most this).
pub const MAX_SESSIONS_LISTED: usize = 200;

/// Most characters of a `User-Agent` kept with a session.
const MAX_USER_AGENT: usize = 256;

/// Why a caller's token is no longer good, as clients see it.
const SESSION_ENDED: &str = "this session has ended; sign in again";

/// Counts `/metrics` shows.
#[derive(Default, Clone)]
pub struct SessionStats {
    /// Sessions read from the store to check a token (the cache missed).
    pub store_reads: prometheus_client::metrics::counter::Counter,
    /// Revocations heard (from this instance or another).
    pub revocations: prometheus_client::metrics::counter::Counter,
}

/// What one instance knows of sessions.
pub(super) struct SessionGate {
    pub(super) stats: SessionStats,
    /// Revocations once applied here: what sockets listen to, so a socket that rechecks on
    /// hearing one reads a cache that already knows it.
    applied: tokio::sync::broadcast::Sender<Arc<Revocation>>,
    /// Sessions read from the store: their user and end.
    known: moka::sync::Cache<SessionId, (UserId, DateTime<Utc>)>,
    /// Sessions heard revoked, for longer than their access tokens live.
    revoked: moka::sync::Cache<SessionId, ()>,
    /// Users whose every session ended (deleted or suspended), and when.
    ended_users: moka::sync::Cache<UserId, DateTime<Utc>>,
}

impl SessionGate {
    pub(super) fn new(token_ttl: Duration) -> Self {
        let remember = token_ttl + CACHE_FOR;
        Self {
            stats: SessionStats::default(),
            applied: tokio::sync::broadcast::channel(crate::bus::REVOCATION_BUFFER).0,
            known: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_live(CACHE_FOR)
                .build(),
            revoked: moka::sync::Cache::builder()
                .max_capacity(200_000)
                .time_to_live(remember)
                .build(),
            ended_users: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(remember)
                .build(),
        }
    }

    /// Applies a revocation heard on the bus (or made here).
    pub(super) fn apply(&self, revocation: &Revocation) {
        match revocation {
            Revocation::Sessions(ids) => {
                for id in ids {
                    self.revoked.insert(*id, ());
                    self.known.invalidate(id);
                }
            }
            // `ended_users` is checked before `known`: no need to forget every session.
            Revocation::User(user) => {
                self.ended_users.insert(*user, Utc::now());
            }
            Revocation::Recheck => self.known.invalidate_all(),
            // What was read while the user was suspended may be stale either way.
            Revocation::Reinstated(user) => {
                self.ended_users.invalidate(user);
                self.known.invalidate_all();
            }
        }
    }

    /// When `claims`' session ends, or `None` when it has ended (revoked, expired, of another
    /// user, or of a user whose sessions all ended). Reads the store only when the session is
    /// not known, or known to have ended by a time now past (it may have been refreshed since).
    async fn end(&self, store: &dyn Store, claims: &Claims) -> Result<Option<DateTime<Utc>>> {
        if self.revoked.contains_key(&claims.session_id)
            || self.ended_users.contains_key(&claims.user_id)
        {
            return Ok(None);
        }
        let now = Utc::now();
        if let Some((user, expires_at)) = self.known.get(&claims.session_id)
            && expires_at > now
        {
            return Ok((user == claims.user_id).then_some(expires_at));
        }
        self.stats.store_reads.inc();
        let session = store.session(claims.session_id).await?;
        let Some(session) = session.filter(|s| s.is_active(now)) else {
            return Ok(None);
        };
        // A revocation heard while reading wins.
        if self.revoked.contains_key(&claims.session_id)
            || self.ended_users.contains_key(&claims.user_id)
        {
            return Ok(None);
        }
        self.known
            .insert(claims.session_id, (session.user_id, session.expires_at));
        Ok((session.user_id == claims.user_id).then_some(session.expires_at))
    }
}

/// The user agent kept with a session: trimmed, bounded, printable.
fn user_agent(value: Option<&str>) -> Option<String> {
    let value = value?.trim();
    let kept: String = value
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_USER_AGENT)
        .collect();
    (!kept.is_empty()).then_some(kept)
}

impl ChatService {
    /// Turns a caller with a valid token into one whose session is active too: a token of a
    /// revoked or expired session, or of a deleted or suspended user, becomes `Invalid`.
    pub async fn authenticate(&self, caller: Caller) -> Caller {
        let Caller::User(claims) = &caller else {
            return caller;
        };
        match self.sessions.end(self.store.as_ref(), claims).await {
            Ok(Some(_)) => caller,
            Ok(None) => Caller::Invalid(SESSION_ENDED),
            // The store did not answer: refuse rather than let a revoked session through, as
            // an internal error (the client's session may well be fine).
            Err(e) => {
                tracing::warn!(error = %e, "cannot check a session");
                Caller::Unavailable
            }
        }
    }

    /// Whether a socket signed in with `claims` may stay open, and until when (its session's
    /// current end): sockets ask when they sign in, when the end they knew has come, and when
    /// told revocations may have been missed.
    pub async fn session_end(&self, claims: &Claims) -> Result<Option<DateTime<Utc>>> {
        self.sessions.end(self.store.as_ref(), claims).await
    }

    /// The session counts `/metrics` shows.
    pub fn session_stats(&self) -> &SessionStats {
        &self.sessions.stats
    }

    /// Revocations told from now on, by any instance, each once this instance's cache has
    /// applied it (sockets close with their session, and recheck against an up-to-date cache).
    pub fn revocations(&self) -> tokio::sync::broadcast::Receiver<Arc<Revocation>> {
        self.sessions.applied.subscribe()
    }

    /// Starts a session for `user` and issues its first tokens.
    pub(super) async fn start_session(
        &self,
        user: User,
        agent: Option<&str>,
    ) -> Result<AuthPayload> {
        // The token names its session, whose id the store mints: the session is stored with a
        // random placeholder hash (no token has it), then rotated to the real token's.
        let placeholder: [u8; 32] = rand::random();
        let session = self
            .store
            .create_session(NewSession {
                user_id: user.id,
                refresh_hash: placeholder,
                user_agent: user_agent(agent),
                expires_at: self.session_end_from_now(),
            })
            .await?;
        // Hand out a real token by rotating the placeholder (never given to anyone) away.
        let (refresh_token, next) = new_refresh_token(session.id);
        let session = match self
            .store
            .rotate_session(session.id, placeholder, next, session.expires_at)
            .await?
        {
            Rotation::Rotated(session) => session,
            _ => return Err(Error::internal("a new session could not take its token")),
        };
        self.end_sessions_beyond_the_most(user.id).await?;
        // A suspension or deletion that ran while this sign-in was under way revoked every
        // session but this one, which did not exist yet.
        let standing = self.store.standing(user.id).await?;
        if let Some(standing) = standing.filter(|s| s.suspended.is_some() || s.deleted) {
            self.store.revoke_session(session.id).await?;
            return Err(match standing.suspended {
                Some(reason) => Error::forbidden(format!("this account is suspended: {reason}")),
                None => Error::Unauthenticated("this account no longer exists".into()),
            });
        }
        self.payload(user, &session, refresh_token)
    }

    /// Ends a user's least recently used sessions beyond `--max-sessions-per-user`, so signing
    /// in again and again cannot pile up sessions without bound.
    async fn end_sessions_beyond_the_most(&self, user: UserId) -> Result<()> {
        let most = self.policy.max_sessions;
        let active = self.store.sessions_of(user, Utc::now(), most + 16).await?;
        let beyond: Vec<SessionId> = active.iter().skip(most).map(|s| s.id).collect();
        for id in &beyond {
            self.store.revoke_session(*id).await?;
        }
        self.announce(Revocation::Sessions(beyond)).await;
        Ok(())
    }

    fn session_end_from_now(&self) -> DateTime<Utc> {
        Utc::now()
            + chrono::Duration::from_std(self.policy.session_ttl)
                .unwrap_or(chrono::Duration::days(30))
    }

    fn payload(&self, user: User, session: &Session, refresh_token: String) -> Result<AuthPayload> {
        let (token, expires) = self.tokens.issue(&user, session.id)?;
        let expires_at = i64::try_from(expires)
            .ok()
            .and_then(|s| DateTime::from_timestamp(s, 0))
            .unwrap_or_else(Utc::now);
        Ok(AuthPayload {
            token,
            refresh_token,
            expires_at,
            session_id: session.id,
            user,
        })
    }

    /// Renews a session with its refresh token: new access and refresh tokens, the presented
    /// one spent. A spent one presented again revokes the session: someone else holds a copy.
    pub async fn refresh_session(
        &self,
        client: crate::auth::ClientIp,
        refresh_token: &str,
    ) -> Result<AuthPayload> {
        let refused =
            || Error::Unauthenticated("the refresh token is not valid; sign in again".into());
        let Some(id) = refresh_token_session(refresh_token.trim()) else {
            return Err(refused());
        };
        self.take(
            super::limiter::Kind::RefreshesPerIp,
            self.guards.rates.refreshes_per_ip,
            &client.rate_key(),
        )
        .await?;
        // A read first: a token of no active session never reaches the store's writer.
        let known = self.store.session(id).await?;
        if !known.is_some_and(|s| s.is_active(Utc::now())) {
            return Err(refused());
        }
        let presented = hash_refresh_token(refresh_token.trim());
        let (next_token, next) = new_refresh_token(id);
        match self
            .store
            .rotate_session(id, presented, next, self.session_end_from_now())
            .await?
        {
            Rotation::Rotated(session) => {
                // A session that outlived its account's suspension or deletion (one started
                // by a login that raced it) ends here, not at its next 30 days.
                let standing = self.store.standing(session.user_id).await?;
                if !standing.is_some_and(|s| s.suspended.is_none() && !s.deleted) {
                    self.store.revoke_session(session.id).await?;
                    self.announce(Revocation::Sessions(vec![session.id])).await;
                    return Err(refused());
                }
                let user = self.user(session.user_id).await?;
                self.payload(user, &session, next_token)
            }
            Rotation::Reused(session) => {
                tracing::warn!(session = %session.id, user = %session.user_id,
                    "a spent refresh token was presented again; the session is revoked");
                self.announce(Revocation::Sessions(vec![session.id])).await;
                Err(Error::Unauthenticated(
                    "this refresh token was already used, so the session is revoked; sign in again"
                        .into(),
                ))
            }
            Rotation::Refused => Err(refused()),
        }
    }

    /// Revokes the caller's own session.
    pub async fn logout(&self, caller: &Caller) -> Result<bool> {
        let claims = caller.user()?;
        let written = self.store.revoke_session(claims.session_id).await?;
        // Told only when it changed something: a repeated logout costs no broadcast.
        if written.changed {
            self.announce(Revocation::Sessions(vec![claims.session_id]))
                .await;
        }
        Ok(written.changed)
    }

    /// Revokes every session of the caller, theirs included; returns how many.
    pub async fn logout_everywhere(&self, caller: &Caller) -> Result<usize> {
        let claims = caller.user()?;
        let revoked = self.store.revoke_sessions_of(claims.user_id, None).await?;
        let count = revoked.len();
        self.announce(Revocation::Sessions(revoked)).await;
        Ok(count)
    }

    /// Revokes one of the caller's sessions. Someone else's is `NOT_FOUND`, as if it did not exist.
    pub async fn revoke_session(&self, caller: &Caller, id: SessionId) -> Result<bool> {
        let claims = caller.user()?;
        let not_found = || Error::not_found("session not found");
        let session = self.store.session(id).await?.ok_or_else(not_found)?;
        if session.user_id != claims.user_id {
            return Err(not_found());
        }
        let written = self.store.revoke_session(id).await?;
        if written.changed {
            self.announce(Revocation::Sessions(vec![id])).await;
        }
        Ok(written.changed)
    }

    /// The caller's active sessions, the most recently used first.
    pub async fn sessions(&self, caller: &Caller) -> Result<Vec<Session>> {
        let claims = caller.user()?;
        self.store
            .sessions_of(claims.user_id, Utc::now(), MAX_SESSIONS_LISTED)
            .await
    }

    /// Applies a revocation here at once, then tells every instance.
    pub(super) async fn announce(&self, revocation: Revocation) {
        if matches!(&revocation, Revocation::Sessions(ids) if ids.is_empty()) {
            return;
        }
        self.sessions.apply(&revocation);
        self.bus.revoke(revocation).await;
    }

    /// Listens for revocations from every instance and applies them to this one's cache, for
    /// as long as the service lives.
    pub(super) fn follow_revocations(
        bus: &Arc<dyn crate::bus::EventBus>,
        gate: &Arc<SessionGate>,
        users: &super::UserCache,
    ) -> tokio::task::AbortHandle {
        let mut heard = bus.revocations();
        let (gate, users) = (gate.clone(), users.clone());
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                let revocation = match heard.recv().await {
                    Ok(revocation) => revocation,
                    // Some were missed: everything cached may be stale.
                    Err(RecvError::Lagged(_)) => Arc::new(Revocation::Recheck),
                    Err(RecvError::Closed) => return,
                };
                match *revocation {
                    // A deleted account is shown differently: read it again.
                    Revocation::User(id) => users.forget(id),
                    Revocation::Recheck => users.forget_all(),
                    _ => {}
                }
                gate.stats.revocations.inc();
                gate.apply(&revocation);
                // Nobody listening is fine.
                let _ = gate.applied.send(revocation);
            }
        })
        .abort_handle()
    }

    /// Every hour, for as long as the service lives: deletes sessions that ended more than a
    /// day ago (MongoDB also expires them with a TTL index), and frees the names of deleted
    /// accounts whose quarantine is over.
    pub(super) fn purge_hourly(store: &Arc<dyn Store>) -> tokio::task::AbortHandle {
        let store = store.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(3600));
            loop {
                every.tick().await;
                match store
                    .purge_sessions(Utc::now() - chrono::Duration::days(1))
                    .await
                {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("purged {n} ended sessions"),
                    Err(e) => tracing::warn!(error = %e, "cannot purge ended sessions"),
                }
                match store.release_names(Utc::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("freed the names of {n} deleted accounts"),
                    Err(e) => tracing::warn!(error = %e, "cannot free deleted accounts' names"),
                }
            }
        })
        .abort_handle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        auth::{ClientIp, Tokens},
        bus::LocalBus,
        config::Registration,
        service::{AccountPolicy, Guards},
        store::sqlite::SqliteStore,
    };

    async fn service() -> (ChatService, Arc<dyn Store>) {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().await.unwrap());
        let policy = AccountPolicy {
            session_ttl: Duration::from_secs(3600),
            max_sessions: 10,
            registration: Registration::Open,
            username_quarantine: Duration::ZERO,
        };
        let service = ChatService::new(
            store.clone(),
            Arc::new(LocalBus::new()),
            Tokens::new(&[7; 32], Duration::from_secs(60)),
            Guards::off(),
            policy,
        );
        (service, store)
    }

    /// A session can outlive its account's suspension when the login that started it raced
    /// the suspension (which revoked every session but one not yet stored). Here that session
    /// is made by suspending in the store alone; its refresh must end it.
    #[tokio::test]
    async fn a_session_that_outlived_a_suspension_ends_at_its_next_refresh() {
        let (service, store) = service().await;
        let signed_in = service
            .register(ClientIp::local(), None, "ada", "correct horse", None)
            .await
            .unwrap();
        store
            .set_suspended(signed_in.user.id, Some("spam"))
            .await
            .unwrap();
        let refused = service
            .refresh_session(ClientIp::local(), &signed_in.refresh_token)
            .await;
        assert!(
            matches!(refused, Err(Error::Unauthenticated(_))),
            "{refused:?}"
        );
        let session = store.session(signed_in.session_id).await.unwrap().unwrap();
        assert!(session.revoked_at.is_some(), "the session is revoked too");
    }
}
