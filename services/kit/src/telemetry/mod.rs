//! Logs, traces and metrics for a govbus process.
//!
//! [`Telemetry::install`] sets up, once per process:
//!
//! - logs on standard error (text or JSON lines), filtered like `RUST_LOG`;
//! - traces: every `tracing` span becomes an OpenTelemetry span, kept in a bounded in-memory
//!   [`TraceStore`] (for the console and `govbus trace`) and, when an endpoint is configured,
//!   exported over OTLP/gRPC to any OpenTelemetry collector, Jaeger or Tempo;
//! - metrics: the `metrics` facade recorded into a Prometheus registry, rendered on demand.
//!
//! Trace context crosses services in W3C `traceparent` headers: gRPC metadata (see [`grpc`]) and
//! NATS message headers (see `govbus_bus::trace_context`).
//!
//! No personal data goes into a span attribute, log field or metric label: spans name methods,
//! subjects, event types and pseudonymous references only.

pub mod grpc;
mod per_service;
pub mod trace_store;

use std::io::IsTerminal as _;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

pub use trace_store::{RecordedSpan, TraceStore, TraceSummary};

/// Latency buckets (seconds) for every `*_seconds` histogram: 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// What [`Telemetry::install`] sets up.
#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    /// `service.name` of exported spans (`govbus` when the whole stack runs in one process).
    pub service_name: String,
    /// The services running in this process whose spans (those with their name in
    /// `govbus.service`) are exported under their own `service.name`; the rest under
    /// [`Self::service_name`].
    pub span_services: Vec<String>,
    /// Log filter in `RUST_LOG` syntax, e.g. `info` or `warn,govbus_bus=debug`.
    pub log_filter: String,
    /// Text or JSON logs.
    pub log_format: LogFormat,
    /// OTLP/gRPC endpoint (e.g. `http://127.0.0.1:4317`); `None` exports nothing.
    pub otlp_endpoint: Option<String>,
    /// Traces kept in memory for the console.
    pub keep_traces: usize,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            service_name: "govbus".to_owned(),
            span_services: Vec::new(),
            log_filter: "info".to_owned(),
            log_format: LogFormat::Text,
            otlp_endpoint: None,
            keep_traces: 2_000,
        }
    }
}

impl TelemetrySettings {
    /// Settings for a service binary run on its own: `service.name` is `service`; the log
    /// filter comes from `GOVBUS_LOG` (default `info`), the format from
    /// `GOVBUS_TELEMETRY_LOG_FORMAT` (`text` or `json`), the OTLP endpoint from
    /// `GOVBUS_TELEMETRY_OTLP_ENDPOINT` — the names `govbus up` reads too.
    pub fn from_env(service: &str) -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
        Self {
            service_name: service.to_owned(),
            span_services: Vec::new(),
            log_filter: var("GOVBUS_LOG").unwrap_or_else(|| "info".to_owned()),
            log_format: match var("GOVBUS_TELEMETRY_LOG_FORMAT").as_deref() {
                Some("json") => LogFormat::Json,
                _ => LogFormat::Text,
            },
            otlp_endpoint: var("GOVBUS_TELEMETRY_OTLP_ENDPOINT"),
            keep_traces: 100,
        }
    }
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The log filter does not parse.
    #[error("log filter {filter:?}: {source}")]
    Filter {
        /// The filter given.
        filter: String,
        /// Why it does not parse.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter for {endpoint}: {source}")]
    Otlp {
        /// The endpoint given.
        endpoint: String,
        /// Why.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
    /// Another subscriber or metrics recorder is already installed in this process.
    #[error("telemetry is already installed in this process: {0}")]
    AlreadyInstalled(String),
}

/// Installed telemetry: the trace store and the metrics registry.
#[derive(Debug)]
pub struct Telemetry {
    traces: TraceStore,
    metrics: PrometheusHandle,
    provider: SdkTracerProvider,
}

impl Telemetry {
    /// Installs logs, traces and metrics for this process. Must run inside a Tokio runtime
    /// (the OTLP exporter runs on it).
    pub fn install(settings: &TelemetrySettings) -> Result<Self, TelemetryError> {
        let filter =
            EnvFilter::try_new(&settings.log_filter).map_err(|source| TelemetryError::Filter {
                filter: settings.log_filter.clone(),
                source,
            })?;
        let traces = TraceStore::new(settings.keep_traces);
        let mut provider = SdkTracerProvider::builder()
            .with_resource(
                Resource::builder_empty()
                    .with_attributes([
                        KeyValue::new("service.name", settings.service_name.clone()),
                        KeyValue::new("service.namespace", "govbus"),
                        KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
                    ])
                    .build(),
            )
            .with_span_processor(traces.processor());
        if let Some(endpoint) = &settings.otlp_endpoint {
            let exporter =
                per_service::PerServiceExporter::build(endpoint, &settings.span_services).map_err(
                    |source| TelemetryError::Otlp {
                        endpoint: endpoint.clone(),
                        source,
                    },
                )?;
            let batch =
                opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
                    exporter,
                    opentelemetry_sdk::runtime::Tokio,
                )
                .build();
            provider = provider.with_span_processor(batch);
        }
        let provider = provider.build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        // The spans made for every call and event use the OpenTelemetry API directly
        // (`govbus_bus::trace_context`), through the global provider.
        opentelemetry::global::set_tracer_provider(provider.clone());
        let tracer = provider.tracer("govbus");

        let logs = match settings.log_format {
            LogFormat::Text => tracing_subscriber::fmt::layer()
                // Colours only for a person at a terminal, not in a log file or a journal.
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_span_list(false)
                .with_writer(std::io::stderr)
                .boxed(),
        };
        // Spans reach OpenTelemetry whatever the log level: a trace must be whole even when
        // the logs are quiet.
        tracing_subscriber::registry()
            .with(logs.with_filter(filter))
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    // Every handled event ends a span; thread names (always a runtime worker's),
                    // source locations and busy/idle timings on each cost a consumer about 4 %
                    // of its throughput and tell an operator nothing the span's name and
                    // attributes do not.
                    .with_threads(false)
                    .with_location(false)
                    .with_tracked_inactivity(false)
                    .with_filter(EnvFilter::new("info,h2=off,hyper=off,tower=off")),
            )
            .try_init()
            .map_err(|error| TelemetryError::AlreadyInstalled(error.to_string()))?;

        let metrics = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), LATENCY_BUCKETS)
            .map_err(|error| TelemetryError::AlreadyInstalled(error.to_string()))?
            .install_recorder()
            .map_err(|error| TelemetryError::AlreadyInstalled(error.to_string()))?;
        Ok(Self {
            traces,
            metrics,
            provider,
        })
    }

    /// Recent traces.
    pub fn traces(&self) -> &TraceStore {
        &self.traces
    }

    /// The metrics registry, for rendering.
    pub fn metrics(&self) -> &PrometheusHandle {
        &self.metrics
    }

    /// Flushes spans still waiting for export.
    pub fn shutdown(self) {
        if let Err(error) = self.provider.shutdown() {
            tracing::warn!(message = "Trace export did not shut down cleanly.", %error);
        }
    }
}
