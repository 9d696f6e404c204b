//! Test harness: the real `aetherflow` binary on port 0 with a temporary data dir, and a
//! y-websocket client backed by a yrs document.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

pub mod api_client;
pub mod webhook_receiver;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherflow_crdt::protocol::{Limits, Message, SyncMessage};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

/// How long any wait in these tests may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A relay process.
pub struct Relay {
    child: Child,
    pub addr: SocketAddr,
    /// The Quantum (UDP) listener's address, unless the test turned it off.
    pub quantum_addr: Option<SocketAddr>,
    /// The Quantum listener's static public key, as the relay printed it.
    pub quantum_public_key: Option<[u8; 32]>,
    pub data_dir: PathBuf,
    stderr: Arc<Mutex<String>>,
    _temp: Option<tempfile::TempDir>,
}

impl Relay {
    /// Starts a relay with a fresh temporary data dir.
    pub fn start(args: &[&str]) -> Relay {
        let temp = tempfile::tempdir().unwrap();
        let mut relay = Relay::start_in(temp.path(), args);
        relay._temp = Some(temp);
        relay
    }

    /// Starts a relay on `data_dir` (kept by the caller).
    pub fn start_in(data_dir: &Path, args: &[&str]) -> Relay {
        Relay::start_with(data_dir, args, &[])
    }

