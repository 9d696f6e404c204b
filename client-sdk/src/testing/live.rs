//! Helpers for tests that drive live [`DocHandle`]s: read and append root text, and wait
//! (bounded) on the change stream or the sync state instead of sleeping.
//!
//! They panic when a wait runs out, with what the document held, since a test has nothing
//! better to do then.
//!
//! ```
//! # async fn demo() -> Result<(), aetherflow_client::ClientError> {
//! use std::time::Duration;
//! use aetherflow_client::{Client, ClientConfig, testing};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let client = Client::open(ClientConfig::new(dir.path()))?;
//! let notes = client.doc("notes").await?;
//! testing::append_text(&notes, "text", "hello");
//! let text = testing::wait_text(&notes, "text", Duration::from_secs(5), |t| t == "hello").await;
//! assert_eq!(text, "hello");
//! # client.close().await
//! # }
//! ```

use std::time::Duration;

use yrs::{GetString, Text, Transact};

use crate::doc::{DocHandle, SyncState};

/// Root text `name` of the handle's document.
pub fn text(handle: &DocHandle, name: &str) -> String {
    let text = handle.doc().get_or_insert_text(name);
    text.get_string(&handle.doc().transact())
}

/// Appends `s` to root text `name` in one local transaction, which goes out like any edit.
pub fn append_text(handle: &DocHandle, name: &str, s: &str) {
    let text = handle.doc().get_or_insert_text(name);
    let mut txn = handle.doc().transact_mut();
    let len = text.len(&txn);
    text.insert(&mut txn, len, s);
}

/// Waits on the change stream until root text `name` satisfies `condition`; returns the text.
///
/// # Panics
///
/// When `timeout` passes first, or the document closes, with the text it holds.
pub async fn wait_text(
    handle: &DocHandle,
    name: &str,
    timeout: Duration,
    condition: impl Fn(&str) -> bool,
) -> String {
    let mut changes = handle.changes();
    let wait = async {
        loop {
            let now = text(handle, name);
            if condition(&now) {
                return now;
            }
            if changes.next().await.is_none() {
                panic!("the document closed; its text is {now:?}");
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(text) => text,
        Err(_) => panic!("text never matched; it is {:?}", text(handle, name)),
    }
}

/// Waits until the sync state satisfies `condition`; returns that state.
///
/// # Panics
///
/// When `timeout` passes first, with the state at that moment.
pub async fn wait_state(
    handle: &DocHandle,
    timeout: Duration,
    condition: impl FnMut(&SyncState) -> bool,
) -> SyncState {
    match tokio::time::timeout(timeout, handle.wait_for(condition)).await {
        Ok(state) => state,
        Err(_) => panic!("state never matched: {:?}", handle.state().borrow()),
    }
}

/// Asserts that each piece occurs exactly once in `text` (no loss, no duplicates) and that
/// nothing else is there.
///
/// # Panics
///
/// When a piece is missing or repeated, or `text` holds more than the pieces.
pub fn assert_exactly_once(text: &str, pieces: &[&str]) {
    for piece in pieces {
        assert_eq!(text.matches(piece).count(), 1, "{piece:?} in {text:?}");
    }
    let expected_len: usize = pieces.iter().map(|p| p.len()).sum();
    assert_eq!(
        text.len(),
        expected_len,
        "{text:?} holds more than {pieces:?}"
    );
}
