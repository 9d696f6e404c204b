//! The relay's own TLS certificate (`--tls-cert`, `--tls-key`): loaded at start-up, re-read
//! while the relay runs, and handed to each new connection's handshake.
//!
//! The files are read again every [`RELOAD_CHECK_EVERY`] and on SIGHUP. When their bytes
//! changed, the new pair is parsed and checked (the key must match the leaf certificate) and,
//! if good, used for every handshake from then on; connections already open keep the
//! certificate they were made with. A bad new pair (a half-written file, a key of another
//! certificate, unreadable PEM) leaves the old certificate in use and logs an error once, not
//! every check, so a certificate renewal that writes the two files one after the other only
//! uses the pair once both are written.
//!
//! Only the `ring` crypto provider is built in; the protocol versions are rustls's safe
//! defaults (TLS 1.2 and 1.3), and ALPN offers `http/1.1`, the only HTTP the relay speaks.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::TlsFiles;

/// How often the certificate files are checked for a change.
pub const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read (missing, no permission).
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not PEM, or holds none of what it should.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the pair: the key does not belong to the leaf certificate, or is of a
    /// kind the relay cannot sign with.
    #[error("the certificate {cert} and the key {key} cannot be used together: {source}")]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        source: rustls::Error,
    },
}

/// The certificate new connections are served with, swapped when the files change.
pub struct Certificate {
    files: TlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    /// The bytes of the last pair tried and, if it was refused, why: a pair is tried and an
    /// error logged only once.
    last_tried: Mutex<LastTried>,
}

/// The last reload attempt.
#[derive(Default)]
struct LastTried {
    files: Option<(Vec<u8>, Vec<u8>)>,
    error: Option<String>,
}

/// What a reload check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The files hold the pair in use (or the same bad pair as last time).
    Unchanged,
    /// A new certificate is in use.
    Reloaded(CertificateSummary),
    /// The files changed but cannot be used; the old certificate stays.
    Refused(String),
}

/// What the log says about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSummary {
    /// Certificates in the chain, the leaf first.
    pub chain_len: usize,
    /// SHA-256 of the leaf certificate (DER), hex with colons, as `openssl x509 -fingerprint
    /// -sha256` prints it.
    pub sha256: String,
    /// The leaf's subject common name and end of validity, when they could be read.
    pub validity: super::x509::Validity,
}

impl CertificateSummary {
    /// Logs the certificate now in use: `what` says why (start-up, reload).
    pub fn log(&self, cert: &Path, what: &str) {
        let subject = self.validity.subject_cn.as_deref().unwrap_or("-");
        let expires = self.validity.not_after.as_deref().unwrap_or("-");
        if self.validity.expired {
            warn!(cert = %cert.display(), subject, expires, sha256 = %self.sha256,
                "{what}: the TLS certificate has EXPIRED; clients will refuse it");
        } else {
            info!(cert = %cert.display(), subject, expires, chain = self.chain_len,
                sha256 = %self.sha256, "{what}");
        }
    }
}

impl Certificate {
    /// Reads and checks the pair named by `files`.
    pub fn load(files: TlsFiles) -> Result<(Certificate, CertificateSummary), TlsError> {
        let cert_pem = read(&files.cert)?;
        let key_pem = read(&files.key)?;
        let (config, summary) = server_config(&files, &cert_pem, &key_pem)?;
        let certificate = Certificate {
            files,
            current: RwLock::new(Arc::new(config)),
            last_tried: Mutex::new(LastTried {
                files: Some((cert_pem, key_pem)),
                error: None,
            }),
        };
        Ok((certificate, summary))
    }

    /// The certificate file, for logs.
    pub fn cert_path(&self) -> &Path {
        &self.files.cert
    }

