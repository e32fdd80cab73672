//! The identity service: a city's population register (Dukcapil-style).
//!
//! It registers citizens (validating the NIK against the stated birth date and sex and the
//! Kemendagri region codes), answers other services' `VerifyCitizen` calls with the minimum they
//! need, and records relocations and deaths. Each change publishes an event through the
//! transactional outbox: `CitizenRegistered`, `CitizenRelocated`, `CitizenDeceased`. Events carry
//! a pseudonymous `citizen_ref`, never the NIK or the name.
//!
//! Other services call it through `govbus-identity-client` (`services/identity/client`).
//!
//! # Layout
//!
//! - [`domain`]: NIK, KK number, names, dates, region codes and the registration rules.
//! - [`store`]: the `citizens` table.
//! - [`registry`]: commands and queries, each command one transaction with its event.
//! - [`grpc`]: the gRPC API and the mapping of errors to statuses.
//! - [`declaration`]: identity as a stack knows it ([`DECLARATION`]).
//! - [`app`]: [`Application::build`] wires database, bus, relay and server together.

pub mod app;
pub mod declaration;
pub mod domain;
pub mod grpc;
pub mod registry;
pub mod store;

pub use app::{Application, IdentityConfig, contract};
pub use declaration::DECLARATION;
pub use govbus_kit::StartError;
