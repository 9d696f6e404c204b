//! The tokio runtime driver: Quantum over a real UDP socket.
//!
//! [`Endpoint::bind`] opens a socket and spawns one task that owns it together with the sans-IO
//! [`crate::Endpoint`]. The task sleeps until a datagram arrives, a handle sends a command, or
//! the core's [`crate::Endpoint::poll_timeout`] passes; it reads the clock, feeds the core, and
//! sends what the core produced, batched with GSO where the kernel offers it (received
//! datagrams are batched with `recvmmsg`/GRO likewise, through quinn-udp). [`Endpoint`] and
//! [`Connection`] are cheap handles that talk to the task over channels.
//!
//! The crate root re-exports them as [`QuantumEndpoint`](crate::QuantumEndpoint) and
//! [`QuantumConnection`](crate::QuantumConnection), so they do not shadow the core's types.
//!
//! ```no_run
//! use aetherflow_quantum::crypto::Keypair;
//! use aetherflow_quantum::{DriverConfig, QuantumEndpoint};
//!
//! # async fn demo() -> Result<(), aetherflow_quantum::DriverError> {
//! // In production the relay loads its key from a file (a seeded key is for examples only),
//! // and clients pin its public half.
//! let relay = Keypair::from_seed(7);
//! let mut server_config = DriverConfig::default();
//! server_config.quantum.accept_incoming = true;
//! server_config.quantum.static_secret = Some(relay.secret.clone());
//! let server = QuantumEndpoint::bind("127.0.0.1:0".parse().unwrap(), server_config).await?;
//! let server_addr = server.local_addr();
//! tokio::spawn(async move {
//!     while let Some(conn) = server.accept().await {
//!         // Echo every message back.
//!         while let Ok(Some(message)) = conn.recv().await {
//!             if conn.send(message).await.is_err() {
//!                 break;
//!             }
//!         }
//!     }
//! });
//!
//! let mut client_config = DriverConfig::default();
//! client_config.quantum.server_public_key = Some(relay.public);
//! let client = QuantumEndpoint::bind("127.0.0.1:0".parse().unwrap(), client_config).await?;
//! let conn = client.connect(server_addr).await?;
//! conn.send(&b"hello"[..]).await?;
//! assert_eq!(conn.recv().await?.as_deref(), Some(&b"hello"[..]));
//! conn.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! Dropping every handle of a connection closes it gracefully; [`Endpoint::close`] resets all
//! of an endpoint's connections at once and stops its task. When every handle is gone the
//! task closes what is left gracefully and stops after [`DriverConfig::linger`].

mod io;
mod task;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rand::TryRngCore;
use rand::rngs::OsRng;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, ConfigError};
use crate::connection::{CloseReason, ConnectionStats, SendError};
use crate::endpoint::EndpointStats;
use crate::packet::ConnectionId;

use task::{Command, Delivery};

/// Sends `command` to the endpoint task and waits for its reply; either side gone means the
/// endpoint is closed.
async fn request<T>(
    commands: &mpsc::UnboundedSender<Command>,
    command: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, DriverError> {
    let (reply, response) = oneshot::channel();
    commands
        .send(command(reply))
        .map_err(|_| DriverError::EndpointClosed)?;
    response.await.map_err(|_| DriverError::EndpointClosed)
}

/// Settings of a driven endpoint: the core's [`Config`] plus what only the driver knows.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The protocol settings. A `seed` of 0 and an all-zero `cookie_key` (the defaults) are
    /// replaced with values drawn from the operating system's random source at bind time.
    pub quantum: Config,
    /// How long [`Endpoint::connect`] waits for the handshake before giving up.
    pub handshake_timeout: Duration,
    /// Bytes a connection may hold queued or unacknowledged before [`Connection::send`] waits.
    /// One message is always admitted when nothing is outstanding, however large.
    pub send_buffer: usize,
    /// How long the task goes on closing connections gracefully after every handle is gone.
    pub linger: Duration,
}

impl Default for DriverConfig {
    fn default() -> DriverConfig {
        DriverConfig {
            quantum: Config::default(),
            handshake_timeout: Duration::from_secs(5),
            send_buffer: 4 << 20,
            linger: Duration::from_secs(2),
        }
    }
}

