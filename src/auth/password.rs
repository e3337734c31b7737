//! argon2id password hashing, off the async runtime.
//!
//! Hashing costs ~19 MiB and tens of milliseconds of CPU by design, so it runs on the blocking
//! pool behind a semaphore the size of the core count: a login burst queues here instead of
//! starving the runtime that serves sockets. An unknown username is checked against a dummy hash
//! so that the answer takes as long as for a known one.

use std::sync::Arc;

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::{SaltString, rand_core::OsRng},
};
use tokio::sync::{OnceCell, Semaphore};

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Passwords {
    inner: Arc<Inner>,
}

struct Inner {
    params: Params,
    permits: Arc<Semaphore>,
    dummy: OnceCell<String>,
}

impl Passwords {
    /// OWASP's argon2id parameters: m = 19 MiB, t = 2, p = 1.
    pub fn new() -> Self {
        let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            inner: Arc::new(Inner {
                params,
                permits: Arc::new(Semaphore::new(cores)),
                dummy: OnceCell::new(),
            }),
        }
    }

    fn argon2(params: Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    /// Hashes a password into a PHC string.
    pub async fn hash(&self, password: &str) -> Result<String> {
        let password = password.to_owned();
        let params = self.inner.params.clone();
        self.blocking(move || {
            let salt = SaltString::generate(&mut OsRng);
            Self::argon2(params)
                .hash_password(password.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|e| Error::internal(format!("argon2 hash failed: {e}")))
        })
        .await
    }

    /// Checks a password against a stored hash; with `None` (no such user) it checks against a
    /// dummy hash and answers `false`, taking as long as a real check.
    pub async fn verify(&self, password: &str, hash: Option<&str>) -> Result<bool> {
        let (hash, known) = match hash {
            Some(hash) => (hash.to_owned(), true),
            None => (self.dummy().await?, false),
        };
        let password = password.to_owned();
        let matches = self
            .blocking(move || {
                let parsed = PasswordHash::new(&hash)
                    .map_err(|e| Error::internal(format!("stored hash is unreadable: {e}")))?;
                // The parameters come from the PHC string, so old hashes keep verifying.
                Ok(Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok())
            })
            .await?;
        Ok(known && matches)
    }

    async fn dummy(&self) -> Result<String> {
        self.inner
            .dummy
            .get_or_try_init(|| self.hash("confab-dummy-password"))
            .await
            .cloned()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::internal("password hashing is shut down"))?;
        // The permit moves into the blocking task: a hash whose request was abandoned still
        // holds its core until it ends, so at most `cores` hashes ever run at once.
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await
        .map_err(|e| Error::internal(format!("password task failed: {e}")))?
    }
}

impl Default for Passwords {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_use_owasp_argon2id() {
        let passwords = Passwords::new();
        let hash = passwords.hash("correct horse").await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            passwords
                .verify("correct horse", Some(&hash))
                .await
                .unwrap()
        );
        assert!(!passwords.verify("wrong horse", Some(&hash)).await.unwrap());
        assert!(!passwords.verify("correct horse", None).await.unwrap());
    }
}
