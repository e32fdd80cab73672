//! The web console and the operators' HTTP API, served by the stack.
//!
//! Pages are plain HTML, CSS and JavaScript compiled into the binary (no build step). They read
//! the JSON API under `/api/`, which the `govbus` operator commands use too. `/metrics` serves
//! Prometheus text; `/healthz` answers when the console runs.

mod api;
mod audit;
pub mod inspect;

pub use audit::AuditAccess;

use std::net::SocketAddr;
use std::sync::Arc;

use govbus_bus::Bus;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::stack::{Endpoints, Observability};

/// A service's name and gRPC address.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServiceEndpoint {
    /// e.g. `identity`.
    pub name: String,
    /// Its gRPC address.
    pub address: SocketAddr,
}

impl ServiceEndpoint {
    /// `name` at `address`.
    pub fn new(name: &str, address: SocketAddr) -> Self {
        Self {
            name: name.to_owned(),
            address,
        }
    }
}

/// What the console's handlers share.
#[derive(Debug, Clone)]
pub struct ConsoleState {
    inner: Arc<StateInner>,
}

#[derive(Debug)]
struct StateInner {
    bus: Bus,
    endpoints: Endpoints,
    observability: Observability,
    rates: inspect::Rates,
    /// The console's identity for its gRPC calls, when the services speak mutual TLS.
    tls: Option<govbus_kit::tls::ServiceTls>,
    /// Reading the processing log, when the stack keeps one.
    audit: Option<AuditAccess>,
    /// Cancelled when the console stops, ending open event streams.
    closing: CancellationToken,
}

impl ConsoleState {
    /// State over a bus connection of its own.
    pub fn new(
        bus: Bus,
        endpoints: Endpoints,
        observability: Observability,
        tls: Option<govbus_kit::tls::ServiceTls>,
        audit: Option<AuditAccess>,
    ) -> Self {
        Self {
            inner: Arc::new(StateInner {
                bus,
                endpoints,
                observability,
                rates: inspect::Rates::default(),
                tls,
                audit,
                closing: CancellationToken::new(),
            }),
        }
    }
}

/// A running console.
#[derive(Debug)]
pub struct Console {
    address: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Console {
    /// Binds `listen` and serves the console.
    pub async fn start(listen: SocketAddr, state: ConsoleState) -> Result<Self, String> {
        let listener = TcpListener::bind(listen).await.map_err(|error| {
            format!(
                "cannot listen on {listen}: {error} (set console.listen, e.g. --console-listen 127.0.0.1:8081)"
            )
        })?;
        let address = listener
            .local_addr()
            .map_err(|error| format!("reading the console address: {error}"))?;
        let stop = state.inner.closing.clone();
        let router = api::router(state);
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::error!(message = "Console server failed.", %error);
            }
        });
        tracing::info!(message = "Console listening.", %address);
        Ok(Self {
            address,
            stop,
            task,
        })
    }

    /// Where it listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops serving; open event streams end.
    pub async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(message = "Console task failed.", %error);
        }
    }
}
