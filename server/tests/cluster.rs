//! Cluster mode: several relays on one NATS JetStream cluster serve the same documents.
//!
//! Needs a `nats-server` binary (`AETHERFLOW_NATS_SERVER="$(tests/nats-server.sh)"`); the
//! tests are `#[ignore]`d so a plain `cargo test` reports them as ignored, and the README's
//! test command runs them with `--ignored`.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;
#[path = "common/nats.rs"]
mod nats;

use std::time::Duration;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn a_relay_killed_mid_burst_loses_nothing_a_client_saw() {
    let cluster = NatsCluster::start().await;
    let a = relay(&cluster, "KILLED");
    let mut b = relay(&cluster, "KILLED");
    let mut on_a = YClient::connect(&a.ws_url("burst")).await;
    let mut on_b = YClient::connect(&b.ws_url("burst")).await;
    for n in 0..20 {
        on_a.append(&format!("a{n} ")).await;
        on_b.append(&format!("b{n} ")).await;
    }
    // Once the relay answered the barrier, everything its client sees has been broadcast to
    // it, and a relay broadcasts only what JetStream acknowledged: its own client's edits
    // and what it followed from A.
    on_b.barrier().await;
    let seen = on_b.text();
    b.kill9();
    assert!(seen.contains("b19"), "{seen}");
    let fresh = relay(&cluster, "KILLED");
    let stored = read_text(&fresh, "burst").await;
    for word in seen.split_whitespace() {
        assert!(
            stored.contains(word),
            "{word} seen through B, missing from {stored}"
        );
    }
    // The surviving relay has it all too, and A's client gets everything B's had.
    assert_eq!(read_text(&a, "burst").await, stored);
    on_a.wait_for_text(&stored).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn killing_the_streams_leader_loses_nothing_and_writes_resume() {
    let mut cluster = NatsCluster::start().await;
    let relay = relay(&cluster, "LEADER");
    let mut writer = YClient::connect(&relay.ws_url("leader")).await;
    for n in 0..10 {
        writer.append(&format!("before{n} ")).await;
    }
    writer.barrier().await;
    let seen = writer.text();
    let leader = cluster.leader_of("LEADER_LOG").await;
    cluster.kill(leader);
    // The other two elect a new leader; the relay's client reconnects to one of them, and a
    // publish that lost its acknowledgement is sent again under the same id.
    for n in 0..10 {
        writer.append(&format!("after{n} ")).await;
    }
    // While the stream has no leader the relay stores nothing: it leaves what it cannot store
    // with its writer and asks for it again once it can. The writer keeps answering (as any
    // y-websocket client does) until its relay serves every word.
    // New connections are refused with 503 (storage unavailable) meanwhile.
    for _ in 0..120 {
        writer.barrier().await;
        if let Ok(reader) = YClient::try_connect(&relay.ws_url("leader")).await
            && (0..10).all(|n| reader.text().contains(&format!("after{n} ")))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let fresh = Relay::start(&[
        "--cluster",
        &cluster.url(),
        "--cluster-prefix",
        "LEADER",
        "--cluster-replicas",
        "3",
    ]);
    let stored = read_text(&fresh, "leader").await;
    for word in seen.split_whitespace() {
        assert!(
            stored.contains(word),
            "{word} lost with the leader: {stored}"
        );
    }
    for n in 0..10 {
        let word = format!("after{n} ");
        assert!(
            stored.contains(&word),
            "{word} not stored after the failover: {stored}"
        );
    }
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
async fn presence_crosses_relays_and_a_killed_relays_users_leave_it() {
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
