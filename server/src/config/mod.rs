//! The relay's configuration: command-line flags, `AETHERFLOW_*` environment variables and an
//! optional TOML file, merged once into one [`Config`] that is passed down.
//!
//! Precedence, highest first: flag, environment variable, `--config` file, built-in default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, ValueEnum};
use serde::Deserialize;

use crate::forwarded::TrustedProxies;
use crate::rate_limit::Rate;

/// Default HTTP and WebSocket listen address.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// File name of the relay's Quantum static key in the data directory, when --quantum-key
/// names none.
pub const DEFAULT_QUANTUM_KEY_FILE: &str = "quantum.key";
/// Default Quantum (reliable UDP) listen address.
pub const DEFAULT_QUANTUM_ADDR: &str = "127.0.0.1:9090";
/// Default data directory; the database is `<data-dir>/aetherflow.redb`.
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default largest WebSocket message accepted: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Default bound on how late `--durability relaxed` commits an update, in milliseconds.
pub const DEFAULT_RELAXED_FLUSH_MS: u64 = 100;
/// Default idle time before an unused document is unloaded from memory, in seconds.
pub const DEFAULT_UNLOAD_AFTER_SECS: u64 = 30;
/// Default number of update-log entries that triggers folding the log into a snapshot.
pub const DEFAULT_COMPACT_AFTER_UPDATES: usize = 500;
/// Default log bytes after which a document is compacted (768 KiB): loading it, or producing a
/// past version, then replays at most about that much.
pub const DEFAULT_COMPACT_AFTER_BYTES: usize = 768 * 1024;
/// Days every version of a document's history is kept (see [`crate::history::retention`]).
pub const DEFAULT_HISTORY_KEEP_ALL_DAYS: u64 = 30;
/// Days versions are kept one per hour; older ones are kept one per day.
pub const DEFAULT_HISTORY_HOURLY_DAYS: u64 = 365;
/// Newest versions of a document kept whatever their age.
pub const DEFAULT_HISTORY_KEEP_NEWEST: usize = 50;
/// Default interval between WebSocket pings, in seconds.
pub const DEFAULT_PING_INTERVAL_SECS: u64 = 30;
/// Default WebSocket connections a remote IP address may open per minute.
pub const DEFAULT_CONNECT_RATE_PER_MIN: u32 = 600;
/// Default burst of WebSocket connections from one address after a quiet spell.
pub const DEFAULT_CONNECT_BURST: u32 = 60;
/// Default data messages per second one session may send.
pub const DEFAULT_MESSAGE_RATE_PER_SEC: u32 = 500;
/// Default burst of data messages one session may send after a quiet spell.
pub const DEFAULT_MESSAGE_BURST: u32 = 5000;
/// Default bound on the frames the relay holds for one connection that has not read them yet:
/// 4 MiB. A connection over it is closed with 1013 and resyncs when it reconnects.
pub const DEFAULT_OUTBOX_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Default (and largest allowed) lifetime of a token minted by `POST /api/v1/tokens`: 1 day.
pub const DEFAULT_TOKEN_MAX_TTL_SECS: u64 = 24 * 60 * 60;
/// Shortest admin key accepted.
pub const MIN_ADMIN_KEY_LEN: usize = 16;
/// Shortest `--jwt-secret` accepted when the relay listens beyond loopback, in bytes: HS256
/// wants a key as long as its 256-bit hash (RFC 7518, 3.2), and anyone who guesses the secret
/// can sign tokens for every document. On loopback a shorter secret starts with a warning.
pub const MIN_JWT_SECRET_BYTES: usize = 32;
/// Default sparse FEC parity budget of the Quantum listener, in percent of data bytes: a
/// parity packet for every edit (a parity packet is ~10 bytes longer than what it covers, so
/// 100 % leaves about one edit in fourteen without), so a lost edit is rebuilt on arrival
/// instead of waiting for the tail loss probe (see [`Settings::quantum_sparse_fec_budget`]).
pub const DEFAULT_QUANTUM_SPARSE_FEC_BUDGET: u16 = 200;
/// Default time a client has to send a request's head, in seconds (see
/// [`Settings::http_header_timeout_secs`]).
pub const DEFAULT_HTTP_HEADER_TIMEOUT_SECS: u64 = 10;
/// Default heavy document reads (`GET .../content`, `GET .../update`) running at once.
pub const DEFAULT_MAX_CONTENT_READS: usize = 2;
/// Default largest JSON body `GET .../content` answers: 64 MiB.
pub const DEFAULT_MAX_CONTENT_JSON_BYTES: usize = 64 * 1024 * 1024;
/// Default debounce window of webhook `document.changed` events, in milliseconds.
pub const DEFAULT_WEBHOOK_DEBOUNCE_MS: u64 = 2000;
/// Default first retry delay of a failed webhook delivery, in milliseconds.
pub const DEFAULT_WEBHOOK_RETRY_INITIAL_MS: u64 = 1000;
/// Default time failed webhook deliveries are retried before they are parked: a day.
pub const DEFAULT_WEBHOOK_RETRY_HORIZON_SECS: u64 = 24 * 60 * 60;
/// Default deadline of one webhook delivery attempt, in seconds.
pub const DEFAULT_WEBHOOK_TIMEOUT_SECS: u64 = 10;
/// File descriptors kept out of the default connection cap for everything else the relay
/// opens (the database, the Quantum socket, blocking threads' files), at least; see
/// [`default_max_connections`].
pub const RESERVED_FILES: u64 = 64;

