//! The SDK's version history (`Client::history`) against the real relay binary (see
//! `relay/mod.rs` for where it comes from): SDK clients edit a document, then list its
//! versions page by page, read it at a version, diff and blame with the token subjects as
//! authors, restore a version to every connected client, label versions; read-only tokens and
//! unknown versions get typed refusals, a `wss://` relay is reached over https with the same
//! trust, and answers no relay sends (too large, unreadable, never finished) are typed errors.
#![allow(clippy::unwrap_used, missing_docs)]

mod relay;

use std::time::Duration;

use aetherflow_client::testing::{append_text, text, wait_state, wait_text};
use aetherflow_client::{
    Backoff, Client, ClientConfig, ClientError, DocHandle, History, Page, Run, RunKind,
    TransportError, Version,
};
use relay::{Relay, TIMEOUT, TestCa, token};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yrs::{GetString, Transact};

const DOC: &str = "notes";

/// An SDK client of `relay` over WebSocket, with `token` if given.
fn client(dir: &tempfile::TempDir, url: &str, token: Option<String>) -> Client {
    let mut config = ClientConfig::new(dir.path())
        .websocket(url)
        .backoff(Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
        });
    if let Some(token) = token {
        config = config.token(token);
    }
    Client::open(config).unwrap()
}

/// A client of `relay` writing as `who`, and its handle on [`DOC`].
async fn writer(relay: &Relay, dir: &tempfile::TempDir, who: &str) -> (Client, DocHandle) {
    let client = client(dir, &relay.ws_url(), Some(token(who, &[DOC], "write")));
    let handle = client.doc(DOC).await.unwrap();
    wait_state(&handle, TIMEOUT, |s| s.synced).await;
    (client, handle)
}

/// Appends `s` on `by` and waits until `other` has it: the relay committed it (it broadcasts
/// only what it committed).
async fn type_and_wait(by: &DocHandle, other: &DocHandle, s: &str) -> String {
    append_text(by, "text", s);
    let want = text(by, "text");
    wait_text(other, "text", TIMEOUT, |t| t == want).await
}

/// Every version of [`DOC`], newest first.
async fn all_versions(history: &History) -> Vec<Version> {
    let page = history.versions(Page::newest(1000)).await.unwrap();
    assert_eq!(page.next_before, None);
    page.versions
}

/// The text of root `text` in a JSON content answer.
fn json_text(content: &serde_json::Value) -> &str {
    content["content"]["text"].as_str().unwrap_or_default()
}

/// The text of the runs `by` wrote, in order.
fn written_by(runs: &[Run], kind: RunKind, who: &str) -> String {
    runs.iter()
        .filter(|r| r.kind == kind && r.by == [who])
        .map(|r| r.text.as_str())
        .collect()
}

