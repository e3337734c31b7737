//! Accounts: registering, signing in, and who a caller is.

use super::{ChatService, limits};
use crate::{
    auth::{Caller, ClientIp},
    bus::Revocation,
    config::Registration,
    error::{Error, Result},
    model::{User, UserId},
    service::limiter::Kind,
    store::{Departure, unique_key},
};

/// A signed-in user: their access token, when it expires, and the refresh token that renews it.
#[derive(Debug, Clone)]
pub struct AuthPayload {
    pub token: String,
    pub refresh_token: String,
    pub expires_at: chrono::DateTime<chrono::Utc>,
    pub session_id: crate::model::SessionId,
    pub user: User,
}

impl ChatService {
    /// Creates an account and signs it in (a new session).
    pub async fn register(
        &self,
        client: ClientIp,
        agent: Option<&str>,
        username: &str,
        password: &str,
        invite_code: Option<&str>,
    ) -> Result<AuthPayload> {
        let user = self
            .create_account(client, username, password, invite_code)
            .await?;
        self.start_session(user, agent).await
    }

    /// Creates an account without signing it in (the original REST `/register`). Who may is
    /// `--registration`'s: anyone, only with an unused invitation code, or nobody — once an
    /// account exists: the first one (the server's first admin) may always register.
    pub async fn create_account(
        &self,
        client: ClientIp,
        username: &str,
        password: &str,
        invite_code: Option<&str>,
    ) -> Result<User> {
        let mode = match self.policy.registration {
            Registration::Open => Registration::Open,
            _ if !self.store.has_users().await? => Registration::Open,
            other => other,
        };
        let invite = match mode {
            Registration::Open => None,
            Registration::Closed => {
                return Err(Error::forbidden(
                    "this server takes no new accounts; ask its admin",
                ));
            }
            Registration::Invite => {
                let code = invite_code.map(str::trim).filter(|c| !c.is_empty());
                let Some(code) = code else {
                    return Err(Error::invalid(
                        "inviteCode",
                        "this server takes new accounts by invitation only: send the code an admin gave you",
                    ));
                };
                Some(crate::auth::hash_refresh_token(code))
            }
        };
        let username = limits::username(username)?;
        limits::password(password)?;
        let rates = &self.guards.rates;
        self.take(
            Kind::RegistrationsPerIp,
            rates.registrations_per_ip,
            &client.rate_key(),
        )
        .await?;
        let hash = self
            .passwords
            .hash(password, self.hash_queue(client))
            .await?;
        // The code is spent before the account exists, so two registrations cannot share it,
        // and given back when the account could not be created.
        if let Some(invite) = invite
            && !self.store.take_invite(invite).await?
        {
            return Err(Error::invalid(
                "inviteCode",
                "is not a valid invitation code, or was already used",
            ));
        }
        let created = self.store.create_user(&username, &hash).await;
        if let (Err(_), Some(invite)) = (&created, invite) {
            self.store.return_invite(invite).await?;
        }
        let user = created?;
        self.users.put(&user);
        Ok(user)
    }

    /// Signs a user in. Failures are counted per account (whether or not it exists, so the
    /// answer says nothing of which names do): past the limit, every login of that account is
    /// refused for a while, the right password included, doubling with each further failure.
    pub async fn login(
        &self,
        client: ClientIp,
        agent: Option<&str>,
        username: &str,
        password: &str,
    ) -> Result<AuthPayload> {
        // Shapes that can never exist are refused at once; every other miss costs one hash.
        let (Ok(username), Ok(())) = (limits::username(username), limits::password(password))
        else {
            return Err(Error::Unauthenticated("wrong username or password".into()));
        };
        let rates = &self.guards.rates;
        self.take(Kind::LoginsPerIp, rates.logins_per_ip, &client.rate_key())
            .await?;
        let account = unique_key(&username);
        self.refuse_while_locked(&account).await?;
        let found = self.store.credentials(&username).await?;
        let hash = found.as_ref().map(|c| c.password_hash.as_str());
        if !self
            .passwords
            .verify(password, hash, self.hash_queue(client))
            .await?
        {
            self.count_failure(&account).await;
            return Err(Error::Unauthenticated("wrong username or password".into()));
        }
        if rates.enabled {
            self.guards.limiter.succeeded(&account).await;
        }
        let Some(credentials) = found else {
            return Err(Error::Unauthenticated("wrong username or password".into()));
        };
        let user = credentials.user;
        if let Some(reason) = self
            .store
            .standing(user.id)
            .await?
            .and_then(|s| s.suspended)
        {
            return Err(Error::forbidden(format!(
                "this account is suspended: {reason}"
            )));
        }
        self.users.put(&user);
        self.start_session(user, agent).await
    }

