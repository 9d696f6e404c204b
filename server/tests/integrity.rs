//! A damaged database: a document whose stored bytes changed is refused with a clear error
//! and counted, every other document keeps working, and `aetherflow check` finds it and
//! repairs it; the relay checks the database at start-up unless told to skip it (issue 14).

mod common;

use std::process::Command;

use common::{Relay, YClient, http_get, metric_value, read_text};

/// Flips one byte of every copy of `needle` in the file at `path`; returns how many.
fn flip(path: &std::path::Path, needle: &[u8]) -> usize {
    let mut bytes = std::fs::read(path).expect("the database file");
    let mut flipped = 0;
    let mut at = 0;
    while let Some(found) = bytes[at..].windows(needle.len()).position(|w| w == needle) {
        let i = at + found;
        bytes[i] ^= 0x20; // 'o' -> 'O': still valid UTF-8, still a valid update
        flipped += 1;
        at = i + needle.len();
    }
    std::fs::write(path, bytes).expect("write the database file");
    flipped
}

fn check(data: &std::path::Path, repair: bool) -> (bool, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_aetherflow"));
    command.arg("check").arg("--data-dir").arg(data);
    if repair {
        command.arg("--repair");
    }
    let out = command.output().expect("aetherflow check runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn a_damaged_document_is_refused_others_work_and_check_repairs_it() {
    let mut relay = Relay::start(&[]);
    let temp = relay.take_temp().expect("a temporary data dir");
    let data = temp.path().to_owned();
    let mut victim = YClient::connect(&relay.ws_url("victim")).await;
    victim.append("original words of the victim").await;
    victim.barrier().await;
    let mut bystander = YClient::connect(&relay.ws_url("bystander")).await;
    bystander.append("the bystander's text").await;
    bystander.barrier().await;
    drop((victim, bystander));
    relay.signal_and_wait("TERM");
    assert!(check(&data, false).0, "a healthy database passes");

    let flipped = flip(&data.join("aetherflow.redb"), b"original words");
    assert!(flipped > 0, "the text is stored as is");
    let mut relay = Relay::start_in(&data, &[]);
    // The start-up check names the damaged document, and only it.
    relay.wait_for_log("integrity check found damage").await;
    let start_log = relay.logs();
    assert!(start_log.contains("\"victim\""), "{start_log}");
    assert!(!start_log.contains("bystander"), "{start_log}");
    let (status, body) = http_get(relay.addr, "/api/v1/docs/victim/content").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("document_damaged"), "{body}");
    assert!(!body.contains("Original"), "{body}");
    let mut refused = YClient::connect_raw(&relay.ws_url("victim")).await;
    let close = refused.expect_close().await;
    assert_eq!(u16::from(close.code), 1011, "{}", close.reason);
    assert_eq!(read_text(&relay, "bystander").await, "the bystander's text");
    let (_, metrics) = http_get(relay.addr, "/metrics").await;
    let damaged = metric_value(&metrics, "aetherflow_damaged_loads_total");
    assert!(damaged >= 1.0, "{metrics}");
    assert!(
        metrics.contains("aetherflow_damaged_documents_at_start 1\n"),
        "{metrics}"
    );
    relay.signal_and_wait("TERM");

    // Skipped: no check at start, and the damaged document is still refused when it loads.
    let mut relay = Relay::start_in(&data, &["--skip-integrity-check"]);
    let (status, body) = http_get(relay.addr, "/api/v1/docs/victim/content").await;
    assert_eq!(status, 500, "{body}");
    assert!(
        !relay.logs().contains("integrity check"),
        "{}",
        relay.logs()
    );
    relay.signal_and_wait("TERM");

    let (ok, report) = check(&data, false);
    assert!(!ok, "check passes a damaged database:\n{report}");
    assert!(report.contains("\"victim\""), "{report}");
    assert!(!report.contains("\"bystander\""), "{report}");
    let (ok, report) = check(&data, true);
    assert!(ok, "{report}");
    assert!(check(&data, false).0, "still damaged after --repair");

    // Repaired: the document loads again, and a client holding the edit restores it.
    let relay = Relay::start_in(&data, &[]);
    relay.wait_for_log("integrity check passed").await;
    let mut holder = YClient::connect(&relay.ws_url("victim")).await;
    holder.append("original words of the victim").await;
    holder.barrier().await;
    assert_eq!(
        read_text(&relay, "victim").await,
        "original words of the victim"
    );
    assert_eq!(read_text(&relay, "bystander").await, "the bystander's text");
}

/// Overwrites the entry offsets of each redb leaf page (a 4 KiB-aligned page starting with
/// type byte 1) that holds one entry, whose key contains `key`: redb reads them to slice the
/// page, and panics on offsets past its end. Returns how many pages.
fn break_leaf_offsets(path: &std::path::Path, key: &[u8]) -> usize {
    let mut bytes = std::fs::read(path).expect("the database file");
    let mut pages = 0;
    for page in (0..bytes.len().saturating_sub(64)).step_by(4096) {
        let head = &bytes[page..page + 64];
        let one_entry = head[0] == 1 && head[2..4] == [1, 0];
        if one_entry && head[12..].windows(key.len()).any(|w| w == key) {
            bytes[page + 4..page + 12].fill(0xff);
            pages += 1;
        }
    }
    std::fs::write(path, bytes).expect("write the database file");
    pages
}

#[tokio::test]
async fn redb_failing_inside_on_damaged_pages_fails_only_that_document() {
    let mut relay = Relay::start(&[]);
    let temp = relay.take_temp().expect("a temporary data dir");
    let data = temp.path().to_owned();
    let mut victim = YClient::connect(&relay.ws_url("victim")).await;
    victim.append(&"victim page marker ".repeat(600)).await;
    victim.barrier().await;
    let mut bystander = YClient::connect(&relay.ws_url("bystander")).await;
    bystander.append(&"bystander text ".repeat(600)).await;
    bystander.barrier().await;
    // Between the two in key order: a range read of the bystander's log descends into the
    // leaf after its last entry to find its end, so that leaf must not be the victim's.
    let mut between = YClient::connect(&relay.ws_url("middle")).await;
    between.append(&"middle text ".repeat(600)).await;
    between.barrier().await;
    drop((victim, bystander, between));
    relay.signal_and_wait("TERM");

    let pages = break_leaf_offsets(&data.join("aetherflow.redb"), b"victim");
    assert!(pages > 0, "no leaf page starts with the victim's key");
    // The start-up check meets the damage too, and the relay starts anyway.
    let mut relay = Relay::start_in(&data, &[]);
    relay.wait_for_log("integrity check found damage").await;
    let (status, body) = http_get(relay.addr, "/api/v1/docs/victim/content").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("database_damaged"), "{body}");
    // The WebSocket upgrade looks the document up first, and is refused with the same code.
    match tokio_tungstenite::connect_async(relay.ws_url("victim")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 500);
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default());
            assert!(body.contains("database_damaged"), "{body}");
        }
        other => panic!("a damaged document was not refused: {other:?}"),
    }
    assert_eq!(
        read_text(&relay, "bystander").await,
        "bystander text ".repeat(600)
    );
    let (status, _) = http_get(relay.addr, "/healthz").await;
    assert_eq!(status, 200);
    let (_, metrics) = http_get(relay.addr, "/metrics").await;
    assert!(metric_value(&metrics, "aetherflow_storage_engine_failures_total") >= 1.0);
    relay.signal_and_wait("TERM");

    let (ok, report) = check(&data, false);
    assert!(!ok, "check passes a damaged database:\n{report}");
    assert!(report.contains("unreadable"), "{report}");
}