/// The relay's refusal, as (status, code).
fn refusal<T: std::fmt::Debug>(result: Result<T, ClientError>) -> (u16, String) {
    match result {
        Err(ClientError::Relay { status, code, .. }) => (status, code),
        other => panic!("expected a refusal by the relay, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_page_back_and_past_content_diff_and_blame_name_the_token_subjects() {
    let relay = Relay::with_tokens();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ada, a) = writer(&relay, &dir_a, "ada").await;
    let (bob, b) = writer(&relay, &dir_b, "bob").await;
    // Each change of author starts a version.
    type_and_wait(&a, &b, "one").await;
    type_and_wait(&b, &a, " two").await;
    type_and_wait(&a, &b, " three").await;

    let history = ada.history(DOC).unwrap();
    let all = all_versions(&history).await;
    let authors: Vec<_> = all.iter().map(|v| v.authors.clone()).collect();
    assert_eq!(authors, [["ada"], ["bob"], ["ada"]], "{all:?}");
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "{all:?}");

    // Two at a time: the second page starts below the first's last id and is the last.
    let first = history.versions(Page::newest(2)).await.unwrap();
    assert_eq!(first.versions, all[..2]);
    assert_eq!(first.next_before, Some(all[1].id));
    let second = history
        .versions(Page::newest(2).before(all[1].id))
        .await
        .unwrap();
    assert_eq!(
        (second.versions.as_slice(), second.next_before),
        (&all[2..], None)
    );

    // The document as it was, as JSON and as a Yjs document.
    let (oldest, middle, newest) = (all[2].id, all[1].id, all[0].id);
    assert_eq!(
        json_text(&history.content_json(oldest).await.unwrap()),
        "one"
    );
    assert_eq!(
        json_text(&history.content_json(middle).await.unwrap()),
        "one two"
    );
    let past = history.doc_at(oldest).await.unwrap();
    let past_text = past.get_or_insert_text("text");
    assert_eq!(past_text.get_string(&past.transact()), "one");

    // Who inserted what since the oldest version, and who wrote what is there now.
    let diff = history.diff(oldest, newest).await.unwrap();
    assert_eq!((diff.from, diff.to), (oldest, newest));
    let runs = diff.runs("text").unwrap();
    assert_eq!(
        written_by(&runs, RunKind::Inserted, "bob"),
        " two",
        "{runs:?}"
    );
    let inserted: String = runs
        .iter()
        .filter(|r| r.kind == RunKind::Inserted)
        .map(|r| r.text.as_str())
        .collect();
    assert_eq!(inserted, " two three", "{runs:?}");
    // Ada had written before the range: her later edit is still hers.
    assert_eq!(
        written_by(&runs, RunKind::Inserted, "ada"),
        " three",
        "{runs:?}"
    );
    let blame = history.blame(None).await.unwrap();
    assert_eq!(blame.version, Some(newest));
    let runs = &blame.roots["text"];
    assert_eq!(
        written_by(runs, RunKind::Inserted, "ada"),
        "one three",
        "{runs:?}"
    );
    assert_eq!(
        written_by(runs, RunKind::Inserted, "bob"),
        " two",
        "{runs:?}"
    );
    let then = history.blame(Some(middle)).await.unwrap();
    let runs = &then.roots["text"];
    assert_eq!(
        written_by(runs, RunKind::Inserted, "bob"),
        " two",
        "{runs:?}"
    );
    assert_eq!(
        written_by(runs, RunKind::Inserted, "ada"),
        "one",
        "{runs:?}"
    );
    ada.close().await.unwrap();
    bob.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_reaches_the_other_client_as_an_ordinary_update_and_both_converge() {
    let relay = Relay::with_tokens();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ada, a) = writer(&relay, &dir_a, "ada").await;
    let (bob, b) = writer(&relay, &dir_b, "bob").await;
    type_and_wait(&a, &b, "draft").await;
    type_and_wait(&b, &a, ", edited by bob").await;
    let history = ada.history(DOC).unwrap();
    let draft = all_versions(&history).await[1].id;

    let restored = history.restore(draft).await.unwrap();
    assert_eq!((restored.restored, restored.changed), (draft, true));
    wait_text(&b, "text", TIMEOUT, |t| t == "draft").await;
    wait_text(&a, "text", TIMEOUT, |t| t == "draft").await;
    // The restore is a change like any other: credited to ada, and edits build on it.
    assert_eq!(all_versions(&history).await[0].authors, ["ada"]);
    let again = history.restore(draft).await.unwrap();
    assert!(!again.changed, "{again:?}");
    type_and_wait(&b, &a, "!").await;
    assert_eq!(text(&b, "text"), "draft!");
    ada.close().await.unwrap();
    bob.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_are_set_listed_shown_on_their_version_and_removed() {
    let relay = Relay::with_tokens();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ada, a) = writer(&relay, &dir_a, "ada").await;
    let (bob, b) = writer(&relay, &dir_b, "bob").await;
    type_and_wait(&a, &b, "v1").await;
    type_and_wait(&b, &a, " v2").await;
    let history = ada.history(DOC).unwrap();
    let first = all_versions(&history).await[1].id;

    let label = history.label(first, "  sent to client ").await.unwrap();
    assert_eq!(
        (label.version, label.label.as_str()),
        (first, "sent to client")
    );
    let labels = history.labels().await.unwrap();
    assert_eq!(labels, std::slice::from_ref(&label));
    let shown = all_versions(&history).await;
    assert_eq!(shown[1].label.as_deref(), Some("sent to client"));
    assert_eq!(shown[0].label, None);

    history.remove_label(first).await.unwrap();
    assert_eq!(history.labels().await.unwrap(), []);
    assert_eq!(all_versions(&history).await[1].label, None);
    assert_eq!(
        refusal(history.remove_label(first).await),
        (404, "not_found".into())
    );
    assert_eq!(
        refusal(history.label(first, "").await),
        (400, "bad_request".into())
    );
    ada.close().await.unwrap();
    bob.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_tokens_browse_but_cannot_restore_or_label_and_unknown_versions_are_404() {
    let relay = Relay::with_tokens();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (ada, a) = writer(&relay, &dir_a, "ada").await;
    let (bob, b) = writer(&relay, &dir_b, "bob").await;
    type_and_wait(&a, &b, "kept").await;
    type_and_wait(&b, &a, " and more").await;
    let dir_r = tempfile::tempdir().unwrap();
    let reader = client(&dir_r, &relay.ws_url(), Some(token("rita", &[DOC], "read")));
    let history = reader.history(DOC).unwrap();
    let versions = all_versions(&history).await;
    let (older, newest) = (versions[1].id, versions[0].id);
    assert_eq!(
        json_text(&history.content_json(older).await.unwrap()),
        "kept"
    );

    assert_eq!(
        refusal(history.restore(older).await),
        (403, "read_only".into())
    );
    assert_eq!(
        refusal(history.label(older, "mine").await),
        (403, "read_only".into())
    );
    assert_eq!(
        refusal(history.remove_label(older).await),
        (403, "read_only".into())
    );
    // Nothing changed: no restore reached the writers, no label was set.
    assert_eq!(all_versions(&history).await, versions);
    assert_eq!(history.labels().await.unwrap(), []);
    assert_eq!(text(&a, "text"), "kept and more");

    let unknown = newest + 1000;
    assert_eq!(
        refusal(history.content_json(unknown).await),
        (404, "not_found".into())
    );
    assert_eq!(
        refusal(history.doc_at(unknown).await),
        (404, "not_found".into())
    );
    assert_eq!(
        refusal(history.diff(older, unknown).await),
        (404, "not_found".into())
    );
    assert_eq!(
        refusal(history.blame(Some(unknown)).await),
        (404, "not_found".into())
    );
    let writer_history = ada.history(DOC).unwrap();
    assert_eq!(
        refusal(writer_history.restore(unknown).await),
        (404, "not_found".into())
    );
    // No token at all: the relay does not say who wrote what.
    let dir_n = tempfile::tempdir().unwrap();
    let nobody = client(&dir_n, &relay.ws_url(), None);
    let (status, _) = refusal(nobody.history(DOC).unwrap().versions(Page::default()).await);
    assert_eq!(status, 401);
    for client in [ada, bob, reader, nobody] {
        client.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wss_relays_history_is_read_over_https_with_the_clients_trust_and_only_with_it() {
    let ca = TestCa::new();
    let relay = ca.relay();
    let url = format!("wss://localhost:{}", relay.addr.port());
    let dir = tempfile::tempdir().unwrap();
    let config = ClientConfig::new(dir.path())
        .websocket(&url)
        .tls_root_certificate(ca.pem.as_bytes());
    let trusting = Client::open(config).unwrap();
    let notes = trusting.doc(DOC).await.unwrap();
    append_text(&notes, "text", "over TLS");
    wait_state(&notes, TIMEOUT, |s| s.synced && s.pending == 0).await;

    let history = trusting.history(DOC).unwrap();
    let versions = all_versions(&history).await;
    assert_eq!(versions.len(), 1, "{versions:?}");
    let content = history.content_json(versions[0].id).await.unwrap();
    assert_eq!(json_text(&content), "over TLS");

    // Without the test CA the relay's certificate is not trusted: a TLS error, no answer.
    let dir = tempfile::tempdir().unwrap();
    let untrusting = Client::open(ClientConfig::new(dir.path()).websocket(&url)).unwrap();
    match untrusting
        .history(DOC)
        .unwrap()
        .versions(Page::default())
        .await
    {
        Err(ClientError::Request(TransportError::Tls(reason))) => {
            assert!(reason.contains("UnknownIssuer"), "{reason}")
        }
        other => panic!("expected a TLS error, got {other:?}"),
    }
    trusting.close().await.unwrap();
    untrusting.close().await.unwrap();
}

/// A server on a local port answering every request with `answer` (then keeping the
/// connection open), or never answering when `answer` is empty.
async fn fake_relay(answer: &'static [u8]) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if !answer.is_empty() {
                    let _ = socket.write_all(answer).await;
                }
                // Hold the connection until the client lets go.
                let _ = socket.read(&mut buf).await;
            });
        }
    });
    url
}

