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

use crate::database::Database;
use crate::error::DbError;

pub(crate) mod feed;
pub mod lease;
pub mod relay;
pub(crate) mod rows;
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
