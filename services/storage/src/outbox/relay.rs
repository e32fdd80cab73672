//! The outbox relay: publishes committed events to JetStream, in order, once.
//!
//! ```text
//!  writer ── COMMIT ──► feed (memory) ──┐
//!  outbox table ───────────────────────►├─► relay (lease holder only) ──► JetStream
//!    (start, outage, full feed,          │      one event per aggregate in flight
//!     other processes' commits)          │      progress: one row, every 100 ms
//! ```
//!
//! **Order.** Events are published in outbox position order, many acknowledgements in flight
//! at once, but never two of the same aggregate (CloudEvents `subject`): an event waits until
//! the one before it for the same aggregate is acknowledged. So a retried event can never be
//! stored after a later event of its aggregate.
//!
//! **Once.** Progress is one number, the position up to which everything is stored (plus the
//! stream sequence of that event). A relay taking over (at start, after another process died)
//! first reads the message ids stored in the stream after that sequence and skips those events,
//! so events acknowledged just before a crash are not stored twice even after JetStream's
//! duplicate window; within the window, JetStream drops a re-sent event by its `Nats-Msg-Id`
//! anyway.
//!
//! **One relay.** Of the processes sharing an outbox, only the holder of its [`Lease`]
//! publishes. The others' commits wait in the table, where the holder finds them within its
//! polling interval.

use std::collections::HashSet;
use std::hash::{BuildHasher as _, RandomState};
use std::pin::Pin;
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use govbus_bus::{
    Backoff, FailedPublish, OutgoingEvent, PublishError, PublishErrorKind, PublishReceipt,
    Publisher,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::database::Database;
use crate::error::DbError;
use crate::outbox::lease::{Lease, Progress};
use crate::outbox::source::Source;
use crate::time::now_micros;

/// Tuning of the relay.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Rows read from the table at a time.
    pub batch_size: usize,
    /// How often an idle holder looks in the table for events committed by other processes,
    /// and how often the others try to take the lease.
    pub poll_interval: Duration,
    /// Delays after JetStream stopped acknowledging.
    pub backoff: Backoff,
    /// How long a taken or renewed lease lasts; the holder renews it every third of that.
    pub lease: Duration,
    /// How often progress is recorded while publishing.
    pub record_every: Duration,
    /// Most stream messages looked at when taking over, to skip what is already stored.
    pub takeover_scan: usize,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 512,
            poll_interval: Duration::from_secs(1),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
            lease: Duration::from_secs(6),
            record_every: Duration::from_millis(100),
            takeover_scan: 10_000,
        }
    }
}

/// Why the relay could not publish.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// JetStream could not be read when taking over.
    #[error("reading the stream when taking over: {0}")]
    Stream(PublishError),
    /// Another process holds the outbox's lease.
    #[error("another process relays this outbox (it holds the lease)")]
    NotHolder,
}

/// Publishes a database's outbox with a service's publisher.
#[derive(Debug)]
pub struct OutboxRelay {
    db: Database,
    publisher: Publisher,
    settings: RelaySettings,
}

/// A running relay.
#[derive(Debug)]
pub struct RelayHandle {
    shutdown: CancellationToken,
    task: JoinHandle<()>,
    status: watch::Receiver<LeaseStatus>,
}

impl RelayHandle {
    /// Whether this process holds the outbox's lease now.
    pub fn holds_lease(&self) -> bool {
        self.status.borrow().held_now()
    }

    /// Stops publishing, waits (up to 5 s) for the acknowledgements of what was sent, records
    /// how far it got and gives up the lease. Events not yet sent stay in the outbox.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(message = "Outbox relay task failed.", %error);
        }
    }
}

/// Whether this process holds the lease, until when, and since which taking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseStatus {
    NotHeld,
    Held { until: Instant, epoch: u64 },
}

impl LeaseStatus {
    fn held_now(&self) -> bool {
        matches!(self, Self::Held { until, .. } if Instant::now() < *until)
    }

    fn held_in(&self, epoch: u64) -> bool {
        matches!(self, Self::Held { until, epoch: held } if *held == epoch && Instant::now() < *until)
    }
}

