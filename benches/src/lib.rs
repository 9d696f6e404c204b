//! Shared pieces of AetherFlow's benchmarks: editing traces and a minimal y-websocket client.

pub mod link;
pub mod trace;
