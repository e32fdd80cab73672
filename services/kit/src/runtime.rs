//! Starting and stopping a service: database, bus adapter, outbox relay and gRPC server.

use std::net::SocketAddr;

use govbus_bus::{AdapterError, ConnectError, RunningAdapter};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::audit::{ProcessingLog, ProcessingLogWriter, SubjectKey};
use govbus_storage::{DbError, Storage};

use crate::grpc::{ServiceRouter, serve};

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Database(#[from] DbError),
    /// NATS could not be reached.
    #[error("bus: {0}")]
    Bus(#[from] ConnectError),
    /// Streams or consumers could not be provisioned.
    #[error("bus: {0}")]
    Adapter(#[from] AdapterError),
    /// The gRPC address is taken or not allowed.
    #[error(
        "cannot listen on {address}: {source} (another process may use it; choose another address)"
    )]
    Listen {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The reflection service could not be built.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The TLS certificates cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The processing log cannot be opened.
    #[error("processing log: {0}")]
    ProcessingLog(#[from] crate::audit::AuditError),
    /// The client of another service this one calls cannot be made (an invalid address).
    #[error("{0}")]
    Dependency(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Data the service loads at start (its reference data, its rules) cannot be used.
    #[error("{what}: {source}")]
    Data {
        /// What was loaded.
        what: &'static str,
        /// Why it cannot be used.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Binds the gRPC address, failing with a message that names it.
pub async fn bind(address: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Listen { address, source })
}

/// Opens `service`'s chain of the processing log when it can sign (it has a TLS identity) and
/// has the deployment's subject key, each block stamped by `timestamps` when given; otherwise
/// the log is off and a warning says so.
pub async fn open_processing_log(
    bus: &govbus_bus::Bus,
    service: &str,
    tls: Option<&crate::tls::ServiceTls>,
    subject_key: Option<&SubjectKey>,
    timestamps: Option<crate::audit::Tsa>,
) -> Result<Option<(ProcessingLog, ProcessingLogWriter)>, StartError> {
    match (tls, subject_key) {
        (Some(tls), Some(key)) => {
            let signer = crate::audit::BlockSigner::of_service(tls)?;
            if timestamps.is_none() {
                tracing::warn!(
                    message = "No time-stamping authority: processing-log blocks carry the service's own clock only.",
                    service,
                );
            }
            Ok(Some(
                ProcessingLog::start(bus, signer, key.clone(), timestamps).await?,
            ))
        }
        (tls, key) => {
            tracing::warn!(
                message = "Processing log off: processings of personal data are not recorded.",
                service,
                tls = tls.is_some(),
                subject_key = key.is_some(),
            );
            Ok(None)
        }
    }
}

/// A running service: what [`stop`](Self::stop) shuts down, in order.
#[derive(Debug)]
pub struct ServiceRuntime {
    address: SocketAddr,
    router: ServiceRouter,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    stop_serving: CancellationToken,
    storage: Storage,
    adapter: RunningAdapter,
    processing_log: Option<ProcessingLogWriter>,
}

impl ServiceRuntime {
    /// Serves `router` on `listener`, over mutual TLS with `tls` when given; the storage (its
    /// relay), adapter and processing log are already running.
    pub fn start(
        router: ServiceRouter,
        listener: TcpListener,
        tls: Option<&crate::tls::ServiceTls>,
        storage: Storage,
        adapter: RunningAdapter,
        processing_log: Option<ProcessingLogWriter>,
    ) -> Result<Self, StartError> {
        let address = listener.local_addr().map_err(|source| StartError::Listen {
            address: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        let tls = tls
            .map(crate::tls::ServiceTls::server_tls)
            .transpose()
            .map_err(|error| StartError::Tls(error.to_string()))?;
        let stop_serving = CancellationToken::new();
        let server = tokio::spawn(serve(
            router.clone(),
            listener,
            tls,
            stop_serving.clone().cancelled_owned(),
        ));
        tracing::info!(
            message = "Service listening.",
            service = %adapter.contract().service,
            %address,
        );
        Ok(Self {
            address,
            router,
            server,
            stop_serving,
            storage,
            adapter,
            processing_log,
        })
    }

    /// What the service publishes and consumes on the bus.
    pub fn contract(&self) -> &govbus_bus::ServiceContract {
        self.adapter.contract()
    }

    /// The gRPC address (its port is the real one when port 0 was asked for).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Its gRPC services for `caller` in this process, through the same layers as over the
    /// network (see [`crate::in_process`]).
    pub fn in_process(&self, caller: &str) -> crate::in_process::InProcessChannel {
        self.router.in_process(caller)
    }

    /// The database writer's counters: commands handed to it, groups committed.
    pub fn writer_stats(&self) -> govbus_storage::WriterStats {
        self.storage.db().stats()
    }

    /// Whether this replica publishes the service's outbox now (holds its lease).
    pub fn relays(&self) -> bool {
        self.storage.relays()
    }

    /// Stops accepting calls and lets running ones finish, stops consuming (in-flight handlers
    /// finish), stops the relay (unsent events stay in the outbox for the next start) and
    /// closes the database.
    pub async fn stop(self) {
        self.stop_serving.cancel();
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(message = "gRPC server failed.", %error),
            Err(error) => tracing::error!(message = "gRPC server task failed.", %error),
        }
        self.adapter.shutdown().await;
        // After the server and consumers: nothing is processed any more, so nothing more is
        // recorded; what is queued is appended.
        if let Some(processing_log) = self.processing_log {
            processing_log.shutdown().await;
        }
        self.storage.stop().await;
    }
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM, what service managers (systemd, Kubernetes) send, and
/// names the one received.
pub async fn stop_signal() -> std::io::Result<&'static str> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => interrupted.map(|()| "Ctrl-C"),
        _ = terminate.recv() => Ok("SIGTERM"),
    }
}
