//! Tokens on the newer `/api/v1` routes: every kind of bad token is refused with its code on
//! every route (a token whose `nbf` has not come yet too), read-only tokens cannot write,
//! listings show only what a token covers, lock holders and register authors are the tokens'
//! subjects, and an LWW stamp from the far future cannot pin a register.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use aetherflow_server::auth::Permission;
use common::api_client::{SECRET, SseClient, http_bytes, now_s, token, token_signed};
use common::{Relay, http_json};
use common::{TIMEOUT, YClient};
use serde_json::{Value, json};

/// Every route of this branch, with whether it writes.
const ROUTES: [(&str, &str, bool); 10] = [
    ("DELETE", "/api/v1/docs/plans", true),
    ("GET", "/api/v1/docs/plans/content", false),
    ("GET", "/api/v1/docs/plans/update", false),
    ("POST", "/api/v1/docs/plans/update", true),
    ("GET", "/api/v1/docs/plans/lock", false),
    ("POST", "/api/v1/docs/plans/lock", true),
    ("PUT", "/api/v1/docs/plans/lock", true),
    ("DELETE", "/api/v1/docs/plans/lock", true),
    ("GET", "/api/v1/docs/plans", false),
    ("GET", "/api/v1/docs", false),
];

async fn call(relay: &Relay, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let body = if path.ends_with("/lock") && method != "GET" && method != "DELETE" {
        json!({ "ttl_ms": 1000 }).to_string().into_bytes()
    } else {
        Vec::new()
    };
    let (status, _, answer) = http_bytes(relay.addr, method, path, token, &body).await;
    (
        status,
        serde_json::from_slice(&answer).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn every_bad_token_is_refused_on_every_route_with_its_code() {
    let relay = Relay::start(&["--jwt-secret", SECRET]);
    let expired = token_signed(SECRET, "ada", &["plans"], Permission::Write, now_s() - 3600);
    let forged = token_signed("wrong", "ada", &["plans"], Permission::Write, now_s() + 600);
    let elsewhere = token("ada", &["other"], Permission::Write);
    let cases: [(Option<&str>, u16, &str); 4] = [
        (None, 401, "token_missing"),
        (Some("not.a.jwt"), 401, "token_malformed"),
        (Some(&expired), 401, "token_expired"),
        (Some(&forged), 401, "token_bad_signature"),
    ];
    for (method, path, _) in ROUTES {
        for (token, status, code) in cases {
            let (got, body) = call(&relay, method, path, token).await;
            assert_eq!(
                (got, body["error"]["code"].as_str()),
                (status, Some(code)),
                "{method} {path}"
            );
        }
        if path != "/api/v1/docs" {
            let (got, body) = call(&relay, method, path, Some(&elsewhere)).await;
            assert_eq!(
                (got, body["error"]["code"].as_str()),
                (403, Some("token_wrong_document")),
                "{method} {path}"
            );
        }
    }
    for token in [None, Some("not.a.jwt"), Some(forged.as_str())] {
        let refused = SseClient::open(relay.addr, "/api/v1/docs/plans/events", token).await;
        assert_eq!(refused.err().map(|(status, _)| status), Some(401));
    }
}

#[tokio::test]
async fn a_read_only_token_reads_but_every_write_is_403() {
    let relay = Relay::start(&["--jwt-secret", SECRET]);
    let writer = token("ada", &["plans"], Permission::Write);
    let reader = token("bo", &["plans"], Permission::Read);
    let create = json!({ "name": "plans", "kind": "yjs" });
    http_json(
        relay.addr,
        "POST",
        "/api/v1/docs",
        Some(&writer),
        Some(create),
    )
    .await;
    http_bytes(
        relay.addr,
        "POST",
        "/api/v1/docs/plans/update",
        Some(&writer),
        &[0, 0],
    )
    .await;
    for (method, path, writes) in ROUTES {
        let (status, body) = call(&relay, method, path, Some(&reader)).await;
        if writes {
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (403, Some("read_only")),
                "{method} {path}"
            );
        } else {
            assert_eq!(status, 200, "{method} {path}: {body}");
        }
    }
}

#[tokio::test]
async fn listings_show_only_documents_the_token_covers() {
    let relay = Relay::start(&["--jwt-secret", SECRET]);
    let admin = token("root", &["*"], Permission::Write);
    for name in ["team-a", "team-b", "private"] {
        let body = json!({ "name": name, "kind": "lww" });
        http_json(relay.addr, "POST", "/api/v1/docs", Some(&admin), Some(body)).await;
    }
    let team = token("ada", &["team-*"], Permission::Read);
    let (status, page) =
        http_json(relay.addr, "GET", "/api/v1/docs?limit=1", Some(&team), None).await;
    assert_eq!(status, 200);
    assert_eq!(page["docs"][0]["name"], "team-a");
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, page) = http_json(
        relay.addr,
        "GET",
        &format!("/api/v1/docs?limit=1&cursor={cursor}"),
        Some(&team),
        None,
    )
    .await;
    assert_eq!(page["docs"][0]["name"], "team-b");
    assert_eq!(page["next_cursor"], Value::Null, "private is not listed");
}

