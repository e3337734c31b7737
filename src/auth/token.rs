//! Access tokens: HS256 JWTs with `sub`, `iat`, `exp`, `iss` and `aud`, algorithm pinned.

use std::{sync::Arc, time::Duration};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    model::{ObjectId, User, UserId},
};

const ISSUER: &str = "confab";
const AUDIENCE: &str = "confab";

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub user_id: UserId,
    /// Expiry, seconds since the Unix epoch.
    pub expires_at: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Jwt {
    sub: String,
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
        validation.leeway = 0;
        Self(Arc::new(Keys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }))
    }

    /// Issues a token for `user`, valid for the configured lifetime.
    pub fn issue(&self, user: &User) -> Result<String> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Jwt {
            sub: user.id.to_hex(),
            iat: now,
            exp: now + self.0.ttl.as_secs(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.0.encoding)
            .map_err(|e| Error::internal(format!("cannot sign a token: {e}")))
    }

    /// Verifies a token; the error is a reason safe to show the client.
    pub fn verify(&self, token: &str) -> Result<Claims, &'static str> {
        let data = jsonwebtoken::decode::<Jwt>(token, &self.0.decoding, &self.0.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired; log in again",
                _ => "the token is not valid",
            })?;
        let user_id = ObjectId::parse_str(&data.claims.sub)
            .map_err(|_| "the token is not valid")?
            .into();
        Ok(Claims {
            user_id,
            expires_at: data.claims.exp,
        })
    }
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
        let claims = tokens.verify(&tokens.issue(&user).unwrap()).unwrap();
        assert_eq!(claims.user_id, user.id);
    }

    #[test]
    fn other_keys_algorithms_and_expired_tokens_are_refused() {
        let tokens = Tokens::new(&[7; 32], Duration::from_secs(3600));
        let other = Tokens::new(&[8; 32], Duration::from_secs(3600));
        assert!(tokens.verify(&other.issue(&user()).unwrap()).is_err());

        let now = jsonwebtoken::get_current_timestamp();
        let claims = Jwt {
            sub: ObjectId::new().to_hex(),
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
            Err("the token has expired; log in again")
        );

        let hs512 =
            jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims, &tokens.0.encoding)
                .unwrap();
        assert!(tokens.verify(&hs512).is_err());
        assert!(tokens.verify("not.a.jwt").is_err());
    }
}
