//! The idempotent inbox: a consumer records each event id it processed in the same commit as the
//! state change, so a redelivered event changes nothing.

use std::collections::HashSet;
use std::fmt::Write as _;

use govbus_bus::HandleError;

use crate::error::DbError;
use crate::sql::Sql;
use crate::statement::Statement;
use crate::time::now_micros;
use crate::value::Value;

/// Records that `consumer` processed `event_id`. Returns false when it already had: the caller
/// must then change nothing.
pub async fn claim(sql: &mut Sql<'_>, consumer: &str, event_id: &str) -> Result<bool, DbError> {
    let changed = sql
        .execute(
            "INSERT INTO inbox (consumer, event_id, processed_at) VALUES ($1, $2, $3)
             ON CONFLICT (consumer, event_id) DO NOTHING",
            &[consumer.into(), event_id.into(), now_micros().into()],
        )
        .await?;
    Ok(changed == 1)
}

/// Events recorded by one statement (two fixed parameters plus one per event).
const CLAIM_CHUNK: usize = 500;

/// Records that `consumer` processed each of `event_ids`, in one statement per 500. Returns,
/// for each, whether this is the first time (an id already recorded, or repeated earlier in
/// `event_ids`, is false): the caller must change nothing for those.
pub async fn claim_all(
    sql: &mut Sql<'_>,
    consumer: &str,
    event_ids: &[&str],
) -> Result<Vec<bool>, DbError> {
    let mut inserted = HashSet::with_capacity(event_ids.len());
    let now = now_micros();
    for chunk in event_ids.chunks(CLAIM_CHUNK) {
        let mut text = String::from("INSERT INTO inbox (consumer, event_id, processed_at) VALUES ");
        for index in 0..chunk.len() {
            let separator = if index == 0 { "" } else { ", " };
            let _ = write!(text, "{separator}($1, ${}, $2)", index + 3);
        }
        text.push_str(" ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id");
        let mut params: Vec<Value<'_>> = Vec::with_capacity(chunk.len() + 2);
        params.push(consumer.into());
        params.push(now.into());
        params.extend(chunk.iter().map(|id| Value::Text(id)));
        // Only placeholders are generated; every value is bound.
        let rows: Vec<(String,)> = sql.query_all(Statement::generated(text), &params).await?;
        inserted.extend(rows.into_iter().map(|(id,)| id));
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
