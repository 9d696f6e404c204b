//! A userspace link emulator: real traffic between two network namespaces crosses a process
//! that gives it a configurable one-way delay, jitter, random loss and optionally a rate
//! limit, for UDP and TCP alike. It stands in for `tc qdisc ... netem`, which this kernel
//! lacks.
//!
//! ```text
//!   namespace NAME-a                 this process                 namespace NAME-b
//!   10.77.S.1 ── TUN NAME-a ──▶ LinkModel (A→B, seed) ──▶ TUN NAME-b ── 10.77.S.2
//!                           ◀── LinkModel (B→A, seed+1) ◀──
//! ```
//!
//! - [`model`] is the pure core: packets and instants in, packets and release times out,
//!   seeded, unit-tested.
//! - [`emulator`] is the thin layer: namespaces, TUN devices, one forwarding task per
//!   direction, and byte counts per flow ([`packet::Flow`]) taken as packets enter the link.
//!
//! Running it needs root, `/dev/net/tun` and iproute2 (`ip`). Namespaces left behind by a
//! crashed run are deleted when a link of the same name starts, and a [`emulator::Link`]
//! deletes its own when dropped.
//!
//! From the command line (the `link-emulator` binary):
//!
//! ```text
//! cargo build -p aetherflow-benches --bin link-emulator
//! # A link with 25 ms each way (RTT 50 ms), ±2 ms jitter and 5 % loss each way, until Ctrl-C:
//! sudo target/debug/link-emulator run --delay-ms 25 --jitter-ms 2 --loss 0.05
//! sudo ip netns exec af-b iperf3 -s &   # anything, in either namespace
//! sudo ip netns exec af-a ping 10.77.0.2
//! # Self-check: ping RTT and loss against the configuration:
//! sudo target/debug/link-emulator check --delay-ms 25 --loss 0.05
//! ```
//!
//! From Rust (inside a tokio runtime, as root):
//!
//! ```no_run
//! use std::time::Duration;
//! use aetherflow_benches::link::{emulator::{Link, LinkSpec}, model::LinkConfig};
//!
//! # async fn demo() -> anyhow::Result<()> {
//! let config = LinkConfig { delay: Duration::from_millis(25), loss: 0.01, ..LinkConfig::default() };
//! let link = Link::start(LinkSpec::symmetric("af", 0, config, 7))?;
//! let status = link.command_in_a("ping").args(["-c", "3", "10.77.0.2"]).status().await?;
//! assert!(status.success());
//! let stats = link.shutdown().await;
//! println!("A→B: {} packets in, {} dropped", stats.a_to_b.packets_in, stats.a_to_b.packets_dropped);
//! # Ok(()) }
//! ```

pub mod emulator;
pub mod model;
pub mod packet;
