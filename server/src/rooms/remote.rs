//! Cluster mode: a loaded room follows its document's log for entries other relays append,
//! and takes them in as [`RoomCommand::Remote`]: already durable, so applied and broadcast
//! to this relay's connections without being stored again. It follows the other relays'
//! presence too ([`RoomCommand::RemotePresence`]).

use futures_util::StreamExt;
use tokio::task::AbortHandle;

use super::RoomCommand;
use super::inbox::InboxSender;
use crate::storage::Following;

/// The task feeding a room what other relays append; stopped when the room drops it.
pub(super) struct Follower(AbortHandle);

impl Drop for Follower {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts feeding `following` into `inbox`.
pub(super) fn start(following: Following, inbox: InboxSender<RoomCommand>) -> Follower {
    Follower(tokio::spawn(forward(following, inbox)).abort_handle())
}

/// Starts feeding another relays' presence `feed` into `inbox`.
pub(super) fn start_presence(
    mut feed: crate::presence::PresenceFeed,
    inbox: InboxSender<RoomCommand>,
) -> Follower {
    Follower(
        tokio::spawn(async move {
            while let Some(event) = feed.next().await {
                if inbox
                    .send(RoomCommand::RemotePresence(event))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
        .abort_handle(),
    )
}

async fn forward(mut following: Following, inbox: InboxSender<RoomCommand>) {
    while let Some(entry) = following.next().await {
        let failed = entry.is_err();
        let command = RoomCommand::Remote(entry.map(|e| e.update).map_err(|e| e.to_string()));
        // After a failure the room reloads: nothing more to follow from here.
        if inbox.send(command).await.is_err() || failed {
            return;
        }
    }
}