    /// Starts a relay on `data_dir` with extra environment variables.
    pub fn start_with(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Relay {
        // A free UDP port too, unless the test chooses: relays of parallel tests must not
        // compete for the default 9090.
        let quantum_default: &[&str] = if args.contains(&"--quantum-addr") {
            &[]
        } else {
            &["--quantum-addr", "127.0.0.1:0"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_aetherflow"))
            .args(["--http-addr", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(quantum_default)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
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
        let quantum = args
            .windows(2)
            .all(|w| w != ["--quantum-addr", "off"])
            .then(|| {
                let line = rx.recv_timeout(TIMEOUT).unwrap();
                let addr = line
                    .strip_prefix("aetherflow quantum ready: udp://")
                    .unwrap_or_else(|| panic!("unexpected second line: {line}"))
                    .parse()
                    .unwrap();
                let line = rx.recv_timeout(TIMEOUT).unwrap();
                let key = line
                    .strip_prefix("aetherflow quantum key: ")
                    .and_then(aetherflow_quantum::crypto::from_hex)
                    .unwrap_or_else(|| panic!("unexpected third line: {line}"));
                (addr, key)
            });
        let (quantum_addr, quantum_public_key) = quantum.unzip();
        Relay {
            child,
            addr,
            quantum_addr,
            quantum_public_key,
            data_dir: data_dir.to_owned(),
            stderr,
            _temp: None,
        }
    }

    /// The Quantum listener's public key; panics if Quantum is off.
    pub fn quantum_key(&self) -> [u8; 32] {
        self.quantum_public_key.expect("the relay runs Quantum")
    }

    pub fn ws_url(&self, doc: &str) -> String {
        format!("ws://{}/ws/{doc}", self.addr)
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (bounded by [`TIMEOUT`]) until the relay's log contains `needle`.
    pub async fn wait_for_log(&self, needle: &str) {
        let deadline = std::time::Instant::now() + TIMEOUT;
        while !self.logs().contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "log never showed {needle:?}: {}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL: the relay gets no chance to flush anything.
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends a signal by name (`HUP`) without waiting for anything.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Sends a signal by name (`TERM`, `INT`) and waits for the process to exit.
    pub fn signal_and_wait(&mut self, signal: &str) -> ExitStatus {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = std::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "relay did not exit: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Keeps the data dir when the relay is restarted by the test.
    pub fn take_temp(&mut self) -> Option<tempfile::TempDir> {
        self._temp.take()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plain HTTP GET on the relay; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, None, None).await
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A y-websocket client holding a yrs document whose root text is `"text"`.
pub struct YClient {
    pub socket: Socket,
    pub doc: Doc,
}

impl YClient {
    /// Connects and completes the handshake: sends our step 1, applies the relay's step 2.
    pub async fn connect(url: &str) -> YClient {
        YClient::try_connect(url).await.unwrap()
    }

    /// [`YClient::connect`], or the relay's refusal of the WebSocket upgrade.
    pub async fn try_connect(url: &str) -> Result<YClient, tokio_tungstenite::tungstenite::Error> {
        let (socket, _) = tokio_tungstenite::connect_async(url).await?;
        let mut client = YClient {
            socket,
            doc: Doc::new(),
        };
        let sv = client.doc.transact().state_vector().encode_v1();
        client.send(&Message::Sync(SyncMessage::Step1(sv))).await;
        // The relay greets with its own step 1 and answers ours with step 2.
        let mut got_step2 = false;
        while !got_step2 {
            match client.next_message().await {
                Message::Sync(SyncMessage::Step2(update)) => {
                    client.apply(&update);
                    got_step2 = true;
                }
                Message::Sync(SyncMessage::Step1(sv)) => client.answer_step1(&sv).await,
                _ => {}
            }
        }
        Ok(client)
    }

    pub async fn send(&mut self, message: &Message) {
        self.send_raw(message.encode()).await;
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.socket.send(Frame::Binary(bytes.into())).await.unwrap();
    }

    async fn answer_step1(&mut self, sv: &[u8]) {
        let sv = StateVector::decode_v1(sv).unwrap();
        let update = self.doc.transact().encode_state_as_update_v1(&sv);
        self.send(&Message::Sync(SyncMessage::Step2(update))).await;
    }

    /// Next binary frame, decoded; panics on close or timeout.
    pub async fn next_message(&mut self) -> Message {
        loop {
            let frame = tokio::time::timeout(TIMEOUT, self.socket.next())
                .await
                .expect("timed out waiting for a message")
                .expect("connection ended")
                .expect("connection error");
            match frame {
                Frame::Binary(bytes) => {
                    return Message::decode(&bytes, &Limits::default())
                        .expect("the relay sends one well-formed message per frame");
                }
                Frame::Close(close) => panic!("closed by relay: {close:?}"),
                _ => {}
            }
        }
    }

    /// Appends `s` to the text locally and sends the update; returns the update bytes.
    pub async fn append(&mut self, s: &str) -> Vec<u8> {
        let update = {
            let text = self.doc.get_or_insert_text("text");
            let mut txn = self.doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, s);
            txn.encode_update_v1()
        };
        self.send(&Message::Sync(SyncMessage::Update(update.clone())))
            .await;
        update
    }

    pub fn apply(&mut self, update: &[u8]) {
        let update = Update::decode_v1(update).unwrap();
        self.doc.transact_mut().apply_update(update).unwrap();
    }

    pub fn text(&self) -> String {
        let text = self.doc.get_or_insert_text("text");
        text.get_string(&self.doc.transact())
    }

    /// Applies incoming updates until the text equals `expected`.
    pub async fn wait_for_text(&mut self, expected: &str) {
        while self.text() != expected {
            self.handle_next().await;
        }
    }

    /// Waits until the relay has applied (in durable mode, committed) everything this client
    /// sent: the relay answers a sync step 1 only after the updates sent before it, so its
    /// step 2 is the barrier. Incoming updates are applied meanwhile.
    pub async fn barrier(&mut self) {
        let sv = self.doc.transact().state_vector().encode_v1();
        self.send(&Message::Sync(SyncMessage::Step1(sv))).await;
        loop {
            match self.next_message().await {
                Message::Sync(SyncMessage::Step2(u)) => {
                    self.apply(&u);
                    return;
                }
                Message::Sync(SyncMessage::Update(u)) => self.apply(&u),
                Message::Sync(SyncMessage::Step1(sv)) => self.answer_step1(&sv).await,
                _ => {}
            }
        }
    }

    /// Reads one message and acts on it as a provider would.
    pub async fn handle_next(&mut self) {
        match self.next_message().await {
            Message::Sync(SyncMessage::Update(u) | SyncMessage::Step2(u)) => self.apply(&u),
            Message::Sync(SyncMessage::Step1(sv)) => self.answer_step1(&sv).await,
            _ => {}
        }
    }

    /// Applies what arrives until the connection ends (closed, reset, or silent for
    /// [`TIMEOUT`]): afterwards the text holds everything the relay sent before it went away.
    pub async fn drain(&mut self) {
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(TIMEOUT, self.socket.next()).await {
            let Frame::Binary(bytes) = frame else {
                continue;
            };
            if let Ok(Message::Sync(SyncMessage::Update(u) | SyncMessage::Step2(u))) =
                Message::decode(&bytes, &Limits::default())
            {
                self.apply(&u);
            }
        }
    }

    /// Waits for the relay to echo an update back: everything sent before is committed.
    pub async fn wait_for_echo(&mut self) {
        while !matches!(
            self.next_message().await,
            Message::Sync(SyncMessage::Update(_))
        ) {}
    }

    /// Waits for the relay to close this connection; returns the close frame.
    pub async fn expect_close(&mut self) -> CloseFrame {
        loop {
            let frame = tokio::time::timeout(TIMEOUT, self.socket.next())
                .await
                .expect("timed out waiting for the close frame");
            match frame {
                Some(Ok(Frame::Close(Some(close)))) => return close,
                Some(Ok(Frame::Close(None))) => panic!("close frame without a code"),
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("connection error instead of a close frame: {e}"),
                None => panic!("connection ended without a close frame"),
            }
        }
    }
}

/// The text of document `doc` as a fresh client sees it.
pub async fn read_text(relay: &Relay, doc: &str) -> String {
    read_text_with(&relay.ws_url(doc)).await
}

/// The text a fresh client connecting to `url` sees.
pub async fn read_text_with(url: &str) -> String {
    YClient::connect(url).await.text()
}

impl YClient {
    /// Connects without the handshake, to observe the relay's greeting.
    pub async fn connect_raw(url: &str) -> YClient {
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        YClient {
            socket,
            doc: Doc::new(),
        }
    }

    /// Reads messages until an awareness update arrives; returns its payload.
    pub async fn messages_until_awareness(&mut self) -> Vec<u8> {
        loop {
            if let Message::Awareness(update) = self.next_message().await {
                return update;
            }
        }
    }

    /// Applies incoming messages until the text changes.
    pub async fn wait_for_text_change(&mut self) {
        let before = self.text();
        while self.text() == before {
            self.handle_next().await;
        }
    }
}

/// A relay of a cluster mode deployment on the NATS servers at `urls` (comma-separated), its
/// documents under `prefix`, streams of 3 replicas.
pub fn cluster_relay(urls: &str, prefix: &str) -> Relay {
    Relay::start(&[
        "--cluster",
        urls,
        "--cluster-prefix",
        prefix,
        "--cluster-replicas",
        "3",
    ])
}

/// One HTTP/1.1 request on the relay; returns (status, body).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&serde_json::Value>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// [`http_request`] expecting a JSON body.
pub async fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let (status, text) = http_request(addr, method, path, bearer, body.as_ref()).await;
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: {status} not JSON ({e}): {text}"));
    (status, json)
}

/// A response with its headers: (status, lower-cased header block, body).
pub struct RawResponse {
    pub status: u16,
    pub headers: String,
    pub body: String,
}

impl RawResponse {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("{} not JSON ({e}): {}", self.status, self.body))
    }
}

/// One HTTP/1.1 request with arbitrary extra headers and a raw body.
pub async fn http_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    RawResponse {
        status: response[9..12].parse().unwrap(),
        headers: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

/// The value of the unlabelled series `name` in `/metrics` text; panics if it is absent.
pub fn metric_value(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name}: {metrics}"))
}
