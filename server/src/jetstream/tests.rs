//! The JetStream engine against a real three-node JetStream cluster on loopback.
//!
//! Needs the `nats-server` binary: `tests/nats-server.sh` installs the pinned one and prints
//! its path, which these tests read from `AETHERFLOW_NATS_SERVER`. They are `#[ignore]`d so a
//! plain `cargo test` without it reports them as ignored, never as passed; the README's test
//! command runs them with `--ignored`.

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::kv;
use futures_util::future::BoxFuture;

use super::{ClusterSettings, JetStreamEngine, lost_race};
use crate::storage::Storage;
use crate::storage::conformance::{self, Engine};

#[path = "../../tests/common/nats.rs"]
mod nats;
use nats::NatsCluster;

/// The engine on a cluster, reopened as a restarted relay would.
struct OnCluster {
    settings: ClusterSettings,
}

impl Engine for OnCluster {
    fn open(&mut self) -> BoxFuture<'_, Storage> {
        Box::pin(async move {
            let engine = JetStreamEngine::connect(&self.settings)
                .await
                .expect("connects to the cluster");
            Storage::with_history(engine)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn jetstream_passes_the_storage_conformance_suite() {
    let cluster = NatsCluster::start().await;
    let mut engine = OnCluster {
        settings: ClusterSettings {
            url: cluster.url(),
            prefix: "CONFORMANCE".into(),
            replicas: 3,
        },
    };
    conformance::run(&mut engine)
        .await
        .expect("JetStream keeps the storage contract");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn jetstream_passes_the_history_conformance_suite() {
    let cluster = NatsCluster::start().await;
    let mut engine = OnCluster {
        settings: ClusterSettings {
            url: cluster.url(),
            prefix: "HISTORY".into(),
            replicas: 3,
        },
    };
    crate::history::conformance::run(&mut engine)
        .await
        .expect("JetStream keeps the history contract");
}

#[test]
fn names_round_trip_through_keys() {
    for text in ["notes", "a.b c/..", "ünïcode ✓", "x"] {
        let Ok(doc) = aetherflow_crdt::DocName::parse(text) else {
            continue;
        };
        let key = super::key(&doc);
        assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
        assert_eq!(super::name_of(&key), Some(doc));
    }
    assert_eq!(super::name_of("zz"), None);
    assert_eq!(super::name_of("abc"), None);
}

/// An update refused by the server with JetStream error `code`, as async-nats reports it.
fn refused(code: u64) -> kv::UpdateError {
    let answer = format!(r#"{{"code":400,"err_code":{code},"description":"wrong last sequence"}}"#);
    let server: async_nats::jetstream::Error =
        serde_json::from_str(&answer).expect("a JetStream error");
    let publish = PublishError::with_source(PublishErrorKind::Other, server);
    kv::UpdateError::with_source(kv::UpdateErrorKind::Other, publish)
}

#[test]
fn both_wrong_last_sequence_answers_are_a_lost_race_and_other_failures_are_not() {
    assert!(lost_race(&kv::UpdateError::new(
        kv::UpdateErrorKind::WrongLastRevision
    )));
    assert!(
        lost_race(&refused(10164)),
        "a race seen during the proposal"
    );
    assert!(lost_race(&refused(10071)));
    assert!(!lost_race(&refused(10077)), "another JetStream refusal");
    assert!(!lost_race(&kv::UpdateError::new(
        kv::UpdateErrorKind::TimedOut
    )));
}

#[tokio::test(start_paused = true)]
async fn a_request_the_cluster_does_not_answer_is_tried_again_a_few_times() {
    use crate::storage::StoreError;
    use std::sync::atomic::{AtomicU32, Ordering};
    let tries = AtomicU32::new(0);
    // Unanswered twice, then answered: the caller sees the answer.
    let answered = super::unless_unanswered(|| async {
        match tries.fetch_add(1, Ordering::SeqCst) {
            0 | 1 => Err(StoreError::Io("no responders".into())),
            _ => Ok("answer"),
        }
    })
    .await;
    assert_eq!(answered.expect("answered on the third try"), "answer");
    // Never answered: the error after four tries.
    tries.store(0, Ordering::SeqCst);
    let unanswered: Result<(), _> = super::unless_unanswered(|| async {
        tries.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::Io("no responders".into()))
    })
    .await;
    assert!(unanswered.is_err_and(|e| e.is_io()));
    assert_eq!(tries.load(Ordering::SeqCst), 4);
    // Any other failure is not tried again.
    tries.store(0, Ordering::SeqCst);
    let refused: Result<(), _> = super::unless_unanswered(|| async {
        tries.fetch_add(1, Ordering::SeqCst);
        Err(StoreError::Unreadable("damaged".into()))
    })
    .await;
    assert!(refused.is_err());
    assert_eq!(tries.load(Ordering::SeqCst), 1);
}
