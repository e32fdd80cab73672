//! Running `nats-server` for govbus.
//!
//! govbus needs nats-server 2.10 or later with JetStream. `govbus up` starts one itself unless an
//! existing server is configured, and the test harness starts one per test; both find the binary
//! and tell when it is ready the same way, and both run it with `deploy/nats/nats-server.conf`.
//!
//! # Layout
//!
//! - [`binary`]: finding a `nats-server` that is new enough (2.10 or later).
//! - [`readiness`]: the ports file and `/healthz`.
//! - [`embedded`]: the long-running server of `govbus up`, with its store in the data folder.

pub mod binary;
pub mod embedded;
pub mod readiness;

use std::path::PathBuf;

pub use binary::{MINIMUM_VERSION, NatsServerBinary, Version, find_nats_server};
pub use embedded::{EmbeddedNats, EmbeddedNatsSettings};

/// The NATS server settings shared by operators, `govbus up` and the tests.
pub const NATS_SERVER_CONFIG: &str = include_str!("../../../deploy/nats/nats-server.conf");

/// What can go wrong finding or running nats-server.
#[derive(Debug, thiserror::Error)]
pub enum NatsdError {
    /// No `nats-server` of a usable version was found.
    #[error(
        "no nats-server {MINIMUM_VERSION} or later found ({searched}); run scripts/install-nats-server, \
         set GOVBUS_NATS_SERVER to the binary, or give an existing server with --nats-url"
    )]
    NatsServerNotFound {
        /// Where the search looked, for the message.
        searched: String,
    },
    /// A configured binary is too old or does not run.
    #[error("{path} is not a usable nats-server: {reason}")]
    UnusableBinary {
        /// The configured path.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The server did not start or did not become ready.
    #[error("nats-server did not start: {reason}\n--- last lines of {log} ---\n{tail}")]
    StartFailed {
        /// What went wrong.
        reason: String,
        /// The log file.
        log: String,
        /// Its last lines.
        tail: String,
    },
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}
