//! The {{name}} service's commands and its handling of identity's events: each one
//! transaction of the database's writer, its events committed with it through the outbox.

use govbus_bus::{Causality, EventMeta, HandleError, PublishError, Publisher};
use govbus_proto::identity::v1 as identity;
use govbus_proto::{{name}}::v1 as pb;
use govbus_storage::command::{handle_once, run_command, stored_response};
use govbus_storage::inbox::handle_error;
use govbus_storage::{Database, DbError, IdempotencyError, IdempotentRequest};
use uuid::Uuid;

use crate::store::{self, StoredRequest};

/// Why a command of the {{name}} service failed.
#[derive(Debug, thiserror::Error)]
pub enum {{Name}}Error {
    /// No request with this reference.
    #[error("no request with this reference")]
    NotFound,
    /// The idempotency key was used for another request.
    #[error(transparent)]
    Idempotency(IdempotencyError),
    /// The event could not be encoded.
    #[error("cannot encode the event: {0}")]
    Event(#[from] PublishError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<IdempotencyError> for {{Name}}Error {
    fn from(error: IdempotencyError) -> Self {
        match error {
            IdempotencyError::Db(error) => Self::Db(error),
            other => Self::Idempotency(other),
        }
    }
}

/// What the {{name}} service does, over its database and its publisher.
#[derive(Debug, Clone)]
pub struct Office {
    db: Database,
    publisher: Publisher,
}

impl Office {
    /// An office over `db`, publishing through the outbox with `publisher`.
    pub fn new(db: Database, publisher: Publisher) -> Self {
        Self { db, publisher }
    }

    /// Files a request of the resident `citizen_ref`; a retry with the same key answers as the
    /// first time.
    pub async fn file_request(
        &self,
        citizen_ref: String,
        text: String,
        idempotency: Option<IdempotentRequest>,
        causality: Causality,
    ) -> Result<pb::FileRequestResponse, {{Name}}Error> {
        if let Some(stored) =
            stored_response::<_, {{Name}}Error>(&self.db, idempotency.as_ref()).await?
        {
            return Ok(stored);
        }
        let publisher = self.publisher.clone();
        run_command(&self.db, idempotency, async move |tx| {
            let request_ref = Uuid::now_v7().to_string();
            store::insert(tx, &request_ref, &citizen_ref, &text).await?;
            let event = pb::RequestFiled {
                request_ref: request_ref.clone(),
                citizen_ref: citizen_ref.clone(),
            };
            tx.enqueue(publisher.encode(&event, &causality)?);
            Ok(pb::FileRequestResponse { request_ref })
        })
        .await
    }

    /// The request `request_ref`.
    pub async fn request(&self, request_ref: &str) -> Result<StoredRequest, {{Name}}Error> {
        let mut sql = self.db.read().await?;
        store::get(&mut sql, request_ref)
            .await?
            .ok_or({{Name}}Error::NotFound)
    }

    /// `CitizenDeceased`: the resident's open requests are closed, each with its event.
    pub async fn on_citizen_deceased(
        &self,
        event: identity::CitizenDeceased,
        meta: EventMeta,
    ) -> Result<(), HandleError> {
        let causality = Causality::following(&meta);
        let publisher = self.publisher.clone();
        handle_once(&self.db, &meta, async move |tx| {
            let reason = "the resident died";
            let closed = store::close_open_of(tx, &event.citizen_ref, reason)
                .await
                .map_err(handle_error)?;
            for request_ref in closed {
                let closed = pb::RequestClosed {
                    request_ref,
                    citizen_ref: event.citizen_ref.clone(),
                    reason: reason.to_owned(),
                };
                let encoded = publisher
                    .encode(&closed, &causality)
                    .map_err(HandleError::permanent)?;
                tx.enqueue(encoded);
            }
            Ok(())
        })
        .await
    }
}
