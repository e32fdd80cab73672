//! Running `nats-server` for govbus.
//!
//! govbus needs nats-server 2.10 or later with JetStream. `govbus up` starts one itself unless an
//! existing server is configured, and the test harness starts one per test; both find the binary
//! and tell when it is ready the same way, and both run it with `deploy/nats/nats-server.conf`.
//!
//! # Layout
//!
//! - [`binary`]: finding a `nats-server` that is new enough (2.10 or later).
//! - [`readiness`]: the ports file, `/healthz`, and reading the monitoring port.
//! - [`embedded`]: the long-running server of `govbus up`, with its store in the data folder.

pub mod binary;
pub mod embedded;
pub mod readiness;

use std::path::PathBuf;

pub use binary::{MINIMUM_VERSION, NatsServerBinary, Version, find_nats_server};
pub use embedded::{EmbeddedNats, EmbeddedNatsSettings};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_single_server_syncs_every_message_and_the_interval_variant_does_not() {
        assert!(NATS_SERVER_CONFIG.contains(SYNC_ALWAYS));
        let interval = nats_server_config(JetStreamSync::Interval);
        assert!(
            !interval
                .lines()
                .any(|line| line.trim_start().starts_with("sync_interval"))
        );
        assert!(interval.contains("max_file_store"));
    }
}

/// The NATS server settings shared by operators, `govbus up` and the tests: a single server's,
/// which syncs every acknowledged message to disk (see [`JetStreamSync`]).
pub const NATS_SERVER_CONFIG: &str = include_str!("../../../deploy/nats/nats-server.conf");

/// The line of [`NATS_SERVER_CONFIG`] that makes JetStream sync every message before
/// acknowledging it.
const SYNC_ALWAYS: &str = "  sync_interval: always\n";

/// How JetStream makes an acknowledged message durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JetStreamSync {
    /// Synced to disk before it is acknowledged (`sync_interval: always`): a single server
    /// keeps every acknowledged message through a crash of its machine. The default.
    #[default]
    Always,
    /// JetStream's own default (the page cache, synced every two minutes): for a cluster,
    /// whose R3 streams are durable by replication, and for tests, which only kill processes
    /// (the page cache survives that).
    Interval,
}

/// The shared settings with JetStream syncing as `sync` says.
pub fn nats_server_config(sync: JetStreamSync) -> String {
    match sync {
        JetStreamSync::Always => NATS_SERVER_CONFIG.to_owned(),
        JetStreamSync::Interval => NATS_SERVER_CONFIG.replacen(SYNC_ALWAYS, "", 1),
    }
}

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
