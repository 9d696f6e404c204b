//! The storage contract as tests: every engine runs [`run`] against itself.
//!
//! An engine's test implements [`Engine`] (open the same data again, as a restarted relay
//! would) and asserts that [`run`] returns `Ok`. A failed check returns the broken rule, so
//! an engine that breaks the contract on purpose can show that the suite notices.

use std::collections::BTreeSet;

use aetherflow_crdt::DocName;
use aetherflow_crdt::register::clock::HlcStamp;
use aetherflow_crdt::register::{Command, Kind, Outcome, Register, lww, manual};
use futures_util::future::BoxFuture;
use serde_json::json;

use super::{Created, DocumentMeta, RegisterFailure, Storage, StoreError};

/// An engine under test.
pub(crate) trait Engine {
    /// Opens the engine's data: the first call starts empty, later calls find what earlier
    /// handles made durable. Earlier handles are dropped before the next open.
    fn open(&mut self) -> BoxFuture<'_, Storage>;
}

/// A rule of the contract that an engine broke.
#[derive(Debug)]
pub(crate) struct Violation(pub String);

impl From<StoreError> for Violation {
    fn from(e: StoreError) -> Violation {
        Violation(format!("storage failed: {e}"))
    }
}

impl From<RegisterFailure> for Violation {
    fn from(e: RegisterFailure) -> Violation {
        Violation(format!("a register command was refused: {e}"))
    }
}

pub(crate) type Checked = Result<(), Violation>;

/// `Ok` if `holds`, else the broken rule `rule` describes.
pub(crate) fn check(holds: bool, rule: impl FnOnce() -> String) -> Checked {
    if holds {
        Ok(())
    } else {
        Err(Violation(rule()))
    }
}

fn name(text: &str) -> DocName {
    DocName::parse(text).expect("a valid test name")
}

/// Runs every check against `engine`, in order; the first broken rule ends the run.
pub(crate) async fn run(engine: &mut impl Engine) -> Checked {
    let storage = engine.open().await;
    appends_come_back_in_order(&storage).await?;
    compaction_keeps_later_entries(&storage).await?;
    entries_are_read_by_range(&storage).await?;
    concurrent_appends_are_all_kept(&storage).await?;
    large_entries_are_kept(&storage).await?;
    catalog_creates_lists_and_deletes(&storage).await?;
    registers_apply_their_rules(&storage).await?;
    drop(storage);
    let reopened = engine.open().await;
    acknowledged_writes_survive_a_reopen(&reopened).await
}

async fn append(storage: &Storage, doc: &DocName, update: &[u8]) -> Checked {
    let committing = storage
        .log
        .append(doc.clone(), update.to_vec(), Vec::new())
        .await?;
    committing.await?;
    Ok(())
}

async fn appends_come_back_in_order(storage: &Storage) -> Checked {
    let doc = name("conformance-order");
    let empty = storage.log.load(doc.clone()).await?;
    check(empty.snapshot.is_none() && empty.log.is_empty(), || {
        format!("an unknown document loads as {empty:?}, not empty")
    })?;
    for n in 0..5u8 {
        append(storage, &doc, &[n; 3]).await?;
    }
    let loaded = storage.log.load(doc).await?;
    let expected: Vec<Vec<u8>> = (0..5u8).map(|n| vec![n; 3]).collect();
    check(loaded.log == expected && loaded.snapshot.is_none(), || {
        format!("appended 5 entries, loaded {loaded:?}")
    })
}

/// Three real Yjs updates typing "a", "b", "c" into the text `t`, and the first two merged:
/// an engine may merge what it folds, so compaction is checked by content, not bytes.
fn typed() -> ([Vec<u8>; 3], Vec<u8>) {
    use yrs::{Doc, ReadTxn, Text, Transact};
    let doc = Doc::with_client_id(1);
    let text = doc.get_or_insert_text("t");
    let mut updates = Vec::new();
    for (at, letter) in ["a", "b", "c"].into_iter().enumerate() {
        let before = doc.transact().state_vector();
        text.insert(&mut doc.transact_mut(), at as u32, letter);
        updates.push(doc.transact().encode_state_as_update_v1(&before));
    }
    let merged = yrs::merge_updates_v1([updates[0].as_slice(), updates[1].as_slice()])
        .expect("valid updates merge");
    let [a, b, c] = <[Vec<u8>; 3]>::try_from(updates).expect("three updates");
    ([a, b, c], merged)
}

/// The text `t` of a stored document, replayed.
fn text_of(stored: &super::StoredDoc) -> String {
    use yrs::updates::decoder::Decode;
    use yrs::{Doc, GetString, Transact, Update};
    let doc = Doc::new();
    let text = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    for update in stored.snapshot.iter().chain(&stored.log) {
        if let Ok(update) = Update::decode_v1(update) {
            let _ = txn.apply_update(update);
        }
    }
    text.get_string(&txn)
}

