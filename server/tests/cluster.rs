//! Cluster mode: several relays on one NATS JetStream cluster serve the same documents.
//!
//! Needs a `nats-server` binary (`AETHERFLOW_NATS_SERVER="$(tests/nats-server.sh)"`); the
//! tests are `#[ignore]`d so a plain `cargo test` reports them as ignored, and the README's
//! test command runs them with `--ignored`.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;
#[path = "common/nats.rs"]
mod nats;

use common::{Relay, YClient, read_text};
use nats::NatsCluster;

/// A relay of the cluster, its documents under `prefix`.
fn relay(cluster: &NatsCluster, prefix: &str) -> Relay {
    Relay::start(&[
        "--cluster",
        &cluster.url(),
        "--cluster-prefix",
        prefix,
        "--cluster-replicas",
        "3",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn clients_on_different_relays_converge_and_a_late_joiner_on_a_third_gets_everything() {
    let cluster = NatsCluster::start().await;
    let (a, b, c) = (
        relay(&cluster, "CONVERGE"),
        relay(&cluster, "CONVERGE"),
        relay(&cluster, "CONVERGE"),
    );
    let mut alice = YClient::connect(&a.ws_url("shared")).await;
    let mut bob = YClient::connect(&b.ws_url("shared")).await;
    alice.append("alice ").await;
    bob.append("bob ").await;
    let converged = loop {
        let text = alice.text();
        if text.contains("alice") && text.contains("bob") {
            break text;
        }
        alice.wait_for_text_change().await;
    };
    bob.wait_for_text(&converged).await;
    // More edits after both are connected travel too.
    alice.append("again").await;
    let converged = format!("{converged}again");
    bob.wait_for_text(&converged).await;
    let mut carol = YClient::connect(&c.ws_url("shared")).await;
    carol.wait_for_text(&converged).await;
    // The HTTP read of any relay agrees.
    assert_eq!(read_text(&b, "shared").await, converged);
}

/// The next awareness payload `client` receives.
async fn next_awareness(client: &mut YClient) -> Vec<u8> {
    loop {
        if let aetherflow_crdt::protocol::Message::Awareness(payload) = client.next_message().await
        {
            return payload;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn presence_crosses_relays_reaches_a_late_relay_and_a_killed_relays_users_leave_it() {
    use aetherflow_crdt::awareness::encode_update;
    use aetherflow_crdt::protocol::Message;
    let cluster = NatsCluster::start().await;
    let mut a = relay(&cluster, "PRESENCE");
    let b = relay(&cluster, "PRESENCE");
    let mut ann = YClient::connect(&a.ws_url("room")).await;
    let mut bob = YClient::connect(&b.ws_url("room")).await;
    ann.send(&Message::Awareness(encode_update(&[(
        7,
        1,
        r#"{"user":"ann"}"#,
    )])))
    .await;
    let seen = loop {
        let payload = next_awareness(&mut bob).await;
        if String::from_utf8_lossy(&payload).contains("ann") {
            break payload;
        }
    };
    assert!(!seen.is_empty());
    // A relay that loads the document later asks the others: Carol, on a third relay, sees
    // Ann at once (Ann's client renews its state only every 15 s; this one never does).
    let c = relay(&cluster, "PRESENCE");
    let mut carol = YClient::connect(&c.ws_url("room")).await;
    while !String::from_utf8_lossy(&next_awareness(&mut carol).await).contains("ann") {}
    // Ann's relay dies: within a few heartbeats Bob is told she is gone (state null).
    a.kill9();
    let gone = loop {
        let payload = next_awareness(&mut bob).await;
        if String::from_utf8_lossy(&payload).contains("null") {
            break payload;
        }
    };
    assert!(!String::from_utf8_lossy(&gone).contains("ann"), "{gone:?}");
    drop(ann);
}
