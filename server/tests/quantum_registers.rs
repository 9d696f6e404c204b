//! Register documents (`lww`, `manual`) over Quantum against the real relay binary and a real
//! Quantum client: the state on subscribe, writes answered in order and seen live by other
//! Quantum clients and by browser-protocol `/live` clients, stale LWW writes, manual conflicts
//! across a restart, read-only tokens, locks, malformed and misplaced commands.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use aetherflow_client::testing::envelopes::{hello, raw_connect};
use aetherflow_crdt::envelope::{Control, Envelope, EnvelopeLimits, Payload};
use aetherflow_crdt::protocol::{Message, SyncMessage};
use aetherflow_crdt::register::Command;
use aetherflow_crdt::register::clock::HlcStamp;
use aetherflow_crdt::register::lww::LwwWrite;
use aetherflow_crdt::register::manual::ManualWrite;
use aetherflow_quantum::{QuantumConnection, QuantumEndpoint};
use aetherflow_server::auth::Permission;
use common::api_client::{LiveClient, SECRET, token};
use common::{Relay, TIMEOUT, http_json};
use serde_json::{Value, json};

/// A raw Quantum client speaking envelopes.
struct QClient {
    _endpoint: QuantumEndpoint,
    conn: QuantumConnection,
}

/// What the relay answered a register command with.
type Answer = Result<Value, (u32, String)>;

impl QClient {
    async fn connect(relay: &Relay, token: Option<String>) -> QClient {
        let (endpoint, conn) = raw_connect(relay.quantum_addr.unwrap(), relay.quantum_key()).await;
        conn.send(hello(token.as_deref())).await.unwrap();
        QClient {
            _endpoint: endpoint,
            conn,
        }
    }

    async fn send(&self, envelope: Envelope) {
        self.conn.send(envelope.encode()).await.unwrap();
    }

    /// Subscribes to `doc`; returns the `state` event's data.
    async fn subscribe(&self, doc: &str) -> Value {
        self.send(Envelope::new(doc, Payload::Control(Control::Subscribe)))
            .await;
        match self.next(doc).await {
            Payload::Control(Control::Event { name, data }) if name == "state" => data,
            other => panic!("no state for {doc}: {other:?}"),
        }
    }

    /// The next envelope for `doc`.
    async fn next(&self, doc: &str) -> Payload {
        loop {
            let bytes = tokio::time::timeout(TIMEOUT, self.conn.recv())
                .await
                .expect("timed out waiting for an envelope")
                .unwrap()
                .expect("connection ended");
            let envelope = Envelope::decode(&bytes, &EnvelopeLimits::default()).unwrap();
            if envelope.doc == doc {
                return envelope.payload;
            }
        }
    }

    /// Sends `command` on `doc` and returns its answer, skipping the document's events.
    async fn command(&self, doc: &str, command: Command) -> Answer {
        self.send(Envelope::new(doc, Payload::Register(command)))
            .await;
        self.answer(doc).await
    }

    /// The next `result` event or error on `doc`.
    async fn answer(&self, doc: &str) -> Answer {
        loop {
            match self.next(doc).await {
                Payload::Control(Control::Event { name, data }) if name == "result" => {
                    return Ok(data);
                }
                Payload::Control(Control::Error { code, reason }) => return Err((code, reason)),
                _ => {}
            }
        }
    }

    /// Skips `doc`'s envelopes until the event `name`; returns its data.
    async fn event(&self, doc: &str, name: &str) -> Value {
        loop {
            if let Payload::Control(Control::Event { name: got, data }) = self.next(doc).await
                && got == name
            {
                assert_eq!(data["type"], name, "the event's data is the SSE JSON");
                return data;
            }
        }
    }
}

async fn create(relay: &Relay, name: &str, kind: &str, bearer: Option<&str>) {
    let body = json!({ "name": name, "kind": kind });
    let (status, created) = http_json(relay.addr, "POST", "/api/v1/docs", bearer, Some(body)).await;
    assert_eq!(status, 201, "{created}");
}

async fn register(relay: &Relay, doc: &str, bearer: Option<&str>) -> Value {
    let path = format!("/api/v1/docs/{doc}/register");
    let (status, register) = http_json(relay.addr, "GET", &path, bearer, None).await;
    assert_eq!(status, 200, "{register}");
    register
}

