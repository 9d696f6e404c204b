//! Peer-assisted sync without any relay: SDK instances on real loopback Quantum sockets, each
//! with its own redb database.
#![allow(clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use aetherflow_client::testing::{append_text, text, wait_state, wait_text};
use aetherflow_client::{Backoff, Client, ClientConfig, ClientError};

/// Generous bound on every wait; nothing sleeps, everything waits on the SDK's streams.
const TIMEOUT: Duration = Duration::from_secs(20);
const SECRET: &str = "shared peer secret";

fn config(dir: &std::path::Path) -> ClientConfig {
    ClientConfig::new(dir).backoff(Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    })
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A listening client and a client pointed at it, both with `SECRET` unless told otherwise.
async fn pair(
    listener_dir: &std::path::Path,
    dialer_dir: &std::path::Path,
    dialer_secret: &str,
) -> (Client, SocketAddr, Client) {
    let listener = Client::open(config(listener_dir).peer_secret(SECRET)).unwrap();
    let addr = listener.listen(loopback()).await.unwrap().local_addr();
    let dialer = Client::open(config(dialer_dir).peer(addr).peer_secret(dialer_secret)).unwrap();
    (listener, addr, dialer)
}

#[tokio::test]
async fn two_clients_without_a_relay_sync_a_document_both_ways_through_a_peer() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, addr, b) = pair(dir_a.path(), dir_b.path(), SECRET).await;
    let doc_a = a.doc("notes").await.unwrap();
    append_text(&doc_a, "text", "from A before the link. ");
    let doc_b = b.doc("notes").await.unwrap();
    append_text(&doc_b, "text", "from B before the link. ");

    let state = wait_state(&doc_b, TIMEOUT, |s| {
        s.peers.get(&addr).is_some_and(|p| p.synced)
    })
    .await;
    assert_eq!(state.peers[&addr].denied, None);
    // Both offline edits crossed, in both directions.
    let both = |t: &str| t.contains("from A before") && t.contains("from B before");
    let seen_by_a = wait_text(&doc_a, "text", TIMEOUT, both).await;
    assert_eq!(wait_text(&doc_b, "text", TIMEOUT, both).await, seen_by_a);

    // Live edits after the initial exchange, both ways.
    append_text(&doc_a, "text", "A live. ");
    wait_text(&doc_b, "text", TIMEOUT, |t| t.contains("A live.")).await;
    append_text(&doc_b, "text", "B live. ");
    let final_a = wait_text(&doc_a, "text", TIMEOUT, |t| t.contains("B live.")).await;
    assert_eq!(text(&doc_b, "text"), final_a);
    assert_eq!(final_a.matches("A live.").count(), 1);

    // No relay: what came from the peer waits, stored, as pending for the relay.
    assert!(doc_a.state().borrow().pending >= 2);
    a.close().await.unwrap();
    b.close().await.unwrap();
    let reopened = Client::open(config(dir_a.path())).unwrap();
    let doc = reopened.doc("notes").await.unwrap();
    assert_eq!(
        text(&doc, "text"),
        final_a,
        "the peer's edits were stored locally"
    );
    reopened.close().await.unwrap();
}

#[tokio::test]
async fn edits_hop_across_a_chain_of_peers() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // A listens; B connects to A and listens; C connects to B only.
    let a = Client::open(config(dirs[0].path()).peer_secret(SECRET)).unwrap();
    let a_addr = a.listen(loopback()).await.unwrap().local_addr();
    let b = Client::open(config(dirs[1].path()).peer(a_addr).peer_secret(SECRET)).unwrap();
    let b_addr = b.listen(loopback()).await.unwrap().local_addr();
    let c = Client::open(config(dirs[2].path()).peer(b_addr).peer_secret(SECRET)).unwrap();
    let (doc_a, doc_b, doc_c) = (
        a.doc("chain").await.unwrap(),
        b.doc("chain").await.unwrap(),
        c.doc("chain").await.unwrap(),
    );
    wait_state(&doc_c, TIMEOUT, |s| {
        s.peers.get(&b_addr).is_some_and(|p| p.synced)
    })
    .await;
    wait_state(&doc_b, TIMEOUT, |s| {
        s.peers.get(&a_addr).is_some_and(|p| p.synced)
    })
    .await;
    append_text(&doc_a, "text", "A. ");
    append_text(&doc_c, "text", "C. ");
    let all = |t: &str| t.contains("A. ") && t.contains("C. ");
    let at_a = wait_text(&doc_a, "text", TIMEOUT, all).await;
    assert_eq!(wait_text(&doc_b, "text", TIMEOUT, all).await, at_a);
    assert_eq!(wait_text(&doc_c, "text", TIMEOUT, all).await, at_a);
    assert_eq!(
        at_a.len(),
        "A. C. ".len(),
        "each edit exactly once: {at_a:?}"
    );
    for client in [a, b, c] {
        client.close().await.unwrap();
    }
}

