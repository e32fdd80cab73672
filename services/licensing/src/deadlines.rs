//! The deadline watcher: applications no one decided in time are deemed approved.
//!
//! Deadlines are stored with the applications, so they survive restarts: a watcher that starts
//! after a deadline passed deems the application approved on its first round.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::office::Office;

/// A running watcher.
#[derive(Debug)]
pub struct DeadlineWatcher {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl DeadlineWatcher {
    /// Checks for passed deadlines every `interval`.
    pub fn spawn(office: Office, interval: Duration) -> Self {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                if let Err(error) = office.deem_overdue_approved().await {
                    tracing::warn!(message = "Cannot process passed deadlines; will retry.", %error);
                }
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(interval) => {}
                }
            }
        });
        Self { stop, task }
    }

    /// Stops after the round in progress.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(message = "Deadline watcher failed.", %error);
        }
    }
}
