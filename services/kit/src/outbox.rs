//! The transactional outbox and its relay.
//!
//! A command stores the events it produces in the `outbox` table in the same transaction as its
//! state change ([`enqueue`]): both commit or neither does. The [`OutboxRelay`] then sends pending
//! rows to JetStream in order, pipelined (reading, sending and marking overlap), and marks each
//! sent only after JetStream acknowledged it. If NATS is down, commands still succeed and events
//! wait in the table; they flow when NATS returns. A row sent twice (a crash between the ack and the mark) is stored once by JetStream,
//! because the event id is its `Nats-Msg-Id`.
//!
//! A row JetStream refuses for good (too large, not this service's event) is marked failed with
//! the reason and logged as an error, so it neither blocks the rows behind it nor disappears.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesOrdered;
use govbus_bus::{Backoff, OutgoingEvent, PendingPublish, PublishErrorKind, Publisher};
use sqlx::AnyConnection;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::db::{Database, DbError, now_micros};

/// Stores `event` in the outbox, inside the caller's transaction.
pub async fn enqueue(connection: &mut AnyConnection, event: &OutgoingEvent) -> Result<(), DbError> {
    let mut headers = String::new();
    for (name, value) in event.header_pairs() {
        // Header names cannot contain ':' and values cannot contain line breaks (NATS forbids both).
        let _ = writeln!(headers, "{name}:{value}");
    }
    sqlx::query(
        "INSERT INTO outbox (event_id, subject, headers, payload, created_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(event.id())
    .bind(event.subject())
    .bind(headers)
    .bind(event.payload().as_ref())
    .bind(now_micros())
    .execute(connection)
    .await
    .map_err(DbError::sql("storing an event in the outbox"))?;
    Ok(())
}

/// Events stored but not yet acknowledged by JetStream.
pub async fn pending_count(db: &Database) -> Result<i64, DbError> {
    let (count,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL")
            .fetch_one(db.pool())
            .await
            .map_err(DbError::sql("counting pending outbox rows"))?;
    Ok(count)
}

/// An event JetStream refused for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedEvent {
    /// The event id.
    pub event_id: String,
    /// Its subject.
    pub subject: String,
    /// Why it was refused.
    pub reason: String,
}

/// Events the relay gave up on, oldest first.
pub async fn failed_events(db: &Database) -> Result<Vec<FailedEvent>, DbError> {
    let rows: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT event_id, subject, last_error FROM outbox
         WHERE failed_at IS NOT NULL ORDER BY position",
    )
    .fetch_all(db.pool())
    .await
    .map_err(DbError::sql("listing failed outbox rows"))?;
    Ok(rows
        .into_iter()
        .map(|(event_id, subject, reason)| FailedEvent {
            event_id,
            subject,
            reason: reason.unwrap_or_default(),
        })
        .collect())
}

/// Tuning of the relay.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Rows read at a time; also the most events awaiting their acknowledgement in the relay's
    /// pipeline beyond the batch being read (fewer if the connection allows fewer).
    pub batch_size: i64,
    /// How often to look for rows when nobody called [`RelayHandle::wake`] (other instances,
    /// rows left by a crash).
    pub poll_interval: Duration,
    /// Delays after a round in which JetStream did not acknowledge everything.
    pub backoff: Backoff,
    /// How long sent rows are kept before they are deleted.
    pub keep_sent: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 512,
            poll_interval: Duration::from_secs(1),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
            keep_sent: Duration::from_secs(7 * 24 * 60 * 60),
        }
    }
}

/// Sends outbox rows to JetStream.
#[derive(Debug)]
pub struct OutboxRelay {
    db: Database,
    publisher: Publisher,
    settings: RelaySettings,
}

/// A running relay.
#[derive(Debug)]
pub struct RelayHandle {
    wake: Arc<Notify>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl RelayHandle {
    /// Tells the relay new rows were committed (call after each commit that enqueued events).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A cheap handle that can wake the relay from elsewhere.
    pub fn waker(&self) -> RelayWaker {
        RelayWaker(Arc::clone(&self.wake))
    }

    /// Stops reading the outbox, marks what JetStream already acknowledged (waiting up to 5 s
    /// for that), and stops. Rows not yet sent stay in the outbox.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(message = "Outbox relay task failed.", %error);
        }
    }
}

/// Wakes a relay; clone it into request handlers.
#[derive(Debug, Clone)]
pub struct RelayWaker(Arc<Notify>);

