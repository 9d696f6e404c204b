//! With the `otel` feature: the relay exports its spans to an OTLP/HTTP collector named by
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (a fake one here, on loopback), flushing them at shutdown.
//! Run with `cargo test -p aetherflow-server --features otel --test otel`.
#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;

use common::{Relay, TIMEOUT, YClient};

/// Accepts OTLP/HTTP requests, answers 200, and passes on (path, body).
fn fake_collector() -> (String, mpsc::Receiver<(String, Vec<u8>)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n\
                          content-length: 0\r\nconnection: close\r\n\r\n";
            let _ = stream.write_all(answer.as_bytes());
            let _ = tx.send((path, body));
        }
    });
    (endpoint, rx)
}

#[tokio::test]
async fn session_and_room_spans_reach_the_collector_at_shutdown() {
    let (endpoint, received) = fake_collector();
    let dir = tempfile::tempdir().unwrap();
    let mut relay = Relay::start_with(
        dir.path(),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("RUST_LOG", "debug"),
        ],
    );
    let mut client = YClient::connect(&relay.ws_url("traced-doc")).await;
    client.append("exported? no: content stays home").await;
    client.wait_for_echo().await;
    drop(client);
    assert!(relay.signal_and_wait("TERM").success(), "{}", relay.logs());
    let mut bodies = Vec::new();
    while let Ok((path, body)) = received.recv_timeout(TIMEOUT) {
        assert_eq!(path, "/v1/traces");
        bodies.extend(body);
        let has = |needle: &str| bodies.windows(needle.len()).any(|w| w == needle.as_bytes());
        if has("session") && has("room") {
            assert!(has("aetherflow"), "service name missing");
            assert!(!has("content stays home"), "document text exported");
            return;
        }
    }
    panic!(
        "no session and room spans exported; relay log:\n{}",
        relay.logs()
    );
}
