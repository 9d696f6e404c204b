//! How a WebSocket session ends, against the real relay: the close handshake both ways
//! (RFC 6455 §5.5.1), and a client that stops reading is closed, whatever the socket does,
//! instead of pinning memory and its session forever (issues 13 and 14).
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{Relay, TIMEOUT, YClient, read_text};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The relay's debug lines about sessions, besides its usual info level.
const SESSION_DEBUG: [(&str, &str); 1] = [("RUST_LOG", "info,aetherflow_server::websocket=debug")];

/// Reads until the relay's close frame; panics on anything else ending the connection.
async fn next_close(client: &mut YClient) -> CloseFrame {
    client.expect_close().await
}

#[tokio::test]
async fn a_close_the_client_starts_is_answered_with_its_own_code() {
    let relay = Relay::start(&[]);
    for (code, reason) in [(1000, "done"), (4000, "app closing")] {
        let mut client = YClient::connect(&relay.ws_url("bye")).await;
        client
            .socket
            .close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            }))
            .await
            .unwrap();
        let answer = next_close(&mut client).await;
        assert_eq!(u16::from(answer.code), code, "{}", answer.reason);
        // And then the connection ends cleanly, not with a reset.
        let end = tokio::time::timeout(TIMEOUT, client.socket.next())
            .await
            .expect("the connection never ended");
        assert!(end.is_none(), "expected a clean end, got {end:?}");
    }
}

#[tokio::test]
async fn a_close_the_relay_starts_carries_its_code_and_waits_for_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(dir.path(), &[], &SESSION_DEBUG);
    let mut client = YClient::connect(&relay.ws_url("text-frame")).await;
    client
        .socket
        .send(Frame::Text("hello".into()))
        .await
        .unwrap();
    let close = next_close(&mut client).await;
    assert_eq!(u16::from(close.code), 1003, "{}", close.reason);
    assert!(close.reason.contains("binary"), "{}", close.reason);
    // Reading on sends the client's answering close frame; the relay, which waited for it,
    // then ends the connection: a clean end, not a reset.
    let end = tokio::time::timeout(TIMEOUT, client.socket.next())
        .await
        .expect("the connection never ended");
    assert!(end.is_none(), "expected a clean end, got {end:?}");
    relay.wait_for_log("close handshake complete").await;
}

/// Broadcasts `count` updates of `chunk` each to the document at `url`, one at a time: each
/// is committed and echoed before the next is sent, so each reaches every subscriber as a
/// frame of its own (updates arriving together would go out as one frame).
async fn broadcast_chunks(url: String, count: usize, chunk: String) {
    let mut writer = YClient::connect(&url).await;
    for _ in 0..count {
        writer.append(&chunk).await;
        writer.wait_for_echo().await;
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_1013_once_its_outbox_is_full() {
    let relay = Relay::start(&["--outbox-max-bytes", "1048576"]);
    let url = relay.ws_url("big-broadcasts");
    // Connected and synced, then never reads again until the end of the test.
    let mut silent = YClient::connect(&url).await;
    let chunk = "x".repeat(256 * 1024);
    // 12 MiB broadcast: more than the socket buffers of a client that reads nothing and the
    // 1 MiB outbox hold, less than the 16 MiB a fresh client accepts as its sync step 2.
    let count = 48;
    let writer = tokio::spawn(broadcast_chunks(url.clone(), count, chunk.clone()));
    relay
        .wait_for_log("outbox over its byte bound; closing with 1013")
        .await;
    // Reading again at once (the relay waits a few seconds for its close frame to go out),
    // the client finds what the socket held, then the relay's close.
    let close = next_close(&mut silent).await;
    writer.await.unwrap();
    assert_eq!(u16::from(close.code), 1013, "{}", close.reason);
    assert!(close.reason.contains("reconnect"), "{}", close.reason);
    // Reconnecting resyncs: everything the writer sent is there.
    assert_eq!(
        read_text(&relay, "big-broadcasts").await.len(),
        count * chunk.len()
    );
}

#[tokio::test]
async fn a_client_that_never_reads_is_still_timed_out() {
    // An outbox large enough that only the heartbeat and the write-progress rule can end it.
    let relay = Relay::start(&[
        "--ping-interval-secs",
        "1",
        "--outbox-max-bytes",
        "268435456",
    ]);
    let url = relay.ws_url("never-reads");
    let mut silent = YClient::connect(&url).await;
    // 12 MiB: the relay's write to the silent client blocks long before the end.
    broadcast_chunks(url, 48, "y".repeat(256 * 1024)).await;
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let logs = relay.logs();
        if logs.contains("connection not reading: no write progress; closing")
            || logs.contains("two pings unanswered; closing")
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the silent client was never timed out: {logs}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The session is gone: reading, the client finds what the socket held, then the end.
    let ended = tokio::time::timeout(TIMEOUT, async {
        while let Some(Ok(frame)) = silent.socket.next().await {
            if matches!(frame, Frame::Close(_)) {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection never ended");
}
