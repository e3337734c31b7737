//! Accounts: registering, signing in, and who a caller is.

use super::{ChatService, limits};
use crate::{
    auth::{Caller, ClientIp},
    error::{Error, Result},
    model::{User, UserId},
    service::limiter::Kind,
    store::unique_key,
};

/// A signed-in user and their access token.
#[derive(Debug, Clone)]
pub struct AuthPayload {
    pub token: String,
    pub user: User,
}

impl ChatService {
    pub async fn register(
        &self,
        client: ClientIp,
        username: &str,
        password: &str,
    ) -> Result<AuthPayload> {
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
        Ok(AuthPayload {
            token: self.tokens.issue(&user)?,
            user,
        })
    }

    /// Signs a user in. Failures are counted per account (whether or not it exists, so the
    /// answer says nothing of which names do): past the limit, every login of that account is
    /// refused for a while, the right password included, doubling with each further failure.
    pub async fn login(
        &self,
        client: ClientIp,
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
        Ok(AuthPayload {
            token: self.tokens.issue(&user)?,
            user,
        })
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

    // --- rooms ---
}
