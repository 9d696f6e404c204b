//! Issue 14.4 and 14.5: what an HTTP client can make the relay hold is bounded, and the relay
//! keeps serving everyone else and `/healthz`. Each test runs against the real relay.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::SocketAddr;

use common::api_client::http_bytes;
use common::{RawResponse, Relay, TIMEOUT, YClient, http_get, http_raw};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use yrs::{Map, ReadTxn, Transact};

/// The start of a response body, for failure messages (a document's JSON is megabytes).
fn start(body: &str) -> &str {
    let mut end = body.len().min(300);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    &body[..end]
}

/// Reads until the relay closes the connection (bounded by [`TIMEOUT`]); returns what came.
/// A reset counts as closed.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(TIMEOUT, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the relay kept the connection open; it sent {:?}",
        String::from_utf8_lossy(&got)
    );
    got
}

#[tokio::test]
async fn a_connection_that_stops_mid_header_is_closed_after_the_header_timeout() {
    let relay = Relay::start(&["--http-header-timeout-secs", "1"]);
    let mut slow = TcpStream::connect(relay.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let got = read_until_closed(&mut slow).await;
    // hyper may answer 408 before closing; it never serves the request.
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"), "{got:?}");
    // The relay still serves everyone else.
    assert_eq!(http_get(relay.addr, "/healthz").await, (200, "ok\n".into()));
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_header_timeout() {
    let relay = Relay::start(&["--http-header-timeout-secs", "1"]);
    let mut idle = TcpStream::connect(relay.addr).await.unwrap();
    let request = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n\r\n", relay.addr);
    idle.write_all(request.as_bytes()).await.unwrap();
    // The response ("ok\n", 3 bytes), then nothing more: the relay waits for the next
    // request head and closes the connection when none comes.
    let got = read_until_closed(&mut idle).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("\r\n\r\nok\n"), "{text}");
}

/// `GET path` on a fresh connection, once the relay has a place for it: a connection the
/// relay closed a moment ago may not have given its place back yet, so the relay's minimal
/// refusal (or a reset, when it refuses a request already sent) is retried.
async fn get_when_placed(addr: SocketAddr, path: &str) -> RawResponse {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let mut response = Vec::new();
        let read = match stream.write_all(request.as_bytes()).await {
            Ok(()) => stream.read_to_end(&mut response).await.map(|_| ()),
            Err(e) => Err(e),
        };
        let text = String::from_utf8_lossy(&response).into_owned();
        let refused = read.is_err() || text.contains("over the relay's connection limit");
        if !refused {
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            return RawResponse {
                status: text[9..12].parse().unwrap(),
                headers: head.to_ascii_lowercase(),
                body: body.to_owned(),
            };
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no place for {path}: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A request on a connection that the test keeps open, answered with `Connection:
/// keep-alive`; returns the stream (still open) and the status line.
async fn kept_alive_request(addr: SocketAddr, path: &str) -> (TcpStream, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    // Up to the end of the head: enough to know the status.
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let read = tokio::time::timeout(TIMEOUT, stream.read(&mut buf))
            .await
            .expect("no response");
        // Refused after the request was sent: reset.
        let Ok(n) = read else {
            return (stream, "reset".into());
        };
        assert!(n > 0, "closed without a response");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    let status = text.lines().next().unwrap_or_default().to_owned();
    (stream, status)
}

#[tokio::test]
async fn over_the_connection_cap_the_relay_refuses_yet_answers_healthz_and_serves_its_clients() {
    // Four places: three for everyone, one kept for /healthz. A long header timeout, so only
    // the cap is at work here.
    let relay = Relay::start(&["--max-connections", "4", "--http-header-timeout-secs", "60"]);
    let url = relay.ws_url("capped");
    let mut writer = YClient::connect(&url).await;
    let mut reader = YClient::connect(&url).await;
    let third = YClient::connect(&url).await;

    // Every general place is held; the kept one answers health checks...
    let health = get_when_placed(relay.addr, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    // ...and nothing else, with a clear error.
    let refused = get_when_placed(relay.addr, "/api/v1/openapi.json").await;
    assert_eq!(refused.status, 503, "{}", start(&refused.body));
    assert_eq!(refused.json()["error"]["code"], "over_capacity");
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));

    // With the kept place held too, a new connection is refused at once.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let (held, status) = loop {
        // As above, the last connection's place may not be back yet.
        let (held, status) = kept_alive_request(relay.addr, "/healthz").await;
        if !status.starts_with("HTTP/1.1 503") && status != "reset" {
            break (held, status);
        }
        assert!(std::time::Instant::now() < deadline, "no place: {status}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let mut over = TcpStream::connect(relay.addr).await.unwrap();
    let got = read_until_closed(&mut over).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("Retry-After: 1"), "{text}");

    // The clients already connected are served as before.
    writer.append("still served").await;
    writer.barrier().await;
    reader.wait_for_text("still served").await;

    // A WebSocket that closes gives its place back (after its session has ended).
    drop(held);
    drop(third);
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let response = get_when_placed(relay.addr, "/api/v1/openapi.json").await;
        if response.status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no place came back: {} {}",
            response.status,
            start(&response.body)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        relay.logs().contains("refusing connections"),
        "{}",
        relay.logs()
    );
}

#[tokio::test]
async fn a_flood_of_connections_without_a_request_is_cut_for_newcomers_and_healthz_answers() {
    // Eight places and a header timeout far longer than the test: only the cap is at work.
    let relay = Relay::start(&["--max-connections", "8", "--http-header-timeout-secs", "60"]);
    let mut writer = YClient::connect(&relay.ws_url("flooded")).await;
    // Twenty connections that send one header byte and then nothing, as a slow-header attack.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(relay.addr).await.unwrap();
        // A connection refused or cut at once may reset this write; that is the point.
        let _ = stream.write_all(b"G").await;
        slow.push(stream);
    }
    // A health check and a client sending their requests at once are served...
    let health = get_when_placed(relay.addr, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let docs = get_when_placed(relay.addr, "/api/v1/docs").await;
    assert_eq!(docs.status, 200, "{}", start(&docs.body));
    // ...the oldest silent connection was closed to make room...
    read_until_closed(&mut slow[0]).await;
    // ...and the WebSocket client that had sent its request keeps its place and is served.
    writer.append("still here").await;
    writer.barrier().await;
    let metrics = get_when_placed(relay.addr, "/metrics").await;
    let cut = metrics
        .body
        .lines()
        .find(|l| l.contains("reason=\"connection_cut\""))
        .unwrap_or_else(|| panic!("no connection_cut count: {}", start(&metrics.body)));
    assert!(!cut.ends_with(" 0"), "{cut}");
}

/// A Yjs update making root map `m` hold `entries` entries.
fn big_map_update(entries: usize) -> Vec<u8> {
    let doc = yrs::Doc::new();
    let map = doc.get_or_insert_map("m");
    {
        let mut txn = doc.transact_mut();
        for i in 0..entries {
            map.insert(&mut txn, format!("key{i:07}"), i as f64);
        }
    }
    doc.transact()
        .encode_state_as_update_v1(&yrs::StateVector::default())
}

#[tokio::test]
async fn a_large_documents_content_is_read_off_the_workers_and_over_the_cap_gets_the_documented_error()
 {
    // One async worker: a read that ran on it would hold up every other request.
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(
        dir.path(),
        &[
            "--max-content-reads",
            "1",
            "--max-content-json-bytes",
            "65536",
        ],
        &[("TOKIO_WORKER_THREADS", "1")],
    );
    let update = big_map_update(100_000);
    let (status, _, body) =
        http_bytes(relay.addr, "POST", "/api/v1/docs/big/update", None, &update).await;
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));

    // A tiny document whose binary read, behind the same gate, probes whether a read runs:
    // 503 `busy` while one does, and otherwise done at once (it never becomes the long one).
    let (status, _, _) = http_bytes(
        relay.addr,
        "POST",
        "/api/v1/docs/tiny/update",
        None,
        &big_map_update(1),
    )
    .await;
    assert_eq!(status, 204);
    let probe = "/api/v1/docs/tiny/update";

    let content = "/api/v1/docs/big/content";
    // A long read runs; a probe is refused with 503 `busy`; /healthz answers; a second probe
    // is still refused: /healthz was answered during the long read. A round in which the long
    // read lost the race for the place to a probe (503) or ended early is repeated.
    let mut long_read = None;
    for _ in 0..5 {
        let addr = relay.addr;
        let mut long = tokio::spawn(async move { http_raw(addr, "GET", content, &[], "").await });
        let mut busy = false;
        while !long.is_finished() {
            let (status, _, body) = http_bytes(relay.addr, "GET", probe, None, &[]).await;
            if status == 503 {
                let error: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(error["error"]["code"], "busy");
                busy = true;
                break;
            }
            assert_eq!(status, 200);
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        if busy {
            assert_eq!(http_get(relay.addr, "/healthz").await, (200, "ok\n".into()));
            let (status, _, _) = http_bytes(relay.addr, "GET", probe, None, &[]).await;
            if status == 503 {
                long_read = Some(
                    tokio::time::timeout(TIMEOUT, &mut long)
                        .await
                        .unwrap()
                        .unwrap(),
                );
                break;
            }
        }
        let _ = tokio::time::timeout(TIMEOUT, long).await.unwrap().unwrap();
    }
    let long_read = long_read.expect("no /healthz answer seen during a read");
    assert_eq!(long_read.status, 422, "{}", start(&long_read.body));
    let error = long_read.json();
    assert_eq!(error["error"]["code"], "content_too_large");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("/api/v1/docs/big/update"), "{message}");

    // The binary form the message points at serves the whole document.
    let (status, _, body) =
        http_bytes(relay.addr, "GET", "/api/v1/docs/big/update", None, &[]).await;
    assert_eq!(status, 200);
    let back = yrs::Doc::new();
    back.transact_mut()
        .apply_update(yrs::updates::decoder::Decode::decode_v1(&body).unwrap())
        .unwrap();
    assert_eq!(back.get_or_insert_map("m").len(&back.transact()), 100_000);
}
