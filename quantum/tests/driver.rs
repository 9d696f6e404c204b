//! The tokio driver over real loopback sockets: handshakes, ordered delivery both ways,
//! fragmentation, many connections, graceful close, resets, refused connects, garbage on the
//! socket, a client changing its local address and a path that goes silent.

#![cfg(feature = "driver")]

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use aetherflow_quantum::crypto::Keypair;
use aetherflow_quantum::{
    CloseReason, DriverConfig, DriverError, QuantumConnection, QuantumEndpoint,
};
use bytes::Bytes;

/// Generous bound on every test, so a regression fails instead of hanging CI.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Settings every endpoint in these tests shares: the relay key the servers hold and the
/// clients pin.
fn base() -> DriverConfig {
    let relay = Keypair::from_seed(99);
    let mut config = DriverConfig::default();
    config.quantum.static_secret = Some(relay.secret);
    config.quantum.server_public_key = Some(relay.public);
    config
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn server() -> QuantumEndpoint {
    let mut config = base();
    config.quantum.accept_incoming = true;
    QuantumEndpoint::bind(loopback(), config)
        .await
        .expect("bind server")
}

async fn client() -> QuantumEndpoint {
    QuantumEndpoint::bind(loopback(), base())
        .await
        .expect("bind client")
}

/// A connected pair: (client endpoint, client side, server endpoint, server side).
async fn pair() -> (
    QuantumEndpoint,
    QuantumConnection,
    QuantumEndpoint,
    QuantumConnection,
) {
    let server = server().await;
    let client = client().await;
    let (conn, accepted) = tokio::join!(client.connect(server.local_addr()), server.accept());
    let conn = conn.expect("connect");
    let accepted = accepted.expect("accept");
    assert_eq!(conn.id(), accepted.id());
    (client, conn, server, accepted)
}

/// Polls `check` every 10 ms until it holds; the test's overall timeout bounds the wait.
async fn eventually<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    while !check().await {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn bounded<T>(test: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TEST_TIMEOUT, test)
        .await
        .expect("test exceeded its overall timeout")
}

// On a multi-threaded runtime, as applications usually run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_both_ways_arrive_in_order() {
    bounded(async {
        let (_client, conn, _server, accepted) = pair().await;
        let count = 200u32;
        let sender = conn.clone();
        let upload = tokio::spawn(async move {
            for i in 0..count {
                sender.send(format!("up {i}")).await.expect("send");
            }
        });
        for i in 0..count {
            accepted.send(format!("down {i}")).await.expect("send");
        }
        for i in 0..count {
            let got = accepted.recv().await.expect("recv").expect("open");
            assert_eq!(got, Bytes::from(format!("up {i}")));
            let got = conn.recv().await.expect("recv").expect("open");
            assert_eq!(got, Bytes::from(format!("down {i}")));
        }
        upload.await.expect("upload task");
        let stats = accepted.stats().await.expect("stats");
        assert_eq!(stats.messages_delivered, u64::from(count));
        assert!(stats.srtt.is_some(), "an RTT was measured");
    })
    .await;
}

#[tokio::test]
async fn a_one_mebibyte_message_is_fragmented_and_reassembled() {
    bounded(async {
        let (_client, conn, _server, accepted) = pair().await;
        let message: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        conn.send(message.clone()).await.expect("send");
        let got = accepted.recv().await.expect("recv").expect("open");
        assert_eq!(got.len(), message.len());
        assert!(got == message, "reassembled bytes differ");
        let stats = conn.stats().await.expect("stats");
        let fragment = aetherflow_quantum::Config::default().max_fragment() as u64;
        assert!(
            stats.packets_sent >= (1u64 << 20).div_ceil(fragment),
            "sent in fragments"
        );
    })
    .await;
}

