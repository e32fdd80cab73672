//! Publish and subscribe over HTTP, in the shape of the GovStack Information Mediator's PubSub
//! API: rooms, their event types, and publishing into them.
//!
//! A room is a provider on the bus, at `/r1/{instance}/{class}/{member}/{application}`:
//! a service's room holds the event types its contract declares (`identity`'s room holds
//! `identity.citizen.registered.v1`, …), whose JSON Schemas come from the contracts; they are
//! changed in the contracts, never over HTTP. An application's room holds the event types it
//! registered, each with the JSON Schema its events must satisfy, and only that application
//! publishes into it, on its own subjects (`govbus.app.<agency>.<application>.<type>`), never a
//! service's.
//!
//! A published event is a CloudEvent on JetStream with the same envelope as a service's
//! (`ce-*` headers, `Nats-Msg-Id` its id), its data the JSON the application sent
//! (`application/json`), stored in the stream `GOVBUS_APP`. The publisher is answered only once
//! JetStream has acknowledged it: an answered event is stored. An `Idempotency-Key` makes a
//! retry return the first publication's id without publishing again.

pub mod http;
pub mod items;
pub mod subscriptions;
pub mod webhooks;

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::HeaderMap;
use govbus_bus::{Bus, Envelope, StreamSettings, Topology};
use govbus_storage::time::now_micros;
use govbus_storage::{Database, DbError, Migration};
use serde_json::Value as Json;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use uuid::Uuid;

/// The gateway database's tables for publish/subscribe (migration 2 of the component
/// `gateway`).
pub const MIGRATION: Migration = Migration {
    version: 2,
    description: "applications' event types and their publications",
    sqlite: TABLES,
    postgres: TABLES,
};

const TABLES: &str = "
    CREATE TABLE gateway_event_types (
        application TEXT NOT NULL,
        event_type TEXT NOT NULL,
        json_schema TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (application, event_type)
    );
    CREATE TABLE gateway_publications (
        id TEXT PRIMARY KEY,
        application TEXT NOT NULL,
        event_type TEXT NOT NULL,
        request_hash TEXT NOT NULL,
        stream_sequence BIGINT,
        published_at BIGINT NOT NULL,
        withdrawn_at BIGINT
    )
";

/// Why a publish/subscribe request fails.
#[derive(Debug, thiserror::Error)]
pub enum PubSubError {
    /// An event type's name is not one subject token.
    #[error(
        "{0:?} is not an event type name: a letter, then letters, digits, '-' or '_', 64 at most"
    )]
    InvalidName(String),
    /// A registered schema is not a JSON Schema.
    #[error("the schema is not a valid JSON Schema: {0}")]
    InvalidSchema(String),
    /// The type is registered already.
    #[error("the event type {0} exists already")]
    Exists(String),
    /// No such type in the room.
    #[error("no event type {0} in this room")]
    UnknownType(String),
    /// An event that does not satisfy its type's schema: each instance path with its problem.
    #[error("the event does not satisfy the schema of {event_type}")]
    Invalid {
        /// The type.
        event_type: String,
        /// Where (a JSON pointer into `event`) and what.
        problems: Vec<(String, String)>,
    },
    /// The idempotency key was used for another publication.
    #[error("the Idempotency-Key was used for another publication")]
    KeyReused,
    /// No such publication.
    #[error("no publication {0} of this type")]
    UnknownPublication(String),
    /// JetStream did not store it.
    #[error("the bus did not store the event: {0}")]
    Bus(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Checks an application's event type name: one NATS subject token, so that its subject is
/// `govbus.app.<agency>.<application>.<name>`.
pub fn check_type_name(name: &str) -> Result<(), PubSubError> {
    let mut bytes = name.bytes();
    let valid = name.len() <= 64
        && bytes
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic())
        && bytes.all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(PubSubError::InvalidName(name.chars().take(80).collect()))
    }
}

/// An application's registered event type.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredType {
    /// Its name in the room (`newBirth`).
    pub event_type: String,
    /// The JSON Schema its events satisfy.
    pub schema: Json,
}

