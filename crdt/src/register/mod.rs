//! Documents that are not CRDTs: registers holding one JSON value.
//!
//! - [`lww`]: last writer wins. Every write carries a [`clock::HlcStamp`] and its writer's id; the
//!   highest `(stamp, writer)` wins on every replica alike, whatever the arrival order.
//! - [`manual`]: a versioned value. A write names the version it was based on; a write on a
//!   stale version becomes a [`manual::Conflict`] and changes nothing until someone resolves it.
//!
//! The relay, the SDK and the tests share these rules, so a value never depends on where it was
//! merged.
//!
//! ```
//! use aetherflow_crdt::register::clock::HybridClock;
//! use aetherflow_crdt::register::lww::{LwwRegister, LwwWrite, Outcome};
//! use serde_json::json;
//!
//! let mut alice = HybridClock::new();
//! let mut bob = HybridClock::new();
//! let early = LwwWrite::new(json!("Draft"), alice.tick(1_000), "alice");
//! let late = LwwWrite::new(json!("Final"), bob.tick(2_000), "bob");
//!
//! // Whatever order the relay sees them in, "Final" wins, and the stale write is reported.
//! let mut register = LwwRegister::default();
//! assert_eq!(register.apply(late.clone()), Outcome::Applied);
//! assert!(matches!(register.apply(early), Outcome::Stale { .. }));
//! assert_eq!(register.value(), Some(&json!("Final")));
//! ```

pub mod clock;
pub mod lww;
pub mod manual;
