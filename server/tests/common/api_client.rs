//! Clients for the `/api/v1` routes beyond plain JSON: raw bodies, Server-Sent Events, the
//! live WebSocket channel, and tokens.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;

use aetherflow_server::auth::{Claims, Permission};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use super::TIMEOUT;

pub const SECRET: &str = "integration-secret";

pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token for `sub` on `docs`, expiring at `exp` (seconds), signed with `secret`.
pub fn token_signed(secret: &str, sub: &str, docs: &[&str], perm: Permission, exp: u64) -> String {
    let claims = Claims {
        sub: sub.into(),
        docs: docs.iter().map(|d| d.to_string()).collect(),
        perm,
        exp,
    };
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

/// A valid token for 10 minutes, signed with [`SECRET`].
pub fn token(sub: &str, docs: &[&str], perm: Permission) -> String {
    token_signed(SECRET, sub, docs, perm, now_s() + 600)
}

/// One HTTP/1.1 request with a raw body; returns (status, content type, body bytes).
pub async fn http_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head[9..12].parse().unwrap();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .unwrap_or_default();
    (status, content_type, response[split + 4..].to_vec())
}

/// A Server-Sent Events listener (HTTP/1.0, so the body is not chunked).
pub struct SseClient {
    reader: BufReader<TcpStream>,
}

impl SseClient {
    /// Opens the stream; returns the status and, on 200, the listener after the relay's
    /// `: subscribed` comment (so every later event reaches it). On an error status, the
    /// body is returned as JSON.
    pub async fn open(
        addr: SocketAddr,
        path: &str,
        bearer: Option<&str>,
    ) -> Result<SseClient, (u16, Value)> {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let auth = bearer
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Accept: text/event-stream\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).await.unwrap();
        let status: u16 = status_line[9..12].parse().unwrap();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        if status != 200 {
            let mut body = String::new();
            reader.read_to_string(&mut body).await.unwrap();
            return Err((status, serde_json::from_str(&body).unwrap()));
        }
        let mut client = SseClient { reader };
        loop {
            let line = client
                .line()
                .await
                .expect("stream ended before subscribing");
            if line.starts_with(": subscribed") {
                return Ok(client);
            }
        }
    }

    async fn line(&mut self) -> Option<String> {
        let mut line = String::new();
        let n = tokio::time::timeout(TIMEOUT, self.reader.read_line(&mut line))
            .await
            .expect("timed out waiting for an SSE line")
            .unwrap();
        (n > 0).then(|| line.trim_end_matches(['\r', '\n']).to_owned())
    }

    /// The next event as (name, data); `None` when the stream ends.
    pub async fn next_event(&mut self) -> Option<(String, Value)> {
        let mut name = String::new();
        let mut data = String::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() && !data.is_empty() {
                return Some((name, serde_json::from_str(&data).unwrap()));
            }
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_owned();
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            }
        }
    }

    /// Skips events until one of type `kind`; returns its data.
    pub async fn wait_for(&mut self, kind: &str) -> Value {
        loop {
            let (name, data) = self
                .next_event()
                .await
                .unwrap_or_else(|| panic!("stream ended before a {kind} event"));
            assert_eq!(
                data["type"],
                name.as_str(),
                "the SSE name is the event type"
            );
            if name == kind {
                return data;
            }
        }
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A client of the live register channel.
pub struct LiveClient {
    pub socket: Socket,
    /// The relay's first message (`type: state`).
    pub state: Value,
}

impl LiveClient {
    pub fn url(addr: SocketAddr, doc: &str, token: Option<&str>) -> String {
        let query = token.map(|t| format!("?token={t}")).unwrap_or_default();
        format!("ws://{addr}/api/v1/docs/{doc}/live{query}")
    }

    pub async fn connect(addr: SocketAddr, doc: &str, token: Option<&str>) -> LiveClient {
        let (socket, _) = tokio_tungstenite::connect_async(LiveClient::url(addr, doc, token))
            .await
            .unwrap();
        let mut client = LiveClient {
            socket,
            state: Value::Null,
        };
        client.state = client.next().await;
        assert_eq!(client.state["type"], "state", "{}", client.state);
        client
    }

    pub async fn send(&mut self, request: Value) {
        self.send_text(request.to_string()).await;
    }

    pub async fn send_text(&mut self, text: String) {
        self.socket.send(Frame::Text(text.into())).await.unwrap();
    }

    /// The next JSON message; panics on close or timeout.
    pub async fn next(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(TIMEOUT, self.socket.next())
                .await
                .expect("timed out waiting for a live message")
                .expect("connection ended")
                .expect("connection error");
            match frame {
                Frame::Text(text) => return serde_json::from_str(text.as_str()).unwrap(),
                Frame::Close(close) => panic!("closed by relay: {close:?}"),
                _ => {}
            }
        }
    }

    /// Skips messages until one of type `kind`.
    pub async fn wait_for(&mut self, kind: &str) -> Value {
        loop {
            let message = self.next().await;
            if message["type"] == kind {
                return message;
            }
        }
    }

    /// Waits for the relay to close the connection; returns the close frame.
    pub async fn expect_close(&mut self) -> CloseFrame {
        loop {
            let frame = tokio::time::timeout(TIMEOUT, self.socket.next())
                .await
                .expect("timed out waiting for the close frame");
            match frame {
                Some(Ok(Frame::Close(Some(close)))) => return close,
                Some(Ok(_)) => {}
                other => panic!("no close frame: {other:?}"),
            }
        }
    }
}
