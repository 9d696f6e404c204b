//! An append on its way to durable storage.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::future::BoxFuture;

use super::StoreError;

/// A write the engine has accepted; resolves once it is durable (by the engine's own
/// definition, stated on its type), or to the error that stopped it. Until then nobody may be
/// shown it.
pub struct Committing(BoxFuture<'static, Result<(), StoreError>>);

impl Committing {
    /// A write that is durable once `done` resolves.
    pub fn new(done: impl Future<Output = Result<(), StoreError>> + Send + 'static) -> Committing {
        Committing(Box::pin(done))
    }
}

impl std::fmt::Debug for Committing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Committing")
    }
}

impl Future for Committing {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx)
    }
}
