//! Issue 14.4: concurrent reads of one large document share one load of it (not a copy each),
//! and a read never misses a write acknowledged before it began. Against the real relay.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::api_client::http_bytes;
use common::{Relay, http_get, metric_value};
use yrs::{Map, ReadTxn, Transact};

/// A Yjs update setting `entries` entries of root map `m`, from a client with `client_id`.
fn map_update(client_id: u64, keys: impl Iterator<Item = String>) -> Vec<u8> {
    let doc = yrs::Doc::with_client_id(client_id);
    let map = doc.get_or_insert_map("m");
    {
        let mut txn = doc.transact_mut();
        for (i, key) in keys.enumerate() {
            map.insert(&mut txn, key, i as f64);
        }
    }
    doc.transact()
        .encode_state_as_update_v1(&yrs::StateVector::default())
}

#[tokio::test]
async fn concurrent_reads_of_one_document_share_its_load_and_see_every_acknowledged_write() {
    // One place at the gate: without sharing, reads that overlap a load get 503 `busy`.
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_in(dir.path(), &["--max-content-reads", "1"]);
    let big = map_update(1, (0..95_000).map(|i| format!("key{i:07}")));
    let (status, _, _) =
        http_bytes(relay.addr, "POST", "/api/v1/docs/big/update", None, &big).await;
    assert_eq!(status, 204);

    let reads: Vec<_> = (0..6)
        .map(|_| {
            let addr = relay.addr;
            tokio::spawn(async move {
                http_bytes(addr, "GET", "/api/v1/docs/big/content", None, &[]).await
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for read in reads {
        let (status, _, body) = read.await.unwrap();
        assert_eq!(
            status,
            200,
            "{}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
        bodies.push(body);
    }
    let json: serde_json::Value = serde_json::from_slice(&bodies[0]).unwrap();
    assert_eq!(json["content"]["m"].as_object().unwrap().len(), 95_000);
    assert!(bodies.iter().all(|b| *b == bodies[0]), "the reads disagree");
    let (_, metrics) = http_get(relay.addr, "/metrics").await;
    assert!(
        metric_value(&metrics, "aetherflow_content_reads_shared_total") >= 1.0,
        "no read shared another's load"
    );

    // A write acknowledged while a read is in flight: a read that starts after the
    // acknowledgement must not share the older read's answer.
    let addr = relay.addr;
    let in_flight = tokio::spawn(async move {
        http_bytes(addr, "GET", "/api/v1/docs/big/content", None, &[]).await
    });
    let late = map_update(2, std::iter::once("late-key".to_owned()));
    let (status, _, _) =
        http_bytes(relay.addr, "POST", "/api/v1/docs/big/update", None, &late).await;
    assert_eq!(status, 204);
    let (status, _, body) =
        http_bytes(relay.addr, "GET", "/api/v1/docs/big/content", None, &[]).await;
    assert!(status == 200 || status == 503, "{status}");
    if status == 200 {
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            json["content"]["m"].get("late-key").is_some(),
            "an acknowledged write is missing"
        );
    }
    assert_eq!(in_flight.await.unwrap().0, 200);
    // Once nothing is in flight, the write is there for everyone.
    let (status, _, body) =
        http_bytes(relay.addr, "GET", "/api/v1/docs/big/content", None, &[]).await;
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(json["content"]["m"].get("late-key").is_some());
}
