//! Documents over `/api/v1`: paging, metadata, deletion, and a Yjs document's content as JSON
//! and as a binary update, against the real relay.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::api_client::http_bytes;
use common::{Relay, YClient, http_json};
use serde_json::{Value, json};
use yrs::updates::decoder::Decode;
use yrs::{Array, Doc, GetString, Map, Text, Transact, Update};

async fn create(relay: &Relay, name: &str, kind: &str) {
    let body = json!({ "name": name, "kind": kind });
    let (status, created) = http_json(relay.addr, "POST", "/api/v1/docs", None, Some(body)).await;
    assert_eq!(status, 201, "{created}");
}

async fn page(relay: &Relay, query: &str) -> (Vec<String>, Value) {
    let (status, page) = http_json(
        relay.addr,
        "GET",
        &format!("/api/v1/docs{query}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let names = page["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap().to_owned())
        .collect();
    (names, page["next_cursor"].clone())
}

#[tokio::test]
async fn listing_pages_through_every_kind_in_name_order_with_a_cursor() {
    let relay = Relay::start(&[]);
    // Explicit documents of each kind, and one Yjs document made implicitly by a client.
    for (name, kind) in [("d", "lww"), ("a", "yjs"), ("c", "manual"), ("e", "yjs")] {
        create(&relay, name, kind).await;
    }
    let mut client = YClient::connect(&relay.ws_url("b")).await;
    client.append("hello").await;
    client.wait_for_echo().await;

    let (first, cursor) = page(&relay, "?limit=2").await;
    assert_eq!(first, ["a", "b"]);
    let (second, cursor) = page(
        &relay,
        &format!("?limit=2&cursor={}", cursor.as_str().unwrap()),
    )
    .await;
    assert_eq!(second, ["c", "d"]);
    let (third, cursor) = page(
        &relay,
        &format!("?limit=2&cursor={}", cursor.as_str().unwrap()),
    )
    .await;
    assert_eq!(third, ["e"]);
    assert_eq!(cursor, Value::Null, "the last page has no next cursor");
    let (all, _) = page(&relay, "").await;
    assert_eq!(all, ["a", "b", "c", "d", "e"]);
}

#[tokio::test]
async fn listing_refuses_a_bad_limit_with_a_json_error() {
    let relay = Relay::start(&[]);
    for query in ["?limit=0", "?limit=1001", "?limit=many"] {
        let (status, body) = http_json(
            relay.addr,
            "GET",
            &format!("/api/v1/docs{query}"),
            None,
            None,
        )
        .await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_request");
    }
}

#[tokio::test]
async fn metadata_counts_updates_and_bytes_and_moves_the_modified_time() {
    let relay = Relay::start(&[]);
    let mut client = YClient::connect(&relay.ws_url("notes")).await;
    client.append("one").await;
    client.wait_for_echo().await;
    let (_, before) = http_json(relay.addr, "GET", "/api/v1/docs/notes", None, None).await;
    assert_eq!(before["kind"], "yjs");
    assert_eq!(before["updates"], 1, "{before}");
    client.append("two").await;
    client.wait_for_echo().await;
    let (_, after) = http_json(relay.addr, "GET", "/api/v1/docs/notes", None, None).await;
    assert_eq!(after["updates"], 2, "{after}");
    assert!(after["size_bytes"].as_u64().unwrap() > before["size_bytes"].as_u64().unwrap());
    assert!(after["modified_ms"].as_u64().unwrap() >= before["modified_ms"].as_u64().unwrap());
}

#[tokio::test]
async fn delete_closes_clients_with_a_reason_and_removes_everything() {
    let relay = Relay::start(&[]);
    let mut client = YClient::connect(&relay.ws_url("doomed")).await;
    client.append("secret plans").await;
    client.wait_for_echo().await;
    create(&relay, "title", "manual").await;
    let write = json!({ "value": "v1", "base_version": 0 });
    http_json(
        relay.addr,
        "PUT",
        "/api/v1/docs/title/register",
        None,
        Some(write),
    )
    .await;

    let (status, _, _) = http_bytes(relay.addr, "DELETE", "/api/v1/docs/doomed", None, b"").await;
    assert_eq!(status, 204);
    let close = client.expect_close().await;
    assert_eq!(u16::from(close.code), 4410);
    assert_eq!(close.reason.as_str(), "document deleted");
    let (status, _) = http_json(relay.addr, "GET", "/api/v1/docs/doomed", None, None).await;
    assert_eq!(status, 404);
    // A new client of that name starts from an empty document.
    assert_eq!(common::read_text(&relay, "doomed").await, "");

    let (status, _, _) = http_bytes(relay.addr, "DELETE", "/api/v1/docs/title", None, b"").await;
    assert_eq!(status, 204);
    let (status, _) = http_json(relay.addr, "GET", "/api/v1/docs/title/register", None, None).await;
    assert_eq!(status, 404);
    let (status, body) = http_json(relay.addr, "DELETE", "/api/v1/docs/title", None, None).await;
    assert_eq!(status, 404, "{body}");
    let (names, _) = page(&relay, "").await;
    assert!(names.is_empty(), "{names:?}");
}

/// An update from a real yrs client holding a map, an array and a text.
fn rich_update() -> Vec<u8> {
    let doc = Doc::new();
    let map = doc.get_or_insert_map("meta");
    let list = doc.get_or_insert_array("tags");
    let text = doc.get_or_insert_text("text");
    let mut txn = doc.transact_mut();
    map.insert(&mut txn, "title", "Plans");
    map.insert(&mut txn, "rev", 3);
    list.push_back(&mut txn, "red");
    list.push_back(&mut txn, true);
    text.insert(&mut txn, 0, "Hello");
    txn.encode_update_v1()
}

#[tokio::test]
async fn content_round_trips_as_json_and_as_a_binary_update() {
    let relay = Relay::start(&[]);
    let mut watcher = YClient::connect(&relay.ws_url("plans")).await;
    let (status, _, body) = http_bytes(
        relay.addr,
        "POST",
        "/api/v1/docs/plans/update",
        None,
        &rich_update(),
    )
    .await;
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
    // The connected client got it, because it was applied through the room.
    watcher.wait_for_text("Hello").await;

    let (status, content) =
        http_json(relay.addr, "GET", "/api/v1/docs/plans/content", None, None).await;
    assert_eq!(status, 200, "{content}");
    assert_eq!(
        content["content"],
        json!({ "meta": { "title": "Plans", "rev": 3 }, "tags": ["red", true], "text": "Hello" })
    );

    let (status, content_type, update) =
        http_bytes(relay.addr, "GET", "/api/v1/docs/plans/update", None, b"").await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/octet-stream");
    let copy = Doc::new();
    copy.transact_mut()
        .apply_update(Update::decode_v1(&update).unwrap())
        .unwrap();
    let text = copy.get_or_insert_text("text");
    let tags = copy.get_or_insert_array("tags");
    let txn = copy.transact();
    assert_eq!(text.get_string(&txn), "Hello");
    assert_eq!(tags.len(&txn), 2);
}

#[tokio::test]
async fn posted_updates_are_durable_once_answered() {
    let mut relay = Relay::start(&[]);
    let temp = relay.take_temp().unwrap();
    let (status, _, _) = http_bytes(
        relay.addr,
        "POST",
        "/api/v1/docs/kept/update",
        None,
        &rich_update(),
    )
    .await;
    assert_eq!(status, 204);
    relay.kill9();
    let relay = Relay::start_in(temp.path(), &[]);
    let (_, content) = http_json(relay.addr, "GET", "/api/v1/docs/kept/content", None, None).await;
    assert_eq!(content["content"]["text"], "Hello");
}

#[tokio::test]
async fn bad_updates_are_refused_with_400_and_leave_the_document_untouched() {
    let relay = Relay::start(&["--max-message-bytes", "1048576"]);
    let mut watcher = YClient::connect(&relay.ws_url("safe")).await;
    watcher.append("intact").await;
    watcher.wait_for_echo().await;
    let path = "/api/v1/docs/safe/update";
    // Garbage, a declared count far beyond the input, and an empty body.
    for body in [
        &b"\xa7z\xd8\xb0\xe5\x33\xf7\x5e"[..],
        &[0xff, 0xff, 0xff, 0xff, 0x0f, 0][..],
        &[][..],
    ] {
        let (status, _, answer) = http_bytes(relay.addr, "POST", path, None, body).await;
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], "bad_request");
    }
    let (status, _, answer) = http_bytes(relay.addr, "POST", path, None, &vec![0u8; 2 << 20]).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&answer));
    // The watcher was not disconnected and the text is unchanged.
    watcher.append(" still").await;
    watcher.wait_for_echo().await;
    assert_eq!(common::read_text(&relay, "safe").await, "intact still");
}

