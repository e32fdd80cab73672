//! Counting calls from other services, reported as `identity.calls.counted.v1` at an interval.
//!
//! Counting is an in-memory increment on the call path; the report is one outbox transaction per
//! interval, not a write per call. Counts gathered since the last report are lost if the process
//! is killed; a graceful stop reports them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use govbus_bus::{Causality, Publisher};
use govbus_proto::identity::v1::CallsCounted;
use govbus_storage::{Database, DbError, DbErrorKind};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Calls counted per (caller, method).
type Counts = BTreeMap<(Arc<str>, &'static str), u64>;

/// Calls per (caller, method) since the last report.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<Counts>>,
}

impl CallCounter {
    /// Counts one call of `method` by `caller`.
    pub fn count(&self, caller: &Arc<str>, method: &'static str) {
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry((Arc::clone(caller), method)).or_default() += 1;
        }
    }

    fn take(&self) -> Counts {
        self.counts
            .lock()
            .map(|mut counts| std::mem::take(&mut *counts))
            .unwrap_or_default()
    }

    fn put_back(&self, counts: Counts) {
        if let Ok(mut current) = self.counts.lock() {
            for (key, calls) in counts {
                *current.entry(key).or_default() += calls;
            }
        }
    }
}

/// Reports the counts at an interval.
#[derive(Debug)]
pub struct CallReporter {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct Reporting {
    counter: CallCounter,
    db: Database,
    publisher: Publisher,
}

impl Reporting {
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
        counts: &Counts,
        start: OffsetDateTime,
        end: OffsetDateTime,
    ) -> Result<(), DbError> {
        let format = |time: OffsetDateTime| time.format(&Rfc3339).unwrap_or_default();
        let mut events = Vec::with_capacity(counts.len());
        for ((caller, method), calls) in counts {
            let event = CallsCounted {
                caller: caller.to_string(),
                method: (*method).to_owned(),
                calls: *calls,
                period_start: format(start),
                period_end: format(end),
            };
            events.push(
                self.publisher
                    .encode(&event, &Causality::root())
                    .map_err(|error| {
                        DbError::new(
                            DbErrorKind::Query,
                            "encoding call counts",
                            error.to_string(),
                        )
                    })?,
            );
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
    /// Reports `counter` every `interval`, and once more at [`stop`](Self::stop).
    pub fn spawn(
        counter: CallCounter,
        db: Database,
        publisher: Publisher,
        interval: Duration,
    ) -> Self {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let reporting = Reporting {
            counter,
            db,
            publisher,
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
