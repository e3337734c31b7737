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
//!
//! Hashes can wait in per-client queues (a key, such as a client address): a key has at most one
//! hash waiting for a core or running at once, so a flood of logins from one address queues
//! behind itself and delays everyone else by at most one hash, instead of filling the shared
//! queue in front of them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use argon2::{
    Algorithm, Argon2, Block, Params, Version,
    password_hash::phc::{Output, ParamsString, PasswordHash, Salt},
};
use rand::RngCore;
use tokio::sync::{OnceCell, OwnedSemaphorePermit, Semaphore};

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
    queues: Arc<Queues>,
}

/// One single-file queue per key, kept while somebody waits in it or holds its turn.
#[derive(Default)]
struct Queues(Mutex<HashMap<String, Arc<Semaphore>>>);

/// A key's turn: while it is held, that key's next hash waits.
struct Turn {
    queues: Arc<Queues>,
    key: String,
    queue: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Queues {
    async fn turn(self: &Arc<Self>, key: String) -> Result<Turn> {
        let queue = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(1)))
            .clone();
        let permit = queue
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::internal("password queue closed"))?;
        Ok(Turn {
            queues: self.clone(),
            key,
            queue,
            permit: Some(permit),
        })
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.permit.take());
        let mut queues = self.queues.0.lock().unwrap_or_else(|p| p.into_inner());
        // The map's reference and ours: nobody waits in this queue any more.
        if Arc::strong_count(&self.queue) <= 2 {
            queues.remove(&self.key);
        }
    }
}

/// Salt bytes per hash, as the PHC format recommends.
const SALT_LEN: usize = 16;
/// Output bytes per hash.
const OUTPUT_LEN: usize = 32;
/// Most memory a stored hash may ask for, in 1 KiB blocks (256 MiB).
const MAX_BLOCKS: usize = 256 * 1024;

impl Passwords {
    /// OWASP's argon2id parameters: m = 19 MiB, t = 2, p = 1; one hash at a time per core.
    pub fn new() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_parallelism(cores)
    }

    /// At most `hashes` hashes at once.
    fn with_parallelism(hashes: usize) -> Self {
        let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
        let cores = hashes.max(1);
        Self {
            inner: Arc::new(Inner {
                params,
                permits: Arc::new(Semaphore::new(cores)),
                dummy: OnceCell::new(),
                memory: Arc::default(),
                queues: Arc::default(),
            }),
        }
    }

    /// Hashes a password into a PHC string, waiting in `queue`'s line when one is named.
    pub async fn hash(&self, password: &str, queue: Option<String>) -> Result<String> {
        let password = password.to_owned();
        let params = self.inner.params.clone();
        self.blocking(queue, move |memory| {
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
    /// dummy hash and answers `false`, taking as long as a real check. Waits in `queue`'s line
    /// when one is named.
    pub async fn verify(
        &self,
        password: &str,
        hash: Option<&str>,
        queue: Option<String>,
    ) -> Result<bool> {
        let (hash, known) = match hash {
            Some(hash) => (hash.to_owned(), true),
            None => (self.dummy().await?, false),
        };
        let password = password.to_owned();
        let matches = self
            .blocking(queue, move |memory| {
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
            .get_or_try_init(|| self.hash("confab-dummy-password", None))
            .await
            .cloned()
    }

    /// Runs `work` on the blocking pool with a block buffer from the pool, after `queue`'s
    /// earlier hash when one is named.
    async fn blocking<T: Send + 'static>(
        &self,
        queue: Option<String>,
        work: impl FnOnce(&mut Vec<Block>) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let turn = match queue {
            Some(key) => Some(self.inner.queues.turn(key).await?),
            None => None,
        };
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
            let _turn = turn;
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
        let hash = passwords.hash("correct horse", None).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            passwords
                .verify("correct horse", Some(&hash), None)
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify("wrong horse", Some(&hash), Some("10.0.0.1".into()))
                .await
                .unwrap()
        );
        assert!(!passwords.verify("correct horse", None, None).await.unwrap());
        assert!(passwords.inner.queues.0.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_in_one_queue_waits_behind_itself_not_in_front_of_others() {
        // One hash at a time, so the order hashes finish in is the order they were let in.
        let passwords = Passwords::with_parallelism(1);
        let hash = passwords.hash("correct horse", None).await.unwrap();
        let finished = Arc::new(Mutex::new(Vec::new()));
        let check = |who: &'static str| {
            let (passwords, hash, finished) = (passwords.clone(), hash.clone(), finished.clone());
            tokio::spawn(async move {
                let queue = Some(who.to_owned());
                passwords.verify("guess", Some(&hash), queue).await.unwrap();
                finished.lock().unwrap().push(who);
            })
        };
        // The core is busy until every request below is queued.
        let busy = passwords
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .unwrap();
        let flood: Vec<_> = (0..6).map(|_| check("flood")).collect();
        // Let every flood request reach its queue before the honest one arrives, and that one
        // reach its queue before the core is free.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let honest = check("honest");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(busy);
        honest.await.unwrap();
        for task in flood {
            task.await.unwrap();
        }
        let order = finished.lock().unwrap().clone();
        let at = order.iter().position(|who| *who == "honest").unwrap();
        // Behind at most the flood's hash that was running, not behind all six.
        assert!(at <= 1, "{order:?}");
    }

    #[tokio::test]
    async fn hashes_stored_by_earlier_versions_still_verify() {
        // Made by Confab before block buffers were pooled (argon2 0.5, its own salt encoding).
        let stored = "$argon2id$v=19$m=19456,t=2,p=1$0y/YXMA5MlS8yv3Aa/zVaw$gfeOiqmFPljPdPJ2qvc4cDktyfHl+Xogw+D+l1PBJ4I";
        let passwords = Passwords::new();
        let check = |password: &'static str| {
            let passwords = passwords.clone();
            async move {
                passwords
                    .verify(password, Some(stored), None)
                    .await
                    .unwrap()
            }
        };
        assert!(check("correct horse battery staple").await);
        assert!(!check("correct horse battery stapler").await);
        // Other parameters than today's are read from the string.
        let light = "$argon2id$v=19$m=64,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$lR+H0NoPLb7nl1tdGDwyPNTRlwmqXK9QZHVTz9yNZ5E";
        assert!(!passwords.verify("x", Some(light), None).await.unwrap());
        assert!(
            passwords
                .verify("correct horse", Some("$argon2id$garbage"), None)
                .await
                .is_err()
        );
    }
}