#[tokio::test]
async fn register_documents_have_no_yjs_content() {
    let relay = Relay::start(&[]);
    create(&relay, "title", "lww").await;
    for (method, path) in [
        ("GET", "/api/v1/docs/title/content"),
        ("GET", "/api/v1/docs/title/update"),
        ("POST", "/api/v1/docs/title/update"),
    ] {
        let (status, _, body) = http_bytes(relay.addr, method, path, None, &rich_update()).await;
        assert_eq!(
            status,
            409,
            "{method} {path}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let (status, _) = http_json(
        relay.addr,
        "GET",
        "/api/v1/docs/nothing/content",
        None,
        None,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bad_names_and_ids_in_paths_get_json_400s() {
    let relay = Relay::start(&[]);
    for (method, path, code) in [
        ("GET", "/api/v1/docs/a%01b", "invalid_doc_name"),
        ("DELETE", "/api/v1/docs/a%01b", "invalid_doc_name"),
        ("GET", "/api/v1/docs/%FF%FE/content", "invalid_doc_name"),
        ("POST", "/api/v1/docs/a%5Cb/update", "invalid_doc_name"),
        ("GET", "/api/v1/docs/a%01b/lock", "invalid_doc_name"),
        ("GET", "/api/v1/docs/notes/conflicts/first", "bad_request"),
        (
            "POST",
            "/api/v1/docs/notes/conflicts/-1/resolve",
            "bad_request",
        ),
    ] {
        let (status, _, body) = http_bytes(relay.addr, method, path, None, b"{}").await;
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{method} {path}: {body}"
        );
    }
}