// On a multi-threaded runtime, as applications usually run it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_serves_many_concurrent_connections() {
    bounded(async {
        let server = server().await;
        let addr = server.local_addr();
        let clients = 24;
        let echo = tokio::spawn(async move {
            for _ in 0..clients {
                let conn = server.accept().await.expect("accept");
                tokio::spawn(async move {
                    while let Ok(Some(message)) = conn.recv().await {
                        conn.send(message).await.expect("echo");
                    }
                });
            }
            server
        });
        let mut tasks = Vec::new();
        for i in 0..clients {
            tasks.push(tokio::spawn(async move {
                let endpoint = client().await;
                let conn = endpoint.connect(addr).await.expect("connect");
                for round in 0..5 {
                    let text = format!("client {i} round {round}");
                    conn.send(text.clone()).await.expect("send");
                    let got = conn.recv().await.expect("recv").expect("open");
                    assert_eq!(got, Bytes::from(text));
                }
            }));
        }
        for task in tasks {
            task.await.expect("client task");
        }
        let server = echo.await.expect("echo task");
        assert_eq!(
            server.stats().await.expect("stats").endpoint.accepted,
            clients
        );
    })
    .await;
}

#[tokio::test]
async fn a_graceful_close_is_seen_by_the_peer_after_the_last_message() {
    bounded(async {
        let (_client, conn, _server, accepted) = pair().await;
        for i in 0..3 {
            conn.send(format!("m{i}")).await.expect("send");
        }
        conn.close().await;
        for i in 0..3 {
            let got = accepted.recv().await.expect("recv").expect("open");
            assert_eq!(got, Bytes::from(format!("m{i}")));
        }
        assert_eq!(accepted.recv().await.expect("clean end"), None);
        assert!(matches!(conn.send("late").await, Err(DriverError::Closed)));
        // The server closes its side too; the client then sees the end.
        accepted.close().await;
        assert_eq!(conn.recv().await.expect("clean end"), None);
    })
    .await;
}

#[tokio::test]
async fn dropping_every_handle_closes_the_connection_gracefully() {
    bounded(async {
        let (_client, conn, _server, accepted) = pair().await;
        conn.send("last words").await.expect("send");
        drop(conn);
        assert_eq!(
            accepted.recv().await.expect("recv"),
            Some(Bytes::from("last words"))
        );
        assert_eq!(accepted.recv().await.expect("clean end"), None);
    })
    .await;
}

#[tokio::test]
async fn dropping_a_whole_endpoint_closes_its_connections_gracefully() {
    bounded(async {
        let (client, conn, _server, accepted) = pair().await;
        conn.send("goodbye").await.expect("send");
        drop(conn);
        drop(client);
        assert_eq!(
            accepted.recv().await.expect("recv"),
            Some(Bytes::from("goodbye"))
        );
        assert_eq!(accepted.recv().await.expect("clean end"), None);
    })
    .await;
}

#[tokio::test]
async fn closing_an_endpoint_resets_its_connections() {
    bounded(async {
        let (_client, conn, server, _accepted) = pair().await;
        server.close().await;
        match conn.recv().await {
            Err(DriverError::ConnectionLost(CloseReason::PeerReset)) => {}
            other => panic!("expected a reset, got {other:?}"),
        }
        assert!(
            server.accept().await.is_none(),
            "a closed endpoint accepts nothing"
        );
        assert!(matches!(
            server.connect(conn.remote_addr()).await,
            Err(DriverError::EndpointClosed)
        ));
    })
    .await;
}

#[tokio::test]
async fn connecting_to_a_closed_port_fails_with_a_handshake_timeout() {
    bounded(async {
        let closed = UdpSocket::bind(loopback()).expect("bind");
        let addr = closed.local_addr().expect("addr");
        drop(closed);
        let config = DriverConfig {
            handshake_timeout: Duration::from_millis(500),
            ..base()
        };
        let endpoint = QuantumEndpoint::bind(loopback(), config)
            .await
            .expect("bind");
        match endpoint.connect(addr).await {
            Err(DriverError::HandshakeTimeout { remote, timeout }) => {
                assert_eq!(remote, addr);
                assert_eq!(timeout, Duration::from_millis(500));
            }
            other => panic!("expected a handshake timeout, got {other:?}"),
        }
        // The failed attempt left nothing behind that keeps retrying.
        let stats = endpoint.stats().await.expect("stats");
        assert_eq!(stats.connections, 0);
    })
    .await;
}

