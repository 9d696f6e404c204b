//! A full disk: writers get a clear refusal, readiness says so, reads keep working, nothing
//! committed is lost, and the relay recovers by itself once there is room again, without a
//! restart (issue 14). The data dir is on a small tmpfs, so the test needs root (to mount),
//! as CI has.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use aetherflow_crdt::protocol::{AuthMessage, Message};
use common::{Relay, TIMEOUT, YClient, http_get, read_text};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use yrs::{Doc, Text, Transact};

/// A tmpfs of `size` mounted on a fresh directory; unmounted on drop.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).expect("a mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount runs");
        assert!(
            status.success(),
            "mounting a tmpfs failed: this test needs root, as CI has"
        );
        Tmpfs { _dir: dir, path }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Another process filling the disk: keeps `path` growing whenever the file system has any
/// room, until stopped (the relay's own files shrink when it reopens its database).
struct Filler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

impl Filler {
    /// Starts filling, and returns once the disk is full.
    fn start(path: PathBuf) -> Filler {
        let stop = Arc::new(AtomicBool::new(false));
        let (full_tx, full_rx) = std::sync::mpsc::channel();
        let mut file = std::fs::File::create(&path).expect("the filler file");
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let chunk = vec![0xa5u8; 16 * 1024];
            while !flag.load(Ordering::Acquire) {
                match file.write_all(&chunk) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(28) => {
                        // ENOSPC
                        let _ = full_tx.send(());
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("filling the disk: {e}"),
                }
            }
        });
        full_rx.recv_timeout(TIMEOUT).expect("the disk filled up");
        Filler {
            stop,
            thread: Some(thread),
            path,
        }
    }
}

impl Drop for Filler {
    /// Stops filling and frees the space.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A v1 update inserting `bytes` bytes of new text (a fresh client each time).
fn big_update(bytes: usize) -> Vec<u8> {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("text");
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 0, &"y".repeat(bytes));
    txn.encode_update_v1()
}

/// POSTs `update` to the document's update route; returns the status and body.
async fn post_update(relay: &Relay, doc: &str, update: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(relay.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v1/docs/{doc}/update HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        relay.addr,
        update.len()
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    stream.write_all(update).await.expect("send body");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("response");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response[9..12].parse().expect("a status");
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// Polls `/healthz` until it answers `status`.
async fn wait_for_health(relay: &Relay, status: u16) {
    tokio::time::timeout(TIMEOUT, async {
        while http_get(relay.addr, "/healthz").await.0 != status {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("/healthz never answered {status}"));
}

#[tokio::test]
async fn a_full_disk_refuses_writes_clearly_and_the_relay_recovers_without_a_restart() {
    let disk = Tmpfs::mount("24m");
    let data = disk.path.join("data");
    let mut relay = Relay::start_in(&data, &["--compact-after-updates", "100000"]);
    let mut writer = YClient::connect(&relay.ws_url("kept")).await;
    writer.append("committed before the disk filled;").await;
    writer.barrier().await;
    assert_eq!(http_get(relay.addr, "/healthz").await.0, 200);

    let filler = Filler::start(disk.path.join("filler"));
    let mut refused = None;
    for _ in 0..40 {
        let (status, body) = post_update(&relay, "big", &big_update(512 * 1024)).await;
        if status != 204 {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("the disk never filled up");
    assert_eq!(status, 507, "{body}");
    assert!(body.contains("storage_unavailable"), "{body}");
    wait_for_health(&relay, 503).await;
    assert_eq!(http_get(relay.addr, "/livez").await.0, 200);

    // A WebSocket writer is told its edit was not saved, and is not disconnected.
    writer.append("while full;").await;
    loop {
        let frame = tokio::time::timeout(TIMEOUT, writer.socket.next())
            .await
            .expect("an answer")
            .expect("open")
            .expect("no error");
        let tokio_tungstenite::tungstenite::Message::Binary(bytes) = frame else {
            panic!("{frame:?}: {}", relay.logs());
        };
        if let Ok(Message::Auth(AuthMessage::PermissionDenied { reason })) =
            Message::decode(&bytes, &Default::default())
        {
            assert!(reason.contains("storage unavailable"), "{reason}");
            break;
        }
    }
    // Reads keep working.
    let (status, body) = http_get(relay.addr, "/api/v1/docs/kept/content").await;
    assert_eq!(status, 200, "{body} {}", relay.logs());
    assert!(body.contains("committed before the disk filled;"), "{body}");

    // Room again: the relay notices by itself, and the refused edit is asked for again.
    drop(filler);
    wait_for_health(&relay, 200).await;
    writer.append("after;").await;
    writer.barrier().await;
    let expected = "committed before the disk filled;while full;after;";
    assert_eq!(read_text(&relay, "kept").await, expected);
    let (status, body) = post_update(&relay, "later", &big_update(1024)).await;
    assert_eq!(status, 204, "{body}");

    // Everything committed survives a restart.
    drop(writer);
    relay.signal_and_wait("TERM");
    let relay = Relay::start_in(&data, &[]);
    assert_eq!(read_text(&relay, "kept").await, expected);
    let logs = relay.logs();
    assert!(!logs.contains("panicked"), "{logs}");
}
