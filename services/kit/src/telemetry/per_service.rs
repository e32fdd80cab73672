//! Spans exported under the `service.name` of the service they ran in, when several services
//! run in one process (`govbus up`): a tracing backend (Jaeger, Tempo) then draws each service
//! as one of its own instead of the whole city as one. A span names its service in its
//! `govbus.service` attribute; the others (the console's, start-up) keep the process's name.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::{KeyValue, Value};
use opentelemetry_otlp::{ExporterBuildError, SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::SpanData;

use super::trace_store::SERVICE_ATTRIBUTE;

/// An OTLP exporter per service, and one for spans of no service.
#[derive(Debug)]
pub(super) struct PerServiceExporter {
    process: SpanExporter,
    services: HashMap<String, SpanExporter>,
}

impl PerServiceExporter {
    /// Exporters to `endpoint`: one for each of `services`, one for the rest.
    pub(super) fn build(endpoint: &str, services: &[String]) -> Result<Self, ExporterBuildError> {
        let exporter = || {
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.to_owned())
                .with_timeout(Duration::from_secs(5))
                .build()
        };
        let mut by_service = HashMap::with_capacity(services.len());
        for service in services {
            by_service.insert(service.clone(), exporter()?);
        }
        Ok(Self {
            process: exporter()?,
            services: by_service,
        })
    }

    /// The exporter of `span`'s service, and that service's name.
    fn exporter_of(&self, span: &SpanData) -> Option<(&str, &SpanExporter)> {
        let service = span
            .attributes
            .iter()
            .find(|attribute| attribute.key.as_str() == SERVICE_ATTRIBUTE)
            .and_then(|attribute| match &attribute.value {
                Value::String(name) => Some(name.as_str()),
                _ => None,
            })?;
        self.services
            .get_key_value(service)
            .map(|(name, exporter)| (name.as_str(), exporter))
    }
}

impl opentelemetry_sdk::trace::SpanExporter for PerServiceExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let mut of_process = Vec::new();
        let mut by_service: HashMap<&str, (&SpanExporter, Vec<SpanData>)> = HashMap::new();
        for span in batch {
            match self.exporter_of(&span) {
                Some((name, exporter)) => by_service
                    .entry(name)
                    .or_insert_with(|| (exporter, Vec::new()))
                    .1
                    .push(span),
                None => of_process.push(span),
            }
        }
        let mut outcome = Ok(());
        for (exporter, spans) in by_service.into_values() {
            if let Err(error) = exporter.export(spans).await {
                outcome = Err(error);
            }
        }
        if !of_process.is_empty()
            && let Err(error) = self.process.export(of_process).await
        {
            outcome = Err(error);
        }
        outcome
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let mut outcome = self.process.shutdown_with_timeout(timeout);
        for exporter in self.services.values() {
            if let Err(error) = exporter.shutdown_with_timeout(timeout) {
                outcome = Err(error);
            }
        }
        outcome
    }

    fn force_flush(&self) -> OTelSdkResult {
        let mut outcome = self.process.force_flush();
        for exporter in self.services.values() {
            if let Err(error) = exporter.force_flush() {
                outcome = Err(error);
            }
        }
        outcome
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.process.set_resource(resource);
        for (service, exporter) in &mut self.services {
            let own = Resource::builder_empty()
                .with_attributes(
                    resource
                        .iter()
                        .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
                )
                .with_service_name(service.clone())
                .build();
            exporter.set_resource(&own);
        }
    }
}
