//! Command-line and environment configuration.
//!
//! One clap struct: every flag has an environment fallback (`CONFAB_…`) and a doc comment that
//! `--help` shows. Values are validated here, at startup, so that a bad setting is one clear
//! line and exit code 2 rather than a failure deep inside the server.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};

use crate::service::limiter::{Lockout, Rate, RateLimits};

/// Confab: a self-hosted GraphQL chat server.
#[derive(Debug, Clone, Parser)]
#[command(name = "confab", version, about)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "CONFAB_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Serve `/metrics` on this address (keep it internal) and not on `--addr`. Without it,
    /// `/metrics` is served on `--addr` with everything else.
    #[arg(long, env = "CONFAB_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,

    /// Where data lives: `sqlite://PATH` (created on first run), `sqlite::memory:` (ephemeral),
    /// or `mongodb://…` / `mongodb+srv://…`.
    #[arg(
        long,
        env = "CONFAB_DATABASE_URL",
        default_value = "sqlite://data/confab.db",
        // Also after `confab admin …`, where it names the database to change.
        global = true
    )]
    pub database_url: String,

    /// Redis URL; when set, room events fan out across every instance through Redis pub/sub.
    #[arg(long, env = "CONFAB_REDIS_URL")]
    pub redis_url: Option<String>,

    /// HS256 signing key for access tokens, at least 32 bytes. When absent, a key is generated
    /// once and kept in the data directory (mode 0600).
    #[arg(long, env = "CONFAB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// Access token lifetime, e.g. `15m`, `1h` (from 10s). Short, because a client renews it
    /// with its refresh token and a revoked session's tokens are refused anyway; a few seconds
    /// lets a client's developers watch their renewal work without waiting minutes.
    #[arg(long, env = "CONFAB_TOKEN_TTL", default_value = "15m", value_parser = parse_token_ttl)]
    pub token_ttl: Duration,

    /// Session (refresh token) lifetime, sliding: each refresh moves the end this far ahead.
    #[arg(long, env = "CONFAB_SESSION_TTL", default_value = "30d", value_parser = parse_ttl)]
    pub session_ttl: Duration,

    /// How long after a user's last socket closes they turn OFFLINE (a reconnect within it
    /// shows no change). 1s to 1h.
    #[arg(long, env = "CONFAB_PRESENCE_TIMEOUT", default_value = "30s", value_parser = parse_presence_timeout)]
    pub presence_timeout: Duration,

    /// Most sessions one user may have at once: signing in beyond it ends the least recently
    /// used.
    #[arg(long, env = "CONFAB_MAX_SESSIONS_PER_USER", default_value_t = 200, value_parser = clap::value_parser!(u16).range(1..=200))]
    pub max_sessions_per_user: u16,

    /// Who may create an account: `open` (anyone), `invite` (with a single-use code an admin
    /// made: `createInviteCode` or `confab admin invite`), `closed` (nobody).
    #[arg(long, env = "CONFAB_REGISTRATION", default_value = "open")]
    pub registration: Registration,

    /// How long a deleted account's username stays taken, so that nobody takes over a name
    /// others trust at once (`0s`: freed at once).
    #[arg(long, env = "CONFAB_USERNAME_QUARANTINE", default_value = "30d", value_parser = parse_duration)]
    pub username_quarantine: Duration,

    /// How long a WebSocket may stay open without sending `connection_init`.
    #[arg(long, env = "CONFAB_WS_INIT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub ws_init_timeout: Duration,

    /// Most operations one WebSocket connection may run at once.
    #[arg(long, env = "CONFAB_WS_MAX_OPERATIONS", default_value_t = 100)]
    pub ws_max_operations: usize,

    /// How long an acknowledged WebSocket may run no operation before it is closed (1000).
    #[arg(long, env = "CONFAB_WS_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub ws_idle_timeout: Duration,

    /// How long a client may take to send a request's head; also how long an idle keep-alive
    /// connection stays open.
    #[arg(long, env = "CONFAB_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Most client connections at once (lowered to fit the open-files limit, with a warning).
    #[arg(long, env = "CONFAB_MAX_CONNECTIONS", default_value_t = 20_000)]
    pub max_connections: usize,

    /// Most connections at once from one client address (trusted proxies aside).
    #[arg(long, env = "CONFAB_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,

    /// Proxies whose `X-Forwarded-For` names the client (comma-separated CIDRs, e.g.
    /// `10.0.0.0/8,::1/128`); otherwise the TCP peer is the client.
    #[arg(long, env = "CONFAB_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<IpNet>,

    /// Origins whose pages may call the API from a browser (comma-separated, e.g.
    /// `https://chat.example.com`); none by default, so only pages Confab serves itself can.
    #[arg(long, env = "CONFAB_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,

    /// `off` turns off every per-account and per-address limit: request rates, login lock-outs
    /// and the per-address connection cap (for benchmarks and tests). Document limits, the
    /// total connection cap and timeouts stay.
    #[arg(long, env = "CONFAB_RATE_LIMITS", default_value = "on")]
    pub rate_limits: Switch,

    /// Failed logins per account before its logins are locked for PERIOD/COUNT, doubling with
    /// each further failure (up to a day).
    #[arg(long, env = "CONFAB_LIMIT_LOGIN_FAILURES", default_value = "10/15m")]
    pub limit_login_failures: Rate,

    /// Login attempts per client address (COUNT at once, refilled over PERIOD).
    #[arg(long, env = "CONFAB_LIMIT_LOGINS_PER_IP", default_value = "30/1m")]
    pub limit_logins_per_ip: Rate,

    /// Session refreshes per client address (a client refreshes once per access token
    /// lifetime; many users behind one address share it).
    #[arg(long, env = "CONFAB_LIMIT_REFRESHES_PER_IP", default_value = "120/1m")]
    pub limit_refreshes_per_ip: Rate,

    /// Accounts registered per client address.
    #[arg(
        long,
        env = "CONFAB_LIMIT_REGISTRATIONS_PER_IP",
        default_value = "20/1h"
    )]
    pub limit_registrations_per_ip: Rate,

    /// Message writes (sends, edits, deletions) per user.
    #[arg(long, env = "CONFAB_LIMIT_MESSAGES", default_value = "20/10s")]
    pub limit_messages: Rate,

    /// Rooms created per user.
    #[arg(long, env = "CONFAB_LIMIT_ROOMS", default_value = "30/1h")]
    pub limit_rooms: Rate,

    /// Rooms joined per user.
    #[arg(long, env = "CONFAB_LIMIT_JOINS", default_value = "60/1m")]
    pub limit_joins: Rate,

    /// At most one typing notice (and one stop) per user and room this often; more are dropped.
    #[arg(long, env = "CONFAB_TYPING_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub typing_interval: Duration,

    /// Most rooms one user may be a member of.
    #[arg(long, env = "CONFAB_MAX_ROOMS_PER_USER", default_value_t = 1000)]
    pub max_rooms_per_user: usize,
}

