//! The one error type of Confab's domain, and every code Confab answers with.
//!
//! Every layer returns [`Error`]; `http::error` turns it (or a refusal at the edge, which has a
//! [`Code`] of its own) into what each protocol sends, in one place. `Internal` carries detail for
//! the log only: clients see "internal server error" and the code, never the cause.

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
    pub fn code(&self) -> Code {
        match self {
            Self::NotFound(_) => Code::NotFound,
            Self::Forbidden(_) => Code::Forbidden,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::Conflict { .. } => Code::Conflict,
            Self::Invalid { .. } => Code::BadUserInput,
            Self::RateLimited { .. } => Code::RateLimited,
            Self::Internal(_) => Code::InternalServerError,
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

/// Every machine-readable code Confab answers with, on every transport: those of [`Error`], and
/// those of requests refused before they reach the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unauthenticated,
    Forbidden,
    NotFound,
    BadUserInput,
    Conflict,
    RateLimited,
    InternalServerError,
    /// A request the protocol cannot read (malformed JSON, no query, a bad subprotocol).
    BadRequest,
    PayloadTooLarge,
    MethodNotAllowed,
    UnsupportedMediaType,
    /// A GraphQL document refused for what it would cost.
    QueryTooComplex,
    GraphqlParseFailed,
    GraphqlValidationFailed,
    /// The server is at a capacity limit (connections).
    ServiceUnavailable,
}

impl Code {
    /// Every code (what `/metrics` accepts as an outcome label).
    pub const ALL: [Code; 15] = [
        Self::Unauthenticated,
        Self::Forbidden,
        Self::NotFound,
        Self::BadUserInput,
        Self::Conflict,
        Self::RateLimited,
        Self::InternalServerError,
        Self::BadRequest,
        Self::PayloadTooLarge,
        Self::MethodNotAllowed,
        Self::UnsupportedMediaType,
        Self::QueryTooComplex,
        Self::GraphqlParseFailed,
        Self::GraphqlValidationFailed,
        Self::ServiceUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::BadUserInput => "BAD_USER_INPUT",
            Self::Conflict => "CONFLICT",
            Self::RateLimited => "RATE_LIMITED",
            Self::InternalServerError => "INTERNAL_SERVER_ERROR",
            Self::BadRequest => "BAD_REQUEST",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::QueryTooComplex => "QUERY_TOO_COMPLEX",
            Self::GraphqlParseFailed => "GRAPHQL_PARSE_FAILED",
            Self::GraphqlValidationFailed => "GRAPHQL_VALIDATION_FAILED",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_detail_is_not_displayed() {
        let err = Error::internal("disk on fire at /var/secret");
        assert_eq!(err.to_string(), "internal server error");
        assert_eq!(err.code(), Code::InternalServerError);
    }

    #[test]
    fn invalid_names_its_field() {
        let err = Error::invalid("username", "too short");
        assert_eq!(err.code().as_str(), "BAD_USER_INPUT");
        assert_eq!(err.field(), Some("username"));
    }
}