async fn compaction_keeps_later_entries(storage: &Storage) -> Checked {
    let doc = name("conformance-compaction");
    let ([a, b, c], ab) = typed();
    append(storage, &doc, &a).await?;
    append(storage, &doc, &b).await?;
    storage.log.compact(doc.clone(), ab).await?;
    // Queued right after the compaction, not waited for in between: it must survive it.
    let after = storage
        .log
        .append(doc.clone(), c.clone(), Vec::new())
        .await?;
    after.await?;
    let loaded = storage.log.load(doc.clone()).await?;
    check(
        loaded.snapshot.is_some() && loaded.log == vec![c] && text_of(&loaded) == "abc",
        || {
            format!(
                "after a, b, compact(ab), c: loaded {loaded:?}, text {:?}",
                text_of(&loaded)
            )
        },
    )?;
    let stats = storage.catalog.stats(doc).await?;
    check(stats.updates == 1 && stats.size_bytes > 0, || {
        format!("stats after compaction: {stats:?}")
    })
}

/// An entry of several megabytes (more than a NATS message carries) comes back whole, from a
/// load and from a range read.
async fn large_entries_are_kept(storage: &Storage) -> Checked {
    let doc = name("conformance-large");
    let large: Vec<u8> = (0..3 << 20).map(|n: u32| (n % 251) as u8).collect();
    append(storage, &doc, b"small").await?;
    append(storage, &doc, &large).await?;
    let loaded = storage.log.load(doc.clone()).await?;
    check(loaded.log == vec![b"small".to_vec(), large.clone()], || {
        format!(
            "appended 5 bytes and 3 MiB, loaded entries of {:?} bytes",
            loaded.log.iter().map(Vec::len).collect::<Vec<_>>()
        )
    })?;
    let read = storage.log.entries(doc, 0, usize::MAX).await?;
    check(read.last().is_some_and(|e| e.update == large), || {
        "a range read lost the 3 MiB entry".to_owned()
    })
}

async fn entries_are_read_by_range(storage: &Storage) -> Checked {
    let doc = name("conformance-range");
    for n in 0..6u8 {
        append(storage, &doc, &[n]).await?;
    }
    let all = storage.log.entries(doc.clone(), 0, usize::MAX).await?;
    let seqs: Vec<u64> = all.iter().map(|e| e.seq).collect();
    check(
        all.len() == 6 && seqs.windows(2).all(|w| w[0] < w[1]),
        || format!("6 entries with increasing sequence numbers, got {seqs:?}"),
    )?;
    let from = all[2].seq;
    let page = storage.log.entries(doc, from, 2).await?;
    let updates: Vec<Vec<u8>> = page.iter().map(|e| e.update.clone()).collect();
    check(
        page.first().map(|e| e.seq) == Some(from) && updates == vec![vec![2], vec![3]],
        || format!("2 entries from seq {from}: got {page:?}"),
    )
}

async fn concurrent_appends_are_all_kept(storage: &Storage) -> Checked {
    let doc = name("conformance-concurrent");
    let writers = (0..8u8).map(|writer| {
        let storage = storage.clone();
        let doc = doc.clone();
        tokio::spawn(async move {
            for n in 0..25u8 {
                append(&storage, &doc, &[writer, n]).await?;
            }
            Ok::<_, Violation>(())
        })
    });
    for writer in futures_util::future::join_all(writers).await {
        writer.map_err(|e| Violation(format!("writer task failed: {e}")))??;
    }
    let loaded = storage.log.load(doc).await?;
    let kept: BTreeSet<Vec<u8>> = loaded.log.iter().cloned().collect();
    check(kept.len() == 200 && loaded.log.len() == 200, || {
        format!(
            "8 writers appended 200 entries, {} loaded",
            loaded.log.len()
        )
    })?;
    for writer in 0..8u8 {
        let own: Vec<u8> = loaded
            .log
            .iter()
            .filter(|e| e[0] == writer)
            .map(|e| e[1])
            .collect();
        check(own.windows(2).all(|w| w[0] < w[1]), || {
            format!("writer {writer}'s entries out of order: {own:?}")
        })?;
    }
    Ok(())
}