    /// The caller's own account.
    pub async fn me(&self, caller: &Caller) -> Result<User> {
        let id = caller.user_id()?;
        self.user(id)
            .await
            .map_err(|_| Error::Unauthenticated("this account no longer exists".into()))
    }

    /// A user by id (users never change, so this is served from a cache when it can be).
    pub async fn user(&self, id: UserId) -> Result<User> {
        if let Some(user) = self.users.get(id) {
            return Ok(user);
        }
        let user = self
            .store
            .user(id)
            .await?
            .ok_or_else(|| Error::not_found("user not found"))?;
        self.users.put(&user);
        Ok(user)
    }

    /// Replaces the caller's password (the current one must be right) and revokes every other
    /// session of theirs: whoever knew the old password is signed out everywhere else.
    pub async fn change_password(
        &self,
        caller: &Caller,
        client: ClientIp,
        current: &str,
        new: &str,
    ) -> Result<bool> {
        let claims = caller.user()?;
        limits::password(new).map_err(|e| match e {
            Error::Invalid { reason, .. } => Error::invalid("newPassword", reason),
            other => other,
        })?;
        self.verify_own_password(claims.user_id, client, current, "currentPassword")
            .await?;
        let hash = self.passwords.hash(new, self.hash_queue(client)).await?;
        self.store.set_password(claims.user_id, &hash).await?;
        let others = self
            .store
            .revoke_sessions_of(claims.user_id, Some(claims.session_id))
            .await?;
        self.announce(crate::bus::Revocation::Sessions(others))
            .await;
        Ok(true)
    }

    /// Refuses while `account` (its name's key) is locked out by failed passwords.
    async fn refuse_while_locked(&self, account: &str) -> Result<()> {
        let rates = &self.guards.rates;
        if !rates.enabled {
            return Ok(());
        }
        let wait = self
            .guards
            .limiter
            .locked_for(rates.login_failures, account)
            .await;
        if wait.is_zero() {
            return Ok(());
        }
        Err(Error::rate_limited(
            "too many wrong passwords for this account; wait before trying again",
            wait,
        ))
    }

    /// Counts a wrong password against `account` (its name's key).
    async fn count_failure(&self, account: &str) {
        let rates = &self.guards.rates;
        if rates.enabled {
            self.guards
                .limiter
                .failed(rates.login_failures, account)
                .await;
        }
    }

    /// Checks a signed-in user's own password (to change it, or delete the account); wrong
    /// answers count toward the account's login lockout, so this is no side door for guessing.
    pub(super) async fn verify_own_password(
        &self,
        user: UserId,
        client: ClientIp,
        password: &str,
        field: &'static str,
    ) -> Result<()> {
        let credentials = self
            .store
            .credentials_by_id(user)
            .await?
            .ok_or_else(|| Error::Unauthenticated("this account no longer exists".into()))?;
        let account = unique_key(&credentials.user.username);
        self.refuse_while_locked(&account).await?;
        // A shape no password can have is wrong without a hash (and without counting).
        if limits::password(password).is_err() {
            return Err(Error::invalid(field, "is not your current password"));
        }
        let right = self
            .passwords
            .verify(
                password,
                Some(credentials.password_hash.as_str()),
                self.hash_queue(client),
            )
            .await?;
        if !right {
            self.count_failure(&account).await;
            return Err(Error::invalid(field, "is not your current password"));
        }
        Ok(())
    }

    /// Deletes the caller's account (the password must be right): every session revoked, every
    /// membership ended (each room hears the member left), the name kept from others for
    /// `--username-quarantine`. Messages stay, shown as from "deleted user", so conversations
    /// stay readable; with `purge_messages`, they are deleted (each room hears it).
    pub async fn delete_account(
        &self,
        caller: &Caller,
        client: ClientIp,
        password: &str,
        purge_messages: bool,
    ) -> Result<bool> {
        let me = caller.user_id()?;
        self.verify_own_password(me, client, password, "password")
            .await?;
        // In an order that a retry after a crash can finish: sessions first (nothing acts for
        // the account meanwhile), the account itself last (its password works until then).
        self.store.revoke_sessions_of(me, None).await?;
        self.announce(Revocation::User(me)).await;
        if purge_messages {
            loop {
                let batch = self.store.messages_by(me, None, PURGE_BATCH).await?;
                if batch.is_empty() {
                    break;
                }
                for message in batch {
                    self.store.delete_message(message.id, None).await?;
                }
            }
        }
        loop {
            let page = self
                .store
                .rooms_of(
                    me,
                    crate::model::PageRequest::Forward {
                        after: None,
                        first: PURGE_BATCH,
                    },
                )
                .await?;
            if page.items.is_empty() {
                break;
            }
            for room in page.items {
                self.store
                    .remove_member(room.id, me, Departure::Left)
                    .await?;
            }
        }
        let quarantine = chrono::Duration::from_std(self.policy.username_quarantine)
            .unwrap_or(chrono::Duration::days(30));
        self.store
            .delete_user(me, chrono::Utc::now() + quarantine)
            .await?;
        self.users.forget(me);
        // Told again now that the account is gone: caches that read it meanwhile forget it.
        self.announce(Revocation::User(me)).await;
        tracing::info!(user = %me, purge_messages, "account deleted");
        Ok(true)
    }
}

