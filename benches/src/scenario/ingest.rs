//! Ingest: replays an editing trace, one update per frame, from one client through the server
//! to a second, already-synced client; the clock runs from the first frame sent until the
//! second client's state vector equals the trace's final one. The two may be on different
//! relays of a cluster (the sender's target and the receiver's).

use std::time::{Duration, Instant};

use aetherflow_crdt::protocol::{SyncMessage, encode_sync_update};
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message as Frame;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, Transact, Update};

use crate::client::{Session, Target};
use crate::wire::Incoming;

/// What an ingest run measured.
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    /// Updates replayed.
    pub updates: usize,
    /// Seconds from the first frame sent to the receiver holding everything.
    pub seconds: f64,
    /// Updates per second, end to end.
    pub updates_per_s: f64,
}

/// Replays `updates` (whose final text is `end`) on document `doc`, sent through `sender` and
/// received through `receiver` (the same target on a single server).
pub async fn run(
    sender: &Target,
    receiver: &Target,
    doc: &str,
    updates: &[Vec<u8>],
    end: &str,
    limit: Duration,
) -> anyhow::Result<IngestReport> {
    let expected_sv = {
        let doc = Doc::new();
        for bytes in updates {
            doc.transact_mut().apply_update(Update::decode_v1(bytes)?)?;
        }
        doc.transact().state_vector()
    };
    let receiver = Session::open(receiver, doc, None).await?;
    let sender = Session::open(sender, doc, None).await?;
    let frames: Vec<Frame> = updates
        .iter()
        .map(|u| sender.frame(&encode_sync_update(u)))
        .collect();
    let dialect = receiver.dialect;
    let (_receiver_tx, mut receiver) = receiver.split();
    let (mut send_half, mut echo_half) = sender.split();

    let start = Instant::now();
    // The sender drains echoes and acknowledgements so the server never sees it as slow.
    let drain = tokio::spawn(async move { while let Some(Ok(_)) = echo_half.next().await {} });
    let send = tokio::spawn(async move {
        for frame in frames {
            send_half.feed(frame).await?;
        }
        send_half.flush().await?;
        Ok::<_, anyhow::Error>(send_half)
    });

    let replica = Doc::new();
    let text = replica.get_or_insert_text("text");
    let deadline = tokio::time::Instant::now() + limit;
    while replica.transact().state_vector() != expected_sv {
        let frame = tokio::time::timeout_at(deadline, receiver.next())
            .await
            .with_context(|| format!("receiver incomplete after {limit:?}"))?
            .context("server closed the receiver")??;
        let Frame::Binary(bytes) = frame else {
            continue;
        };
        if let Incoming::Sync(SyncMessage::Update(u) | SyncMessage::Step2(u)) =
            dialect.decode(&bytes)?
        {
            replica
                .transact_mut()
                .apply_update(Update::decode_v1(&u)?)?;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if text.get_string(&replica.transact()) != end {
        bail!("receiver's text differs from the trace's endContent");
    }
    let _ = send.await?;
    drain.abort();
    Ok(IngestReport {
        updates: updates.len(),
        seconds,
        updates_per_s: updates.len() as f64 / seconds,
    })
}
