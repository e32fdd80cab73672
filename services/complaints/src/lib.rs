//! The complaints service (pengaduan pelayanan publik).
//!
//! A resident's complaint about a public service, verified with the identity service, is filed
//! (at the front office, from SMS, the web or an app) with the agency (perangkat daerah) it is
//! about, from the city's code list. Verification accepts it with its class — ringan, normatif,
//! tidak berkadar pengawasan, berkadar pengawasan — which sets the agency's deadline in
//! government working days, and routes it; or refuses it as unclear or not about a public
//! service. The agency responds; the resident closes the complaint or reopens it, which gives the
//! agency a new deadline. A stage whose deadline passes is escalated, once, with its own event.
//! Accepted complaints are forwarded to the national channel (SP4N-LAPOR) over the kit's
//! outbound HTTP connector, retried with back-off and dead-lettered when they keep failing.
//! Events name the complainant by pseudonym and never carry the texts.
//!
//! # Layout
//!
//! - [`domain`]: channels, categories, classes with their working days, statuses, text checks.
//! - [`store`]: the `complaints` table, on SQLite and PostgreSQL.
//! - [`office`]: the commands, escalations and forwarding, each one transaction with its events.
//! - [`national`]: what is posted to the national channel and what it answers.
//! - [`grpc`]: the gRPC API, its validation and the mapping of errors to statuses.
//! - [`declaration`]: complaints as a stack knows it ([`DECLARATION`]).
//! - [`app`]: [`Application::build`] wires database, bus, relay, watcher and server together.

pub mod app;
pub mod declaration;
pub mod domain;
pub mod grpc;
pub mod national;
pub mod office;
pub mod store;

pub use app::{Application, ComplaintsConfig, NationalSettings, contract};
pub use declaration::DECLARATION;
pub use domain::Deadlines;
pub use govbus_kit::StartError;
