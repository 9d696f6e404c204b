//! A Yjs document's version history on the relay, through its HTTP API
//! (`/api/v1/docs/{name}/history`): list versions newest first, read the document at one
//! (JSON, one binary v1 update, or a read-only [`yrs::Doc`]), compare two, see who wrote what,
//! restore one, label versions.
//!
//! A [`History`] comes from [`crate::Client::history`]. Requests go to the relay of
//! [`crate::ClientConfig::websocket_url`] (same host, port and path prefix; `http` for
//! `ws://`, `https` for `wss://` with the same trust: the platform's roots plus
//! [`crate::ClientConfig::tls_root_certificate`]), carry the client's token as
//! `Authorization: Bearer`, and end after [`crate::ClientConfig::http_timeout`]. Read tokens
//! browse; restoring and labelling need a write token.
//!
//! Failures are typed: the relay's refusals are [`ClientError::Relay`] with its status and
//! error code (`403 read_only`, `404 not_found`, `501 not_in_cluster_mode` in cluster mode),
//! a connection or TLS failure or the deadline is [`ClientError::Request`], an answer over
//! [`MAX_ANSWER_BYTES`] is [`ClientError::AnswerTooLarge`] and one that does not decode is
//! [`ClientError::BadAnswer`].
//!
//! What a version is (consecutive changes by the same people, at most 60 s apart; a labelled
//! change ends its version) is the relay's rule; see its README, "Version history".

mod relay_api;

use std::collections::BTreeMap;
use std::sync::Arc;

use hyper::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Transact, Update};

use crate::error::ClientError;
use crate::websocket::encode_path_segment;
pub(crate) use relay_api::RelayApi;

/// Largest answer the client reads from the relay's HTTP API: 64 MiB. A larger one (a huge
/// document's content, a misbehaving server) is [`ClientError::AnswerTooLarge`].
pub const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

pub use aetherflow_crdt::version::Version;

/// Which versions to list: the newest `limit` (the relay's default, 100, when `None`; 1 to
/// 1000) with an id below `before` (no bound when `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Page {
    /// Only versions with a smaller id: the previous page's [`VersionPage::next_before`].
    pub before: Option<u64>,
    /// Versions per page.
    pub limit: Option<usize>,
}

impl Page {
    /// The newest `limit` versions.
    pub fn newest(limit: usize) -> Page {
        Page {
            before: None,
            limit: Some(limit),
        }
    }

    /// The same page size, for versions older than `id`.
    pub fn before(self, id: u64) -> Page {
        Page {
            before: Some(id),
            ..self
        }
    }
}

/// A page of versions, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VersionPage {
    /// The versions.
    pub versions: Vec<Version>,
    /// The `before` of the next (older) page; `None` on the last page.
    pub next_before: Option<u64>,
}

/// A label on a version.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Label {
    /// The version's id.
    pub version: u64,
    /// The label.
    pub label: String,
}

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Restored {
    /// The version restored.
    pub restored: u64,
    /// Whether the document changed: `false` when it already held the version's content.
    pub changed: bool,
}

/// What a stretch of text is in a [`Run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    /// There before and after (in a diff).
    Kept,
    /// Inserted between the two versions of a diff; in a [`Blame`], every run (written
    /// since the empty document).
    Inserted,
    /// Deleted between the two versions of a diff.
    Deleted,
}

/// A stretch of text and who wrote it (or, when deleted, who deleted it).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Run {
    /// Kept, inserted or deleted.
    pub kind: RunKind,
    /// The text.
    pub text: String,
    /// Token subjects (or `anonymous`); empty when unknown.
    pub by: Vec<String>,
}

/// What changed between two versions, per root type.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Diff {
    /// The older version.
    pub from: u64,
    /// The newer version.
    pub to: u64,
    /// Each changed root's change, as the relay describes it: `{"type": "text", "runs":
    /// [...]}` for text (see [`Diff::runs`]), `{"type": "map", "changes": {key: {before,
    /// after}}}`, the array's changed middle, XML before and after.
    pub roots: BTreeMap<String, Value>,
}

impl Diff {
    /// The runs of text root `root`; `None` if it did not change or is not text.
    pub fn runs(&self, root: &str) -> Option<Vec<Run>> {
        let runs = self.roots.get(root)?.get("runs")?;
        serde_json::from_value(runs.clone()).ok()
    }
}

/// Who wrote each part of every text root at a version.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Blame {
    /// The version; `None` when the document has no history yet.
    pub version: Option<u64>,
    /// Each text root's runs, in order: all [`RunKind::Inserted`] (written since the empty
    /// document), `by` their authors.
    pub roots: BTreeMap<String, Vec<Run>>,
}

/// Document `doc`'s version history on the relay; cheap to clone. See the module docs.
#[derive(Debug, Clone)]
pub struct History {
    doc: String,
    api: Arc<RelayApi>,
}

impl History {
    /// The history of `doc` (a checked document name) through `api`.
    pub(crate) fn new(doc: String, api: Arc<RelayApi>) -> History {
        History { doc, api }
    }

    /// The document's name.
    pub fn doc(&self) -> &str {
        &self.doc
    }

    /// A page of the document's versions, newest first.
    pub async fn versions(&self, page: Page) -> Result<VersionPage, ClientError> {
        let mut query = Vec::new();
        if let Some(limit) = page.limit {
            query.push(format!("limit={limit}"));
        }
        if let Some(before) = page.before {
            query.push(format!("before={before}"));
        }
        let query = match query.is_empty() {
            true => String::new(),
            false => format!("?{}", query.join("&")),
        };
        self.get_json(&format!("/history{query}")).await
    }

