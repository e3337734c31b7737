//! Sessions: sign-ins, their current refresh token's hash and the last ones spent.
//! (Being written: every method refuses until then.)

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::MongoStore;
use crate::{
    error::{Error, Result},
    model::{Session, SessionId, UserId},
    store::{NewSession, Rotation, SessionStore, TokenHash, Written},
};

fn unsupported<T>() -> Result<T> {
    Err(Error::internal("sessions are not stored on MongoDB yet"))
}

#[async_trait]
impl SessionStore for MongoStore {
    async fn create_session(&self, _session: NewSession) -> Result<Session> {
        unsupported()
    }
    async fn session(&self, _id: SessionId) -> Result<Option<Session>> {
        unsupported()
    }
    async fn rotate_session(
        &self,
        _id: SessionId,
        _presented: TokenHash,
        _next: TokenHash,
        _expires_at: DateTime<Utc>,
    ) -> Result<Rotation> {
        unsupported()
    }
    async fn revoke_session(&self, _id: SessionId) -> Result<Written<Session>> {
        unsupported()
    }
    async fn revoke_sessions_of(
        &self,
        _user: UserId,
        _except: Option<SessionId>,
    ) -> Result<Vec<SessionId>> {
        unsupported()
    }
    async fn sessions_of(
        &self,
        _user: UserId,
        _now: DateTime<Utc>,
        _limit: usize,
    ) -> Result<Vec<Session>> {
        unsupported()
    }
    async fn purge_sessions(&self, _before: DateTime<Utc>) -> Result<u64> {
        unsupported()
    }
}
