//! The one error type of Confab's domain.
//!
//! Every layer returns [`Error`]; each transport maps it exactly once (GraphQL in
//! `graphql::error`, HTTP in `server`). `Internal` carries detail for the log only: clients see
//! "internal server error" and the code, never the cause.

use std::borrow::Cow;

pub type Result<T, E = Error> = std::result::Result<T, E>;

type Text = Cow<'static, str>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(Text),
    #[error("{0}")]
    Forbidden(Text),
    #[error("{0}")]
    Unauthenticated(Text),
    /// A uniqueness rule was hit; `field` names the input that collided.
    #[error("{message}")]
    Conflict { field: &'static str, message: Text },
    /// Client input broke a limit or a format; `field` names it.
    #[error("{field}: {reason}")]
    Invalid { field: Text, reason: Text },
    /// Too many requests of a kind; `retry_after` says when one will be taken again, in whole
    /// seconds, when that is known.
    #[error("{message}")]
    RateLimited {
        message: Text,
        retry_after: Option<u64>,
    },
    #[error("internal server error")]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(field: impl Into<Text>, reason: impl Into<Text>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn not_found(what: impl Into<Text>) -> Self {
        Self::NotFound(what.into())
    }

    pub fn forbidden(why: impl Into<Text>) -> Self {
        Self::Forbidden(why.into())
    }

    /// A refusal for going over a rate, with the wait before the next attempt is taken.
    pub fn rate_limited(message: impl Into<Text>, wait: std::time::Duration) -> Self {
        Self::RateLimited {
            message: message.into(),
            // Whole seconds, rounded up: retrying after that many is never early.
            retry_after: Some(wait.as_secs() + u64::from(wait.subsec_nanos() > 0)),
        }
    }

    /// A refusal for having too much in flight at once (no time to wait is known).
    pub fn too_many(message: impl Into<Text>) -> Self {
        Self::RateLimited {
            message: message.into(),
            retry_after: None,
        }
    }

    /// When a refused request may be tried again, in whole seconds.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn internal(context: impl std::fmt::Display) -> Self {
        Self::Internal(anyhow::anyhow!("{context}"))
    }

    /// The machine-readable code shared by every transport (`extensions.code`, REST `error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "NOT_FOUND",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Conflict { .. } => "CONFLICT",
            Self::Invalid { .. } => "BAD_USER_INPUT",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::Internal(_) => "INTERNAL_SERVER_ERROR",
        }
    }

    /// The input field an error is about, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } => Some(field),
            Self::Conflict { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Logs internal detail once, where the error leaves the domain for a client.
    pub fn log_if_internal(&self) {
        if let Self::Internal(cause) = self {
            tracing::error!(error = format!("{cause:#}"), "internal error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_detail_is_not_displayed() {
        let err = Error::internal("disk on fire at /var/secret");
        assert_eq!(err.to_string(), "internal server error");
        assert_eq!(err.code(), "INTERNAL_SERVER_ERROR");
    }

    #[test]
    fn invalid_names_its_field() {
        let err = Error::invalid("username", "too short");
        assert_eq!(err.code(), "BAD_USER_INPUT");
        assert_eq!(err.field(), Some("username"));
    }
}
