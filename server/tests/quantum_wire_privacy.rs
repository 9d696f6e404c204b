//! What an observer on the path sees of a Quantum session (issue 15): a UDP forwarder between
//! an SDK client and the real relay records every datagram of the session both ways; neither
//! the client's token nor a document's name or text appears in any of them. The same holds
//! for a peer link between two SDK instances, whose shared secret never travels.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherflow_client::testing::{append_text, wait_state, wait_text};
use aetherflow_client::{Client, ClientConfig, Connection, TransportKind};
use aetherflow_server::auth::Permission;
use common::api_client::{SECRET, token};
use common::{Relay, TIMEOUT, read_text_with};
use tokio::net::UdpSocket;

/// Most datagrams the forwarder keeps; a session of a few edits sends far fewer.
const MAX_RECORDED: usize = 100_000;

/// Every datagram that crossed the forwarder, in either direction.
type Recording = Arc<Mutex<Vec<Vec<u8>>>>;

/// Forwards one client's datagrams to `relay` and the answers back, recording each. Returns
/// the address the client should use.
async fn forwarder(relay: SocketAddr, recording: Recording) -> SocketAddr {
    let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    back.connect(relay).await.unwrap();
    let addr = front.local_addr().unwrap();
    let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let record = move |recording: &Recording, bytes: &[u8]| {
        let mut recording = recording.lock().unwrap();
        if recording.len() < MAX_RECORDED {
            recording.push(bytes.to_vec());
        }
    };
    let (up_front, up_back, up_client, up_recording) = (
        front.clone(),
        back.clone(),
        client.clone(),
        recording.clone(),
    );
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok((len, from)) = up_front.recv_from(&mut buf).await {
            *up_client.lock().unwrap() = Some(from);
            record(&up_recording, &buf[..len]);
            let _ = up_back.send(&buf[..len]).await;
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while let Ok(len) = back.recv(&mut buf).await {
            record(&recording, &buf[..len]);
            let to = *client.lock().unwrap();
            if let Some(to) = to {
                let _ = front.send_to(&buf[..len], to).await;
            }
        }
    });
    addr
}

/// Asserts that no recorded datagram holds any of the `needles` (named for the message).
fn assert_hidden(recording: &[Vec<u8>], needles: &[(&str, &[u8])]) {
    for &(what, needle) in needles {
        let seen = recording.iter().filter(|d| contains(d, needle)).count();
        assert_eq!(
            seen,
            0,
            "{what} is visible in {seen} of {} datagrams",
            recording.len()
        );
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_on_the_path_sees_neither_the_token_nor_the_document() {
    let relay = Relay::start(&["--jwt-secret", SECRET]);
    let doc = "quarterly-plans-4f1c";
    let text = "merger with Initech closes on 2027-03-01";
    let secret_token = token("ada", &[doc], Permission::Write);
    let recording = Recording::default();
    let front = forwarder(relay.quantum_addr.unwrap(), recording.clone()).await;

    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(
        ClientConfig::new(dir.path())
            .quantum(front)
            .quantum_key(relay.quantum_key())
            .token(secret_token.clone()),
    )
    .unwrap();
    let handle = client.doc(doc).await.unwrap();
    append_text(&handle, "text", text);
    wait_state(&handle, TIMEOUT, |s| {
        s.synced && s.pending == 0 && s.connection == Connection::Online(TransportKind::Quantum)
    })
    .await;
    let url = format!("{}?token={secret_token}", relay.ws_url(doc));
    assert_eq!(
        read_text_with(&url).await,
        text,
        "the edit reached the relay"
    );
    client.close().await.unwrap();
    // Let the closing packets cross too.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let recording = recording.lock().unwrap();
    assert!(recording.len() >= 6, "a session crossed the forwarder");
    let needles: [(&str, &[u8]); 4] = [
        ("the token", secret_token.as_bytes()),
        (
            "the token's signature",
            secret_token.rsplit('.').next().unwrap().as_bytes(),
        ),
        ("the document's name", doc.as_bytes()),
        ("the document's text", text.as_bytes()),
    ];
    assert_hidden(&recording, &needles);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_of_a_peer_link_sees_neither_the_secret_nor_the_document() {
    let secret = "office LAN secret 8d2e";
    let doc = "peer-notes-77a1";
    let text = "salary review: Ada +12%";
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let listener = Client::open(ClientConfig::new(dir_a.path()).peer_secret(secret)).unwrap();
    let peer = listener
        .listen("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let served = listener.doc(doc).await.unwrap();
    append_text(&served, "text", text);

    let recording = Recording::default();
    let front = forwarder(peer.local_addr(), recording.clone()).await;
    let client = Client::open(
        ClientConfig::new(dir_b.path())
            .peer(front)
            .peer_secret(secret),
    )
    .unwrap();
    let handle = client.doc(doc).await.unwrap();
    wait_text(&handle, "text", TIMEOUT, |t| t == text).await;
    client.close().await.unwrap();
    listener.close().await.unwrap();

    let recording = recording.lock().unwrap();
    assert!(recording.len() >= 4, "a link crossed the forwarder");
    let needles: [(&str, &[u8]); 3] = [
        ("the peer secret", secret.as_bytes()),
        ("the document's name", doc.as_bytes()),
        ("the document's text", text.as_bytes()),
    ];
    assert_hidden(&recording, &needles);
}
