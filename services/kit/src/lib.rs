//! What every govbus service is built from.
//!
//! A govbus service keeps its state in its own database and talks to the others through the
//! bus. This crate holds the parts that make that reliable, the same way in every service:
//!
//! - a state change and the events it produces commit together (the transactional outbox), and a
//!   relay delivers them to JetStream once it acknowledges them;
//! - a consumer records each event it processed in the same transaction as its effect (the
//!   inbox), so a redelivery changes nothing;
//! - a client's retried command with the same idempotency key returns the first answer.
//!
//! # Layout
//!
//! - [`access`]: which caller may call which gRPC method, enforced on every call.
//! - [`audit`]: the processing log, a signed hash chain of every processing of a person's data.
//! - [`bus_env`]: a service binary's NATS connection (servers, credentials, TLS, replicas) from its environment.
//! - [`command`]: a command (with its idempotency key) or an event handler (with the inbox) as one transaction.
//! - [`db`]: the database (SQLite file or PostgreSQL), migrations, timestamps.
//! - [`grpc`]: serving with health, reflection and TCP_NODELAY; field errors as statuses.
//! - [`outbox`]: storing events with a state change, and the relay to JetStream.
//! - [`inbox`]: recording processed events.
//! - [`idempotency`]: client-supplied idempotency keys.
//! - [`runtime`]: starting and stopping a service in order.
//! - [`schema`]: the tables the kit keeps in each service's database.
//! - [`tls`]: mutual TLS between services and the caller's name from its certificate.
//! - [`telemetry`]: logs, traces (kept in memory and exported over OTLP) and Prometheus metrics.

pub mod access;
pub mod audit;
pub mod bus_env;
pub mod command;
pub mod db;
pub mod grpc;
pub mod idempotency;
pub mod inbox;
pub mod outbox;
pub mod runtime;
pub mod schema;
pub mod telemetry;
pub mod tls;

pub use db::{Backend, Database, DbError, Migration, WriteTransaction};
pub use idempotency::{IdempotencyError, IdempotentRequest};
pub use outbox::{OutboxRelay, RelayHandle, RelaySettings, RelayWaker};
pub use runtime::{ServiceRuntime, StartError};

/// Connects to `url` and applies the kit's migrations, then the service's own.
pub async fn open_database(
    url: &str,
    service: &str,
    migrations: &[Migration],
) -> Result<Database, DbError> {
    let db = Database::connect(url).await?;
    db.migrate(schema::COMPONENT, schema::MIGRATIONS).await?;
    db.migrate(service, migrations).await?;
    Ok(db)
}
