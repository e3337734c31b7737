//! The key access tokens are signed with: the `--jwt-secret` flag's, or one Confab generates on
//! first start and keeps beside its data (mode 0600), so that tokens survive a restart.

use std::{io::Write as _, path::Path};

use anyhow::Context as _;

use crate::config::{ConfigError, Secret};

/// The JWT signing key, as startup finds it: ready (the flag's, the one kept in the data
/// directory, or a random one for a store in memory), or to be generated once the store is open.
/// Finding it writes nothing, so a start refused later leaves no key file behind.
pub enum SigningKey {
    Ready(Vec<u8>),
    /// No key yet: [`SigningKey::into_bytes`] generates one and keeps it at this path.
    ToCreate(std::path::PathBuf),
}

/// Finds the JWT signing key: the flag's, else the one kept in the data directory (`None` for a
/// store in memory: then a key for this process alone). Reads only.
pub fn signing_key(flag: Option<&Secret>, data_dir: Option<&Path>) -> anyhow::Result<SigningKey> {
    if let Some(secret) = flag {
        return Ok(SigningKey::Ready(secret.expose().as_bytes().to_vec()));
    }
    let Some(dir) = data_dir else {
        tracing::warn!(
            "no --jwt-secret given and the store is in memory: tokens are signed with a random key and end with this process"
        );
        return Ok(SigningKey::Ready(random_key().into_bytes()));
    };
    let path = dir.join("jwt-secret");
    Ok(match load_key(&path)? {
        Some(key) => SigningKey::Ready(key),
        None => SigningKey::ToCreate(path),
    })
}

impl SigningKey {
    /// The key's bytes, generating and keeping the key first when there is none yet.
    pub fn into_bytes(self) -> anyhow::Result<Vec<u8>> {
        match self {
            Self::Ready(key) => Ok(key),
            Self::ToCreate(path) => create_key(&path),
        }
    }
}

fn random_key() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The key kept at `path`, `None` when there is no file.
fn load_key(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read_to_string(path) {
        Ok(key) => {
            let key = key.trim();
            if key.len() < 32 {
                return Err(ConfigError(format!(
                    "{} holds a key shorter than 32 bytes",
                    path.display()
                ))
                .into());
            }
            tracing::warn!(
                "no --jwt-secret given: signing tokens with the key kept in {}",
                path.display()
            );
            Ok(Some(key.as_bytes().to_vec()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Generates a key and keeps it at `path` (mode 0600).
fn create_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let key = random_key();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(key.as_bytes())?;
    file.sync_all()?;
    tracing::warn!(
        "no --jwt-secret given: generated a signing key and kept it in {} (mode 0600)",
        path.display()
    );
    Ok(key.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("jwt-secret");
        assert!(
            load_key(&path).unwrap().is_none(),
            "finding a key writes nothing"
        );
        assert!(!path.exists());
        let first = signing_key(None, path.parent())
            .unwrap()
            .into_bytes()
            .unwrap();
        assert!(first.len() >= 32);
        assert_eq!(load_key(&path).unwrap(), Some(first.clone()));
        assert!(matches!(
            signing_key(None, path.parent()).unwrap(),
            SigningKey::Ready(key) if key == first
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
