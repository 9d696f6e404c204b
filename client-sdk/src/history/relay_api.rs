//! The relay's HTTP API, as the SDK reaches it: where it is (a pure reading of the configured
//! WebSocket URL, [`ApiBase`]) and one request at a time over hyper's HTTP/1.1 client
//! ([`RelayApi`]), TLS through the same rustls configuration as `wss://`.
//!
//! Each request opens its own connection (history calls are rare next to the sync traffic)
//! and has one deadline for everything: resolving, connecting, the TLS handshake, sending and
//! reading the whole answer, which is read only up to [`super::MAX_ANSWER_BYTES`].

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tracing::debug;

use super::MAX_ANSWER_BYTES;
use crate::config::ClientConfig;
use crate::error::{ClientError, TransportError};

/// Longest stretch of a non-JSON error answer kept in [`ClientError::Relay`]'s message.
const MAX_MESSAGE_CHARS: usize = 200;

/// Where the relay's HTTP API is: the WebSocket URL's host and port, `http` for `ws://` and
/// `https` for `wss://`, and its path (a reverse proxy's prefix) in front of `/api/v1`, as
/// the WebSocket transport puts it in front of `/ws`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiBase {
    /// `https` (from `wss://`) rather than `http`.
    pub tls: bool,
    /// The host as the certificate names it: a DNS name or an IP address (no brackets).
    pub host: String,
    /// The port: the URL's, or 80/443.
    pub port: u16,
    /// `host[:port]` as the URL wrote it, for the `Host` header.
    pub authority: String,
    /// The URL's path without its trailing `/` (empty for none).
    pub prefix: String,
}

impl ApiBase {
    /// Reads the relay's WebSocket base URL (`ws://HOST[:PORT][/PREFIX]`, `wss://...`; `http`
    /// and `https` are taken too). The error says what is wrong.
    pub fn parse(url: &str) -> Result<ApiBase, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?} is not a ws:// or wss:// URL"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "ws" | "http" => false,
            "wss" | "https" => true,
            _ => return Err(format!("{url:?} is not a ws:// or wss:// URL")),
        };
        if rest.contains(['?', '#']) {
            return Err(format!(
                "{url:?} has a query or fragment; give the base URL"
            ));
        }
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if authority.is_empty() || authority.contains('@') {
            return Err(format!("{url:?} needs a host (and no user info)"));
        }
        let (host, port) = split_authority(authority)
            .ok_or_else(|| format!("{url:?} has no valid host and port"))?;
        Ok(ApiBase {
            tls,
            host,
            port: port.unwrap_or(if tls { 443 } else { 80 }),
            authority: authority.to_owned(),
            prefix: path.trim_end_matches('/').to_owned(),
        })
    }
}

/// `host` and the port, if any, of `authority` (`[v6]:port` included); `None` if malformed.
fn split_authority(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?),
            };
            (host, port)
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(digits) => Some(digits.parse::<u16>().ok()?),
        None => None,
    };
    (!host.is_empty()).then(|| (host.to_owned(), port))
}

/// The relay's HTTP API for one client: where it is, the token, the TLS trust, the deadline.
pub(crate) struct RelayApi {
    base: ApiBase,
    token: Option<String>,
    timeout: Duration,
    /// Extra trusted certificate authorities (PEM), as for `wss://`.
    tls_roots: Vec<Vec<u8>>,
    /// The TLS configuration, built on the first `https` request (reading the platform's
    /// roots takes a while).
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

/// Without the token: a [`crate::History`] handle may end up in a log.
impl std::fmt::Debug for RelayApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayApi")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RelayApi {
    /// The API of the relay `config` syncs with over WebSocket; the error says why there is
    /// none (no WebSocket URL, or not a usable one).
    pub fn from_config(config: &ClientConfig) -> Result<RelayApi, String> {
        let url = config.websocket_url.as_deref().ok_or_else(|| {
            "no relay WebSocket URL is configured (ClientConfig::websocket); the HTTP API is \
             at the same address"
                .to_owned()
        })?;
        Ok(RelayApi {
            base: ApiBase::parse(url)?,
            token: config.token.clone(),
            timeout: config.http_timeout,
            tls_roots: config.tls_root_certificates.clone(),
            tls: OnceLock::new(),
        })
    }

    /// The request path for `path` (starting with `/api/v1/`), behind the URL's prefix.
    fn path(&self, path: &str) -> String {
        format!("{}{path}", self.base.prefix)
    }

