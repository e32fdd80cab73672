//! A round of work repeated at an interval until stopped: deadline watchers and the like.
//!
//! A round that fails is logged and tried again at the next interval; stopping waits for the
//! round in progress.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A running periodic task.
#[derive(Debug)]
pub struct PeriodicTask {
    what: &'static str,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl PeriodicTask {
    /// Runs `round` now and then every `interval`; `what` names it in the log.
    pub fn spawn<F, Fut, E>(what: &'static str, interval: Duration, round: F) -> Self
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send,
        E: std::fmt::Display,
    {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Err(error) = round().await {
                    tracing::warn!(message = "A periodic round failed; will retry.", task = what, %error);
                }
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(interval) => {}
                }
            }
        });
        Self { what, stop, task }
    }

    /// Stops after the round in progress.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(message = "A periodic task failed.", task = self.what, %error);
        }
    }
}
