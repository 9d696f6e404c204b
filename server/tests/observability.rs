//! `/metrics` and the logs, on the real binary: the exposition parses as Prometheus text, its
//! counters and gauges follow a real y-websocket client, refusals are counted by reason, and
//! neither the metrics nor the logs ever hold a token or document text.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use aetherflow_client::testing::envelopes::{hello, next_error, raw_connect, subscribe};
use aetherflow_crdt::envelope::{Envelope, Payload};
use aetherflow_crdt::protocol::Message;
use aetherflow_server::auth::{Claims, Permission};
use common::{Relay, TIMEOUT, YClient, http_raw};
use futures_util::SinkExt;
use jsonwebtoken::{EncodingKey, Header};
use tokio_tungstenite::tungstenite::Message as Frame;

/// 32 bytes: one test binds a public address, where a shorter secret is refused.
const SECRET: &str = "observability-secret-0123456789a";
const ADMIN_KEY: &str = "admin-key-for-metrics-0123";
const DOC: &str = "quarterly-plans";
/// Written into the document; must never show up in metrics or logs.
const DOC_TEXT: &str = "confidential-merger-codename";

fn token(docs: &[&str], perm: Permission, secret: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let claims = Claims {
        sub: "ada".into(),
        docs: docs.iter().map(|d| d.to_string()).collect(),
        perm,
        exp,
    };
    let key = EncodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::encode(&Header::default(), &claims, &key).unwrap()
}

/// A scrape, parsed: series (name plus sorted labels) to value.
struct Scrape {
    text: String,
    values: HashMap<String, f64>,
}

impl Scrape {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = series_key(name, labels.iter().map(|(k, v)| (*k, *v)));
        *self
            .values
            .get(&key)
            .unwrap_or_else(|| panic!("no series {key} in:\n{}", self.text))
    }
}

fn series_key<'a>(name: &str, labels: impl Iterator<Item = (&'a str, &'a str)>) -> String {
    let mut labels: Vec<String> = labels.map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

/// Parses the exposition with `prometheus-parse`, which rejects malformed sample lines.
fn parse(text: &str) -> Scrape {
    use prometheus_parse::{HistogramCount, Value};
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("metrics parse");
    let mut values = HashMap::new();
    for sample in parsed.samples {
        let labels: Vec<(String, String)> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let key = |suffix: &str| {
            series_key(
                &format!("{}{suffix}", sample.metric),
                labels.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )
        };
        match &sample.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => {
                values.insert(key(""), *v);
            }
            Value::Histogram(buckets) => {
                let count = buckets.last().map(|b: &HistogramCount| b.count);
                values.insert(key("_count"), count.unwrap_or(0.0));
            }
            Value::Summary(_) => {}
        }
    }
    assert!(!values.is_empty(), "nothing parsed from:\n{text}");
    Scrape {
        text: text.to_owned(),
        values,
    }
}