impl RegisteredType {
    fn of_row((event_type, schema): (String, String)) -> Result<Self, PubSubError> {
        let schema = serde_json::from_str(&schema)
            .map_err(|error| DbError::corrupt("reading an event type's schema", error))?;
        Ok(Self { event_type, schema })
    }
}

/// A stored publication, as its publisher reads it back.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    /// Its id (the CloudEvents `id`).
    pub id: String,
    /// Its sequence in the stream.
    pub sequence: u64,
    /// Its data.
    pub event: Json,
}

/// Publish/subscribe on the bus for the gateway: the applications' event types in its database,
/// their events in the stream `GOVBUS_APP`.
#[derive(Debug, Clone)]
pub struct PubSub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bus: Bus,
    db: Database,
    /// Per subscription, the lock its pulls in this gateway take turns with.
    pull_turns: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl PubSub {
    /// Over `bus`, with the types and publications in `db` (the gateway's database); makes the
    /// applications' stream if it is not there.
    pub async fn start(bus: Bus, db: Database) -> Result<Self, PubSubError> {
        let topology = bus.topology().clone();
        let settings: &StreamSettings = bus.stream_settings();
        govbus_bus::provision::ensure_stream(
            bus.jetstream(),
            settings,
            &topology.application_stream(),
            vec![topology.application_subjects()],
            "Events applications publish through the gateway",
        )
        .await
        .map_err(|error| PubSubError::Bus(error.to_string()))?;
        // Where webhook deliveries given up on go.
        bus.dead_letters()
            .ensure_stream(settings)
            .await
            .map_err(|error| PubSubError::Bus(error.to_string()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                bus,
                db,
                pull_turns: std::sync::Mutex::default(),
            }),
        })
    }

    /// Its bus.
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// The bus's names.
    pub fn topology(&self) -> &Topology {
        self.inner.bus.topology()
    }

    /// The event types `application` registered, by name.
    pub async fn types_of(&self, application: &str) -> Result<Vec<RegisteredType>, PubSubError> {
        let mut sql = self.inner.db.read().await?;
        let rows: Vec<(String, String)> = sql
            .query_all(
                "SELECT event_type, json_schema FROM gateway_event_types \
                 WHERE application = $1 ORDER BY event_type",
                &[application.into()],
            )
            .await?;
        rows.into_iter().map(RegisteredType::of_row).collect()
    }

    /// `application`'s event type `name`, if it registered one.
    pub async fn type_of(
        &self,
        application: &str,
        name: &str,
    ) -> Result<Option<RegisteredType>, PubSubError> {
        let mut sql = self.inner.db.read().await?;
        let row: Option<(String, String)> = sql
            .query_opt(
                "SELECT event_type, json_schema FROM gateway_event_types \
                 WHERE application = $1 AND event_type = $2",
                &[application.into(), name.into()],
            )
            .await?;
        row.map(RegisteredType::of_row).transpose()
    }

    /// Registers `name` for `application`, its events to satisfy `schema`.
    pub async fn register_type(
        &self,
        application: &str,
        name: &str,
        schema: &Json,
    ) -> Result<(), PubSubError> {
        check_type_name(name)?;
        if !schema.is_object() {
            return Err(PubSubError::InvalidSchema(
                "a schema is a JSON object".to_owned(),
            ));
        }
        jsonschema::meta::validate(schema)
            .map_err(|error| PubSubError::InvalidSchema(error.to_string()))?;
        jsonschema::validator_for(schema)
            .map_err(|error| PubSubError::InvalidSchema(error.to_string()))?;
        let (application_key, name_key) = (application.to_owned(), name.to_owned());
        let text = schema.to_string();
        let inserted = self
            .inner
            .db
            .write(async move |tx| {
                tx.execute(
                    "INSERT INTO gateway_event_types (application, event_type, json_schema, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (application, event_type) DO NOTHING",
                    &[
                        application_key.as_str().into(),
                        name_key.as_str().into(),
                        text.as_str().into(),
                        now_micros().into(),
                    ],
                )
                .await
            })
            .await?;
        if inserted == 1 {
            Ok(())
        } else {
            Err(PubSubError::Exists(name.to_owned()))
        }
    }

    /// Removes `application`'s event type `name` (its events already published stay).
    pub async fn delete_type(&self, application: &str, name: &str) -> Result<(), PubSubError> {
        let (application_key, name_key) = (application.to_owned(), name.to_owned());
        let deleted = self
            .inner
            .db
            .write(async move |tx| {
                tx.execute(
                    "DELETE FROM gateway_event_types WHERE application = $1 AND event_type = $2",
                    &[application_key.as_str().into(), name_key.as_str().into()],
                )
                .await
            })
            .await?;
        if deleted == 1 {
            Ok(())
        } else {
            Err(PubSubError::UnknownType(name.to_owned()))
        }
    }

    /// Publishes `event` of `application`'s type `name` (with `subject`, the aggregate it is
    /// about, if given), once JetStream has stored it; its id. With `idempotency_key`, a retry
    /// of the same publication returns the same id and publishes nothing new.
    pub async fn publish(
        &self,
        application: &str,
        name: &str,
        event: &Json,
        subject: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Result<String, PubSubError> {
        let registered = self
            .type_of(application, name)
            .await?
            .ok_or_else(|| PubSubError::UnknownType(name.to_owned()))?;
        let validator = jsonschema::validator_for(&registered.schema)
            .map_err(|error| PubSubError::InvalidSchema(error.to_string()))?;
        let problems: Vec<(String, String)> = validator
            .iter_errors(event)
            .map(|error| (error.instance_path().to_string(), error.to_string()))
            .collect();
        if !problems.is_empty() {
            return Err(PubSubError::Invalid {
                event_type: name.to_owned(),
                problems,
            });
        }
        let payload = serde_json::to_vec(event)
            .map_err(|error| PubSubError::Bus(format!("encoding the event: {error}")))?;
        let request_hash = hex::encode(
            Sha256::new()
                .chain_update(name.as_bytes())
                .chain_update([0])
                .chain_update(subject.unwrap_or_default().as_bytes())
                .chain_update([0])
                .chain_update(&payload)
                .finalize(),
        );
        let id = match idempotency_key {
            // The same key of the same application is the same event, in every replica.
            Some(key) => {
                let digest = Sha256::new()
                    .chain_update(application.as_bytes())
                    .chain_update([0])
                    .chain_update(key.as_bytes())
                    .finalize();
                let mut bytes = [0; 16];
                bytes.copy_from_slice(&digest[..16]);
                uuid::Builder::from_random_bytes(bytes)
                    .into_uuid()
                    .to_string()
            }
            None => Uuid::now_v7().to_string(),
        };
        let existing = self.record(&id, application, name, &request_hash).await?;
        if let Some(Some(_)) = existing {
            return Ok(id);
        }
        let envelope = Envelope {
            id: id.clone(),
            source: format!("/govbus/gateway/{application}"),
            event_type: format!("{application}.{name}"),
            time: OffsetDateTime::now_utc(),
            subject: subject.map(str::to_owned),
            data_content_type: "application/json".to_owned(),
            data_schema: Some(format!("{application}/{name}")),
            correlation_id: id.clone(),
            causation_id: None,
            causation_type: None,
        };
        let mut headers = HeaderMap::new();
        envelope.write_headers(&mut headers);
        let nats_subject = self.topology().application_subject(application, name);
        let acknowledged = self
            .inner
            .bus
            .jetstream()
            .publish_with_headers(nats_subject, headers, payload.into())
            .await
            .map_err(|error| PubSubError::Bus(error.to_string()))?
            .await
            .map_err(|error| PubSubError::Bus(error.to_string()))?;
        let sequence = i64::try_from(acknowledged.sequence).unwrap_or(i64::MAX);
        let key = id.clone();
        self.inner
            .db
            .write(async move |tx| {
                tx.execute(
                    "UPDATE gateway_publications SET stream_sequence = $2 WHERE id = $1",
                    &[key.as_str().into(), sequence.into()],
                )
                .await
            })
            .await?;
        Ok(id)
    }

    /// Records the publication `id` before it is published; `None` if it is new, its stream
    /// sequence (if it was stored already) if a retry sent it before.
    async fn record(
        &self,
        id: &str,
        application: &str,
        name: &str,
        request_hash: &str,
    ) -> Result<Option<Option<i64>>, PubSubError> {
        let (key, application_key, name_key, hash) = (
            id.to_owned(),
            application.to_owned(),
            name.to_owned(),
            request_hash.to_owned(),
        );
        let found: Option<(String, String, String, Option<i64>)> = self
            .inner
            .db
            .write(async move |tx| {
                let inserted = tx
                    .execute(
                        "INSERT INTO gateway_publications \
                         (id, application, event_type, request_hash, published_at) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING",
                        &[
                            key.as_str().into(),
                            application_key.as_str().into(),
                            name_key.as_str().into(),
                            hash.as_str().into(),
                            now_micros().into(),
                        ],
                    )
                    .await?;
                if inserted == 1 {
                    return Ok::<_, DbError>(None);
                }
                tx.query_opt(
                    "SELECT application, event_type, request_hash, stream_sequence \
                     FROM gateway_publications WHERE id = $1",
                    &[key.as_str().into()],
                )
                .await
            })
            .await?;
        match found {
            None => Ok(None),
            Some((stored_application, stored_type, stored_hash, sequence)) => {
                if stored_application == application
                    && stored_type == name
                    && stored_hash == request_hash
                {
                    Ok(Some(sequence))
                } else {
                    Err(PubSubError::KeyReused)
                }
            }
        }
    }

    /// `application`'s publication `id` of type `name`, as stored, unless it was withdrawn.
    pub async fn publication(
        &self,
        application: &str,
        name: &str,
        id: &str,
    ) -> Result<Publication, PubSubError> {
        let sequence = self.sequence_of(application, name, id).await?;
        let stream = self
            .stream_named(&self.topology().application_stream())
            .await?;
        let message = stream
            .get_raw_message(sequence)
            .await
            .map_err(|_| PubSubError::UnknownPublication(id.to_owned()))?;
        let event = serde_json::from_slice(&message.payload)
            .map_err(|error| PubSubError::Bus(format!("a stored event is not JSON: {error}")))?;
        Ok(Publication {
            id: id.to_owned(),
            sequence,
            event,
        })
    }

    /// Withdraws `application`'s publication `id`: removed from the stream, so that it is
    /// delivered to no one who has not had it yet.
    pub async fn withdraw(
        &self,
        application: &str,
        name: &str,
        id: &str,
    ) -> Result<(), PubSubError> {
        let sequence = self.sequence_of(application, name, id).await?;
        let stream = self
            .stream_named(&self.topology().application_stream())
            .await?;
        // Already gone from the stream (its age limit): withdrawn all the same.
        let _ = stream.delete_message(sequence).await;
        let key = id.to_owned();
        self.inner
            .db
            .write(async move |tx| {
                tx.execute(
                    "UPDATE gateway_publications SET withdrawn_at = $2 \
                     WHERE id = $1 AND withdrawn_at IS NULL",
                    &[key.as_str().into(), now_micros().into()],
                )
                .await
            })
            .await?;
        Ok(())
    }

    async fn stream_named(
        &self,
        name: &str,
    ) -> Result<async_nats::jetstream::stream::Stream, PubSubError> {
        self.inner
            .bus
            .jetstream()
            .get_stream(name)
            .await
            .map_err(|error| PubSubError::Bus(error.to_string()))
    }

    async fn sequence_of(
        &self,
        application: &str,
        name: &str,
        id: &str,
    ) -> Result<u64, PubSubError> {
        let mut sql = self.inner.db.read().await?;
        let row: Option<(Option<i64>,)> = sql
            .query_opt(
                "SELECT stream_sequence FROM gateway_publications \
                 WHERE id = $1 AND application = $2 AND event_type = $3 AND withdrawn_at IS NULL",
                &[id.into(), application.into(), name.into()],
            )
            .await?;
        row.and_then(|(sequence,)| sequence)
            .and_then(|sequence| u64::try_from(sequence).ok())
            .ok_or_else(|| PubSubError::UnknownPublication(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_are_one_subject_token() {
        for good in ["newBirth", "rujukan-dibuat", "a", "v1_event"] {
            assert!(check_type_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "1st",
            "new.birth",
            "new birth",
            "a>",
            "*",
            &"x".repeat(65),
        ] {
            assert!(check_type_name(bad).is_err(), "{bad}");
        }
    }
}
