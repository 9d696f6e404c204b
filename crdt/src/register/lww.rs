//! The last-writer-wins register: the write with the highest `(stamp, writer)` is the value,
//! on every replica, whatever order the writes arrive in.
//!
//! The merge is commutative, associative and idempotent (property-tested below), so replicas
//! that have seen the same set of writes hold the same value.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::clock::HlcStamp;

/// Who wrote, and when: ordered by stamp, then by writer id to break ties between writers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WriteStamp {
    /// The writer's hybrid-logical-clock stamp.
    pub clock: HlcStamp,
    /// The writer's id (a user or replica id).
    pub writer: String,
}

/// One write to a register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwWrite {
    /// The new value.
    pub value: Value,
    /// Its stamp.
    pub stamp: WriteStamp,
}

impl LwwWrite {
    /// A write of `value` by `writer` at `clock`.
    pub fn new(value: Value, clock: HlcStamp, writer: impl Into<String>) -> LwwWrite {
        LwwWrite {
            value,
            stamp: WriteStamp {
                clock,
                writer: writer.into(),
            },
        }
    }

    /// Whether `self` beats `other`. Equal stamps (a writer reusing one) are settled by the
    /// values' canonical JSON text, so even that case has one winner everywhere.
    fn beats(&self, other: &LwwWrite) -> bool {
        match self.stamp.cmp(&other.stamp) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            std::cmp::Ordering::Equal => canonical(&self.value) > canonical(&other.value),
        }
    }
}

/// serde_json keeps object keys sorted (no `preserve_order` feature), so this text is canonical.
fn canonical(value: &Value) -> String {
    value.to_string()
}

/// What applying a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The write is the register's value now.
    Applied,
    /// The register already holds this very write.
    Duplicate,
    /// A later write is already the value; the writer should adopt it.
    Stale {
        /// The stamp that won.
        current: WriteStamp,
    },
}

/// A last-writer-wins register.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LwwRegister {
    current: Option<LwwWrite>,
}

impl LwwRegister {
    /// The current value, if any write has arrived.
    pub fn value(&self) -> Option<&Value> {
        self.current.as_ref().map(|w| &w.value)
    }

    /// The winning write's stamp.
    pub fn stamp(&self) -> Option<&WriteStamp> {
        self.current.as_ref().map(|w| &w.stamp)
    }

    /// The winning write.
    pub fn current(&self) -> Option<&LwwWrite> {
        self.current.as_ref()
    }

    /// Applies one write.
    pub fn apply(&mut self, write: LwwWrite) -> Outcome {
        match &self.current {
            Some(current) if *current == write => Outcome::Duplicate,
            Some(current) if !write.beats(current) => Outcome::Stale {
                current: current.stamp.clone(),
            },
            _ => {
                self.current = Some(write);
                Outcome::Applied
            }
        }
    }

    /// Takes in everything `other` knows (state-based merge).
    pub fn merge(&mut self, other: &LwwRegister) {
        if let Some(write) = &other.current {
            self.apply(write.clone());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn write(wall_ms: u64, counter: u32, writer: &str, value: Value) -> LwwWrite {
        LwwWrite::new(value, HlcStamp { wall_ms, counter }, writer)
    }

    #[test]
    fn a_later_stamp_wins_and_an_earlier_one_is_told_it_is_stale() {
        let mut register = LwwRegister::default();
        assert_eq!(
            register.apply(write(2, 0, "b", json!("new"))),
            Outcome::Applied
        );
        let outcome = register.apply(write(1, 9, "a", json!("old")));
        assert_eq!(
            outcome,
            Outcome::Stale {
                current: write(2, 0, "b", json!(null)).stamp
            }
        );
        assert_eq!(register.value(), Some(&json!("new")));
    }

    #[test]
    fn the_writer_id_breaks_a_tie_between_equal_clocks() {
        let mut register = LwwRegister::default();
        register.apply(write(5, 0, "zed", json!(1)));
        register.apply(write(5, 0, "amy", json!(2)));
        assert_eq!(register.value(), Some(&json!(1)));
    }

    #[test]
    fn the_same_write_twice_is_a_duplicate() {
        let mut register = LwwRegister::default();
        register.apply(write(5, 0, "a", json!({"k": 1})));
        assert_eq!(
            register.apply(write(5, 0, "a", json!({"k": 1}))),
            Outcome::Duplicate
        );
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,6}".prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            Just(Value::Null),
            ("[a-z]{1,3}", any::<i32>()).prop_map(|(k, v)| json!({ k: v })),
        ]
    }

    fn arb_write() -> impl Strategy<Value = LwwWrite> {
        // Small ranges so that equal clocks and equal stamps actually occur.
        (0u64..4, 0u32..3, "[ab]", arb_value())
            .prop_map(|(ms, counter, writer, value)| write(ms, counter, &writer, value))
    }

    fn apply_all(writes: &[LwwWrite]) -> LwwRegister {
        let mut register = LwwRegister::default();
        for w in writes {
            register.apply(w.clone());
        }
        register
    }

    proptest! {
        #[test]
        fn any_arrival_order_gives_the_same_value(
            (writes, order) in proptest::collection::vec(arb_write(), 1..12)
                .prop_flat_map(|w| { let n = w.len(); (Just(w), Just((0..n).collect::<Vec<_>>()).prop_shuffle()) })
        ) {
            let shuffled: Vec<LwwWrite> = order.iter().map(|&i| writes[i].clone()).collect();
            prop_assert_eq!(apply_all(&writes), apply_all(&shuffled));
        }

        #[test]
        fn applying_writes_again_changes_nothing(writes in proptest::collection::vec(arb_write(), 1..12)) {
            let once = apply_all(&writes);
            let mut twice = once.clone();
            for w in &writes {
                prop_assert_ne!(twice.apply(w.clone()), Outcome::Applied);
            }
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn the_winner_is_the_highest_stamp(writes in proptest::collection::vec(arb_write(), 1..12)) {
            let register = apply_all(&writes);
            let highest = writes.iter().map(|w| &w.stamp).max().unwrap();
            prop_assert_eq!(register.stamp(), Some(highest));
        }

        #[test]
        fn merging_replicas_is_commutative_and_associative(
            a in proptest::collection::vec(arb_write(), 0..6),
            b in proptest::collection::vec(arb_write(), 0..6),
            c in proptest::collection::vec(arb_write(), 0..6),
        ) {
            let (ra, rb, rc) = (apply_all(&a), apply_all(&b), apply_all(&c));
            let mut ab = ra.clone();
            ab.merge(&rb);
            let mut ba = rb.clone();
            ba.merge(&ra);
            prop_assert_eq!(&ab, &ba);
            let mut ab_c = ab.clone();
            ab_c.merge(&rc);
            let mut bc = rb.clone();
            bc.merge(&rc);
            let mut a_bc = ra.clone();
            a_bc.merge(&bc);
            prop_assert_eq!(ab_c, a_bc);
        }
    }
}
