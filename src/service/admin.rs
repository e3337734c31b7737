//! Server admins: suspending accounts and making invitation codes. An admin is the first
//! account created on a new database, or one granted with `confab admin grant USERNAME` (a
//! database from before admins existed has none until one is granted).

use super::{ChatService, limits};
use crate::{
    auth::{Caller, hash_refresh_token},
    bus::Revocation,
    error::{Error, Result},
    model::UserId,
    store::Store,
};

/// Most characters of a suspension's reason.
pub const REASON_CHARS: usize = 500;

/// A new single-use invitation code, and the hash to store.
pub fn new_invite_code() -> (String, crate::store::TokenHash) {
    use base64::Engine as _;
    let secret: [u8; 16] = rand::random();
    let code = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let hash = hash_refresh_token(&code);
    (code, hash)
}

/// Makes an invitation code in `store`, on behalf of `by` (`None`: the command line).
pub async fn create_invite(store: &dyn Store, by: Option<UserId>) -> Result<String> {
    let (code, hash) = new_invite_code();
    store.create_invite(hash, by).await?;
    Ok(code)
}

/// `confab admin grant|revoke USERNAME`: makes an account a server admin, or not.
pub async fn set_admin(store: &dyn Store, username: &str, admin: bool) -> Result<()> {
    let Some(credentials) = store.credentials(username).await? else {
        return Err(Error::not_found(format!(
            "no account is named {username:?}"
        )));
    };
    store.set_admin(credentials.user.id, admin).await
}

impl ChatService {
    /// The caller, when they are a server admin in good standing; `FORBIDDEN` otherwise.
    pub(super) async fn require_admin(&self, caller: &Caller) -> Result<UserId> {
        let me = caller.user_id()?;
        let standing = self.store.standing(me).await?.unwrap_or_default();
        if !standing.admin || standing.suspended.is_some() || standing.deleted {
            return Err(Error::forbidden("only a server admin may do this"));
        }
        Ok(me)
    }

    /// Suspends an account: its sessions are revoked and its sockets closed on every instance,
    /// and it cannot sign in until reinstated.
    pub async fn suspend_user(&self, caller: &Caller, user: UserId, reason: &str) -> Result<bool> {
        let me = self.require_admin(caller).await?;
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(Error::invalid("reason", "must not be blank"));
        }
        limits::length("reason", reason, 1..=REASON_CHARS)?;
        if user == me {
            return Err(Error::forbidden("you cannot suspend yourself"));
        }
        let standing = self.store.standing(user).await?;
        if standing.is_none_or(|s| s.deleted) {
            return Err(Error::not_found("user not found"));
        }
        self.store.set_suspended(user, Some(reason)).await?;
        self.store.revoke_sessions_of(user, None).await?;
        self.announce(Revocation::User(user)).await;
        tracing::info!(admin = %me, %user, "account suspended");
        Ok(true)
    }

    /// Lifts a suspension: the account may sign in again (its old sessions stay revoked).
    pub async fn unsuspend_user(&self, caller: &Caller, user: UserId) -> Result<bool> {
        let me = self.require_admin(caller).await?;
        let standing = self.store.standing(user).await?;
        let Some(standing) = standing.filter(|s| !s.deleted) else {
            return Err(Error::not_found("user not found"));
        };
        if standing.suspended.is_none() {
            return Ok(false);
        }
        self.store.set_suspended(user, None).await?;
        self.announce(Revocation::Reinstated(user)).await;
        tracing::info!(admin = %me, %user, "account reinstated");
        Ok(true)
    }

    /// A new single-use invitation code (for `--registration invite`).
    pub async fn create_invite_code(&self, caller: &Caller) -> Result<String> {
        let me = self.require_admin(caller).await?;
        create_invite(self.store.as_ref(), Some(me)).await
    }
}