/// Why publishing stopped.
enum Stop {
    Shutdown,
    LeaseLost,
    Drained,
    /// JetStream did not acknowledge even after the publisher's retries.
    Unacknowledged,
}

/// What an event's acknowledgement turned out to be.
enum Ack {
    /// Already in the stream (seen when taking over, or acknowledged before a rewind).
    AlreadyStored,
    Attempt(Result<PublishReceipt, FailedPublish>),
}

type AckFuture = Pin<Box<dyn Future<Output = (i64, Option<u64>, Ack)> + Send>>;

/// How long a stopping relay waits for acknowledgements of what it sent.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl OutboxRelay {
    /// A relay of `db`'s outbox, publishing with `publisher`.
    pub fn new(db: Database, publisher: Publisher, settings: RelaySettings) -> Self {
        Self {
            db,
            publisher,
            settings,
        }
    }

    /// Starts relaying in the background: takes the lease when it can, publishes while it
    /// holds it.
    pub fn spawn(self) -> RelayHandle {
        let shutdown = CancellationToken::new();
        let lease = Lease::new(self.db.clone(), self.settings.lease);
        let (status, keeper_stop, keeper) = self.keep(&lease);
        let handle_status = status.clone();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            self.run(&lease, status, &stop).await;
            keeper_stop.cancel();
            if let Err(error) = keeper.await {
                tracing::error!(message = "Outbox lease task failed.", %error);
            }
        });
        RelayHandle {
            shutdown,
            task,
            status: handle_status,
        }
    }

    /// Publishes everything pending now, holding the lease meanwhile; returns how many events
    /// were published. For tools and tests; a service runs [`spawn`](Self::spawn).
    pub async fn relay_pending(&self) -> Result<usize, RelayError> {
        let lease = Lease::new(self.db.clone(), self.settings.lease);
        if !lease.acquire().await? {
            return Err(RelayError::NotHolder);
        }
        let (mut status, keeper_stop, keeper) = self.keep(&lease);
        let outcome = async {
            let epoch = wait_until_held(&mut status, &keeper_stop).await;
            let never = CancellationToken::new();
            let mut published = 0;
            if let Some(epoch) = epoch {
                self.db.feed().set_live(true);
                let result = self
                    .publish_while_held(&lease, &mut status, epoch, &never, true, &mut published)
                    .await;
                self.db.feed().set_live(false);
                result?;
            }
            Ok(published)
        }
        .await;
        keeper_stop.cancel();
        let _ = keeper.await;
        outcome
    }

    /// Starts keeping `lease`: its status, the token that stops the keeper, the keeper's task.
    fn keep(
        &self,
        lease: &Lease,
    ) -> (
        watch::Receiver<LeaseStatus>,
        CancellationToken,
        JoinHandle<()>,
    ) {
        let (status_sender, status) = watch::channel(LeaseStatus::NotHeld);
        let stop = CancellationToken::new();
        let keeper = tokio::spawn(keep_lease(
            lease.clone(),
            status_sender,
            self.settings.poll_interval,
            stop.clone(),
        ));
        (status, stop, keeper)
    }

    async fn run(
        &self,
        lease: &Lease,
        mut status: watch::Receiver<LeaseStatus>,
        shutdown: &CancellationToken,
    ) {
        let mut failures: u32 = 0;
        let mut published = 0;
        loop {
            let Some(epoch) = wait_until_held(&mut status, shutdown).await else {
                break;
            };
            tracing::info!(
                message = "This process relays the outbox.",
                service = self.publisher.service(),
                holder = lease.holder(),
            );
            self.db.feed().set_live(true);
            let outcome = self
                .publish_while_held(lease, &mut status, epoch, shutdown, false, &mut published)
                .await;
            self.db.feed().set_live(false);
            let pause = match outcome {
                Ok(Stop::Shutdown | Stop::Drained) => break,
                Ok(Stop::LeaseLost) => {
                    tracing::warn!(
                        message = "Outbox lease lost; another process may relay the outbox.",
                        service = self.publisher.service(),
                    );
                    failures = 0;
                    continue;
                }
                Ok(Stop::Unacknowledged) => {
                    failures += 1;
                    self.settings.backoff.delay(failures - 1)
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(message = "Outbox relay cannot read the outbox or the stream; will retry.", %error);
                    self.settings.backoff.delay(failures - 1)
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Publishes while this process holds the lease taken at `epoch`.
    #[allow(clippy::too_many_lines)]
    async fn publish_while_held(
        &self,
        lease: &Lease,
        status: &mut watch::Receiver<LeaseStatus>,
        epoch: u64,
        shutdown: &CancellationToken,
        drain: bool,
        published: &mut usize,
    ) -> Result<Stop, RelayError> {
        let start = lease.progress().await?;
        let already = self
            .publisher
            .stored_ids_after(
                u64::try_from(start.stream_sequence).unwrap_or(0),
                self.settings.takeover_scan,
            )
            .await
            .map_err(RelayError::Stream)?;
        let mut progress = Tracker::new(start, already);
        let mut source = Source::new(
            self.db.clone(),
            start.published_position + 1,
            self.settings.batch_size,
        );
        // Leaves room on the connection for a retry beside the pipeline.
        let window = self
            .publisher
            .max_in_flight()
            .saturating_sub(2)
            .clamp(1, 1024);
        let mut acks: FuturesOrdered<AckFuture> = FuturesOrdered::new();
        let mut in_flight: HashSet<u64> = HashSet::new();
        let hasher = RandomState::new();
        let mut recording: Option<JoinHandle<()>> = None;
        let mut last_recorded = Instant::now();
        let mut last_polled = Instant::now();
        let mut unacknowledged = false;
        let depth = metrics::gauge!(
            "govbus_outbox_pending",
            "service" => self.publisher.service().to_owned(),
        );
        let mut depth_measured = Instant::now();

        let stop = loop {
            if shutdown.is_cancelled() {
                break Stop::Shutdown;
            }
            if !status.borrow().held_in(epoch) {
                break Stop::LeaseLost;
            }
            // Hand events to the connection while the window has room.
            while acks.len() < window && !unacknowledged {
                let Some(next) = source.next().await? else {
                    break;
                };
                if progress.already_stored(next.event.id()) {
                    acks.push_back(Box::pin(std::future::ready((
                        next.position,
                        None,
                        Ack::AlreadyStored,
                    ))));
                    continue;
                }
                let aggregate = aggregate_of(&next.event, &hasher);
                if let Some(aggregate) = aggregate
                    && in_flight.contains(&aggregate)
                {
                    source.put_back(next);
                    break;
                }
                if !status.borrow().held_in(epoch) {
                    source.put_back(next);
                    break;
                }
                if let Some(aggregate) = aggregate {
                    in_flight.insert(aggregate);
                }
                let position = next.position;
                let pending = self.publisher.start(next.event).await;
                acks.push_back(Box::pin(async move {
                    (
                        position,
                        aggregate,
                        Ack::Attempt(pending.first_attempt().await),
                    )
                }));
            }

            if acks.is_empty() {
                if unacknowledged {
                    break Stop::Unacknowledged;
                }
                self.record(lease, &mut progress, &mut recording).await;
                if drain {
                    break Stop::Drained;
                }
                if depth_measured.elapsed() >= Duration::from_secs(1) {
                    depth_measured = Instant::now();
                    depth.set(0.0);
                }
                let poll_in = self
                    .settings
                    .poll_interval
                    .saturating_sub(last_polled.elapsed());
                tokio::select! {
                    () = shutdown.cancelled() => break Stop::Shutdown,
                    () = self.db.feed().arrived() => {}
                    changed = status.changed() => {
                        if changed.is_err() {
                            break Stop::LeaseLost;
                        }
                    }
                    () = tokio::time::sleep(poll_in) => {
                        last_polled = Instant::now();
                        source.poll_table();
                    }
                }
                continue;
            }

            let Some((position, aggregate, ack)) = acks.next().await else {
                continue;
            };
            let outcome = match ack {
                Ack::AlreadyStored => Ok(None),
                Ack::Attempt(Ok(receipt)) => Ok(Some(receipt)),
                // Once JetStream is known to be unreachable, the rest are only awaited.
                Ack::Attempt(Err(failed)) if unacknowledged => Err(failed.into_error()),
                Ack::Attempt(Err(failed)) => {
                    tokio::select! {
                        outcome = failed.retry() => outcome.map(Some),
                        () = lease_runs_out(status, epoch) => {
                            break Stop::LeaseLost;
                        }
                        () = shutdown.cancelled() => break Stop::Shutdown,
                    }
                }
            };
            if let Some(aggregate) = aggregate {
                in_flight.remove(&aggregate);
            }
            match outcome {
                // After an unacknowledged event, later ones are not settled: the next round
                // starts from the first unacknowledged and skips what the stream holds.
                Ok(_) if unacknowledged => {}
                Ok(receipt) => {
                    progress.settled(position, receipt.as_ref().map(|receipt| receipt.sequence));
                    if receipt.is_some_and(|receipt| !receipt.duplicate) {
                        *published += 1;
                    }
                }
                Err(error)
                    if matches!(
                        error.kind(),
                        PublishErrorKind::TooLarge
                            | PublishErrorKind::Rejected
                            | PublishErrorKind::InvalidEvent
                    ) =>
                {
                    tracing::error!(
                        message = "Event refused by JetStream; kept in the outbox as failed.",
                        outbox_position = position,
                        %error,
                    );
                    mark_failed(&self.db, position, &error.to_string()).await?;
                    if !unacknowledged {
                        progress.settled(position, None);
                    }
                }
                Err(error) => {
                    if !unacknowledged {
                        tracing::warn!(
                            message = "Outbox event not acknowledged; will retry.",
                            outbox_position = position,
                            %error,
                        );
                        unacknowledged = true;
                    }
                }
            }
            if last_recorded.elapsed() >= self.settings.record_every {
                last_recorded = Instant::now();
                self.record(lease, &mut progress, &mut recording).await;
            }
            if depth_measured.elapsed() >= Duration::from_secs(1) {
                depth_measured = Instant::now();
                if let Ok(pending) = crate::outbox::pending_count(&self.db).await {
                    depth.set(pending as f64);
                }
            }
        };

        // What was sent is awaited (briefly) so that its progress is recorded.
        if !acks.is_empty() && !matches!(stop, Stop::LeaseLost) {
            let settle = async {
                while let Some((position, _, ack)) = acks.next().await {
                    match ack {
                        Ack::AlreadyStored => progress.settled(position, None),
                        Ack::Attempt(Ok(receipt)) if !unacknowledged => {
                            progress.settled(position, Some(receipt.sequence));
                        }
                        Ack::Attempt(_) => unacknowledged = true,
                    }
                }
            };
            if tokio::time::timeout(SHUTDOWN_GRACE, settle).await.is_err() {
                tracing::warn!(
                    message = "Outbox relay stopped before every acknowledgement arrived; those events will be sent again."
                );
            }
        }
        if let Some(recording) = recording.take() {
            let _ = recording.await;
        }
        if status.borrow().held_in(epoch) {
            self.record(lease, &mut progress, &mut recording).await;
            if let Some(recording) = recording.take() {
                let _ = recording.await;
            }
        }
        Ok(stop)
    }

    /// Records progress in the background, one recording at a time.
    async fn record(
        &self,
        lease: &Lease,
        progress: &mut Tracker,
        recording: &mut Option<JoinHandle<()>>,
    ) {
        let Some(update) = progress.unrecorded() else {
            return;
        };
        if recording.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        let lease = lease.clone();
        let task = tokio::spawn(async move {
            match lease.record(update).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        message = "Outbox progress not recorded: the lease is held elsewhere."
                    );
                }
                Err(error) => {
                    tracing::warn!(message = "Outbox progress not recorded; will retry.", %error);
                }
            }
        });
        progress.recorded = update;
        *recording = Some(task);
    }
}

