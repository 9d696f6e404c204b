//! Cluster mode when processes die or stall: a relay killed in the middle of a burst (several
//! seeds), the stream's leader or a follower killed, a relay stopped for longer than the
//! heartbeat and resumed. No update any client saw is lost, and writes go on.
//!
//! Needs a `nats-server` binary (`AETHERFLOW_NATS_SERVER="$(tests/nats-server.sh)"`); the
//! tests are `#[ignore]`d so a plain `cargo test` reports them as ignored, and the README's
//! test command runs them with `--ignored`.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;
#[path = "common/nats.rs"]
mod nats;

use std::time::Duration;

use common::{Relay, YClient, cluster_relay, read_text};
use nats::NatsCluster;

/// A small deterministic generator (xorshift), so a failing run names its seed.
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Asserts that every word of `seen` is in `stored` (every word is written with a space after
/// it, so `n1 ` is not found inside `n10 `).
fn nothing_lost(seen: &str, stored: &str, context: &str) {
    for word in seen.split_whitespace() {
        assert!(
            stored.contains(&format!("{word} ")),
            "{context}: {word} was seen but is missing from {stored}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn a_relay_killed_mid_burst_loses_nothing_a_client_saw() {
    let cluster = NatsCluster::start().await;
    let a = cluster_relay(&cluster.url(), "KILLED");
    for seed in [
        0x9e37_79b9_7f4a_7c15_u64,
        0x2545_f491_4f6c_dd1d,
        0x1405_7b7e_f767_814f,
    ] {
        burst_then_kill(&cluster, &a, seed).await;
    }
}

/// Two writers on each of A and a new relay B write in a seeded order; B is killed with
/// SIGKILL at a seeded moment, possibly with appends unacknowledged. Whatever B's reader
/// received before it died, and whatever A's clients hold, must be stored.
async fn burst_then_kill(cluster: &NatsCluster, a: &Relay, seed: u64) {
    let mut rng = Seeded(seed);
    let doc = format!("burst-{seed:x}");
    let mut b = cluster_relay(&cluster.url(), "KILLED");
    let mut watcher = YClient::connect(&b.ws_url(&doc)).await;
    let mut writers = Vec::new();
    for url in [a.ws_url(&doc), b.ws_url(&doc)] {
        writers.push(YClient::connect(&url).await);
        writers.push(YClient::connect(&url).await);
    }
    let kill_after = 10 + rng.below(50);
    for step in 0..kill_after {
        let w = rng.below(4) as usize;
        writers[w].append(&format!("w{w}n{step} ")).await;
        if rng.below(5) == 0 {
            writers[w].barrier().await;
        }
    }
    b.kill9();
    // Everything B broadcast to its reader before it died: only what JetStream acknowledged.
    watcher.drain().await;
    let seen_on_b = watcher.text();
    // A's writers: their own words, committed once A answers the barrier.
    let mut seen_on_a = Vec::new();
    for writer in &mut writers[..2] {
        writer.barrier().await;
        seen_on_a.push(writer.text());
    }
    let fresh = cluster_relay(&cluster.url(), "KILLED");
    let stored = read_text(&fresh, &doc).await;
    let context = format!("seed {seed:#x}, killed after {kill_after} appends");
    nothing_lost(&seen_on_b, &stored, &context);
    for seen in &seen_on_a {
        nothing_lost(seen, &stored, &context);
    }
    // Writes go on through the survivor, and the fresh relay's clients get them.
    let mut late = YClient::connect(&fresh.ws_url(&doc)).await;
    writers[0].append("after ").await;
    while !late.text().contains("after ") {
        late.handle_next().await;
    }
    nothing_lost(&stored, &late.text(), &context);
}

/// Which server of the stream to kill.
#[derive(Clone, Copy)]
enum Victim {
    Leader,
    Follower,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn killing_the_streams_leader_loses_nothing_and_writes_resume() {
    server_killed_between_writes("LEADER", Victim::Leader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn killing_a_follower_loses_nothing_and_writes_go_on() {
    server_killed_between_writes("FOLLOWER", Victim::Follower).await;
}

/// Ten words, the `victim` of the log stream killed with SIGKILL, ten more words; a fresh
/// relay then serves all twenty.
async fn server_killed_between_writes(prefix: &str, victim: Victim) {
    let mut cluster = NatsCluster::start().await;
    let relay = cluster_relay(&cluster.url(), prefix);
    let mut writer = YClient::connect(&relay.ws_url("doc")).await;
    for n in 0..10 {
        writer.append(&format!("before{n} ")).await;
    }
    writer.barrier().await;
    let seen = writer.text();
    let leader = cluster.leader_of(&format!("{prefix}_LOG")).await;
    cluster.kill(match victim {
        Victim::Leader => leader,
        Victim::Follower => (leader + 1) % 3,
    });
    for n in 0..10 {
        writer.append(&format!("after{n} ")).await;
    }
    // While the stream has no leader (or the relay's server is gone) the relay stores nothing:
    // it leaves what it cannot store with its writer and asks for it again once it can, and
    // refuses new connections with 507. The writer keeps answering (as any y-websocket client
    // does) until its relay serves every word.
    for _ in 0..120 {
        writer.barrier().await;
        if let Ok(reader) = YClient::try_connect(&relay.ws_url("doc")).await
            && (0..10).all(|n| reader.text().contains(&format!("after{n} ")))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let fresh = cluster_relay(&cluster.url(), prefix);
    let stored = read_text(&fresh, "doc").await;
    nothing_lost(&seen, &stored, "lost with the killed server");
    for n in 0..10 {
        let word = format!("after{n} ");
        assert!(
            stored.contains(&word),
            "{word} not stored after the server died: {stored}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn a_relay_stopped_past_the_heartbeat_catches_up_when_resumed() {
    let cluster = NatsCluster::start().await;
    let a = cluster_relay(&cluster.url(), "STOPPED");
    let b = cluster_relay(&cluster.url(), "STOPPED");
    let mut ann = YClient::connect(&a.ws_url("doc")).await;
    let mut bob = YClient::connect(&b.ws_url("doc")).await;
    ann.append("ann ").await;
    bob.wait_for_text("ann ").await;
    // A freezes (SIGSTOP) for longer than the presence heartbeat allows; B goes on.
    a.signal("STOP");
    bob.append("while-stopped ").await;
    bob.barrier().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    a.signal("CONT");
    // Resumed, A catches up on what it missed and takes writes again.
    ann.wait_for_text("ann while-stopped ").await;
    ann.append("resumed ").await;
    bob.wait_for_text("ann while-stopped resumed ").await;
    let fresh = cluster_relay(&cluster.url(), "STOPPED");
    assert_eq!(read_text(&fresh, "doc").await, "ann while-stopped resumed ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn healthz_says_not_ready_while_no_nats_server_answers() {
    let mut cluster = NatsCluster::start().await;
    let relay = cluster_relay(&cluster.url(), "HEALTH");
    assert_eq!(common::http_get(relay.addr, "/healthz").await.0, 200);
    for server in 0..3 {
        cluster.kill(server);
    }
    // The relay notices the lost connection within its client's ping or on the next read; a
    // balancer polling /healthz then steers new clients elsewhere.
    let mut status = 200;
    for _ in 0..120 {
        status = common::http_get(relay.addr, "/healthz").await.0;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status, 503, "/healthz still ok with every NATS server gone");
    assert_eq!(common::http_get(relay.addr, "/livez").await.0, 200);
}