fn lww(value: Value, wall_ms: u64, writer: &str) -> Command {
    let clock = HlcStamp {
        wall_ms,
        counter: 0,
    };
    Command::LwwWrite(LwwWrite::new(value, clock, writer))
}

fn manual(value: Value, base_version: u64, author: &str) -> Command {
    Command::ManualWrite(ManualWrite {
        base_version,
        value,
        author: author.into(),
        at_ms: 0,
    })
}

#[tokio::test]
async fn lww_writes_are_answered_and_seen_live_over_quantum_and_the_live_websocket() {
    let relay = Relay::start(&[]);
    create(&relay, "title", "lww", None).await;
    let ann = QClient::connect(&relay, None).await;
    let bob = QClient::connect(&relay, None).await;
    let state = ann.subscribe("title").await;
    assert_eq!(state["type"], "state");
    assert_eq!(state["register"]["kind"], "lww");
    assert_eq!(state["register"]["value"], Value::Null);
    assert_eq!(state["lock"], Value::Null);
    bob.subscribe("title").await;
    let mut carl = LiveClient::connect(relay.addr, "title", None).await;

    let answer = ann.command("title", lww(json!("Draft"), 200, "ann")).await;
    assert_eq!(answer.unwrap()["outcome"], "applied");
    assert_eq!(
        bob.event("title", "updated").await["register"]["value"],
        "Draft"
    );
    assert_eq!(carl.wait_for("updated").await["register"]["value"], "Draft");

    // A write from the browser channel reaches the Quantum clients too.
    let stamp = json!({ "clock": { "wall_ms": 300, "counter": 0 }, "writer": "carl" });
    carl.send(json!({ "op": "write", "id": 1, "value": "Final", "stamp": stamp }))
        .await;
    // (ann first hears of her own write, as every subscriber does.)
    let seen = loop {
        let seen = ann.event("title", "updated").await;
        if seen["register"]["value"] != "Draft" {
            break seen;
        }
    };
    assert_eq!(seen["register"]["value"], "Final");
    assert_eq!(seen["register"]["stamp"]["writer"], "carl");

    // An older stamp loses, and the writer is told who won.
    let stale = bob.command("title", lww(json!("Old"), 100, "bob")).await;
    let stale = stale.unwrap();
    assert_eq!(stale["outcome"], "stale");
    assert_eq!(stale["current"]["writer"], "carl");
    assert_eq!(register(&relay, "title", None).await["value"], "Final");
}

#[tokio::test]
async fn a_manual_conflict_is_detected_and_resolved_across_quantum_clients_and_survives_a_restart()
{
    let data = tempfile::tempdir().unwrap();
    let mut relay = Relay::start_in(data.path(), &[]);
    create(&relay, "notes", "manual", None).await;
    let ann = QClient::connect(&relay, None).await;
    let bob = QClient::connect(&relay, None).await;
    assert_eq!(ann.subscribe("notes").await["conflicts"], json!([]));
    bob.subscribe("notes").await;

    let first = ann.command("notes", manual(json!("v1"), 0, "ann")).await;
    assert_eq!(first.unwrap()["revision"]["version"], 1);
    let ours = ann.command("notes", manual(json!("ann's"), 1, "ann")).await;
    assert_eq!(ours.unwrap()["outcome"], "applied");
    // bob also edited version 1: his write becomes a conflict record, seen by both.
    let theirs = bob.command("notes", manual(json!("bob's"), 1, "bob")).await;
    let theirs = theirs.unwrap();
    assert_eq!(theirs["outcome"], "conflict");
    let id = theirs["conflict"]["id"].as_u64().unwrap();
    let detected = ann.event("notes", "conflict_detected").await;
    assert_eq!(detected["conflict"]["proposed"]["value"], "bob's");

    relay.signal_and_wait("TERM");
    let relay = Relay::start_in(data.path(), &[]);
    let ann = QClient::connect(&relay, None).await;
    let bob = QClient::connect(&relay, None).await;
    let state = ann.subscribe("notes").await;
    assert_eq!(state["register"]["value"], "ann's");
    assert_eq!(state["register"]["open_conflicts"], 1);
    assert_eq!(state["conflicts"][0]["id"], id);
    bob.subscribe("notes").await;

    let resolve = Command::Resolve {
        conflict: id,
        value: json!("merged"),
        author: "bob".into(),
        at_ms: 0,
    };
    let resolved = bob.command("notes", resolve.clone()).await.unwrap();
    assert_eq!(resolved["revision"]["value"], "merged");
    let seen = ann.event("notes", "conflict_resolved").await;
    assert_eq!(seen["conflict"], id);
    assert_eq!(seen["revision"]["value"], "merged");
    // Resolving it again: nothing left to resolve.
    assert_eq!(bob.command("notes", resolve).await.unwrap_err().0, 4404);
    let register = register(&relay, "notes", None).await;
    assert_eq!(register["value"], "merged");
    assert_eq!(register["open_conflicts"], 0);
}

