//! Rate limits shared by every instance through Redis (`--redis-url`).
//!
//! Each check is one Lua script, so it is atomic however many instances ask at once, and it
//! reads the time from Redis (`TIME`), so instances' clocks need not agree. The rate script is the
//! GCRA that governor runs in memory (a key holds the allowance's "theoretical arrival time");
//! the failures script is [`Failures::fail`] written again in Lua: keep the two in step (the
//! tests run the same cases against both).
//!
//! When Redis does not answer in time, this instance falls back to its own memory limiter and
//! says so in the log: limits stay on, per instance, rather than failing every request.

use std::{
    sync::{Arc, LazyLock, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;

use super::{Kind, LOCKOUT_CAP, Limiter, Lockout, Rate, memory::MemoryLimiter};
use crate::config::ConfigError;

const PREFIX: &str = "confab:limit:";
/// How long one check may wait for Redis before the memory limiter answers instead.
const TIMEOUT: Duration = Duration::from_millis(500);
/// How often the fallback is logged while Redis is away.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// GCRA. KEYS[1]: the allowance; ARGV: the interval and the burst. Returns 0 when taken, else
/// the milliseconds to wait.
static TAKE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local next_tat = tat + interval
local allowed_at = next_tat - burst * interval
if allowed_at > now then return allowed_at - now end
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', string.format('%d', next_tat - now))
return 0
",
    )
});

/// Login failures. KEYS[1]: the account's state; ARGV: `check` or `fail`, the window, the count
/// that locks, the lock's first length and its cap (milliseconds). `check` returns the
/// milliseconds logins stay refused; `fail` counts one failure and returns 0.
static FAILURES: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local s = redis.call('HMGET', KEYS[1], 'count', 'last', 'until')
local count = tonumber(s[1]) or 0
local last = tonumber(s[2]) or 0
local locked = tonumber(s[3]) or 0
if ARGV[1] == 'check' then
  if locked > now then return locked - now end
  return 0
end
local window = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
local base = tonumber(ARGV[4])
local cap = tonumber(ARGV[5])
if now - math.max(last, locked) > window then count = 1 else count = count + 1 end
if count >= max then
  locked = now + math.min(cap, base * 2 ^ math.min(count - max, 32))
end
-- Integers written as such: Lua numbers are doubles, and tostring would round them.
local function int(x) return string.format('%d', x) end
redis.call('HSET', KEYS[1], 'count', int(count), 'last', int(now), 'until', int(locked))
redis.call('PEXPIRE', KEYS[1], int(math.max(locked, now) - now + window))
return 0
",
    )
});

pub struct RedisLimiter {
    conn: redis::aio::ConnectionManager,
    fallback: Arc<MemoryLimiter>,
    warned: Mutex<Option<Instant>>,
}

impl RedisLimiter {
    /// Connects, failing at startup in one line when Redis does not answer.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)
            .map_err(|e| ConfigError(format!("--redis-url is not a valid Redis URL: {e}")))?;
        let host = client.get_connection_info().addr().to_string();
        let conn = tokio::time::timeout(Duration::from_secs(10), client.get_connection_manager())
            .await
            .map_err(|_| anyhow::anyhow!("cannot reach Redis at {host}: no answer in 10 s"))?
            .map_err(|e| anyhow::anyhow!("cannot reach Redis at {host}: {e}"))?;
        Ok(Self {
            conn,
            fallback: MemoryLimiter::new(),
            warned: Mutex::new(None),
        })
    }

    /// Runs a script with a deadline; `None` (after logging, now and then) when Redis failed.
    async fn run(&self, invocation: redis::ScriptInvocation<'_>) -> Option<u64> {
        let mut conn = self.conn.clone();
        let result = tokio::time::timeout(TIMEOUT, invocation.invoke_async::<u64>(&mut conn)).await;
        let error = match result {
            Ok(Ok(value)) => return Some(value),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer in {TIMEOUT:?}"),
        };
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *warned = Some(Instant::now());
            tracing::warn!(%error, "rate limits: Redis failed; counting in this instance alone");
        }
        None
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn failures_key(key: &str) -> String {
    format!("{PREFIX}login-failures:{key}")
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn take(&self, kind: Kind, rate: Rate, key: &str) -> Result<(), Duration> {
        let redis_key = format!("{PREFIX}{}:{key}", kind.name());
        let mut invocation = TAKE.prepare_invoke();
        invocation
            .key(redis_key)
            .arg(ms(rate.interval()))
            .arg(rate.count.get());
        match self.run(invocation).await {
            Some(0) => Ok(()),
            Some(wait) => Err(Duration::from_millis(wait)),
            None => self.fallback.take(kind, rate, key).await,
        }
    }

    async fn locked_for(&self, rule: Lockout, key: &str) -> Duration {
        let mut invocation = FAILURES.prepare_invoke();
        invocation.key(failures_key(key)).arg("check");
        match self.run(invocation).await {
            Some(wait) => Duration::from_millis(wait),
            None => self.fallback.locked_for(rule, key).await,
        }
    }

    async fn failed(&self, rule: Lockout, key: &str) {
        let mut invocation = FAILURES.prepare_invoke();
        invocation
            .key(failures_key(key))
            .arg("fail")
            .arg(ms(rule.0.period))
            .arg(rule.0.count.get())
            .arg(ms(rule.0.interval()))
            .arg(ms(LOCKOUT_CAP));
        if self.run(invocation).await.is_none() {
            self.fallback.failed(rule, key).await;
        }
    }

    async fn succeeded(&self, key: &str) {
        let mut conn = self.conn.clone();
        let deleted = tokio::time::timeout(
            TIMEOUT,
            redis::cmd("DEL")
                .arg(failures_key(key))
                .query_async::<()>(&mut conn),
        )
        .await;
        if !matches!(deleted, Ok(Ok(()))) {
            tracing::warn!("rate limits: Redis failed to clear a login's failures");
        }
        self.fallback.succeeded(key).await;
    }
}