#[tokio::test]
async fn a_peer_with_a_wrong_secret_is_refused_and_gets_nothing() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, addr, intruder) = pair(dir_a.path(), dir_b.path(), "guessed").await;
    let doc_a = a.doc("secret").await.unwrap();
    append_text(&doc_a, "text", "private");
    let doc_x = intruder.doc("secret").await.unwrap();
    append_text(&doc_x, "text", "injected");
    let state = wait_state(&doc_x, TIMEOUT, |s| {
        s.peers.get(&addr).is_some_and(|p| p.denied.is_some())
    })
    .await;
    let peer = &state.peers[&addr];
    assert!(!peer.online && !peer.synced);
    assert!(peer.denied.as_deref().unwrap().contains("401"), "{peer:?}");
    assert_eq!(text(&doc_x, "text"), "injected");
    assert_eq!(text(&doc_a, "text"), "private");

    // A client without any secret is refused the same way.
    let dir_c = tempfile::tempdir().unwrap();
    let anonymous = Client::open(config(dir_c.path()).peer(addr)).unwrap();
    let doc_c = anonymous.doc("secret").await.unwrap();
    wait_state(&doc_c, TIMEOUT, |s| {
        s.peers.get(&addr).is_some_and(|p| p.denied.is_some())
    })
    .await;
    assert_eq!(text(&doc_c, "text"), "");
    // The listener's document never saw the intruders.
    a.close().await.unwrap();
    let reopened = Client::open(config(dir_a.path())).unwrap();
    assert_eq!(
        text(&reopened.doc("secret").await.unwrap(), "text"),
        "private"
    );
    for client in [reopened, intruder, anonymous] {
        client.close().await.unwrap();
    }
}

#[tokio::test]
async fn listening_without_a_secret_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(config(dir.path())).unwrap();
    let refused = client.listen(loopback()).await.unwrap_err();
    assert!(matches!(refused, ClientError::NoPeerSecret), "{refused}");
    client.close().await.unwrap();
}

#[tokio::test]
async fn garbage_datagrams_do_not_disturb_a_peer() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, addr, b) = pair(dir_a.path(), dir_b.path(), SECRET).await;
    let doc_a = a.doc("sturdy").await.unwrap();
    let doc_b = b.doc("sturdy").await.unwrap();
    wait_state(&doc_b, TIMEOUT, |s| {
        s.peers.get(&addr).is_some_and(|p| p.synced)
    })
    .await;

    // Seeded junk of every size, including empty datagrams and ones shaped like a header.
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut seed: u64 = 0x5eed;
    for n in 0..2000usize {
        let len = n % 1300;
        let datagram: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                (seed >> 33) as u8
            })
            .collect();
        junk.send_to(&datagram, addr).unwrap();
    }

    // The established link still carries edits both ways...
    append_text(&doc_a, "text", "after the junk. ");
    wait_text(&doc_b, "text", TIMEOUT, |t| t.contains("after the junk.")).await;
    append_text(&doc_b, "text", "reply. ");
    wait_text(&doc_a, "text", TIMEOUT, |t| t.contains("reply.")).await;
    // ...and a new peer still gets in.
    let dir_c = tempfile::tempdir().unwrap();
    let c = Client::open(config(dir_c.path()).peer(addr).peer_secret(SECRET)).unwrap();
    let doc_c = c.doc("sturdy").await.unwrap();
    let at_c = wait_text(&doc_c, "text", TIMEOUT, |t| {
        t.contains("after the junk.") && t.contains("reply.")
    })
    .await;
    assert_eq!(at_c, text(&doc_a, "text"));
    for client in [a, b, c] {
        client.close().await.unwrap();
    }
}

