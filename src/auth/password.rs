//! argon2id password hashing, off the async runtime.
//!
//! Hashing costs ~19 MiB and tens of milliseconds of CPU by design, so it runs on the blocking
//! pool behind a semaphore the size of the core count: a login burst queues here instead of
//! starving the runtime that serves sockets. An unknown username is checked against a dummy hash
//! so that the answer takes as long as for a known one.
//!
//! Each hash works in a 19 MiB block buffer taken from a pool and put back after, rather than
//! freshly allocated: with two hashes at once, mapping and zeroing 19 MiB per hash cost a third of
//! the throughput (measured: 71–89 hashes/s fresh, 114–118 reused, on 2 cores). The pool never
//! holds more buffers than hashes may run at once (one per core), and fills on first use.

use std::sync::{Arc, Mutex};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash, Salt},
};
use rand::RngCore;
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
    memory: Arc<Mutex<Vec<Vec<Block>>>>,
}

/// Salt bytes per hash, as the PHC format recommends.
const SALT_LEN: usize = 16;
/// Output bytes per hash.
const OUTPUT_LEN: usize = 32;
/// Most memory a stored hash may ask for, in 1 KiB blocks (256 MiB).
const MAX_BLOCKS: usize = 256 * 1024;

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
                memory: Arc::default(),
            }),
        }
    }

    /// Hashes a password into a PHC string.
    pub async fn hash(&self, password: &str) -> Result<String> {
        let password = password.to_owned();
        let params = self.inner.params.clone();
        self.blocking(move |memory| {
            let mut salt = [0u8; SALT_LEN];
            rand::rngs::OsRng.fill_bytes(&mut salt);
            let mut output = [0u8; OUTPUT_LEN];
            let (algorithm, version) = (Algorithm::Argon2id, Version::V0x13);
            argon2_into(
                algorithm,
                version,
                &params,
                password.as_bytes(),
                &salt,
                &mut output,
                memory,
            )?;
            let phc = PasswordHash {
                algorithm: algorithm.ident(),
                version: Some(version.into()),
                params: ParamsString::try_from(&params).map_err(hash_error)?,
                salt: Some(Salt::new(&salt).map_err(hash_error)?),
                hash: Some(Output::new(&output).map_err(hash_error)?),
            };
            Ok(phc.to_string())
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
            .blocking(move |memory| {
                let unreadable = |e: &dyn std::fmt::Display| {
                    Error::internal(format!("stored hash is unreadable: {e}"))
                };
                let parsed = PasswordHash::new(&hash).map_err(|e| unreadable(&e))?;
                // Everything comes from the PHC string, so old hashes keep verifying.
                let algorithm =
                    Algorithm::try_from(parsed.algorithm.as_str()).map_err(|e| unreadable(&e))?;
                let version = match parsed.version {
                    Some(v) => Version::try_from(v).map_err(|e| unreadable(&e))?,
                    None => Version::default(),
                };
                let params = Params::try_from(&parsed).map_err(|e| unreadable(&e))?;
                let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
                    return Err(unreadable(&"no salt or no hash"));
                };
                let mut output = vec![0u8; expected.len()];
                argon2_into(
                    algorithm,
                    version,
                    &params,
                    password.as_bytes(),
                    salt,
                    &mut output,
                    memory,
                )?;
                let computed = Output::new(&output).map_err(|e| unreadable(&e))?;
                // `Output`'s comparison takes constant time.
                Ok(&computed == expected)
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

    /// Runs `work` on the blocking pool with a block buffer from the pool.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Vec<Block>) -> Result<T> + Send + 'static,
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
        let pool = self.inner.memory.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut memory = pool
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop()
                .unwrap_or_default();
            let result = work(&mut memory);
            pool.lock().unwrap_or_else(|p| p.into_inner()).push(memory);
            result
        })
        .await
        .map_err(|e| Error::internal(format!("password task failed: {e}")))?
    }
}

/// Runs argon2 into `output`, in `memory` (grown to what `params` needs).
fn argon2_into(
    algorithm: Algorithm,
    version: Version,
    params: &Params,
    password: &[u8],
    salt: &[u8],
    output: &mut [u8],
    memory: &mut Vec<Block>,
) -> Result<()> {
    // A stored hash names its own memory cost; one past any sane setting is refused, not
    // allocated. The pooled buffer is not zeroed between hashes: argon2 overwrites every block
    // it reads before reading it.
    if params.block_count() > MAX_BLOCKS {
        return Err(Error::internal(format!(
            "a password hash asks for {} KiB of memory, more than {} KiB",
            params.block_count(),
            MAX_BLOCKS
        )));
    }
    if memory.len() < params.block_count() {
        memory.resize(params.block_count(), Block::default());
    }
    Argon2::new(algorithm, version, params.clone())
        .hash_password_into_with_memory(password, salt, output, memory.as_mut_slice())
        .map_err(|e| Error::internal(format!("argon2 failed: {e}")))
}

fn hash_error(e: impl std::fmt::Display) -> Error {
    Error::internal(format!("argon2 hash failed: {e}"))
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

    #[tokio::test]
    async fn hashes_stored_by_earlier_versions_still_verify() {
        // Made by Confab before block buffers were pooled (argon2 0.5, its own salt encoding).
        let stored = "$argon2id$v=19$m=19456,t=2,p=1$0y/YXMA5MlS8yv3Aa/zVaw$gfeOiqmFPljPdPJ2qvc4cDktyfHl+Xogw+D+l1PBJ4I";
        let passwords = Passwords::new();
        let check = |password: &'static str| {
            let passwords = passwords.clone();
            async move { passwords.verify(password, Some(stored)).await.unwrap() }
        };
        assert!(check("correct horse battery staple").await);
        assert!(!check("correct horse battery stapler").await);
        // Other parameters than today's are read from the string.
        let light = "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$lR+H0NoPLb7nl1tdGDwyPNTRlwmqXK9QZHVTz9yNZ5E";
        assert!(!passwords.verify("x", Some(light)).await.unwrap());
        assert!(
            passwords
                .verify("correct horse", Some("$argon2id$garbage"))
                .await
                .is_err()
        );
    }
}