    /// An acceptor for one new connection, with the certificate in use now.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        tokio_rustls::TlsAcceptor::from(config)
    }

    /// Re-reads the files and uses the new pair if it changed and is good. With `force` (on
    /// SIGHUP) an unchanged bad pair is reported again.
    pub async fn reload(&self, force: bool) -> Reload {
        let files = match (
            read_async(&self.files.cert).await,
            read_async(&self.files.key).await,
        ) {
            (Ok(cert), Ok(key)) => (cert, key),
            (Err(e), _) | (_, Err(e)) => return self.refused(None, e.to_string(), force),
        };
        let same = {
            let last = self.lock_last();
            last.files.as_ref() == Some(&files)
        };
        if same && !force {
            return Reload::Unchanged;
        }
        match server_config(&self.files, &files.0, &files.1) {
            Ok((config, summary)) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(config);
                *self.lock_last() = LastTried {
                    files: Some(files),
                    error: None,
                };
                Reload::Reloaded(summary)
            }
            Err(e) => self.refused(Some(files), e.to_string(), force),
        }
    }

    /// Records a refused pair; [`Reload::Unchanged`] if it was refused for the same reason
    /// last time (and not forced).
    fn refused(&self, files: Option<(Vec<u8>, Vec<u8>)>, why: String, force: bool) -> Reload {
        let mut last = self.lock_last();
        if !force && last.error.as_ref() == Some(&why) {
            return Reload::Unchanged;
        }
        if files.is_some() {
            last.files = files;
        }
        last.error = Some(why.clone());
        Reload::Refused(why)
    }

    fn lock_last(&self) -> std::sync::MutexGuard<'_, LastTried> {
        self.last_tried
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Checks the files every [`RELOAD_CHECK_EVERY`] and on SIGHUP until `shutdown`, logging
/// each change.
pub async fn watch(certificate: Arc<Certificate>, shutdown: CancellationToken) {
    let mut hangup = hangup_signal();
    loop {
        let force = tokio::select! {
            () = tokio::time::sleep(RELOAD_CHECK_EVERY) => false,
            Some(()) = next_hangup(&mut hangup) => true,
            () = shutdown.cancelled() => return,
        };
        match certificate.reload(force).await {
            Reload::Unchanged if force => info!(
                cert = %certificate.cert_path().display(),
                "SIGHUP: TLS certificate files unchanged"
            ),
            Reload::Unchanged => {}
            Reload::Reloaded(summary) => summary.log(
                certificate.cert_path(),
                "TLS certificate reloaded; new connections use it",
            ),
            Reload::Refused(why) => error!(
                cert = %certificate.cert_path().display(),
                error = %why,
                "new TLS certificate files not used; still serving the previous certificate"
            ),
        }
    }
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = ();

#[cfg(unix)]
fn hangup_signal() -> Hangup {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(e) => {
            error!(error = %e, "SIGHUP handler not installed; certificate files are still checked every few seconds");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangup_signal() -> Hangup {}

/// The next SIGHUP; never resolves without a handler.
#[cfg(unix)]
async fn next_hangup(hangup: &mut Hangup) -> Option<()> {
    match hangup {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangup) -> Option<()> {
    std::future::pending().await
}

/// Builds the rustls configuration of a certificate chain and key, both PEM.
fn server_config(
    files: &TlsFiles,
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<(ServerConfig, CertificateSummary), TlsError> {
    let pem_error = |path: &Path, what: String| TlsError::Pem {
        path: path.to_owned(),
        what,
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            pem_error(
                &files.cert,
                format!("not a valid PEM certificate chain: {e}"),
            )
        })?;
    let Some(leaf) = chain.first() else {
        return Err(pem_error(
            &files.cert,
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    };
    let summary = CertificateSummary {
        chain_len: chain.len(),
        sha256: fingerprint(leaf),
        validity: super::x509::validity(leaf),
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => pem_error(
            &files.key,
            "holds no private key (expected -----BEGIN PRIVATE KEY----- or an RSA/EC key)".into(),
        ),
        e => pem_error(&files.key, format!("not a valid PEM private key: {e}")),
    })?;
    let unusable = |source| TlsError::Unusable {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    let mut config = ServerConfig::builder_with_provider(Arc::new(crypto_provider()))
        .with_safe_default_protocol_versions()
        .map_err(unusable)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(unusable)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, summary))
}

/// rustls's `ring` provider. rustls 0.23.48 deprecated it for lacking post-quantum key
/// exchange (its `aws-lc-rs` provider has it); the relay keeps `ring`, which builds without
/// cmake in a fraction of the time, until rustls offers post-quantum key exchange with it.
#[allow(deprecated)]
pub(crate) fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// SHA-256 of a certificate, as `AB:CD:...`.
fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Reads a whole certificate or key file.
fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// [`read`], off the async threads.
async fn read_async(path: &Path) -> Result<Vec<u8>, TlsError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> (TlsFiles, String) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, signing_key.serialize_pem()).unwrap();
        (files, fingerprint(cert.der()))
    }

    #[tokio::test]
    async fn a_changed_pair_is_used_and_a_bad_one_keeps_the_old_certificate_logged_once() {
        let dir = tempfile::tempdir().unwrap();
        let (files, first) = write_pair(dir.path(), "first.test");
        let (certificate, summary) = Certificate::load(files.clone()).unwrap();
        assert_eq!(summary.sha256, first);
        assert_eq!(certificate.reload(false).await, Reload::Unchanged);

        // The key of another certificate: refused once, then quiet, and the old one stays.
        let other = tempfile::tempdir().unwrap();
        let (other_files, _) = write_pair(other.path(), "other.test");
        std::fs::copy(&other_files.key, &files.key).unwrap();
        let Reload::Refused(why) = certificate.reload(false).await else {
            panic!("a mismatched key must be refused");
        };
        assert!(why.contains("cannot be used together"), "{why}");
        assert_eq!(certificate.reload(false).await, Reload::Unchanged);
        assert!(matches!(certificate.reload(true).await, Reload::Refused(_)));

        let (_, second) = write_pair(dir.path(), "second.test");
        assert_eq!(
            certificate.reload(false).await,
            Reload::Reloaded(CertificateSummary {
                chain_len: 1,
                sha256: second,
                validity: crate::listener::x509::Validity {
                    subject_cn: Some("rcgen self signed cert".into()),
                    not_after: Some("4096-01-01 00:00:00 UTC".into()),
                    expired: false,
                },
            })
        );
    }

    #[test]
    fn missing_unreadable_or_empty_files_say_which_file_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = write_pair(dir.path(), "relay.test");
        let missing = TlsFiles {
            cert: dir.path().join("nope.pem"),
            key: files.key.clone(),
        };
        let err = Certificate::load(missing).err().unwrap().to_string();
        assert!(err.contains("nope.pem"), "{err}");

        std::fs::write(&files.cert, "not pem at all").unwrap();
        let err = Certificate::load(files.clone()).err().unwrap().to_string();
        assert!(
            err.contains("cert.pem") && err.contains("no certificate"),
            "{err}"
        );

        let (files, _) = write_pair(dir.path(), "relay.test");
        std::fs::write(&files.key, "").unwrap();
        let err = Certificate::load(files).err().unwrap().to_string();
        assert!(
            err.contains("key.pem") && err.contains("no private key"),
            "{err}"
        );
    }
}