/// Default limit on the documents one Quantum connection may subscribe to at once: each is a
/// loaded document and a forwarding task the relay holds for the connection.
pub const DEFAULT_QUANTUM_MAX_DOCUMENTS: usize = 100;
/// Default limit on the documents one Hocuspocus connection may hold open at once: each is
/// a room membership and an outbox the relay holds for the connection.
pub const DEFAULT_HOCUSPOCUS_MAX_DOCUMENTS: usize = 100;
/// Default limit on the items one update may hold (see `aetherflow_crdt::room`, "Decoded
/// size"): about 45 MiB of relay memory for small map entries (`benches/RESULTS.md`).
pub const DEFAULT_MAX_UPDATE_ITEMS: u64 = 100_000;
/// Default limit on the items one document may hold: about 450 MiB of relay memory for small
/// map entries (`benches/RESULTS.md`).
pub const DEFAULT_MAX_DOC_ITEMS: u64 = 1_000_000;
/// Default limit on the content bytes one document may hold (as encoded: 256 MiB).
pub const DEFAULT_MAX_DOC_BYTES: u64 = 256 * 1024 * 1024;
/// File name of the database inside the data directory.
pub const DATABASE_FILE: &str = "aetherflow.redb";

/// When a room may show an update to clients relative to committing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Broadcast an update only after redb has committed it (fsync). Whatever a client has
    /// seen survives a crash.
    #[default]
    Durable,
    /// Broadcast first; commit to disk within `relaxed-flush-ms` plus one fsync.
    Relaxed,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, coloured when writing to a terminal.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

mod cluster;
mod help;

pub use help::command;

/// `aetherflow`: the AetherFlow relay. Serves Yjs documents over the y-websocket protocol at
/// `ws://<http-addr>/ws/<document>`, durable in an embedded redb database.
#[derive(Debug, Parser)]
#[command(name = "aetherflow", version, about, long_about = None)]
pub struct Cli {
    /// TOML file with any of the settings below (keys use underscores: `http_addr = "..."`).
    /// Flags and environment variables override it.
    #[arg(long, env = "AETHERFLOW_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The relay's settings.
    #[command(flatten)]
    pub settings: Settings,

    /// An offline tool to run instead of the relay.
    #[command(subcommand)]
    pub tool: Option<crate::tools::Tool>,
}