/// `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    On,
    Off,
}

impl Config {
    /// The rate limits the flags ask for.
    pub fn rate_limits(&self) -> RateLimits {
        RateLimits {
            enabled: self.rate_limits == Switch::On,
            login_failures: Lockout(self.limit_login_failures),
            logins_per_ip: self.limit_logins_per_ip,
            refreshes_per_ip: self.limit_refreshes_per_ip,
            registrations_per_ip: self.limit_registrations_per_ip,
            messages: self.limit_messages,
            rooms_created: self.limit_rooms,
            joins: self.limit_joins,
            typing_every: self.typing_interval,
        }
    }
}

fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an address or CIDR (e.g. 10.0.0.0/8, ::1)"))
}

fn parse_origin(s: &str) -> Result<String, String> {
    let s = s.trim().trim_end_matches('/');
    let valid = (s.starts_with("http://") || s.starts_with("https://"))
        && !s["https://".len().min(s.len())..].contains('/')
        && axum::http::HeaderValue::from_str(s).is_ok();
    if !valid {
        return Err(format!(
            "{s:?} is not an origin: write scheme://host[:port], e.g. https://chat.example.com"
        ));
    }
    Ok(s.to_owned())
}

/// A configuration problem: reported in one line, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Subcommands besides the default (serving).
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Print the GraphQL schema (SDL) and exit.
    Schema,
    /// Manage server admins and invitations in the database `--database-url` names (with
    /// SQLite, while the server is stopped: one process holds the file).
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
}

