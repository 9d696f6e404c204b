//! The admin's cluster-wide view of sessions over core NATS: every relay answers requests on
//! `{prefix}.admin.sessions` from its own registry; a relay asking publishes once and gathers
//! answers until every relay it knows to be alive (by their heartbeats) has answered, or
//! [`ANSWER_WAIT`] has passed.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};

use super::presence::NatsPresence;
use crate::sessions::Registry;
use crate::sessions::cluster::{ClusterRequest, ClusterSessions, answer};

/// Longest a cluster-wide request waits for the relays' answers.
pub const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// Sessions cluster-wide over NATS; cheap to clone.
#[derive(Clone)]
pub struct NatsSessions {
    presence: NatsPresence,
}

impl NatsSessions {
    /// Starts answering the other relays' requests from `registry`.
    pub fn start(presence: NatsPresence, registry: Registry) -> NatsSessions {
        let sessions = NatsSessions { presence };
        tokio::spawn(sessions.clone().serve(registry));
        sessions
    }

    fn subject(&self) -> String {
        format!("{}.admin.sessions", self.presence.link().1)
    }

    /// Answers every request, for as long as the process runs.
    async fn serve(self, registry: Registry) {
        let client = self.presence.link().0.clone();
        let Ok(mut requests) = client.subscribe(self.subject()).await else {
            tracing::error!("cannot answer the other relays' session requests");
            return;
        };
        while let Some(message) = requests.next().await {
            let Some(reply) = message.reply else {
                continue;
            };
            let Ok(request) = serde_json::from_slice::<ClusterRequest>(&message.payload) else {
                tracing::debug!("a session request this relay cannot read; ignored");
                continue;
            };
            let body =
                json!({ "relay": self.presence.relay_id(), "answer": answer(&registry, request) });
            let _ = client.publish(reply, body.to_string().into()).await;
        }
    }

    async fn gather(&self, request: ClusterRequest) -> Vec<(String, Value)> {
        let client = self.presence.link().0;
        let expected = self.presence.others_alive() + 1;
        let inbox = client.new_inbox();
        let Ok(mut answers) = client.subscribe(inbox.clone()).await else {
            return Vec::new();
        };
        let Ok(payload) = serde_json::to_vec(&request) else {
            return Vec::new();
        };
        if client
            .publish_with_reply(self.subject(), inbox, payload.into())
            .await
            .is_err()
        {
            return Vec::new();
        }
        let mut gathered = Vec::new();
        let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
        while gathered.len() < expected {
            let Ok(Some(message)) = tokio::time::timeout_at(deadline, answers.next()).await else {
                break;
            };
            if let Ok(mut body) = serde_json::from_slice::<Value>(&message.payload)
                && let Some(relay) = body["relay"].as_str().map(str::to_owned)
            {
                gathered.push((relay, body["answer"].take()));
            }
        }
        gathered
    }
}

impl ClusterSessions for NatsSessions {
    fn ask(&self, request: ClusterRequest) -> BoxFuture<'_, Vec<(String, Value)>> {
        Box::pin(self.gather(request))
    }
}
