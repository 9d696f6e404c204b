//! `aetherflow merge` and `aetherflow inspect` on Yjs v1 update files, run as the real binary.
#![allow(clippy::unwrap_used, missing_docs)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use aetherflow_client::testing::Replicas;
use common::{Relay, read_text};
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

fn aetherflow(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_aetherflow"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn save(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

fn text_of(update: &[u8]) -> String {
    let doc = Doc::new();
    let text = doc.get_or_insert_text("text");
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
    text.get_string(&doc.transact())
}

#[test]
fn merge_combines_replicas_edited_apart_and_inspect_describes_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let base = Doc::new();
    base.get_or_insert_text("text")
        .insert(&mut base.transact_mut(), 0, "draft");
    let replicas = Replicas::fork(&base, 2);
    replicas.edit_text(0, "text", |t, txn| t.insert(txn, 0, "My "));
    replicas.edit_text(1, "text", |t, txn| t.push(txn, " v2"));
    std::fs::write(dir.path().join("a.bin"), save(replicas.get(0))).unwrap();
    std::fs::write(dir.path().join("b.bin"), save(replicas.get(1))).unwrap();

    let out = aetherflow(&["merge", "a.bin", "b.bin", "-o", "out.bin"], dir.path());
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("merged 2 files into out.bin"));
    let merged = std::fs::read(dir.path().join("out.bin")).unwrap();
    replicas.merge();
    assert_eq!(replicas.assert_converged("text"), "My draft v2");
    assert_eq!(text_of(&merged), "My draft v2");

    let out = aetherflow(&["inspect", "out.bin"], dir.path());
    assert!(out.status.success(), "{out:?}");
    let report = String::from_utf8(out.stdout).unwrap();
    assert!(report.contains("clients: 3"), "{report}");
    assert!(
        report.contains("\"text\": text, length 11: \"My draft v2\""),
        "{report}"
    );
    assert!(report.contains("missing dependencies: no"), "{report}");
}

#[test]
fn inspect_shows_arrays_maps_texts_and_xml_fragments_as_what_they_are() {
    use yrs::{Array, Map, XmlElementPrelim, XmlFragment, XmlTextPrelim};
    let dir = tempfile::tempdir().unwrap();
    let doc = Doc::new();
    let todo = doc.get_or_insert_array("todo");
    let title = doc.get_or_insert_text("title");
    let meta = doc.get_or_insert_map("meta");
    let body = doc.get_or_insert_xml_fragment("body");
    {
        let mut txn = doc.transact_mut();
        todo.insert_range(&mut txn, 0, ["milk", "eggs"]);
        title.insert(&mut txn, 0, "Shopping");
        meta.insert(&mut txn, "owner", "ada");
        let p = body.push_back(&mut txn, XmlElementPrelim::empty("p"));
        p.push_back(&mut txn, XmlTextPrelim::new("hi"));
    }
    std::fs::write(dir.path().join("doc.bin"), save(&doc)).unwrap();

    let out = aetherflow(&["inspect", "doc.bin"], dir.path());
    assert!(out.status.success(), "{out:?}");
    let report = String::from_utf8(out.stdout).unwrap();
    for line in [
        r#""todo": array, length 2: "\"milk\", \"eggs\"""#,
        r#""title": text, length 8: "Shopping""#,
        r#""meta": map, length 1: "owner""#,
        r#""body": xml fragment, length 1: "<p>hi</p>""#,
    ] {
        assert!(report.contains(line), "{line} not in\n{report}");
    }
}

#[test]
fn a_missing_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = aetherflow(&["merge", "nope.bin", "-o", "out.bin"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read nope.bin"), "{err}");
    assert!(!dir.path().join("out.bin").exists());
    let out = aetherflow(&["inspect", "nope.bin"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read nope.bin"));
}

#[test]
fn an_invalid_input_is_a_clear_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.bin"), save(&Doc::new())).unwrap();
    std::fs::write(dir.path().join("junk.bin"), b"{\"not\": \"an update\"}").unwrap();
    let out = aetherflow(
        &["merge", "good.bin", "junk.bin", "-o", "out.bin"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("junk.bin is not a valid Yjs v1 update"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let out = aetherflow(&["inspect", "junk.bin"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("junk.bin is not a valid"));
}

#[test]
fn an_unwritable_output_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.bin"), save(&Doc::new())).unwrap();
    let out = aetherflow(&["merge", "a.bin", "-o", "no/such/dir/out.bin"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot write no/such/dir/out.bin"), "{err}");
}

#[test]
fn merge_without_an_output_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = aetherflow(&["merge", "a.bin"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--output"));
}

#[tokio::test]
async fn without_a_subcommand_the_binary_still_serves() {
    // The harness starts the binary with flags only, as `cargo run --release` does.
    let relay = Relay::start(&[]);
    assert_eq!(read_text(&relay, "fresh").await, "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_lists_a_stopped_relays_versions_and_export_writes_one_of_them() {
    let data = tempfile::tempdir().unwrap();
    let mut relay = Relay::start_in(data.path(), &[]);
    let mut writer = common::YClient::connect(&relay.ws_url("notes")).await;
    writer.append("first ").await;
    writer.barrier().await;
    // A label ends a version: the next edit starts another.
    let (_, listed) =
        common::http_json(relay.addr, "GET", "/api/v1/docs/notes/history", None, None).await;
    let first = listed["versions"][0]["id"].as_u64().unwrap();
    let label = format!("/api/v1/docs/notes/history/{first}/label");
    let body = serde_json::json!({ "label": "draft" });
    let (status, _) = common::http_json(relay.addr, "PUT", &label, None, Some(body)).await;
    assert_eq!(status, 200);
    writer.append("second").await;
    writer.barrier().await;
    drop(writer);
    relay.signal_and_wait("TERM");

    let dir = data.path().to_str().unwrap();
    let listing = aetherflow(&["history", "notes", "--data-dir", dir], data.path());
    assert!(listing.status.success(), "{listing:?}");
    let listing = String::from_utf8(listing.stdout).unwrap();
    assert!(listing.starts_with("2 versions of notes"), "{listing}");
    assert!(
        listing.contains(&format!("\n{first}\t")) && listing.contains("\tdraft\n"),
        "{listing}"
    );
    let then = data.path().join("then.update");
    let at = first.to_string();
    let exported = aetherflow(
        &[
            "export",
            "notes",
            "--at",
            &at,
            "-o",
            then.to_str().unwrap(),
            "--data-dir",
            dir,
        ],
        data.path(),
    );
    assert!(exported.status.success(), "{exported:?}");
    assert_eq!(text_of(&std::fs::read(&then).unwrap()), "first ");
    let now = data.path().join("now.update");
    let exported = aetherflow(
        &[
            "export",
            "notes",
            "-o",
            now.to_str().unwrap(),
            "--data-dir",
            dir,
        ],
        data.path(),
    );
    assert!(exported.status.success(), "{exported:?}");
    assert_eq!(text_of(&std::fs::read(&now).unwrap()), "first second");
    // An unknown version or data directory is a clear error, not an empty file.
    let unknown = aetherflow(
        &[
            "export",
            "notes",
            "--at",
            "999999",
            "-o",
            "x",
            "--data-dir",
            dir,
        ],
        data.path(),
    );
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("has no version 999999"));
    let elsewhere = aetherflow(&["history", "notes", "--data-dir", "nowhere"], data.path());
    assert!(!elsewhere.status.success());
    assert!(String::from_utf8_lossy(&elsewhere.stderr).contains("no database here"));
}