impl RelayWaker {
    /// Tells the relay new rows were committed.
    pub fn wake(&self) {
        self.0.notify_one();
    }
}

struct PendingRow {
    position: i64,
    event: OutgoingEvent,
}

/// A row whose event was handed to the connection, its acknowledgement still to come.
struct InFlight {
    position: i64,
    publish: PendingPublish,
}

/// What the marker decided about an acknowledged or refused row.
enum Settled {
    Sent { position: i64, sequence: i64 },
    Failed { position: i64, reason: String },
}

impl OutboxRelay {
    /// A relay sending `db`'s outbox with `publisher`.
    pub fn new(db: Database, publisher: Publisher, settings: RelaySettings) -> Self {
        Self {
            db,
            publisher,
            settings,
        }
    }

    /// Starts relaying in the background.
    pub fn spawn(self) -> RelayHandle {
        let wake = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(self.run(Arc::clone(&wake), shutdown.clone()));
        RelayHandle {
            wake,
            shutdown,
            task,
        }
    }

    /// Sends everything pending now; returns how many rows were marked sent. Used by the
    /// background loop, and by tools that want to drain the outbox once.
    pub async fn relay_pending(&self) -> Result<usize, DbError> {
        let never = CancellationToken::new();
        let mut sent = 0;
        loop {
            let pass = self.pass(&never).await?;
            sent += pass.sent;
            if pass.drained || pass.unacknowledged > 0 {
                return Ok(sent);
            }
        }
    }

