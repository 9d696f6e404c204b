//! A load-generating y-websocket client: connects (optionally from a chosen loopback source
//! address), completes the dialect's handshake and the initial sync, then hands out a sender
//! and a receiver half.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use aetherflow_crdt::protocol::{SyncMessage, encode_sync_step1, encode_sync_step2};
use anyhow::{Context, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::wire::{Dialect, Incoming};

/// Encoded empty state vector: "I have nothing".
const EMPTY_STATE_VECTOR: &[u8] = &[0];
/// Encoded empty v1 update: the step 2 a client with no content answers.
const EMPTY_UPDATE: &[u8] = &[0, 0];
/// Read buffer per client socket; frames larger than this still arrive, in several reads.
const CLIENT_READ_BUFFER: usize = 16 * 1024;
/// Token sent where the dialect wants one; the benchmark servers accept any.
const TOKEN: &str = "loadgen";

/// Where and how to reach the server under test.
#[derive(Debug, Clone)]
pub struct Target {
    /// WebSocket URL with `{doc}` where the document name goes (Hocuspocus: usually absent).
    pub url_template: String,
    /// The server's framing.
    pub dialect: Dialect,
    /// How long a handshake and initial sync may take.
    pub handshake_timeout: Duration,
}

/// The sending half of a synced connection.
pub type Sender = SplitSink<WebSocketStream<TcpStream>, Frame>;
/// The receiving half of a synced connection.
pub type Receiver = SplitStream<WebSocketStream<TcpStream>>;

/// One synced connection to one document.
pub struct Session {
    /// Document this session is subscribed to.
    pub doc: String,
    /// The server's framing.
    pub dialect: Dialect,
    socket: WebSocketStream<TcpStream>,
}

impl Target {
    /// The URL for `doc`.
    pub fn url(&self, doc: &str) -> String {
        self.url_template.replace("{doc}", doc)
    }

    /// The server's socket address, parsed from the URL (which must hold an IP literal).
    pub fn socket_addr(&self) -> anyhow::Result<SocketAddr> {
        let rest = self
            .url_template
            .strip_prefix("ws://")
            .context("only ws:// URLs are supported")?;
        let authority = rest.split('/').next().unwrap_or(rest);
        authority
            .parse()
            .with_context(|| format!("{authority} is not IP:PORT"))
    }
}

impl Session {
    /// Connects to `doc` from `source` (any local address when `None`) and completes the
    /// handshake and initial sync within the target's timeout.
    pub async fn open(target: &Target, doc: &str, source: Option<IpAddr>) -> anyhow::Result<Self> {
        Ok(Self::open_with_state(target, doc, source).await?.0)
    }

    /// As [`Session::open`], and also returns the update of the server's sync step 2: the
    /// document as the server held it when this client joined.
    pub async fn open_with_state(
        target: &Target,
        doc: &str,
        source: Option<IpAddr>,
    ) -> anyhow::Result<(Self, Vec<u8>)> {
        tokio::time::timeout(
            target.handshake_timeout,
            Self::open_inner(target, doc, source),
        )
        .await
        .with_context(|| format!("handshake with {doc} timed out"))?
    }

    /// Opens `docs` over one connection (Hocuspocus only: y-websocket has one document per
    /// connection) and completes each one's handshake and initial sync in turn; the session
    /// is named after the first.
    pub async fn open_documents(
        target: &Target,
        docs: &[String],
        source: Option<IpAddr>,
    ) -> anyhow::Result<Self> {
        let (first, rest) = docs.split_first().context("no document to open")?;
        if !rest.is_empty() && target.dialect != Dialect::Hocuspocus {
            bail!("only Hocuspocus carries several documents over one connection");
        }
        tokio::time::timeout(target.handshake_timeout, async {
            let (mut session, _) = Self::open_inner(target, first, source).await?;
            for doc in rest {
                session.doc = doc.clone();
                session.sync().await?;
            }
            session.doc = first.clone();
            Ok(session)
        })
        .await
        .with_context(|| format!("handshake with {} documents timed out", docs.len()))?
    }

    async fn open_inner(
        target: &Target,
        doc: &str,
        source: Option<IpAddr>,
    ) -> anyhow::Result<(Self, Vec<u8>)> {
        let addr = target.socket_addr()?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(ip) = source {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        // tungstenite zero-fills its whole read buffer (128 KiB by default) on every read; with
        // thousands of client sockets in this process that would be gigabytes for nothing.
        let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
        let (socket, _) =
            tokio_tungstenite::client_async_with_config(target.url(doc), stream, Some(config))
                .await?;
        let mut session = Session {
            doc: doc.to_owned(),
            dialect: target.dialect,
            socket,
        };
        let state = session.sync().await?;
        Ok((session, state))
    }

    /// Sends the dialect's hello and our step 1, answers the server's step 1, and returns the
    /// update of the server's step 2 once it has arrived.
    async fn sync(&mut self) -> anyhow::Result<Vec<u8>> {
        if let Some(hello) = self.dialect.hello(&self.doc, TOKEN) {
            self.socket.send(Frame::Binary(hello.into())).await?;
        }
        let step1 = self.frame(&encode_sync_step1(EMPTY_STATE_VECTOR));
        self.socket.send(step1).await?;
        while let Some(frame) = self.socket.next().await {
            let Frame::Binary(bytes) = frame? else {
                continue;
            };
            // Another document's traffic on a shared connection is not this handshake's.
            if self.dialect == Dialect::Hocuspocus && !self.dialect.is_for(&bytes, &self.doc) {
                continue;
            }
            match self.dialect.decode(&bytes)? {
                Incoming::Sync(SyncMessage::Step1(_)) => {
                    let step2 = self.frame(&encode_sync_step2(EMPTY_UPDATE));
                    self.socket.send(step2).await?;
                }
                Incoming::Sync(SyncMessage::Step2(update)) => return Ok(update),
                Incoming::Denied(reason) => bail!("server denied {}: {reason}", self.doc),
                Incoming::Sync(SyncMessage::Update(_)) | Incoming::Authenticated => {}
                Incoming::Other => {}
            }
        }
        bail!("server closed {} during the handshake", self.doc)
    }

    /// Wraps a y-protocols message for this session's document and dialect.
    pub fn frame(&self, message: &[u8]) -> Frame {
        Frame::Binary(self.dialect.frame(&self.doc, message).into())
    }

    /// Sends one y-protocols message for this session's document.
    pub async fn send_message(&mut self, message: &[u8]) -> anyhow::Result<()> {
        let frame = self.frame(message);
        self.socket.send(frame).await?;
        Ok(())
    }

    /// Splits the session into its sending and receiving halves.
    pub fn split(self) -> (Sender, Receiver) {
        self.socket.split()
    }
}

/// Loopback source addresses `127.0.0.1 ..= 127.0.0.n`, so that tens of thousands of
/// connections to one server port do not exhaust one source address's ephemeral ports.
pub fn loopback_sources(n: u8) -> Vec<IpAddr> {
    (1..=n.max(1))
        .map(|i| IpAddr::from([127, 0, 0, i]))
        .collect()
}
