//! Shared pieces of AetherFlow's benchmarks: editing traces, a load-generating y-websocket /
//! Hocuspocus client and the load generator's scenarios, the userspace link emulator and the
//! transport latency harness.
//!
//! ```
//! use aetherflow_benches::wire::Dialect;
//! // A y-websocket frame is the y-protocols message itself.
//! assert_eq!(Dialect::YWebsocket.frame("doc", &[0, 2, 2, 0, 0]), [0, 2, 2, 0, 0]);
//! ```

pub mod client;
pub mod ingest;
pub mod latency;
pub mod link;
pub mod scenario;
pub mod stats;
pub mod trace;
pub mod wire;
