//! A webhook receiver on loopback for the webhook tests: it records every request, can fail
//! the first N with 503 or hold requests without answering.
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

use super::TIMEOUT;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub kind: String,
    pub signature: String,
    pub body: Vec<u8>,
    /// Whether the receiver answered 2xx.
    pub accepted: bool,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook receiver on loopback: it fails the first `fail` requests with 503, holds every
/// request without answering while `hang` is set, and answers 200 otherwise.
#[derive(Clone, Default)]
pub struct Receiver {
    seen: Arc<Mutex<Vec<Received>>>,
    /// Requests still to fail with 503.
    pub fail: Arc<AtomicUsize>,
    /// While set, requests are held without an answer.
    pub hang: Arc<AtomicBool>,
}

impl Receiver {
    pub async fn start(&self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let me = self.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let me = me.clone();
                async move { me.receive(&headers, body).await }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    async fn receive(&self, headers: &HeaderMap, body: Bytes) -> StatusCode {
        let header = |name: &str| {
            headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default()
        };
        let hang = self.hang.load(Ordering::SeqCst);
        let fail = !hang
            && self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        self.seen.lock().unwrap().push(Received {
            id: header("webhook-id"),
            kind: header("aetherflow-event"),
            signature: header("aetherflow-signature"),
            body: body.to_vec(),
            accepted: !hang && !fail,
        });
        if hang {
            std::future::pending::<()>().await;
        }
        match fail {
            true => StatusCode::SERVICE_UNAVAILABLE,
            false => StatusCode::OK,
        }
    }

    pub fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    pub fn accepted(&self) -> Vec<Received> {
        self.seen().into_iter().filter(|r| r.accepted).collect()
    }

    /// Waits until `done` holds for what the receiver accepted.
    pub async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let accepted = self.accepted();
            if done(&accepted) {
                return accepted;
            }
            assert!(Instant::now() < deadline, "never {what}: {:?}", self.seen());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
