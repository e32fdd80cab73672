//! Recording the gRPC calls a service serves.

use std::sync::Arc;

use opentelemetry::trace::TraceContextExt as _;

use super::entry::EntryKind;
use super::subject::DataSubject;
use super::writer::{Processing, ProcessingLog};
use crate::call_facts::{CalledMethod, GrantedPurpose};

/// Who called which method, why, and in which trace: taken from a request before its message
/// is unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    caller: Arc<str>,
    via: Option<Arc<str>>,
    method: Arc<str>,
    purpose: Arc<str>,
    trace_id: Option<opentelemetry::trace::TraceId>,
}

/// What a call without a certificate, a routed method or a granted purpose records: made once.
fn placeholder(cell: &'static std::sync::OnceLock<Arc<str>>, text: &str) -> Arc<str> {
    Arc::clone(cell.get_or_init(|| Arc::from(text)))
}

impl CallContext {
    /// The context of `request`: the caller the access layer established (the service its
    /// certificate names, or the application the gateway called for, with the gateway), the
    /// method tonic routed it to, the purpose of the grant that let it through, the current
    /// trace.
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        static NO_CALLER: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
        static NO_METHOD: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
        static NO_PURPOSE: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
        let established = crate::call_facts::Caller::of(request);
        let caller = established
            .map(|caller| Arc::clone(&caller.name))
            .or_else(|| crate::peer::caller_of_request(request).cloned())
            .unwrap_or_else(|| placeholder(&NO_CALLER, "(no certificate)"));
        let via = established.and_then(|caller| caller.via.clone());
        let method = request.extensions().get::<CalledMethod>().map_or_else(
            || placeholder(&NO_METHOD, "(unknown method)"),
            |method| Arc::clone(&method.0),
        );
        let purpose = request.extensions().get::<GrantedPurpose>().map_or_else(
            || placeholder(&NO_PURPOSE, "(no purpose granted)"),
            |purpose| Arc::clone(&purpose.0),
        );
        // The current context is the call's `server` span (or a span inside it).
        let span_context = opentelemetry::Context::current()
            .span()
            .span_context()
            .clone();
        let trace_id = span_context.is_valid().then(|| span_context.trace_id());
        Self {
            caller,
            via,
            method,
            purpose,
            trace_id,
        }
    }

    /// The calling service or application.
    pub fn caller(&self) -> &str {
        &self.caller
    }

    /// The intermediary the call came through (the gateway), if any.
    pub fn via(&self) -> Option<&str> {
        self.via.as_deref()
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
                via: call.via.as_ref(),
                action: &call.method,
                purpose: &call.purpose,
                subject,
                trace_id: call.trace_id,
            });
        }
    }
}
