//! The gRPC side of a service: serving with health and reflection, and mapping domain errors to
//! statuses with details.

use std::future::Future;

use std::convert::Infallible;

use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::transport::Server;
use tower::ServiceBuilder;

use crate::access::{AccessLayer, AccessPolicy};
use crate::in_process::InProcessChannel;
use crate::telemetry::grpc::ServerTelemetryLayer;

/// A service's gRPC services, served behind the telemetry and access layers: over the network
/// by [`serve`], and to callers in the same process by [`ServiceRouter::in_process`].
#[derive(Debug, Clone)]
pub struct ServiceRouter {
    service: &'static str,
    access: Option<AccessPolicy>,
    routes: Routes,
}

impl ServiceRouter {
    /// Adds a gRPC service.
    #[must_use]
    pub fn add_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes = self.routes.add_service(service);
        self
    }

    /// The services for `caller` in this process: every call passes the same telemetry and
    /// access layers as one over the network, with `caller` as the certificate would name it.
    pub fn in_process(&self, caller: &str) -> InProcessChannel {
        InProcessChannel::new(
            caller,
            ServiceBuilder::new()
                // Outermost first, as on the network.
                .layer(ServerTelemetryLayer::new(self.service))
                .layer(AccessLayer::new(self.service, self.access.clone()))
                .service(self.routes.clone().prepare()),
        )
    }
}
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// Largest request a govbus service accepts (bytes).
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// One invalid request field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field path, e.g. `address.kelurahan_code`.
    pub field: String,
    /// What is wrong, in words the caller can act on. Never echoes personal data.
    pub description: String,
}

impl Violation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }
}

/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// Collects every invalid field of a request, so all are reported at once.
#[derive(Debug, Default)]
pub struct FieldProblems(Vec<Violation>);

impl FieldProblems {
    /// Keeps the value, or records why `field` is invalid.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &str,
        outcome: Result<T, E>,
    ) -> Option<T> {
        match outcome {
            Ok(value) => Some(value),
            Err(problem) => {
                self.0.push(Violation::new(field, problem.to_string()));
                None
            }
        }
    }

    /// Records a problem.
    pub fn push(&mut self, field: &str, problem: impl Into<String>) {
        self.0.push(Violation::new(field, problem));
    }

    /// Checks a client's idempotency key (empty means none).
    pub fn check_idempotency_key(&mut self, key: &str) {
        if key.len() > MAX_IDEMPOTENCY_KEY || key.chars().any(char::is_control) {
            self.push(
                "idempotency_key",
                format!("must be at most {MAX_IDEMPOTENCY_KEY} bytes without control characters"),
            );
        }
    }

    /// Adds the problems of another check.
    pub fn extend(&mut self, violations: impl IntoIterator<Item = Violation>) {
        self.0.extend(violations);
    }

    /// Whether nothing was wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The problems as `InvalidArgument` with details.
    pub fn into_status(self) -> Status {
        invalid_argument(&self.0)
    }

    /// The problems found.
    pub fn into_violations(self) -> Vec<Violation> {
        self.0
    }
}

/// The idempotency key of a request, if the client sent one.
pub fn idempotent(
    scope: &'static str,
    key: &str,
    request: &impl prost::Message,
) -> Option<govbus_storage::IdempotentRequest> {
    (!key.is_empty())
        .then(|| govbus_storage::IdempotentRequest::new(scope, key, &request.encode_to_vec()))
}

/// The request id a client sent (`x-request-id`), or a new one: it names the transaction the
/// command's events belong to.
pub fn causality<T>(request: &tonic::Request<T>) -> govbus_bus::Causality {
    let request_id = request
        .metadata()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    govbus_bus::Causality::request(request_id)
}

