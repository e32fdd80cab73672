//! The SPBE evaluation service: turns what the services do into the SPBE index.
//!
//! Assessments are recorded per instance (a province or a regency or city, by Kemendagri code),
//! per year and per indicator, the instance's own levels and the evaluator's final levels kept
//! apart, under an instrument that is data (`instruments/*.toml`; PermenPANRB 59/2020 ships, a
//! successor such as the PEMDI index is another file). Indices per domain, aspect and overall are
//! exact to two decimals. History against regional targets and rankings with ties are computed
//! from the final scores. Every service's events are projected into integration evidence (who
//! publishes what, who reacts to whom, volumes, licensing deadlines) that suggests levels for the
//! indicators the bus evidences; the projection can be rebuilt by replaying the streams.
//!
//! # Layout
//!
//! - [`score`]: exact two-decimal arithmetic.
//! - [`instrument`]: instruments as data and the index they define.
//! - [`store`]: instances, scores, targets.
//! - [`evidence`]: the live evidence projection and its rebuild.
//! - [`suggestions`]: the levels the evidence suggests, with their facts.
//! - [`connector`]: SPBE indicator 18, the agencies' use of the bus, and [`Membership`].
//! - [`reviews`]: the recorded reviews of the connector and their follow-ups.
//! - [`evaluator`]: assessments, history, ranking and evidence reports.
//! - [`grpc`]: the gRPC API.
//! - [`declaration`]: evaluation as a stack knows it ([`DECLARATION`]).
//! - [`app`]: [`Application::build`] wires it together.

pub mod app;
pub mod connector;
pub mod declaration;
pub mod evaluator;
pub mod evidence;
pub mod grpc;
pub mod instrument;
pub mod reviews;
pub mod score;
pub mod store;
pub mod suggestions;

pub use app::{Application, EvaluationConfig, contract};
pub use connector::Membership;
pub use declaration::DECLARATION;
pub use govbus_kit::StartError;
