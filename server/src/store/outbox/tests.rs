//! The outbox's rules against a real database and writer.

use super::*;
use crate::store::{Store, StoreWriter, WriteMode, WriteOp};

fn endpoint() -> EndpointRecord {
    EndpointRecord {
        id: "e1".into(),
        url: "http://example.com/".into(),
        events: BTreeSet::from([EventKind::DocumentChanged]),
        prefix: None,
        secret: "whsec_test".into(),
        include_content: false,
        debounce_ms: 0,
        created_ms: 0,
    }
}

async fn append(writer: &StoreWriter, doc: &DocName) {
    let op = WriteOp::Append {
        doc: doc.clone(),
        update: vec![0, 0],
        authors: vec!["ann".into()],
    };
    writer.commit(op).await.expect("committed");
}

#[tokio::test]
async fn a_window_that_grew_during_its_delivery_goes_out_again_under_a_new_id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("db.redb")).expect("store");
    let (writer, _task) = StoreWriter::spawn(store.clone(), WriteMode::Durable);
    let doc = DocName::parse("notes").expect("valid name");
    let op = WriteOp::Webhook(OutboxOp::PutEndpoint(endpoint()));
    writer.commit(op).await.expect("committed");
    append(&writer, &doc).await;
    let (seq, sent) = store.due_webhooks(u64::MAX, 10).expect("readable").0[0].clone();
    let sent_ref = RowRef {
        seq,
        id: sent.id.clone(),
        revision: sent.revision(),
    };
    // A commit lands while the attempt is in flight: same row, one more update.
    append(&writer, &doc).await;
    let op = WriteOp::Webhook(OutboxOp::Delivered(sent_ref));
    writer.commit(op).await.expect("committed");
    let rows = store.due_webhooks(u64::MAX, 10).expect("readable").0;
    assert_eq!(rows.len(), 1, "the grown row is kept: {rows:?}");
    let (_, kept) = &rows[0];
    assert_ne!(
        kept.id, sent.id,
        "a new id: the receiver already has the old one"
    );
    assert_eq!(kept.revision(), 2);
    // Delivered as it is now, it is gone.
    let op = WriteOp::Webhook(OutboxOp::Delivered(RowRef {
        seq,
        id: kept.id.clone(),
        revision: kept.revision(),
    }));
    writer.commit(op).await.expect("committed");
    assert!(
        store
            .due_webhooks(u64::MAX, 10)
            .expect("readable")
            .0
            .is_empty()
    );
}

#[tokio::test]
async fn one_endpoints_backlog_never_hides_anothers_due_rows() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::open(&dir.path().join("db.redb")).expect("store");
    let (writer, _task) = StoreWriter::spawn(store.clone(), WriteMode::Durable);
    let mut busy = endpoint();
    busy.events = BTreeSet::from([EventKind::LockAcquired]);
    let mut quiet = endpoint();
    quiet.id = "e2".into();
    quiet.prefix = Some("quiet".into());
    quiet.events = busy.events.clone();
    for record in [busy, quiet] {
        let op = WriteOp::Webhook(OutboxOp::PutEndpoint(record));
        writer.commit(op).await.expect("committed");
    }
    for n in 0..20 {
        let doc = DocName::parse(&format!("busy-{n}")).expect("valid name");
        let data = json!({});
        let kind = EventKind::LockAcquired;
        let op = WriteOp::Webhook(OutboxOp::Record { doc, kind, data });
        writer.commit(op).await.expect("committed");
    }
    let doc = DocName::parse("quiet-1").expect("valid name");
    let (kind, data) = (EventKind::LockAcquired, json!({}));
    let op = WriteOp::Webhook(OutboxOp::Record { doc, kind, data });
    writer.commit(op).await.expect("committed");
    let (due, next) = store.due_webhooks(u64::MAX, 2).expect("readable");
    let per_endpoint = |id: &str| due.iter().filter(|(_, r)| r.endpoint == id).count();
    // "quiet-1" matches both endpoints (e1 has no prefix): e1 holds 21 rows, e2 one.
    assert_eq!((per_endpoint("e1"), per_endpoint("e2")), (2, 1));
    assert!(next.is_some());
}
