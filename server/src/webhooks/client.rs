//! One delivery attempt: sign the body, connect to the checked addresses, `POST`, read the
//! status. Redirects are not followed (a 3xx is a failed attempt) and the whole attempt,
//! resolving included, has one deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aetherflow_crdt::webhook::{self, ATTEMPT_HEADER, EVENT_HEADER, ID_HEADER, SIGNATURE_HEADER};
use axum::body::Body;
use axum::http::{Request, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::target::{Target, TargetError};

/// Why an attempt failed; the text is kept on the outbox row for the admin.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    /// The URL is refused or does not resolve.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// No connection could be made, or TLS failed.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The HTTP exchange failed.
    #[error("request failed: {0}")]
    Http(String),
    /// The receiver answered, but not 2xx (a redirect included: redirects are not followed).
    #[error("answered {0}")]
    Status(u16),
    /// The document's content (asked for by the endpoint) could not be read.
    #[error("cannot read the document's content: {0}")]
    Content(String),
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// HMAC-SHA256 of `"{timestamp}.{body}"` under `secret`, as the signature header's value.
pub fn signature(secret: &str, timestamp_secs: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, &webhook::signed_payload(timestamp_secs, body));
    format!("t={timestamp_secs},v1={}", webhook::to_hex(tag.as_ref()))
}

/// What one attempt sends.
pub struct Attempt<'a> {
    /// Where.
    pub target: &'a Target,
    /// The endpoint's signing secret.
    pub secret: &'a str,
    /// The event's idempotency id.
    pub id: &'a str,
    /// The event type.
    pub kind: &'a str,
    /// Which attempt this is, from 1.
    pub number: u32,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// How attempts connect.
#[derive(Clone)]
pub struct Client {
    /// Whether private addresses may be reached (`--webhook-allow-private-addresses`).
    pub allow_private: bool,
    /// The deadline of one attempt.
    pub timeout: Duration,
    /// TLS settings for `https://` endpoints: the platform's trusted roots.
    pub tls: Arc<rustls::ClientConfig>,
}

impl Client {
    /// A client trusting the platform's root certificates.
    pub fn new(allow_private: bool, timeout: Duration) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        let loaded = rustls_native_certs::load_native_certs();
        for error in &loaded.errors {
            tracing::warn!(%error, "a platform root certificate could not be loaded");
        }
        let (added, _) = roots.add_parsable_certificates(loaded.certs);
        tracing::debug!(roots = added, "webhook TLS roots loaded");
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            crate::listener::tls::crypto_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
        .unwrap_or_else(|_| {
            // The ring provider supports the default versions; keep an empty config if not.
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        });
        Client {
            allow_private,
            timeout,
            tls: Arc::new(tls),
        }
    }

    /// Sends one attempt; `Ok` when the receiver answered 2xx.
    pub async fn send(&self, attempt: Attempt<'_>) -> Result<(), AttemptError> {
        match tokio::time::timeout(self.timeout, self.exchange(attempt)).await {
            Ok(result) => result,
            Err(_) => Err(AttemptError::Timeout(self.timeout)),
        }
    }

    async fn exchange(&self, attempt: Attempt<'_>) -> Result<(), AttemptError> {
        let target = attempt.target;
        let addrs = target.resolve(self.allow_private).await?;
        let tcp = connect(&addrs).await?;
        if target.https {
            let name = rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| AttemptError::Connect(e.to_string()))?;
            let tls = TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| AttemptError::Connect(format!("TLS: {e}")))?;
            post(tls, attempt).await
        } else {
            post(tcp, attempt).await
        }
    }
}

async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, AttemptError> {
    let mut last = String::from("no address");
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = format!("{addr}: {e}"),
        }
    }
    Err(AttemptError::Connect(last))
}

async fn post<S>(stream: S, attempt: Attempt<'_>) -> Result<(), AttemptError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: hyper::Error| AttemptError::Http(e.to_string());
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let driver = tokio::spawn(connection);
    let timestamp = crate::wall_clock::now_ms() / 1000;
    let signed = signature(attempt.secret, timestamp, &attempt.body);
    let request = Request::post(attempt.target.path.as_str())
        .header(header::HOST, attempt.target.authority.as_str())
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            concat!("AetherFlow-Webhooks/", env!("CARGO_PKG_VERSION")),
        )
        .header(ID_HEADER, attempt.id)
        .header(EVENT_HEADER, attempt.kind)
        .header(ATTEMPT_HEADER, attempt.number)
        .header(SIGNATURE_HEADER, signed)
        .body(Body::from(attempt.body))
        .map_err(|e| AttemptError::Http(e.to_string()))?;
    let answer = sender.send_request(request).await.map_err(http);
    driver.abort();
    let status = answer?.status();
    match status.is_success() {
        true => Ok(()),
        false => Err(AttemptError::Status(status.as_u16())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_documented_recipe() {
        // Python's hmac.new(b"whsec_test", b'1700000000.{"id":"x"}', hashlib.sha256), as the
        // README's verification snippet computes it.
        assert_eq!(
            signature("whsec_test", 1_700_000_000, br#"{"id":"x"}"#),
            "t=1700000000,v1=80e8d098018f757aa814ab1abb924f35d304affa1d93d29611a54696207eb7c3"
        );
    }
}
