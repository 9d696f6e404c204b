//! The relay terminating TLS itself (`--tls-cert`, `--tls-key`), with certificates made by
//! the test (rcgen): SDK clients sync over `wss://`, an untrusted certificate and plain
//! `ws://` are refused with a clear reason, a silent connection cannot hold a place, and a
//! replaced certificate is used for new connections while open ones stay up.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aetherflow_client::register::WriteOutcome;
use aetherflow_client::testing::{append_text, wait_state, wait_text};
use aetherflow_client::{Backoff, Client, ClientConfig, Connection, DocHandle, TransportKind};
use common::{Relay, TIMEOUT};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A certificate authority made for one test.
struct TestCa {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `localhost` and 127.0.0.1: (chain PEM, key PEM).
    fn server_cert(&self) -> (String, String) {
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// The relay's certificate files in a temporary directory.
struct CertFiles {
    dir: tempfile::TempDir,
}

impl CertFiles {
    fn signed_by(ca: &TestCa) -> CertFiles {
        let files = CertFiles {
            dir: tempfile::tempdir().unwrap(),
        };
        files.replace_with(ca);
        files
    }

    fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// Writes a new certificate from `ca`, each file replaced at once (renamed into place), as
    /// certificate renewal tools do.
    fn replace_with(&self, ca: &TestCa) {
        let (cert, key) = ca.server_cert();
        write_atomically(&self.key(), &key);
        write_atomically(&self.cert(), &cert);
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.cert().display().to_string(),
            "--tls-key".into(),
            self.key().display().to_string(),
        ]
    }
}

fn write_atomically(path: &Path, contents: &str) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, contents).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

fn start_tls_relay(files: &CertFiles, extra: &[&str]) -> Relay {
    let args = files.args();
    let mut all: Vec<&str> = args.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    Relay::start(&all)
}

fn wss_url(relay: &Relay) -> String {
    format!("wss://localhost:{}", relay.addr.port())
}

/// An SDK client on `url`, trusting `ca` besides the platform's roots.
fn client(dir: &Path, url: &str, ca: Option<&TestCa>) -> Client {
    let mut config = ClientConfig::new(dir).websocket(url).backoff(Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    });
    if let Some(ca) = ca {
        config = config.tls_root_certificate(ca.pem.as_bytes());
    }
    Client::open(config).unwrap()
}

async fn wait_settled(handle: &DocHandle) {
    wait_state(handle, TIMEOUT, |s| {
        s.synced && s.pending == 0 && s.connection == Connection::Online(TransportKind::WebSocket)
    })
    .await;
}

/// Waits until the document's connection attempts are refused, and returns why.
async fn wait_denied(handle: &DocHandle) -> String {
    let state = wait_state(handle, TIMEOUT, |s| s.denied.is_some()).await;
    assert!(
        !matches!(state.connection, Connection::Online(_)),
        "{state:?}"
    );
    state.denied.unwrap()
}

