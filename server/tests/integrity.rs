//! A damaged database: a document whose stored bytes changed is refused with a clear error
//! and counted, every other document keeps working, and `aetherflow check` finds it and
//! repairs it (issue 14).

mod common;

use std::process::Command;

use common::{Relay, YClient, http_get, read_text};

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
    let (status, body) = http_get(relay.addr, "/api/v1/docs/victim/content").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("document_damaged"), "{body}");
    assert!(!body.contains("Original"), "{body}");
    let mut refused = YClient::connect_raw(&relay.ws_url("victim")).await;
    let close = refused.expect_close().await;
    assert_eq!(u16::from(close.code), 1011, "{}", close.reason);
    assert_eq!(read_text(&relay, "bystander").await, "the bystander's text");
    let (_, metrics) = http_get(relay.addr, "/metrics").await;
    let damaged: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("aetherflow_damaged_loads_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the damaged-loads counter");
    assert!(damaged >= 1.0, "{metrics}");
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
    let mut holder = YClient::connect(&relay.ws_url("victim")).await;
    holder.append("original words of the victim").await;
    holder.barrier().await;
    assert_eq!(
        read_text(&relay, "victim").await,
        "original words of the victim"
    );
    assert_eq!(read_text(&relay, "bystander").await, "the bystander's text");
}
