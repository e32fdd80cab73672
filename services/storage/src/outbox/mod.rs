//! The transactional outbox: events stored with the state change that produced them, and the
//! relay that publishes them to JetStream.
//!
//! A command enqueues its events ([`Tx::enqueue`](crate::Tx::enqueue)); the writer stores them in
//! the `outbox` table in the same commit as the command's changes, then hands them to the relay
//! in memory ([`feed`]). The relay publishes them in position order and records how far it got
//! (one row, `outbox_relay`), instead of marking each row. The table is what the relay reads
//! when it starts, after an outage, when the feed was full, and for events committed by another
//! process on the same database. See [`relay`] for the order and lease rules.

use govbus_bus::OutgoingEvent;
use sqlx::Row as _;

use crate::database::Database;
use crate::error::DbError;
use crate::postgres::PostgresConnection;

pub(crate) mod feed;
pub mod lease;
pub mod relay;
mod source;

pub use relay::{OutboxRelay, RelayHandle, RelaySettings};

use feed::Committed;

/// Events stored but not yet published (nor refused for good).
pub async fn pending_count(db: &Database) -> Result<i64, DbError> {
    let mut sql = db.read().await?;
    let (count,): (i64,) = sql
        .query_one(
            "SELECT COUNT(*) FROM outbox
             WHERE failed_at IS NULL AND position > COALESCE(
                 (SELECT published_position FROM outbox_relay WHERE name = 'outbox'), 0)",
            &[],
        )
        .await?;
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
    let mut sql = db.read().await?;
    let rows: Vec<(String, String, Option<String>)> = sql
        .query_all(
            "SELECT event_id, subject, last_error FROM outbox
             WHERE failed_at IS NOT NULL ORDER BY position",
            &[],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(event_id, subject, reason)| FailedEvent {
            event_id,
            subject,
            reason: reason.unwrap_or_default(),
        })
        .collect())
}

/// Up to `limit` unpublished rows from `from` (inclusive) to `before` (exclusive), in order.
pub(crate) async fn rows_between(
    db: &Database,
    from: i64,
    before: i64,
    limit: usize,
) -> Result<Vec<Committed>, DbError> {
    let mut sql = db.read().await?;
    let rows: Vec<(i64, String, String, Vec<u8>)> = sql
        .query_all(
            "SELECT position, subject, headers, payload FROM outbox
             WHERE position >= $1 AND position < $2 AND failed_at IS NULL
             ORDER BY position LIMIT $3",
            &[
                from.into(),
                before.into(),
                i64::try_from(limit).unwrap_or(i64::MAX).into(),
            ],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|(position, subject, headers, payload)| Committed {
            position,
            event: OutgoingEvent::from_stored(subject, headers, payload),
        })
        .collect())
}

/// Lock taken before a group's outbox rows are inserted, held until the group commits: outbox
/// positions then become visible in increasing order, also across processes, so the relay's
/// published position can be a single number. Keyed by schema, so services sharing a database
/// in different schemas do not wait for each other.
const POSTGRES_OUTBOX_LOCK: &str =
    "SELECT pg_advisory_xact_lock(7243020, hashtext(current_schema()))";

/// Inserts a group's events on PostgreSQL in one statement, in the order given; returns them
/// with their positions.
pub(crate) async fn postgres_rows(
    connection: &mut PostgresConnection,
    events: Vec<OutgoingEvent>,
) -> Result<Vec<Committed>, DbError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    connection.execute_static(POSTGRES_OUTBOX_LOCK).await?;
    let ids: Vec<&str> = events.iter().map(OutgoingEvent::id).collect();
    let subjects: Vec<&str> = events.iter().map(OutgoingEvent::subject).collect();
    let headers: Vec<&str> = events.iter().map(OutgoingEvent::header_lines).collect();
    let payloads: Vec<&[u8]> = events
        .iter()
        .map(|event| event.payload().as_ref())
        .collect();
    let rows = sqlx::query(
        "INSERT INTO outbox (event_id, subject, headers, payload, created_at)
         SELECT id, subject, headers, payload, $5
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[])
             WITH ORDINALITY AS event(id, subject, headers, payload, n)
         ORDER BY n
         RETURNING position",
    )
    .bind(&ids)
    .bind(&subjects)
    .bind(&headers)
    .bind(&payloads)
    .bind(crate::time::now_micros())
    .fetch_all(connection.raw())
    .await
    .map_err(|error| DbError::postgres("storing events in the outbox", error))?;
    let mut positions = Vec::with_capacity(rows.len());
    for row in &rows {
        positions.push(
            row.try_get::<i64, _>(0)
                .map_err(|error| DbError::postgres("reading outbox positions", error))?,
        );
    }
    // Rows are inserted in the events' order (ORDER BY n), each drawing the next position, so
    // the k-th smallest position is the k-th event's, whatever order RETURNING lists them in.
    positions.sort_unstable();
    if positions.len() != events.len() {
        return Err(DbError::new(
            crate::DbErrorKind::Query,
            "storing events in the outbox",
            format!(
                "{} rows stored for {} events",
                positions.len(),
                events.len()
            ),
        ));
    }
    Ok(positions
        .into_iter()
        .zip(events)
        .map(|(position, event)| Committed { position, event })
        .collect())
}
