//! Who is calling, read the same way on every transport, and how long a socket may stay open.
//!
//! - HTTP (GraphQL, REST, a WebSocket upgrade, a Socket.IO handshake): `Authorization: Bearer
//!   <token>` ([`from_headers`]).
//! - graphql-ws `connection_init`: `{"authorization": "Bearer <token>"}`, `{"Authorization": …}`,
//!   `{"token": "<token>"}`, or the same under `"headers"` ([`from_init_payload`]).
//! - Socket.IO handshake: `auth: {"token": "<token>"}`, else the header ([`from_handshake`]).
//!
//! A socket lives as long as the session its token names, not the token: it closes when the
//! session is revoked or ends (see `service::sessions`), on every transport.

use axum::http::{HeaderMap, header};
use serde_json::Value;

use crate::auth::{Caller, Tokens, UserAgent};

/// The `User-Agent` header, when it is text.
pub fn user_agent(headers: &HeaderMap) -> UserAgent {
    UserAgent(
        headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    )
}

/// The caller an `Authorization` header names: anonymous without one.
pub fn from_headers(tokens: &Tokens, headers: &HeaderMap) -> Caller {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    Caller::from_authorization(tokens, value)
}

/// The caller a `connection_init` payload names; without a token in it, `otherwise` (the
/// caller the upgrade request's header named).
pub fn from_init_payload(tokens: &Tokens, payload: Option<&Value>, otherwise: Caller) -> Caller {
    let from = |object: &Value| {
        ["authorization", "Authorization", "token"]
            .iter()
            .find_map(|key| object.get(*key).and_then(Value::as_str).map(str::to_owned))
    };
    let token =
        payload.and_then(|payload| from(payload).or_else(|| payload.get("headers").and_then(from)));
    match token {
        Some(value) => Caller::from_authorization(tokens, Some(&value)),
        None => otherwise,
    }
}

/// The caller a Socket.IO handshake names: `auth.token`, else the `Authorization` header.
pub fn from_handshake(tokens: &Tokens, auth: Option<&Value>, headers: &HeaderMap) -> Caller {
    let token = auth
        .and_then(|auth| auth.get("token"))
        .and_then(Value::as_str);
    match token {
        Some(token) => Caller::from_authorization(tokens, Some(token)),
        None => from_headers(tokens, headers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use std::time::Duration;

    fn tokens() -> Tokens {
        Tokens::new(&[7; 32], Duration::from_secs(3600))
    }

    fn token(tokens: &Tokens) -> String {
        let user = crate::model::User {
            id: crate::model::ObjectId::new().into(),
            username: "ada".into(),
            created_at: chrono::Utc::now(),
        };
        tokens
            .issue(&user, crate::model::ObjectId::new().into())
            .unwrap()
            .0
    }

    #[test]
    fn every_accepted_init_payload_signs_in() {
        let tokens = tokens();
        let token = token(&tokens);
        for payload in [
            json!({"authorization": format!("Bearer {token}")}),
            json!({"Authorization": format!("Bearer {token}")}),
            json!({"token": token}),
            json!({"headers": {"Authorization": format!("Bearer {token}")}}),
        ] {
            let caller = from_init_payload(&tokens, Some(&payload), Caller::Anonymous);
            assert!(matches!(caller, Caller::User(_)), "{payload}");
        }
        assert!(matches!(
            from_init_payload(&tokens, Some(&json!({})), Caller::Anonymous),
            Caller::Anonymous
        ));
        assert!(matches!(
            from_init_payload(
                &tokens,
                Some(&json!({"token": "nonsense"})),
                Caller::Anonymous
            ),
            Caller::Invalid(_)
        ));
    }

    #[test]
    fn a_handshake_prefers_auth_then_the_header() {
        let tokens = tokens();
        let token = token(&tokens);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        let caller = from_handshake(&tokens, Some(&json!({"token": "nonsense"})), &headers);
        assert!(matches!(caller, Caller::Invalid(_)));
        let caller = from_handshake(&tokens, None, &headers);
        assert!(matches!(caller, Caller::User(_)));
    }
}