/// What can go wrong when driving Quantum.
#[derive(Debug, Error)]
pub enum DriverError {
    /// Binding or configuring the UDP socket failed.
    #[error("udp socket: {0}")]
    Io(#[from] std::io::Error),
    /// The protocol settings are inconsistent.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The operating system's random source failed.
    #[error("random source: {0}")]
    Random(String),
    /// No handshake answer came from `remote` within the configured handshake timeout.
    #[error("no answer from {remote} within {timeout:?}")]
    HandshakeTimeout {
        /// Where we tried to connect.
        remote: SocketAddr,
        /// The configured handshake timeout.
        timeout: Duration,
    },
    /// The connection ended for the given reason (reset, idle timeout, abort...).
    #[error("connection lost: {0}")]
    ConnectionLost(CloseReason),
    /// The connection was closed locally; nothing more can be sent on it.
    #[error("connection is closed")]
    Closed,
    /// The message exceeds [`Config::max_message_size`].
    #[error("message of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// The message's length.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The endpoint was closed, or its task stopped.
    #[error("endpoint is closed")]
    EndpointClosed,
}

impl From<SendError> for DriverError {
    fn from(error: SendError) -> DriverError {
        match error {
            SendError::Closed => DriverError::Closed,
            SendError::TooLarge { len, max } => DriverError::TooLarge { len, max },
        }
    }
}

/// Counters of a driven endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// The core's counters (malformed datagrams, unknown connections, retries, accepts).
    pub endpoint: EndpointStats,
    /// Connections the core holds.
    pub connections: usize,
    /// Datagrams received from the socket.
    pub datagrams_received: u64,
    /// Datagrams handed to the socket.
    pub datagrams_sent: u64,
    /// Receive system calls that returned data; fewer than datagrams when batching works.
    pub receive_calls: u64,
    /// Send system calls; fewer than datagrams when GSO works.
    pub send_calls: u64,
    /// Sends the kernel refused (the datagrams were dropped and are repaired by the protocol).
    pub send_errors: u64,
    /// Datagrams one send call may carry (1 without GSO).
    pub max_gso_segments: usize,
}

/// A Quantum endpoint bound to a UDP socket. Cheap to clone; see the module docs.
#[derive(Debug, Clone)]
pub struct Endpoint {
    inner: Arc<EndpointInner>,
}

#[derive(Debug)]
struct EndpointInner {
    commands: mpsc::UnboundedSender<Command>,
    incoming: tokio::sync::Mutex<mpsc::UnboundedReceiver<Connection>>,
    local_addr: Mutex<SocketAddr>,
}

/// Fills in the seed and the cookie key the caller left at their defaults.
fn randomize(config: &mut Config) -> Result<(), DriverError> {
    let random = |e: rand::rand_core::OsError| DriverError::Random(e.to_string());
    while config.seed == 0 {
        config.seed = OsRng.try_next_u64().map_err(random)?;
    }
    if config.cookie_key == [0; 16] {
        OsRng
            .try_fill_bytes(&mut config.cookie_key)
            .map_err(random)?;
    }
    Ok(())
}

impl Endpoint {
    /// Binds a UDP socket at `addr` (port 0 picks a free one) and starts the driver task.
    /// Must be called within a tokio runtime.
    pub async fn bind(addr: SocketAddr, mut config: DriverConfig) -> Result<Endpoint, DriverError> {
        randomize(&mut config.quantum)?;
        config.quantum.validate()?;
        let socket = std::net::UdpSocket::bind(addr)?;
        let (commands, incoming, local_addr) = task::spawn(socket, config)?;
        Ok(Endpoint {
            inner: Arc::new(EndpointInner {
                commands,
                incoming: tokio::sync::Mutex::new(incoming),
                local_addr: Mutex::new(local_addr),
            }),
        })
    }

    /// The address the socket is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        *self
            .inner
            .local_addr
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DriverError> {
        request(&self.inner.commands, command).await
    }

    /// Opens a connection to `remote`; resolves once the handshake completes, or fails after
    /// [`DriverConfig::handshake_timeout`] or when the connection is reset.
    pub async fn connect(&self, remote: SocketAddr) -> Result<Connection, DriverError> {
        self.request(|reply| Command::Connect { remote, reply })
            .await?
    }

    /// The next incoming connection whose handshake completed; `None` once the endpoint is
    /// closed. Only endpoints whose [`Config::accept_incoming`] is set receive any.
    pub async fn accept(&self) -> Option<Connection> {
        self.inner.incoming.lock().await.recv().await
    }

    /// Moves the endpoint to a new socket bound at `addr`, as when a device changes network;
    /// its connections continue once their peers have validated the new address. Returns the
    /// new local address.
    pub async fn rebind(&self, addr: SocketAddr) -> Result<SocketAddr, DriverError> {
        let socket = std::net::UdpSocket::bind(addr)?;
        let local = self
            .request(|reply| Command::Rebind { socket, reply })
            .await??;
        *self
            .inner
            .local_addr
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = local;
        Ok(local)
    }