/// What a case expects of the error.
type Expected = fn(&ClientError) -> bool;

#[tokio::test]
async fn without_a_usable_relay_url_there_is_no_history_handle() {
    let dir = tempfile::tempdir().unwrap();
    let offline = Client::open(ClientConfig::new(dir.path())).unwrap();
    assert!(matches!(
        offline.history(DOC),
        Err(ClientError::NoRelayApi { .. })
    ));
    offline.close().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad_url = Client::open(ClientConfig::new(dir.path()).websocket("relay:8080")).unwrap();
    assert!(matches!(
        bad_url.history(DOC),
        Err(ClientError::NoRelayApi { .. })
    ));
    bad_url.close().await.unwrap();
}

#[tokio::test]
async fn answers_no_relay_sends_are_typed_errors_never_panics() {
    let cases: [(&[u8], Expected); 4] = [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n",
            |e| matches!(e, ClientError::AnswerTooLarge { limit } if *limit == 64 << 20),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot json!",
            |e| matches!(e, ClientError::BadAnswer(_)),
        ),
        (
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 14\r\n\r\n<h1>oops</h1>\n",
            |e| matches!(e, ClientError::Relay { status: 502, code, message } if code.is_empty() && message.contains("oops")),
        ),
        (b"", |e| {
            matches!(e, ClientError::Request(TransportError::Timeout))
        }),
    ];
    for (answer, expected) in cases {
        let url = fake_relay(answer).await;
        let dir = tempfile::tempdir().unwrap();
        let config = ClientConfig::new(dir.path())
            .websocket(url)
            .http_timeout(Duration::from_millis(500));
        let client = Client::open(config).unwrap();
        let err = client
            .history(DOC)
            .unwrap()
            .versions(Page::default())
            .await
            .unwrap_err();
        assert!(
            expected(&err),
            "{:?}: {err:?}",
            String::from_utf8_lossy(answer)
        );
        client.close().await.unwrap();
    }
    // Bytes that are not a Yjs update are refused too when opened as a document.
    let url = fake_relay(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n\xff\xff\xff\xff").await;
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(ClientConfig::new(dir.path()).websocket(url)).unwrap();
    let err = client.history(DOC).unwrap().doc_at(1).await.unwrap_err();
    assert!(matches!(err, ClientError::BadAnswer(_)), "{err:?}");
    client.close().await.unwrap();
}
