//! The sessions of every relay of a cluster, for the admin routes' `scope=cluster`: the
//! question sent to every relay ([`ClusterRequest`]), what one relay answers from its own
//! registry ([`answer`]), and how the answers become one page ([`merge`]). The transport
//! between relays is [`ClusterSessions`]; cluster mode implements it on NATS
//! (`jetstream/admin.rs`).

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{Filter, Registry};
use crate::connection::CloseReason;

/// What the admin asks every relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClusterRequest {
    /// Up to `limit` sessions matching `filter` with ids after `after`, oldest first.
    List {
        /// Which sessions.
        filter: Filter,
        /// The page starts after this id.
        after: Option<Uuid>,
        /// Most sessions in the page.
        limit: usize,
    },
    /// Close every session matching `filter` with close code `code` and `reason`.
    Disconnect {
        /// Which sessions.
        filter: Filter,
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
}

/// Sends a request to every relay of the cluster.
pub trait ClusterSessions: Send + Sync {
    /// Sends `request` to every live relay (this one included) and gathers their answers:
    /// each relay's id with what it answered, from those that answered in time.
    fn ask(&self, request: ClusterRequest) -> BoxFuture<'_, Vec<(String, Value)>>;
}

/// What this relay answers, from its own `registry`.
pub fn answer(registry: &Registry, request: ClusterRequest) -> Value {
    match request {
        ClusterRequest::List {
            filter,
            after,
            limit,
        } => {
            let page = registry.list(&filter, after, limit);
            json!({ "sessions": page.sessions, "more": page.next_after.is_some() })
        }
        ClusterRequest::Disconnect {
            filter,
            code,
            reason,
        } => {
            let close = CloseReason::new(code, reason);
            json!({ "requested": registry.disconnect_matching(&filter, &close) })
        }
    }
}

/// One page out of every relay's answer to the same [`ClusterRequest::List`]: each session
/// tagged with its relay, oldest first (session ids are UUIDv7), at most `limit`; `next_after`
/// when any relay has more.
pub fn merge(answers: Vec<(String, Value)>, limit: usize) -> Value {
    let relays = answers.len();
    let mut more = false;
    let mut sessions = Vec::new();
    for (relay, answer) in answers {
        more |= answer["more"].as_bool().unwrap_or(false);
        if let Value::Array(listed) = &answer["sessions"] {
            for session in listed {
                let mut session = session.clone();
                session["relay"] = Value::String(relay.clone());
                sessions.push(session);
            }
        }
    }
    let id = |session: &Value| session["id"].as_str().unwrap_or_default().to_owned();
    sessions.sort_by_key(id);
    more |= sessions.len() > limit;
    sessions.truncate(limit);
    let mut page = json!({ "sessions": sessions, "relays": relays });
    if more && let Some(last) = page["sessions"].as_array().and_then(|s| s.last()) {
        page["next_after"] = Value::String(id(last));
    }
    page
}

/// How many sessions the relays asked to close, together.
pub fn requested(answers: &[(String, Value)]) -> u64 {
    answers
        .iter()
        .map(|(_, answer)| answer["requested"].as_u64().unwrap_or(0))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str) -> Value {
        json!({ "id": id, "user": "ann" })
    }

    #[test]
    fn a_merged_page_is_oldest_first_tagged_by_relay_and_says_when_there_is_more() {
        let answers = vec![
            (
                "r1".to_owned(),
                json!({ "sessions": [session("01a"), session("01c")], "more": false }),
            ),
            (
                "r2".to_owned(),
                json!({ "sessions": [session("01b"), session("01d")], "more": false }),
            ),
        ];
        let page = merge(answers.clone(), 3);
        let ids: Vec<&Value> = page["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| &s["id"])
            .collect();
        assert_eq!(ids, ["01a", "01b", "01c"]);
        assert_eq!(page["sessions"][1]["relay"], "r2");
        assert_eq!(page["next_after"], "01c");
        assert_eq!(page["relays"], 2);
        // Everything fits: no next page.
        assert!(merge(answers, 4).get("next_after").is_none());
    }

    #[test]
    fn a_relay_with_more_than_it_sent_means_a_next_page() {
        let answers = vec![(
            "r1".to_owned(),
            json!({ "sessions": [session("01a")], "more": true }),
        )];
        assert_eq!(merge(answers, 1)["next_after"], "01a");
    }
}