#[tokio::test]
async fn garbage_datagrams_are_counted_and_leave_connections_alone() {
    bounded(async {
        let (_client, conn, server, accepted) = pair().await;
        conn.send("before").await.expect("send");
        assert_eq!(
            accepted.recv().await.expect("recv"),
            Some(Bytes::from("before"))
        );

        let attacker = UdpSocket::bind(loopback()).expect("bind");
        let mut garbage: Vec<Vec<u8>> = vec![
            Vec::new(),
            vec![0xff; 1],
            b"AFQM".to_vec(),
            b"AFQM\x09".to_vec(),
            vec![0; 1200],
        ];
        // A well-formed header prefix with a payload length that overruns the datagram.
        let mut overrun = b"AFQM\x01\x20".to_vec();
        overrun.extend_from_slice(&[0; 24]);
        overrun.extend_from_slice(&[0xff, 0xff]);
        garbage.push(overrun);
        for i in 0..44u8 {
            garbage.push((0..(i as usize * 7)).map(|j| (j as u8) ^ i).collect());
        }
        for datagram in &garbage {
            attacker
                .send_to(datagram, server.local_addr())
                .expect("send garbage");
        }
        let expected = garbage.len() as u64;
        eventually(|| async {
            server.stats().await.expect("stats").endpoint.malformed >= expected
        })
        .await;
        assert_eq!(
            server.stats().await.expect("stats").endpoint.malformed,
            expected
        );

        conn.send("after").await.expect("send");
        assert_eq!(
            accepted.recv().await.expect("recv"),
            Some(Bytes::from("after"))
        );
        accepted.send("reply").await.expect("send");
        assert_eq!(conn.recv().await.expect("recv"), Some(Bytes::from("reply")));
    })
    .await;
}

#[tokio::test]
async fn a_client_that_rebinds_keeps_its_connection() {
    bounded(async {
        let (client, conn, _server, accepted) = pair().await;
        let old = client.local_addr();
        assert_eq!(accepted.remote_addr(), old);
        let new = client.rebind(loopback()).await.expect("rebind");
        assert_ne!(new, old);
        assert_eq!(client.local_addr(), new);

        conn.send("from the new address").await.expect("send");
        assert_eq!(
            accepted.recv().await.expect("recv"),
            Some(Bytes::from("from the new address"))
        );
        // The server moves to the new address once the client answers its path challenge.
        eventually(|| async { accepted.remote_addr() == new }).await;
        accepted.send("to the new address").await.expect("send");
        assert_eq!(
            conn.recv().await.expect("recv"),
            Some(Bytes::from("to the new address"))
        );
    })
    .await;
}