/// Every setting, each optional so that the layers can be merged.
#[derive(Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Address for HTTP and WebSocket. Port 0 picks a free port;
    /// the chosen address is printed on stdout as `aetherflow ready: http://ADDR`
    /// (`https://` with --tls-cert).
    #[arg(long, env = "AETHERFLOW_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,

    /// UDP address for Quantum clients, or `off`. Port 0 picks a
    /// free port, printed on stdout as `aetherflow quantum ready: udp://ADDR` (followed by
    /// `aetherflow quantum key: HEX`, the key clients pin). If the default address is taken the relay serves without Quantum (with a warning); an address given
    /// explicitly must be free.
    #[arg(long, env = "AETHERFLOW_QUANTUM_ADDR", value_name = "ADDR|off")]
    pub quantum_addr: Option<String>,

    /// Parity bytes Quantum may add per 100 bytes of sparse traffic (edits, presence), spent
    /// only while loss is measured (none below 1 %). Higher trades bytes for a lower p99 under
    /// loss: a lost edit that parity covers is rebuilt one one-way delay after it was sent
    /// instead of waiting about 1.2 RTT for a resend.
    #[arg(
        long,
        env = "AETHERFLOW_QUANTUM_SPARSE_FEC_BUDGET",
        value_name = "PERCENT"
    )]
    pub quantum_sparse_fec_budget: Option<u16>,

    /// Most documents one Quantum connection may be subscribed to at once; a subscription
    /// over it is refused with error 4413 (the connection stays).
    #[arg(long, env = "AETHERFLOW_QUANTUM_MAX_DOCUMENTS", value_name = "N")]
    pub quantum_max_documents: Option<usize>,

    /// Most documents one connection to the Hocuspocus endpoint (`/hocuspocus`) may hold
    /// open at once; the token for one more is refused with permission-denied (the
    /// connection stays).
    #[arg(long, env = "AETHERFLOW_HOCUSPOCUS_MAX_DOCUMENTS", value_name = "N")]
    pub hocuspocus_max_documents: Option<usize>,

    /// File holding the relay's Quantum identity: its Noise static private key as 64 hex
    /// digits. Clients pin the public half, which the relay prints at start-up and serves at
    /// `GET /api/v1/quantum` [default: `quantum.key` in --data-dir, generated with mode 0600
    /// on first start].
    #[arg(long, env = "AETHERFLOW_QUANTUM_KEY", value_name = "FILE")]
    pub quantum_key: Option<PathBuf>,

    /// Directory holding the database `aetherflow.redb`. Created if missing.
    #[arg(long, env = "AETHERFLOW_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Skip the integrity check at start-up (redb's page checksums, then every stored
    /// snapshot's and log entry's checksum). The check reads the whole database once; skip it
    /// only when start-up time matters more, since a damaged document is still refused when
    /// it loads.
    #[arg(
        long,
        env = "AETHERFLOW_SKIP_INTEGRITY_CHECK",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub skip_integrity_check: Option<bool>,

    /// Cluster mode: the NATS servers (comma-separated `nats://` URLs) whose JetStream keeps
    /// every document instead of the local database; relays started with the same servers
    /// and prefix serve the same documents. Unset: one relay, its own redb file.
    #[arg(long, env = "AETHERFLOW_CLUSTER", value_name = "URLS")]
    pub cluster: Option<String>,

    /// Cluster mode: prefix of the JetStream streams, buckets and subjects [default:
    /// AETHERFLOW].
    #[arg(long, env = "AETHERFLOW_CLUSTER_PREFIX", value_name = "NAME")]
    pub cluster_prefix: Option<String>,

    /// Cluster mode: replicas of each stream and bucket, at most the number of NATS servers
    /// [default: 3].
    #[arg(long, env = "AETHERFLOW_CLUSTER_REPLICAS", value_name = "N")]
    pub cluster_replicas: Option<usize>,

    /// `durable`: an update is broadcast only after it is committed to disk, so whatever a
    /// client has seen survives a crash. `relaxed`: broadcast first, commit within
    /// --relaxed-flush-ms plus one fsync.
    #[arg(long, env = "AETHERFLOW_DURABILITY", value_enum, value_name = "MODE")]
    pub durability: Option<Durability>,

    /// Largest WebSocket message, in bytes; a larger one closes the connection with code 1009.
    #[arg(long, env = "AETHERFLOW_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    pub max_message_bytes: Option<usize>,

    /// Most items (Yjs blocks, and each value of an array of plain values) one update may
    /// hold; a larger update is refused (WebSocket close 1009, HTTP 413 `document_limit`)
    ///.
    #[arg(long, env = "AETHERFLOW_MAX_UPDATE_ITEMS", value_name = "N")]
    pub max_update_items: Option<u64>,

    /// Most items one document may hold, counting what accepted updates add; an update that
    /// would pass it is refused like one over --max-update-items.
    #[arg(long, env = "AETHERFLOW_MAX_DOC_ITEMS", value_name = "N")]
    pub max_doc_items: Option<u64>,

    /// Most content bytes (items as encoded in updates) one document may hold; an update that
    /// would pass it is refused like one over --max-update-items.
    #[arg(long, env = "AETHERFLOW_MAX_DOC_BYTES", value_name = "BYTES")]
    pub max_doc_bytes: Option<u64>,

    /// Log format on stderr. Verbosity follows RUST_LOG (default `info`).
    #[arg(long, env = "AETHERFLOW_LOG_FORMAT", value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// In relaxed mode, the longest an update waits before an fsync'd commit, in milliseconds.
    #[arg(long, env = "AETHERFLOW_RELAXED_FLUSH_MS", value_name = "MS")]
    pub relaxed_flush_ms: Option<u64>,

    /// Unload a document from memory after it has had no connection for this long, in seconds.
    #[arg(long, env = "AETHERFLOW_UNLOAD_AFTER_SECS", value_name = "SECS")]
    pub unload_after_secs: Option<u64>,

    /// Fold a document's update log into a new snapshot once it holds this many entries.
    #[arg(long, env = "AETHERFLOW_COMPACT_AFTER_UPDATES", value_name = "N")]
    pub compact_after_updates: Option<usize>,

    /// Fold a document's update log into a new snapshot once its entries weigh this many
    /// bytes, however few they are (the relay batches fast typing into large entries).
    #[arg(long, env = "AETHERFLOW_COMPACT_AFTER_BYTES", value_name = "BYTES")]
    pub compact_after_bytes: Option<usize>,

    /// Keep every version of a document's history this many days; older versions are thinned
    /// (at compaction) to one per hour, then one per day. Labelled versions are always kept.
    #[arg(long, env = "AETHERFLOW_HISTORY_KEEP_ALL_DAYS", value_name = "DAYS")]
    pub history_keep_all_days: Option<u64>,

    /// Keep one version per hour until versions are this many days old; one per day after.
    #[arg(long, env = "AETHERFLOW_HISTORY_HOURLY_DAYS", value_name = "DAYS")]
    pub history_hourly_days: Option<u64>,

    /// Always keep this many of a document's newest versions, whatever their age.
    #[arg(long, env = "AETHERFLOW_HISTORY_KEEP_NEWEST", value_name = "N")]
    pub history_keep_newest: Option<usize>,

    /// Ping every WebSocket this often, in seconds; a connection that leaves one ping
    /// unanswered is shown IDLE, one that leaves two is closed (1001 "ping timeout") and its
    /// presence removed.
    #[arg(long, env = "AETHERFLOW_PING_INTERVAL_SECS", value_name = "SECS")]
    pub ping_interval_secs: Option<u64>,

    /// Shared secret for HS256 client tokens (JWT), at least 32 bytes when the relay listens on
    /// a non-loopback address. Without this or --jwt-public-key the relay runs open (no auth),
    /// which is allowed only on a loopback address.
    #[arg(
        long,
        env = "AETHERFLOW_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,

    /// PEM public key (RSA or EC) verifying RS256/ES256 client tokens.
    #[arg(long, env = "AETHERFLOW_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<PathBuf>,

    /// Admin key for the admin routes (`/api/v1/sessions`,
    /// `/api/v1/tokens`), sent as `Authorization: Bearer KEY` or `X-Admin-Key: KEY`. Without
    /// it the admin routes are disabled.
    #[arg(
        long,
        env = "AETHERFLOW_ADMIN_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub admin_key: Option<String>,

    /// WebSocket connections one remote IP address may open per minute; over it the upgrade
    /// gets 429 with Retry-After. 0 disables the limit.
    #[arg(long, env = "AETHERFLOW_CONNECT_RATE_PER_MIN", value_name = "N")]
    pub connect_rate_per_min: Option<u32>,

    /// Connections one address may open at once after a quiet spell.
    #[arg(long, env = "AETHERFLOW_CONNECT_BURST", value_name = "N")]
    pub connect_burst: Option<u32>,

    /// Data messages per second the relay reads from one session; over it the relay stops
    /// reading that socket until the limit allows the next message (TCP pushes back on the
    /// client). A session held back without a break for 5 minutes is closed with 1008
    /// (policy violation). 0 disables the limit.
    #[arg(long, env = "AETHERFLOW_MESSAGE_RATE_PER_SEC", value_name = "N")]
    pub message_rate_per_sec: Option<u32>,

    /// Data messages one session may send at once after a quiet spell. A
    /// y-websocket client sends one message per transaction, so a script making thousands of
    /// small edits in a loop needs this headroom; typing sends a few dozen a second.
    #[arg(long, env = "AETHERFLOW_MESSAGE_BURST", value_name = "N")]
    pub message_burst: Option<u32>,

    /// Bytes of frames the relay holds for one connection that is not reading them (its
    /// outbox); a connection over it is closed with 1013 and resyncs when it reconnects. One
    /// frame larger than this still goes out to a connection that has caught up.
    #[arg(long, env = "AETHERFLOW_OUTBOX_MAX_BYTES", value_name = "BYTES")]
    pub outbox_max_bytes: Option<usize>,

    /// Longest lifetime of a token minted with `POST /api/v1/tokens`, in seconds.
    #[arg(long, env = "AETHERFLOW_TOKEN_MAX_TTL_SECS", value_name = "SECS")]
    pub token_max_ttl_secs: Option<u64>,

    /// Reverse proxies to believe, as comma-separated IP addresses or CIDR ranges
    /// (`10.0.0.0/8,127.0.0.1/32`). For a connection from one of them the client's address is
    /// the rightmost untrusted hop of `Forwarded` (`for=`) or `X-Forwarded-For`, used for the
    /// connection limit, sessions, the admin view and logs; an unreadable header leaves the
    /// proxy's address. With any set, `/metrics` needs --admin-key [default: none].
    #[arg(long, env = "AETHERFLOW_TRUSTED_PROXIES", value_name = "CIDR,...")]
    pub trusted_proxies: Option<String>,
    /// Time an HTTP connection has to send a request's complete head, counted from when the
    /// relay starts waiting for it: from the connect, and on a kept-alive connection from the
    /// end of the previous response, so it is also the keep-alive idle timeout. Over it the
    /// connection is closed.
    #[arg(long, env = "AETHERFLOW_HTTP_HEADER_TIMEOUT_SECS", value_name = "SECS")]
    pub http_header_timeout_secs: Option<u64>,

    /// Most TCP connections (plain HTTP and WebSocket) open at once. The last 1/16 of them
    /// (1 to 64) only serve `/healthz`. At the cap a new connection cuts the oldest one that
    /// has not sent a complete request head, or, with none, gets a minimal 503 and is closed
    /// at once [default: the soft open-file limit (RLIMIT_NOFILE) less 1/8 of it, at least
    /// 64, kept for the relay's own files].
    #[arg(long, env = "AETHERFLOW_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Heavy document reads (`GET .../content`, `GET .../update`) run at once, each on a
    /// blocking thread with its own copy of the document; more get 503 `busy` with
    /// Retry-After.
    #[arg(long, env = "AETHERFLOW_MAX_CONTENT_READS", value_name = "N")]
    pub max_content_reads: Option<usize>,

    /// Largest JSON body `GET .../content` answers, in bytes; a larger document gets 422
    /// `content_too_large` (read it with `GET .../update`).
    #[arg(long, env = "AETHERFLOW_MAX_CONTENT_JSON_BYTES", value_name = "BYTES")]
    pub max_content_json_bytes: Option<usize>,

    /// PEM certificate chain (leaf first) for serving HTTPS and `wss://` on --http-addr;
    /// needs --tls-key. The files are re-read when they change (checked every few seconds)
    /// and on SIGHUP: new connections get the new certificate, a bad new file keeps the old
    /// one and logs an error [default: none, plain HTTP].
    #[arg(long, env = "AETHERFLOW_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, env = "AETHERFLOW_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Default debounce window of a webhook endpoint's `document.changed` events, in
    /// milliseconds: changes to one document within it make one event (an endpoint may set
    /// its own).
    #[arg(long, env = "AETHERFLOW_WEBHOOK_DEBOUNCE_MS", value_name = "MS")]
    pub webhook_debounce_ms: Option<u64>,

    /// Delay before a failed webhook delivery is retried the first time, in milliseconds;
    /// each later retry waits twice as long (up to an hour), with jitter.
    #[arg(long, env = "AETHERFLOW_WEBHOOK_RETRY_INITIAL_MS", value_name = "MS")]
    pub webhook_retry_initial_ms: Option<u64>,

    /// How long a failing webhook event is retried before it is parked as failed (listed by
    /// `GET /api/v1/webhooks/deliveries?state=parked`, replayable), in seconds.
    #[arg(
        long,
        env = "AETHERFLOW_WEBHOOK_RETRY_HORIZON_SECS",
        value_name = "SECS"
    )]
    pub webhook_retry_horizon_secs: Option<u64>,

    /// Deadline of one webhook delivery attempt (resolving, connecting, sending, answer), in
    /// seconds.
    #[arg(long, env = "AETHERFLOW_WEBHOOK_TIMEOUT_SECS", value_name = "SECS")]
    pub webhook_timeout_secs: Option<u64>,

    /// Allow webhook endpoints on loopback, private, link-local and other non-public
    /// addresses. Off by default: an endpoint URL could otherwise make the relay reach its
    /// own machine or network (server-side request forgery).
    #[arg(
        long,
        env = "AETHERFLOW_WEBHOOK_ALLOW_PRIVATE_ADDRESSES",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "BOOL"
    )]
    pub webhook_allow_private_addresses: Option<bool>,
}

