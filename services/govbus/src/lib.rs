//! govbus, the command: runs the whole stack (`govbus up`), drives a demo workload through it
//! (`govbus demo`), and lets operators look inside a running stack (`govbus services`,
//! `streams`, `tail`, `deadletters`, `traces`, `trace`).
//!
//! # Layout
//!
//! - [`config`]: the layered, validated configuration of `govbus up`.
//! - [`stack`]: starting NATS, the four services and the console in order, and stopping them.
//! - [`console`]: the web console and the operators' HTTP API, `/metrics`, `/healthz`.
//! - [`cli`]: the operators' commands, clients of that API.
//! - [`demo`]: the demo workload over gRPC.

pub mod cli;
pub mod config;
pub mod console;
pub mod demo;
pub mod stack;

pub use config::StackConfig;
pub use stack::{Endpoints, Observability, Stack, StackError};
