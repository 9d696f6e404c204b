//! The relay's Quantum identity: a Noise static key pair that clients pin.
//!
//! The private key lives in a file as 64 hex digits: `--quantum-key FILE` when given (it must
//! exist), otherwise [`DEFAULT_QUANTUM_KEY_FILE`] in the data directory, generated from the
//! operating system's random source on first start and written with mode 0600. A key file
//! that others may read is refused, as ssh refuses such a private key. The public key is
//! printed at start-up (`aetherflow quantum key: HEX`) and served by `GET /api/v1/quantum`.

use std::io::Write;
use std::path::{Path, PathBuf};

use aetherflow_quantum::crypto::{Keypair, Secret, from_hex, to_hex};
use rand::TryRngCore;
use rand::rngs::OsRng;

use crate::config::{Config, DEFAULT_QUANTUM_KEY_FILE};

/// Why the relay has no Quantum identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file named by --quantum-key does not exist.
    #[error(
        "quantum key file {0} not found (omit --quantum-key to generate one in the data directory)"
    )]
    Missing(PathBuf),
    /// The key file could not be read or written.
    #[error("quantum key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The key file does not hold 64 hex digits.
    #[error("quantum key file {0} must hold the private key as 64 hex digits")]
    Malformed(PathBuf),
    /// Group or others may read the key file.
    #[error("quantum key file {0} is readable by group or others; chmod 600 it")]
    Exposed(PathBuf),
    /// The operating system's random source failed.
    #[error("cannot generate a quantum key: {0}")]
    Random(String),
}

/// Loads the relay's key pair, generating the default file on first start.
pub fn load_or_create(config: &Config) -> Result<Keypair, IdentityError> {
    match &config.quantum_key {
        Some(path) if !path.exists() => Err(IdentityError::Missing(path.clone())),
        Some(path) => load(path),
        None => {
            let path = config.data_dir.join(DEFAULT_QUANTUM_KEY_FILE);
            if path.exists() {
                load(&path)
            } else {
                create(&path)
            }
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    }
}

fn load(path: &Path) -> Result<Keypair, IdentityError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(io(path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(IdentityError::Exposed(path.to_owned()));
        }
    }
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let secret = from_hex(&text).ok_or_else(|| IdentityError::Malformed(path.to_owned()))?;
    Ok(Keypair::from_secret(Secret::from_bytes(secret)))
}

fn create(path: &Path) -> Result<Keypair, IdentityError> {
    let mut secret = [0u8; 32];
    OsRng
        .try_fill_bytes(&mut secret)
        .map_err(|e| IdentityError::Random(e.to_string()))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(path))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io(path))?;
    writeln!(file, "{}", to_hex(&secret)).map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    Ok(Keypair::from_secret(Secret::from_bytes(secret)))
}

#[cfg(test)]
mod tests {
    use super::{IdentityError, load_or_create};
    use crate::config::{Config, Settings};

    fn config(dir: &std::path::Path, key: Option<std::path::PathBuf>) -> Config {
        Config::from_settings(Settings {
            data_dir: Some(dir.to_owned()),
            quantum_key: key,
            ..Settings::default()
        })
        .expect("valid settings")
    }

    #[test]
    fn the_key_is_generated_once_with_mode_0600_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = load_or_create(&config(dir.path(), None)).expect("generated");
        let again = load_or_create(&config(dir.path(), None)).expect("loaded");
        assert_eq!(first.public, again.public);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join("quantum.key");
            let mode = std::fs::metadata(&path).expect("file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            assert!(matches!(
                load_or_create(&config(dir.path(), None)),
                Err(IdentityError::Exposed(_))
            ));
        }
    }

    #[test]
    fn a_named_key_file_must_exist_and_hold_hex() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relay.key");
        assert!(matches!(
            load_or_create(&config(dir.path(), Some(path.clone()))),
            Err(IdentityError::Missing(_))
        ));
        std::fs::write(&path, "not hex").expect("write");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        assert!(matches!(
            load_or_create(&config(dir.path(), Some(path.clone()))),
            Err(IdentityError::Malformed(_))
        ));
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).expect("write");
        let keypair = load_or_create(&config(dir.path(), Some(path))).expect("loaded");
        assert_eq!(keypair.secret.as_bytes(), &[0xab; 32]);
    }
}
