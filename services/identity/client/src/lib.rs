//! The client other services use to verify citizens at the identity service: `VerifyCitizen`
//! with the answer as a Rust enum. A crate of its own, so that a caller links the client and the
//! contract, not identity's server.

use std::time::Duration;

use govbus_civil::Nik;
use govbus_kit::telemetry::grpc::propagate_trace_context;
use govbus_proto::identity::v1 as identity;
use govbus_proto::identity::v1::identity_service_client::IdentityServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

type TracedChannel = InterceptedService<
    Channel,
    fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>,
>;

/// What identity says of a NIK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verified {
    /// A living citizen.
    Living {
        /// The citizen's pseudonymous reference.
        citizen_ref: String,
    },
    /// A citizen whose death is recorded.
    Deceased,
    /// Not in the register.
    Unknown,
}

/// The client cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The caller's name cannot travel as gRPC metadata.
    #[error("the caller name {0:?} is not valid gRPC metadata")]
    Caller(String),
    /// The URL is not one.
    #[error("invalid identity service URL {url:?}: {source}")]
    Url {
        /// The URL given.
        url: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TLS identity cannot be used.
    #[error("TLS for the identity service: {0}")]
    Tls(#[source] tonic::transport::Error),
}

/// Identity could not answer.
#[derive(Debug, thiserror::Error)]
#[error("the identity service could not verify the citizen: {0}")]
pub struct IdentityUnavailable(pub String);

/// A client of identity's `VerifyCitizen`. Connects lazily, so welfare can start first.
#[derive(Debug, Clone)]
pub struct IdentityClient {
    client: IdentityServiceClient<TracedChannel>,
    caller: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

/// The metadata key a calling service names itself with.
pub const CALLER_METADATA: &str = "x-govbus-caller";

impl IdentityClient {
    /// A client for identity at `url` (e.g. `http://127.0.0.1:50051`), calling on behalf of the
    /// service `caller` (identity counts calls per caller as integration evidence).
    ///
    /// With `tls` the caller presents its certificate (its identity at identity is the name in
    /// it) and identity's certificate must name `identity`; the URL is then `https://…`.
    pub fn new(
        url: &str,
        caller: &str,
        tls: Option<&govbus_kit::tls::ServiceTls>,
    ) -> Result<Self, ClientError> {
        let caller = caller
            .parse()
            .map_err(|_| ClientError::Caller(caller.to_owned()))?;
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|source| ClientError::Url {
                url: url.to_owned(),
                source,
            })?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        let endpoint = match tls {
            Some(tls) => endpoint
                .tls_config(tls.client_config("identity"))
                .map_err(ClientError::Tls)?,
            None => endpoint,
        };
        Ok(Self {
            client: IdentityServiceClient::with_interceptor(
                endpoint.connect_lazy(),
                propagate_trace_context as fn(_) -> _,
            ),
            caller,
        })
    }

    /// Asks identity about `nik`.
    pub async fn verify(&self, nik: &Nik) -> Result<Verified, IdentityUnavailable> {
        let mut request = tonic::Request::new(identity::VerifyCitizenRequest {
            nik: nik.as_str().to_owned(),
            ..Default::default()
        });
        request
            .metadata_mut()
            .insert(CALLER_METADATA, self.caller.clone());
        let response = self
            .client
            .clone()
            .verify_citizen(request)
            .await
            .map_err(|status| {
                IdentityUnavailable(format!("{:?}: {}", status.code(), status.message()))
            })?
            .into_inner();
        Ok(match response.result() {
            identity::VerificationResult::Match => Verified::Living {
                citizen_ref: response.citizen_ref,
            },
            identity::VerificationResult::Deceased => Verified::Deceased,
            identity::VerificationResult::NoMatch | identity::VerificationResult::Unspecified => {
                Verified::Unknown
            }
        })
    }
}