#[tokio::test]
async fn lock_holders_are_token_subjects() {
    let relay = Relay::start(&["--jwt-secret", SECRET]);
    let ada = token("ada", &["notes"], Permission::Write);
    let bo = token("bo", &["notes"], Permission::Write);
    let body = json!({ "name": "notes", "kind": "manual" });
    http_json(relay.addr, "POST", "/api/v1/docs", Some(&ada), Some(body)).await;
    let lock = "/api/v1/docs/notes/lock";
    let (status, body) = http_json(
        relay.addr,
        "POST",
        lock,
        Some(&ada),
        Some(json!({ "ttl_ms": 60_000, "holder": "bo" })),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "ada cannot lock as bo"
    );
    let (status, taken) = http_json(
        relay.addr,
        "POST",
        lock,
        Some(&ada),
        Some(json!({ "ttl_ms": 60_000 })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(taken["holder"], "ada");
    // bo's writes are refused: as himself by the lock, as ada because he is not ada; ada's
    // go through.
    let register = "/api/v1/docs/notes/register";
    let write = json!({ "value": "bo's", "base_version": 0 });
    let (status, _) = http_json(relay.addr, "PUT", register, Some(&bo), Some(write)).await;
    assert_eq!(status, 423);
    let write = json!({ "value": "bo's", "base_version": 0, "author": "ada" });
    let (status, _) = http_json(relay.addr, "PUT", register, Some(&bo), Some(write)).await;
    assert_eq!(status, 403);
    let write = json!({ "value": "ada's", "base_version": 0 });
    let (status, _) = http_json(relay.addr, "PUT", register, Some(&ada), Some(write)).await;
    assert_eq!(status, 200);
    let (status, _) = http_json(relay.addr, "DELETE", lock, Some(&bo), None).await;
    assert_eq!(status, 423, "bo cannot release ada's lock");
}

#[tokio::test]
async fn the_event_stream_takes_a_query_token_and_events_never_carry_tokens() {
    let relay = Relay::start(&["--jwt-secret", SECRET]);
    let ada = token("ada", &["title"], Permission::Write);
    let body = json!({ "name": "title", "kind": "lww" });
    http_json(relay.addr, "POST", "/api/v1/docs", Some(&ada), Some(body)).await;
    let watcher = token("bo", &["title"], Permission::Read);
    let path = format!("/api/v1/docs/title/events?token={watcher}");
    let mut sse = SseClient::open(relay.addr, &path, None).await.unwrap();
    let mut live = common::api_client::LiveClient::connect(relay.addr, "title", Some(&ada)).await;
    let write = json!({ "op": "write", "id": 1, "value": "T", "stamp": { "clock": { "wall_ms": 1, "counter": 0 }, "writer": "ada" } });
    live.send(write).await;
    let joined = sse.wait_for("user_joined").await;
    assert_eq!(joined["user"], "ada");
    let updated = sse.wait_for("updated").await;
    assert_eq!(updated["register"]["value"], "T");
    for event in [joined, updated] {
        let text = event.to_string();
        assert!(!text.contains(&ada) && !text.contains(&watcher), "{text}");
    }
}

/// A token with these claims (an `nbf` among them), signed with [`SECRET`].
fn token_with(claims: Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

#[tokio::test]
async fn a_token_that_is_not_valid_yet_is_refused_with_401_until_its_nbf() {
    let relay = Relay::start(&["--jwt-secret", SECRET]);
    let claims = |nbf: u64| json!({ "sub": "ada", "docs": ["plans"], "perm": "write", "exp": now_s() + 7200, "nbf": nbf });
    let later = token_with(claims(now_s() + 3600));
    for (method, path, _) in ROUTES {
        let (status, body) = call(&relay, method, path, Some(&later)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("token_not_yet_valid")),
            "{method} {path}"
        );
    }
    // The WebSocket upgrade is refused the same way, before any document is opened.
    let url = format!("{}?token={later}", relay.ws_url("plans"));
    let refused = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .unwrap();
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 401);
        }
        other => panic!("a not-yet-valid token was let in: {:?}", other.map(|_| ())),
    }
    // Within the leeway (and once its time has come) the same claims are accepted.
    let soon = token_with(claims(now_s() + 5));
    let url = format!("{}?token={soon}", relay.ws_url("plans"));
    YClient::connect(&url).await;
    let create = json!({ "name": "plans", "kind": "yjs" });
    let (status, body) = http_json(
        relay.addr,
        "POST",
        "/api/v1/docs",
        Some(&soon),
        Some(create),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn manual_writes_and_resolutions_are_authored_by_the_token_subject() {
    let relay = Relay::start(&["--jwt-secret", SECRET]);
    let ada = token("ada", &["notes"], Permission::Write);
    let bo = token("bo", &["notes"], Permission::Write);
    let body = json!({ "name": "notes", "kind": "manual" });
    http_json(relay.addr, "POST", "/api/v1/docs", Some(&ada), Some(body)).await;
    let register = "/api/v1/docs/notes/register";
    // Claiming another author is refused and stores nothing.
    let forged = json!({ "value": "mallory's", "base_version": 0, "author": "mallory" });
    let (status, body) = http_json(relay.addr, "PUT", register, Some(&ada), Some(forged)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (_, stored) = http_json(relay.addr, "GET", register, Some(&ada), None).await;
    assert_eq!(stored["version"], 0, "{stored}");
    // Without an author, or naming herself, the revision is ada's.
    let write = json!({ "value": "v1", "base_version": 0 });
    let (status, applied) = http_json(relay.addr, "PUT", register, Some(&ada), Some(write)).await;
    assert_eq!(status, 200, "{applied}");
    assert_eq!(applied["revision"]["author"], "ada");
    let write = json!({ "value": "ada's", "base_version": 1, "author": "ada" });
    let (status, _) = http_json(relay.addr, "PUT", register, Some(&ada), Some(write)).await;
    assert_eq!(status, 200);
    // bo's late write conflicts; its proposal is recorded as his.
    let late = json!({ "value": "bo's", "base_version": 1 });
    let (status, conflict) = http_json(relay.addr, "PUT", register, Some(&bo), Some(late)).await;
    assert_eq!(status, 200, "{conflict}");
    assert_eq!(conflict["conflict"]["proposed"]["author"], "bo");
    let resolve = format!(
        "/api/v1/docs/notes/conflicts/{}/resolve",
        conflict["conflict"]["id"]
    );
    let forged = json!({ "value": "merged", "author": "ada" });
    let (status, body) = http_json(relay.addr, "POST", &resolve, Some(&bo), Some(forged)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, resolved) = http_json(
        relay.addr,
        "POST",
        &resolve,
        Some(&bo),
        Some(json!({ "value": "merged" })),
    )
    .await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["revision"]["author"], "bo");
    let (_, stored) = http_json(relay.addr, "GET", register, Some(&ada), None).await;
    assert_eq!(stored["revision"]["author"], "bo");
    assert_eq!(stored["value"], "merged");
}

#[tokio::test]
async fn an_lww_stamp_far_in_the_future_is_refused_and_cannot_pin_the_register() {
    let relay = Relay::start(&["--jwt-secret", SECRET]);
    let ada = token("ada", &["title"], Permission::Write);
    let body = json!({ "name": "title", "kind": "lww" });
    http_json(relay.addr, "POST", "/api/v1/docs", Some(&ada), Some(body)).await;
    let register = "/api/v1/docs/title/register";
    let stamped = |value: &str, wall_ms: u64| json!({ "value": value, "stamp": { "clock": { "wall_ms": wall_ms, "counter": 0 }, "writer": "ada" } });
    let now_ms = now_s() * 1000;
    for wall_ms in [u64::MAX, now_ms + 3_600_000] {
        let pin = stamped("pinned", wall_ms);
        let (status, body) = http_json(relay.addr, "PUT", register, Some(&ada), Some(pin)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (422, Some("stamp_too_far_ahead")),
            "{body}"
        );
    }
    let (_, stored) = http_json(relay.addr, "GET", register, Some(&ada), None).await;
    assert_eq!(stored["value"], Value::Null, "{stored}");
    // The live channel shares the write path and answers with the same code.
    let mut live = common::api_client::LiveClient::connect(relay.addr, "title", Some(&ada)).await;
    let mut pin = stamped("pinned", u64::MAX);
    pin["op"] = json!("write");
    pin["id"] = json!(7);
    live.send(pin).await;
    let answer = live.wait_for("error").await;
    assert_eq!(answer["error"]["code"], "stamp_too_far_ahead", "{answer}");
    // An honest write from a clock near the relay's is applied, and a later one still wins.
    for (value, wall_ms) in [("honest", now_ms), ("later", now_ms + 1)] {
        let write = stamped(value, wall_ms);
        let (status, body) = http_json(relay.addr, "PUT", register, Some(&ada), Some(write)).await;
        assert_eq!(
            (status, body["outcome"].as_str()),
            (200, Some("applied")),
            "{body}"
        );
    }
    let (_, stored) = http_json(relay.addr, "GET", register, Some(&ada), None).await;
    assert_eq!(stored["value"], "later", "{stored}");
}
