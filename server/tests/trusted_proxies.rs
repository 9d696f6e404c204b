//! Behind a reverse proxy (`--trusted-proxies`), against the real relay: the per-address
//! connection limit, the admin view and `/metrics` go by the client's forwarded address, and
//! forwarding headers from anyone else change nothing.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use common::{Relay, http_json, http_raw};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

const ADMIN_KEY: &str = "admin-key-for-tests-0123";

/// One a minute after a burst of three: however slow this machine, no token comes back during
/// a test.
const TIGHT_LIMIT: [&str; 4] = ["--connect-rate-per-min", "1", "--connect-burst", "3"];

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket upgrade on `doc` carrying `header: value`; the socket, or the refusal's status.
async fn upgrade(relay: &Relay, doc: &str, header: &str, value: &str) -> Result<Socket, u16> {
    let mut request = relay.ws_url(doc).into_client_request().unwrap();
    request.headers_mut().insert(
        HeaderName::from_bytes(header.as_bytes()).unwrap(),
        HeaderValue::from_str(value).unwrap(),
    );
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("upgrade failed without a status: {e}"),
    }
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_each_get_their_own_connection_limit() {
    let mut args = vec!["--trusted-proxies", "127.0.0.1/32"];
    args.extend_from_slice(&TIGHT_LIMIT);
    let relay = Relay::start(&args);
    // A reconnect storm through the proxy: ten users, more than the burst of one address.
    let mut open = Vec::new();
    for i in 1..=10 {
        let client = format!("198.51.100.{i}");
        let socket = upgrade(&relay, "storm", "X-Forwarded-For", &client).await;
        open.push(socket.unwrap_or_else(|status| panic!("user {i} refused with {status}")));
    }
    // RFC 7239 `Forwarded` counts the same way, IPv6 and port included.
    for i in 1..=3 {
        let forwarded = format!("for=\"[2001:db8::{i}]:4711\"");
        open.push(
            upgrade(&relay, "storm", "Forwarded", &forwarded)
                .await
                .unwrap(),
        );
    }
    // One user who really does open too many is still limited, whatever hop is prepended.
    for _ in 0..3 {
        let hops = "203.0.113.50";
        open.push(
            upgrade(&relay, "storm", "X-Forwarded-For", hops)
                .await
                .unwrap(),
        );
    }
    let spoofed = "192.0.2.99, 203.0.113.50";
    assert_eq!(
        upgrade(&relay, "storm", "X-Forwarded-For", spoofed)
            .await
            .err(),
        Some(429)
    );
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    for trusted in [None, Some("10.0.0.0/8")] {
        let mut args = TIGHT_LIMIT.to_vec();
        if let Some(range) = trusted {
            args.extend(["--trusted-proxies", range]);
        }
        let relay = Relay::start(&args);
        let mut open = Vec::new();
        for i in 1..=3 {
            let client = format!("198.51.100.{i}");
            open.push(
                upgrade(&relay, "d", "X-Forwarded-For", &client)
                    .await
                    .unwrap(),
            );
        }
        // The limit is 127.0.0.1's, whatever the header claims.
        let status = upgrade(&relay, "d", "X-Forwarded-For", "198.51.100.4").await;
        assert_eq!(status.err(), Some(429), "trusted: {trusted:?}");
    }
}

/// The admin view of every session, by user.
async fn remote_addrs(relay: &Relay) -> Vec<(String, String)> {
    let (status, page) =
        http_json(relay.addr, "GET", "/api/v1/sessions", Some(ADMIN_KEY), None).await;
    assert_eq!(status, 200, "{page}");
    page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s: &Value| {
            (
                s["documents"][0].as_str().unwrap().to_owned(),
                s["remote_addr"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_admin_sessions_list_shows_the_forwarded_client_address() {
    let relay = Relay::start(&[
        "--admin-key",
        ADMIN_KEY,
        "--trusted-proxies",
        "127.0.0.1/32,10.0.0.0/8",
    ]);
    // Through two proxies: the client, then a trusted inner proxy.
    let _a = upgrade(&relay, "a", "X-Forwarded-For", "203.0.113.7, 10.1.2.3")
        .await
        .unwrap();
    let _b = upgrade(
        &relay,
        "b",
        "Forwarded",
        "for=\"[2001:db8::1]:4711\";proto=https",
    )
    .await
    .unwrap();
    // An obfuscated client cannot be named: the proxy's address stands.
    let _c = upgrade(&relay, "c", "Forwarded", "for=_hidden")
        .await
        .unwrap();
    let mut seen = remote_addrs(&relay).await;
    seen.sort();
    assert_eq!(seen[0], ("a".into(), "203.0.113.7:0".into()));
    assert_eq!(seen[1], ("b".into(), "[2001:db8::1]:4711".into()));
    assert_eq!(seen[2].0, "c");
    assert!(seen[2].1.starts_with("127.0.0.1:"), "{:?}", seen[2]);
}

#[tokio::test]
async fn behind_trusted_proxies_metrics_need_the_admin_key() {
    // A same-host proxy makes every forwarded stranger a loopback peer.
    let open = Relay::start(&["--trusted-proxies", "127.0.0.1/32"]);
    let refused = http_raw(
        open.addr,
        "GET",
        "/metrics",
        &[("X-Forwarded-For", "127.0.0.1")],
        "",
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("--admin-key"), "{}", refused.body);

    let keyed = Relay::start(&[
        "--trusted-proxies",
        "127.0.0.1/32",
        "--admin-key",
        ADMIN_KEY,
    ]);
    let scrape = http_raw(
        keyed.addr,
        "GET",
        "/metrics",
        &[("X-Admin-Key", ADMIN_KEY)],
        "",
    )
    .await;
    assert_eq!(scrape.status, 200, "{}", scrape.body);
    let stranger = http_raw(keyed.addr, "GET", "/metrics", &[], "").await;
    assert_eq!(stranger.status, 401, "{}", stranger.body);

    // Without proxies, loopback scrapes still work without a key.
    let plain = Relay::start(&[]);
    assert_eq!(
        http_raw(plain.addr, "GET", "/metrics", &[], "")
            .await
            .status,
        200
    );
}
