//! Counting calls in memory and reporting the counts as events at an interval: how a service
//! (or the gateway) makes its use by others evidence without an event per call.
//!
//! Counting is an in-memory increment on the call path; the report is one outbox transaction per
//! interval, not a write per call. Counts gathered since the last report are lost if the process
//! is killed; a graceful stop reports them. A report that cannot be written is kept and tried
//! again with the next one.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use govbus_bus::OutgoingEvent;
use govbus_storage::{Database, DbError, DbErrorKind};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Counts per key (a caller and a method, say) since the last report.
#[derive(Debug)]
pub struct CallCounter<K> {
    counts: Arc<Mutex<BTreeMap<K, u64>>>,
}

impl<K> Clone for CallCounter<K> {
    fn clone(&self) -> Self {
        Self {
            counts: Arc::clone(&self.counts),
        }
    }
}

impl<K> Default for CallCounter<K> {
    fn default() -> Self {
        Self {
            counts: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }
}

impl<K: Ord> CallCounter<K> {
    /// Counts one call of `key`.
    pub fn count(&self, key: K) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(key).or_default() += 1;
        }
    }

    fn take(&self) -> BTreeMap<K, u64> {
        self.counts
            .lock()
            .map(|mut counts| std::mem::take(&mut *counts))
            .unwrap_or_default()
    }

    fn put_back(&self, counts: BTreeMap<K, u64>) {
        if let Ok(mut current) = self.counts.lock() {
            for (key, calls) in counts {
                *current.entry(key).or_default() += calls;
            }
        }
    }
}

/// One key's count over a period, to encode as an event.
#[derive(Debug, Clone, Copy)]
pub struct Counted<'a, K> {
    /// What was counted.
    pub key: &'a K,
    /// How many times.
    pub calls: u64,
    /// The period's start, RFC 3339.
    pub period_start: &'a str,
    /// Its end.
    pub period_end: &'a str,
}

/// Reports the counts at an interval.
#[derive(Debug)]
pub struct CallReporter {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct Reporting<K, F> {
    counter: CallCounter<K>,
    db: Database,
    encode: F,
}

impl<K, F> Reporting<K, F>
where
    K: Ord,
    F: Fn(Counted<'_, K>) -> Result<OutgoingEvent, govbus_bus::PublishError>,
{
    async fn report(&self, period_start: OffsetDateTime) -> OffsetDateTime {
        let counts = self.counter.take();
        let period_end = OffsetDateTime::now_utc();
        if counts.is_empty() {
            return period_end;
        }
        match self.write(&counts, period_start, period_end).await {
            Ok(()) => period_end,
            Err(error) => {
                tracing::warn!(message = "Call counts not reported; will retry.", %error);
                self.counter.put_back(counts);
                period_start
            }
        }
    }

    async fn write(
        &self,
        counts: &BTreeMap<K, u64>,
        start: OffsetDateTime,
        end: OffsetDateTime,
    ) -> Result<(), DbError> {
        let format = |time: OffsetDateTime| time.format(&Rfc3339).unwrap_or_default();
        let (start, end) = (format(start), format(end));
        let mut events = Vec::with_capacity(counts.len());
        for (key, calls) in counts {
            let event = (self.encode)(Counted {
                key,
                calls: *calls,
                period_start: &start,
                period_end: &end,
            })
            .map_err(|error| {
                DbError::new(
                    DbErrorKind::Query,
                    "encoding call counts",
                    error.to_string(),
                )
            })?;
            events.push(event);
        }
        self.db
            .write(async move |tx| {
                for event in &events {
                    tx.enqueue(event.clone());
                }
                Ok(())
            })
            .await
    }
}

impl CallReporter {
    /// Reports `counter` every `interval` into `db`'s outbox, each key's count as the event
    /// `encode` makes of it, and once more at [`stop`](Self::stop).
    pub fn spawn<K, F>(counter: CallCounter<K>, db: Database, interval: Duration, encode: F) -> Self
    where
        K: Ord + Send + Sync + 'static,
        F: Fn(Counted<'_, K>) -> Result<OutgoingEvent, govbus_bus::PublishError>
            + Send
            + Sync
            + 'static,
    {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let reporting = Reporting {
            counter,
            db,
            encode,
        };
        let task = tokio::spawn(async move {
            let mut period_start = OffsetDateTime::now_utc();
            loop {
                let stopping = tokio::select! {
                    () = token.cancelled() => true,
                    () = tokio::time::sleep(interval) => false,
                };
                period_start = reporting.report(period_start).await;
                if stopping {
                    break;
                }
            }
        });
        Self { stop, task }
    }

    /// Reports what was counted and stops.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(message = "Call reporter failed.", %error);
        }
    }
}
