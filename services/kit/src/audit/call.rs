//! Recording the gRPC calls a service serves.

use std::sync::Arc;

use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::entry::EntryKind;
use super::subject::DataSubject;
use super::writer::{Processing, ProcessingLog};

/// The purpose the access policy's grant states for a call; put in the request's extensions
/// by [`crate::access::AccessLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantedPurpose(pub Arc<str>);

/// The method a request was routed to (`package.Service/Method`); put in the request's
/// extensions by [`crate::access::AccessLayer`], which wraps every govbus server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalledMethod(pub Arc<str>);

/// Who called which method, why, and in which trace: taken from a request before its message
/// is unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    caller: String,
    method: String,
    purpose: String,
    trace_id: Option<String>,
}

impl CallContext {
    /// The context of `request`: the caller named by its certificate, the method tonic routed
    /// it to, the purpose of the grant that let it through, the current trace.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        let caller =
            crate::tls::caller_of_request(request).unwrap_or_else(|| "(no certificate)".to_owned());
        let method = request.extensions().get::<CalledMethod>().map_or_else(
            || "(unknown method)".to_owned(),
            |method| method.0.to_string(),
        );
        let purpose = request.extensions().get::<GrantedPurpose>().map_or_else(
            || "(no purpose granted)".to_owned(),
            |purpose| purpose.0.to_string(),
        );
        let span_context = tracing::Span::current()
            .context()
            .span()
            .span_context()
            .clone();
        let trace_id = span_context
            .is_valid()
            .then(|| span_context.trace_id().to_string());
        Self {
            caller,
            method,
            purpose,
            trace_id,
        }
    }

    /// The calling service.
    pub fn caller(&self) -> &str {
        &self.caller
    }
}

/// A service's recorder of served calls; does nothing when the processing log is off (servers
/// without TLS, which cannot sign).
#[derive(Debug, Clone, Default)]
pub struct CallAudit(Option<ProcessingLog>);

impl CallAudit {
    /// Records into `log`, if there is one.
    pub fn new(log: Option<ProcessingLog>) -> Self {
        Self(log)
    }

    /// Records that `call` processed `subject`'s data.
    pub fn record(&self, call: &CallContext, subject: DataSubject<'_>) {
        if let Some(log) = &self.0 {
            log.record(Processing {
                kind: EntryKind::Call,
                requester: &call.caller,
                action: &call.method,
                purpose: &call.purpose,
                subject,
                trace_id: call.trace_id.as_deref(),
            });
        }
    }
}