    /// The document at `version` as JSON, as the relay renders content:
    /// `{"name": ..., "content": {root: value, ...}}` (a text root is a string). A document
    /// whose JSON is over the relay's limit is `422 content_too_large`: read it with
    /// [`History::update_at`].
    pub async fn content_json(&self, version: u64) -> Result<Value, ClientError> {
        self.get_json(&format!("/history/{version}/content")).await
    }

    /// The document at `version` as one Yjs v1 update (apply it to an empty document).
    pub async fn update_at(&self, version: u64) -> Result<Vec<u8>, ClientError> {
        let path = self.doc_path(&format!("/history/{version}/update"));
        let answer = self.api.send(Method::GET, &path, None).await?;
        Ok(answer.to_vec())
    }

    /// The document at `version` as a fresh [`yrs::Doc`] to read (edits to it go nowhere).
    pub async fn doc_at(&self, version: u64) -> Result<Doc, ClientError> {
        let update = self.update_at(version).await?;
        let update = Update::decode_v1(&update)
            .map_err(|e| ClientError::BadAnswer(format!("not a Yjs v1 update: {e}")))?;
        let doc = Doc::new();
        doc.transact_mut()
            .apply_update(update)
            .map_err(|e| ClientError::BadAnswer(format!("the update does not apply: {e}")))?;
        Ok(doc)
    }

    /// What changed from version `from` to the newer `to`, and who changed it.
    pub async fn diff(&self, from: u64, to: u64) -> Result<Diff, ClientError> {
        self.get_json(&format!("/history/diff?from={from}&to={to}"))
            .await
    }

    /// Who wrote each part of every text root at version `at` (the newest when `None`).
    pub async fn blame(&self, at: Option<u64>) -> Result<Blame, ClientError> {
        let query = at.map(|at| format!("?at={at}")).unwrap_or_default();
        self.get_json(&format!("/history/blame{query}")).await
    }

    /// Restores `version` (write token): the relay applies the change back to its content as
    /// a new change, which every connected client, this one included, receives as an
    /// ordinary update.
    pub async fn restore(&self, version: u64) -> Result<Restored, ClientError> {
        let path = self.doc_path(&format!("/history/{version}/restore"));
        let answer = self.api.send(Method::POST, &path, None).await?;
        decode(&answer)
    }

    /// Labels `version` with `text` (write token; 1 to 200 bytes without control characters),
    /// replacing its label. A labelled version is never thinned away.
    pub async fn label(&self, version: u64, text: &str) -> Result<Label, ClientError> {
        let path = self.doc_path(&format!("/history/{version}/label"));
        let body = serde_json::json!({ "label": text })
            .to_string()
            .into_bytes();
        let answer = self.api.send(Method::PUT, &path, Some(body)).await?;
        decode(&answer)
    }

    /// Removes `version`'s label (write token); `404 not_found` if it has none.
    pub async fn remove_label(&self, version: u64) -> Result<(), ClientError> {
        let path = self.doc_path(&format!("/history/{version}/label"));
        self.api.send(Method::DELETE, &path, None).await?;
        Ok(())
    }

    /// The document's labels, oldest version first.
    pub async fn labels(&self) -> Result<Vec<Label>, ClientError> {
        #[derive(Deserialize)]
        struct Labels {
            labels: Vec<Label>,
        }
        let Labels { labels } = self.get_json("/history/labels").await?;
        Ok(labels)
    }

    /// `/api/v1/docs/{doc}{rest}`.
    fn doc_path(&self, rest: &str) -> String {
        format!("/api/v1/docs/{}{rest}", encode_path_segment(&self.doc))
    }

    /// `GET` of the document's `rest`, decoded from JSON.
    async fn get_json<T: DeserializeOwned>(&self, rest: &str) -> Result<T, ClientError> {
        let answer = self
            .api
            .send(Method::GET, &self.doc_path(rest), None)
            .await?;
        decode(&answer)
    }
}

/// `body` as a `T`, or [`ClientError::BadAnswer`].
fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::BadAnswer(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn answers_of_another_shape_are_bad_answers_not_panics() {
        for body in [&b""[..], b"null", b"[]", b"{\"versions\":1}", &[0xff; 8]] {
            let err = decode::<VersionPage>(body).unwrap_err();
            assert!(matches!(err, ClientError::BadAnswer(_)), "{err}");
        }
        let page: VersionPage = decode(
            br#"{"versions":[{"id":7,"first_seq":5,"time_ms":2,"started_ms":1,
                 "authors":["ada"],"bytes":30,"entries":3,"label":null}],"next_before":7}"#,
        )
        .unwrap();
        assert_eq!(page.versions[0].authors, ["ada"]);
        assert_eq!(page.next_before, Some(7));
    }

    #[test]
    fn diff_runs_are_read_from_text_roots_only() {
        let diff: Diff = decode(
            br#"{"from":1,"to":2,"roots":{
                "text":{"type":"text","runs":[{"kind":"inserted","text":"hi","by":["ada"]}]},
                "meta":{"type":"map","changes":{}}}}"#,
        )
        .unwrap();
        let runs = diff.runs("text").unwrap();
        assert_eq!(
            (runs[0].kind, runs[0].by.as_slice()),
            (RunKind::Inserted, &["ada".to_owned()][..])
        );
        assert_eq!(diff.runs("meta"), None);
        assert_eq!(diff.runs("absent"), None);
    }

    #[test]
    fn pages_keep_their_size_when_moving_back() {
        assert_eq!(
            Page::newest(2).before(9),
            Page {
                before: Some(9),
                limit: Some(2)
            }
        );
    }
}