/// `confab admin …`.
#[derive(Debug, Clone, Subcommand)]
pub enum AdminAction {
    /// Make an account a server admin.
    Grant { username: String },
    /// Make an account no longer a server admin.
    Revoke { username: String },
    /// Print a new single-use invitation code (for `--registration invite`).
    Invite,
}

/// Who may register (`--registration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Registration {
    Open,
    Invite,
    Closed,
}

/// A secret string that never reaches a log line or `Debug` output, and is wiped from memory
/// when dropped (`secrecy`).
#[derive(Clone)]
pub struct Secret(SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() < 32 {
            return Err(format!(
                "the JWT secret must be at least 32 bytes long (got {})",
                s.len()
            ));
        }
        Ok(Self::new(s))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 90m, 24h)"))
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let ttl = parse_duration(s)?;
    if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(366 * 24 * 3600) {
        return Err("a lifetime must be between 1m and 366d".into());
    }
    Ok(ttl)
}

/// An access token's lifetime: as [`parse_ttl`], but from 10s. Renewal costs a client one
/// request, so a short lifetime is a choice (a client's test suite, a page's renewal watched
/// in a browser), not a mistake. Below 10s a token (whose expiry counts whole seconds) could
/// expire between a client's check and its request.
fn parse_presence_timeout(s: &str) -> Result<Duration, String> {
    let timeout = parse_duration(s)?;
    if timeout < Duration::from_secs(1) || timeout > Duration::from_secs(3600) {
        return Err("the presence timeout must be between 1s and 1h".into());
    }
    Ok(timeout)
}

fn parse_token_ttl(s: &str) -> Result<Duration, String> {
    let ttl = parse_duration(s)?;
    if ttl < Duration::from_secs(10) || ttl > Duration::from_secs(366 * 24 * 3600) {
        return Err("an access token's lifetime must be between 10s and 366d".into());
    }
    Ok(ttl)
}

/// Which store a `--database-url` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    SqliteFile(PathBuf),
    SqliteMemory,
    Mongo(String),
}

impl DatabaseUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        if url == "sqlite::memory:" || url == "sqlite://:memory:" {
            Ok(Self::SqliteMemory)
        } else if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err(
                    "--database-url sqlite:// needs a path, e.g. sqlite://data/confab.db".into(),
                );
            }
            Ok(Self::SqliteFile(PathBuf::from(path)))
        } else if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") {
            Ok(Self::Mongo(url.to_owned()))
        } else {
            Err(format!(
                "--database-url must start with sqlite://, sqlite::memory:, mongodb:// or mongodb+srv:// (got {:?})",
                url.split(':').next().unwrap_or_default()
            ))
        }
    }

    /// Where Confab keeps files of its own (the generated JWT key): beside the SQLite file, or
    /// `./data` for the other stores.
    pub fn data_dir(&self) -> Option<PathBuf> {
        match self {
            Self::SqliteFile(path) => Some(
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(".")),
            ),
            Self::SqliteMemory => None,
            Self::Mongo(_) => Some(PathBuf::from("data")),
        }
    }
}

