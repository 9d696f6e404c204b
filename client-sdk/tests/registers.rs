//! Register handles without the real relay: bad names, use after close, and a relay whose
//! messages make no sense (no state first, unreadable state, unreadable answers). The SDK
//! against the real relay binary is tested in `server/tests/client_registers.rs`.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aetherflow_client::{
    Backoff, Client, ClientConfig, ClientError, Connection, Link, RegisterError, RegisterLink,
    RegisterMessage, Transport, TransportError, TransportKind,
};
use aetherflow_crdt::DocNameError;
use aetherflow_crdt::register::Command;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(20);

fn config(dir: &std::path::Path) -> ClientConfig {
    ClientConfig::new(dir).backoff(Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
    })
}

#[tokio::test]
async fn register_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(ClientConfig::new(dir.path())).unwrap();
    let err = client.register("").await.unwrap_err();
    assert!(
        matches!(err, ClientError::DocName(DocNameError::Empty)),
        "{err}"
    );
    let err = client.register("a/b").await.unwrap_err();
    assert!(matches!(err, ClientError::DocName(_)), "{err}");
    client.close().await.unwrap();
}

#[tokio::test]
async fn commands_after_close_fail_with_closed_and_stay_out_of_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let client = Client::open(ClientConfig::new(dir.path())).unwrap();
    let title = client.register("title").await.unwrap();
    client.close().await.unwrap();
    assert!(matches!(
        title.write(json!("late")),
        Err(RegisterError::Closed)
    ));
    let client = Client::open(ClientConfig::new(dir.path())).unwrap();
    assert_eq!(client.register("title").await.unwrap().pending(), 0);
    client.close().await.unwrap();
}

/// A relay that opens each link with the next of `openings`, then answers the commands it
/// receives with `answers`, in order.
struct ScriptedRelay {
    openings: Mutex<Vec<Vec<RegisterMessage>>>,
    answers: Arc<Mutex<Vec<RegisterMessage>>>,
}

fn event(name: &str, data: Value) -> RegisterMessage {
    RegisterMessage::Event {
        name: name.into(),
        data,
    }
}

impl Transport for ScriptedRelay {
    fn connect<'a>(&'a self, _doc: &'a str) -> BoxFuture<'a, Result<Link, TransportError>> {
        Box::pin(async { Err(TransportError::Connect("no Yjs here".into())) })
    }

    fn connect_register<'a>(
        &'a self,
        _doc: &'a str,
    ) -> BoxFuture<'a, Result<RegisterLink, TransportError>> {
        Box::pin(async move {
            let opening = {
                let mut openings = self.openings.lock().unwrap();
                if openings.is_empty() {
                    return Err(TransportError::Connect("script over".into()));
                }
                openings.remove(0)
            };
            let (outgoing, mut sent) = mpsc::channel::<Command>(16);
            let (to_client, incoming) = mpsc::channel(16);
            let answers = self.answers.clone();
            tokio::spawn(async move {
                for message in opening {
                    let _ = to_client.send(message).await;
                }
                while sent.recv().await.is_some() {
                    let answer = {
                        let mut answers = answers.lock().unwrap();
                        (!answers.is_empty()).then(|| answers.remove(0))
                    };
                    if let Some(answer) = answer {
                        let _ = to_client.send(answer).await;
                    }
                }
            });
            Ok(RegisterLink {
                kind: TransportKind::Quantum,
                outgoing,
                incoming,
            })
        })
    }
}

#[tokio::test]
async fn a_relay_that_makes_no_sense_gets_typed_errors_and_never_a_panic() {
    let relay = ScriptedRelay {
        openings: Mutex::new(vec![
            // Not a state first: the link is dropped and the client connects again.
            vec![event("lock_released", json!({ "holder": 5 }))],
            // A state whose register is unreadable, then events with wrong shapes.
            vec![
                event("state", json!({ "register": 5, "lock": "odd" })),
                event("conflict_detected", json!({ "conflict": "nope" })),
                event(
                    "updated",
                    json!({ "register": { "kind": "lww", "stamp": 1 } }),
                ),
                RegisterMessage::Error {
                    code: 4423,
                    reason: "answering nothing".into(),
                },
            ],
        ]),
        answers: Arc::new(Mutex::new(vec![
            event("result", json!({ "outcome": "bogus" })),
            RegisterMessage::Error {
                code: 4423,
                reason: "held by ann".into(),
            },
        ])),
    };
    let dir = tempfile::tempdir().unwrap();
    let client = Client::with_transport(config(dir.path()), Arc::new(relay)).unwrap();
    let title = client.register("title").await.unwrap();
    let mut state = title.state();
    tokio::time::timeout(
        TIMEOUT,
        state.wait_for(|s| s.connection == Connection::Online(TransportKind::Quantum)),
    )
    .await
    .unwrap()
    .unwrap();

    let unreadable = title.write(json!("one")).unwrap().outcome().await;
    assert!(
        matches!(unreadable, Err(RegisterError::BadAnswer(_))),
        "{unreadable:?}"
    );
    let locked = title.write(json!("two")).unwrap().outcome().await;
    assert_eq!(
        locked,
        Err(RegisterError::Locked {
            reason: "held by ann".into()
        })
    );
    assert_eq!(title.pending(), 0);
    assert_eq!(title.value(), None);
    // The answers came after the opening on the same link, so all of it has been taken in:
    // only the `updated` event's kind was readable; its stampless write was not taken.
    assert_eq!(title.kind(), Some(aetherflow_crdt::register::Kind::Lww));
    assert_eq!(title.stamp(), None);
    assert!(title.conflicts().is_empty());
    client.close().await.unwrap();
}
