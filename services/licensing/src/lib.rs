//! The licensing service: risk-based business licensing (OSS-style).
//!
//! An applicant, verified with the identity service, applies for a business licence with a
//! KBLI 2020 code, a location and a risk level. Every application gets a 13-digit NIB at once;
//! low risk (rendah) needs nothing more, medium-low risk (menengah rendah) gets its standard
//! certificate on self-declaration, medium-high risk (menengah tinggi) waits for verification and
//! high risk (tinggi) for approval. A stage with no decision before its service-level deadline is
//! deemed approved ("fiktif positif", PP 28/2025), with its own event; deadlines are stored, so
//! they survive restarts. Through the bus, `CitizenDeceased` flags the holder's licences for
//! review.
//!
//! # Layout
//!
//! - [`domain`]: risk levels and their pathways, deadlines, statuses, KBLI codes.
//! - [`store`]: the `applications` table.
//! - [`office`]: commands, deemed approvals and the reaction to deaths, each one transaction with
//!   its events.
//! - [`deadlines`]: the watcher that deems overdue applications approved.
//! - [`grpc`]: the gRPC API and error mapping.
//! - [`declaration`]: licensing as a stack knows it ([`DECLARATION`]).
//! - [`app`]: [`Application::build`] wires it together.

pub mod app;
pub mod deadlines;
pub mod declaration;
pub mod domain;
pub mod grpc;
pub mod office;
pub mod store;

pub use app::{Application, LicensingConfig, contract};
pub use declaration::DECLARATION;
pub use domain::{Deadlines, Period};
pub use govbus_kit::StartError;
