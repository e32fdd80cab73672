//! The {{name}} service: requests residents file with it, and what becomes of them. A request
//! is filed with its idempotency key and published as `RequestFiled` through the transactional
//! outbox; when identity records a resident's death, their open requests are closed
//! (`RequestClosed`), each death handled once (the inbox).
//!
//! # Layout
//!
//! - [`store`]: the `requests` table, on SQLite and PostgreSQL.
//! - [`office`]: the commands and the handling of identity's events, each one transaction.
//! - [`grpc`]: the gRPC API, its validation and the mapping of errors to statuses.
//! - [`declaration`]: {{name}} as a stack knows it ([`DECLARATION`]).
//! - [`app`]: [`Application::build`] wires database, bus, relay and server together.

pub mod app;
pub mod declaration;
pub mod grpc;
pub mod office;
pub mod store;

pub use app::{Application, {{Name}}Config, contract};
pub use declaration::DECLARATION;
pub use govbus_kit::StartError;