/// One HTTPS request to the relay trusting only `ca`; returns (status, body).
async fn https(
    relay: &Relay,
    ca: &TestCa,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, String) {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
        .unwrap();
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(relay.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    let body = body.unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    // A closed TLS connection without close_notify is an error here; the answer is in.
    let _ = tokio::time::timeout(TIMEOUT, tls.read_to_end(&mut answer))
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (status, body.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_clients_trusting_the_relays_ca_sync_over_wss_and_one_without_it_gets_a_tls_error() {
    let ca = TestCa::new("AetherFlow test CA");
    let files = CertFiles::signed_by(&ca);
    let relay = start_tls_relay(&files, &[]);
    relay.wait_for_log("TLS on").await;
    // Which certificate: its subject and end of validity (rcgen's defaults).
    let logs = relay.logs();
    assert!(
        logs.contains("rcgen self signed cert") && logs.contains("4096-01-01 00:00:00 UTC"),
        "{logs}"
    );
    let url = wss_url(&relay);

    let (dir_a, dir_b, dir_c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = client(dir_a.path(), &url, Some(&ca));
    let b = client(dir_b.path(), &url, Some(&ca));
    let (doc_a, doc_b) = (
        a.doc("secure").await.unwrap(),
        b.doc("secure").await.unwrap(),
    );
    append_text(&doc_a, "text", "from A;");
    wait_settled(&doc_a).await;
    wait_settled(&doc_b).await;
    wait_text(&doc_b, "text", TIMEOUT, |t| t == "from A;").await;
    append_text(&doc_b, "text", "from B;");
    wait_text(&doc_a, "text", TIMEOUT, |t| t == "from A;from B;").await;

    // The HTTP API is served over TLS on the same port: create a register document, which
    // the SDK then reaches over the live channel, a second WebSocket, TLS too.
    let (status, _) = https(&relay, &ca, "GET", "/healthz", None).await;
    assert_eq!(status, 200);
    let body = r#"{"name":"secure-register","kind":"lww"}"#;
    let (status, created) = https(&relay, &ca, "POST", "/api/v1/docs", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let register = a.register("secure-register").await.unwrap();
    let ticket = register.write(serde_json::json!("over wss")).unwrap();
    let outcome = tokio::time::timeout(TIMEOUT, ticket.outcome())
        .await
        .unwrap();
    assert_eq!(outcome.unwrap(), WriteOutcome::Applied { revision: None });

    // The platform's roots do not include the test CA: refused, with the reason visible.
    let c = client(dir_c.path(), &url, None);
    let doc_c = c.doc("secure").await.unwrap();
    let denied = wait_denied(&doc_c).await;
    assert!(denied.starts_with("TLS: "), "{denied}");
    assert!(denied.contains("UnknownIssuer"), "{denied}");
    for client in [a, b, c] {
        client.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_and_ws_to_the_tls_port_get_400_tls_required_and_the_relay_serves_on() {
    let ca = TestCa::new("AetherFlow test CA");
    let files = CertFiles::signed_by(&ca);
    // The files from the environment this time.
    let data = tempfile::tempdir().unwrap();
    let (cert, key) = (files.cert(), files.key());
    let relay = Relay::start_with(
        data.path(),
        &[],
        &[
            ("AETHERFLOW_TLS_CERT", cert.to_str().unwrap()),
            ("AETHERFLOW_TLS_KEY", key.to_str().unwrap()),
        ],
    );

    let mut tcp = TcpStream::connect(relay.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(TIMEOUT, tcp.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"code\":\"tls_required\""), "{answer}");

    let dir = tempfile::tempdir().unwrap();
    let plain = client(dir.path(), &format!("ws://{}", relay.addr), Some(&ca));
    let doc = plain.doc("plain").await.unwrap();
    assert_eq!(wait_denied(&doc).await, "400 tls_required");

    let dir = tempfile::tempdir().unwrap();
    let secure = client(dir.path(), &wss_url(&relay), Some(&ca));
    wait_settled(&secure.doc("plain").await.unwrap()).await;
    plain.close().await.unwrap();
    secure.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_starts_the_handshake_is_closed_by_the_header_timeout() {
    let ca = TestCa::new("AetherFlow test CA");
    let files = CertFiles::signed_by(&ca);
    let relay = start_tls_relay(&files, &["--http-header-timeout-secs", "1"]);
    let mut silent = TcpStream::connect(relay.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(TIMEOUT, silent.read(&mut buf))
        .await
        .expect("the relay kept a connection that never sent a ClientHello");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_holding_every_place_are_cut_for_a_client_that_handshakes() {
    let ca = TestCa::new("AetherFlow test CA");
    let files = CertFiles::signed_by(&ca);
    // 3 general places and 1 for /healthz, all taken by silent connections that would
    // hold them for 10 minutes.
    let relay = start_tls_relay(
        &files,
        &[
            "--max-connections",
            "4",
            "--http-header-timeout-secs",
            "600",
        ],
    );
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(relay.addr).await.unwrap());
    }
    // The relay accepts connections in the order they were made, so the silent ones hold
    // every general place; a client that then handshakes cuts the oldest of them (as it
    // would one with a slow request head) and syncs.
    let dir = tempfile::tempdir().unwrap();
    let c = client(dir.path(), &wss_url(&relay), Some(&ca));
    wait_settled(&c.doc("busy").await.unwrap()).await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(TIMEOUT, silent[0].read(&mut buf))
        .await
        .expect("the oldest silent connection was not cut");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_serves_new_connections_while_open_ones_stay_up() {
    let (old_ca, new_ca) = (TestCa::new("old CA"), TestCa::new("new CA"));
    let files = CertFiles::signed_by(&old_ca);
    let relay = start_tls_relay(&files, &[]);
    let url = wss_url(&relay);
    let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();

    let a = client(dirs[0].path(), &url, Some(&old_ca));
    let doc_a = a.doc("renewed").await.unwrap();
    wait_settled(&doc_a).await;
    // A's connection must stay online through the reload.
    let went_offline = Arc::new(AtomicBool::new(false));
    let mut states = doc_a.state();
    let flag = went_offline.clone();
    let watcher = tokio::spawn(async move {
        while states.changed().await.is_ok() {
            if !matches!(states.borrow_and_update().connection, Connection::Online(_)) {
                flag.store(true, Ordering::SeqCst);
            }
        }
    });

    files.replace_with(&new_ca);
    relay.wait_for_log("TLS certificate reloaded").await;
    let b = client(dirs[1].path(), &url, Some(&new_ca));
    let doc_b = b.doc("renewed").await.unwrap();
    wait_settled(&doc_b).await;
    append_text(&doc_a, "text", "old link;");
    wait_text(&doc_b, "text", TIMEOUT, |t| t == "old link;").await;
    append_text(&doc_b, "text", "new link;");
    wait_text(&doc_a, "text", TIMEOUT, |t| t == "old link;new link;").await;
    assert!(
        !went_offline.load(Ordering::SeqCst),
        "the connection made with the old certificate dropped"
    );
    watcher.abort();

    // A new client trusting only the old CA no longer gets in.
    let c = client(dirs[2].path(), &url, Some(&old_ca));
    let denied = wait_denied(&c.doc("renewed").await.unwrap()).await;
    assert!(denied.starts_with("TLS: "), "{denied}");

    // A broken file is not used: the relay logs it and keeps serving the new certificate.
    std::fs::write(files.cert(), "-----BEGIN CERTIFICATE-----\ntruncated").unwrap();
    relay
        .wait_for_log("new TLS certificate files not used")
        .await;
    // SIGHUP asks for a check now (and does not stop the relay): the broken file is
    // reported again, and the relay keeps serving.
    let reported = relay
        .logs()
        .matches("new TLS certificate files not used")
        .count();
    relay.signal("HUP");
    let deadline = Instant::now() + TIMEOUT;
    while relay
        .logs()
        .matches("new TLS certificate files not used")
        .count()
        == reported
    {
        assert!(
            Instant::now() < deadline,
            "SIGHUP ignored: {}",
            relay.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let d = client(dirs[3].path(), &url, Some(&new_ca));
    wait_settled(&d.doc("renewed").await.unwrap()).await;
    for client in [a, b, c, d] {
        client.close().await.unwrap();
    }
}

#[test]
fn a_missing_key_or_an_unreadable_certificate_stops_the_relay_with_a_clear_error() {
    let ca = TestCa::new("AetherFlow test CA");
    let files = CertFiles::signed_by(&ca);
    let data = tempfile::tempdir().unwrap();
    // The relay must exit by itself; one that starts anyway is killed and the test fails.
    let relay = |args: &[&str]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_aetherflow"))
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--quantum-addr",
                "off",
                "--data-dir",
            ])
            .arg(data.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + TIMEOUT;
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                child.kill().unwrap();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "the relay started with {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.wait_with_output().unwrap()
    };

    let cert = files.cert().display().to_string();
    let out = relay(&["--tls-cert", &cert]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--tls-key"), "{stderr}");

    std::fs::write(files.key(), "not a key").unwrap();
    let key = files.key().display().to_string();
    let out = relay(&["--tls-cert", &cert, "--tls-key", &key]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("key.pem") && stderr.contains("no private key"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("ready"),
        "the relay must not start"
    );
}