    /// Counters of the endpoint and its socket.
    pub async fn stats(&self) -> Result<DriverStats, DriverError> {
        self.request(|reply| Command::EndpointStats { reply }).await
    }

    /// Resets every connection, sends the resets, and stops the task. Handles then report
    /// [`DriverError::EndpointClosed`] or the connection's [`CloseReason::LocalAbort`].
    pub async fn close(&self) {
        let _ = self.request(|reply| Command::Shutdown { reply }).await;
    }
}

/// One Quantum connection. Cheap to clone; the connection closes gracefully when the last
/// clone is dropped.
#[derive(Debug, Clone)]
pub struct Connection {
    inner: Arc<ConnectionInner>,
}

#[derive(Debug)]
struct ConnectionInner {
    id: ConnectionId,
    commands: mpsc::UnboundedSender<Command>,
    deliveries: tokio::sync::Mutex<Receiver>,
    remote: Arc<Mutex<SocketAddr>>,
}

/// The receiving end of a connection, with the way it ended once known.
#[derive(Debug)]
struct Receiver {
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    /// `None` after a graceful end, the reason otherwise.
    ended: Option<Option<CloseReason>>,
}

impl Drop for ConnectionInner {
    fn drop(&mut self) {
        // The task may already be gone, in which case there is nothing left to close.
        let _ = self.commands.send(Command::Dropped { id: self.id });
    }
}

impl Connection {
    fn new(
        id: ConnectionId,
        commands: mpsc::UnboundedSender<Command>,
        deliveries: mpsc::UnboundedReceiver<Delivery>,
        remote: Arc<Mutex<SocketAddr>>,
    ) -> Connection {
        Connection {
            inner: Arc::new(ConnectionInner {
                id,
                commands,
                deliveries: tokio::sync::Mutex::new(Receiver {
                    deliveries,
                    ended: None,
                }),
                remote,
            }),
        }
    }

    /// The connection's id.
    pub fn id(&self) -> ConnectionId {
        self.inner.id
    }

    /// The peer's current validated address (it changes when the peer migrates).
    pub fn remote_addr(&self) -> SocketAddr {
        *self
            .inner
            .remote
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn request<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, DriverError> {
        request(&self.inner.commands, command).await
    }

    /// Queues a message for ordered, reliable delivery. Waits while the connection holds
    /// [`DriverConfig::send_buffer`] bytes or more that the peer has not acknowledged. If the
    /// future is dropped while it waits, the message may still be sent.
    pub async fn send(&self, message: impl Into<Bytes>) -> Result<(), DriverError> {
        let id = self.inner.id;
        let message = message.into();
        self.request(|reply| Command::Send { id, message, reply })
            .await?
    }

    /// The next message, in order. `Ok(None)` once the peer has closed gracefully;
    /// [`DriverError::ConnectionLost`] if the connection ended otherwise.
    pub async fn recv(&self) -> Result<Option<Bytes>, DriverError> {
        let mut receiver = self.inner.deliveries.lock().await;
        if let Some(ended) = receiver.ended {
            return ended.map_or(Ok(None), |reason| Err(DriverError::ConnectionLost(reason)));
        }
        let (result, ended) = match receiver.deliveries.recv().await {
            Some(Delivery::Message(bytes)) => return Ok(Some(bytes)),
            Some(Delivery::Finished) | Some(Delivery::Closed(CloseReason::Graceful)) => {
                (Ok(None), None)
            }
            Some(Delivery::Closed(reason)) => {
                (Err(DriverError::ConnectionLost(reason)), Some(reason))
            }
            None => (
                Err(DriverError::EndpointClosed),
                Some(CloseReason::LocalAbort),
            ),
        };
        receiver.ended = Some(ended);
        result
    }

    /// Closes gracefully: messages already sent are delivered, then the peer sees the end
    /// (`recv` returns `Ok(None)` there). Resolves once the close is queued.
    pub async fn close(&self) {
        let id = self.inner.id;
        let _ = self.request(|reply| Command::Close { id, reply }).await;
    }

    /// The core's counters: RTT, congestion window, bytes, retransmissions. Fails once the
    /// connection is gone.
    pub async fn stats(&self) -> Result<ConnectionStats, DriverError> {
        let id = self.inner.id;
        self.request(|reply| Command::Stats { id, reply })
            .await?
            .ok_or(DriverError::Closed)
    }
}
