//! Trace context and metrics for gRPC: a server layer and a client interceptor.
//!
//! The server layer opens one `server` span per call, continuing the caller's trace from its
//! `traceparent` metadata, and records `govbus_grpc_server_requests_total` and
//! `govbus_grpc_server_duration_seconds` by service, method and status code. Health checks and
//! reflection are not traced (a console polling health would flood the trace list) but are
//! counted. The client interceptor writes the current span's context into outgoing metadata,
//! so the callee's span joins the caller's trace.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tower::{Layer, Service};
use tracing::Instrument as _;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// Adds tracing and metrics to every call a server receives.
#[derive(Debug, Clone)]
pub struct ServerTelemetryLayer {
    service: &'static str,
}

impl ServerTelemetryLayer {
    /// For the govbus service `service` (e.g. `identity`).
    pub fn new(service: &'static str) -> Self {
        Self { service }
    }
}

impl<S> Layer<S> for ServerTelemetryLayer {
    type Service = ServerTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTelemetry {
            inner,
            service: self.service,
        }
    }
}

/// The service [`ServerTelemetryLayer`] wraps around a server.
#[derive(Debug, Clone)]
pub struct ServerTelemetry<S> {
    inner: S,
    service: &'static str,
}

impl<S, B, R> Service<http::Request<B>> for ServerTelemetry<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let (rpc_service, method) = split_path(request.uri().path());
        let (rpc_service, method) = (rpc_service.to_owned(), method.to_owned());
        let traced = !is_infrastructure(&rpc_service);
        let span = if traced {
            let span = tracing::info_span!(
                "rpc",
                otel.name = format!("{rpc_service}/{method}"),
                otel.kind = "server",
                otel.status_code = Empty,
                rpc.system = "grpc",
                rpc.service = %rpc_service,
                rpc.method = %method,
                rpc.grpc.status_code = Empty,
                govbus.service = self.service,
            );
            if request.headers().contains_key("traceparent") {
                let parent =
                    TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
                // Fails only for a disabled span; then there is nothing to link.
                let _ = span.set_parent(parent);
            }
            span
        } else {
            tracing::Span::none()
        };
        let service = self.service;
        let started = Instant::now();
        let call = self.inner.call(request);
        Box::pin(
            async move {
                let result = call.await;
                let code = match &result {
                    Ok(response) => grpc_code(response.headers()),
                    Err(_) => tonic::Code::Internal,
                };
                let current = tracing::Span::current();
                current.record("rpc.grpc.status_code", code as i32);
                if is_server_error(code) {
                    current.record("otel.status_code", "ERROR");
                }
                let labels = [
                    ("service", service.to_owned()),
                    ("method", format!("{rpc_service}/{method}")),
                ];
                metrics::counter!(
                    "govbus_grpc_server_requests_total",
                    &[
                        labels[0].clone(),
                        labels[1].clone(),
                        ("code", format!("{code:?}")),
                    ]
                )
                .increment(1);
                metrics::histogram!("govbus_grpc_server_duration_seconds", &labels)
                    .record(started.elapsed().as_secs_f64());
                result
            }
            .instrument(span),
        )
    }
}

/// A client interceptor writing the current span's trace context into the request metadata.
///
/// ```
/// # use govbus_kit::telemetry::grpc::propagate_trace_context;
/// # async fn example() {
/// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
/// let service = tonic::service::interceptor::InterceptedService::new(channel, propagate_trace_context);
/// # let _ = service;
/// # }
/// ```
pub fn propagate_trace_context(
    mut request: tonic::Request<()>,
) -> Result<tonic::Request<()>, tonic::Status> {
    let context = tracing::Span::current().context();
    TraceContextPropagator::new()
        .inject_context(&context, &mut MetadataInjector(request.metadata_mut()));
    Ok(request)
}

/// `/package.Service/Method` → (`package.Service`, `Method`).
fn split_path(path: &str) -> (&str, &str) {
    let trimmed = path.trim_start_matches('/');
    trimmed.split_once('/').unwrap_or((trimmed, ""))
}

fn is_infrastructure(rpc_service: &str) -> bool {
    rpc_service.starts_with("grpc.health.") || rpc_service.starts_with("grpc.reflection.")
}

/// The status of a response: trailers-only responses (every error tonic returns from a unary
/// handler) carry `grpc-status` in the headers; a response without it succeeded.
fn grpc_code(headers: &http::HeaderMap) -> tonic::Code {
    headers
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
        .map_or(tonic::Code::Ok, tonic::Code::from_i32)
}

/// Codes that mean the server failed, as opposed to refusing a bad or unauthorised request.
fn is_server_error(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
    )
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/govbus.identity.v1.IdentityService/VerifyCitizen"),
            ("govbus.identity.v1.IdentityService", "VerifyCitizen")
        );
        assert_eq!(split_path("/odd"), ("odd", ""));
    }

    #[test]
    fn a_missing_status_is_ok_and_a_given_one_is_read() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_code(&headers), tonic::Code::Ok);
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
        assert_eq!(grpc_code(&headers), tonic::Code::InvalidArgument);
    }
}
