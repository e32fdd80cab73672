//! The deadline watcher: applications no one decided in time are deemed approved.
//!
//! Deadlines are stored with the applications, so they survive restarts: a watcher that starts
//! after a deadline passed deems the application approved on its first round.

use std::time::Duration;

use govbus_kit::periodic::PeriodicTask;

use crate::office::Office;

/// Checks for passed deadlines every `interval`.
pub fn watch(office: Office, interval: Duration) -> PeriodicTask {
    PeriodicTask::spawn("licensing deadlines", interval, move || {
        let office = office.clone();
        async move { office.deem_overdue_approved().await.map(|_| ()) }
    })
}
