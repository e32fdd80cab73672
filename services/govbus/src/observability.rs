//! What the stack and its console need from the process's telemetry.

use govbus_kit::telemetry::TraceStore;
use metrics_exporter_prometheus::PrometheusHandle;

/// The process's recent traces and metrics registry.
#[derive(Debug, Clone)]
pub struct Observability {
    /// Recent traces (the console shows them).
    pub traces: TraceStore,
    /// The Prometheus registry, when a recorder is installed.
    pub metrics: Option<PrometheusHandle>,
}
