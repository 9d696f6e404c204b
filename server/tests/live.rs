//! The live register channel (`/api/v1/docs/{name}/live`, JSON text frames) against the real
//! relay: writes, conflicts detected and resolved across two clients, concurrent writers,
//! malformed frames, and who may connect.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use aetherflow_server::auth::Permission;
use common::api_client::{LiveClient, SECRET, token};
use common::{Relay, http_json};
use serde_json::{Value, json};

async fn create(relay: &Relay, name: &str, kind: &str) {
    let body = json!({ "name": name, "kind": kind });
    let (status, created) = http_json(relay.addr, "POST", "/api/v1/docs", None, Some(body)).await;
    assert_eq!(status, 201, "{created}");
}

fn stamp(wall_ms: u64, writer: &str) -> Value {
    json!({ "clock": { "wall_ms": wall_ms, "counter": 0 }, "writer": writer })
}

/// Reads messages until the answer to request `id`.
async fn result_of(client: &mut LiveClient, id: u64) -> Value {
    loop {
        let message = client.next().await;
        if (message["type"] == "result" || message["type"] == "error") && message["id"] == id {
            return message;
        }
    }
}

#[tokio::test]
async fn lww_writes_reach_every_live_client_and_stale_ones_are_told() {
    let relay = Relay::start(&[]);
    create(&relay, "title", "lww").await;
    let mut ann = LiveClient::connect(relay.addr, "title", None).await;
    let mut bob = LiveClient::connect(relay.addr, "title", None).await;
    assert_eq!(ann.state["register"]["kind"], "lww");

    ann.send(json!({ "op": "write", "id": 1, "value": "Draft", "stamp": stamp(200, "ann") }))
        .await;
    assert_eq!(
        result_of(&mut ann, 1).await["outcome"]["outcome"],
        "applied"
    );
    let seen = bob.wait_for("updated").await;
    assert_eq!(seen["register"]["value"], "Draft");

    bob.send(json!({ "op": "write", "id": 7, "value": "Old", "stamp": stamp(100, "bob") }))
        .await;
    let stale = result_of(&mut bob, 7).await;
    assert_eq!(stale["outcome"]["outcome"], "stale");
    assert_eq!(stale["outcome"]["current"]["writer"], "ann");
    let (_, register) =
        http_json(relay.addr, "GET", "/api/v1/docs/title/register", None, None).await;
    assert_eq!(register["value"], "Draft");
}

#[tokio::test]
async fn a_manual_conflict_is_detected_and_resolved_across_two_clients() {
    let relay = Relay::start(&[]);
    create(&relay, "notes", "manual").await;
    let mut ann = LiveClient::connect(relay.addr, "notes", None).await;
    let mut bob = LiveClient::connect(relay.addr, "notes", None).await;
    ann.send(json!({ "op": "write", "id": 1, "value": "v1", "base_version": 0, "author": "ann" }))
        .await;
    assert_eq!(
        result_of(&mut ann, 1).await["outcome"]["revision"]["version"],
        1
    );
    // Both edit version 1; ann is first, so bob's write becomes a conflict both see.
    ann.send(
        json!({ "op": "write", "id": 2, "value": "ann's", "base_version": 1, "author": "ann" }),
    )
    .await;
    assert_eq!(
        result_of(&mut ann, 2).await["outcome"]["outcome"],
        "applied"
    );
    bob.send(
        json!({ "op": "write", "id": 3, "value": "bob's", "base_version": 1, "author": "bob" }),
    )
    .await;
    let answer = result_of(&mut bob, 3).await;
    assert_eq!(answer["outcome"]["outcome"], "conflict");
    let detected = ann.wait_for("conflict_detected").await;
    let id = detected["conflict"]["id"].as_u64().unwrap();
    assert_eq!(detected["conflict"]["proposed"]["value"], "bob's");

    ann.send(json!({ "op": "resolve", "id": 4, "conflict": id, "value": "ann's + bob's" }))
        .await;
    assert_eq!(
        result_of(&mut ann, 4).await["outcome"]["revision"]["version"],
        3
    );
    let resolved = bob.wait_for("conflict_resolved").await;
    assert_eq!(resolved["conflict"], id);
    let updated = bob.wait_for("updated").await;
    assert_eq!(updated["register"]["value"], "ann's + bob's");
    assert_eq!(updated["register"]["open_conflicts"], 0);
    // Resolving again is an error answer; the connection stays usable.
    ann.send(json!({ "op": "resolve", "id": 5, "conflict": id, "value": "again" }))
        .await;
    assert_eq!(result_of(&mut ann, 5).await["error"]["code"], "not_found");
}

