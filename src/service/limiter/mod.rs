//! Rate limits: how often one account, or one client address, may do a thing.
//!
//! Limits are rules, so `ChatService` applies them, and every transport obeys the same ones: each
//! GraphQL alias and batch entry, REST call and Socket.IO event is one attempt. The state lives
//! behind the [`Limiter`] trait: [`memory::MemoryLimiter`] for one instance (governor's keyed
//! GCRA), [`redis::RedisLimiter`] when `--redis-url` is set, so that every instance counts against
//! the same allowance (the same GCRA, as one Lua script).
//!
//! Two shapes of limit:
//! - a [`Rate`] (`20/10s`): a burst of `count`, refilled evenly over `period`;
//! - login failures per account ([`Lockout`]): `count` failures within `period` lock the account's
//!   logins for `period / count`, doubling with every further failure (up to a day); a
//!   successful login clears them.

pub mod memory;
pub mod redis;

use std::{fmt, num::NonZeroU32, str::FromStr, time::Duration};

use async_trait::async_trait;

/// A rate: at most `count` at once, refilled evenly over `period` (one more every
/// `period / count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    pub count: NonZeroU32,
    pub period: Duration,
}

impl Rate {
    /// How long one unit takes to come back.
    pub fn interval(&self) -> Duration {
        self.period / self.count.get()
    }
}

impl FromStr for Rate {
    type Err = String;

    /// `COUNT/PERIOD`, e.g. `20/10s`, `10/15m`, `30/1h`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = || format!("{s:?} is not a rate: write COUNT/PERIOD, e.g. 20/10s or 10/15m");
        let (count, period) = s.split_once('/').ok_or_else(usage)?;
        let count = count.trim().parse::<NonZeroU32>().map_err(|_| usage())?;
        let period = humantime::parse_duration(period.trim()).map_err(|_| usage())?;
        if period < Duration::from_millis(1) || period > Duration::from_secs(7 * 24 * 3600) {
            return Err(format!("{s:?}: the period must be between 1ms and 7 days"));
        }
        if period / count.get() < Duration::from_micros(1) {
            return Err(format!("{s:?}: too many for so short a period"));
        }
        Ok(Self { count, period })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.count,
            humantime::format_duration(self.period)
        )
    }
}

/// What a rate limits; it names the keys, so two kinds never share an allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    LoginsPerIp,
    /// Session refreshes per client address (each one a database write).
    RefreshesPerIp,
    RegistrationsPerIp,
    /// Message writes (sends, edits, deletions) per user.
    Messages,
    RoomsCreated,
    Joins,
    /// Room invitations sent, per user (counted against the joins rate).
    Invitations,
    /// Read markers moved, per user (counted against the messages rate).
    MarkRead,
    /// Presence chosen (`setPresence`), per user (counted against the messages rate).
    Presence,
    /// Moderation actions (kicks, bans, role changes, room updates), per user (counted against
    /// the messages rate).
    Moderation,
    /// `myEvents` streams started, per user (each saves a checkpoint; counted against the
    /// joins rate).
    Streams,
    /// Typing indicators per user and room (coalesced, not refused).
    TypingStarted,
    TypingStopped,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Self::LoginsPerIp => "login-ip",
            Self::RefreshesPerIp => "refresh-ip",
            Self::RegistrationsPerIp => "register-ip",
            Self::Messages => "messages",
            Self::RoomsCreated => "rooms",
            Self::Joins => "joins",
            Self::Invitations => "invitations",
            Self::Moderation => "moderation",
            Self::MarkRead => "mark-read",
            Self::Presence => "presence",
            Self::Streams => "streams",
            Self::TypingStarted => "typing-on",
            Self::TypingStopped => "typing-off",
        }
    }
}

/// Login failures per account: the lock-out rule, as a [`Rate`] (`10/15m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout(pub Rate);

/// The longest an account's logins stay locked after failures.
pub const LOCKOUT_CAP: Duration = Duration::from_secs(24 * 3600);

/// Where login failures of one account stand. Times are milliseconds on the limiter's clock.
/// The same arithmetic runs in Lua in the Redis limiter; keep the two in step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Failures {
    /// Failures since the last quiet `period` (a whole period without a failure or a lock).
    pub count: u32,
    pub last: u64,
    /// Logins are refused until then.
    pub locked_until: u64,
}

impl Failures {
    /// How long logins stay refused, from `now`.
    pub fn wait(&self, now: u64) -> u64 {
        self.locked_until.saturating_sub(now)
    }

