//! The real relay binary for the SDK's tests: `AETHERFLOW_BIN`, or `aetherflow` in this
//! build's target directory (`cargo test --workspace` builds it; for one SDK test, run
//! `cargo build -p aetherflow-server --locked` first). Port 0, a temporary data directory,
//! Quantum off; its log is printed when a test fails. Also client tokens and a test CA.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// How long any wait may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The HS256 secret of relays started [`Relay::with_tokens`].
pub const SECRET: &str = "sdk-history-secret";

/// A relay process, killed when dropped.
pub struct Relay {
    child: Child,
    pub addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    _data: tempfile::TempDir,
}

/// The relay binary to run.
fn binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("AETHERFLOW_BIN") {
        return bin.into();
    }
    // This test runs as target/<profile>/deps/history-HASH.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join(format!("aetherflow{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "no relay binary at {}: run `cargo build -p aetherflow-server --locked` or set \
         AETHERFLOW_BIN",
        bin.display()
    );
    bin
}

impl Relay {
    /// A relay that checks HS256 client tokens signed with [`SECRET`].
    pub fn with_tokens() -> Relay {
        Relay::start(&["--jwt-secret", SECRET])
    }

    /// A relay started with `args` (after the address, data directory and `--quantum-addr
    /// off`).
    pub fn start(args: &[&str]) -> Relay {
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary())
            .args(["--http-addr", "127.0.0.1:0", "--quantum-addr", "off"])
            .arg("--data-dir")
            .arg(data.path())
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().unwrap().push_str(&text);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|_| panic!("relay never got ready: {}", stderr.lock().unwrap()));
        let addr = line
            .strip_prefix("aetherflow ready: http://")
            .or_else(|| line.strip_prefix("aetherflow ready: https://"))
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .parse()
            .unwrap();
        Relay {
            child,
            addr,
            stderr,
            _data: data,
        }
    }

    /// The SDK's WebSocket base URL for this relay.
    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// What the relay logged so far.
    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("relay log:\n{}", self.logs());
        }
    }
}

/// A client token for `sub` on `docs` with `perm` (`read` or `write`), valid for 10 minutes.
pub fn token(sub: &str, docs: &[&str], perm: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({ "sub": sub, "docs": docs, "perm": perm, "exp": now + 600 });
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

/// A certificate authority made for one test, and a relay certificate it signed.
pub struct TestCa {
    /// The CA certificate (PEM), for `ClientConfig::tls_root_certificate`.
    pub pem: String,
    /// The relay's certificate and key files.
    files: tempfile::TempDir,
}

impl TestCa {
    /// A CA and a certificate for `localhost` and 127.0.0.1 signed by it.
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "history test CA");
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(params, ca_key);
        let server =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = server.signed_by(&key, &issuer).unwrap();
        let files = tempfile::tempdir().unwrap();
        std::fs::write(files.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(files.path().join("key.pem"), key.serialize_pem()).unwrap();
        TestCa { pem, files }
    }

    /// A relay serving TLS with the certificate this CA signed.
    pub fn relay(&self) -> Relay {
        let cert = self.files.path().join("cert.pem");
        let key = self.files.path().join("key.pem");
        Relay::start(&[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ])
    }
}