    async fn run(self, wake: Arc<Notify>, shutdown: CancellationToken) {
        let mut failures: u32 = 0;
        let mut last_cleanup = tokio::time::Instant::now();
        let depth = metrics::gauge!(
            "govbus_outbox_pending",
            "service" => self.publisher.service().to_owned(),
        );
        let mut depth_measured = tokio::time::Instant::now();
        while !shutdown.is_cancelled() {
            let outcome = {
                let pass = self.pass(&shutdown);
                tokio::pin!(pass);
                tokio::select! {
                    outcome = &mut pass => outcome,
                    () = shutdown.cancelled() => {
                        // The pass stops reading at once; what JetStream already acknowledged
                        // is marked, unless NATS is unreachable. Rows sent but not marked are
                        // sent again at the next start (JetStream drops them within the
                        // streams' two-minute duplicate window; consumers' inboxes after it).
                        if tokio::time::timeout(SHUTDOWN_GRACE, pass).await.is_err() {
                            tracing::warn!(message = "Outbox relay stopped before marking every acknowledged event; they will be sent again.");
                        }
                        break;
                    }
                }
            };
            // An empty outbox is known to be empty; otherwise the depth is counted at most once
            // a second (a pass lasts at most about a second), so a busy relay does not spend
            // its time counting.
            if matches!(&outcome, Ok(pass) if pass.drained) {
                depth.set(0.0);
            } else if depth_measured.elapsed() >= Duration::from_secs(1) {
                depth_measured = tokio::time::Instant::now();
                if let Ok(pending) = pending_count(&self.db).await {
                    depth.set(pending as f64);
                }
            }
            let pause = match outcome {
                Ok(pass) if pass.unacknowledged > 0 => {
                    failures += 1;
                    self.settings.backoff.delay(failures - 1)
                }
                Ok(pass) if pass.drained => {
                    failures = 0;
                    self.settings.poll_interval
                }
                // A pass ends after a second or PASS_BATCHES reads even with more to send.
                Ok(_) => {
                    failures = 0;
                    continue;
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(message = "Outbox relay cannot read or update the outbox.", %error);
                    self.settings.backoff.delay(failures - 1)
                }
            };
            if last_cleanup.elapsed() > Duration::from_secs(60) {
                last_cleanup = tokio::time::Instant::now();
                if let Err(error) = self.delete_old_sent_rows().await {
                    tracing::warn!(message = "Cannot delete old outbox rows.", %error);
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One pass: sends pending rows in order until a read finds none, JetStream stops
    /// acknowledging, `stop` is cancelled, or the pass has read for a second or
    /// [`PASS_BATCHES`] batches.
    ///
    /// Reading, sending and marking overlap: the reader reads rows after the last one it read
    /// and hands each event to the connection, while the marker awaits the acknowledgements
    /// (all of those pending at once, so their timeouts run together) and takes the results in
    /// order, marking acknowledged rows sent in chunks. An event whose first attempt was not
    /// acknowledged is sent again per the publisher's retry policy; if that fails too, reading
    /// stops, the events already sent are only awaited, and everything not acknowledged stays
    /// pending. Passes are bounded because each starts again from the oldest pending row: a row
    /// that committed after rows behind it were read (PostgreSQL assigns positions before
    /// commit) is picked up by the next pass rather than after the load stops.
    async fn pass(&self, stop: &CancellationToken) -> Result<Pass, DbError> {
        let batch = usize::try_from(self.settings.batch_size.max(1)).unwrap_or(512);
        // Pending acknowledgements hold the connection's in-flight slots: the channel, the
        // marker's window and the one being sent stay below its limit, so a retry always finds
        // a free slot.
        let window = batch
            .min(self.publisher.max_in_flight().saturating_sub(2) / 2)
            .max(1);
        let (to_marker, mut from_reader) = tokio::sync::mpsc::channel::<InFlight>(window);
        let stop_reading = stop.child_token();
        let started = tokio::time::Instant::now();

        let reader = async {
            let mut after = i64::MIN;
            let mut drained = false;
            for _ in 0..PASS_BATCHES {
                if stop_reading.is_cancelled() || started.elapsed() >= PASS_DURATION {
                    break;
                }
                let rows = self.pending_rows(after).await?;
                let Some(last) = rows.last() else {
                    drained = true;
                    break;
                };
                after = last.position;
                let span = self
                    .publisher
                    .batch_span(rows[0].event.subject(), rows.len());
                let sending = async {
                    for row in rows {
                        if stop_reading.is_cancelled() {
                            return false;
                        }
                        let publish = self.publisher.start(row.event).await;
                        let in_flight = InFlight {
                            position: row.position,
                            publish,
                        };
                        if to_marker.send(in_flight).await.is_err() {
                            return false;
                        }
                    }
                    true
                };
                if !sending.instrument(span).await {
                    break;
                }
            }
            drop(to_marker);
            Ok::<bool, DbError>(drained)
        };

        let marker = async {
            let mut pass = Pass::default();
            let mut settled = Vec::with_capacity(batch);
            let mut acknowledgements = FuturesOrdered::new();
            let mut reading = true;
            loop {
                let result = tokio::select! {
                    biased;
                    Some(result) = acknowledgements.next(), if !acknowledgements.is_empty() => result,
                    in_flight = from_reader.recv(), if reading && acknowledgements.len() < window => {
                        match in_flight {
                            Some(InFlight { position, publish }) => acknowledgements
                                .push_back(async move { (position, publish.first_attempt().await) }),
                            None => reading = false,
                        }
                        continue;
                    }
                    else => break,
                };
                let (position, first_attempt) = result;
                let outcome = match first_attempt {
                    Ok(receipt) => Ok(receipt),
                    // Once JetStream is known to be unreachable, the rest are only awaited.
                    Err(failed) if stop_reading.is_cancelled() => Err(failed.into_error()),
                    Err(failed) => failed.retry().await,
                };
                match outcome {
                    Ok(receipt) => settled.push(Settled::Sent {
                        position,
                        sequence: i64::try_from(receipt.sequence).unwrap_or(i64::MAX),
                    }),
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
                        settled.push(Settled::Failed {
                            position,
                            reason: error.to_string(),
                        });
                    }
                    Err(error) => {
                        // Not acknowledged (NATS down); the row stays pending and is retried.
                        if pass.unacknowledged == 0 {
                            tracing::warn!(
                                message = "Outbox event not acknowledged; will retry.",
                                outbox_position = position,
                                %error,
                            );
                        }
                        pass.unacknowledged += 1;
                        stop_reading.cancel();
                    }
                }
                // Marking is bookkeeping (the event is already stored), so it waits for a
                // full chunk unless nothing more is in flight.
                if settled.len() >= batch
                    || (acknowledgements.is_empty()
                        && from_reader.is_empty()
                        && !settled.is_empty())
                {
                    pass.sent += self.mark(&mut settled).await?;
                }
            }
            pass.sent += self.mark(&mut settled).await?;
            Ok::<Pass, DbError>(pass)
        };

        let (read, marked) = tokio::join!(reader, marker);
        let mut pass = marked?;
        pass.drained = read? && pass.unacknowledged == 0;
        Ok(pass)
    }

    /// Up to a batch of pending rows after position `after`, in order.
    async fn pending_rows(&self, after: i64) -> Result<Vec<PendingRow>, DbError> {
        let rows: Vec<(i64, String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT position, subject, headers, payload FROM outbox
             WHERE sent_at IS NULL AND failed_at IS NULL AND position > $1
             ORDER BY position LIMIT $2",
        )
        .bind(after)
        .bind(self.settings.batch_size)
        .fetch_all(self.db.pool())
        .await
        .map_err(DbError::sql("reading pending outbox rows"))?;
        Ok(rows
            .into_iter()
            .map(|(position, subject, headers, payload)| PendingRow {
                position,
                event: OutgoingEvent::from_parts(
                    subject,
                    headers.lines().filter_map(|line| line.split_once(':')),
                    payload,
                ),
            })
            .collect())
    }

    /// Records `settled` rows in one transaction and empties it; returns the rows marked sent.
    async fn mark(&self, settled: &mut Vec<Settled>) -> Result<usize, DbError> {
        if settled.is_empty() {
            return Ok(0);
        }
        let now = now_micros();
        let mut sent = Vec::with_capacity(settled.len());
        let mut transaction = self.db.begin().await?;
        for row in settled.drain(..) {
            match row {
                Settled::Sent { position, sequence } => sent.push((position, sequence)),
                Settled::Failed { position, reason } => {
                    sqlx::query(
                        "UPDATE outbox SET failed_at = $1, last_error = $2 WHERE position = $3",
                    )
                    .bind(now)
                    .bind(reason)
                    .bind(position)
                    .execute(&mut *transaction)
                    .await
                    .map_err(DbError::sql("marking an outbox row failed"))?;
                }
            }
        }
        mark_sent(&mut transaction, now, &sent).await?;
        transaction
            .commit()
            .await
            .map_err(DbError::sql("committing outbox marks"))?;
        Ok(sent.len())
    }

    async fn delete_old_sent_rows(&self) -> Result<(), DbError> {
        let keep = i64::try_from(self.settings.keep_sent.as_micros()).unwrap_or(i64::MAX);
        let cutoff = now_micros().saturating_sub(keep);
        sqlx::query("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < $1")
            .bind(cutoff)
            .execute(self.db.pool())
            .await
            .map_err(DbError::sql("deleting old outbox rows"))?;
        Ok(())
    }
}

/// Marks `rows` (position, stream sequence, in the order sent) sent at `now`.
///
/// Events sent one after another from consecutive rows are usually stored under consecutive
/// stream sequences, so a run of such rows is marked by one statement over its range of
/// positions: a statement per row cost more than sending, and one statement binding every row
/// cost nearly as much. A run ends where positions skip (a row not read by this relay: only
/// rows it read are marked) or sequences do (another publisher's event, a duplicate).
async fn mark_sent(
    connection: &mut AnyConnection,
    now: i64,
    rows: &[(i64, i64)],
) -> Result<(), DbError> {
    let mut start = 0;
    while start < rows.len() {
        let mut end = start + 1;
        while end < rows.len()
            && rows[end].0 == rows[end - 1].0 + 1
            && rows[end].1 == rows[end - 1].1 + 1
        {
            end += 1;
        }
        let ((first_position, first_sequence), (last_position, _)) = (rows[start], rows[end - 1]);
        sqlx::query(
            "UPDATE outbox SET sent_at = $1, stream_sequence = $2 + (position - $3)
             WHERE position BETWEEN $3 AND $4",
        )
        .bind(now)
        .bind(first_sequence)
        .bind(first_position)
        .bind(last_position)
        .execute(&mut *connection)
        .await
        .map_err(DbError::sql("marking outbox rows sent"))?;
        start = end;
    }
    Ok(())
}

/// What one pass of the relay did.
#[derive(Debug, Default)]
struct Pass {
    /// Rows marked sent.
    sent: usize,
    /// Events not acknowledged even after retrying (their rows stay pending).
    unacknowledged: usize,
    /// The last read found no pending row and everything read was acknowledged.
    drained: bool,
}

/// Batches one pass reads at most before starting again from the oldest pending row.
const PASS_BATCHES: usize = 16;
/// How long one pass reads at most.
const PASS_DURATION: Duration = Duration::from_secs(1);
/// How long a stopping relay waits to mark what JetStream already acknowledged.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
