//! The `/api/v1` routes for document kinds, LWW and manual registers, and conflicts, against
//! the real relay.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{Relay, http_json};
use serde_json::{Value, json};

async fn create(relay: &Relay, name: &str, kind: &str) -> (u16, Value) {
    let body = json!({ "name": name, "kind": kind });
    http_json(relay.addr, "POST", "/api/v1/docs", None, Some(body)).await
}

fn lww_write(value: &str, wall_ms: u64, writer: &str) -> Value {
    json!({ "value": value, "stamp": { "clock": { "wall_ms": wall_ms, "counter": 0 }, "writer": writer } })
}

#[tokio::test]
async fn lww_the_highest_stamp_wins_and_stale_writers_are_told() {
    let relay = Relay::start(&[]);
    let (status, meta) = create(&relay, "title", "lww").await;
    assert_eq!(status, 201, "{meta}");
    assert_eq!(meta["kind"], "lww");
    let path = "/api/v1/docs/title/register";
    let put = |body| http_json(relay.addr, "PUT", path, None, Some(body));
    assert_eq!(
        put(lww_write("Draft", 200, "ann")).await.1["outcome"],
        "applied"
    );
    assert_eq!(
        put(lww_write("Final", 300, "bob")).await.1["outcome"],
        "applied"
    );
    let (_, stale) = put(lww_write("Old", 100, "cy")).await;
    assert_eq!(stale["outcome"], "stale");
    assert_eq!(stale["current"]["writer"], "bob");
    assert_eq!(
        put(lww_write("Final", 300, "bob")).await.1["outcome"],
        "duplicate"
    );
    let (_, register) = http_json(relay.addr, "GET", path, None, None).await;
    assert_eq!(register["value"], "Final");
}

#[tokio::test]
async fn lww_concurrent_writers_end_on_the_highest_stamp() {
    let relay = Relay::start(&[]);
    create(&relay, "status", "lww").await;
    let addr = relay.addr;
    let writers: Vec<_> = (0..24u64)
        .map(|i| {
            // Stamps in scrambled order, so arrival order says nothing about the winner.
            let wall_ms = (i * 7919) % 24;
            let body = lww_write(&format!("from-{wall_ms}"), wall_ms, &format!("w{i}"));
            tokio::spawn(async move {
                http_json(
                    addr,
                    "PUT",
                    "/api/v1/docs/status/register",
                    None,
                    Some(body),
                )
                .await
            })
        })
        .collect();
    for writer in writers {
        let (status, _) = writer.await.unwrap();
        assert_eq!(status, 200);
    }
    let (_, register) = http_json(addr, "GET", "/api/v1/docs/status/register", None, None).await;
    assert_eq!(register["value"], "from-23");
}

#[tokio::test]
async fn manual_concurrent_writes_conflict_survive_a_restart_and_resolve_once() {
    let mut relay = Relay::start(&[]);
    let temp = relay.take_temp().unwrap();
    create(&relay, "notes", "manual").await;
    let path = "/api/v1/docs/notes/register";
    let write = |base: u64, value: &str, author: &str| json!({ "value": value, "base_version": base, "author": author });
    let (_, first) = http_json(relay.addr, "PUT", path, None, Some(write(0, "v1", "ann"))).await;
    assert_eq!(first["revision"]["version"], 1);
    // Two people edit version 1 at the same time: one applies, the other conflicts.
    let addr = relay.addr;
    let a = tokio::spawn(async move {
        http_json(addr, "PUT", path, None, Some(write(1, "ann's", "ann"))).await
    });
    let b = tokio::spawn(async move {
        http_json(addr, "PUT", path, None, Some(write(1, "bob's", "bob"))).await
    });
    let (a, b) = (a.await.unwrap().1, b.await.unwrap().1);
    let mut outcomes = [
        a["outcome"].as_str().unwrap(),
        b["outcome"].as_str().unwrap(),
    ];
    outcomes.sort();
    assert_eq!(outcomes, ["applied", "conflict"]);
    let conflict = if a["outcome"] == "conflict" { &a } else { &b };
    let id = conflict["conflict"]["id"].as_u64().unwrap();
    let (_, register) = http_json(addr, "GET", path, None, None).await;
    let winner = register["value"].clone();
    assert_eq!(register["version"], 2, "{register}");
    assert_eq!(conflict["conflict"]["current"]["value"], winner);
    assert_eq!(conflict["conflict"]["base_version"], 1);

    // The conflict and the value survive a restart.
    relay.signal_and_wait("TERM");
    let relay = Relay::start_in(temp.path(), &[]);
    let (_, listed) = http_json(
        relay.addr,
        "GET",
        "/api/v1/docs/notes/conflicts",
        None,
        None,
    )
    .await;
    assert_eq!(listed["conflicts"].as_array().unwrap().len(), 1);
    assert_eq!(listed["conflicts"][0]["id"], id);
    let (_, register) = http_json(relay.addr, "GET", path, None, None).await;
    assert_eq!(register["value"], winner);

    // Resolving applies the merged value as the next version, once.
    let resolve = format!("/api/v1/docs/notes/conflicts/{id}/resolve");
    let body = json!({ "value": "ann's + bob's", "author": "cy" });
    let (status, resolved) =
        http_json(relay.addr, "POST", &resolve, None, Some(body.clone())).await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["revision"]["version"], 3);
    assert_eq!(
        http_json(relay.addr, "POST", &resolve, None, Some(body))
            .await
            .0,
        404
    );
    let (_, register) = http_json(relay.addr, "GET", path, None, None).await;
    assert_eq!(register["value"], "ann's + bob's");
    assert_eq!(register["open_conflicts"], 0);
}

