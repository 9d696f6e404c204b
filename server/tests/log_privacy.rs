//! Document contents never reach the relay's log, even when an operator asks for everything
//! with `RUST_LOG=trace`: dependencies that trace WebSocket frames with their payloads
//! (tungstenite) are capped by the relay's own log filter.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{Relay, YClient};

/// Written into the document; must never show up in the log, as text or as hex bytes.
const DOC_TEXT: &str = "zebra-quartz-7781-launch-codes";

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
    // The relay's own debug lines are there, so the log is as verbose as asked.
    relay.wait_for_log("joined").await;
    let logs = relay.logs();
    assert!(
        !logs.contains(DOC_TEXT),
        "document text is in the log:\n{logs}"
    );
    let hex: String = DOC_TEXT.bytes().map(|b| format!("{b:02x}")).collect();
    assert!(
        !logs.to_lowercase().contains(&hex),
        "document bytes (hex) are in the log:\n{logs}"
    );
}
