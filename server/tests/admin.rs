//! The admin routes against the real relay: sessions listed, filtered, paged, inspected and
//! disconnected; heartbeat states; the admin key; token minting.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::time::Instant;

use common::{Relay, TIMEOUT, YClient, http_json, http_raw, read_text_with};
use serde_json::{Value, json};

const ADMIN_KEY: &str = "admin-key-for-tests-0123";
const SECRET: &str = "jwt-secret-for-tests";

fn secured(extra: &[&str]) -> Relay {
    let mut args = vec!["--admin-key", ADMIN_KEY, "--jwt-secret", SECRET];
    args.extend_from_slice(extra);
    Relay::start(&args)
}

async fn admin(relay: &Relay, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    http_json(relay.addr, method, path, Some(ADMIN_KEY), body).await
}

/// Mints a token through the API; returns it.
async fn mint(relay: &Relay, sub: &str, docs: &[&str], perm: &str) -> String {
    let body = json!({ "sub": sub, "docs": docs, "perm": perm, "ttl_secs": 600 });
    let (status, minted) = admin(relay, "POST", "/api/v1/tokens", Some(body)).await;
    assert_eq!(status, 201, "{minted}");
    minted["token"].as_str().unwrap().to_owned()
}

fn url(relay: &Relay, doc: &str, token: &str) -> String {
    format!("{}?token={token}", relay.ws_url(doc))
}

