//! Command-line and environment configuration.
//!
//! One clap struct: every flag has an environment fallback (`CONFAB_…`) and a doc comment that
//! `--help` shows. Values are validated here, at startup, so that a bad setting is one clear
//! line and exit code 2 rather than a failure deep inside the server.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};

/// Confab: a self-hosted GraphQL chat server.
#[derive(Debug, Clone, Parser)]
#[command(name = "confab", version, about)]
pub struct Config {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Address to listen on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "CONFAB_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Where data lives: `sqlite://PATH` (created on first run), `sqlite::memory:` (ephemeral),
    /// or `mongodb://…` / `mongodb+srv://…`.
    #[arg(
        long,
        env = "CONFAB_DATABASE_URL",
        default_value = "sqlite://data/confab.db"
    )]
    pub database_url: String,

    /// Redis URL; when set, room events fan out across every instance through Redis pub/sub.
    #[arg(long, env = "CONFAB_REDIS_URL")]
    pub redis_url: Option<String>,

    /// HS256 signing key for access tokens, at least 32 bytes. When absent, a key is generated
    /// once and kept in the data directory (mode 0600).
    #[arg(long, env = "CONFAB_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// Access token lifetime, e.g. `24h`, `90m`, `7d`.
    #[arg(long, env = "CONFAB_TOKEN_TTL", default_value = "24h", value_parser = parse_ttl)]
    pub token_ttl: Duration,

    /// How long a WebSocket may stay open without sending `connection_init`.
    #[arg(long, env = "CONFAB_WS_INIT_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub ws_init_timeout: Duration,

    /// Most operations one WebSocket connection may run at once.
    #[arg(long, env = "CONFAB_WS_MAX_OPERATIONS", default_value_t = 100)]
    pub ws_max_operations: usize,
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
}

/// A secret string that never reaches a log line or `Debug` output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
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
        Ok(Self(s.to_owned()))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 90m, 24h)"))
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let ttl = parse_duration(s)?;
    if ttl < Duration::from_secs(60) || ttl > Duration::from_secs(366 * 24 * 3600) {
        return Err("the token lifetime must be between 1m and 366d".into());
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
    /// A configuration for tests and embedding: an ephemeral store on a free loopback port.
    pub fn ephemeral() -> Self {
        Self {
            command: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            database_url: "sqlite::memory:".into(),
            redis_url: None,
            jwt_secret: Some(Secret::new("confab-test-secret-confab-test-secret")),
            token_ttl: Duration::from_secs(24 * 3600),
            ws_init_timeout: Duration::from_secs(10),
            ws_max_operations: 100,
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
    fn ttl_bounds() {
        assert_eq!(parse_ttl("24h"), Ok(Duration::from_secs(86400)));
        assert!(parse_ttl("1s").is_err());
        assert!(parse_ttl("forever").is_err());
    }
}
