//! A command (with its idempotency key) or an event handler (with the inbox) as one unit of the
//! writer.

use govbus_bus::{EventMeta, HandleError};
use prost::Message;

use crate::database::Database;
use crate::error::DbError;
use crate::idempotency::{Claim, IdempotencyError, IdempotentRequest};
use crate::inbox;
use crate::writer::Tx;

/// Runs `work` as one command, honouring the client's idempotency key: when the key's request
/// already ran, its stored response is returned as it was, without running `work`; otherwise
/// `work`'s response is stored with its changes. Returns once the commit is durable.
///
/// `work` may run more than once (see [`Database::write`]).
pub async fn run_command<R, E, F>(
    db: &Database,
    idempotency: Option<IdempotentRequest>,
    work: F,
) -> Result<R, E>
where
    R: Message + Default + Send + 'static,
    E: From<IdempotencyError> + From<DbError> + Send + 'static,
    F: AsyncFn(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
{
    db.write(async move |tx| {
        if let Some(request) = &idempotency
            && let Claim::Stored(stored) = request.claim(tx).await?
        {
            return decode(&stored);
        }
        let response = work(tx).await?;
        if let Some(request) = &idempotency {
            request.complete(tx, &response.encode_to_vec()).await?;
        }
        Ok(response)
    })
    .await
}

/// The response already stored for the client's idempotency key, read outside the writer: a
/// command that calls another service first checks this, so a retry does not repeat the call.
pub async fn stored_response<R, E>(
    db: &Database,
    idempotency: Option<&IdempotentRequest>,
) -> Result<Option<R>, E>
where
    R: Message + Default,
    E: From<IdempotencyError> + From<DbError>,
{
    let Some(request) = idempotency else {
        return Ok(None);
    };
    let mut sql = db.read().await?;
    match request.stored_response(&mut sql).await? {
        None => Ok(None),
        Some(stored) => decode(&stored).map(Some),
    }
}

fn decode<R: Message + Default, E: From<DbError>>(stored: &[u8]) -> Result<R, E> {
    R::decode(stored)
        .map_err(|_| E::from(DbError::corrupt("decoding a stored response", "response")))
}

/// Handles a consumed event at most once per consumer: `work` runs in the writer with the event
/// id recorded in the inbox, so a redelivered event changes nothing. Database errors become
/// transient or permanent handler errors ([`inbox::handle_error`]).
pub async fn handle_once<F>(db: &Database, meta: &EventMeta, work: F) -> Result<(), HandleError>
where
    F: AsyncFn(&mut Tx<'_>) -> Result<(), HandleError> + Send + 'static,
{
    let consumer = meta.delivery.consumer.clone();
    let id = meta.envelope.id.clone();
    db.write(async move |tx| {
        if !inbox::claim(tx, &consumer, &id).await? {
            tracing::debug!(message = "Event already processed; skipped.");
            return Ok(());
        }
        work(tx).await.map_err(Failure::Handler)
    })
    .await
    .map_err(Failure::into_handle_error)
}

/// Handles a batch of consumed events (from [`govbus_bus::Consumer::on_batch`]) as one unit:
/// their ids are recorded in the inbox together, and `work` receives, for each event, whether
/// it is new (false for events this consumer already processed, which it must not apply again).
pub async fn handle_batch_once<F>(
    db: &Database,
    metas: &[&EventMeta],
    work: F,
) -> Result<(), HandleError>
where
    F: AsyncFn(&mut Tx<'_>, &[bool]) -> Result<(), HandleError> + Send + 'static,
{
    let Some(first) = metas.first() else {
        return Ok(());
    };
    let consumer = first.delivery.consumer.clone();
    let ids: Vec<String> = metas.iter().map(|meta| meta.envelope.id.clone()).collect();
    let events = metas.len();
    db.write(async move |tx| {
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let fresh = inbox::claim_all(tx, &consumer, &refs).await?;
        if !fresh.contains(&true) {
            tracing::debug!(message = "Events already processed; skipped.", events);
            return Ok(());
        }
        work(tx, &fresh).await.map_err(Failure::Handler)
    })
    .await
    .map_err(Failure::into_handle_error)
}

/// A handler's failure inside the writer: its own, or the database's.
#[derive(Debug)]
enum Failure {
    Handler(HandleError),
    Db(DbError),
}

impl Failure {
    fn into_handle_error(self) -> HandleError {
        match self {
            Self::Handler(error) => error,
            Self::Db(error) => inbox::handle_error(error),
        }
    }
}

impl From<DbError> for Failure {
    fn from(error: DbError) -> Self {
        Self::Db(error)
    }
}
