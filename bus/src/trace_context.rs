//! W3C trace context in NATS headers, so a consumer's span continues the producer's trace, and
//! the spans of the hot paths.
//!
//! The spans made for every event (`create` when one is encoded, `process` when one is handled)
//! are made with the OpenTelemetry API directly, through the process's global tracer provider:
//! each costs a fraction of a `tracing` span carried across by the bridge, and their names are
//! made once per subject. Their context is the current OpenTelemetry context while the work
//! runs, so `tracing` spans and log lines inside join the same trace. Without a provider
//! installed (tests, `--without-telemetry`) they record nothing and no `traceparent` is
//! written.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use async_nats::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry::{Context, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;

use crate::envelope::{HeaderWriter, headers};

/// The tracer govbus records its own spans with: the global provider's (set by the
/// application's telemetry), or one that records nothing. Take it once per long-lived part.
pub fn tracer() -> global::BoxedTracer {
    global::tracer("govbus")
}

/// The trace context carried in `headers` (empty without a `traceparent`).
pub fn extract(headers: Option<&HeaderMap>) -> Context {
    match headers {
        Some(headers) if headers.get(headers::TRACEPARENT).is_some() => {
            TraceContextPropagator::new().extract(&HeaderExtractor(headers))
        }
        _ => Context::new(),
    }
}

/// Writes the W3C trace context of `context`'s span into `headers`, if it has a valid one.
pub fn inject_context(context: &Context, headers: &mut impl HeaderWriter) {
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(context, &mut HeaderInjector(headers));
    }
}

/// Most span names kept for the life of the process; beyond, a name is made per span.
const MAX_NAMES: usize = 4096;

/// `"{operation} {subject}"`, made once per subject: event subjects are as many as the event
/// types, so the names kept are few.
pub(crate) fn span_name(operation: &'static str, subject: &str) -> Cow<'static, str> {
    type Names = HashMap<&'static str, HashMap<Box<str>, &'static str>>;
    static NAMES: OnceLock<Mutex<(Names, usize)>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let (by_operation, kept) = &mut *names;
    let of_operation = by_operation.entry(operation).or_default();
    if let Some(name) = of_operation.get(subject) {
        return Cow::Borrowed(name);
    }
    let name = format!("{operation} {subject}");
    if *kept >= MAX_NAMES {
        return Cow::Owned(name);
    }
    let name: &'static str = Box::leak(name.into_boxed_str());
    of_operation.insert(Box::from(subject), name);
    *kept += 1;
    Cow::Borrowed(name)
}

/// The trace id (32 hex digits) carried in a `traceparent` value.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    let mut parts = traceparent.split('-');
    let _version = parts.next()?;
    let trace_id = parts.next()?;
    (trace_id.len() == 32).then_some(trace_id)
}

struct HeaderInjector<'a, W>(&'a mut W);

impl<W: HeaderWriter> Injector for HeaderInjector<'_, W> {
    fn set(&mut self, key: &str, value: String) {
        self.0.put(key, &value);
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}
