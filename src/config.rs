//! Command-line and environment configuration.
//!
//! One clap struct: every flag has an environment fallback (`CONFAB_…`) and a doc comment that
//! `--help` shows. Values are validated here, at startup, so that a bad setting is one clear
//! line and exit code 2 rather than a failure deep inside the server.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

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

    /// Address to listen on: HOST:PORT, where HOST is an IP address (IPv6 in brackets) or a
    /// name resolved at startup (`localhost:8080`); `0.0.0.0:8080` listens on every interface.
    /// Port 0 picks a free port (the bound address is logged).
    #[arg(
        long,
        env = "CONFAB_ADDR",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub addr: ListenAddr,

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

    /// How long a user with a socket open may do nothing (send, edit, mark read, type) before
    /// they show AWAY. 1s to 24h.
    #[arg(long, env = "CONFAB_PRESENCE_IDLE", default_value = "10m", value_parser = parse_presence_idle)]
    pub presence_idle: Duration,

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
    #[arg(long, env = "CONFAB_USERNAME_QUARANTINE", default_value = "30d", value_parser = parse_username_quarantine)]
    pub username_quarantine: Duration,

    /// How long a WebSocket may stay open without sending `connection_init`.
    #[arg(long, env = "CONFAB_WS_INIT_TIMEOUT", default_value = "10s", value_parser = parse_ws_init_timeout)]
    pub ws_init_timeout: Duration,

    /// Most operations one WebSocket connection may run at once (1 to 10000).
    #[arg(long, env = "CONFAB_WS_MAX_OPERATIONS", default_value_t = 100, value_parser = count(1, 10_000))]
    pub ws_max_operations: usize,

    /// How long an acknowledged WebSocket may run no operation before it is closed (1000).
    #[arg(long, env = "CONFAB_WS_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_ws_idle_timeout)]
    pub ws_idle_timeout: Duration,

    /// How long a client may take to send a request's head; also how long an idle keep-alive
    /// connection stays open.
    #[arg(long, env = "CONFAB_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_header_read_timeout)]
    pub header_read_timeout: Duration,

    /// Most client connections at once (lowered to fit the open-files limit, with a warning).
    #[arg(long, env = "CONFAB_MAX_CONNECTIONS", default_value_t = 20_000, value_parser = count(1, 1_000_000))]
    pub max_connections: usize,

    /// Most connections at once from one client address (trusted proxies aside).
    #[arg(long, env = "CONFAB_MAX_CONNECTIONS_PER_IP", default_value_t = 256, value_parser = count(1, 1_000_000))]
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
    #[arg(long, env = "CONFAB_TYPING_INTERVAL", default_value = "2s", value_parser = parse_typing_interval)]
    pub typing_interval: Duration,

    /// Most rooms one user may be a member of.
    #[arg(long, env = "CONFAB_MAX_ROOMS_PER_USER", default_value_t = 1000, value_parser = count(1, 100_000))]
    pub max_rooms_per_user: usize,
}

/// `--addr`: where to listen, as HOST:PORT. The host is an IP address or a name, resolved when
/// the server binds (so that `localhost:8080` works as it does for other servers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    host: Host,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

/// How `--addr` is written; every example is accepted.
const ADDR_USAGE: &str =
    "write HOST:PORT, e.g. 127.0.0.1:8080, 0.0.0.0:8080, localhost:8080 or [::1]:8080";

