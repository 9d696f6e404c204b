//! Client tokens: each failure refused before any document data flows; read-only tokens read
//! and send presence, but their writes are refused with y-protocols' permission-denied.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use aetherflow_crdt::protocol::{AuthMessage, Message, SyncMessage};
use aetherflow_server::auth::{Claims, Permission};
use common::{Relay, YClient, http_get, read_text_with};
use jsonwebtoken::{EncodingKey, Header};

const SECRET: &str = "integration-secret";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token_with(secret: &str, docs: &[&str], perm: Permission, exp: u64) -> String {
    let claims = Claims {
        sub: "ada".into(),
        docs: docs.iter().map(|d| d.to_string()).collect(),
        perm,
        exp,
    };
    let key = EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&Header::default(), &claims, &key).unwrap()
}

fn token(docs: &[&str], perm: Permission) -> String {
    token_with(SECRET, docs, perm, now() + 600)
}

fn secured() -> Relay {
    Relay::start(&["--jwt-secret", SECRET])
}

#[tokio::test]
async fn every_bad_token_is_refused_before_the_upgrade_with_its_reason() {
    let relay = secured();
    let cases = [
        (String::new(), 401, "token_missing"),
        ("?token=not.a.jwt".to_string(), 401, "token_malformed"),
        (
            format!(
                "?token={}",
                token_with(SECRET, &["plans"], Permission::Write, now() - 3600)
            ),
            401,
            "token_expired",
        ),
        (
            format!(
                "?token={}",
                token_with("wrong", &["plans"], Permission::Write, now() + 600)
            ),
            401,
            "token_bad_signature",
        ),
        (
            format!("?token={}", token(&["other", "plan"], Permission::Write)),
            403,
            "token_wrong_document",
        ),
    ];
    for (query, status, code) in cases {
        let (got, body) = http_get(relay.addr, &format!("/ws/plans{query}")).await;
        assert_eq!(got, status, "{code}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"]["code"], code);
        let url = format!("{}{query}", relay.ws_url("plans"));
        assert!(
            tokio_tungstenite::connect_async(url).await.is_err(),
            "{code}: upgraded"
        );
    }
}

#[tokio::test]
async fn a_write_token_for_a_prefix_syncs() {
    let relay = secured();
    let t = token(&["team-*"], Permission::Write);
    let url = format!("{}?token={t}", relay.ws_url("team-roadmap"));
    let mut client = YClient::connect(&url).await;
    client.append("q3 goals").await;
    client.barrier().await;
    assert_eq!(read_text_with(&url).await, "q3 goals");
}

#[tokio::test]
async fn a_read_token_reads_and_shares_presence_but_cannot_write() {
    let relay = secured();
    let writer_url = format!(
        "{}?token={}",
        relay.ws_url("board"),
        token(&["board"], Permission::Write)
    );
    let reader_url = format!(
        "{}?token={}",
        relay.ws_url("board"),
        token(&["board"], Permission::Read)
    );
    let mut writer = YClient::connect(&writer_url).await;
    writer.append("official").await;
    writer.barrier().await;

    let mut reader = YClient::connect(&reader_url).await;
    assert_eq!(reader.text(), "official", "a reader receives the document");
    // Its presence is relayed like anyone's.
    let presence = vec![1, 5, 1, 2, b'{', b'}'];
    reader.send(&Message::Awareness(presence.clone())).await;
    loop {
        if let Message::Awareness(update) = writer.next_message().await {
            assert_eq!(update, presence);
            break;
        }
    }
    // Its write is answered with permission-denied and applied nowhere.
    reader.append(" vandalised").await;
    loop {
        match reader.next_message().await {
            Message::Auth(AuthMessage::PermissionDenied { reason }) => {
                assert!(reason.contains("read-only"), "{reason}");
                break;
            }
            Message::Sync(SyncMessage::Update(_)) => panic!("the refused update was broadcast"),
            _ => {}
        }
    }
    writer.append("!").await;
    writer.barrier().await;
    assert_eq!(read_text_with(&writer_url).await, "official!");
}

#[test]
fn binding_a_public_address_without_keys_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aetherflow"))
        .args(["--http-addr", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("--jwt-secret"), "{stderr}");
}

#[tokio::test]
async fn running_open_is_announced_loudly() {
    let relay = Relay::start(&[]);
    relay.wait_for_log("RUNNING OPEN").await;
}
