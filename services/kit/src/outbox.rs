//! The transactional outbox and its relay.
//!
//! A command stores the events it produces in the `outbox` table in the same transaction as its
//! state change ([`enqueue`]): both commit or neither does. The [`OutboxRelay`] then sends pending
//! rows to JetStream in order, pipelined, and marks each sent only after JetStream acknowledged
//! it. If NATS is down, commands still succeed and events wait in the table; they flow when NATS
//! returns. A row sent twice (a crash between the ack and the mark) is stored once by JetStream,
//! because the event id is its `Nats-Msg-Id`.
//!
//! A row JetStream refuses for good (too large, not this service's event) is marked failed with
//! the reason and logged as an error, so it neither blocks the rows behind it nor disappears.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use govbus_bus::{Backoff, OutgoingEvent, PublishErrorKind, Publisher};
use sqlx::AnyConnection;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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
    /// Rows sent per round (pipelined).
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

    /// Finishes the round in progress and stops. Rows not yet sent stay in the outbox.
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
        let mut sent = 0;
        loop {
            let rows = self.pending_rows().await?;
            if rows.is_empty() {
                return Ok(sent);
            }
            let round = self.send_round(&rows).await?;
            sent += round.sent;
            if round.unacknowledged > 0 {
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
            let round = async {
                let rows = self.pending_rows().await?;
                if rows.is_empty() {
                    return Ok::<_, DbError>(Idle::Wait);
                }
                let round = self.send_round(&rows).await?;
                Ok(if round.unacknowledged > 0 {
                    Idle::Backoff
                } else {
                    Idle::Continue
                })
            };
            // A round stuck on an unreachable NATS is abandoned at shutdown; rows it sent but
            // did not mark are sent again later and de-duplicated by JetStream.
            let outcome = tokio::select! {
                () = shutdown.cancelled() => break,
                outcome = round => outcome,
            };
            // An empty outbox is known to be empty; otherwise the depth is counted at most once
            // a second, so a busy relay does not spend its time counting.
            if matches!(outcome, Ok(Idle::Wait)) {
                depth.set(0.0);
            } else if depth_measured.elapsed() >= Duration::from_secs(1) {
                depth_measured = tokio::time::Instant::now();
                if let Ok(pending) = pending_count(&self.db).await {
                    depth.set(pending as f64);
                }
            }
            let pause = match outcome {
                Ok(Idle::Continue) => {
                    failures = 0;
                    continue;
                }
                Ok(Idle::Wait) => {
                    failures = 0;
                    self.settings.poll_interval
                }
                Ok(Idle::Backoff) => {
                    failures += 1;
                    self.settings.backoff.delay(failures - 1)
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

    async fn pending_rows(&self) -> Result<Vec<PendingRow>, DbError> {
        let rows: Vec<(i64, String, String, Vec<u8>)> = sqlx::query_as(
            "SELECT position, subject, headers, payload FROM outbox
             WHERE sent_at IS NULL AND failed_at IS NULL
             ORDER BY position LIMIT $1",
        )
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
                    headers.lines().filter_map(|line| {
                        line.split_once(':')
                            .map(|(name, value)| (name.to_owned(), value.to_owned()))
                    }),
                    payload,
                ),
            })
            .collect())
    }

    async fn send_round(&self, rows: &[PendingRow]) -> Result<Round, DbError> {
        let events: Vec<OutgoingEvent> = rows.iter().map(|row| row.event.clone()).collect();
        let results = self.publisher.send_batch(&events).await;
        let now = now_micros();
        let mut round = Round::default();
        let mut acknowledged = Vec::with_capacity(rows.len());
        let mut transaction = self.db.begin().await?;
        for (row, result) in rows.iter().zip(results) {
            match result {
                Ok(receipt) => {
                    acknowledged.push((
                        row.position,
                        i64::try_from(receipt.sequence).unwrap_or(i64::MAX),
                    ));
                    round.sent += 1;
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
                        event_id = %row.event.id(),
                        subject = %row.event.subject(),
                        %error,
                    );
                    sqlx::query(
                        "UPDATE outbox SET failed_at = $1, last_error = $2 WHERE position = $3",
                    )
                    .bind(now)
                    .bind(error.to_string())
                    .bind(row.position)
                    .execute(&mut *transaction)
                    .await
                    .map_err(DbError::sql("marking an outbox row failed"))?;
                }
                Err(error) => {
                    // Not acknowledged (NATS down); the row stays pending and is retried.
                    if round.unacknowledged == 0 {
                        tracing::warn!(
                            message = "Outbox event not acknowledged; will retry.",
                            event_id = %row.event.id(),
                            %error,
                        );
                    }
                    round.unacknowledged += 1;
                }
            }
        }
        // One statement per chunk of rows: a statement per row made marking cost more than
        // sending.
        for chunk in acknowledged.chunks(MARK_CHUNK) {
            mark_sent(&mut transaction, now, chunk).await?;
        }
        transaction
            .commit()
            .await
            .map_err(DbError::sql("committing outbox marks"))?;
        Ok(round)
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

/// Rows marked sent by one statement (two parameters each, well inside every backend's limit).
const MARK_CHUNK: usize = 200;

/// Marks `rows` (position, stream sequence) sent at `now`.
async fn mark_sent(
    connection: &mut AnyConnection,
    now: i64,
    rows: &[(i64, i64)],
) -> Result<(), DbError> {
    let mut sql = String::from("UPDATE outbox SET sent_at = $1, stream_sequence = CASE position");
    for index in 0..rows.len() {
        let _ = write!(sql, " WHEN ${} THEN ${}", 2 + 2 * index, 3 + 2 * index);
    }
    sql.push_str(" END WHERE position IN (");
    for index in 0..rows.len() {
        let separator = if index == 0 { "" } else { ", " };
        let _ = write!(sql, "{separator}${}", 2 + 2 * index);
    }
    sql.push(')');
    // Only placeholders are generated; every value is bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
    for (position, sequence) in rows {
        query = query.bind(*position).bind(*sequence);
    }
    query
        .execute(connection)
        .await
        .map_err(DbError::sql("marking outbox rows sent"))?;
    Ok(())
}

#[derive(Debug, Default)]
struct Round {
    sent: usize,
    unacknowledged: usize,
}

enum Idle {
    Continue,
    Wait,
    Backoff,
}
