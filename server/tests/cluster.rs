//! Cluster mode: several relays on one NATS JetStream cluster serve the same documents.
//!
//! Needs a `nats-server` binary (`AETHERFLOW_NATS_SERVER="$(tests/nats-server.sh)"`); the
//! tests are `#[ignore]`d so a plain `cargo test` reports them as ignored, and the README's
//! test command runs them with `--ignored`.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;
#[path = "common/nats.rs"]
mod nats;

use common::{Relay, YClient, cluster_relay, http_json, read_text};
use nats::NatsCluster;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn clients_on_different_relays_converge_and_a_late_joiner_on_a_third_gets_everything() {
    let cluster = NatsCluster::start().await;
    let (a, b, c) = (
        cluster_relay(&cluster.url(), "CONVERGE"),
        cluster_relay(&cluster.url(), "CONVERGE"),
        cluster_relay(&cluster.url(), "CONVERGE"),
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
    let mut a = cluster_relay(&cluster.url(), "PRESENCE");
    let b = cluster_relay(&cluster.url(), "PRESENCE");
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
    let c = cluster_relay(&cluster.url(), "PRESENCE");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn the_admin_sees_and_closes_every_relays_sessions_through_any_relay() {
    const KEY: &str = "admin-key-for-cluster-tests";
    let cluster = NatsCluster::start().await;
    let url = cluster.url();
    let args = [
        "--cluster",
        &url,
        "--cluster-prefix",
        "ADMIN",
        "--admin-key",
        KEY,
    ];
    let (a, b) = (Relay::start(&args), Relay::start(&args));
    let admin = |relay: &Relay, method: &'static str, path: String| {
        let addr = relay.addr;
        async move { http_json(addr, method, &path, Some(KEY), None).await }
    };
    let _ann = YClient::connect(&a.ws_url("plan")).await;
    let mut bob = YClient::connect(&b.ws_url("plan")).await;
    let _cy = YClient::connect(&b.ws_url("notes")).await;
    // Per relay: each sees its own.
    let (_, own) = admin(&a, "GET", "/api/v1/sessions".into()).await;
    assert_eq!(own["sessions"].as_array().unwrap().len(), 1, "{own}");
    // The whole cluster, through either relay (once each has heard the other's heartbeat,
    // within a second of starting).
    let mut everyone = Value::Null;
    for relay in [&a, &b] {
        everyone = loop {
            let (status, page) = admin(relay, "GET", "/api/v1/sessions?scope=cluster".into()).await;
            assert_eq!(status, 200, "{page}");
            if page["relays"] == 2 {
                break page;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        };
    }
    let sessions = everyone["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 3, "{everyone}");
    let relays: std::collections::BTreeSet<&str> = sessions
        .iter()
        .map(|s| s["relay"].as_str().unwrap())
        .collect();
    assert_eq!(relays.len(), 2, "{everyone}");
    // Paged, oldest first, across relays.
    let (_, first) = admin(&b, "GET", "/api/v1/sessions?scope=cluster&limit=2".into()).await;
    assert_eq!(first["sessions"].as_array().unwrap().len(), 2, "{first}");

    let after = first["next_after"].as_str().unwrap();
    let path = format!("/api/v1/sessions?scope=cluster&limit=2&after={after}");
    let (_, second) = admin(&b, "GET", path).await;
    assert_eq!(second["sessions"].as_array().unwrap().len(), 1, "{second}");
    assert!(second.get("next_after").is_none(), "{second}");
    assert_eq!(second["sessions"][0]["id"], sessions[2]["id"]);
    // Closing every session on a document through relay A closes Bob's, on relay B.
    let (status, closed) = admin(
        &a,
        "DELETE",
        "/api/v1/sessions?document=plan&scope=cluster".into(),
    )
    .await;
    assert_eq!((status, &closed["requested"]), (200, &json!(2)), "{closed}");
    let close = bob.expect_close().await;
    assert_eq!(u16::from(close.code), 1008);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn sdk_clients_over_quantum_and_websocket_on_different_relays_converge_and_each_relay_counts_its_own()
 {
    use aetherflow_client::testing::{append_text, wait_text};
    use aetherflow_client::{Client, ClientConfig};
    let cluster = NatsCluster::start().await;
    let (a, b) = (
        cluster_relay(&cluster.url(), "SDK"),
        cluster_relay(&cluster.url(), "SDK"),
    );
    let (dir_q, dir_w) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let config = |dir: &std::path::Path| {
        let mut config = ClientConfig::new(dir).backoff(aetherflow_client::Backoff {
            initial: std::time::Duration::from_millis(20),
            max: std::time::Duration::from_millis(200),
        });
        config.quantum_handshake_timeout = std::time::Duration::from_millis(500);
        config
    };
    // One native client over Quantum on relay A, one over WebSocket on relay B.
    let on_a = Client::open(
        config(dir_q.path())
            .quantum(a.quantum_addr.unwrap())
            .quantum_key(a.quantum_key()),
    )
    .unwrap();
    let on_b = Client::open(config(dir_w.path()).websocket(format!("ws://{}", b.addr))).unwrap();
    let (qa, wb) = (
        on_a.doc("native").await.unwrap(),
        on_b.doc("native").await.unwrap(),
    );
    append_text(&qa, "text", "quantum on A;");
    wait_text(&wb, "text", common::TIMEOUT, |t| t == "quantum on A;").await;
    append_text(&wb, "text", "websocket on B;");
    let both = "quantum on A;websocket on B;";
    wait_text(&qa, "text", common::TIMEOUT, |t| t == both).await;
    // A y-websocket client on a third relay gets what both wrote.
    let c = cluster_relay(&cluster.url(), "SDK");
    YClient::connect(&c.ws_url("native"))
        .await
        .wait_for_text(both)
        .await;
    // Each relay's /metrics counts its own connections, not the cluster's.
    for (relay, quantum, websocket) in [(&a, 1.0, 0.0), (&b, 0.0, 1.0)] {
        let (_, metrics) = common::http_get(relay.addr, "/metrics").await;
        let open = |transport: &str| {
            let series = format!("aetherflow_connections{{transport=\"{transport}\"}}");
            common::metric_value(&metrics, &series)
        };
        assert_eq!((open("quantum"), open("websocket")), (quantum, websocket));
    }
    on_a.close().await.unwrap();
    on_b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn an_edit_larger_than_a_nats_message_is_stored_and_crosses_relays() {
    let cluster = NatsCluster::start().await;
    // Compaction after every few entries, so a large entry is also folded and purged.
    let args = [
        "--cluster",
        &cluster.url(),
        "--cluster-prefix",
        "LARGE",
        "--compact-after-updates",
        "3",
    ];
    let (a, b) = (Relay::start(&args), Relay::start(&args));
    let mut writer = YClient::connect(&a.ws_url("paste")).await;
    let mut reader = YClient::connect(&b.ws_url("paste")).await;
    // A paste of 3 MiB: NATS carries at most 1 MiB per message by default.
    let paste = "x".repeat(3 << 20);
    writer.append(&paste).await;
    for n in 0..4 {
        writer.append(&format!(" after{n}")).await;
    }
    writer.barrier().await;
    let expected = writer.text();
    reader.wait_for_text(&expected).await;
    let fresh = Relay::start(&args);
    assert!(
        read_text(&fresh, "paste").await == expected,
        "the paste is lost"
    );
}

/// A relay of the `HISTORY` cluster deployment with tokens, compacting every 4 entries.
fn history_relay(urls: &str) -> Relay {
    Relay::start(&[
        "--cluster",
        urls,
        "--cluster-prefix",
        "HISTORY",
        "--cluster-replicas",
        "3",
        "--jwt-secret",
        common::api_client::SECRET,
        "--compact-after-updates",
        "4",
    ])
}

/// A writer on `doc` at `relay`, signed in as `who`.
async fn signed_in(relay: &Relay, doc: &str, who: &str) -> (YClient, String) {
    use aetherflow_server::auth::Permission;
    let token = common::api_client::token(who, &[doc], Permission::Write);
    let url = format!("{}?token={token}", relay.ws_url(doc));
    (YClient::connect(&url).await, token)
}

/// `doc`'s versions, newest first, as `relay` lists them.
async fn versions_on(relay: &Relay, doc: &str, bearer: &str) -> Vec<Value> {
    let path = format!("/api/v1/docs/{doc}/history?limit=1000");
    let (status, page) = http_json(relay.addr, "GET", &path, Some(bearer), None).await;
    assert_eq!(status, 200, "{page}");
    page["versions"].as_array().unwrap().clone()
}

/// The text of `doc` at `version`, as `relay` reads it.
async fn text_on(relay: &Relay, doc: &str, version: u64, bearer: &str) -> String {
    let path = format!("/api/v1/docs/{doc}/history/{version}/content");
    let (status, body) = http_json(relay.addr, "GET", &path, Some(bearer), None).await;
    assert_eq!(status, 200, "{body}");
    body["content"]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a nats-server binary: AETHERFLOW_NATS_SERVER=$(tests/nats-server.sh)"]
async fn history_written_through_one_relay_is_browsed_labelled_and_restored_through_another() {
    let cluster = NatsCluster::start().await;
    let (a, b) = (history_relay(&cluster.url()), history_relay(&cluster.url()));
    let doc = "minutes";
    let (mut ada, ada_token) = signed_in(&a, doc, "ada").await;
    let (mut bob, bob_token) = signed_in(&b, doc, "bob").await;
    // Ada and Bob take turns, each turn a version of its own; compaction runs every 4 entries.
    let mut expected = String::new();
    let mut after_turn = Vec::new();
    for turn in 0..10 {
        let (writer, other, words) = match turn % 2 {
            0 => (&mut ada, &mut bob, format!("ada{turn} ")),
            _ => (&mut bob, &mut ada, format!("bob{turn} ")),
        };
        writer.append(&words).await;
        writer.barrier().await;
        expected.push_str(&words);
        other.wait_for_text(&expected).await;
        after_turn.push(expected.clone());
    }
    let listed = versions_on(&b, doc, &bob_token).await;
    assert_eq!(listed.len(), 10, "one version per turn: {listed:?}");
    let oldest_first: Vec<&Value> = listed.iter().rev().collect();
    for (turn, version) in oldest_first.iter().enumerate() {
        let who = if turn % 2 == 0 { "ada" } else { "bob" };
        assert_eq!(version["authors"], json!([who]), "{version}");
        let id = version["id"].as_u64().unwrap();
        // Either relay gives every version's content, compacted or not.
        let relay = if turn % 2 == 0 { &b } else { &a };
        assert_eq!(text_on(relay, doc, id, &ada_token).await, after_turn[turn]);
    }

    // A label set through one relay is listed by the other.
    let draft = oldest_first[2]["id"].as_u64().unwrap();
    let path = format!("/api/v1/docs/{doc}/history/{draft}/label");
    let body = json!({ "label": "draft" });
    let (status, answer) = http_json(a.addr, "PUT", &path, Some(&ada_token), Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    let labels_path = format!("/api/v1/docs/{doc}/history/labels");
    let (status, labels) = http_json(b.addr, "GET", &labels_path, Some(&bob_token), None).await;
    assert_eq!(status, 200, "{labels}");
    assert_eq!(
        labels["labels"],
        json!([{ "version": draft, "label": "draft" }])
    );

    // Restored through relay B, the draft reaches Ada on relay A as an ordinary update.
    let path = format!("/api/v1/docs/{doc}/history/{draft}/restore");
    let (status, answer) = http_json(b.addr, "POST", &path, Some(&bob_token), None).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["changed"], true);
    ada.wait_for_text(&after_turn[2]).await;
    bob.wait_for_text(&after_turn[2]).await;
    // The restore is a version too, by Bob, and a relay started later sees all of it.
    let c = history_relay(&cluster.url());
    let listed = versions_on(&c, doc, &ada_token).await;
    assert_eq!(listed[0]["authors"], json!(["bob"]), "{listed:?}");
    let restored = listed[0]["id"].as_u64().unwrap();
    assert_eq!(text_on(&c, doc, restored, &ada_token).await, after_turn[2]);
    assert_eq!(text_on(&c, doc, draft, &ada_token).await, after_turn[2]);
    let url = format!("{}?token={ada_token}", c.ws_url(doc));
    assert_eq!(common::read_text_with(&url).await, after_turn[2]);
}
