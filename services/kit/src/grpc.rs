//! The gRPC side of a service: serving with health and reflection, and mapping domain errors to
//! statuses with details.

use std::future::Future;

use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::transport::Server;
use tonic::transport::server::{Router, TcpIncoming};
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
/// over `descriptors`, so `grpcurl` can list and call it.
pub async fn server_with_health_and_reflection<S>(
    descriptors: &'static [u8],
) -> Result<Router, tonic_reflection::server::Error>
where
    S: NamedService,
{
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(S::NAME, tonic_health::ServingStatus::Serving)
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(descriptors)
        .build_v1()?;
    Ok(Server::builder()
        .add_service(health)
        .add_service(reflection))
}

/// Serves `router` on `listener` until `shutdown` completes, with TCP_NODELAY on every
/// connection (without it, small responses wait for Nagle's algorithm and p99 latency jumps).
pub async fn serve(
    router: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