#[tokio::test]
async fn a_kind_is_fixed_at_creation() {
    let relay = Relay::start(&[]);
    assert_eq!(create(&relay, "settings", "lww").await.0, 201);
    let (status, err) = create(&relay, "settings", "manual").await;
    assert_eq!(status, 409);
    assert_eq!(err["error"]["code"], "conflict");
    // A register document has no Yjs content: the WebSocket is refused before the upgrade.
    let url = relay.ws_url("settings");
    assert!(tokio_tungstenite::connect_async(url).await.is_err());
    // A Yjs document made by a connection is not a register.
    let mut client = common::YClient::connect(&relay.ws_url("essay")).await;
    client.append("words").await;
    client.wait_for_echo().await;
    let (status, meta) = http_json(relay.addr, "GET", "/api/v1/docs/essay", None, None).await;
    assert_eq!((status, meta["kind"].as_str()), (200, Some("yjs")));
    let (status, _) = http_json(relay.addr, "GET", "/api/v1/docs/essay/register", None, None).await;
    assert_eq!(status, 409);
    assert_eq!(create(&relay, "essay", "lww").await.0, 409);
    let (status, _) = http_json(relay.addr, "GET", "/api/v1/docs/nothing", None, None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let relay = Relay::start(&[]);
    create(&relay, "t", "lww").await;
    let (status, err) = http_json(
        relay.addr,
        "PUT",
        "/api/v1/docs/t/register",
        None,
        Some(json!({"nope": 1})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "bad_request");
    let (status, err) = create(&relay, "bad\\name", "lww").await;
    assert_eq!(status, 400);
    assert_eq!(err["error"]["code"], "invalid_doc_name");
    let (status, _) = http_json(
        relay.addr,
        "POST",
        "/api/v1/docs",
        None,
        Some(json!({"name": "x", "kind": "blob"})),
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn register_writes_need_a_write_token() {
    use aetherflow_server::auth::{Claims, Permission};
    let relay = Relay::start(&["--jwt-secret", "api-secret"]);
    let mint = |perm| {
        let claims = Claims {
            sub: "ada".into(),
            docs: vec!["flag".into()],
            perm,
            exp: 4_000_000_000,
        };
        let key = jsonwebtoken::EncodingKey::from_secret(b"api-secret");
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    };
    let (writer, reader) = (mint(Permission::Write), mint(Permission::Read));
    let body = json!({ "name": "flag", "kind": "lww" });
    let (status, err) =
        http_json(relay.addr, "POST", "/api/v1/docs", None, Some(body.clone())).await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (401, Some("token_missing"))
    );
    let (status, err) = http_json(
        relay.addr,
        "POST",
        "/api/v1/docs",
        Some(&reader),
        Some(body.clone()),
    )
    .await;
    assert_eq!(
        (status, err["error"]["code"].as_str()),
        (403, Some("read_only"))
    );
    assert_eq!(
        http_json(
            relay.addr,
            "POST",
            "/api/v1/docs",
            Some(&writer),
            Some(body)
        )
        .await
        .0,
        201
    );
    let path = "/api/v1/docs/flag/register";
    let (status, _) = http_json(
        relay.addr,
        "PUT",
        path,
        Some(&reader),
        Some(lww_write("x", 1, "r")),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = http_json(
        relay.addr,
        "PUT",
        path,
        Some(&writer),
        Some(lww_write("on", 1, "w")),
    )
    .await;
    assert_eq!(status, 200);
    let (_, register) = http_json(relay.addr, "GET", path, Some(&reader), None).await;
    assert_eq!(register["value"], "on");
}