    /// The state after one more failure at `now`.
    pub fn fail(self, now: u64, rule: Lockout) -> Self {
        let window = duration_ms(rule.0.period);
        let max = rule.0.count.get();
        // Quiet means a whole window with no failure and no lock: a lock longer than the window
        // must not wipe the count, or every lock would end in a fresh allowance.
        let count = if now.saturating_sub(self.last.max(self.locked_until)) > window {
            1
        } else {
            self.count.saturating_add(1)
        };
        let mut locked_until = self.locked_until;
        if count >= max {
            let doublings = (count - max).min(32);
            let lock = duration_ms(rule.0.interval())
                .saturating_mul(1u64 << doublings)
                .min(duration_ms(LOCKOUT_CAP));
            locked_until = now.saturating_add(lock);
        }
        Self {
            count,
            last: now,
            locked_until,
        }
    }

    /// When the state no longer matters: a whole window has passed since the last failure or
    /// lock.
    pub fn expires(&self, rule: Lockout) -> u64 {
        self.locked_until
            .max(self.last)
            .saturating_add(duration_ms(rule.0.period))
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Keeps the count of what each key did, against the rules `ChatService` names.
#[async_trait]
pub trait Limiter: Send + Sync + 'static {
    /// Takes one from `key`'s allowance of `kind` at `rate`; `Err(wait)` when none is left, with
    /// the wait until one is.
    async fn take(&self, kind: Kind, rate: Rate, key: &str) -> Result<(), Duration>;
    /// How long `key`'s logins stay refused after its failures (zero when they are not).
    async fn locked_for(&self, rule: Lockout, key: &str) -> Duration;
    /// Counts a failed login of `key`.
    async fn failed(&self, rule: Lockout, key: &str);
    /// Forgets `key`'s failures after a successful login.
    async fn succeeded(&self, key: &str);
}

/// The limits `ChatService` applies, from the command line.
#[derive(Debug, Clone)]
pub struct RateLimits {
    /// `false` (`--rate-limits off`) turns every per-account and per-IP limit off.
    pub enabled: bool,
    pub login_failures: Lockout,
    pub logins_per_ip: Rate,
    pub refreshes_per_ip: Rate,
    pub registrations_per_ip: Rate,
    pub messages: Rate,
    pub rooms_created: Rate,
    pub joins: Rate,
    /// At most one typing event (and one stop) per user and room this often.
    pub typing_every: Duration,
}

impl RateLimits {
    /// The defaults the command line gives.
    pub fn defaults() -> Self {
        let rate = |s: &str| {
            s.parse::<Rate>()
                .unwrap_or_else(|e| panic!("default rate: {e}"))
        };
        Self {
            enabled: true,
            login_failures: Lockout(rate("10/15m")),
            logins_per_ip: rate("30/1m"),
            refreshes_per_ip: rate("120/1m"),
            registrations_per_ip: rate("20/1h"),
            messages: rate("20/10s"),
            rooms_created: rate("30/1h"),
            joins: rate("60/1m"),
            typing_every: Duration::from_secs(2),
        }
    }

    /// No per-account or per-IP limit (`--rate-limits off`).
    pub fn off() -> Self {
        Self {
            enabled: false,
            ..Self::defaults()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_print() {
        let rate: Rate = "20/10s".parse().unwrap();
        assert_eq!(rate.count.get(), 20);
        assert_eq!(rate.interval(), Duration::from_millis(500));
        assert_eq!(rate.to_string(), "20/10s");
        for bad in ["", "20", "0/1s", "x/1s", "5/forever", "5/0s", "20/30d"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn failures_lock_then_double_and_a_quiet_window_forgets_them() {
        let rule = Lockout("3/30s".parse().unwrap());
        let mut state = Failures::default();
        for now in [1_000, 2_000] {
            state = state.fail(now, rule);
            assert_eq!(state.wait(now), 0);
        }
        state = state.fail(3_000, rule);
        assert_eq!(
            state.wait(3_000),
            10_000,
            "the third failure locks for 30s / 3"
        );
        state = state.fail(13_000, rule);
        assert_eq!(
            state.wait(13_000),
            20_000,
            "each further failure doubles it"
        );
        state = state.fail(33_000, rule);
        assert_eq!(state.wait(33_000), 40_000);
        // A lock longer than the window does not reset the count when it ends.
        state = state.fail(73_000, rule);
        assert_eq!(state.wait(73_000), 80_000);
        // After a quiet window, counting starts over.
        let later = state.expires(rule) + 1;
        assert_eq!(state.fail(later, rule).count, 1);
        assert_eq!(state.fail(later, rule).wait(later), 0);
        // Never longer than the cap.
        let mut state = Failures::default();
        for i in 0..200 {
            state = state.fail(i, rule);
        }
        assert_eq!(state.wait(199), LOCKOUT_CAP.as_millis() as u64);
    }
}
