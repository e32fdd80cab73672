//! A consumer's span continues the producer's trace, through real NATS headers.
//!
//! Its own test binary: it installs a global tracing subscriber with an OpenTelemetry layer
//! that records finished spans in memory.

mod common;

use std::time::Duration;

use common::{CitizenRegistered, eventually, registered, start};
use govbus_bus::{Causality, Consumer, EventMeta, HandleError, ServiceAdapter};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_span_has_the_producer_trace_id() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bus-tests")));
    tracing::subscriber::set_global_default(subscriber).expect("first subscriber");
    // The bus makes its per-event spans through the global provider, as an application's
    // telemetry sets it.
    opentelemetry::global::set_tracer_provider(provider.clone());

    let (_server, bus) = start().await;
    let identity = ServiceAdapter::new("identity")
        .publishes::<CitizenRegistered>()
        .start(&bus)
        .await
        .expect("identity starts");
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let welfare = ServiceAdapter::new("welfare")
        .consumer(Consumer::new("welfare-identity").on(
            move |_: CitizenRegistered, meta: EventMeta| {
                let sender = sender.clone();
                async move {
                    let _ = sender.send(meta);
                    Ok::<(), HandleError>(())
                }
            },
        ))
        .start(&bus)
        .await
        .expect("welfare starts");

    let request = tracing::info_span!("RegisterCitizen");
    identity
        .publisher()
        .publish_with(&registered(1), &Causality::request("request-1"))
        .instrument(request)
        .await
        .expect("published");
    let meta = tokio::time::timeout(Duration::from_secs(10), receiver.recv())
        .await
        .expect("handled in time")
        .expect("handled");
    let traceparent = meta.traceparent.expect("the producer sent a traceparent");

    welfare.shutdown().await;
    identity.shutdown().await;

    eventually("spans are exported", Duration::from_secs(10), async || {
        let spans = exporter.get_finished_spans().unwrap_or_default();
        spans.iter().any(|span| span.name.starts_with("process "))
    })
    .await;
    let spans = exporter.get_finished_spans().expect("spans");
    let find = |prefix: &str| {
        spans
            .iter()
            .find(|span| span.name.starts_with(prefix))
            .unwrap_or_else(|| panic!("no span named {prefix}…"))
    };
    let request = find("RegisterCitizen");
    let create = find("create govbus.identity.citizen.registered.v1");
    let process = find("process govbus.identity.citizen.registered.v1");
    let trace_id = request.span_context.trace_id();
    assert_eq!(create.span_context.trace_id(), trace_id);
    assert_eq!(
        process.span_context.trace_id(),
        trace_id,
        "the consumer continues the producer's trace"
    );
    assert_eq!(process.parent_span_id, create.span_context.span_id());
    assert_eq!(
        govbus_bus::trace_context::trace_id_of(&traceparent),
        Some(trace_id.to_string().as_str())
    );
    assert_eq!(process.span_kind, opentelemetry::trace::SpanKind::Consumer);
    assert_eq!(create.span_kind, opentelemetry::trace::SpanKind::Producer);
    let attribute = |name: &str| {
        process
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == name)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attribute("messaging.system").as_deref(), Some("nats"));
    assert_eq!(
        attribute("messaging.destination.name").as_deref(),
        Some("govbus.identity.citizen.registered.v1")
    );
    assert_eq!(
        attribute("messaging.consumer.group.name").as_deref(),
        Some("welfare-identity")
    );
    assert_eq!(
        attribute("messaging.message.id"),
        Some(meta.envelope.id.clone())
    );
    assert_eq!(attribute("govbus.outcome").as_deref(), Some("ack"));
}