#[tokio::test]
async fn presence_crosses_a_peer_link() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, addr, b) = pair(dir_a.path(), dir_b.path(), SECRET).await;
    let doc_a = a.doc("room").await.unwrap();
    let doc_b = b.doc("room").await.unwrap();
    wait_state(&doc_b, TIMEOUT, |s| {
        s.peers.get(&addr).is_some_and(|p| p.synced)
    })
    .await;
    let mut changes = doc_b.changes();
    doc_a
        .set_presence(&serde_json::json!({"name": "Ada"}))
        .unwrap();
    let seen = async {
        loop {
            if doc_b.presence().values().any(|v| v["name"] == "Ada") {
                return;
            }
            changes.next().await.expect("the document is open");
        }
    };
    tokio::time::timeout(TIMEOUT, seen)
        .await
        .unwrap_or_else(|_| panic!("B never saw A: {:?}", doc_b.presence()));
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn a_stopped_peer_shows_as_down_and_edits_stay_local_until_it_listens_again() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Client::open(config(dir_a.path()).peer_secret(SECRET)).unwrap();
    let peer = a.listen(loopback()).await.unwrap();
    let addr = peer.local_addr();
    let b = Client::open(config(dir_b.path()).peer(addr).peer_secret(SECRET)).unwrap();
    let doc_a = a.doc("later").await.unwrap();
    let doc_b = b.doc("later").await.unwrap();
    wait_state(&doc_b, TIMEOUT, |s| {
        s.peers.get(&addr).is_some_and(|p| p.online)
    })
    .await;

    peer.stop();
    wait_state(&doc_b, TIMEOUT, |s| {
        s.peers.get(&addr).is_some_and(|p| !p.online)
    })
    .await;
    append_text(&doc_b, "text", "while A was away. ");
    assert_eq!(text(&doc_a, "text"), "");

    // A listens again on the same address; B's link comes back and delivers the edit.
    // The stopped endpoint releases its socket just after its connections end: poll, bounded.
    let relisten = async {
        loop {
            match a.listen(addr).await {
                Ok(peer) => return peer,
                Err(ClientError::Listen { .. }) => tokio::task::yield_now().await,
                Err(e) => panic!("{e}"),
            }
        }
    };
    let again = tokio::time::timeout(TIMEOUT, relisten).await.unwrap();
    assert_eq!(again.local_addr(), addr);
    wait_text(&doc_a, "text", TIMEOUT, |t| t == "while A was away. ").await;
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn a_full_mesh_of_three_peers_converges_with_every_edit_once() {
    let seed: u64 = std::env::var("PEER_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xA11CE);
    println!("seed {seed} (rerun with PEER_SEED={seed})");
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // Peers are configured before a client opens: learn three free ports by listening once,
    // then reopen each client with the other two as peers and listen on its port again.
    let mut listeners = Vec::new();
    for dir in &dirs {
        let client = Client::open(config(dir.path()).peer_secret(SECRET)).unwrap();
        let addr = client.listen(loopback()).await.unwrap().local_addr();
        listeners.push((client, addr));
    }
    let addrs: Vec<SocketAddr> = listeners.iter().map(|(_, addr)| *addr).collect();
    let mut clients = Vec::new();
    for (i, (listening, _)) in listeners.into_iter().enumerate() {
        listening.close().await.unwrap();
        let mut cfg = config(dirs[i].path()).peer_secret(SECRET);
        for (j, addr) in addrs.iter().enumerate() {
            if j != i {
                cfg = cfg.peer(*addr);
            }
        }
        let client = Client::open(cfg).unwrap();
        let relisten = async {
            loop {
                match client.listen(addrs[i]).await {
                    Ok(peer) => return peer,
                    Err(ClientError::Listen { .. }) => tokio::task::yield_now().await,
                    Err(e) => panic!("{e}"),
                }
            }
        };
        tokio::time::timeout(TIMEOUT, relisten).await.unwrap();
        clients.push(client);
    }
    let mut docs = Vec::new();
    for client in &clients {
        docs.push(client.doc("mesh").await.unwrap());
    }
    let mut rng = seed;
    let mut markers = Vec::new();
    for n in 0..30 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let who = (rng >> 33) as usize % 3;
        let marker = format!("<{who}:{n}>");
        append_text(&docs[who], "text", &marker);
        markers.push(marker);
    }
    let all = |t: &str| markers.iter().all(|m| t.contains(m.as_str()));
    let first = wait_text(&docs[0], "text", TIMEOUT, all).await;
    for doc in &docs[1..] {
        assert_eq!(
            wait_text(doc, "text", TIMEOUT, all).await,
            first,
            "seed {seed}"
        );
    }
    let total: usize = markers.iter().map(String::len).sum();
    assert_eq!(
        first.len(),
        total,
        "each edit exactly once (seed {seed}): {first}"
    );
    for client in clients {
        client.close().await.unwrap();
    }
}
