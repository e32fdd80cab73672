//! Test support for govbus: real `nats-server` processes, isolated per test.
//!
//! Every test that needs NATS starts its own server with [`NatsServer::start`]. The server listens
//! on `127.0.0.1` on a port the kernel picks, keeps its JetStream store in its own temporary
//! folder, writes its log to a file the test can read, and is killed when the value is dropped.
//! Nothing depends on a fixed port or on a server the test did not start.
//!
//! The server runs with `deploy/nats/nats-server.conf`, the same settings operators use, except
//! that JetStream syncs at its default interval unless a test asks for the shipped
//! single-server durability ([`NatsServer::start_durable`]).
//!
//! # Layout
//!
//! - [`server`]: starting, stopping, killing and restarting one server process.
//! - [`cluster`]: several servers routed into one JetStream cluster.
//! - [`browser`]: a headless Chromium through chromedriver, for the console's tests.
//! - [`oidc`]: a real OpenID provider (npm `oidc-provider`), for sign-in tests.
//! - [`tsa`]: a real RFC 3161 time-stamping authority (`openssl ts`), for the processing log's tests.
//! - [`database`]: a private SQLite file or PostgreSQL schema per test.
//! - [`service`]: govbus service binaries as processes to crash and restart.
//!
//! ```
//! let server = govbus_harness::NatsServer::start()?;
//! assert!(server.client_url().starts_with("nats://127.0.0.1:"));
//! # Ok::<(), govbus_harness::HarnessError>(())
//! ```

pub mod browser;
pub mod cluster;
pub mod database;
pub mod oidc;
pub mod server;
pub mod service;
pub mod tsa;

pub use browser::ChromeDriver;
pub use cluster::NatsCluster;
pub use database::{TestBackend, TestDatabase};
pub use govbus_natsd::{
    JetStreamSync, MINIMUM_VERSION, NATS_SERVER_CONFIG, NatsServerBinary, find_nats_server,
    nats_server_config,
};
pub use oidc::{OidcClient, OidcProvider};
pub use server::NatsServer;
pub use service::ServiceProcess;
pub use tsa::TimestampAuthority;

/// What can go wrong while running a test server.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// No usable `nats-server` was found.
    #[error(transparent)]
    Binary(#[from] govbus_natsd::NatsdError),
    /// The server process could not be started or did not become ready.
    #[error("nats-server did not start: {reason}\n--- server log ---\n{log}")]
    StartFailed {
        /// What went wrong.
        reason: String,
        /// The server's log up to that point.
        log: String,
    },
    /// The browser for a browser test is missing or did not start.
    #[error("browser: {0}")]
    Browser(String),
    /// The OpenID provider is missing or did not start.
    #[error("OpenID provider: {0}")]
    Oidc(String),
    /// The time-stamping authority could not be set up.
    #[error("time-stamping authority: {0}")]
    Tsa(String),
    /// A test database could not be created.
    #[error("test database: {0}")]
    Database(String),
    /// A file-system or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Sends `signal` to `child`; an error for a process that already exited (ESRCH) too.
pub(crate) fn send_signal(
    child: &std::process::Child,
    signal: nix::sys::signal::Signal,
) -> std::io::Result<()> {
    let pid =
        i32::try_from(child.id()).map_err(|_| std::io::Error::other("process id out of range"))?;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).map_err(std::io::Error::from)
}

/// Signals `child` (ignoring that it may have exited already) and reaps it.
pub(crate) fn end_process(
    mut child: std::process::Child,
    signals: &[nix::sys::signal::Signal],
    context: &'static str,
) -> Result<(), HarnessError> {
    for signal in signals {
        // ESRCH means it already exited; wait() reaps it either way.
        let _ = send_signal(&child, *signal);
    }
    child.wait().map_err(HarnessError::io(context))?;
    Ok(())
}

impl HarnessError {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { context, source }
    }
}
