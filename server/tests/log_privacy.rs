//! Document contents never reach the relay's log, even when an operator asks for everything
//! with `RUST_LOG=trace`: dependencies that trace WebSocket frames with their payloads
//! (tungstenite) are capped by the relay's own log filter, for y-websocket's binary frames
//! and the live channel's JSON text frames alike.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::api_client::LiveClient;
use common::{Relay, YClient, http_json};
use serde_json::json;

/// Written into the document; must never show up in the log, as text or as hex bytes.
const DOC_TEXT: &str = "zebra-quartz-7781-launch-codes";
/// Written into a register over the live channel (JSON text frames).
const REGISTER_TEXT: &str = "walrus-ember-5523-board-minutes";

#[tokio::test]
async fn at_rust_log_trace_no_frame_payload_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(dir.path(), &[], &[("RUST_LOG", "trace")]);
    let mut writer = YClient::connect(&relay.ws_url("secret-plans")).await;
    let mut reader = YClient::connect(&relay.ws_url("secret-plans")).await;
    writer.append(DOC_TEXT).await;
    writer.wait_for_echo().await;
    // The relay has received the update and sent it on to the other client.
    reader.wait_for_text(DOC_TEXT).await;
    // A register written over the live channel, whose frames are JSON text.
    let create = json!({ "name": "secret-title", "kind": "lww" });
    let (status, _) = http_json(relay.addr, "POST", "/api/v1/docs", None, Some(create)).await;
    assert_eq!(status, 201);
    let mut live = LiveClient::connect(relay.addr, "secret-title", None).await;
    let write = json!({ "op": "write", "id": 1, "value": REGISTER_TEXT,
        "stamp": { "clock": { "wall_ms": 1, "counter": 0 }, "writer": "w" } });
    live.send(write).await;
    assert_eq!(
        live.wait_for("result").await["outcome"]["outcome"],
        "applied"
    );
    // The relay's own debug lines are there, so the log is as verbose as asked.
    relay.wait_for_log("joined").await;
    let logs = relay.logs().to_lowercase();
    for secret in [DOC_TEXT, REGISTER_TEXT] {
        assert!(!logs.contains(secret), "{secret} is in the log:\n{logs}");
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(
            !logs.contains(&hex),
            "{secret} is in the log as hex bytes:\n{logs}"
        );
    }
}
