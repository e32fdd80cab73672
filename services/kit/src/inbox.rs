//! The idempotent inbox: a consumer records each event id it processed in the same transaction
//! as the state change, so a redelivered event changes nothing.
//!
//! ```text
//! let mut tx = db.begin().await?;
//! if !inbox::claim(&mut tx, "welfare-identity", &meta.envelope.id).await? {
//!     return Ok(()); // processed before: acknowledge and move on
//! }
//! // … change state …
//! tx.commit().await?;
//! ```

use std::fmt::Write as _;

use govbus_bus::HandleError;
use sqlx::AnyConnection;

use crate::db::{DbError, now_micros};

/// Records that `consumer` processed `event_id`. Returns false when it already had: the caller
/// must then change nothing.
pub async fn claim(
    connection: &mut AnyConnection,
    consumer: &str,
    event_id: &str,
) -> Result<bool, DbError> {
    let result = sqlx::query(
        "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3)
         ON CONFLICT (consumer, event_id) DO NOTHING",
    )
    .bind(consumer)
    .bind(event_id)
    .bind(now_micros())
    .execute(connection)
    .await
    .map_err(DbError::sql("recording a processed event"))?;
    Ok(result.rows_affected() == 1)
}

/// Events recorded by one statement (two fixed parameters plus one per event).
const CLAIM_CHUNK: usize = 500;

/// Records that `consumer` processed each of `event_ids`, in one statement per 500. Returns,
/// for each, whether this is the first time (an id already recorded, or repeated earlier in
/// `event_ids`, is false): the caller must change nothing for those.
pub async fn claim_all(
    connection: &mut AnyConnection,
    consumer: &str,
    event_ids: &[&str],
) -> Result<Vec<bool>, DbError> {
    let mut inserted = std::collections::HashSet::with_capacity(event_ids.len());
    for chunk in event_ids.chunks(CLAIM_CHUNK) {
        let mut sql = String::from("INSERT INTO inbox (consumer, event_id, processed_at) VALUES ");
        for index in 0..chunk.len() {
            let separator = if index == 0 { "" } else { ", " };
            let _ = write!(sql, "{separator}($1, ${}, $2)", index + 3);
        }
        sql.push_str(" ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id");
        // Only placeholders are generated; every value is bound.
        let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql))
            .bind(consumer)
            .bind(now_micros());
        for id in chunk {
            query = query.bind(*id);
        }
        inserted.extend(
            query
                .fetch_all(&mut *connection)
                .await
                .map_err(DbError::sql("recording processed events"))?,
        );
    }
    // An id delivered twice in one batch is fresh only the first time.
    Ok(event_ids.iter().map(|id| inserted.remove(*id)).collect())
}

/// How a database failure inside a handler should be treated by the consumer: busy, locked or
/// unreachable databases are retried; anything else is a permanent failure for that event.
pub fn handle_error(error: DbError) -> HandleError {
    if error.is_transient() {
        HandleError::transient(error)
    } else {
        HandleError::permanent(error)
    }
}