/// Most rooms an export lists (the most one account may join is lower).
const EXPORT_ROOMS: usize = 10_000;

impl ChatService {
    /// The caller's data but their messages, as a JSON object: `exportedAt`, `account`,
    /// `sessions`, `rooms` (messages come from [`exported_messages`](Self::exported_messages),
    /// page by page, so an export of any size is streamed).
    pub async fn export_account(&self, caller: &Caller) -> Result<serde_json::Value> {
        let me = self.me(caller).await?;
        let sessions: Vec<_> = self
            .sessions(caller)
            .await?
            .into_iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id.to_hex(), "createdAt": time(s.created_at),
                    "lastUsedAt": time(s.last_used_at), "expiresAt": time(s.expires_at),
                    "userAgent": s.user_agent,
                })
            })
            .collect();
        let mut rooms = Vec::new();
        let mut after = None;
        while rooms.len() < EXPORT_ROOMS {
            let page = self
                .store
                .rooms_of(
                    me.id,
                    crate::model::PageRequest::Forward {
                        after,
                        first: PURGE_BATCH,
                    },
                )
                .await?;
            after = page.items.last().map(|r| r.id.object_id());
            rooms.extend(page.items.into_iter().map(|r| {
                serde_json::json!({
                    "id": r.id.to_hex(), "name": r.name, "createdAt": time(r.created_at),
                    "createdBy": r.created_by.to_hex(),
                })
            }));
            if !page.has_next {
                break;
            }
        }
        Ok(serde_json::json!({
            "exportedAt": time(chrono::Utc::now()),
            "account": {
                "id": me.id.to_hex(), "username": me.username, "createdAt": time(me.created_at),
            },
            "sessions": sessions,
            "rooms": rooms,
        }))
    }

    /// Up to `limit` of the caller's messages (not deleted ones) after `after`, oldest first,
    /// as JSON objects.
    pub async fn exported_messages(
        &self,
        caller: &Caller,
        after: Option<crate::model::MessageId>,
        limit: usize,
    ) -> Result<Vec<(crate::model::MessageId, serde_json::Value)>> {
        let me = caller.user_id()?;
        Ok(self
            .store
            .messages_by(me, after, limit)
            .await?
            .into_iter()
            .map(|m| {
                let json = serde_json::json!({
                    "id": m.id.to_hex(), "roomId": m.room_id.to_hex(), "body": m.body,
                    "createdAt": time(m.created_at), "editedAt": m.edited_at.map(time),
                    "clientId": m.client_id,
                });
                (m.id, json)
            })
            .collect())
    }

    /// The caller's whole export as one JSON document, with their oldest messages up to about
    /// `max_bytes` of JSON (`messagesComplete` says whether that was all of them; `GET
    /// /me/export` streams every one).
    pub async fn export_my_data(
        &self,
        caller: &Caller,
        max_bytes: usize,
    ) -> Result<serde_json::Value> {
        let mut export = self.export_account(caller).await?;
        let mut size = export.to_string().len();
        let mut messages = Vec::new();
        let mut after = None;
        let complete = 'pages: loop {
            let batch = self.exported_messages(caller, after, PURGE_BATCH).await?;
            let done = batch.len() < PURGE_BATCH;
            for (id, json) in batch {
                size += json.to_string().len() + 1;
                if size > max_bytes {
                    break 'pages false;
                }
                after = Some(id);
                messages.push(json);
            }
            if done {
                break true;
            }
        };
        if let Some(object) = export.as_object_mut() {
            object.insert("messages".into(), serde_json::Value::Array(messages));
            object.insert("messagesComplete".into(), complete.into());
        }
        Ok(export)
    }
}

/// How many messages or memberships account deletion handles per store read.
const PURGE_BATCH: usize = 500;

/// A time as an export shows it: RFC 3339, UTC, milliseconds.
fn time(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
