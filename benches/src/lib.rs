//! Shared pieces of AetherFlow's benchmarks: editing traces and a minimal y-websocket client.

pub mod latency;
pub mod link;
pub mod trace;
