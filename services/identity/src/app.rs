//! Building and running the identity service.

use std::net::SocketAddr;

use govbus_bus::{AdapterError, Bus, BusOptions, ConnectError, RunningAdapter, ServiceAdapter};
use govbus_kit::grpc::{MAX_REQUEST_BYTES, serve, server_with_health_and_reflection};
use govbus_kit::{Database, DbError, OutboxRelay, RelayHandle, RelaySettings, open_database};
use govbus_proto::FILE_DESCRIPTOR_SET;
use govbus_proto::identity::v1::identity_service_server::IdentityServiceServer;
use govbus_proto::identity::v1::{CitizenDeceased, CitizenRegistered, CitizenRelocated};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::grpc::IdentityApi;
use crate::registry::Registry;
use crate::store::MIGRATIONS;

/// The service name on the bus and in the database's migration records.
pub const SERVICE: &str = "identity";

/// Everything the identity service needs to start.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// Where gRPC listens; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The bus connection.
    pub bus: BusOptions,
    /// Outbox relay tuning.
    pub relay: RelaySettings,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Database(#[from] DbError),
    /// NATS could not be reached.
    #[error("bus: {0}")]
    Bus(#[from] ConnectError),
    /// Streams could not be provisioned.
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
}

/// A running identity service.
#[derive(Debug)]
pub struct Application {
    address: SocketAddr,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    stop_serving: CancellationToken,
    relay: RelayHandle,
    adapter: RunningAdapter,
    db: Database,
}

impl Application {
    /// Opens the database (migrating it), connects to the bus, provisions the identity stream,
    /// starts the outbox relay and the gRPC server.
    pub async fn build(config: IdentityConfig) -> Result<Self, StartError> {
        let db = open_database(&config.database_url, SERVICE, MIGRATIONS).await?;
        let bus = Bus::connect(config.bus).await?;
        let adapter = ServiceAdapter::new(SERVICE)
            .publishes::<CitizenRegistered>()
            .publishes::<CitizenRelocated>()
            .publishes::<CitizenDeceased>()
            .start(&bus)
            .await?;
        let relay = OutboxRelay::new(db.clone(), adapter.publisher().clone(), config.relay).spawn();
        let registry = Registry::new(db.clone(), adapter.publisher().clone(), relay.waker());

        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Listen {
                    address: config.listen,
                    source,
                })?;
        let address = listener.local_addr().map_err(|source| StartError::Listen {
            address: config.listen,
            source,
        })?;
        let router = server_with_health_and_reflection::<IdentityServiceServer<IdentityApi>>(
            FILE_DESCRIPTOR_SET,
        )
        .await?
        .add_service(
            IdentityServiceServer::new(IdentityApi::new(registry))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        );
        let stop_serving = CancellationToken::new();
        let server = tokio::spawn(serve(
            router,
            listener,
            stop_serving.clone().cancelled_owned(),
        ));
        tracing::info!(message = "Identity service listening.", %address);
        Ok(Self {
            address,
            server,
            stop_serving,
            relay,
            adapter,
            db,
        })
    }

    /// The gRPC port (useful when the configured port was 0).
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The gRPC address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting calls, lets running calls finish, stops the relay (unsent events stay in
    /// the outbox for the next start) and closes the database.
    pub async fn stop(self) {
        self.stop_serving.cancel();
        match self.server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(message = "gRPC server failed.", %error),
            Err(error) => tracing::error!(message = "gRPC server task failed.", %error),
        }
        self.relay.shutdown().await;
        self.adapter.shutdown().await;
        self.db.close().await;
    }
}