/// The files of the relay's own TLS certificate (see [`Settings::tls_cert`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key of the leaf certificate.
    pub key: PathBuf,
}

/// The relay's resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address for HTTP and WebSocket.
    pub http_addr: SocketAddr,
    /// UDP address for Quantum clients; `None` when turned off.
    pub quantum_addr: Option<SocketAddr>,
    /// Whether the Quantum address was given explicitly, so failing to bind it is fatal.
    pub quantum_required: bool,
    /// Sparse FEC parity budget of Quantum connections, percent of data bytes (0..=200).
    pub quantum_sparse_fec_budget: u16,
    /// Most documents one Quantum connection may be subscribed to at once.
    pub quantum_max_documents: usize,
    /// Most documents one Hocuspocus connection may hold open at once.
    pub hocuspocus_max_documents: usize,
    /// The Quantum static key file given explicitly; `None`: [`DEFAULT_QUANTUM_KEY_FILE`] in
    /// the data directory, generated if missing.
    pub quantum_key: Option<PathBuf>,
    /// Directory holding the database.
    pub data_dir: PathBuf,
    /// Whether start-up skips the database's integrity check.
    pub skip_integrity_check: bool,
    /// Cluster mode's JetStream, if set.
    pub cluster: Option<crate::jetstream::ClusterSettings>,
    /// Broadcast-after-commit or broadcast-first.
    pub durability: Durability,
    /// Largest WebSocket message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Most items one update may hold.
    pub max_update_items: u64,
    /// Most items one document may hold.
    pub max_doc_items: u64,
    /// Most content bytes one document may hold.
    pub max_doc_bytes: u64,
    /// Log output format.
    pub log_format: LogFormat,
    /// Relaxed mode's bound on the delay before a durable commit.
    pub relaxed_flush: Duration,
    /// Idle time before a document without connections is unloaded.
    pub unload_after: Duration,
    /// Update-log length that triggers compaction.
    pub compact_after_updates: usize,
    /// Update-log bytes that trigger compaction.
    pub compact_after_bytes: usize,
    /// Which versions of a document's history thinning keeps.
    pub history_retention: crate::history::Retention,
    /// Interval between WebSocket pings.
    pub ping_interval: Duration,
    /// HS256 secret for client tokens.
    pub jwt_secret: Option<String>,
    /// PEM public key for RS256/ES256 client tokens.
    pub jwt_public_key: Option<PathBuf>,
    /// Key for the admin routes; `None` disables them.
    pub admin_key: Option<String>,
    /// WebSocket connections per remote IP address; `None` is unlimited.
    pub connect_rate: Option<Rate>,
    /// Data messages per session; `None` is unlimited.
    pub message_rate: Option<Rate>,
    /// Bytes of frames held for one connection before it is closed as too slow.
    pub outbox_max_bytes: usize,
    /// Longest lifetime of a minted token.
    pub token_max_ttl: Duration,
    /// Proxies whose forwarding headers name the client; empty trusts none.
    pub trusted_proxies: TrustedProxies,
    /// Time a connection has to send a request head (also the keep-alive idle timeout).
    pub http_header_timeout: Duration,
    /// Most TCP connections open at once, including those kept for `/healthz`.
    pub max_connections: usize,
    /// Heavy document reads running at once.
    pub max_content_reads: usize,
    /// Largest JSON body of `GET .../content`.
    pub max_content_json_bytes: usize,
    /// The certificate and key to terminate TLS with; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Default `document.changed` debounce window of a webhook endpoint.
    pub webhook_debounce: Duration,
    /// First retry delay of a failed webhook delivery.
    pub webhook_retry_initial: Duration,
    /// How long failed webhook deliveries are retried before they are parked.
    pub webhook_retry_horizon: Duration,
    /// Deadline of one webhook delivery attempt.
    pub webhook_timeout: Duration,
    /// Whether webhook endpoints may be on non-public addresses.
    pub webhook_allow_private_addresses: bool,
}

