//! TLS for `wss://` relay URLs: rustls (`ring` provider) trusting the platform's root
//! certificates (the system store, read once per transport) plus the certificate authorities
//! given with [`crate::ClientConfig::tls_root_certificate`].
//!
//! A certificate the client does not trust, or one that does not name the host of the URL,
//! fails the connection with [`crate::TransportError::Tls`]; the document's
//! [`crate::SyncState::denied`] says so, and the client keeps retrying with its backoff (the
//! relay's certificate may be replaced).

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use tracing::debug;

/// A certificate authority given to the client cannot be used: what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub(crate) struct BadRoots {
    /// What is wrong.
    pub reason: String,
}

/// The certificates in `pem` (one or more `-----BEGIN CERTIFICATE-----` blocks).
pub(crate) fn parse_roots(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, BadRoots> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BadRoots {
            reason: format!("not valid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(BadRoots {
            reason: "no -----BEGIN CERTIFICATE----- block".into(),
        });
    }
    Ok(certs)
}

/// A rustls client configuration trusting the platform's roots and `extra_roots_pem`.
pub(crate) fn client_config(extra_roots_pem: &[Vec<u8>]) -> Result<Arc<ClientConfig>, BadRoots> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        debug!(error = %e, "a platform root certificate store could not be read");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    debug!(added, ignored, "platform root certificates loaded");
    for pem in extra_roots_pem {
        for cert in parse_roots(pem)? {
            roots.add(cert).map_err(|e| BadRoots {
                reason: e.to_string(),
            })?;
        }
    }
    let config = ClientConfig::builder_with_provider(Arc::new(crypto_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| BadRoots {
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// rustls's `ring` provider, which rustls 0.23.48 deprecated for lacking post-quantum key
/// exchange; kept (like the relay) because it builds without cmake, in a fraction of the time.
#[allow(deprecated)]
fn crypto_provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// The rustls error inside a WebSocket connection error, if the TLS handshake failed.
pub(crate) fn handshake_failure(e: &tokio_tungstenite::tungstenite::Error) -> Option<String> {
    use tokio_tungstenite::tungstenite::Error;
    match e {
        Error::Tls(tls) => Some(tls.to_string()),
        Error::Io(io) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .map(ToString::to_string),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn text_that_holds_no_certificate_is_a_config_error_not_a_silent_empty_trust() {
        for pem in [
            &b""[..],
            b"hello",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let err = client_config(&[pem.to_vec()]).unwrap_err();
            assert!(!err.reason.is_empty(), "{err}");
        }
        let broken = b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        let err = client_config(&[broken.to_vec()]).unwrap_err();
        assert!(err.to_string().contains("not valid PEM"), "{err}");
    }
}
