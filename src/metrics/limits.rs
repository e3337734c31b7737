//! Rate-limit refusals by kind: a [`Limiter`] that counts what the limiter it wraps refuses, so
//! every rule `ChatService` applies is counted where it is decided, on every transport, for the
//! in-memory and the Redis limiter alike.
//!
//! The kinds are [`Kind::name`]s (`messages`, `login-ip`, …) and `login-lockout` (a login
//! refused after too many wrong passwords). Typing notices beyond their rate are coalesced, not
//! refused, so they are not counted.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};

use crate::service::limiter::{Kind, Limiter, Lockout, Rate};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Refused {
    kind: &'static str,
}

/// The refusal counts; cheap to clone.
#[derive(Clone, Default)]
pub struct Refusals(Family<Refused, Counter>);

impl Refusals {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "confab_rate_limit_refusals",
            "Requests refused by a rate limit, by kind (messages, joins, login-ip, login-lockout, ...)",
            self.0.clone(),
        );
    }

    fn count(&self, kind: &'static str) {
        self.0.get_or_create(&Refused { kind }).inc();
    }

    /// `limiter`, counting its refusals here.
    pub fn counting(&self, limiter: Arc<dyn Limiter>) -> Arc<dyn Limiter> {
        Arc::new(CountingLimiter {
            inner: limiter,
            refusals: self.clone(),
        })
    }
}

struct CountingLimiter {
    inner: Arc<dyn Limiter>,
    refusals: Refusals,
}

#[async_trait]
impl Limiter for CountingLimiter {
    async fn take(&self, kind: Kind, rate: Rate, key: &str) -> Result<(), Duration> {
        let taken = self.inner.take(kind, rate, key).await;
        if taken.is_err() && !matches!(kind, Kind::TypingStarted | Kind::TypingStopped) {
            self.refusals.count(kind.name());
        }
        taken
    }

    async fn locked_for(&self, rule: Lockout, key: &str) -> Duration {
        let wait = self.inner.locked_for(rule, key).await;
        if !wait.is_zero() {
            self.refusals.count("login-lockout");
        }
        wait
    }

    async fn failed(&self, rule: Lockout, key: &str) {
        self.inner.failed(rule, key).await;
    }

    async fn succeeded(&self, key: &str) {
        self.inner.succeeded(key).await;
    }
}
