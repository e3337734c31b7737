//! What every transport does at its edge the same way: read who is calling (`auth`) and say why
//! a request is refused (`error`). GraphQL over HTTP and WebSocket, REST and Socket.IO all go
//! through these, so a token, an expiry or an error code means one thing on each.

pub mod auth;
pub mod error;

pub use error::Problem;

/// Largest HTTP request body accepted.
pub const MAX_BODY: usize = 256 * 1024;

/// A time as the REST and Socket.IO payloads write it: RFC 3339, UTC, milliseconds.
pub fn time(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
