//! Storing a group's events in the `outbox` table, as the writer does in the group's commit.

use govbus_bus::OutgoingEvent;
use sqlx::Row as _;

use super::feed::Committed;
use crate::error::{DbError, DbErrorKind};
use crate::postgres::PostgresConnection;

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
            DbErrorKind::Query,
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
