//! A govbus service's database, and what makes its state changes and events reliable.
//!
//! - **One writer per database.** Every write runs on the database's writer thread, rolled back
//!   alone when it fails (a savepoint of its own); the writes that arrived while the previous
//!   commit ran are committed together, durably, and only then answered. On SQLite a statement is a call on that thread, with no
//!   hand-off; on PostgreSQL the writer runs groups on several connections at once and locks
//!   what it reads to change (`FOR UPDATE`), so that conflicting commands, on its connections
//!   or in replicas in other processes, are put in order.
//! - **Reads beside it.** Queries take a reading connection of their own and run on the calling
//!   task, concurrently with the writer.
//! - **The transactional outbox.** A command's events commit with its changes and are handed to
//!   the relay in memory; the relay publishes them to JetStream in order, once, while it holds
//!   the outbox's lease.
//! - **The inbox and idempotency keys.** A consumer records each event it processed in the same
//!   commit as its effect; a client's retried command with the same key gets the first answer.
//!
//! # Layout
//!
//! - [`database`]: opening a database, its options, reads and writes.
//! - [`writer`]: the writer thread and its group commits; [`Tx`], a command's transaction.
//! - [`sql`]: [`Sql`], running statements on either backend.
//! - [`value`]: statement parameters and reading rows.
//! - [`command`]: a command with its idempotency key, an event handler with the inbox.
//! - [`outbox`]: the outbox, its relay and the relay's lease.
//! - [`inbox`]: recording processed events.
//! - [`idempotency`]: client-supplied idempotency keys.
//! - [`retention`]: deleting expired inbox rows, keys and published outbox rows.
//! - [`running`]: a service's storage with its relay and pruner, started and stopped together.
//! - [`migrate`]: schema migrations; [`schema`]: the tables every service database has.
//! - [`error`]: [`DbError`] and its kinds; [`time`]: stored timestamps.

pub mod backend;
pub mod command;
pub mod database;
pub mod error;
pub mod idempotency;
pub mod inbox;
pub mod migrate;
pub mod open;
pub mod outbox;
mod postgres;
pub mod retention;
pub mod running;
pub mod schema;
pub mod sql;
mod sqlite;
pub mod statement;
pub mod time;
pub mod value;
pub mod writer;

pub use backend::Backend;
pub use database::{Database, DatabaseOptions};
pub use error::{DbError, DbErrorKind};
pub use idempotency::{IdempotencyError, IdempotentRequest};
pub use migrate::Migration;
pub use open::open;
pub use outbox::{OutboxRelay, RelayHandle, RelaySettings};
pub use retention::RetentionSettings;
pub use running::{Storage, StorageSettings};
pub use sql::Sql;
pub use sqlite::Synchronous;
pub use statement::Statement;
pub use value::{FromColumn, FromRow, Row, Value};
pub use writer::{Tx, WriterStats};
