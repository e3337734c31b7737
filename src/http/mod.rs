//! What every transport does at its edge the same way: read who is calling (`auth`) and say why
//! a request is refused (`error`). GraphQL over HTTP and WebSocket, REST and Socket.IO all go
//! through these, so a token, an expiry or an error code means one thing on each.

pub mod auth;
pub mod error;

pub use error::Problem;

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

/// A JSON reply that ends with a newline, as the REST routes and the server's own routes
/// (`/readyz`, errors) answer: `curl` output then does not run into the next prompt. Otherwise
/// as axum's `Json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(mut body) => {
                body.push(b'\n');
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    )],
                    body,
                )
                    .into_response()
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a JSON reply");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}

/// Largest HTTP request body accepted.
pub const MAX_BODY: usize = 256 * 1024;

/// A time as the REST and Socket.IO payloads write it: RFC 3339, UTC, milliseconds.
pub fn time(at: &chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
