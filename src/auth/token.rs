//! Access tokens: HS256 JWTs with `sub`, `sid` (the session), `iat`, `exp`, `iss` and `aud`,
//! algorithm pinned; and refresh tokens: `<session id>.<256 random bits>`, opaque to clients and
//! stored only as their SHA-256.

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    model::{ObjectId, SessionId, User, UserId},
    store::TokenHash,
};

const ISSUER: &str = "confab";
const AUDIENCE: &str = "confab";

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub user_id: UserId,
    /// The session it was issued for: revoking the session refuses the token.
    pub session_id: SessionId,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Jwt {
    sub: String,
    sid: String,
    iat: u64,
    exp: u64,
    iss: String,
    aud: String,
}

/// Issues and verifies access tokens. Cheap to clone: every connection holds one, and the keys
/// and validation rules are shared.
#[derive(Clone)]
pub struct Tokens(Arc<Keys>);

struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl Tokens {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["sub", "exp", "iat", "iss", "aud"]);
        // `sid` is required too: `Jwt` has no default for it, so a token without one (issued
        // before sessions existed) does not decode.
        validation.leeway = 0;
        Self(Arc::new(Keys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }))
    }

    /// How long an access token lives.
    pub fn ttl(&self) -> Duration {
        self.0.ttl
    }

    /// Issues a token for `user` in `session`, valid for the configured lifetime; returns it
    /// with its expiry (seconds since the Unix epoch).
    pub fn issue(&self, user: &User, session: SessionId) -> Result<(String, u64)> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Jwt {
            sub: user.id.to_hex(),
            sid: session.to_hex(),
            iat: now,
            exp: now + self.0.ttl.as_secs(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let expires_at = claims.exp;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.0.encoding)
            .map(|token| (token, expires_at))
            .map_err(|e| Error::internal(format!("cannot sign a token: {e}")))
    }

    /// Verifies a token; the error is a reason safe to show the client.
    pub fn verify(&self, token: &str) -> Result<Claims, &'static str> {
        let data = jsonwebtoken::decode::<Jwt>(token, &self.0.decoding, &self.0.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => {
                    "the access token has expired; renew it with refreshSession, or sign in again"
                }
                _ => "the token is not valid",
            })?;
        let user_id = ObjectId::parse_str(&data.claims.sub)
            .map_err(|_| "the token is not valid")?
            .into();
        let session_id = ObjectId::parse_str(&data.claims.sid)
            .map_err(|_| "the token is not valid")?
            .into();
        Ok(Claims {
            user_id,
            session_id,
            expires_at: data.claims.exp,
        })
    }
}

/// A new refresh token for `session`, and the hash to store.
pub fn new_refresh_token(session: SessionId) -> (String, TokenHash) {
    use base64::Engine as _;
    let secret: [u8; 32] = rand::random();
    let token = format!(
        "{}.{}",
        session.to_hex(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let hash = hash_refresh_token(&token);
    (token, hash)
}

/// What a refresh token is stored as.
pub fn hash_refresh_token(token: &str) -> TokenHash {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).into()
}

/// The session a presented refresh token names, if it has the shape of one.
pub fn refresh_token_session(token: &str) -> Option<SessionId> {
    let (session, secret) = token.split_once('.')?;
    if session.len() != 24 || secret.len() != 43 {
        return None;
    }
    ObjectId::parse_str(session).ok().map(SessionId::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn user() -> User {
        User {
            id: ObjectId::new().into(),
            username: "ada".into(),
            created_at: Utc::now(),
        }
    }

    #[test]
    fn round_trip() {
        let tokens = Tokens::new(&[7; 32], Duration::from_secs(3600));
        let user = user();
        let session = SessionId::from(ObjectId::new());
        let (token, _) = tokens.issue(&user, session).unwrap();
        let claims = tokens.verify(&token).unwrap();
        assert_eq!((claims.user_id, claims.session_id), (user.id, session));
    }

    #[test]
    fn other_keys_algorithms_and_expired_tokens_are_refused() {
        let tokens = Tokens::new(&[7; 32], Duration::from_secs(3600));
        let other = Tokens::new(&[8; 32], Duration::from_secs(3600));
        let session = SessionId::from(ObjectId::new());
        assert!(
            tokens
                .verify(&other.issue(&user(), session).unwrap().0)
                .is_err()
        );

        let now = jsonwebtoken::get_current_timestamp();
        let claims = Jwt {
            sub: ObjectId::new().to_hex(),
            sid: ObjectId::new().to_hex(),
            iat: now - 100,
            exp: now - 10,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        let expired =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &tokens.0.encoding)
                .unwrap();
        assert_eq!(
            tokens.verify(&expired),
            Err("the access token has expired; renew it with refreshSession, or sign in again")
        );

        let hs512 =
            jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &tokens.0.encoding)
                .unwrap();
        assert!(tokens.verify(&hs512).is_err());
        assert!(tokens.verify("not.a.jwt").is_err());
    }

    #[test]
    fn refresh_tokens_name_their_session_and_hash_apart() {
        let session = SessionId::from(ObjectId::new());
        let (one, hash) = new_refresh_token(session);
        let (two, other) = new_refresh_token(session);
        assert_eq!(refresh_token_session(&one), Some(session));
        assert_eq!(hash_refresh_token(&one), hash);
        assert_ne!((one, hash), (two, other));
        assert_eq!(refresh_token_session("nonsense"), None);
        assert_eq!(refresh_token_session(&format!("{session}.short")), None);
    }
}