impl Config {
    /// A configuration for tests and embedding: an ephemeral store on a free loopback port,
    /// with rate limits off.
    pub fn ephemeral() -> Self {
        let defaults = RateLimits::defaults();
        Self {
            command: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_addr: None,
            database_url: "sqlite::memory:".into(),
            redis_url: None,
            jwt_secret: Some(Secret::new("confab-test-secret-confab-test-secret")),
            token_ttl: Duration::from_secs(15 * 60),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            presence_timeout: Duration::from_secs(30),
            max_sessions_per_user: 200,
            registration: Registration::Open,
            username_quarantine: Duration::from_secs(30 * 24 * 3600),
            ws_init_timeout: Duration::from_secs(10),
            ws_max_operations: 100,
            ws_idle_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 20_000,
            max_connections_per_ip: 256,
            trusted_proxies: Vec::new(),
            cors_origins: Vec::new(),
            // Tests that are not about limits are not slowed by them; those that are turn
            // them on.
            rate_limits: Switch::Off,
            limit_login_failures: defaults.login_failures.0,
            limit_logins_per_ip: defaults.logins_per_ip,
            limit_refreshes_per_ip: defaults.refreshes_per_ip,
            limit_registrations_per_ip: defaults.registrations_per_ip,
            limit_messages: defaults.messages,
            limit_rooms: defaults.rooms_created,
            limit_joins: defaults.joins,
            typing_interval: defaults.typing_every,
            max_rooms_per_user: crate::service::limits::MAX_ROOMS_PER_USER,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite::memory:"),
            Ok(DatabaseUrl::SqliteMemory)
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://data/confab.db"),
            Ok(DatabaseUrl::SqliteFile("data/confab.db".into()))
        );
        assert!(matches!(
            DatabaseUrl::parse("mongodb://h/db"),
            Ok(DatabaseUrl::Mongo(_))
        ));
        assert!(DatabaseUrl::parse("postgres://x").is_err());
        assert!(DatabaseUrl::parse("sqlite://").is_err());
        assert_eq!(
            DatabaseUrl::SqliteFile("confab.db".into()).data_dir(),
            Some(PathBuf::from("."))
        );
    }

    #[test]
    fn short_secret_is_refused() {
        assert!("short".parse::<Secret>().is_err());
        assert!("x".repeat(32).parse::<Secret>().is_ok());
        assert_eq!(format!("{:?}", Secret::new("hidden")), "Secret(…)");
    }

    #[test]
    fn the_defaults_match_the_limits_the_service_assumes() {
        let config = Config::parse_from(["confab"]);
        let mut ephemeral = Config::ephemeral();
        ephemeral.rate_limits = Switch::On;
        assert_eq!(
            format!("{:?}", config.rate_limits()),
            format!("{:?}", ephemeral.rate_limits())
        );
        assert_eq!(
            format!("{:?}", config.rate_limits()),
            format!("{:?}", RateLimits::defaults())
        );
        assert_eq!(config.max_rooms_per_user, ephemeral.max_rooms_per_user);
        let off = Config::parse_from(["confab", "--rate-limits", "off"]);
        assert!(!off.rate_limits().enabled);
    }

    #[test]
    fn proxies_and_origins_are_checked() {
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        assert!(parse_cidr("::1").is_ok());
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert_eq!(
            parse_origin("https://chat.example.com/").as_deref(),
            Ok("https://chat.example.com")
        );
        assert!(parse_origin("chat.example.com").is_err());
        assert!(parse_origin("https://chat.example.com/path").is_err());
    }

    #[test]
    fn ttl_bounds() {
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86400)));
        assert!(parse_ttl("1s").is_err());
        assert!(parse_ttl("30s").is_err());
        assert!(parse_ttl("forever").is_err());
        assert_eq!(parse_token_ttl("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_token_ttl("15m"), Ok(Duration::from_secs(900)));
        assert!(parse_token_ttl("9s").is_err());
        assert!(parse_token_ttl("367d").is_err());
    }
}
