//! Rate limits kept in this process: governor's keyed GCRA for rates, a map for login failures.
//!
//! Idle keys are forgotten by a background sweep once a minute (governor's `retain_recent`), so
//! the maps hold only keys that were active within their rule's period.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};

use super::{Failures, Kind, Limiter, Lockout, Rate};

const SWEEP_EVERY: Duration = Duration::from_secs(60);

type Rates = HashMap<(Kind, Rate), Arc<DefaultKeyedRateLimiter<String>>>;

pub struct MemoryLimiter {
    rates: Mutex<Rates>,
    failures: Mutex<HashMap<String, (Failures, Lockout)>>,
    epoch: Instant,
}

impl MemoryLimiter {
    /// A limiter, and (inside a runtime) its sweep, which ends with it.
    pub fn new() -> Arc<Self> {
        let limiter = Arc::new(Self {
            rates: Mutex::default(),
            failures: Mutex::default(),
            epoch: Instant::now(),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(sweep(Arc::downgrade(&limiter)));
        }
        limiter
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn limiter(&self, kind: Kind, rate: Rate) -> Arc<DefaultKeyedRateLimiter<String>> {
        self.rates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((kind, rate))
            .or_insert_with(|| {
                let quota = Quota::with_period(rate.interval())
                    .unwrap_or_else(|| Quota::per_second(rate.count))
                    .allow_burst(rate.count);
                Arc::new(RateLimiter::keyed(quota))
            })
            .clone()
    }

    /// Forgets keys whose allowance is whole again and failures that no longer count.
    fn sweep_once(&self) {
        let limiters: Vec<_> = self
            .rates
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for limiter in limiters {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let now = self.now_ms();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.retain(|_, (state, rule)| state.expires(*rule) > now);
        failures.shrink_to_fit();
    }

    /// Keys with state, for tests of the sweep.
    #[cfg(test)]
    fn len(&self) -> usize {
        let rates: usize = self
            .rates
            .lock()
            .unwrap()
            .values()
            .map(|limiter| limiter.len())
            .sum();
        rates + self.failures.lock().unwrap().len()
    }
}

async fn sweep(limiter: Weak<MemoryLimiter>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        let Some(limiter) = limiter.upgrade() else {
            return;
        };
        limiter.sweep_once();
    }
}

#[async_trait]
impl Limiter for MemoryLimiter {
    async fn take(&self, kind: Kind, rate: Rate, key: &str) -> Result<(), Duration> {
        let limiter = self.limiter(kind, rate);
        limiter
            .check_key(&key.to_owned())
            .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
    }

    async fn locked_for(&self, _rule: Lockout, key: &str) -> Duration {
        let now = self.now_ms();
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let wait = failures.get(key).map_or(0, |(state, _)| state.wait(now));
        Duration::from_millis(wait)
    }

    async fn failed(&self, rule: Lockout, key: &str) {
        let now = self.now_ms();
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let entry = failures
            .entry(key.to_owned())
            .or_insert((Failures::default(), rule));
        *entry = (entry.0.fail(now, rule), rule);
    }

    async fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_is_taken_then_refused_with_the_wait_and_keys_are_apart() {
        let limiter = MemoryLimiter::new();
        let rate: Rate = "3/30s".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.take(Kind::Messages, rate, "ada").await, Ok(()));
        }
        let wait = limiter.take(Kind::Messages, rate, "ada").await.unwrap_err();
        assert!(
            wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        // Another key, or another kind, has its own allowance.
        assert_eq!(limiter.take(Kind::Messages, rate, "grace").await, Ok(()));
        assert_eq!(limiter.take(Kind::Joins, rate, "ada").await, Ok(()));
    }

    #[tokio::test]
    async fn failures_lock_and_a_success_clears_them() {
        let limiter = MemoryLimiter::new();
        let rule = Lockout("2/60s".parse().unwrap());
        limiter.failed(rule, "ada").await;
        assert_eq!(limiter.locked_for(rule, "ada").await, Duration::ZERO);
        limiter.failed(rule, "ada").await;
        let wait = limiter.locked_for(rule, "ada").await;
        assert!(wait > Duration::from_secs(29), "{wait:?}");
        assert_eq!(limiter.locked_for(rule, "grace").await, Duration::ZERO);
        limiter.succeeded("ada").await;
        assert_eq!(limiter.locked_for(rule, "ada").await, Duration::ZERO);
    }

    #[tokio::test]
    async fn the_sweep_forgets_keys_that_are_whole_again() {
        let limiter = MemoryLimiter::new();
        let rate: Rate = "5/1ms".parse().unwrap();
        for i in 0..100 {
            limiter
                .take(Kind::Messages, rate, &format!("user{i}"))
                .await
                .unwrap();
        }
        limiter
            .failed(Lockout("5/1ms".parse().unwrap()), "ada")
            .await;
        assert_eq!(limiter.len(), 101);
        // Every allowance is whole again after its 1 ms period.
        std::thread::sleep(Duration::from_millis(5));
        limiter.sweep_once();
        assert_eq!(limiter.len(), 0);
    }
}