    /// Sends one request (a JSON body if given) and returns the body of a 2xx answer; any
    /// other status is [`ClientError::Relay`] with the relay's error code.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
    ) -> Result<Bytes, ClientError> {
        let path = self.path(path);
        debug!(%method, %path, "relay API request");
        let exchange = self.exchange(method, &path, json);
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Request(TransportError::Timeout))??;
        if status.is_success() {
            Ok(body)
        } else {
            Err(refusal(status, &body))
        }
    }

    /// Connects (TLS for `https`) and makes the exchange.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let connect = |e: std::io::Error| {
            ClientError::Request(TransportError::Connect(format!(
                "{}:{}: {e}",
                self.base.host, self.base.port
            )))
        };
        let tcp = TcpStream::connect((self.base.host.as_str(), self.base.port))
            .await
            .map_err(connect)?;
        let request = self.request(method, path, json)?;
        if !self.base.tls {
            return exchange_on(tcp, request, MAX_ANSWER_BYTES).await;
        }
        let config = self
            .tls
            .get_or_init(|| crate::tls::client_config(&self.tls_roots).map_err(|e| e.to_string()))
            .clone()
            .map_err(|e| ClientError::Request(TransportError::Tls(e)))?;
        let name = rustls::pki_types::ServerName::try_from(self.base.host.clone())
            .map_err(|e| ClientError::Request(TransportError::Tls(e.to_string())))?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| ClientError::Request(tls_failure(e)))?;
        exchange_on(tls, request, MAX_ANSWER_BYTES).await
    }

    /// The request: `Host`, the token as `Authorization: Bearer`, the JSON body if any.
    fn request(
        &self,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, self.base.authority.as_str())
            .header(
                header::USER_AGENT,
                concat!("aetherflow-client/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match json {
            Some(json) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(json))
            }
            None => Full::new(Bytes::new()),
        };
        // A document name is percent-encoded and a token is a JWT: only a token with bytes a
        // header cannot hold fails here.
        request
            .body(body)
            .map_err(|e| ClientError::Request(TransportError::Connect(e.to_string())))
    }
}

/// One HTTP/1.1 exchange on `stream`; the body read up to `limit` bytes.
async fn exchange_on<S>(
    stream: S,
    request: Request<Full<Bytes>>,
    limit: u64,
) -> Result<(StatusCode, Bytes), ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let http = |e: hyper::Error| ClientError::Request(TransportError::Connect(e.to_string()));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let driver = tokio::spawn(connection);
    let answer = read_answer(sender.send_request(request), limit).await;
    driver.abort();
    answer
}

/// The status and whole body of the answer `response` resolves to, at most `limit` bytes;
/// refused before reading when its `Content-Length` is over the limit.
async fn read_answer(
    response: impl Future<Output = Result<hyper::Response<hyper::body::Incoming>, hyper::Error>>,
    limit: u64,
) -> Result<(StatusCode, Bytes), ClientError> {
    let http = |e: hyper::Error| ClientError::Request(TransportError::Connect(e.to_string()));
    let too_large = || ClientError::AnswerTooLarge { limit };
    let response = response.await.map_err(http)?;
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    let status = response.status();
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    let body = Limited::new(response.into_body(), cap)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                too_large()
            } else {
                ClientError::Request(TransportError::Connect(e.to_string()))
            }
        })?;
    Ok((status, body.to_bytes()))
}

/// A failed TLS handshake says why (the rustls error), like `wss://`'s.
fn tls_failure(e: std::io::Error) -> TransportError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => TransportError::Tls(tls.to_string()),
        None => TransportError::Connect(format!("TLS: {e}")),
    }
}