/// `InvalidArgument` with a `google.rpc.BadRequest` listing every violation.
pub fn invalid_argument(violations: &[Violation]) -> Status {
    let summary = violations
        .iter()
        .map(|violation| violation.field.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid request: {summary}"),
        ErrorDetails::with_bad_request(
            violations
                .iter()
                .map(|violation| FieldViolation::new(&violation.field, &violation.description))
                .collect::<Vec<_>>(),
        ),
    )
}

/// A database failure as a status: a concurrent duplicate is `ABORTED` and a busy or unreachable
/// database `UNAVAILABLE` (both worth a retry); anything else is `INTERNAL`, with the details in
/// the log only.
pub fn database_status(error: &govbus_storage::DbError) -> Status {
    if error.is_unique_violation() {
        Status::aborted(
            "a concurrent request changed the same data or used the same idempotency key; retry",
        )
    } else if error.is_transient() {
        tracing::warn!(message = "Database busy.", %error);
        Status::unavailable("the service is busy; retry")
    } else {
        internal_status(error)
    }
}

/// A failure that is the service's own fault: `INTERNAL`, with the details in the log only.
pub fn internal_status(error: &dyn std::fmt::Display) -> Status {
    tracing::error!(message = "Request failed.", %error);
    Status::internal("the service could not complete the request")
}

/// The field violations carried by a status, for clients and tests.
pub fn violations_of(status: &Status) -> Vec<Violation> {
    status
        .get_details_bad_request()
        .map(|bad_request| {
            bad_request
                .field_violations
                .into_iter()
                .map(|violation| Violation::new(violation.field, violation.description))
                .collect()
        })
        .unwrap_or_default()
}

/// A server with the standard health service (reporting `S` as serving) and server reflection
/// (v1 and v1alpha) over `descriptors`, so `grpcurl` can list and call it. Reflection lists `S`,
/// health and reflection itself: the services this port serves, not every contract in
/// `descriptors`.
///
/// Every call is traced and counted (see [`crate::telemetry::grpc`]) under `service`, the govbus
/// service name (e.g. `identity`).
///
/// Mutual TLS is set up where the server accepts its connections ([`serve`]).
pub async fn server_with_health_and_reflection<S>(
    service: &'static str,
    descriptors: &'static [u8],
    access: Option<AccessPolicy>,
) -> Result<ServiceRouter, tonic_reflection::server::Error>
where
    S: NamedService,
{
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(S::NAME, tonic_health::ServingStatus::Serving)
        .await;
    // The descriptor set holds every govbus contract; reflection lists only what this port
    // serves, so that a tool never offers a method that would answer UNIMPLEMENTED here.
    let reflection = |reflection_service: &str| {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(descriptors)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .with_service_name(S::NAME)
            .with_service_name(tonic_health::pb::health_server::SERVICE_NAME)
            .with_service_name(reflection_service)
    };
    // Both reflection versions: older grpcurl and IDE plugins speak only v1alpha.
    let routes = Routes::new(health)
        .add_service(
            reflection(tonic_reflection::pb::v1::server_reflection_server::SERVICE_NAME)
                .build_v1()?,
        )
        .add_service(
            reflection(tonic_reflection::pb::v1alpha::server_reflection_server::SERVICE_NAME)
                .build_v1alpha()?,
        );
    Ok(ServiceRouter {
        service,
        access,
        routes,
    })
}

/// Serves `router` on `listener` until `shutdown` completes: mutual TLS with `tls` when given,
/// the caller read from its certificate once per connection, TCP_NODELAY on every connection
/// (see [`crate::peer`]).
pub async fn serve(
    router: ServiceRouter,
    listener: TcpListener,
    tls: Option<crate::tls::ServerTls>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    Server::builder()
        // Outermost first: refused calls are traced and counted too.
        .layer(ServerTelemetryLayer::new(router.service))
        .layer(AccessLayer::new(router.service, router.access))
        .add_routes(router.routes)
        .serve_with_incoming_shutdown(crate::peer::incoming(listener, tls), shutdown)
        .await
}