#[tokio::test]
async fn concurrent_live_writers_converge_on_the_highest_stamp() {
    let relay = Relay::start(&[]);
    create(&relay, "status", "lww").await;
    let addr = relay.addr;
    let writers: Vec<_> = (0..8u64)
        .map(|i| {
            tokio::spawn(async move {
                let mut client = LiveClient::connect(addr, "status", None).await;
                for k in 0..5u64 {
                    // Stamps scrambled across writers, so arrival order says nothing.
                    let wall_ms = (i * 5 + k) * 7919 % 40;
                    let id = i * 100 + k;
                    let write = json!({ "op": "write", "id": id, "value": format!("from-{wall_ms}"), "stamp": stamp(wall_ms, &format!("w{i}")) });
                    client.send(write).await;
                    assert_eq!(result_of(&mut client, id).await["type"], "result");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let (_, register) = http_json(addr, "GET", "/api/v1/docs/status/register", None, None).await;
    assert_eq!(register["value"], "from-39");
}

#[tokio::test]
async fn malformed_frames_close_with_a_code_and_reason() {
    let relay = Relay::start(&[]);
    create(&relay, "title", "lww").await;
    let cases: [(&str, u16); 4] = [
        ("not json", 1007),
        (r#"{"op":"explode"}"#, 1007),
        (r#"{"op":"write","value":1}"#, 1007),
        (r#"{"op":"resolve","conflict":"one","value":1}"#, 1007),
    ];
    for (text, code) in cases {
        let mut client = LiveClient::connect(relay.addr, "title", None).await;
        client.send_text(text.to_owned()).await;
        let close = client.expect_close().await;
        assert_eq!(u16::from(close.code), code, "{text}");
        assert!(
            close.reason.as_str().starts_with("not a live request"),
            "{text}: {}",
            close.reason
        );
    }
    let mut client = LiveClient::connect(relay.addr, "title", None).await;
    use futures_util::SinkExt;
    client
        .socket
        .send(tokio_tungstenite::tungstenite::Message::Binary(
            vec![1, 2].into(),
        ))
        .await
        .unwrap();
    let close = client.expect_close().await;
    assert_eq!(u16::from(close.code), 1003);
}

#[tokio::test]
async fn deleting_the_document_closes_live_clients_after_a_deleted_event() {
    let relay = Relay::start(&[]);
    create(&relay, "title", "lww").await;
    let mut client = LiveClient::connect(relay.addr, "title", None).await;
    let (status, _) =
        common::http_request(relay.addr, "DELETE", "/api/v1/docs/title", None, None).await;
    assert_eq!(status, 204);
    client.wait_for("deleted").await;
    assert_eq!(u16::from(client.expect_close().await.code), 4410);
}

#[tokio::test]
async fn only_register_documents_and_valid_tokens_get_a_live_channel() {
    let relay = Relay::start(&["--jwt-secret", SECRET]);
    let writer = token("ann", &["*"], Permission::Write);
    let body = json!({ "name": "title", "kind": "lww" });
    http_json(
        relay.addr,
        "POST",
        "/api/v1/docs",
        Some(&writer),
        Some(body),
    )
    .await;
    let body = json!({ "name": "text", "kind": "yjs" });
    http_json(
        relay.addr,
        "POST",
        "/api/v1/docs",
        Some(&writer),
        Some(body),
    )
    .await;
    let other = token("ann", &["other"], Permission::Write);
    let cases = [
        ("title", None, 401),
        ("title", Some("not.a.jwt".to_owned()), 401),
        ("title", Some(other), 403),
        ("text", Some(writer.clone()), 409),
        ("absent", Some(writer.clone()), 404),
    ];
    for (doc, token, status) in cases {
        let url = LiveClient::url(relay.addr, doc, token.as_deref());
        match tokio_tungstenite::connect_async(url).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), status, "{doc} {token:?}");
            }
            other => panic!("{doc}: expected HTTP {status}, got {:?}", other.map(|_| ())),
        }
    }
    // A read-only token watches but its writes are answered with read_only.
    let reader = token("cy", &["title"], Permission::Read);
    let mut client = LiveClient::connect(relay.addr, "title", Some(&reader)).await;
    client
        .send(json!({ "op": "write", "id": 1, "value": "x", "stamp": stamp(1, "cy") }))
        .await;
    assert_eq!(
        result_of(&mut client, 1).await["error"]["code"],
        "read_only"
    );
}

#[tokio::test]
async fn shutdown_ends_event_streams_and_closes_live_clients_with_1001() {
    let mut relay = Relay::start(&[]);
    create(&relay, "title", "lww").await;
    let mut sse =
        common::api_client::SseClient::open(relay.addr, "/api/v1/docs/title/events", None)
            .await
            .unwrap();
    let mut client = LiveClient::connect(relay.addr, "title", None).await;
    sse.wait_for("user_joined").await;
    let status = tokio::task::spawn_blocking(move || {
        let status = relay.signal_and_wait("TERM");
        (relay, status)
    });
    let close = client.expect_close().await;
    assert_eq!(u16::from(close.code), 1001);
    while sse.next_event().await.is_some() {}
    let (_relay, status) = status.await.unwrap();
    assert!(
        status.success(),
        "the relay exits cleanly with listeners attached"
    );
}

#[tokio::test]
async fn concurrent_manual_writers_on_one_version_make_one_revision_and_conflicts_for_the_rest() {
    let relay = Relay::start(&[]);
    create(&relay, "notes", "manual").await;
    let addr = relay.addr;
    let writers: Vec<_> = (0..6u64)
        .map(|i| {
            tokio::spawn(async move {
                let mut client = LiveClient::connect(addr, "notes", None).await;
                let write = json!({ "op": "write", "id": i, "value": format!("v-{i}"), "base_version": 0, "author": format!("w{i}") });
                client.send(write).await;
                result_of(&mut client, i).await["outcome"]["outcome"].as_str().unwrap().to_owned()
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for writer in writers {
        outcomes.push(writer.await.unwrap());
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            "applied", "conflict", "conflict", "conflict", "conflict", "conflict"
        ]
    );
    let (_, register) = http_json(addr, "GET", "/api/v1/docs/notes/register", None, None).await;
    assert_eq!(register["version"], 1);
    assert_eq!(register["open_conflicts"], 5);
}

#[tokio::test]
async fn a_close_the_live_client_starts_is_answered_with_its_own_code() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message as Frame;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;

    let relay = Relay::start(&[]);
    create(&relay, "leaving", "lww").await;
    let mut client = LiveClient::connect(relay.addr, "leaving", None).await;
    client
        .socket
        .close(Some(CloseFrame {
            code: 4001.into(),
            reason: "bye".into(),
        }))
        .await
        .unwrap();
    let answer = loop {
        let frame = tokio::time::timeout(common::TIMEOUT, client.socket.next())
            .await
            .expect("no answer to the close");
        match frame {
            Some(Ok(Frame::Close(close))) => break close,
            Some(Ok(_)) => {}
            other => panic!("the connection ended without a close frame: {other:?}"),
        }
    };
    assert_eq!(answer.map(|close| u16::from(close.code)), Some(4001));
}