async fn scrape(relay: &Relay) -> Scrape {
    let auth = format!("Bearer {ADMIN_KEY}");
    let response = http_raw(
        relay.addr,
        "GET",
        "/metrics",
        &[("Authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    parse(&response.body)
}

/// Scrapes until `done` holds (bounded by [`TIMEOUT`]); returns that scrape.
async fn scrape_until(relay: &Relay, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let scrape = scrape(relay).await;
        if done(&scrape) {
            return scrape;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never saw {what}:\n{}",
            scrape.text
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn secured_relay() -> Relay {
    Relay::start(&["--jwt-secret", SECRET, "--admin-key", ADMIN_KEY])
}

const WS: &[(&str, &str)] = &[("transport", "websocket")];

#[tokio::test]
async fn counters_and_gauges_follow_a_real_client() {
    let relay = secured_relay();
    let before = scrape(&relay).await;
    assert_eq!(before.get("aetherflow_connections", WS), 0.0);
    assert_eq!(before.get("aetherflow_documents_loaded", &[]), 0.0);

    let write = token(&[DOC], Permission::Write, SECRET);
    let url = format!("{}?token={write}", relay.ws_url(DOC));
    let mut writer = YClient::connect(&url).await;
    let mut reader = YClient::connect(&url).await;
    let live = scrape_until(&relay, "two active sessions", |s| {
        s.get(
            "aetherflow_sessions",
            &[("transport", "websocket"), ("state", "active")],
        ) == 2.0
    })
    .await;
    assert_eq!(live.get("aetherflow_connections", WS), 2.0);
    assert_eq!(live.get("aetherflow_documents_loaded", &[]), 1.0);

    for _ in 0..3 {
        writer.append(DOC_TEXT).await;
        writer.wait_for_echo().await;
    }
    reader.wait_for_text(&DOC_TEXT.repeat(3)).await;
    let after = scrape(&relay).await;
    assert_eq!(after.get("aetherflow_updates_received_total", &[]), 3.0);
    // Each committed update goes to both subscribers.
    assert_eq!(after.get("aetherflow_updates_sent_total", &[]), 6.0);
    assert!(after.get("aetherflow_messages_received_total", WS) >= 5.0);
    assert!(after.get("aetherflow_received_bytes_total", WS) >= (3 * DOC_TEXT.len()) as f64);
    assert!(after.get("aetherflow_sent_bytes_total", WS) >= (6 * DOC_TEXT.len()) as f64);
    // Handshake answers are applied too, possibly batched with others.
    assert!(after.get("aetherflow_apply_duration_seconds_count", &[]) >= 3.0);
    assert_eq!(
        after.get("aetherflow_broadcast_duration_seconds_count", &[]),
        3.0
    );
    assert!(after.get("aetherflow_commit_duration_seconds_count", &[]) >= 3.0);
    assert!(after.get("aetherflow_commit_batch_updates_count", &[]) >= 3.0);

    drop(writer);
    drop(reader);
    let gone = scrape_until(&relay, "no open connections", |s| {
        s.get("aetherflow_connections", WS) == 0.0
    })
    .await;
    assert_eq!(
        gone.get(
            "aetherflow_sessions",
            &[("transport", "websocket"), ("state", "closed")]
        ),
        2.0
    );
    for secret in [write.as_str(), DOC_TEXT, DOC, "ada"] {
        assert!(
            !gone.text.contains(secret),
            "{secret} in metrics:\n{}",
            gone.text
        );
    }
}

fn rejected(scrape: &Scrape, reason: &str) -> f64 {
    scrape.get("aetherflow_rejected_total", &[("reason", reason)])
}

#[tokio::test]
async fn every_refusal_is_counted_by_reason() {
    let relay = secured_relay();
    let write = token(&[DOC], Permission::Write, SECRET);
    let url = format!("{}?token={write}", relay.ws_url(DOC));

    // Refused before the upgrade: no token, a bad signature, another document, a bad name.
    let refusals = [
        relay.ws_url(DOC),
        format!(
            "{}?token={}",
            relay.ws_url(DOC),
            token(&[DOC], Permission::Write, "x")
        ),
        format!("{}?token={}", relay.ws_url("other"), write),
        format!("{}?token={write}", relay.ws_url("bad%00name")),
    ];
    for refused in &refusals {
        assert!(tokio_tungstenite::connect_async(refused).await.is_err());
    }
    // Closed after the upgrade: a text frame, a malformed message, an invalid update.
    let mut text = YClient::connect(&url).await;
    text.socket.send(Frame::Text("hello".into())).await.unwrap();
    assert_eq!(u16::from(text.expect_close().await.code), 1003);
    let mut malformed = YClient::connect(&url).await;
    malformed.send_raw(vec![0, 2, 50, 1, 2, 3]).await;
    assert_eq!(u16::from(malformed.expect_close().await.code), 1002);
    let mut invalid = YClient::connect(&url).await;
    let garbage = [0xff, 0xfe, 0x13, 0x37, 0x00, 0x99, 0xaa, 0xbb];
    let mut update = vec![0, 2, garbage.len() as u8];
    update.extend(garbage);
    invalid.send_raw(update).await;
    assert_eq!(u16::from(invalid.expect_close().await.code), 1007);

    let after = scrape(&relay).await;
    assert_eq!(rejected(&after, "auth_missing"), 1.0);
    assert_eq!(rejected(&after, "auth_invalid"), 1.0);
    assert_eq!(rejected(&after, "auth_forbidden"), 1.0);
    assert_eq!(rejected(&after, "invalid_doc_name"), 1.0);
    assert_eq!(rejected(&after, "text_frame"), 1.0);
    assert_eq!(rejected(&after, "malformed_message"), 1.0);
    assert_eq!(rejected(&after, "invalid_payload"), 1.0);
    assert_eq!(rejected(&after, "message_rate"), 0.0);
}

#[tokio::test]
async fn metrics_need_the_admin_key_when_one_is_set() {
    let relay = secured_relay();
    let client = format!("Bearer {}", token(&[DOC], Permission::Write, SECRET));
    let cases: [(&[(&str, &str)], u16); 3] = [
        (&[], 401),
        (&[("Authorization", "Bearer not-the-admin-key-at-all")], 401),
        (&[("Authorization", client.as_str())], 403),
    ];
    for (headers, status) in cases {
        let response = http_raw(relay.addr, "GET", "/metrics", headers, "").await;
        assert_eq!(response.status, status, "{headers:?}: {}", response.body);
        assert!(!response.body.contains("aetherflow_"), "{}", response.body);
    }
    let response = http_raw(
        relay.addr,
        "GET",
        "/metrics",
        &[("X-Admin-Key", ADMIN_KEY)],
        "",
    )
    .await;
    assert_eq!(response.status, 200);
}

/// This machine's address on its default route (not loopback).
fn outward_ip() -> std::net::IpAddr {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    socket.connect("203.0.113.1:9").unwrap();
    let ip = socket.local_addr().unwrap().ip();
    assert!(!ip.is_loopback(), "no non-loopback address: {ip}");
    ip
}

#[tokio::test]
async fn without_an_admin_key_metrics_are_served_on_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_aetherflow"))
        .args([
            "--http-addr",
            "0.0.0.0:0",
            "--jwt-secret",
            SECRET,
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    let local = http_raw(([127, 0, 0, 1], port).into(), "GET", "/metrics", &[], "").await;
    let remote = http_raw((outward_ip(), port).into(), "GET", "/metrics", &[], "").await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(local.status, 200, "{}", local.body);
    assert!(local.body.contains("aetherflow_connections"));
    assert_eq!(remote.status, 403, "{}", remote.body);
    assert!(!remote.body.contains("aetherflow_"), "{}", remote.body);
}

/// Refused and accepted connections at `RUST_LOG=debug`: no token and no document text in
/// the log, and the session's lines carry its ids.
async fn exercise_logging(format: &str) -> (String, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(
        dir.path(),
        &[
            "--jwt-secret",
            SECRET,
            "--admin-key",
            ADMIN_KEY,
            "--log-format",
            format,
        ],
        &[("RUST_LOG", "debug")],
    );
    let write = token(&[DOC], Permission::Write, SECRET);
    let forged = token(&[DOC], Permission::Write, "not-the-secret");
    let elsewhere = token(&["other"], Permission::Write, SECRET);
    let url = |t: &str| format!("{}?token={t}", relay.ws_url(DOC));
    assert!(
        tokio_tungstenite::connect_async(url(&forged))
            .await
            .is_err()
    );
    assert!(
        tokio_tungstenite::connect_async(url(&elsewhere))
            .await
            .is_err()
    );
    let mut client = YClient::connect(&url(&write)).await;
    client.append(DOC_TEXT).await;
    client.wait_for_echo().await;
    client.socket.send(Frame::Text("bye".into())).await.unwrap();
    client.expect_close().await;
    relay.wait_for_log("text frames").await;
    // A scrape is logged too (at most as a request); it must not leak the admin key either.
    scrape(&relay).await;
    let logs = relay.logs();
    assert!(logs.contains("token_bad_signature"), "{logs}");
    assert!(logs.contains("token_wrong_document"), "{logs}");
    for secret in [&write, &forged, &elsewhere] {
        // The signature alone is what makes a token usable.
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!logs.contains(signature), "a token is in the logs:\n{logs}");
    }
    assert!(
        !logs.contains(DOC_TEXT),
        "document text is in the logs:\n{logs}"
    );
    assert!(
        !logs.contains(ADMIN_KEY),
        "the admin key is in the logs:\n{logs}"
    );
    (logs, vec![write, forged, elsewhere])
}

#[tokio::test]
async fn pretty_logs_carry_session_ids_and_never_a_token() {
    let (logs, _) = exercise_logging("pretty").await;
    // The session's own lines: joined at debug, the refusal at warn.
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("joined") || l.contains("text frames"))
        .collect();
    assert!(!lines.is_empty(), "{logs}");
    for line in lines {
        for field in [
            "session{id=",
            "transport=\"websocket\"",
            "remote=127.0.0.1:",
            "user=ada",
        ] {
            assert!(line.contains(field), "{field} missing from {line}");
        }
    }
    assert!(logs.contains(&format!("room{{doc={DOC}}}")), "{logs}");
}

#[tokio::test]
async fn json_logs_are_json_and_carry_session_ids() {
    let (logs, _) = exercise_logging("json").await;
    let mut session_lines = 0;
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if value["span"]["name"] == "session" {
            session_lines += 1;
            let span = &value["span"];
            assert_eq!(span["user"], "ada", "{line}");
            assert_eq!(span["transport"], "websocket", "{line}");
            assert!(
                span["id"].as_str().is_some_and(|id| id.len() == 36),
                "{line}"
            );
            assert!(
                span["remote"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("127.0.0.1:"))
            );
        }
    }
    assert!(session_lines >= 2, "{logs}");
}

#[tokio::test]
async fn rate_limits_and_compactions_are_counted() {
    let relay = Relay::start(&[
        "--admin-key",
        ADMIN_KEY,
        "--jwt-secret",
        SECRET,
        "--connect-rate-per-min",
        "1",
        "--connect-burst",
        "3",
        "--message-rate-per-sec",
        "1",
        "--message-burst",
        "12",
        "--compact-after-updates",
        "2",
    ]);
    let url = format!(
        "{}?token={}",
        relay.ws_url(DOC),
        token(&[DOC], Permission::Write, SECRET)
    );
    let mut flooder = YClient::connect(&url).await;
    for _ in 0..3 {
        flooder.append("x").await;
        flooder.wait_for_echo().await;
    }
    // Query-awareness messages far over the burst. A WebSocket is only slowed down; a Quantum
    // connection is closed with 1008, and that refusal is counted.
    let write_token = token(&[DOC], Permission::Write, SECRET);
    let (_endpoint, quantum) = raw_connect(relay.quantum_addr.unwrap(), relay.quantum_key()).await;
    quantum.send(hello(Some(&write_token))).await.unwrap();
    quantum.send(subscribe(DOC)).await.unwrap();
    let query = Envelope::new(DOC, Payload::Yjs(Message::QueryAwareness)).encode();
    for _ in 0..40 {
        if quantum.send(query.clone()).await.is_err() {
            break;
        }
    }
    let (code, _) = next_error(&quantum, "", TIMEOUT)
        .await
        .expect("closed without a reason");
    assert_eq!(code, 1008);
    // The WebSocket, the Quantum connection and this one are the burst of three.
    let _second = YClient::connect(&url).await;
    assert!(tokio_tungstenite::connect_async(&url).await.is_err());

    let after = scrape_until(&relay, "a compaction", |s| {
        s.get("aetherflow_compactions_total", &[]) >= 1.0
    })
    .await;
    assert_eq!(rejected(&after, "message_rate"), 1.0);
    assert_eq!(rejected(&after, "connection_rate"), 1.0);
}
