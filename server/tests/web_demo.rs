//! The relay serves the browser demo: the page at `/` and the bundle it links to, with the
//! content types and cache headers a browser needs.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::SocketAddr;

use common::Relay;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One HTTP/1.1 response: status, headers (names lowercased) and body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

async fn get(addr: SocketAddr, path: &str, extra_headers: &str) -> Response {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra_headers}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head");
    let head = std::str::from_utf8(&raw[..split]).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
        })
        .collect();
    Response {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// The value of `attr="..."` on the first tag of `html` that contains `needle`.
fn link_target<'a>(html: &'a str, needle: &str) -> &'a str {
    let at = html
        .find(needle)
        .unwrap_or_else(|| panic!("no {needle} in {html}"));
    let rest = &html[at + needle.len()..];
    &rest[..rest.find('"').unwrap()]
}

#[tokio::test]
async fn the_page_at_root_links_the_bundle_and_the_relay_serves_it() {
    let relay = Relay::start(&[]);

    let page = get(relay.addr, "/", "").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    let html = String::from_utf8(page.body).unwrap();
    assert!(html.contains("<title>"), "{html}");

    let script_url = link_target(&html, "<script type=\"module\" src=\"");
    let styles_url = link_target(&html, "<link rel=\"stylesheet\" href=\"");
    assert!(script_url.starts_with("/app.js?v="), "{script_url}");
    assert!(styles_url.starts_with("/app.css?v="), "{styles_url}");

    let script = get(relay.addr, script_url, "").await;
    assert_eq!(script.status, 200);
    assert_eq!(
        script.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert_eq!(
        script.header("cache-control"),
        Some("public, max-age=31536000, immutable"),
        "a versioned asset URL always names the same bytes"
    );
    assert_eq!(script.body, include_bytes!("../../web-demo/dist/app.js"));

    let styles = get(relay.addr, styles_url, "").await;
    assert_eq!(styles.status, 200);
    assert_eq!(
        styles.header("content-type"),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(styles.body, include_bytes!("../../web-demo/dist/app.css"));

    // The page still works at its own address: a document name in the query is the page's
    // business, not the relay's.
    let named = get(relay.addr, "/?doc=team%20notes", "").await;
    assert_eq!(named.status, 200);
}

#[tokio::test]
async fn assets_revalidate_with_their_etag_and_an_unversioned_url_is_not_cached_for_good() {
    let relay = Relay::start(&[]);

    let unversioned = get(relay.addr, "/app.js", "").await;
    assert_eq!(unversioned.status, 200);
    assert_eq!(unversioned.header("cache-control"), Some("no-cache"));
    let etag = unversioned.header("etag").unwrap().to_owned();

    let again = get(relay.addr, "/app.js", &format!("If-None-Match: {etag}\r\n")).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    let page = get(relay.addr, "/", "").await;
    let page_etag = page.header("etag").unwrap().to_owned();
    let page_again = get(relay.addr, "/", &format!("If-None-Match: {page_etag}\r\n")).await;
    assert_eq!(page_again.status, 304);

    // The relay's other routes are untouched.
    assert_eq!(get(relay.addr, "/healthz", "").await.status, 200);
    assert_eq!(get(relay.addr, "/no-such-page", "").await.status, 404);
}