/// Why the configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `--config` file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file named by `--config`.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The `--config` file is not valid TOML for these settings.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file named by `--config`.
        path: PathBuf,
        /// What the TOML parser said.
        source: Box<toml::de::Error>,
    },
    /// A setting has a value the relay cannot run with.
    #[error("invalid setting {name}: {why}")]
    Invalid {
        /// The setting's flag name.
        name: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl Settings {
    /// Fills every setting left unset here from `lower`.
    fn or(self, lower: Settings) -> Settings {
        Settings {
            http_addr: self.http_addr.or(lower.http_addr),
            quantum_addr: self.quantum_addr.or(lower.quantum_addr),
            quantum_sparse_fec_budget: self
                .quantum_sparse_fec_budget
                .or(lower.quantum_sparse_fec_budget),
            quantum_max_documents: self.quantum_max_documents.or(lower.quantum_max_documents),
            hocuspocus_max_documents: self
                .hocuspocus_max_documents
                .or(lower.hocuspocus_max_documents),
            quantum_key: self.quantum_key.or(lower.quantum_key),
            data_dir: self.data_dir.or(lower.data_dir),
            skip_integrity_check: self.skip_integrity_check.or(lower.skip_integrity_check),
            cluster: self.cluster.or(lower.cluster),
            cluster_prefix: self.cluster_prefix.or(lower.cluster_prefix),
            cluster_replicas: self.cluster_replicas.or(lower.cluster_replicas),
            durability: self.durability.or(lower.durability),
            max_message_bytes: self.max_message_bytes.or(lower.max_message_bytes),
            max_update_items: self.max_update_items.or(lower.max_update_items),
            max_doc_items: self.max_doc_items.or(lower.max_doc_items),
            max_doc_bytes: self.max_doc_bytes.or(lower.max_doc_bytes),
            log_format: self.log_format.or(lower.log_format),
            relaxed_flush_ms: self.relaxed_flush_ms.or(lower.relaxed_flush_ms),
            unload_after_secs: self.unload_after_secs.or(lower.unload_after_secs),
            compact_after_updates: self.compact_after_updates.or(lower.compact_after_updates),
            compact_after_bytes: self.compact_after_bytes.or(lower.compact_after_bytes),
            history_keep_all_days: self.history_keep_all_days.or(lower.history_keep_all_days),
            history_hourly_days: self.history_hourly_days.or(lower.history_hourly_days),
            history_keep_newest: self.history_keep_newest.or(lower.history_keep_newest),
            ping_interval_secs: self.ping_interval_secs.or(lower.ping_interval_secs),
            jwt_secret: self.jwt_secret.or(lower.jwt_secret),
            jwt_public_key: self.jwt_public_key.or(lower.jwt_public_key),
            admin_key: self.admin_key.or(lower.admin_key),
            connect_rate_per_min: self.connect_rate_per_min.or(lower.connect_rate_per_min),
            connect_burst: self.connect_burst.or(lower.connect_burst),
            message_rate_per_sec: self.message_rate_per_sec.or(lower.message_rate_per_sec),
            message_burst: self.message_burst.or(lower.message_burst),
            outbox_max_bytes: self.outbox_max_bytes.or(lower.outbox_max_bytes),
            token_max_ttl_secs: self.token_max_ttl_secs.or(lower.token_max_ttl_secs),
            trusted_proxies: self.trusted_proxies.or(lower.trusted_proxies),
            http_header_timeout_secs: self
                .http_header_timeout_secs
                .or(lower.http_header_timeout_secs),
            max_connections: self.max_connections.or(lower.max_connections),
            max_content_reads: self.max_content_reads.or(lower.max_content_reads),
            max_content_json_bytes: self.max_content_json_bytes.or(lower.max_content_json_bytes),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            webhook_debounce_ms: self.webhook_debounce_ms.or(lower.webhook_debounce_ms),
            webhook_retry_initial_ms: self
                .webhook_retry_initial_ms
                .or(lower.webhook_retry_initial_ms),
            webhook_retry_horizon_secs: self
                .webhook_retry_horizon_secs
                .or(lower.webhook_retry_horizon_secs),
            webhook_timeout_secs: self.webhook_timeout_secs.or(lower.webhook_timeout_secs),
            webhook_allow_private_addresses: self
                .webhook_allow_private_addresses
                .or(lower.webhook_allow_private_addresses),
        }
    }

    /// Reads a TOML settings file.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }
}

impl Config {
    /// Merges flags and environment (already in `cli`) over the optional config file, over
    /// the defaults, and checks the result.
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        Config::from_settings(cli.settings.or(file))
    }

    /// Applies defaults to whatever `settings` leaves unset and checks the result.
    pub fn from_settings(s: Settings) -> Result<Config, ConfigError> {
        let default_addr = DEFAULT_HTTP_ADDR
            .parse()
            .expect("the default address parses");
        let (quantum_addr, quantum_required) = match s.quantum_addr.as_deref() {
            None => (
                Some(
                    DEFAULT_QUANTUM_ADDR
                        .parse()
                        .expect("the default Quantum address parses"),
                ),
                false,
            ),
            Some("off") => (None, false),
            Some(addr) => (
                Some(addr.parse().map_err(|_| ConfigError::Invalid {
                    name: "--quantum-addr",
                    why: "must be an IP address with a port, or `off`",
                })?),
                true,
            ),
        };
        let tls = match (s.tls_cert, s.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    name: "--tls-cert",
                    why: "needs --tls-key too (the certificate's private key, PEM)",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    name: "--tls-key",
                    why: "needs --tls-cert too (the certificate chain, PEM)",
                });
            }
        };
        let config = Config {
            tls,
            http_addr: s.http_addr.unwrap_or(default_addr),
            quantum_addr,
            quantum_required,
            quantum_sparse_fec_budget: s
                .quantum_sparse_fec_budget
                .unwrap_or(DEFAULT_QUANTUM_SPARSE_FEC_BUDGET),
            quantum_max_documents: s
                .quantum_max_documents
                .unwrap_or(DEFAULT_QUANTUM_MAX_DOCUMENTS),
            hocuspocus_max_documents: s
                .hocuspocus_max_documents
                .unwrap_or(DEFAULT_HOCUSPOCUS_MAX_DOCUMENTS),
            quantum_key: s.quantum_key,
            data_dir: s
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            skip_integrity_check: s.skip_integrity_check.unwrap_or(false),
            cluster: cluster::settings(s.cluster, s.cluster_prefix, s.cluster_replicas)?,
            durability: s.durability.unwrap_or_default(),
            max_message_bytes: s.max_message_bytes.unwrap_or(DEFAULT_MAX_MESSAGE_BYTES),
            max_update_items: s.max_update_items.unwrap_or(DEFAULT_MAX_UPDATE_ITEMS),
            max_doc_items: s.max_doc_items.unwrap_or(DEFAULT_MAX_DOC_ITEMS),
            max_doc_bytes: s.max_doc_bytes.unwrap_or(DEFAULT_MAX_DOC_BYTES),
            log_format: s.log_format.unwrap_or_default(),
            relaxed_flush: Duration::from_millis(
                s.relaxed_flush_ms.unwrap_or(DEFAULT_RELAXED_FLUSH_MS),
            ),
            unload_after: Duration::from_secs(
                s.unload_after_secs.unwrap_or(DEFAULT_UNLOAD_AFTER_SECS),
            ),
            compact_after_updates: s
                .compact_after_updates
                .unwrap_or(DEFAULT_COMPACT_AFTER_UPDATES),
            compact_after_bytes: s.compact_after_bytes.unwrap_or(DEFAULT_COMPACT_AFTER_BYTES),
            history_retention: crate::history::Retention {
                keep_all_ms: days_ms(
                    s.history_keep_all_days
                        .unwrap_or(DEFAULT_HISTORY_KEEP_ALL_DAYS),
                ),
                hourly_ms: days_ms(s.history_hourly_days.unwrap_or(DEFAULT_HISTORY_HOURLY_DAYS)),
                keep_newest: s.history_keep_newest.unwrap_or(DEFAULT_HISTORY_KEEP_NEWEST),
            },
            ping_interval: Duration::from_secs(
                s.ping_interval_secs.unwrap_or(DEFAULT_PING_INTERVAL_SECS),
            ),
            jwt_secret: s.jwt_secret.filter(|secret| !secret.is_empty()),
            jwt_public_key: s.jwt_public_key,
            admin_key: s.admin_key.filter(|key| !key.is_empty()),
            connect_rate: match s
                .connect_rate_per_min
                .unwrap_or(DEFAULT_CONNECT_RATE_PER_MIN)
            {
                0 => None,
                n => Some(Rate::per_minute(
                    n,
                    s.connect_burst.unwrap_or(DEFAULT_CONNECT_BURST),
                )),
            },
            message_rate: match s
                .message_rate_per_sec
                .unwrap_or(DEFAULT_MESSAGE_RATE_PER_SEC)
            {
                0 => None,
                n => Some(Rate::per_second(
                    n,
                    s.message_burst.unwrap_or(DEFAULT_MESSAGE_BURST),
                )),
            },
            outbox_max_bytes: s.outbox_max_bytes.unwrap_or(DEFAULT_OUTBOX_MAX_BYTES),
            token_max_ttl: Duration::from_secs(
                s.token_max_ttl_secs.unwrap_or(DEFAULT_TOKEN_MAX_TTL_SECS),
            ),
            trusted_proxies: s
                .trusted_proxies
                .as_deref()
                .unwrap_or_default()
                .parse()
                .map_err(|_| ConfigError::Invalid {
                    name: "--trusted-proxies",
                    why: "must be comma-separated IP addresses or CIDR ranges, such as \
                          10.0.0.0/8,127.0.0.1/32",
                })?,
            http_header_timeout: Duration::from_secs(
                s.http_header_timeout_secs
                    .unwrap_or(DEFAULT_HTTP_HEADER_TIMEOUT_SECS),
            ),
            max_connections: s
                .max_connections
                .unwrap_or_else(|| default_max_connections(open_file_limit())),
            max_content_reads: s.max_content_reads.unwrap_or(DEFAULT_MAX_CONTENT_READS),
            max_content_json_bytes: s
                .max_content_json_bytes
                .unwrap_or(DEFAULT_MAX_CONTENT_JSON_BYTES),
            webhook_debounce: Duration::from_millis(
                s.webhook_debounce_ms.unwrap_or(DEFAULT_WEBHOOK_DEBOUNCE_MS),
            ),
            webhook_retry_initial: Duration::from_millis(
                s.webhook_retry_initial_ms
                    .unwrap_or(DEFAULT_WEBHOOK_RETRY_INITIAL_MS),
            ),
            webhook_retry_horizon: Duration::from_secs(
                s.webhook_retry_horizon_secs
                    .unwrap_or(DEFAULT_WEBHOOK_RETRY_HORIZON_SECS),
            ),
            webhook_timeout: Duration::from_secs(
                s.webhook_timeout_secs
                    .unwrap_or(DEFAULT_WEBHOOK_TIMEOUT_SECS),
            ),
            webhook_allow_private_addresses: s.webhook_allow_private_addresses.unwrap_or(false),
        };
        config.validate()?;
        Ok(config)
    }

    /// The scheme of the relay's URLs: `https` when it terminates TLS, else `http`.
    pub fn http_scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Whether clients must present tokens.
    pub fn requires_auth(&self) -> bool {
        self.jwt_secret.is_some() || self.jwt_public_key.is_some()
    }

    /// Whether a listener (HTTP or Quantum) is on a non-loopback address, reachable by others.
    pub fn listens_beyond_loopback(&self) -> bool {
        !self.http_addr.ip().is_loopback()
            || self.quantum_addr.is_some_and(|a| !a.ip().is_loopback())
    }

    /// Whether `--jwt-secret` is set but shorter than [`MIN_JWT_SECRET_BYTES`] (accepted only
    /// on loopback, with a warning at start-up).
    pub fn jwt_secret_is_weak(&self) -> bool {
        self.jwt_secret
            .as_ref()
            .is_some_and(|secret| secret.len() < MIN_JWT_SECRET_BYTES)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.jwt_secret_is_weak() && self.listens_beyond_loopback() {
            return Err(ConfigError::Invalid {
                name: "--jwt-secret",
                why: "must be at least 32 bytes on a non-loopback address, or anyone who guesses                       it can sign tokens for every document (generate one with                       `openssl rand -base64 32`)",
            });
        }
        if !self.requires_auth() && !self.http_addr.ip().is_loopback() {
            return Err(ConfigError::Invalid {
                name: "--http-addr",
                why: "a non-loopback address needs auth: set --jwt-secret or --jwt-public-key \
                      (without keys the relay is open to anyone and binds only to loopback)",
            });
        }
        if !self.requires_auth() && self.quantum_addr.is_some_and(|a| !a.ip().is_loopback()) {
            return Err(ConfigError::Invalid {
                name: "--quantum-addr",
                why: "a non-loopback address needs auth: set --jwt-secret or --jwt-public-key",
            });
        }
        if self.quantum_sparse_fec_budget > aetherflow_quantum::fec::MAX_SPARSE_BUDGET_PERCENT {
            return Err(ConfigError::Invalid {
                name: "--quantum-sparse-fec-budget",
                why: "must be a percentage from 0 to 200",
            });
        }
        if self.quantum_max_documents == 0 {
            return Err(ConfigError::Invalid {
                name: "--quantum-max-documents",
                why: "must be at least 1",
            });
        }
        if self.hocuspocus_max_documents == 0 {
            return Err(ConfigError::Invalid {
                name: "--hocuspocus-max-documents",
                why: "must be at least 1",
            });
        }
        if self.max_message_bytes < 1024 {
            return Err(ConfigError::Invalid {
                name: "--max-message-bytes",
                why: "must be at least 1024",
            });
        }
        if self.outbox_max_bytes < 1024 {
            return Err(ConfigError::Invalid {
                name: "--outbox-max-bytes",
                why: "must be at least 1024",
            });
        }
        for (name, value) in [
            ("--max-update-items", self.max_update_items),
            ("--max-doc-items", self.max_doc_items),
            ("--max-doc-bytes", self.max_doc_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    name,
                    why: "must be at least 1",
                });
            }
        }
        if self.history_retention.keep_newest == 0 {
            return Err(ConfigError::Invalid {
                name: "--history-keep-newest",
                why: "must be at least 1",
            });
        }
        if self.compact_after_updates == 0 {
            return Err(ConfigError::Invalid {
                name: "--compact-after-updates",
                why: "must be at least 1",
            });
        }
        if self.compact_after_bytes == 0 {
            return Err(ConfigError::Invalid {
                name: "--compact-after-bytes",
                why: "must be at least 1",
            });
        }
        if self.ping_interval.is_zero() {
            return Err(ConfigError::Invalid {
                name: "--ping-interval-secs",
                why: "must be at least 1",
            });
        }
        if let Some(key) = &self.admin_key {
            if key.chars().count() < MIN_ADMIN_KEY_LEN {
                return Err(ConfigError::Invalid {
                    name: "--admin-key",
                    why: "must be at least 16 characters",
                });
            }
            if self.jwt_secret.as_ref() == Some(key) {
                return Err(ConfigError::Invalid {
                    name: "--admin-key",
                    why: "must differ from --jwt-secret, or every token holder could sign an admin key",
                });
            }
        }
        if self.token_max_ttl.is_zero() {
            return Err(ConfigError::Invalid {
                name: "--token-max-ttl-secs",
                why: "must be at least 1",
            });
        }
        if self.http_header_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                name: "--http-header-timeout-secs",
                why: "must be at least 1",
            });
        }
        if self.max_connections < 2 {
            return Err(ConfigError::Invalid {
                name: "--max-connections",
                why: "must be at least 2 (one is kept for /healthz)",
            });
        }
        if !(1..=MAX_CONTENT_READS).contains(&self.max_content_reads) {
            return Err(ConfigError::Invalid {
                name: "--max-content-reads",
                why: "must be from 1 to 4 (the reads share the relay's 8 blocking threads with \
                      the store)",
            });
        }
        if self.max_content_json_bytes < 1024 {
            return Err(ConfigError::Invalid {
                name: "--max-content-json-bytes",
                why: "must be at least 1024",
            });
        }
        if self.webhook_debounce > Duration::from_secs(3600) {
            return Err(ConfigError::Invalid {
                name: "--webhook-debounce-ms",
                why: "must be at most 3600000 (an hour)",
            });
        }
        if self.webhook_retry_initial.is_zero() {
            return Err(ConfigError::Invalid {
                name: "--webhook-retry-initial-ms",
                why: "must be at least 1",
            });
        }
        if self.webhook_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                name: "--webhook-timeout-secs",
                why: "must be at least 1",
            });
        }
        if self.relaxed_flush.is_zero() {
            return Err(ConfigError::Invalid {
                name: "--relaxed-flush-ms",
                why: "must be at least 1",
            });
        }
        Ok(())
    }

    /// Path of the redb database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join(DATABASE_FILE)
    }
}

/// Most heavy document reads allowed at once: they hold blocking threads, of which the relay
/// has 8 (`main.rs`), and the store's lookups and commits need the rest.
pub const MAX_CONTENT_READS: usize = 4;

/// The process's soft limit on open files (RLIMIT_NOFILE); `None` if unknown or unlimited.
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// The connection cap for an open-file limit: the limit less an eighth of it (at least
/// [`RESERVED_FILES`]) for the relay's own files, so the cap is reached before the file limit
/// and a refusal can still be answered. Unknown or unlimited: 65,536 connections.
pub fn default_max_connections(file_limit: Option<u64>) -> usize {
    let Some(limit) = file_limit else {
        return 65_536;
    };
    let kept = (limit / 8).max(RESERVED_FILES);
    usize::try_from(limit.saturating_sub(kept))
        .unwrap_or(usize::MAX)
        .max(2)
}

#[cfg(test)]
mod tests;

/// `days` in milliseconds, saturating.
fn days_ms(days: u64) -> u64 {
    days.saturating_mul(24 * 3_600_000)
}