/// The lease holder's view of how far the outbox is published.
#[derive(Debug)]
struct Tracker {
    /// Every position up to this one is settled (stored, or failed for good).
    position: i64,
    sequence: i64,
    recorded: Progress,
    /// Ids found in the stream after the recorded sequence when taking over.
    stored_ids: HashSet<String>,
}

impl Tracker {
    fn new(start: Progress, stored_ids: HashSet<String>) -> Self {
        Self {
            position: start.published_position,
            sequence: start.stream_sequence,
            recorded: start,
            stored_ids,
        }
    }

    fn already_stored(&mut self, id: &str) -> bool {
        !self.stored_ids.is_empty() && self.stored_ids.remove(id)
    }

    fn settled(&mut self, position: i64, sequence: Option<u64>) {
        self.position = self.position.max(position);
        if let Some(sequence) = sequence {
            self.sequence = self
                .sequence
                .max(i64::try_from(sequence).unwrap_or(i64::MAX));
        }
    }

    fn unrecorded(&self) -> Option<Progress> {
        (self.recorded.published_position < self.position).then_some(Progress {
            published_position: self.position,
            stream_sequence: self.sequence,
        })
    }
}

/// A hash of the event's aggregate (its CloudEvents subject), if it names one. Two aggregates
/// sharing a hash only wait for each other.
fn aggregate_of(event: &OutgoingEvent, hasher: &RandomState) -> Option<u64> {
    event
        .header(govbus_bus::envelope::headers::SUBJECT)
        .map(|subject| hasher.hash_one(subject))
}