/// The relay's JSON error `{ "error": { "code", "message" } }` as [`ClientError::Relay`];
/// any other body keeps its start as the message.
pub(crate) fn refusal(status: StatusCode, body: &[u8]) -> ClientError {
    #[derive(serde::Deserialize)]
    struct Body {
        error: Detail,
    }
    #[derive(serde::Deserialize)]
    struct Detail {
        code: String,
        message: String,
    }
    let (code, message) = match serde_json::from_slice::<Body>(body) {
        Ok(Body { error }) => (error.code, error.message),
        Err(_) => (
            String::new(),
            String::from_utf8_lossy(body)
                .chars()
                .take(MAX_MESSAGE_CHARS)
                .collect(),
        ),
    };
    ClientError::Relay {
        status: status.as_u16(),
        code,
        message,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn base(url: &str) -> ApiBase {
        ApiBase::parse(url).unwrap()
    }

    #[test]
    fn the_api_is_at_the_websocket_urls_host_port_and_prefix_over_http_or_https() {
        let plain = base("ws://127.0.0.1:8080");
        assert_eq!(
            (
                plain.tls,
                plain.host.as_str(),
                plain.port,
                plain.prefix.as_str()
            ),
            (false, "127.0.0.1", 8080, "")
        );
        let tls = base("wss://relay.example/collab/");
        assert_eq!(
            (tls.tls, tls.host.as_str(), tls.port, tls.prefix.as_str()),
            (true, "relay.example", 443, "/collab")
        );
        assert_eq!(tls.authority, "relay.example");
        let v6 = base("WS://[::1]:9/");
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.authority.as_str()),
            ("::1", 9, "[::1]:9")
        );
        assert_eq!(base("http://h").port, 80);
    }

    #[test]
    fn urls_that_name_no_relay_are_refused_with_a_reason() {
        for url in [
            "",
            "relay:8080",
            "ftp://relay",
            "ws://",
            "ws://:80",
            "ws://relay:http",
            "ws://relay:70000",
            "ws://[::1",
            "ws://[::1]x",
            "ws://user@relay",
            "ws://relay/?token=x",
        ] {
            let err = ApiBase::parse(url).unwrap_err();
            assert!(err.contains(url), "{url}: {err}");
        }
    }

    /// The answer `raw` to one request through [`exchange_on`] with a `limit`-byte cap.
    async fn answer(raw: &'static [u8], limit: u64) -> Result<(StatusCode, Bytes), ClientError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ = server.read(&mut request).await;
            let _ = server.write_all(raw).await;
            // Keep the stream open: a missing end must not pass for a complete answer.
            let _ = server.read(&mut request).await;
        });
        let request = Request::get("/x").body(Full::new(Bytes::new())).unwrap();
        exchange_on(client, request, limit).await
    }

    #[tokio::test]
    async fn answers_over_the_limit_are_refused_declared_or_chunked() {
        let declared = b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\nhello world";
        let (status, body) = answer(declared, 11).await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello world"[..]));
        let err = answer(declared, 10).await.unwrap_err();
        assert!(
            matches!(err, ClientError::AnswerTooLarge { limit: 10 }),
            "{err}"
        );
        // No length announced: the cap stops the reading.
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
            6\r\nhello \r\n6\r\nworld!\r\n";
        let err = answer(chunked, 10).await.unwrap_err();
        assert!(
            matches!(err, ClientError::AnswerTooLarge { limit: 10 }),
            "{err}"
        );
        let garbage = b"SMTP ready\r\n\r\n";
        let err = answer(garbage, 10).await.unwrap_err();
        assert!(matches!(err, ClientError::Request(_)), "{err}");
    }

    #[test]
    fn the_token_stays_out_of_debug_output() {
        let config = ClientConfig::new("unused")
            .websocket("ws://relay:1")
            .token("secret-token");
        let api = RelayApi::from_config(&config).unwrap();
        let shown = format!("{api:?}");
        assert!(
            !shown.contains("secret-token") && shown.contains("redacted"),
            "{shown}"
        );
    }

    #[test]
    fn error_answers_keep_the_relays_code_and_anything_else_its_start() {
        let body = br#"{"error":{"code":"read_only","message":"this token is read-only"}}"#;
        match refusal(StatusCode::FORBIDDEN, body) {
            ClientError::Relay {
                status,
                code,
                message,
            } => assert_eq!(
                (status, code.as_str(), message.as_str()),
                (403, "read_only", "this token is read-only")
            ),
            other => panic!("{other}"),
        }
        let page = "<html>bad gateway</html>".repeat(100);
        match refusal(StatusCode::BAD_GATEWAY, page.as_bytes()) {
            ClientError::Relay {
                status,
                code,
                message,
            } => {
                assert_eq!((status, code.as_str()), (502, ""));
                assert!(page.starts_with(&message) && message.chars().count() == 200);
            }
            other => panic!("{other}"),
        }
        assert!(matches!(
            refusal(StatusCode::NOT_FOUND, &[0xff, 0xfe]),
            ClientError::Relay { status: 404, .. }
        ));
    }
}
