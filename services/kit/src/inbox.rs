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

/// How a database failure inside a handler should be treated by the consumer: busy, locked or
/// unreachable databases are retried; anything else is a permanent failure for that event.
pub fn handle_error(error: DbError) -> HandleError {
    if error.is_transient() {
        HandleError::transient(error)
    } else {
        HandleError::permanent(error)
    }
}