async fn mark_failed(db: &Database, position: i64, reason: &str) -> Result<(), DbError> {
    let reason = reason.to_owned();
    db.write(async move |tx| {
        tx.execute(
            "UPDATE outbox SET failed_at = $1, last_error = $2 WHERE position = $3",
            &[now_micros().into(), reason.as_str().into(), position.into()],
        )
        .await
        .map(|_| ())
    })
    .await
}

/// Waits until this process holds the lease; returns the taking's epoch, or `None` at shutdown.
async fn wait_until_held(
    status: &mut watch::Receiver<LeaseStatus>,
    shutdown: &CancellationToken,
) -> Option<u64> {
    loop {
        let current = *status.borrow_and_update();
        if let LeaseStatus::Held { epoch, .. } = current
            && current.held_in(epoch)
        {
            return Some(epoch);
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            changed = status.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
        }
    }
}

/// Resolves when the lease taken at `epoch` is no longer held.
async fn lease_runs_out(status: &mut watch::Receiver<LeaseStatus>, epoch: u64) {
    loop {
        let until = match *status.borrow_and_update() {
            LeaseStatus::Held { until, epoch: held } if held == epoch => until,
            _ => return,
        };
        tokio::select! {
            () = tokio::time::sleep_until(until) => return,
            changed = status.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Takes the lease when it can and renews it every third of its duration; reports the status.
/// Releases it at the end.
async fn keep_lease(
    lease: Lease,
    status: watch::Sender<LeaseStatus>,
    poll_interval: Duration,
    stop: CancellationToken,
) {
    // A holder stops a margin before its lease runs out, so that nobody else can have taken it.
    let duration = lease.duration();
    let margin = (duration / 4).min(Duration::from_secs(1));
    let mut epoch = 0;
    let mut held = false;
    loop {
        let asked = Instant::now();
        match lease.acquire().await {
            Ok(true) => {
                if !held {
                    epoch += 1;
                    held = true;
                }
                status.send_replace(LeaseStatus::Held {
                    until: asked + duration.saturating_sub(margin),
                    epoch,
                });
            }
            Ok(false) => {
                held = false;
                status.send_replace(LeaseStatus::NotHeld);
            }
            // The status stands; a held lease simply runs out if renewals keep failing.
            Err(error) => {
                tracing::warn!(message = "Cannot take or renew the outbox lease.", %error)
            }
        }
        let pause = if held { duration / 3 } else { poll_interval };
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
        }
    }
    if held {
        status.send_replace(LeaseStatus::NotHeld);
        if let Err(error) = lease.release().await {
            tracing::warn!(message = "Cannot give up the outbox lease; it runs out by itself.", %error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A holder that dies is replaced once its lease runs out and another process next tries:
    /// within ten seconds with the defaults (the fault suite measures it: `relay_lease`).
    #[test]
    fn a_dead_holder_is_replaced_within_ten_seconds() {
        let settings = RelaySettings::default();
        assert!(settings.lease + settings.poll_interval <= Duration::from_secs(10));
        // A holder stops publishing before anyone may take over.
        let margin = (settings.lease / 4).min(Duration::from_secs(1));
        assert!(!margin.is_zero());
    }
}
