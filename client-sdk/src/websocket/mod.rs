//! The WebSocket transport: one y-websocket connection per document at `{base}/ws/{doc}`, and
//! one live channel (`{base}/api/v1/docs/{doc}/live`, JSON) per register document (see
//! the `live` module). `wss://` URLs connect over TLS (see the `tls` module).

mod live;

use std::sync::{Arc, OnceLock};

use aetherflow_crdt::protocol::{Limits, Message};
use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::debug;

use crate::error::TransportError;
use crate::transport::{Link, RegisterLink, Transport, TransportKind};

/// Messages buffered per direction before the sender waits.
const LINK_BUFFER: usize = 256;

/// A WebSocket connection to the relay, plain or TLS.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects documents over the relay's WebSocket endpoint.
#[derive(Clone)]
pub struct WebSocketTransport {
    base: String,
    token: Option<String>,
    limits: Limits,
    /// Extra trusted certificate authorities (PEM) for `wss://`.
    tls_roots: Vec<Vec<u8>>,
    /// The TLS configuration, built on the first `wss://` connection (reading the platform's
    /// roots takes a while) and shared by clones.
    tls: Arc<OnceLock<Result<Arc<rustls::ClientConfig>, String>>>,
}

/// Shown without the token, so a transport may be logged.
impl std::fmt::Debug for WebSocketTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocketTransport")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("limits", &self.limits)
            .field("tls_roots", &self.tls_roots.len())
            .finish_non_exhaustive()
    }
}

impl WebSocketTransport {
    /// A transport for the relay at `base` (`ws://HOST:PORT`, or `wss://HOST` for TLS with
    /// the platform's root certificates), sending `token` if given.
    pub fn new(base: impl Into<String>, token: Option<String>) -> WebSocketTransport {
        WebSocketTransport {
            base: base.into().trim_end_matches('/').to_owned(),
            token,
            limits: Limits::default(),
            tls_roots: Vec::new(),
            tls: Arc::new(OnceLock::new()),
        }
    }

    /// Also trusts these certificate authorities (PEM) for `wss://` (see
    /// [`crate::ClientConfig::tls_root_certificate`]).
    pub fn tls_root_certificates(mut self, pems: Vec<Vec<u8>>) -> WebSocketTransport {
        self.tls_roots = pems;
        self.tls = Arc::new(OnceLock::new());
        self
    }

    /// Opens a WebSocket at `url` (token included): TLS for `wss://`. A failed TLS
    /// handshake is [`TransportError::Tls`], an HTTP answer instead of the upgrade
    /// [`TransportError::Refused`].
    pub(crate) async fn open(&self, url: &str) -> Result<Socket, TransportError> {
        let connector = if is_tls(url) {
            let config = self
                .tls
                .get_or_init(|| {
                    crate::tls::client_config(&self.tls_roots).map_err(|e| e.to_string())
                })
                .clone()
                .map_err(TransportError::Tls)?;
            Some(Connector::Rustls(config))
        } else {
            None
        };
        // TCP_NODELAY: an edit is a small frame that must leave at once.
        let (socket, _) =
            tokio_tungstenite::connect_async_tls_with_config(url, None, true, connector)
                .await
                .map_err(connect_error)?;
        Ok(socket)
    }

    /// The URL document `doc` connects to (without the token, so it can be logged).
    pub fn url(&self, doc: &str) -> String {
        format!("{}/ws/{}", self.base, encode_path_segment(doc))
    }

    /// The URL of register document `doc`'s live channel (without the token).
    pub fn live_url(&self, doc: &str) -> String {
        format!(
            "{}/api/v1/docs/{}/live",
            self.base,
            encode_path_segment(doc)
        )
    }

    /// `url` with the token appended, if there is one.
    fn with_token(&self, mut url: String) -> String {
        if let Some(token) = &self.token {
            url.push_str("?token=");
            url.push_str(&encode_path_segment(token));
        }
        url
    }
}

/// Percent-encodes everything but unreserved characters, so any valid document name is one
/// path segment.
pub(crate) fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Whether `url` asks for TLS.
fn is_tls(url: &str) -> bool {
    url.get(..6)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("wss://"))
}

/// A refusal by the relay (an HTTP answer instead of the upgrade) keeps its status and the
/// relay's error code; a failed TLS handshake says why; anything else is a connection
/// failure.
fn connect_error(e: tokio_tungstenite::tungstenite::Error) -> TransportError {
    if let Some(reason) = crate::tls::handshake_failure(&e) {
        return TransportError::Tls(reason);
    }
    let tokio_tungstenite::tungstenite::Error::Http(response) = e else {
        return TransportError::Connect(e.to_string());
    };
    let body = response.body().as_deref().unwrap_or_default();
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|json| json["error"]["code"].as_str().map(str::to_owned));
    let reason = code.unwrap_or_else(|| {
        String::from_utf8_lossy(body)
            .chars()
            .take(120)
            .collect::<String>()
    });
    TransportError::Refused {
        status: response.status().as_u16(),
        reason,
    }
}

impl Transport for WebSocketTransport {
    fn connect<'a>(&'a self, doc: &'a str) -> BoxFuture<'a, Result<Link, TransportError>> {
        Box::pin(async move {
            let socket = self.open(&self.with_token(self.url(doc))).await?;
            let (out_tx, out_rx) = mpsc::channel::<Message>(LINK_BUFFER);
            let (in_tx, in_rx) = mpsc::channel::<Message>(LINK_BUFFER);
            tokio::spawn(pump(socket, out_rx, in_tx, self.limits));
            Ok(Link {
                kind: TransportKind::WebSocket,
                outgoing: out_tx,
                incoming: in_rx,
            })
        })
    }

    fn connect_register<'a>(
        &'a self,
        doc: &'a str,
    ) -> BoxFuture<'a, Result<RegisterLink, TransportError>> {
        Box::pin(live::connect(self, self.with_token(self.live_url(doc))))
    }
}

/// Moves messages between the link's channels and the socket until either side ends.
async fn pump(
    socket: Socket,
    mut out_rx: mpsc::Receiver<Message>,
    in_tx: mpsc::Sender<Message>,
    limits: Limits,
) {
    let (mut sink, mut stream) = socket.split();
    loop {
        tokio::select! {
            outgoing = out_rx.recv() => {
                let Some(message) = outgoing else { break };
                if sink.send(Frame::Binary(message.encode().into())).await.is_err() {
                    break;
                }
            }
            incoming = stream.next() => match incoming {
                Some(Ok(Frame::Binary(bytes))) => match Message::decode(&bytes, &limits) {
                    Ok(message) => {
                        if in_tx.send(message).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        debug!(error = %e, "undecodable frame from the relay");
                        break;
                    }
                },
                Some(Ok(Frame::Close(close))) => {
                    debug!(?close, "relay closed the connection");
                    break;
                }
                // Pings are answered by tungstenite itself.
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    debug!(error = %e, "connection lost");
                    break;
                }
                None => break,
            },
        }
    }
    let _ = sink.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_names_are_one_path_segment() {
        let transport = WebSocketTransport::new("ws://127.0.0.1:1/", None);
        assert_eq!(transport.url("notes"), "ws://127.0.0.1:1/ws/notes");
        assert_eq!(
            transport.url("a b?#é"),
            "ws://127.0.0.1:1/ws/a%20b%3F%23%C3%A9"
        );
    }
}