async fn catalog_creates_lists_and_deletes(storage: &Storage) -> Checked {
    let catalog = &storage.catalog;
    let meta = DocumentMeta {
        kind: Kind::Lww,
        created_ms: Some(1),
    };
    let doc = name("conformance-catalog-b");
    let first = catalog.create(doc.clone(), meta).await?;
    let again = catalog
        .create(
            doc.clone(),
            DocumentMeta {
                kind: Kind::Manual,
                ..meta
            },
        )
        .await?;
    check(
        first == Created::New(meta) && again == Created::Exists(meta),
        || format!("create twice: {first:?} then {again:?}"),
    )?;
    let found = catalog.document(doc.clone()).await?;
    check(found == Some(meta), || format!("document(): {found:?}"))?;
    let implicit = name("conformance-catalog-a");
    append(storage, &implicit, b"x").await?;
    let listed = catalog
        .list(
            None,
            100,
            Box::new(|n: &str| n.starts_with("conformance-catalog")),
        )
        .await?;
    let names: Vec<&str> = listed.iter().map(|(d, _)| d.as_str()).collect();
    check(
        names == ["conformance-catalog-a", "conformance-catalog-b"],
        || format!("list: {names:?}"),
    )?;
    let page = catalog
        .list(
            Some("conformance-catalog-a".into()),
            1,
            Box::new(|n: &str| n.starts_with("conformance-catalog")),
        )
        .await?;
    check(page.len() == 1 && page[0].0 == doc, || {
        format!("list after a, limit 1: {page:?}")
    })?;
    let deleted = catalog.delete(implicit.clone()).await?;
    let missing = catalog.delete(name("conformance-never")).await?;
    let gone = storage.log.load(implicit.clone()).await?;
    let meta_gone = catalog.document(implicit).await?;
    check(
        deleted
            && !missing
            && gone.log.is_empty()
            && gone.snapshot.is_none()
            && meta_gone.is_none(),
        || {
            format!(
                "delete: existed {deleted}, never-existed {missing}, left {gone:?} {meta_gone:?}"
            )
        },
    )
}

async fn registers_apply_their_rules(storage: &Storage) -> Checked {
    let registers = &storage.registers;
    let missing = registers
        .apply(name("conformance-no-register"), lww_set("x", 1))
        .await?;
    check(missing == Err(RegisterFailure::NotFound), || {
        format!("a command on no document: {missing:?}")
    })?;
    let yjs = name("conformance-order");
    let wrong = registers.apply(yjs.clone(), lww_set("x", 1)).await?;
    let read = registers.register(yjs).await?;
    check(
        read.is_none()
            && matches!(
                wrong,
                Err(RegisterFailure::NotFound | RegisterFailure::NotARegister(_))
            ),
        || format!("a command on a Yjs document: {wrong:?}, register {read:?}"),
    )?;

    let doc = name("conformance-lww");
    create(storage, &doc, Kind::Lww).await?;
    registers.apply(doc.clone(), lww_set("late", 20)).await??;
    let older = registers.apply(doc.clone(), lww_set("early", 10)).await??;
    let value = match registers.register(doc).await? {
        Some(Register::Lww(register)) => register.value().cloned(),
        other => return Err(Violation(format!("lww register read back as {other:?}"))),
    };
    check(value == Some(json!("late")), || {
        format!("lww: the later stamp must win, value {value:?} (older write: {older:?})")
    })?;

    let doc = name("conformance-manual");
    create(storage, &doc, Kind::Manual).await?;
    let write = |value: &str, base_version: u64| {
        Command::ManualWrite(manual::ManualWrite {
            base_version,
            value: json!(value),
            author: "conformance".into(),
            at_ms: 1,
        })
    };
    registers.apply(doc.clone(), write("one", 0)).await??;
    let stale = registers.apply(doc.clone(), write("two", 0)).await??;
    check(
        matches!(stale, Outcome::Manual(manual::Outcome::Conflict(_))),
        || format!("a manual write on a stale version: {stale:?}"),
    )?;
    match registers.register(doc).await? {
        Some(Register::Manual(register)) => check(register.conflicts().count() == 1, || {
            format!("manual conflicts kept: {}", register.conflicts().count())
        }),
        other => Err(Violation(format!("manual register read back as {other:?}"))),
    }
}

async fn create(storage: &Storage, doc: &DocName, kind: Kind) -> Checked {
    let meta = DocumentMeta {
        kind,
        created_ms: Some(1),
    };
    storage.catalog.create(doc.clone(), meta).await?;
    Ok(())
}

fn lww_set(value: &str, stamp_ms: u64) -> Command {
    let clock = HlcStamp {
        wall_ms: stamp_ms,
        counter: 0,
    };
    Command::LwwWrite(lww::LwwWrite::new(json!(value), clock, "conformance"))
}

async fn acknowledged_writes_survive_a_reopen(storage: &Storage) -> Checked {
    let loaded = storage.log.load(name("conformance-order")).await?;
    check(loaded.log.len() == 5, || {
        format!(
            "5 acknowledged appends, {} after a reopen",
            loaded.log.len()
        )
    })?;
    let compacted = storage.log.load(name("conformance-compaction")).await?;
    check(
        compacted.snapshot.is_some() && compacted.log.len() == 1 && text_of(&compacted) == "abc",
        || format!("compacted document after a reopen: {compacted:?}"),
    )?;
    let register = storage
        .registers
        .register(name("conformance-manual"))
        .await?;
    check(matches!(register, Some(Register::Manual(_))), || {
        format!("manual register after a reopen: {register:?}")
    })
}
