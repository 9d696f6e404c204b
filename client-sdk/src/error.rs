//! The SDK's errors.

use std::path::PathBuf;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The configuration cannot be used (see [`crate::ClientConfig::validate`]).
    #[error("invalid client configuration: {0}")]
    Config(#[from] ConfigError),
    /// The local database could not be opened (missing permissions, another process holds it, a
    /// corrupt file).
    #[error("cannot open the local database {path}: {reason}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Reading or writing the local database failed.
    #[error("local database: {0}")]
    Store(String),
    /// The document name is not valid.
    #[error(transparent)]
    DocName(#[from] aetherflow_crdt::DocNameError),
    /// The stored state of a document could not be decoded (a damaged database).
    #[error("stored state of document {doc} is damaged: {reason}")]
    Corrupt {
        /// The document.
        doc: String,
        /// What yrs said.
        reason: String,
    },
    /// A presence state is not a JSON value that can be shared.
    #[error("invalid presence state: {0}")]
    Presence(String),
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// [`crate::Client::listen`] needs [`crate::ClientConfig::peer_secret`]: a listener that
    /// accepted anyone would hand every document to whoever reaches the port.
    #[error("listening for peers needs a peer secret (ClientConfig::peer_secret)")]
    NoPeerSecret,
    /// The peer listener's socket could not be opened (address in use, no permission).
    #[error("cannot listen for peers at {addr}: {reason}")]
    Listen {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The relay's HTTP API (version history) is out of reach by configuration: no
    /// [`crate::ClientConfig::websocket_url`], or one that is not a `ws://` or `wss://` URL.
    #[error("the relay's HTTP API is not configured: {reason}")]
    NoRelayApi {
        /// What is missing or wrong.
        reason: String,
    },
    /// An HTTP request to the relay could not be made or answered: no connection
    /// ([`TransportError::Connect`]), a failed TLS handshake ([`TransportError::Tls`]: the
    /// same trust as `wss://`), or no complete answer within
    /// [`crate::ClientConfig::http_timeout`] ([`TransportError::Timeout`]).
    #[error("request to the relay failed: {0}")]
    Request(TransportError),
    /// The relay answered an HTTP request with an error: its status and the code and
    /// message of its JSON error body (`403 read_only` for a read-only token's restore,
    /// `404 not_found` for an unknown version, `501 not_in_cluster_mode` where the relay
    /// keeps no history, ...).
    #[error("the relay answered {status} {code}: {message}")]
    Relay {
        /// The HTTP status.
        status: u16,
        /// The relay's error code; empty when the answer was not the relay's JSON error (a
        /// proxy's error page).
        code: String,
        /// The relay's message, or the start of the answer's text when it was not JSON.
        message: String,
    },
    /// The relay's answer is larger than the client reads (64 MiB, the history module's
    /// `MAX_ANSWER_BYTES`); nothing of it was used.
    #[error("the relay's answer is larger than {limit} bytes")]
    AnswerTooLarge {
        /// The largest answer read, in bytes.
        limit: u64,
    },
    /// The relay's answer could not be read as what was asked for (not the expected JSON,
    /// not a Yjs update).
    #[error("unreadable answer from the relay: {0}")]
    BadAnswer(String),
}

/// Why a transport could not connect or lost its connection.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    /// No relay address is configured for this transport.
    #[error("no relay address configured")]
    NotConfigured,
    /// The connection could not be opened.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The relay refused the connection (a missing, expired or wrong token: 401/403; a
    /// register document: 409; a Quantum connection already holding as many documents as the
    /// relay allows: 413). Retrying with the same credentials will not help.
    #[error("refused by the relay ({status}): {reason}")]
    Refused {
        /// The HTTP status of the refusal.
        status: u16,
        /// The relay's error code (e.g. `token_expired`), or its response text.
        reason: String,
    },
    /// The TLS handshake of a `wss://` connection failed: the relay's certificate is not
    /// signed by a trusted authority (see [`crate::ClientConfig::tls_root_certificate`]), has
    /// expired, or does not name the URL's host. Retrying helps only once the certificate or
    /// the trust changes.
    #[error("TLS handshake with the relay failed: {0}")]
    Tls(String),
    /// The connection did not open in time.
    #[error("connection timed out")]
    Timeout,
}

/// Why a [`crate::ClientConfig`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// [`crate::ClientConfig::quantum_addr`] is set without a way to know the relay's key.
    #[error(
        "quantum_addr needs the relay's Quantum key: pin it with ClientConfig::quantum_key (the \
         relay prints `aetherflow quantum key: HEX` at start-up) or, for development, use \
         quantum_trust_on_first_use"
    )]
    NoQuantumKey,
    /// Trust on first use fetches the key over HTTP from the WebSocket URL's host.
    #[error("quantum_trust_on_first_use needs a ws:// websocket_url to fetch the relay's key from")]
    TrustOnFirstUseNeedsHttp,
    /// [`crate::ClientConfig::quantum_sparse_fec_budget`] is above the transport's limit.
    #[error("quantum_sparse_fec_budget must be a percentage from 0 to {max}, not {percent}")]
    SparseFecBudget {
        /// The budget asked for.
        percent: u16,
        /// The largest budget the transport accepts.
        max: u16,
    },
    /// A certificate given with [`crate::ClientConfig::tls_root_certificate`] cannot be used.
    #[error("tls_root_certificate: {reason}")]
    TlsRootCertificate {
        /// What is wrong with it.
        reason: String,
    },
}
