//! The welfare service: social-welfare data (PDKTSAM-style) and assistance programmes.
//!
//! Households (by family card) have members (by NIK, verified with the identity service) and a
//! welfare decile, desil 1–10, from an assessment. Applications for PKH (desil 1–4), BPNT and
//! PBI-JK (desil 1–5) are decided after identity confirms the applicant is a living citizen.
//! Through the bus it reacts to identity: `CitizenDeceased` suspends the person's benefits (no
//! payments to the dead), `CitizenRelocated` updates the address (no stale addresses); a PKH
//! household reassessed into desil 5 or above is suspended pending verification.
//!
//! # Layout
//!
//! - [`domain`]: programmes, deciles, eligibility.
//! - [`store`]: households, members, benefits.
//! - [`office`]: commands and reactions to events, each one transaction with its events.
//! - [`grpc`]: the gRPC API and error mapping.
//! - [`declaration`]: welfare as a stack knows it ([`DECLARATION`]).
//! - [`app`]: [`Application::build`] wires it together.

pub mod app;
pub mod declaration;
pub mod domain;
pub mod grpc;
pub mod office;
pub mod store;

pub use app::{Application, WelfareConfig, contract};
pub use declaration::DECLARATION;
pub use govbus_kit::StartError;