#[tokio::test]
async fn a_wrong_pinned_key_fails_the_connect_with_a_clear_error() {
    bounded(async {
        let server = server().await;
        let mut config = base();
        config.quantum.server_public_key = Some(Keypair::from_seed(100).public);
        let client = QuantumEndpoint::bind(loopback(), config)
            .await
            .expect("bind");
        match client.connect(server.local_addr()).await {
            Err(DriverError::ConnectionLost(CloseReason::HandshakeFailed)) => {}
            other => panic!("expected a failed handshake, got {other:?}"),
        }
        let stats = server.stats().await.expect("stats");
        assert_eq!(stats.endpoint.handshakes_refused, 1);
        assert_eq!(stats.connections, 0, "the relay kept nothing");
    })
    .await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    bounded(async {
        let (client, conn, _server, _accepted) = pair().await;
        let max = aetherflow_quantum::Config::default().max_message_size;
        match conn.send(vec![0u8; max + 1]).await {
            Err(DriverError::TooLarge { len, max: limit }) => {
                assert_eq!((len, limit), (max + 1, max));
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // The connection is still usable after a refused message.
        conn.send("fine").await.expect("send");
        // A client endpoint does not accept connections.
        assert!(client.accept().await.is_none());

        let mut config = base();
        config.quantum.mtu = 10;
        assert!(matches!(
            QuantumEndpoint::bind(loopback(), config).await,
            Err(DriverError::Config(_))
        ));
        let taken = client.local_addr();
        assert!(matches!(
            QuantumEndpoint::bind(taken, base()).await,
            Err(DriverError::Io(_))
        ));
    })
    .await;
}

#[tokio::test]
async fn a_small_send_buffer_pushes_back_without_losing_messages() {
    bounded(async {
        let server = server().await;
        let config = DriverConfig {
            send_buffer: 16 * 1024,
            ..base()
        };
        let client = QuantumEndpoint::bind(loopback(), config)
            .await
            .expect("bind");
        let (conn, accepted) = tokio::join!(client.connect(server.local_addr()), server.accept());
        let (conn, accepted) = (conn.expect("connect"), accepted.expect("accept"));
        let count = 300u32;
        let core = aetherflow_quantum::Config::default();
        let (fragment, mtu) = (core.max_fragment() as u64, core.mtu as u64);
        let sender = tokio::spawn(async move {
            for i in 0..count {
                let mut message = vec![(i % 256) as u8; 8 * 1024];
                message[..4].copy_from_slice(&i.to_be_bytes());
                conn.send(message).await.expect("send");
                // A send returns only when the buffer was under its bound before the message
                // went in, so at most the bound plus one message is ever outstanding.
                let stats = conn.stats().await.expect("stats");
                let fragments =
                    (16 * 1024u64).div_ceil(fragment) + (8 * 1024u64).div_ceil(fragment);
                assert!(stats.bytes_in_flight <= fragments * mtu);
            }
            conn
        });
        for i in 0..count {
            let got = accepted.recv().await.expect("recv").expect("open");
            assert_eq!(got.len(), 8 * 1024);
            assert_eq!(got[..4], i.to_be_bytes());
        }
        drop(sender.await.expect("sender"));
    })
    .await;
}

/// Forwards datagrams between one client and `server` until `cut` is set, then drops them
/// all, as a network that stops delivering.
async fn spawn_cuttable_path(
    server: SocketAddr,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let socket = tokio::net::UdpSocket::bind(loopback())
        .await
        .expect("bind path");
    let addr = socket.local_addr().expect("addr");
    let cut = Arc::new(AtomicBool::new(false));
    let cut_flag = cut.clone();
    tokio::spawn(async move {
        let mut client = None;
        let mut buf = vec![0u8; 65_536];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            if cut_flag.load(Ordering::SeqCst) {
                continue;
            }
            let to = if from == server {
                match client {
                    Some(client) => client,
                    None => continue,
                }
            } else {
                client = Some(from);
                server
            };
            let _ = socket.send_to(&buf[..len], to).await;
        }
    });
    (addr, cut)
}

#[tokio::test]
async fn a_peer_that_goes_silent_ends_in_an_idle_timeout() {
    bounded(async {
        let server = server().await;
        let (path, cut) = spawn_cuttable_path(server.local_addr()).await;
        let mut config = base();
        config.quantum.idle_timeout = Duration::from_secs(1);
        config.quantum.keepalive_interval = Duration::from_millis(250);
        let client = QuantumEndpoint::bind(loopback(), config)
            .await
            .expect("bind");
        let (conn, accepted) = tokio::join!(client.connect(path), server.accept());
        let (conn, accepted) = (conn.expect("connect"), accepted.expect("accept"));
        conn.send("through the path").await.expect("send");
        assert_eq!(
            accepted.recv().await.expect("recv"),
            Some(Bytes::from("through the path"))
        );

        cut.store(true, std::sync::atomic::Ordering::SeqCst);
        match conn.recv().await {
            Err(DriverError::ConnectionLost(CloseReason::TimedOut)) => {}
            other => panic!("expected an idle timeout, got {other:?}"),
        }
        // The end is sticky, and sending on a dead connection is refused.
        assert!(matches!(
            conn.recv().await,
            Err(DriverError::ConnectionLost(CloseReason::TimedOut))
        ));
        assert!(matches!(conn.send("lost").await, Err(DriverError::Closed)));
        assert!(matches!(conn.stats().await, Err(DriverError::Closed)));
    })
    .await;
}
