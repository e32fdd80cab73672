//! Running a command or an event handler as one transaction with its events.

use govbus_bus::{EventMeta, HandleError};
use prost::Message;
use sqlx::AnyConnection;

use crate::db::{Database, DbError};
use crate::idempotency::{IdempotencyError, IdempotentRequest};
use crate::inbox;
use crate::outbox::RelayWaker;

/// Runs `work` in one transaction, honouring the client's idempotency key: a response stored for
/// the key is returned as it was, without running `work`; otherwise `work`'s response is stored
/// with its changes. After the commit the outbox relay is woken for the events `work` enqueued.
pub async fn run_command<R, E>(
    db: &Database,
    relay: &RelayWaker,
    idempotency: Option<IdempotentRequest<'_>>,
    work: impl AsyncFnOnce(&mut AnyConnection) -> Result<R, E>,
) -> Result<R, E>
where
    R: Message + Default,
    E: From<IdempotencyError> + From<DbError>,
{
    let mut transaction = db.begin().await?;
    if let Some(request) = &idempotency
        && let Some(stored) = request.stored_response(&mut transaction).await?
    {
        return decode(&stored);
    }
    let response = work(&mut transaction).await?;
    if let Some(request) = &idempotency {
        request
            .store_response(&mut transaction, &response.encode_to_vec())
            .await?;
    }
    transaction
        .commit()
        .await
        .map_err(DbError::sql("committing a command"))?;
    relay.wake();
    Ok(response)
}

/// The response already stored for the client's idempotency key, read outside any transaction:
/// a command that calls another service first checks this, so a retry does not repeat the call.
pub async fn stored_response<R, E>(
    db: &Database,
    idempotency: Option<&IdempotentRequest<'_>>,
) -> Result<Option<R>, E>
where
    R: Message + Default,
    E: From<IdempotencyError> + From<DbError>,
{
    let Some(request) = idempotency else {
        return Ok(None);
    };
    let mut connection = db
        .pool()
        .acquire()
        .await
        .map_err(DbError::sql("acquiring a connection"))?;
    match request.stored_response(&mut connection).await? {
        None => Ok(None),
        Some(stored) => decode(&stored).map(Some),
    }
}

fn decode<R: Message + Default, E: From<DbError>>(stored: &[u8]) -> Result<R, E> {
    R::decode(stored).map_err(|error| {
        E::from(DbError::Sql {
            context: "decoding a stored response",
            source: sqlx::Error::Decode(Box::new(error)),
        })
    })
}

/// Handles a consumed event at most once per consumer: `work` runs in a transaction that also
/// records the event id in the inbox, so a redelivered event changes nothing. Database errors
/// become transient or permanent handler errors ([`inbox::handle_error`]).
pub async fn handle_once(
    db: &Database,
    relay: &RelayWaker,
    meta: &EventMeta,
    work: impl AsyncFnOnce(&mut AnyConnection) -> Result<(), HandleError>,
) -> Result<(), HandleError> {
    handle_batch_once(db, relay, &[meta], async move |transaction, _fresh| {
        work(transaction).await
    })
    .await
}

/// Handles a batch of consumed events (from [`govbus_bus::Consumer::on_batch`]) in one
/// transaction: their ids are recorded in the inbox together, and `work` receives, for each
/// event, whether it is new (false for events this consumer already processed, which it must
/// not apply again). One commit for the whole batch, instead of one per event.
pub async fn handle_batch_once(
    db: &Database,
    relay: &RelayWaker,
    metas: &[&EventMeta],
    work: impl AsyncFnOnce(&mut AnyConnection, &[bool]) -> Result<(), HandleError>,
) -> Result<(), HandleError> {
    let Some(first) = metas.first() else {
        return Ok(());
    };
    let mut transaction = db.begin().await.map_err(inbox::handle_error)?;
    let ids: Vec<&str> = metas.iter().map(|meta| meta.envelope.id.as_str()).collect();
    let fresh = inbox::claim_all(&mut transaction, &first.delivery.consumer, &ids)
        .await
        .map_err(inbox::handle_error)?;
    if !fresh.contains(&true) {
        tracing::debug!(
            message = "Events already processed; skipped.",
            events = metas.len()
        );
        return Ok(());
    }
    work(&mut transaction, &fresh).await?;
    transaction.commit().await.map_err(|error| {
        inbox::handle_error(DbError::Sql {
            context: "committing a batch's effects",
            source: error,
        })
    })?;
    relay.wake();
    Ok(())
}
