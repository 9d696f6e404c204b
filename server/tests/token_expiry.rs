//! Sessions end when their token expires, against the real relay: a `/ws` session, a `/live`
//! channel and a Quantum connection are closed with 4401 "token expired" at the token's `exp`,
//! an SSE stream ends with a `token_expired` event, and sessions on longer tokens carry on.
//! Admins end every session of a user or of a document at once.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use aetherflow_client::testing::envelopes::{hello, next_error, raw_connect};
use aetherflow_crdt::envelope::{Control, Envelope, Payload};
use aetherflow_server::auth::Permission;
use common::api_client::{LiveClient, SECRET, SseClient, now_s, token, token_signed};
use common::{Relay, TIMEOUT, YClient, http_json, read_text_with};
use serde_json::json;

const ADMIN_KEY: &str = "admin-key-for-tests-0123";

/// Seconds a short-lived token has left when a test starts: enough to connect on a slow
/// machine (a token within the relay's 30 s leeway is accepted anyway), short for the test.
const SHORT_SECS: u64 = 3;

fn relay() -> Relay {
    Relay::start(&["--jwt-secret", SECRET, "--admin-key", ADMIN_KEY])
}

fn short_token(sub: &str, docs: &[&str]) -> (String, u64) {
    let exp = now_s() + SHORT_SECS;
    (token_signed(SECRET, sub, docs, Permission::Write, exp), exp)
}

fn ws_url(relay: &Relay, doc: &str, token: &str) -> String {
    format!("{}?token={token}", relay.ws_url(doc))
}

#[tokio::test]
async fn a_websocket_session_is_closed_with_4401_when_its_token_expires() {
    let relay = relay();
    let (short, exp) = short_token("ada", &["notes"]);
    let mut expiring = YClient::connect(&ws_url(&relay, "notes", &short)).await;
    let long = token("bob", &["notes"], Permission::Write);
    let mut stays = YClient::connect(&ws_url(&relay, "notes", &long)).await;

    let frame = expiring.expect_close().await;
    assert_eq!(u16::from(frame.code), 4401, "{}", frame.reason);
    assert!(frame.reason.contains("token expired"), "{}", frame.reason);
    // Not before the token's own `exp` (the leeway is for the check at connect only).
    assert!(now_s() >= exp, "closed before exp");

    // The session on a longer token is untouched and its edits are kept.
    stays.append("still here").await;
    stays.wait_for_echo().await;
    assert_eq!(
        read_text_with(&ws_url(&relay, "notes", &long)).await,
        "still here"
    );
    // The admin view records how it ended, once the close handshake is over (the relay waits
    // briefly for the client's answering close frame).
    drop(expiring);
    let page = tokio::time::timeout(TIMEOUT, async {
        loop {
            let (status, page) = http_json(
                relay.addr,
                "GET",
                "/api/v1/sessions?user=ada",
                Some(ADMIN_KEY),
                None,
            )
            .await;
            assert_eq!(status, 200, "{page}");
            if !page["sessions"][0]["close"].is_null() {
                return page;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the session closed");
    assert_eq!(page["sessions"][0]["close"]["code"], 4401, "{page}");
}

#[tokio::test]
async fn a_live_channel_closes_and_an_sse_stream_ends_when_the_token_expires() {
    let relay = relay();
    let writer = token("ann", &["*"], Permission::Write);
    let body = json!({ "name": "title", "kind": "lww" });
    let (status, created) = http_json(
        relay.addr,
        "POST",
        "/api/v1/docs",
        Some(&writer),
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{created}");

    let (short, exp) = short_token("ada", &["title"]);
    let mut live = LiveClient::connect(relay.addr, "title", Some(&short)).await;
    let mut sse = SseClient::open(relay.addr, "/api/v1/docs/title/events", Some(&short))
        .await
        .unwrap();
    let mut staying = SseClient::open(relay.addr, "/api/v1/docs/title/events", Some(&writer))
        .await
        .unwrap();

    let frame = live.expect_close().await;
    assert_eq!(u16::from(frame.code), 4401, "{}", frame.reason);
    assert!(frame.reason.contains("token expired"), "{}", frame.reason);

    // Bounded as a whole: keep-alive comments would reset a per-line wait.
    let expired = tokio::time::timeout(TIMEOUT, sse.wait_for("token_expired"))
        .await
        .expect("the stream never said the token expired");
    assert_eq!(expired["code"], 4401, "{expired}");
    assert!(now_s() >= exp, "ended before exp");
    let after = tokio::time::timeout(TIMEOUT, sse.next_event()).await;
    assert!(
        after.expect("the stream goes on").is_none(),
        "the stream goes on"
    );

    // A listener with a longer token still gets events.
    let write = json!({ "value": "after", "stamp": { "clock": { "wall_ms": 1, "counter": 0 }, "writer": "w" } });
    let (status, written) = http_json(
        relay.addr,
        "PUT",
        "/api/v1/docs/title/register",
        Some(&writer),
        Some(write),
    )
    .await;
    assert_eq!(status, 200, "{written}");
    staying.wait_for("updated").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quantum_connection_is_closed_with_4401_when_its_hello_token_expires() {
    let relay = relay();
    let (short, exp) = short_token("ada", &["notes"]);
    let (_endpoint, conn) = raw_connect(relay.quantum_addr.unwrap(), relay.quantum_key()).await;
    conn.send(hello(Some(&short))).await.unwrap();
    let subscribe = Envelope::new("notes", Payload::Control(Control::Subscribe));
    conn.send(subscribe.encode()).await.unwrap();
    let (code, reason) = next_error(&conn, "", TIMEOUT)
        .await
        .expect("closed without a reason");
    assert_eq!(code, 4401, "{reason}");
    assert!(reason.contains("token expired"), "{reason}");
    assert!(now_s() >= exp, "closed before exp");
}

#[tokio::test]
async fn admins_close_every_session_of_a_user_or_of_a_document_and_no_other() {
    let relay = relay();
    let ada = token("ada", &["*"], Permission::Write);
    let bob = token("bob", &["*"], Permission::Write);
    let cy = token("cy", &["*"], Permission::Write);
    let mut ada_notes = YClient::connect(&ws_url(&relay, "notes", &ada)).await;
    let mut ada_plans = YClient::connect(&ws_url(&relay, "plans", &ada)).await;
    let mut bob_notes = YClient::connect(&ws_url(&relay, "notes", &bob)).await;
    let mut cy_plans = YClient::connect(&ws_url(&relay, "plans", &cy)).await;
    let admin = |path: &'static str| http_json(relay.addr, "DELETE", path, Some(ADMIN_KEY), None);

    let (status, answer) = admin("/api/v1/sessions?user=ada&reason=offboarding").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({ "requested": 2 }));
    for client in [&mut ada_notes, &mut ada_plans] {
        let frame = client.expect_close().await;
        assert_eq!(u16::from(frame.code), 1008);
        assert!(frame.reason.contains("offboarding"), "{}", frame.reason);
    }

    let (status, answer) = admin("/api/v1/sessions?document=notes").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({ "requested": 1 }));
    assert_eq!(u16::from(bob_notes.expect_close().await.code), 1008);

    // Nothing named: refused, and nobody is touched.
    let (status, refused) = admin("/api/v1/sessions").await;
    assert_eq!(status, 400, "{refused}");
    let (status, refused) =
        http_json(relay.addr, "DELETE", "/api/v1/sessions?user=cy", None, None).await;
    assert_eq!(status, 401, "{refused}");
    cy_plans.append("still here").await;
    cy_plans.wait_for_echo().await;
}
