//! How a refusal looks on the wire, for every transport, in one place.
//!
//! A [`Problem`] is a refusal ready to send: its [`Code`], a message, the input field it is about,
//! and when to retry. It comes from a domain [`Error`] (logging internal detail once, here) or
//! from the edge itself (a body too large, a route that does not exist). It has one HTTP status
//! per code and one JSON shape per protocol family:
//! - REST and the server's own routes: `{"error": {"code", "message", "field"?, "retryAfter"?}}`;
//! - GraphQL: `{"message", "extensions": {"code", "field"?, "retryAfter"?}}` in `errors`;
//! - Socket.IO acknowledgements: `{"ok": false, "error": {…as REST…}}`.
//!
//! The original service's clients (REST bodies, Socket.IO events) name some fields differently
//! from the GraphQL API; [`legacy_field`] is the one table of those names.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::error::{Code, Error};

/// A refusal, ready to be sent on any transport.
#[derive(Debug, Clone)]
pub struct Problem {
    pub code: Code,
    pub message: String,
    /// The input the refusal is about, named as the client named it.
    pub field: Option<String>,
    /// Whole seconds before the request will be taken again.
    pub retry_after: Option<u64>,
    /// A status other than the code's own (a 413 for a body too large to read, say).
    pub status: Option<StatusCode>,
}

impl Problem {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            retry_after: None,
            status: None,
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = Some(status);
        self
    }

    /// The field names of the original service's clients (see [`legacy_field`]), in the field
    /// and in the message that names it.
    pub fn in_legacy_names(mut self) -> Self {
        if let Some(field) = &self.field {
            let legacy = legacy_field(field);
            if legacy != field {
                if let Some(rest) = self.message.strip_prefix(&format!("{field}:")) {
                    self.message = format!("{legacy}:{rest}");
                }
                self.field = Some(legacy.to_owned());
            }
        }
        self
    }

    /// The HTTP status for this refusal.
    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or(match self.code {
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::BadUserInput
            | Code::BadRequest
            | Code::QueryTooComplex
            | Code::GraphqlParseFailed
            | Code::GraphqlValidationFailed => StatusCode::BAD_REQUEST,
            Code::Conflict => StatusCode::CONFLICT,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::InternalServerError => StatusCode::INTERNAL_SERVER_ERROR,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        })
    }

    /// `{"code", "message", "field"?, "retryAfter"?}`: the REST `error` and the Socket.IO one.
    pub fn detail(&self) -> Value {
        let mut detail = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(field) = &self.field {
            detail["field"] = json!(field);
        }
        if let Some(seconds) = self.retry_after {
            detail["retryAfter"] = json!(seconds);
        }
        detail
    }

    /// `{"error": {…}}`, as REST and the server's own routes answer.
    pub fn rest_body(&self) -> Value {
        json!({"error": self.detail()})
    }

    /// A Socket.IO acknowledgement's refusal: `{"ok": false, "error": {…}}`.
    pub fn ack(&self) -> Value {
        json!({"ok": false, "error": self.detail()})
    }

    /// One GraphQL error: `{"message", "extensions": {"code", "field"?, "retryAfter"?}}`.
    pub fn graphql_error(&self) -> Value {
        let mut extensions = json!({"code": self.code.as_str()});
        if let Some(field) = &self.field {
            extensions["field"] = json!(field);
        }
        if let Some(seconds) = self.retry_after {
            extensions["retryAfter"] = json!(seconds);
        }
        json!({"message": self.message, "extensions": extensions})
    }

    /// `{"errors": [ … ]}`, a GraphQL request that never ran.
    pub fn graphql_body(&self) -> Value {
        json!({"errors": [self.graphql_error()]})
    }

    /// The REST-shaped response, with `Retry-After` and `WWW-Authenticate` where they belong,
    /// ending with a newline as every REST reply does.
    pub fn rest_response(&self) -> Response {
        self.response(super::Json(self.rest_body()))
    }

    /// The GraphQL-shaped response, with the same headers (and no newline after it, as the
    /// GraphQL transport's other responses).
    pub fn graphql_response(&self) -> Response {
        self.response(axum::Json(self.graphql_body()))
    }

    fn response(&self, body: impl IntoResponse) -> Response {
        let status = self.status();
        let mut response = (status, body).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<&Error> for Problem {
    /// A domain error as the client sees it; internal detail goes to the log, here, once.
    fn from(error: &Error) -> Self {
        error.log_if_internal();
        Self {
            code: error.code(),
            message: error.to_string(),
            field: error.field().map(str::to_owned),
            retry_after: error.retry_after(),
            status: None,
        }
    }
}

impl From<Error> for Problem {
    fn from(error: Error) -> Self {
        Self::from(&error)
    }
}

/// How the original service's clients (REST bodies, Socket.IO events) name a field the GraphQL
/// API names `field`.
pub fn legacy_field(field: &str) -> &str {
    match field {
        "name" => "roomname",
        "body" => "message",
        "roomId" => "roomID",
        "messageId" => "messageID",
        "userId" => "userID",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_error_keeps_its_code_field_and_wait() {
        let problem = Problem::from(Error::rate_limited(
            "too many",
            std::time::Duration::from_millis(1_500),
        ));
        assert_eq!(problem.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            problem.rest_body(),
            json!({"error": {"code": "RATE_LIMITED", "message": "too many", "retryAfter": 2}})
        );
        assert_eq!(
            problem.graphql_error()["extensions"],
            json!({"code": "RATE_LIMITED", "retryAfter": 2})
        );
    }

    #[test]
    fn the_original_clients_field_names() {
        let problem = Problem::from(Error::invalid("body", "must not be blank")).in_legacy_names();
        assert_eq!(problem.field.as_deref(), Some("message"));
        assert_eq!(problem.message, "message: must not be blank");
        let problem = Problem::from(Error::invalid("roomId", "bad")).in_legacy_names();
        assert_eq!(problem.ack()["error"]["field"], "roomID");
        let problem = Problem::from(Error::invalid("limit", "bad")).in_legacy_names();
        assert_eq!(problem.field.as_deref(), Some("limit"));
    }

    #[test]
    fn internal_detail_never_leaves() {
        let problem = Problem::from(Error::internal("disk on fire at /var/secret"));
        assert_eq!(problem.message, "internal server error");
        assert_eq!(problem.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
