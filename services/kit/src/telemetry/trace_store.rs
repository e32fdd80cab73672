//! Recent traces kept in memory, so an operator can read them without a tracing backend.
//!
//! The store is an OpenTelemetry span processor: every finished span lands here, grouped by
//! trace. It keeps the most recent traces up to a bound and drops the oldest whole trace first,
//! so memory stays flat however long the stack runs. Spans are kept as the SDK hands them over
//! and turned into text only when someone reads them: every event a service handles ends a
//! span, and converting each one up front cost a consumer an eighth of its throughput.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{SpanId, SpanKind, Status, TraceId};
use opentelemetry::{Context, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

/// The span attribute naming the govbus service a span ran in.
pub const SERVICE_ATTRIBUTE: &str = "govbus.service";

/// Spans kept per trace; a runaway trace (a loop of events) cannot take all the memory.
const MAX_SPANS_PER_TRACE: usize = 1_000;

/// One finished span.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RecordedSpan {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// The parent's span id, absent for a root span.
    pub parent_span_id: Option<String>,
    /// What the span did, e.g. `process govbus.identity.citizen.deceased.v1`.
    pub name: String,
    /// The govbus service it ran in, when known.
    pub service: Option<String>,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    pub kind: std::borrow::Cow<'static, str>,
    /// Start, in microseconds since the Unix epoch.
    pub start_unix_micros: u64,
    /// How long it took, in microseconds.
    pub duration_micros: u64,
    /// The error it ended with, if any.
    pub error: Option<String>,
    /// Its attributes, as text.
    pub attributes: Vec<(String, String)>,
}

/// A trace in the list of recent traces.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TraceSummary {
    /// 32 hex digits.
    pub trace_id: String,
    /// The root span's name (or the earliest span's, while the root is still running).
    pub root: String,
    /// The service of the root span.
    pub root_service: Option<String>,
    /// Every service the trace passed through, sorted.
    pub services: Vec<String>,
    /// Start of the earliest span, in microseconds since the Unix epoch.
    pub start_unix_micros: u64,
    /// From the earliest start to the latest end, in microseconds.
    pub duration_micros: u64,
    /// Spans recorded.
    pub spans: usize,
    /// Spans that ended with an error.
    pub errors: usize,
}

/// Recent traces, shared between the span processor and whoever reads them.
#[derive(Debug, Clone)]
pub struct TraceStore {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    traces: HashMap<TraceId, Vec<SpanData>>,
    /// Trace ids from oldest to newest first span seen.
    order: VecDeque<TraceId>,
}

impl TraceStore {
    /// A store keeping up to `capacity` traces (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                capacity: capacity.max(1),
                traces: HashMap::new(),
                order: VecDeque::new(),
            })),
        }
    }

    /// The span processor feeding this store.
    pub fn processor(&self) -> TraceStoreProcessor {
        TraceStoreProcessor(self.clone())
    }

    /// Up to `limit` most recent traces, newest first.
    pub fn recent(&self, limit: usize) -> Vec<TraceSummary> {
        let inner = self.lock();
        inner
            .order
            .iter()
            .rev()
            .take(limit)
            .filter_map(|id| inner.traces.get(id))
            .filter_map(|spans| summarise(spans))
            .collect()
    }

    /// The spans of one trace, in start order; `None` when it is not (or no longer) kept.
    pub fn get(&self, trace_id: &str) -> Option<Vec<RecordedSpan>> {
        let id = TraceId::from_hex(trace_id).ok()?;
        // Copied out first: spans end (and take the lock) on every service's hot path.
        let kept = self.lock().traces.get(&id)?.clone();
        let mut spans: Vec<RecordedSpan> = kept.iter().map(record_of).collect();
        spans.sort_by_key(|span| span.start_unix_micros);
        // A span without a service ran inside its parent's (a handler's span inside the call's).
        let mut services: HashMap<String, String> = HashMap::new();
        for span in &mut spans {
            if span.service.is_none() {
                span.service = span
                    .parent_span_id
                    .as_ref()
                    .and_then(|parent| services.get(parent).cloned());
            }
            if let Some(service) = &span.service {
                services.insert(span.span_id.clone(), service.clone());
            }
        }
        Some(spans)
    }

    /// How many traces are kept.
    pub fn len(&self) -> usize {
        self.lock().traces.len()
    }

    /// Whether no trace is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves whole spans behind; the data stays usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, span: SpanData) {
        let trace_id = span.span_context.trace_id();
        let recorded = span;
        let mut inner = self.lock();
        if let Some(spans) = inner.traces.get_mut(&trace_id) {
            if spans.len() < MAX_SPANS_PER_TRACE {
                spans.push(recorded);
            }
            return;
        }
        while inner.order.len() >= inner.capacity {
            match inner.order.pop_front() {
                Some(oldest) => {
                    inner.traces.remove(&oldest);
                }
                None => break,
            }
        }
        inner.order.push_back(trace_id);
        inner.traces.insert(trace_id, vec![recorded]);
    }
}

