//! Cluster mode's shared state under concurrent writers on different relays: `lww` and
//! `manual` registers and their conflicts, and Yjs compaction while every relay takes writes.
//!
//! Needs a `nats-server` binary (`AETHERFLOW_NATS_SERVER="$(tests/nats-server.sh)"`); the
//! tests are `#[ignore]`d so a plain `cargo test` reports them as ignored, and the README's
//! test command runs them with `--ignored`.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;
#[path = "common/nats.rs"]
mod nats;

use common::{Relay, YClient, http_json, read_text};
use nats::NatsCluster;
use serde_json::{Value, json};

/// Three relays of `cluster`, their documents under `prefix`, with `extra` flags.
fn relays(cluster: &NatsCluster, prefix: &str, extra: &[&str]) -> [Relay; 3] {
    let url = cluster.url();
    let mut args = vec!["--cluster", &url, "--cluster-prefix", prefix];
    args.extend_from_slice(extra);
    [
        Relay::start(&args),
        Relay::start(&args),
        Relay::start(&args),
    ]
}

async fn create(relay: &Relay, name: &str, kind: &str) {
    let body = json!({ "name": name, "kind": kind });
    let (status, created) = http_json(relay.addr, "POST", "/api/v1/docs", None, Some(body)).await;
    assert_eq!(status, 201, "{created}");
}

async fn register(relay: &Relay, doc: &str) -> Value {
    let path = format!("/api/v1/docs/{doc}/register");
    let (status, register) = http_json(relay.addr, "GET", &path, None, None).await;
    assert_eq!(status, 200, "{register}");
    register
}

fn lww_write(value: &str, wall_ms: u64, writer: &str) -> Value {
    json!({ "value": value, "stamp": { "clock": { "wall_ms": wall_ms, "counter": 0 }, "writer": writer } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn lww_writers_on_every_relay_end_on_the_highest_stamp_everywhere() {
    let cluster = NatsCluster::start().await;
    let relays = relays(&cluster, "LWW", &[]);
    create(&relays[0], "status", "lww").await;
    let writers: Vec<_> = (0..24u64)
        .map(|i| {
            // Stamps in scrambled order over the relays, so neither arrival order nor the
            // relay that took a write says anything about the winner.
            let wall_ms = (i * 7919) % 24;
            let body = lww_write(&format!("from-{wall_ms}"), wall_ms, &format!("w{i}"));
            let addr = relays[i as usize % 3].addr;
            tokio::spawn(async move {
                let path = "/api/v1/docs/status/register";
                http_json(addr, "PUT", path, None, Some(body)).await
            })
        })
        .collect();
    for writer in writers {
        let (status, outcome) = writer.await.unwrap();
        assert_eq!(status, 200, "{outcome}");
    }
    for relay in &relays {
        assert_eq!(register(relay, "status").await["value"], "from-23");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn a_stale_manual_write_conflicts_whichever_relay_took_it_and_resolves_once() {
    let cluster = NatsCluster::start().await;
    let [a, b, c] = relays(&cluster, "MANUAL", &[]);
    create(&a, "notes", "manual").await;
    let path = "/api/v1/docs/notes/register";
    let write = |base: u64, value: &str, author: &str| json!({ "value": value, "base_version": base, "author": author });
    let (status, first) = http_json(b.addr, "PUT", path, None, Some(write(0, "v1", "ann"))).await;
    assert_eq!((status, &first["revision"]["version"]), (200, &json!(1)));
    // Rounds of two people editing the same version at the same moment through two relays:
    // exactly one applies, the other conflicts, every round.
    let mut conflicts = Vec::new();
    for round in 1..=3u64 {
        let (ann, bob) = (write(round, "ann's", "ann"), write(round, "bob's", "bob"));
        let (via_a, via_b) = tokio::join!(
            http_json(a.addr, "PUT", path, None, Some(ann)),
            http_json(b.addr, "PUT", path, None, Some(bob)),
        );
        let (via_a, via_b) = (via_a.1, via_b.1);
        let mut outcomes = [
            via_a["outcome"].as_str().unwrap(),
            via_b["outcome"].as_str().unwrap(),
        ];
        outcomes.sort();
        assert_eq!(outcomes, ["applied", "conflict"], "round {round}");
        let conflict = if via_a["outcome"] == "conflict" {
            via_a
        } else {
            via_b
        };
        assert_eq!(conflict["conflict"]["base_version"], round);
        conflicts.push(conflict["conflict"]["id"].as_u64().unwrap());
    }
    // The third relay took no part and agrees on the value and the open conflicts.
    let on_c = register(&c, "notes").await;
    assert_eq!(on_c["version"], 4, "{on_c}");
    assert_eq!(on_c["open_conflicts"], 3);
    let (_, listed) = http_json(c.addr, "GET", "/api/v1/docs/notes/conflicts", None, None).await;
    let mut ids: Vec<u64> = listed["conflicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, conflicts);
    // One conflict resolved through two relays at once: applied once, the other told it is
    // gone.
    let resolve = format!("/api/v1/docs/notes/conflicts/{}/resolve", conflicts[0]);
    let body = json!({ "value": "ann's + bob's", "author": "cy" });
    let (via_c, via_a) = tokio::join!(
        http_json(c.addr, "POST", &resolve, None, Some(body.clone())),
        http_json(a.addr, "POST", &resolve, None, Some(body)),
    );
    let mut statuses = [via_c.0, via_a.0];
    statuses.sort();
    assert_eq!(statuses, [200, 404], "{} / {}", via_c.1, via_a.1);
    for relay in [&a, &b, &c] {
        let register = register(relay, "notes").await;
        assert_eq!(register["value"], "ann's + bob's");
        assert_eq!(register["version"], 5);
        assert_eq!(register["open_conflicts"], 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn compaction_while_every_relay_takes_writes_loses_nothing() {
    let cluster = NatsCluster::start().await;
    // Every relay compacts after a few entries, so compactions race each other and the
    // appends of the other relays all the time.
    let relays = relays(&cluster, "COMPACT", &["--compact-after-updates", "4"]);
    let writers: Vec<_> = relays
        .iter()
        .enumerate()
        .map(|(r, relay)| {
            let url = relay.ws_url("busy");
            tokio::spawn(async move {
                let mut writer = YClient::connect(&url).await;
                for n in 0..40 {
                    writer.append(&format!("r{r}w{n} ")).await;
                    if n % 8 == 7 {
                        writer.barrier().await;
                    }
                }
                writer.barrier().await;
                writer
            })
        })
        .collect();
    let mut clients = Vec::new();
    for writer in writers {
        clients.push(writer.await.unwrap());
    }
    let words: Vec<String> = (0..3)
        .flat_map(|r| (0..40).map(move |n| format!("r{r}w{n} ")))
        .collect();
    // A relay that never saw the document loads it from the snapshots and the log alone.
    let fresh = Relay::start(&["--cluster", &cluster.url(), "--cluster-prefix", "COMPACT"]);
    let stored = read_text(&fresh, "busy").await;
    for word in &words {
        assert!(stored.contains(word.as_str()), "{word} lost: {stored}");
    }
    // Every writer converges on it.
    for client in &mut clients {
        client.wait_for_text(&stored).await;
    }
}