impl ListenAddr {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The addresses the host stands for, in the resolver's order: an IP address as it is, a
    /// name looked up (off the async threads). An error is one sentence naming the host.
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, String> {
        let name = match &self.host {
            Host::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::Name(name) => name,
        };
        let found: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), self.port))
            .await
            .map_err(|e| format!("--addr {self}: cannot resolve {name:?}: {e}"))?
            .collect();
        if found.is_empty() {
            return Err(format!("--addr {self}: {name:?} resolves to no address"));
        }
        Ok(found)
    }

    /// Where a client on this machine reaches a server listening here: the loopback address
    /// of the same family when the server listens on every interface.
    pub async fn local_targets(&self) -> Result<Vec<SocketAddr>, String> {
        Ok(self
            .resolve()
            .await?
            .into_iter()
            .map(|mut addr| {
                if addr.ip().is_unspecified() {
                    addr.set_ip(match addr.ip() {
                        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                    });
                }
                addr
            })
            .collect())
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> Self {
        Self {
            host: Host::Ip(addr.ip()),
            port: addr.port(),
        }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(addr.into());
        }
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(format!("{s:?} has no port: {ADDR_USAGE}"));
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{port:?} is not a port (0 to 65535): {ADDR_USAGE}"))?;
        if host.contains(':') || host.starts_with('[') {
            return Err(format!(
                "{s:?}: write an IPv6 address in brackets, e.g. [::1]:{port} or [::]:{port}"
            ));
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Self {
                host: Host::Ip(ip),
                port,
            });
        }
        // A host name: labels of letters, digits and hyphens, at most 253 bytes.
        let name_like = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
        if !name_like {
            return Err(format!(
                "{host:?} is not an IP address or a host name: {ADDR_USAGE}"
            ));
        }
        Ok(Self {
            host: Host::Name(host.to_ascii_lowercase()),
            port,
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Ip(ip) => write!(f, "{ip}:{}", self.port),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
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
    /// Ask the server listening on `--addr` for `/healthz` (on this machine's loopback when it
    /// listens on every interface): exit 0 when it answers 200 within 5 s, 1 otherwise. For
    /// container health checks, with no HTTP client in the image.
    Healthcheck,
    /// Manage server admins and invitations in the database `--database-url` names (with
    /// SQLite, while the server is stopped: one process holds the file).
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Copy the SQLite database to PATH, consistently, even while a server writes to it; and
    /// the generated signing key (`jwt-secret`, when no --jwt-secret is given) to
    /// PATH.jwt-secret. Both mode 0600. For MongoDB, use mongodump (see the README).
    Backup {
        /// The backup file to write.
        path: PathBuf,
        /// Replace PATH (and PATH.jwt-secret) when they exist.
        #[arg(long)]
        force: bool,
    },
    /// Put a backup made by `confab backup` in place of the SQLite database, with the server
    /// stopped: checked first (integrity, schema version), then swapped in whole. The signing
    /// key beside it (PATH.jwt-secret) is restored when the data directory has none.
    Restore {
        /// A backup made by `confab backup`.
        path: PathBuf,
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

/// What a duration flag takes: its bounds, and examples within them for its error message.
/// Every message a refused value gets names only values the flag then accepts (a test checks
/// each example and both bounds).
struct Within {
    what: &'static str,
    /// The least and the most accepted, as written in messages (and parsed from there).
    min: &'static str,
    max: &'static str,
    examples: &'static [&'static str],
}

/// `--token-ttl`. Renewal costs a client one request, so a short lifetime is a choice (a
/// client's test suite, a page's renewal watched in a browser), not a mistake. Below 10s a
/// token (whose expiry counts whole seconds) could expire between a client's check and its
/// request.
const TOKEN_TTL: Within = Within {
    what: "an access token's lifetime",
    min: "10s",
    max: "366d",
    examples: &["15m", "1h", "30s"],
};
/// `--session-ttl`.
const SESSION_TTL: Within = Within {
    what: "a session's lifetime",
    min: "1m",
    max: "366d",
    examples: &["30d", "12h", "90m"],
};
/// `--presence-timeout`.
const PRESENCE_TIMEOUT: Within = Within {
    what: "the presence timeout",
    min: "1s",
    max: "1h",
    examples: &["30s", "2m", "5s"],
};
/// `--presence-idle`.
const PRESENCE_IDLE: Within = Within {
    what: "the idle time before a user shows AWAY",
    min: "1s",
    max: "24h",
    examples: &["10m", "1h", "30s"],
};
/// `--username-quarantine` (`0s`: a deleted account's name is free at once).
const USERNAME_QUARANTINE: Within = Within {
    what: "the username quarantine",
    min: "0s",
    max: "3650d",
    examples: &["30d", "1y", "0s"],
};
/// `--ws-init-timeout`.
const WS_INIT_TIMEOUT: Within = Within {
    what: "the WebSocket init timeout",
    min: "1s",
    max: "10m",
    examples: &["10s", "30s", "1m"],
};
/// `--ws-idle-timeout`.
const WS_IDLE_TIMEOUT: Within = Within {
    what: "the WebSocket idle timeout",
    min: "1s",
    max: "1d",
    examples: &["60s", "5m", "1h"],
};
/// `--header-read-timeout`.
const HEADER_READ_TIMEOUT: Within = Within {
    what: "the header read timeout",
    min: "1s",
    max: "10m",
    examples: &["10s", "30s", "2m"],
};
/// `--typing-interval`.
const TYPING_INTERVAL: Within = Within {
    what: "the typing interval",
    min: "100ms",
    max: "10m",
    examples: &["2s", "500ms", "5s"],
};

impl Within {
    fn parse(&self, s: &str) -> Result<Duration, String> {
        let (min, max) = (self.min, self.max);
        let examples = match self.examples {
            [most @ .., last] if !most.is_empty() => format!("{} or {last}", most.join(", ")),
            all => all.join(""),
        };
        let value = humantime::parse_duration(s.trim()).map_err(|_| {
            format!("{s:?} is not a duration: write a number and a unit, e.g. {examples} (from {min} to {max})")
        })?;
        let bound = |text: &str| humantime::parse_duration(text).unwrap_or_default();
        if value < bound(min) || value > bound(max) {
            return Err(format!(
                "{s:?} is out of range: {} must be from {min} to {max}, e.g. {examples}",
                self.what
            ));
        }
        Ok(value)
    }
}

fn parse_token_ttl(s: &str) -> Result<Duration, String> {
    TOKEN_TTL.parse(s)
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    SESSION_TTL.parse(s)
}

fn parse_presence_timeout(s: &str) -> Result<Duration, String> {
    PRESENCE_TIMEOUT.parse(s)
}

fn parse_presence_idle(s: &str) -> Result<Duration, String> {
    PRESENCE_IDLE.parse(s)
}

fn parse_username_quarantine(s: &str) -> Result<Duration, String> {
    USERNAME_QUARANTINE.parse(s)
}

fn parse_ws_init_timeout(s: &str) -> Result<Duration, String> {
    WS_INIT_TIMEOUT.parse(s)
}

fn parse_ws_idle_timeout(s: &str) -> Result<Duration, String> {
    WS_IDLE_TIMEOUT.parse(s)
}

fn parse_header_read_timeout(s: &str) -> Result<Duration, String> {
    HEADER_READ_TIMEOUT.parse(s)
}

fn parse_typing_interval(s: &str) -> Result<Duration, String> {
    TYPING_INTERVAL.parse(s)
}

/// A count flag's parser: whole numbers from `min` to `max` (clap's message names the range).
fn count(min: u64, max: u64) -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(min..=max)
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
            addr: SocketAddr::from(([127, 0, 0, 1], 0)).into(),
            metrics_addr: None,
            database_url: "sqlite::memory:".into(),
            redis_url: None,
            jwt_secret: Some(Secret::new("confab-test-secret-confab-test-secret")),
            token_ttl: Duration::from_secs(15 * 60),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            presence_timeout: Duration::from_secs(30),
            presence_idle: Duration::from_secs(600),
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
    fn every_duration_hint_is_a_value_its_flag_takes() {
        for within in [
            TOKEN_TTL,
            SESSION_TTL,
            PRESENCE_TIMEOUT,
            USERNAME_QUARANTINE,
            WS_INIT_TIMEOUT,
            WS_IDLE_TIMEOUT,
            HEADER_READ_TIMEOUT,
            TYPING_INTERVAL,
        ] {
            let min = humantime::parse_duration(within.min).unwrap();
            let max = humantime::parse_duration(within.max).unwrap();
            assert!(min < max, "{}", within.what);
            for example in within.examples.iter().chain([&within.min, &within.max]) {
                assert!(within.parse(example).is_ok(), "{}: {example}", within.what);
            }
            assert!(within.parse("forever").is_err());
            assert!(
                within
                    .parse(&humantime::format_duration(max + Duration::from_secs(1)).to_string())
                    .is_err()
            );
        }
    }

    #[test]
    fn listen_addresses() {
        let parse = |s: &str| s.parse::<ListenAddr>();
        assert_eq!(
            parse("127.0.0.1:8080").unwrap().to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(parse("[::1]:8080").unwrap().to_string(), "[::1]:8080");
        assert_eq!(parse("LocalHost:0").unwrap().to_string(), "localhost:0");
        assert_eq!(parse("chat-1.internal:80").unwrap().port(), 80);
        for bad in [
            "localhost",
            "localhost:http",
            ":8080",
            "::1:8080",
            "a b:80",
            "x:65536",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        for example in ADDR_USAGE.split("e.g. ").nth(1).unwrap().split([',', ' ']) {
            if example.contains(':') {
                assert!(parse(example).is_ok(), "{example}");
            }
        }
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
