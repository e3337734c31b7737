//! Authentication: password hashing, access tokens, and the [`Caller`] every transport hands
//! to the service.

mod password;
mod signing_key;
mod token;

pub use password::Passwords;
pub use signing_key::{SigningKey, signing_key};
pub use token::{Claims, Tokens, hash_refresh_token, new_refresh_token, refresh_token_session};

use std::net::IpAddr;

use crate::{
    error::{Error, Result},
    model::UserId,
};

/// The address a request came from, as the server's edge resolved it: the TCP peer, or the
/// client named by `X-Forwarded-For` when the peer is a trusted proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// What per-address limits count by: the IPv4 address, or the IPv6 /64 (one host is
    /// routinely given a whole /64, so counting single addresses would count nothing).
    pub fn rate_key(&self) -> String {
        match self.0.to_canonical() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        }
    }

    /// For callers with no network peer (tests, tools): the loopback address.
    pub fn local() -> Self {
        Self(IpAddr::from([127, 0, 0, 1]))
    }
}

/// The `User-Agent` a request or socket came with: kept with the session it signs in.
#[derive(Debug, Clone, Default)]
pub struct UserAgent(pub Option<String>);

/// Who is calling, as one transport's credentials said.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No credentials: only `register` and `login` are open.
    Anonymous,
    /// A valid access token.
    User(Claims),
    /// Credentials were sent but are not valid; the reason is safe to show the client.
    Invalid(&'static str),
    /// A valid token whose session could not be checked (the store did not answer): an
    /// internal error, not a reason to sign in again.
    Unavailable,
}

impl Caller {
    /// The authenticated user, or `UNAUTHENTICATED` saying why not.
    pub fn user(&self) -> Result<&Claims> {
        match self {
            Self::User(claims) => Ok(claims),
            Self::Anonymous => Err(Error::Unauthenticated(
                "sign in first: send Authorization: Bearer <token>".into(),
            )),
            Self::Invalid(why) => Err(Error::Unauthenticated((*why).into())),
            Self::Unavailable => Err(Error::internal(
                "a session could not be checked: the store did not answer",
            )),
        }
    }

    pub fn user_id(&self) -> Result<UserId> {
        self.user().map(|claims| claims.user_id)
    }

    /// Reads a caller from an `Authorization` value (`Bearer <token>`, or a bare token).
    pub fn from_authorization(tokens: &Tokens, value: Option<&str>) -> Self {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Self::Anonymous;
        };
        let token = match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            Some(_) => return Self::Invalid("the Authorization scheme must be Bearer"),
            None => value,
        };
        match tokens.verify(token) {
            Ok(claims) => Self::User(claims),
            Err(why) => Self::Invalid(why),
        }
    }
}
