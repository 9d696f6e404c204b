//! A document's decoded size is bounded: an update holding more items than
//! `--max-update-items`, or one that would take its document past `--max-doc-items` items or
//! `--max-doc-bytes` content bytes, is refused before it is integrated (WebSocket close 1009,
//! HTTP 413 `document_limit`), and the document keeps exactly what it had. Against the real
//! relay.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use aetherflow_crdt::protocol::encode_sync_update;
use common::{Relay, YClient, http_json, read_text};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yrs::{Doc, Map, Text, Transact};

/// One update setting `entries` keys of map `m` (`{prefix}{i}` → i), from client `client`.
fn map_entries(client: u64, prefix: &str, entries: u32) -> Vec<u8> {
    let doc = Doc::with_client_id(client);
    let map = doc.get_or_insert_map("m");
    let mut txn = doc.transact_mut();
    for i in 0..entries {
        map.insert(&mut txn, format!("{prefix}{i}"), i64::from(i));
    }
    txn.encode_update_v1()
}

/// One update inserting `bytes` characters into text `text`, from client `client`.
fn long_text(client: u64, bytes: usize) -> Vec<u8> {
    let doc = Doc::with_client_id(client);
    let text = doc.get_or_insert_text("text");
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 0, &"y".repeat(bytes));
    txn.encode_update_v1()
}

/// POSTs `update` to the document's update route; returns the status and the JSON body.
async fn post_update(relay: &Relay, doc: &str, update: &[u8]) -> (u16, serde_json::Value) {
    let mut stream = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/docs/{doc}/update HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        relay.addr,
        update.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(update).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or_default())
}

/// The number of keys in map `m` of `doc`.
async fn map_len(relay: &Relay, doc: &str) -> usize {
    let path = format!("/api/v1/docs/{doc}/content");
    let (status, content) = http_json(relay.addr, "GET", &path, None, None).await;
    assert_eq!(status, 200, "{content}");
    content["content"]["m"]
        .as_object()
        .map_or(0, serde_json::Map::len)
}

#[tokio::test]
async fn an_update_over_the_item_limit_closes_its_sender_with_1009_and_harms_nobody() {
    let relay = Relay::start(&["--max-update-items", "1000"]);
    let mut bystander = YClient::connect(&relay.ws_url("big")).await;
    bystander.append("intact").await;
    bystander.barrier().await;
    let mut offender = YClient::connect(&relay.ws_url("big")).await;
    offender
        .send_raw(encode_sync_update(&map_entries(7, "k", 1001)))
        .await;
    let close = offender.expect_close().await;
    assert_eq!(u16::from(close.code), 1009, "reason: {}", close.reason);
    assert!(
        close.reason.contains("1001 items") && close.reason.contains("1000"),
        "{}",
        close.reason
    );
    bystander.append(" still-syncing").await;
    bystander.barrier().await;
    assert_eq!(read_text(&relay, "big").await, "intact still-syncing");
    assert_eq!(map_len(&relay, "big").await, 0);
    // One within the limit is applied.
    let mut writer = YClient::connect(&relay.ws_url("big")).await;
    writer
        .send_raw(encode_sync_update(&map_entries(8, "k", 1000)))
        .await;
    writer.barrier().await;
    assert_eq!(map_len(&relay, "big").await, 1000);
}

#[tokio::test]
async fn a_document_refuses_what_would_pass_its_item_and_byte_limits_with_413_document_limit() {
    let relay = Relay::start(&[
        "--max-update-items",
        "1000",
        "--max-doc-items",
        "1500",
        "--max-doc-bytes",
        "65536",
    ]);
    let (status, body) = post_update(&relay, "grow", &map_entries(1, "a", 1000)).await;
    assert_eq!(status, 204, "{body}");
    // 1,000 + 600 > 1,500: refused whole, over HTTP and over the WebSocket.
    let (status, body) = post_update(&relay, "grow", &map_entries(2, "b", 600)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "document_limit", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("1600 items"), "{message}");
    let mut writer = YClient::connect(&relay.ws_url("grow")).await;
    writer
        .send_raw(encode_sync_update(&map_entries(3, "c", 600)))
        .await;
    let close = writer.expect_close().await;
    assert_eq!(u16::from(close.code), 1009, "reason: {}", close.reason);
    assert_eq!(map_len(&relay, "grow").await, 1000);
    // What still fits is applied.
    let (status, body) = post_update(&relay, "grow", &map_entries(4, "d", 400)).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(map_len(&relay, "grow").await, 1400);

    // Content bytes: one item of 70,000 characters is over 65,536 bytes.
    let (status, body) = post_update(&relay, "long", &long_text(5, 70_000)).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "document_limit", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bytes of content"),
        "{body}"
    );
    assert_eq!(read_text(&relay, "long").await, "");
    let (status, body) = post_update(&relay, "long", &long_text(5, 60_000)).await;
    assert_eq!(status, 204, "{body}");
}
