//! The key access tokens are signed with: the `--jwt-secret` flag's, or one Confab generates on
//! first start and keeps beside its data (mode 0600), so that tokens survive a restart.

use std::{io::Write as _, path::Path};

use anyhow::Context as _;

use crate::config::{ConfigError, Secret};

/// The JWT signing key: the flag's, else one generated once and kept in the data directory
/// (`None` for a store in memory: then a key for this process alone).
pub fn signing_key(flag: Option<&Secret>, data_dir: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    if let Some(secret) = flag {
        return Ok(secret.expose().as_bytes().to_vec());
    }
    let Some(dir) = data_dir else {
        tracing::warn!(
            "no --jwt-secret given and the store is in memory: tokens are signed with a random key and end with this process"
        );
        return Ok(random_key().into_bytes());
    };
    load_or_create_key(&dir.join("jwt-secret"))
}

fn random_key() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn load_or_create_key(path: &Path) -> anyhow::Result<Vec<u8>> {
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
            Ok(key.as_bytes().to_vec())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
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
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("jwt-secret");
        let first = load_or_create_key(&path).unwrap();
        assert!(first.len() >= 32);
        assert_eq!(load_or_create_key(&path).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