fn ids(page: &Value) -> Vec<String> {
    page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls the session until `done` holds for it, bounded by [`TIMEOUT`]; returns it.
async fn wait_for_session(relay: &Relay, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (status, session) = admin(relay, "GET", &format!("/api/v1/sessions/{id}"), None).await;
        assert_eq!(status, 200, "{session}");
        if done(&session) {
            return session;
        }
        assert!(
            Instant::now() < deadline,
            "session never got there: {session}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The one session of `user`, found by filter.
async fn session_of(relay: &Relay, user: &str) -> Value {
    let (status, page) = admin(relay, "GET", &format!("/api/v1/sessions?user={user}"), None).await;
    assert_eq!(status, 200, "{page}");
    let sessions = page["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "{page}");
    sessions[0].clone()
}

#[tokio::test]
async fn sessions_are_listed_filtered_and_paged() {
    let relay = secured(&[]);
    let ada = mint(&relay, "ada", &["notes"], "write").await;
    let bob = mint(&relay, "bob", &["*"], "write").await;
    let _a = YClient::connect(&url(&relay, "notes", &ada)).await;
    let _b1 = YClient::connect(&url(&relay, "notes", &bob)).await;
    let _b2 = YClient::connect(&url(&relay, "plans", &bob)).await;

    let (status, all) = admin(&relay, "GET", "/api/v1/sessions", None).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(ids(&all).len(), 3);
    assert!(all.get("next_after").is_none(), "{all}");

    let only_ada = session_of(&relay, "ada").await;
    assert_eq!(only_ada["documents"], json!(["notes"]));
    assert_eq!(only_ada["transport"], "websocket");
    assert_eq!(only_ada["state"], "ACTIVE");
    assert!(
        only_ada["remote_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );

    let query = |q: &'static str| admin(&relay, "GET", q, None);
    let (_, plans) = query("/api/v1/sessions?document=plans").await;
    assert_eq!(plans["sessions"][0]["user"], "bob");
    assert_eq!(ids(&plans).len(), 1);
    let (_, bob_notes) = query("/api/v1/sessions?user=bob&doc=notes&state=active").await;
    assert_eq!(ids(&bob_notes).len(), 1);
    let (_, idle) = query("/api/v1/sessions?state=IDLE").await;
    assert!(ids(&idle).is_empty());
    let (_, quantum) = query("/api/v1/sessions?transport=quantum").await;
    assert!(ids(&quantum).is_empty());

    // Paging: two pages, every session exactly once, oldest first.
    let (_, first) = query("/api/v1/sessions?limit=2").await;
    assert_eq!(ids(&first).len(), 2);
    let after = first["next_after"].as_str().unwrap();
    let path = format!("/api/v1/sessions?limit=2&after={after}");
    let (_, second) = admin(&relay, "GET", &path, None).await;
    assert_eq!(ids(&second).len(), 1);
    assert!(second.get("next_after").is_none());
    let paged: Vec<String> = ids(&first).into_iter().chain(ids(&second)).collect();
    assert_eq!(paged, ids(&all));

    // One session by id.
    let id = only_ada["id"].as_str().unwrap();
    let (status, one) = admin(&relay, "GET", &format!("/api/v1/sessions/{id}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(one["user"], "ada");
}

#[tokio::test]
async fn bad_session_queries_are_refused_with_a_reason() {
    let relay = secured(&[]);
    let cases = [
        ("/api/v1/sessions?state=SLEEPING", 400, "state"),
        (
            "/api/v1/sessions?transport=carrier-pigeon",
            400,
            "transport",
        ),
        ("/api/v1/sessions?limit=0", 400, "limit"),
        ("/api/v1/sessions?limit=1000000", 400, "limit"),
        ("/api/v1/sessions?limit=ten", 400, "limit"),
        ("/api/v1/sessions?after=not-a-uuid", 400, "session id"),
        ("/api/v1/sessions?usr=ada", 400, "usr"),
        ("/api/v1/sessions/not-a-uuid", 400, "session id"),
        (
            "/api/v1/sessions/01890a5d-ac96-774b-bcce-b302099a8057",
            404,
            "no session",
        ),
    ];
    for (path, status, needle) in cases {
        let (got, body) = admin(&relay, "GET", path, None).await;
        assert_eq!(got, status, "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{path}: {message}");
    }
    let path = "/api/v1/sessions/01890a5d-ac96-774b-bcce-b302099a8057";
    let (got, body) = admin(&relay, "DELETE", path, None).await;
    assert_eq!(got, 404, "{body}");
}

#[tokio::test]
async fn counters_count_what_the_client_sent_and_received() {
    let relay = secured(&[]);
    let ada = mint(&relay, "ada", &["notes"], "write").await;
    let mut client = YClient::connect(&url(&relay, "notes", &ada)).await;
    let id = session_of(&relay, "ada").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The handshake: our step 1 and our answer to the relay's step 1 in; its step 1 and
    // step 2 out.
    let before = wait_for_session(&relay, &id, |s| s["messages_in"] == 2).await;
    assert!(before["messages_out"].as_u64().unwrap() >= 2, "{before}");
    assert!(before["bytes_in"].as_u64().unwrap() > 0, "{before}");
    let sent = client.append("a line of text").await;
    client.wait_for_echo().await;
    let after = wait_for_session(&relay, &id, |s| s["messages_in"] != before["messages_in"]).await;
    let delta = |field: &str| after[field].as_u64().unwrap() - before[field].as_u64().unwrap();
    assert_eq!(delta("messages_in"), 1, "{after}");
    // One y-sync update message: the update plus its two-byte header and length.
    assert!(delta("bytes_in") > sent.len() as u64, "{after}");
    assert!(delta("messages_out") >= 1, "{after}");
    assert!(delta("bytes_out") > 0, "{after}");
    assert!(after["last_active_ms"].as_u64() >= before["last_active_ms"].as_u64());
}

#[tokio::test]
async fn an_admin_disconnect_closes_only_that_connection_with_its_reason() {
    let relay = secured(&[]);
    let ada = mint(&relay, "ada", &["notes"], "write").await;
    let bob = mint(&relay, "bob", &["notes"], "write").await;
    let mut kicked = YClient::connect(&url(&relay, "notes", &ada)).await;
    let mut stays = YClient::connect(&url(&relay, "notes", &bob)).await;
    let id = session_of(&relay, "ada").await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let path = format!("/api/v1/sessions/{id}?reason=maintenance");
    let (status, closed) = admin(&relay, "DELETE", &path, None).await;
    assert_eq!(status, 200, "{closed}");
    assert_eq!(closed["state"], "CLOSED");
    assert_eq!(closed["close"]["code"], 1008);
    let frame = kicked.expect_close().await;
    assert_eq!(u16::from(frame.code), 1008);
    assert!(frame.reason.contains("maintenance"), "{}", frame.reason);

    // Listed as CLOSED for a while; a second disconnect is a conflict.
    let (status, again) = admin(&relay, "DELETE", &path, None).await;
    assert_eq!(status, 409, "{again}");
    // The other connection on the document is untouched.
    stays.append("still here").await;
    // The echo, not the local text: the reader below must find the update committed.
    stays.wait_for_echo().await;
    let fresh = mint(&relay, "cy", &["notes"], "read").await;
    assert_eq!(
        read_text_with(&url(&relay, "notes", &fresh)).await,
        "still here"
    );
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_goes_idle_then_is_closed() {
    let relay = secured(&["--ping-interval-secs", "2"]);
    let ada = mint(&relay, "ada", &["notes"], "write").await;
    // Connected, then never read again: tungstenite answers pings only while reading.
    let ghost = YClient::connect(&url(&relay, "notes", &ada)).await;
    let id = session_of(&relay, "ada").await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let idle = wait_for_session(&relay, &id, |s| s["state"] != "ACTIVE").await;
    assert_eq!(idle["state"], "IDLE", "{idle}");
    let closed = wait_for_session(&relay, &id, |s| s["state"] == "CLOSED").await;
    assert_eq!(closed["close"]["code"], 1001, "{closed}");
    assert_eq!(closed["close"]["reason"], "ping timeout");
    drop(ghost);
}

type Headers<'a> = &'a [(&'a str, &'a str)];

#[tokio::test]
async fn admin_routes_refuse_a_missing_or_wrong_key_and_client_tokens() {
    let relay = secured(&[]);
    let client_token = mint(&relay, "ada", &["notes"], "write").await;
    let routes = [
        ("GET", "/api/v1/sessions", ""),
        (
            "DELETE",
            "/api/v1/sessions/01890a5d-ac96-774b-bcce-b302099a8057",
            "",
        ),
        (
            "POST",
            "/api/v1/tokens",
            r#"{"sub":"x","docs":["a"],"perm":"read"}"#,
        ),
    ];
    let bearer_client = format!("Bearer {client_token}");
    let bearer_admin = format!("Bearer {ADMIN_KEY}");
    for (method, path, body) in routes {
        let cases: [(Headers, u16, &str); 4] = [
            (&[], 401, "admin_key_missing"),
            (
                &[("Authorization", "Bearer wrong-key-0123456789")],
                401,
                "admin_key_invalid",
            ),
            (
                &[("X-Admin-Key", "wrong-key-0123456789")],
                401,
                "admin_key_invalid",
            ),
            (
                &[("Authorization", bearer_client.as_str())],
                403,
                "admin_client_token",
            ),
        ];
        for (headers, status, code) in cases {
            let response = http_raw(relay.addr, method, path, headers, body).await;
            assert_eq!(response.status, status, "{method} {path} {headers:?}");
            assert_eq!(response.json()["error"]["code"], code);
        }
        // The key itself works both ways.
        for header in [
            ("Authorization", bearer_admin.as_str()),
            ("X-Admin-Key", ADMIN_KEY),
        ] {
            let response = http_raw(relay.addr, method, path, &[header], body).await;
            assert!(
                [200, 201, 404].contains(&response.status),
                "{method} {path} {header:?}: {} {}",
                response.status,
                response.body
            );
        }
    }
}

#[tokio::test]
async fn without_an_admin_key_the_admin_routes_are_disabled_even_when_open() {
    for args in [&[][..], &["--jwt-secret", SECRET][..]] {
        let relay = Relay::start(args);
        for (method, path) in [("GET", "/api/v1/sessions"), ("POST", "/api/v1/tokens")] {
            let headers = [("Authorization", "Bearer anything-at-all-here")];
            let response = http_raw(relay.addr, method, path, &headers, "{}").await;
            assert_eq!(response.status, 403, "{args:?} {method} {path}");
            assert_eq!(response.json()["error"]["code"], "admin_disabled");
        }
    }
}

#[tokio::test]
async fn a_minted_token_opens_its_documents_and_only_those() {
    let relay = secured(&[]);
    let body = json!({ "sub": "ada", "docs": ["team-*"], "perm": "write", "ttl_secs": 600 });
    let (status, minted) = admin(&relay, "POST", "/api/v1/tokens", Some(body)).await;
    assert_eq!(status, 201, "{minted}");
    assert_eq!(minted["sub"], "ada");
    assert_eq!(minted["perm"], "write");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = minted["exp"].as_u64().unwrap();
    assert!(
        (now + 500..=now + 700).contains(&exp),
        "exp {exp}, now {now}"
    );
    let token = minted["token"].as_str().unwrap();

    let mut client = YClient::connect(&url(&relay, "team-a", token)).await;
    client.append("minted").await;
    client.wait_for_echo().await;
    assert_eq!(
        session_of(&relay, "ada").await["documents"],
        json!(["team-a"])
    );
    assert_eq!(
        read_text_with(&url(&relay, "team-a", token)).await,
        "minted"
    );
    let path = format!("/ws/elsewhere?token={token}");
    let (status, _) = common::http_get(relay.addr, &path).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn minting_with_bad_input_says_what_is_wrong() {
    let relay = secured(&["--token-max-ttl-secs", "3600"]);
    let cases = [
        (r#"{"docs":["a"],"perm":"read"}"#, "sub"),
        (r#"{"sub":"","docs":["a"],"perm":"read"}"#, "sub"),
        (r#"{"sub":"ada","docs":[],"perm":"read"}"#, "docs"),
        (r#"{"sub":"ada","docs":["a/b"],"perm":"read"}"#, "docs"),
        (r#"{"sub":"ada","docs":["te*am"],"perm":"read"}"#, "docs"),
        (r#"{"sub":"ada","docs":["a"],"perm":"admin"}"#, "perm"),
        (
            r#"{"sub":"ada","docs":["a"],"perm":"read","ttl_secs":0}"#,
            "ttl_secs",
        ),
        (
            r#"{"sub":"ada","docs":["a"],"perm":"read","ttl_secs":3601}"#,
            "ttl_secs",
        ),
        (
            r#"{"sub":"ada","docs":["a"],"perm":"read","ttl_secs":-5}"#,
            "ttl_secs",
        ),
        (
            r#"{"sub":"ada","docs":["a"],"perm":"read","role":"x"}"#,
            "role",
        ),
        (r#"{"sub":"ada","#, "EOF"),
        ("42", "struct MintRequest"),
    ];
    let key = [("X-Admin-Key", ADMIN_KEY)];
    for (body, needle) in cases {
        let response = http_raw(relay.addr, "POST", "/api/v1/tokens", &key, body).await;
        assert_eq!(response.status, 400, "{body}: {}", response.body);
        let json = response.json();
        assert_eq!(json["error"]["code"], "bad_request");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
}

#[tokio::test]
async fn minting_without_an_hs256_secret_is_refused_clearly() {
    // Open loopback mode with an admin key: admin routes work, but there is nothing to sign
    // tokens with.
    let relay = Relay::start(&["--admin-key", ADMIN_KEY]);
    let body = json!({ "sub": "ada", "docs": ["a"], "perm": "read" });
    let (status, error) = admin(&relay, "POST", "/api/v1/tokens", Some(body)).await;
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["error"]["code"], "no_signing_secret");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--jwt-secret")
    );
}

#[test]
fn help_documents_the_admin_and_rate_limit_settings() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aetherflow"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, env) in [
        ("--admin-key", "AETHERFLOW_ADMIN_KEY"),
        ("--connect-rate-per-min", "AETHERFLOW_CONNECT_RATE_PER_MIN"),
        ("--connect-burst", "AETHERFLOW_CONNECT_BURST"),
        ("--message-rate-per-sec", "AETHERFLOW_MESSAGE_RATE_PER_SEC"),
        ("--message-burst", "AETHERFLOW_MESSAGE_BURST"),
        ("--token-max-ttl-secs", "AETHERFLOW_TOKEN_MAX_TTL_SECS"),
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
        assert!(help.contains(env), "--help lacks {env}");
    }
}

#[test]
fn a_short_admin_key_stops_the_relay_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aetherflow"))
        .args(["--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("AETHERFLOW_ADMIN_KEY", "short")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("--admin-key") && stderr.contains("16 characters"),
        "{stderr}"
    );
    assert!(!stderr.contains("short"), "the key is echoed: {stderr}");
}

#[tokio::test]
async fn the_admin_key_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(
        dir.path(),
        &["--jwt-secret", SECRET],
        &[("AETHERFLOW_ADMIN_KEY", ADMIN_KEY)],
    );
    let (status, page) = admin(&relay, "GET", "/api/v1/sessions", None).await;
    assert_eq!(status, 200, "{page}");
    assert!(!relay.logs().contains(ADMIN_KEY), "the key is logged");
}

#[tokio::test]
async fn a_live_register_connection_is_a_session_too() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Frame;
    let relay = secured(&[]);
    let token = mint(&relay, "ada", &["title"], "write").await;
    let create = json!({ "name": "title", "kind": "lww" });
    let (status, body) = http_json(
        relay.addr,
        "POST",
        "/api/v1/docs",
        Some(&token),
        Some(create),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let url = format!("ws://{}/api/v1/docs/title/live?token={token}", relay.addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let write = json!({ "op": "write", "id": 1, "value": "Draft",
        "stamp": { "clock": { "wall_ms": 1, "counter": 0 }, "writer": "tab" } });
    socket
        .send(Frame::Text(write.to_string().into()))
        .await
        .unwrap();
    // The greeting, the write's event, then its result.
    loop {
        let frame = tokio::time::timeout(TIMEOUT, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Frame::Text(text) = frame else { continue };
        let message: Value = serde_json::from_str(text.as_str()).unwrap();
        if message["type"] == "result" {
            assert_eq!(message["outcome"]["outcome"], "applied", "{message}");
            break;
        }
    }
    let session = session_of(&relay, "ada").await;
    assert_eq!(session["documents"], json!(["title"]));
    assert_eq!(session["state"], "ACTIVE");
    assert_eq!(session["messages_in"], 1, "{session}");
    assert!(session["messages_out"].as_u64().unwrap() >= 2, "{session}");

    let path = format!("/api/v1/sessions/{}", session["id"].as_str().unwrap());
    let (status, closed) = admin(&relay, "DELETE", &path, None).await;
    assert_eq!(status, 200, "{closed}");
    let close = loop {
        let frame = tokio::time::timeout(TIMEOUT, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Frame::Close(Some(close)) = frame {
            break close;
        }
    };
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("administrator"), "{}", close.reason);
}