/// Feeds finished spans into a [`TraceStore`].
#[derive(Debug)]
pub struct TraceStoreProcessor(TraceStore);

impl SpanProcessor for TraceStoreProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        self.0.record(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

fn record_of(span: &SpanData) -> RecordedSpan {
    let start = micros_since_epoch(span.start_time);
    let end = micros_since_epoch(span.end_time);
    let mut service = None;
    let attributes = span
        .attributes
        .iter()
        .map(|attribute| {
            let value = text_of(&attribute.value);
            if attribute.key.as_str() == SERVICE_ATTRIBUTE {
                service = Some(value.clone());
            }
            (attribute.key.as_str().to_owned(), value)
        })
        .collect();
    let parent = (span.parent_span_id != SpanId::INVALID).then(|| span.parent_span_id.to_string());
    RecordedSpan {
        trace_id: span.span_context.trace_id().to_string(),
        span_id: span.span_context.span_id().to_string(),
        parent_span_id: parent,
        name: span.name.to_string(),
        service,
        kind: std::borrow::Cow::Borrowed(match span.span_kind {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
            SpanKind::Internal => "internal",
        }),
        start_unix_micros: start,
        duration_micros: end.saturating_sub(start),
        error: match &span.status {
            Status::Error { description } => Some(description.to_string()),
            Status::Ok | Status::Unset => None,
        },
        attributes,
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.as_str().to_owned(),
        other => other.to_string(),
    }
}

fn micros_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The service a span ran in, from its attributes.
fn service_of(span: &SpanData) -> Option<String> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key.as_str() == SERVICE_ATTRIBUTE)
        .map(|attribute| text_of(&attribute.value))
}

/// A trace's summary, read straight from its spans (under the store's lock, so it renders only
/// what the summary shows).
fn summarise(spans: &[SpanData]) -> Option<TraceSummary> {
    let ids: std::collections::HashSet<SpanId> = spans
        .iter()
        .map(|span| span.span_context.span_id())
        .collect();
    let earliest = spans.iter().min_by_key(|span| span.start_time)?;
    // The root is the span whose parent is not in this trace (a remote or absent parent).
    let root = spans
        .iter()
        .filter(|span| {
            span.parent_span_id == SpanId::INVALID || !ids.contains(&span.parent_span_id)
        })
        .min_by_key(|span| span.start_time)
        .unwrap_or(earliest);
    let start = micros_since_epoch(earliest.start_time);
    let end = spans
        .iter()
        .map(|span| micros_since_epoch(span.end_time))
        .max()
        .unwrap_or(start);
    let mut services: Vec<String> = spans.iter().filter_map(service_of).collect();
    services.sort();
    services.dedup();
    Some(TraceSummary {
        trace_id: root.span_context.trace_id().to_string(),
        root: root.name.to_string(),
        root_service: service_of(root),
        services,
        start_unix_micros: start,
        duration_micros: end.saturating_sub(start),
        spans: spans.len(),
        errors: spans
            .iter()
            .filter(|span| matches!(span.status, Status::Error { .. }))
            .count(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Tracer, TracerProvider as _};
    use opentelemetry_sdk::trace::SdkTracerProvider;

    #[test]
    fn keeps_the_newest_traces_and_groups_spans_by_trace() {
        let store = TraceStore::new(2);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(store.processor())
            .build();
        let tracer = provider.tracer("test");
        for name in ["first", "second", "third"] {
            tracer.in_span(name, |cx| {
                let _child = tracer.start_with_context("child", &cx);
            });
        }
        let recent = store.recent(10);
        let roots: Vec<&str> = recent.iter().map(|trace| trace.root.as_str()).collect();
        assert_eq!(roots, ["third", "second"]);
        assert!(recent.iter().all(|trace| trace.spans == 2));
        let spans = store
            .get(&recent[0].trace_id)
            .expect("the newest trace is kept");
        let root = spans
            .iter()
            .find(|span| span.name == "third")
            .expect("root");
        let child = spans
            .iter()
            .find(|span| span.name == "child")
            .expect("child");
        assert_eq!(child.parent_span_id.as_deref(), Some(root.span_id.as_str()));
        assert!(root.parent_span_id.is_none());
        assert_eq!(
            child.service, None,
            "no service recorded anywhere in this trace"
        );
    }

    #[test]
    fn an_unknown_or_malformed_trace_id_is_none() {
        let store = TraceStore::new(4);
        assert!(store.get("not hex").is_none());
        assert!(store.get("0af7651916cd43dd8448eb211c80319c").is_none());
    }
}
