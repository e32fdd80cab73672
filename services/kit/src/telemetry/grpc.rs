//! Trace context and metrics for gRPC: a server layer and a client interceptor.
//!
//! The server layer opens one `server` span per call, continuing the caller's trace from its
//! `traceparent` metadata, and records `govbus_grpc_server_requests_total` and
//! `govbus_grpc_server_duration_seconds` by service, method and status code. Health checks and
//! reflection are not traced (a console polling health would flood the trace list) but are
//! counted. The client interceptor writes the current span's context into outgoing metadata,
//! so the callee's span joins the caller's trace.
//!
//! What a call needs per method (its names, its metric handles) is made once, at the method's
//! first call, and looked up by path afterwards: a call costs no registry lookup and no string
//! built for a name or a label.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{
    FutureExt as _, SpanBuilder, SpanKind, Status, TraceContextExt as _, Tracer as _,
};
use opentelemetry::{Context as TraceContext, KeyValue, StringValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tower::{Layer, Service};

/// Adds tracing and metrics to every call a server receives.
#[derive(Debug, Clone)]
pub struct ServerTelemetryLayer {
    methods: Arc<Methods>,
}

impl ServerTelemetryLayer {
    /// For the govbus service `service` (e.g. `identity`).
    pub fn new(service: &'static str) -> Self {
        Self {
            methods: Arc::new(Methods {
                service,
                known: RwLock::new(HashMap::new()),
                other: OnceLock::new(),
                tracer: govbus_bus::trace_context::tracer(),
            }),
        }
    }
}

impl<S> Layer<S> for ServerTelemetryLayer {
    type Service = ServerTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTelemetry {
            inner,
            methods: Arc::clone(&self.methods),
        }
    }
}

/// The service [`ServerTelemetryLayer`] wraps around a server.
#[derive(Debug, Clone)]
pub struct ServerTelemetry<S> {
    inner: S,
    methods: Arc<Methods>,
}

/// Most methods a server remembers: paths beyond these (a client trying many that do not
/// exist) share one entry, so the table cannot grow without bound.
const MAX_METHODS: usize = 256;

/// The methods a server has been called with.
struct Methods {
    service: &'static str,
    known: RwLock<HashMap<Box<str>, Arc<Method>>>,
    other: OnceLock<Arc<Method>>,
    /// Records the `server` span of each call, with the OpenTelemetry API directly (see
    /// `govbus_bus::trace_context`).
    tracer: opentelemetry::global::BoxedTracer,
}

impl std::fmt::Debug for Methods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Methods")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

/// One method: its names and its metric handles.
#[derive(Debug)]
pub(crate) struct Method {
    /// `package.Service/Method`, as the access policy and the processing log name it.
    pub(crate) path: Arc<str>,
    /// The span name: the path, kept for the life of the process (methods are few).
    span_name: &'static str,
    rpc_service: StringValue,
    rpc_method: StringValue,
    service_value: StringValue,
    traced: bool,
    duration: metrics::Histogram,
    /// `govbus_grpc_server_requests_total` by status code, made at the first call with each.
    requests: [OnceLock<metrics::Counter>; 17],
    service: &'static str,
}

impl Methods {
    /// The method of `path` (`/package.Service/Method`).
    fn of(&self, path: &str) -> Arc<Method> {
        if let Some(method) = self
            .known
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
        {
            return Arc::clone(method);
        }
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(method) = known.get(path) {
            return Arc::clone(method);
        }
        if known.len() >= MAX_METHODS {
            return Arc::clone(
                self.other
                    .get_or_init(|| Arc::new(Method::new(self.service, "/unknown/unknown"))),
            );
        }
        let method = Arc::new(Method::new(self.service, path));
        known.insert(Box::from(path), Arc::clone(&method));
        method
    }
}

impl Method {
    fn new(service: &'static str, path: &str) -> Self {
        let (rpc_service, rpc_method) = split_path(path);
        let full = format!("{rpc_service}/{rpc_method}");
        Self {
            traced: !is_infrastructure(rpc_service),
            duration: metrics::histogram!(
                "govbus_grpc_server_duration_seconds",
                "service" => service,
                "method" => full.clone(),
            ),
            requests: std::array::from_fn(|_| OnceLock::new()),
            rpc_service: StringValue::from(rpc_service.to_owned()),
            rpc_method: StringValue::from(rpc_method.to_owned()),
            service_value: StringValue::from(service),
            span_name: Box::leak(full.clone().into_boxed_str()),
            path: Arc::from(full),
            service,
        }
    }

    fn count(&self, code: tonic::Code) {
        let index = usize::try_from(code as i32).unwrap_or(2).min(16);
        self.requests[index]
            .get_or_init(|| {
                metrics::counter!(
                    "govbus_grpc_server_requests_total",
                    "service" => self.service,
                    "method" => self.path.to_string(),
                    "code" => format!("{code:?}"),
                )
            })
            .increment(1);
    }
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

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let method = self.methods.of(request.uri().path());
        // For the access layer and the processing log: the handler sees the message, not the
        // route it came by.
        request
            .extensions_mut()
            .insert(crate::call_facts::CalledMethod(Arc::clone(&method.path)));
        let span = if method.traced {
            let parent = if request.headers().contains_key("traceparent") {
                TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()))
            } else {
                TraceContext::new()
            };
            let span = self.methods.tracer.build_with_context(
                SpanBuilder::from_name(method.span_name)
                    .with_kind(SpanKind::Server)
                    .with_attributes([
                        KeyValue::new("rpc.system", "grpc"),
                        KeyValue::new("rpc.service", method.rpc_service.clone()),
                        KeyValue::new("rpc.method", method.rpc_method.clone()),
                        KeyValue::new("govbus.service", method.service_value.clone()),
                    ]),
                &parent,
            );
            parent.with_span(span)
        } else {
            TraceContext::new()
        };
        let started = Instant::now();
        let traced = method.traced;
        let call = self.inner.call(request);
        Box::pin(
            async move {
                let result = call.await;
                let code = match &result {
                    Ok(response) => grpc_code(response.headers()),
                    Err(_) => tonic::Code::Internal,
                };
                if traced {
                    let current = TraceContext::current();
                    let span = current.span();
                    span.set_attribute(KeyValue::new("rpc.grpc.status_code", code as i64));
                    if is_server_error(code) {
                        span.set_status(Status::error(format!("{code:?}")));
                    }
                    span.end();
                }
                method.count(code);
                method.duration.record(started.elapsed().as_secs_f64());
                result
            }
            .with_context(span),
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
    let context = TraceContext::current();
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
