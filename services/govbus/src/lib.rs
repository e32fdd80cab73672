//! govbus, the command: runs the whole stack (`govbus up`), drives a demo workload through it
//! (`govbus demo`), and lets operators look inside a running stack (`govbus services`,
//! `streams`, `tail`, `deadletters`, `traces`, `trace`, `audit`).
//!
//! # Layout
//!
//! From the top down; a module uses only those below it.
//!
//! - [`cli`]: the operators' commands, clients of the console's API.
//! - [`demo`]: the demo workload over gRPC.
//! - [`scaffold`]: `govbus new service`, a new service from the templates.
//! - [`stack`]: starting NATS, the services and the console in order, and stopping them.
//! - [`console`]: the web console and the operators' HTTP API, `/metrics`, `/healthz`.
//! - [`config`]: the layered, validated configuration of `govbus up`.
//! - [`services`]: the list of the services the stack runs, each declared by its crate.
//! - [`api`]: the console API's routes and documents, shared by [`console`] and [`cli`].
//! - [`endpoints`]: where the running parts listen, and gRPC channels to the services.
//! - [`observability`]: the process's traces and metrics, as the stack and console use them.

pub mod api;
pub mod cli;
pub mod config;
pub mod console;
pub mod demo;
pub mod endpoints;
pub mod observability;
pub mod scaffold;
pub mod services;
pub mod stack;

pub use config::StackConfig;
pub use endpoints::{Endpoints, ServiceEndpoint};
pub use observability::Observability;
pub use stack::{Stack, StackError};
