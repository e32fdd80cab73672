//! Where the parts of a running stack listen, and gRPC channels to its services.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use govbus_kit::tls::ServiceTls;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

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

/// Where each part of a running stack listens.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Endpoints {
    /// The NATS URL the services use.
    pub nats_url: String,
    /// Whether that server is the embedded one.
    pub nats_embedded: bool,
    /// The gRPC addresses, by service.
    pub services: Vec<ServiceEndpoint>,
    /// The console, when enabled.
    pub console: Option<SocketAddr>,
    /// The REST gateway, when it runs.
    pub gateway: Option<SocketAddr>,
    /// The URL applications reach it at.
    pub gateway_url: Option<String>,
    /// The data folder.
    pub data_dir: PathBuf,
    /// The certificate folder when the services speak mutual TLS.
    pub certificates_dir: Option<PathBuf>,
}

impl Endpoints {
    /// The gRPC endpoint of `service`.
    pub fn service(&self, service: &str) -> Option<&ServiceEndpoint> {
        self.services
            .iter()
            .find(|endpoint| endpoint.name == service)
    }
}

/// Why a channel to a service cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The address does not make a URL.
    #[error("the address {address} is not usable: {source}")]
    Address {
        /// The address.
        address: SocketAddr,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TLS identity cannot be used for the channel.
    #[error("TLS: {0}")]
    Tls(#[source] tonic::transport::Error),
}

/// Why a service is not reported healthy.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// No channel could be made.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// The health check failed.
    #[error("{code:?}: {message}")]
    Call {
        /// The gRPC status.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// The service answered, but not SERVING.
    #[error("reports {0}")]
    NotServing(&'static str),
}

/// A channel to `endpoint`, over mutual TLS with `tls` (checking the server's certificate
/// names the service) or plain HTTP/2 without. It connects on first use.
pub fn grpc_channel(
    endpoint: &ServiceEndpoint,
    tls: Option<&ServiceTls>,
) -> Result<tonic::transport::Channel, ChannelError> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut channel =
        tonic::transport::Endpoint::from_shared(format!("{scheme}://{}", endpoint.address))
            .map_err(|source| ChannelError::Address {
                address: endpoint.address,
                source,
            })?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
    if let Some(tls) = tls {
        channel = channel
            .tls_config(tls.client_config(&endpoint.name))
            .map_err(ChannelError::Tls)?;
    }
    Ok(channel.connect_lazy())
}

/// Asks a service's standard gRPC health service whether it is serving.
pub async fn check_health(
    endpoint: &ServiceEndpoint,
    tls: Option<&ServiceTls>,
) -> Result<(), HealthError> {
    let channel = grpc_channel(endpoint, tls)?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|status| HealthError::Call {
            code: status.code(),
            message: status.message().to_owned(),
        })?;
    match response.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(HealthError::NotServing(other.as_str_name())),
    }
}
