//! Accounts: registering, signing in, and who a caller is.

use super::{ChatService, limits};
use crate::{
    auth::{Caller, ClientIp},
    error::{Error, Result},
    model::{User, UserId},
    service::limiter::Kind,
    store::unique_key,
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
    ) -> Result<AuthPayload> {
        let user = self.create_account(client, username, password).await?;
        self.start_session(user, agent).await
    }

    /// Creates an account without signing it in (the original REST `/register`).
    pub async fn create_account(
        &self,
        client: ClientIp,
        username: &str,
        password: &str,
    ) -> Result<User> {
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
        let user = self.store.create_user(&username, &hash).await?;
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
        if rates.enabled {
            let wait = self
                .guards
                .limiter
                .locked_for(rates.login_failures, &account)
                .await;
            if !wait.is_zero() {
                return Err(Error::rate_limited(
                    "too many failed logins for this account; wait before trying again",
                    wait,
                ));
            }
        }
        let found = self.store.credentials(&username).await?;
        let hash = found.as_ref().map(|c| c.password_hash.as_str());
        if !self
            .passwords
            .verify(password, hash, self.hash_queue(client))
            .await?
        {
            if rates.enabled {
                self.guards
                    .limiter
                    .failed(rates.login_failures, &account)
                    .await;
            }
            return Err(Error::Unauthenticated("wrong username or password".into()));
        }
        if rates.enabled {
            self.guards.limiter.succeeded(&account).await;
        }
        let Some(credentials) = found else {
            return Err(Error::Unauthenticated("wrong username or password".into()));
        };
        let user = credentials.user;
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

    /// Checks a signed-in user's own password (to change it, or delete the account); wrong
    /// answers count toward the account's login lockout, so this is no side door for guessing.
    pub(super) async fn verify_own_password(
        &self,
        user: UserId,
        client: ClientIp,
        password: &str,
        field: &'static str,
    ) -> Result<()> {
        let rates = &self.guards.rates;
        let credentials = self
            .store
            .credentials_by_id(user)
            .await?
            .ok_or_else(|| Error::Unauthenticated("this account no longer exists".into()))?;
        let account = unique_key(&credentials.user.username);
        if rates.enabled {
            let wait = self
                .guards
                .limiter
                .locked_for(rates.login_failures, &account)
                .await;
            if !wait.is_zero() {
                return Err(Error::rate_limited(
                    "too many wrong passwords for this account; wait before trying again",
                    wait,
                ));
            }
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
            if rates.enabled {
                self.guards
                    .limiter
                    .failed(rates.login_failures, &account)
                    .await;
            }
            return Err(Error::invalid(field, "is not your current password"));
        }
        Ok(())
    }
}