#[tokio::test]
async fn a_read_only_token_gets_the_state_but_its_writes_are_refused_and_not_stored() {
    let relay = Relay::start(&["--jwt-secret", SECRET]);
    let writer = token("ann", &["title"], Permission::Write);
    create(&relay, "title", "lww", Some(&writer)).await;
    let reader = token("rex", &["title"], Permission::Read);
    let rex = QClient::connect(&relay, Some(reader.clone())).await;
    assert_eq!(rex.subscribe("title").await["register"]["kind"], "lww");
    let refused = rex.command("title", lww(json!("mine"), 100, "rex")).await;
    let (code, reason) = refused.unwrap_err();
    assert_eq!(code, 4403);
    assert!(reason.contains("read-only"), "{reason}");
    assert_eq!(
        register(&relay, "title", Some(&reader)).await["value"],
        Value::Null
    );
    // A token for another document cannot subscribe at all.
    let stranger = token("sam", &["other"], Permission::Write);
    let sam = QClient::connect(&relay, Some(stranger)).await;
    sam.send(Envelope::new("title", Payload::Control(Control::Subscribe)))
        .await;
    assert!(matches!(
        sam.next("title").await,
        Payload::Control(Control::Error { code: 4403, .. })
    ));
}

#[tokio::test]
async fn a_lock_held_by_another_refuses_the_write_and_lock_events_arrive() {
    let relay = Relay::start(&[]);
    create(&relay, "notes", "manual", None).await;
    let bob = QClient::connect(&relay, None).await;
    bob.subscribe("notes").await;
    let body = json!({ "ttl_ms": 60_000, "holder": "ann" });
    let (status, taken) = http_json(
        relay.addr,
        "POST",
        "/api/v1/docs/notes/lock",
        None,
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{taken}");
    assert_eq!(bob.event("notes", "lock_acquired").await["holder"], "ann");

    let refused = bob.command("notes", manual(json!("bob's"), 0, "bob")).await;
    assert_eq!(refused.unwrap_err().0, 4423);
    let allowed = bob.command("notes", manual(json!("ann's"), 0, "ann")).await;
    assert_eq!(allowed.unwrap()["revision"]["value"], "ann's");
    assert_eq!(register(&relay, "notes", None).await["value"], "ann's");
}

#[tokio::test]
async fn malformed_and_misplaced_register_commands_get_errors_and_lose_nothing() {
    let relay = Relay::start(&[]);
    create(&relay, "title", "lww", None).await;
    create(&relay, "notes", "manual", None).await;
    let ann = QClient::connect(&relay, None).await;
    // Not subscribed yet.
    let early = ann.command("title", lww(json!("x"), 1, "ann")).await;
    assert_eq!(early.unwrap_err(), (4400, "not subscribed".into()));
    ann.subscribe("title").await;
    ann.subscribe("notes").await;
    let kept = ann.command("title", lww(json!("kept"), 100, "ann")).await;
    assert_eq!(kept.unwrap()["outcome"], "applied");

    // A register envelope whose JSON is broken: an error on that document, nothing else.
    let mut bytes = Envelope::new("title", Payload::Register(lww(json!(1), 1, "a"))).encode();
    let json_at = bytes.iter().position(|&b| b == b'{').unwrap();
    bytes[json_at] = b'[';
    ann.conn.send(bytes).await.unwrap();
    let (code, reason) = ann.answer("title").await.unwrap_err();
    assert_eq!(code, 4400);
    assert!(reason.contains("invalid register command"), "{reason}");

    // The wrong kind of operation for the document.
    let wrong = ann.command("title", manual(json!("m"), 0, "ann")).await;
    assert_eq!(wrong.unwrap_err().0, 4409);
    let wrong = ann.command("notes", lww(json!("l"), 5, "ann")).await;
    assert_eq!(wrong.unwrap_err().0, 4409);
    let yjs = Payload::Yjs(Message::Sync(SyncMessage::Update(vec![0, 0])));
    ann.send(Envelope::new("title", yjs.clone())).await;
    assert!(matches!(
        ann.next("title").await,
        Payload::Control(Control::Error { code: 4409, .. })
    ));
    // A register operation on a Yjs document.
    ann.send(Envelope::new("text", Payload::Control(Control::Subscribe)))
        .await;
    assert!(matches!(ann.next("text").await, Payload::Yjs(_)));
    let on_yjs = ann.command("text", lww(json!("t"), 1, "ann")).await;
    assert_eq!(on_yjs.unwrap_err().0, 4409);

    // The connection still works and the register kept its value.
    let later = ann.command("title", lww(json!("later"), 200, "ann")).await;
    assert_eq!(later.unwrap()["outcome"], "applied");
    assert_eq!(register(&relay, "title", None).await["value"], "later");
}

#[tokio::test]
async fn deleting_a_register_document_ends_its_quantum_subscription() {
    let relay = Relay::start(&[]);
    create(&relay, "title", "lww", None).await;
    let ann = QClient::connect(&relay, None).await;
    ann.subscribe("title").await;
    let (status, _) =
        common::http_request(relay.addr, "DELETE", "/api/v1/docs/title", None, None).await;
    assert_eq!(status, 204);
    ann.event("title", "deleted").await;
    assert!(matches!(
        ann.next("title").await,
        Payload::Control(Control::Error { code: 4410, .. })
    ));
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_the_order_they_were_sent() {
    let relay = Relay::start(&[]);
    create(&relay, "title", "lww", None).await;
    create(&relay, "notes", "manual", None).await;
    let ann = QClient::connect(&relay, None).await;
    ann.subscribe("title").await;
    let send = |command| Envelope::new("title", Payload::Register(command));
    // Sent back to back, without waiting for answers.
    ann.send(send(lww(json!("first"), 100, "ann"))).await;
    ann.send(send(lww(json!("older"), 50, "ann"))).await;
    let mut broken = send(lww(json!(1), 1, "a")).encode();
    let json_at = broken.iter().position(|&b| b == b'{').unwrap();
    broken[json_at] = b'[';
    ann.conn.send(broken).await.unwrap();
    ann.send(send(manual(json!("wrong kind"), 0, "ann"))).await;
    ann.send(send(lww(json!("last"), 200, "ann"))).await;

    assert_eq!(ann.answer("title").await.unwrap()["outcome"], "applied");
    assert_eq!(ann.answer("title").await.unwrap()["outcome"], "stale");
    assert_eq!(ann.answer("title").await.unwrap_err().0, 4400);
    assert_eq!(ann.answer("title").await.unwrap_err().0, 4409);
    assert_eq!(ann.answer("title").await.unwrap()["outcome"], "applied");
    assert_eq!(register(&relay, "title", None).await["value"], "last");
}

#[tokio::test]
async fn an_lww_stamp_far_in_the_future_is_refused_with_4422_and_manual_authors_are_the_subject() {
    let relay = Relay::start(&["--jwt-secret", SECRET]);
    let ann = token("ann", &["title", "notes"], Permission::Write);
    create(&relay, "title", "lww", Some(&ann)).await;
    create(&relay, "notes", "manual", Some(&ann)).await;
    let client = QClient::connect(&relay, Some(ann.clone())).await;
    client.subscribe("title").await;
    let refused = client
        .command("title", lww(json!("pinned"), u64::MAX, "ann"))
        .await;
    let (code, reason) = refused.unwrap_err();
    assert_eq!(code, 4422, "{reason}");
    assert!(reason.contains("ahead"), "{reason}");
    assert_eq!(
        register(&relay, "title", Some(&ann)).await["value"],
        Value::Null
    );
    let now_ms = common::api_client::now_s() * 1000;
    let honest = client.command("title", lww(json!("honest"), now_ms, "ann"));
    assert_eq!(honest.await.unwrap()["outcome"], "applied");
    // A manual write naming someone else is refused; an empty author is the token's subject.
    client.subscribe("notes").await;
    let (code, _) = client
        .command("notes", manual(json!("forged"), 0, "mallory"))
        .await
        .unwrap_err();
    assert_eq!(code, 4403);
    let applied = client.command("notes", manual(json!("v1"), 0, "")).await;
    assert_eq!(applied.unwrap()["revision"]["author"], "ann");
}
