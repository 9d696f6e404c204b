//! The least a y-websocket server can do, as a yardstick for the fan-out scenario: it answers
//! a client's sync step 1 with an empty step 2 and relays every other frame, unread, to the
//! document's other connections. No CRDT, no storage, no limits, no auth: not a server
//! anyone should run, only the floor under the figures `loadgen fanout` reports on this
//! machine (its readers and this process share the same cores).
//!
//! Built like the relay's hot path (a task per connection, frames handed to each over a
//! channel, so both cores can write), so its fan-out latency is what the load generator and
//! the kernel's TCP send path cost by themselves.
//!
//! ```text
//! cargo build --release -p aetherflow-benches --bin broadcast-floor
//! target/release/broadcast-floor --addr 127.0.0.1:8099     # then ws://127.0.0.1:8099/{doc}
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use aetherflow_crdt::protocol::encode_sync_step2;
use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

/// An empty Yjs v1 update: no structs, no deletions.
const EMPTY_UPDATE: &[u8] = &[0, 0];

#[derive(Parser)]
#[command(about = "A y-websocket relay with no CRDT: the fan-out floor of this machine")]
struct Cli {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8099")]
    addr: SocketAddr,
}

/// One document's connections: id → the channel to that connection's task.
type Room = HashMap<u64, mpsc::UnboundedSender<Bytes>>;
/// Every document's room, by the request path.
type Rooms = Arc<Mutex<HashMap<String, Room>>>;

fn lock(rooms: &Rooms) -> MutexGuard<'_, HashMap<String, Room>> {
    rooms
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let listener = TcpListener::bind(cli.addr)
        .await
        .with_context(|| format!("binding {}", cli.addr))?;
    println!(
        "broadcast-floor ready: ws://{}/{{doc}}",
        listener.local_addr()?
    );
    let rooms: Rooms = Arc::default();
    let mut next_id = 0u64;
    loop {
        let (stream, _) = listener.accept().await?;
        next_id += 1;
        tokio::spawn(serve(stream, next_id, rooms.clone()));
    }
}

/// One connection: joins its document's room, then relays frames both ways until it closes.
async fn serve(stream: TcpStream, id: u64, rooms: Rooms) {
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    #[allow(
        clippy::result_large_err,
        reason = "tungstenite's callback signature fixes the error type"
    )]
    let callback = |request: &Request, response: Response| {
        path = request.uri().path().trim_start_matches('/').to_owned();
        Ok(response)
    };
    let Ok(socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    lock(&rooms).entry(path.clone()).or_default().insert(id, tx);
    let (mut sink, mut source) = socket.split();
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(bytes) => if sink.send(Frame::Binary(bytes)).await.is_err() { break },
                None => break,
            },
            frame = source.next() => match frame {
                Some(Ok(Frame::Binary(bytes))) => match bytes.get(..2) {
                    // Sync step 1: the client asks for what it is missing; there is nothing.
                    Some([0, 0]) => {
                        let step2 = encode_sync_step2(EMPTY_UPDATE);
                        if sink.send(Frame::Binary(step2.into())).await.is_err() { break }
                    }
                    // Sync step 2: the client's state; this server keeps none.
                    Some([0, 1]) => {}
                    _ => relay(&rooms, &path, id, &bytes),
                },
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
        }
    }
    let mut rooms = lock(&rooms);
    if let Some(room) = rooms.get_mut(&path) {
        room.remove(&id);
        if room.is_empty() {
            rooms.remove(&path);
        }
    }
}

/// Hands `bytes` to every other connection of the document.
fn relay(rooms: &Rooms, path: &str, from: u64, bytes: &Bytes) {
    if let Some(room) = lock(rooms).get(path) {
        for (_, tx) in room.iter().filter(|(id, _)| **id != from) {
            let _ = tx.send(bytes.clone());
        }
    }
}
