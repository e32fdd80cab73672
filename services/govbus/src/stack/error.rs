//! Why the stack could not start.

use std::path::PathBuf;
use std::time::Duration;

use govbus_natsd::NatsdError;

/// Why the stack could not start.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The data folder cannot be used.
    #[error("data folder {path}: {reason}")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The embedded NATS server did not start.
    #[error(transparent)]
    Nats(#[from] NatsdError),
    /// A service did not start.
    #[error("{service} did not start: {source}")]
    Service {
        /// The service.
        service: &'static str,
        /// Why.
        #[source]
        source: govbus_kit::StartError,
    },
    /// The console did not start.
    #[error("console did not start: {0}")]
    Console(#[from] crate::console::ConsoleError),
    /// The instance's agencies' list cannot be read.
    #[error(transparent)]
    Agencies(#[from] govbus_civil::agencies::AgenciesFileError),
    /// The REST gateway did not start.
    #[error("gateway did not start: {0}")]
    Gateway(String),
    /// The console's connection to the bus failed.
    #[error("console's bus connection: {0}")]
    ConsoleBus(#[source] govbus_bus::ConnectError),
    /// A blocking task of the start-up (starting nats-server) failed.
    #[error("start-up task: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// The TLS certificates cannot be made or read.
    #[error("certificates in {dir}: {source}")]
    Certificates {
        /// Their folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: govbus_kit::tls::TlsError,
    },
    /// The processing log's subject key or CA cannot be used.
    #[error("processing log: {0}")]
    Audit(#[from] govbus_kit::audit::AuditError),
    /// The access policy cannot be used.
    #[error(transparent)]
    Policy(#[from] govbus_kit::access::PolicyError),
    /// The shipped access policy could not be written to the data folder.
    #[error("writing the access policy {path}: {source}")]
    PolicyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A service's bus contract is inconsistent (a programming error).
    #[error("the bus contract of {service}: {reason}")]
    Contract {
        /// The service.
        service: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The services' declarations do not make a stack (a programming error): a service calls
    /// one that is not declared, or services call each other in a circle.
    #[error("the services' declarations: {0}")]
    Declarations(String),
    /// A part did not report healthy in time.
    #[error("{part} is not healthy after {waited:?}: {reason}")]
    Unhealthy {
        /// The part.
        part: String,
        /// How long it was given.
        waited: Duration,
        /// The last answer.
        reason: String,
    },
}
