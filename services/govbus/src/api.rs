//! The console's JSON API: its routes and the documents they carry, shared by the console, which
//! serves them, and the operators' commands, which read them. A renamed field or route is a
//! compile error on both sides, not a table that silently comes out empty.

use std::net::SocketAddr;

use govbus_kit::audit::{Entry, Head, Report};
use serde::{Deserialize, Serialize};

pub use govbus_kit::telemetry::{RecordedSpan, TraceSummary};

/// The header every request that changes something (a `POST`) carries, from the console's
/// pages and from the operators' commands. A page of another site cannot send it: a form cannot
/// set headers, and a script's cross-origin request with it needs a CORS permission the console
/// never gives. Without it, the console refuses the request (CSRF).
pub const CSRF_HEADER: &str = "x-govbus-console";

/// The routes, as the console's router declares them (`{name}` marks a path parameter).
pub mod paths {
    /// `GET`: [`Overview`](super::Overview).
    pub const OVERVIEW: &str = "/api/overview";
    /// `GET`: each service's [`ServiceHealth`](super::ServiceHealth).
    pub const SERVICES: &str = "/api/services";
    /// `GET`: each [`StreamView`](super::StreamView).
    pub const STREAMS: &str = "/api/streams";
    /// `GET`: each [`FlowEdge`](super::FlowEdge).
    pub const FLOW: &str = "/api/flow";
    /// `GET` with an [`EventFilter`](super::EventFilter): recent [`EventView`](super::EventView)s.
    pub const EVENTS: &str = "/api/events";
    /// `GET` with an [`EventFilter`](super::EventFilter): server-sent events, one
    /// [`EventView`](super::EventView) each.
    pub const LIVE_EVENTS: &str = "/api/events/live";
    /// `GET` with a [`Page`](super::Page): a [`DeadLetterList`](super::DeadLetterList).
    pub const DEAD_LETTERS: &str = "/api/deadletters";
    /// `POST`: [`Replayed`](super::Replayed).
    pub const REPLAY_ALL: &str = "/api/deadletters/replay-all";
    /// `GET`: a [`DeadLetterView`](super::DeadLetterView).
    pub const DEAD_LETTER: &str = "/api/deadletters/{sequence}";
    /// `POST`: [`Replayed`](super::Replayed).
    pub const REPLAY: &str = "/api/deadletters/{sequence}/replay";
    /// `GET` with a [`TraceQuery`](super::TraceQuery): [`TraceSummary`](super::TraceSummary)s.
    pub const TRACES: &str = "/api/traces";
    /// `GET`: the trace's [`RecordedSpan`](super::RecordedSpan)s.
    pub const TRACE: &str = "/api/traces/{trace_id}";
    /// `GET` with an [`SpbeQuery`](super::SpbeQuery): [`Spbe`](super::Spbe).
    pub const SPBE: &str = "/api/spbe";
    /// `GET` with a [`ComplaintsQuery`](super::ComplaintsQuery): [`Complaints`](super::Complaints).
    pub const COMPLAINTS: &str = "/api/complaints";
    /// `POST` a [`VerifyRequest`](super::VerifyRequest): [`Verified`](super::Verified).
    pub const AUDIT_VERIFY: &str = "/api/audit/verify";
    /// `POST` a [`SubjectRequest`](super::SubjectRequest): [`SubjectHistory`](super::SubjectHistory).
    pub const AUDIT_SUBJECT: &str = "/api/audit/subject";

    /// `route` with its one parameter filled in.
    pub fn with(route: &str, value: &str) -> String {
        match (route.find('{'), route.find('}')) {
            (Some(open), Some(close)) if open < close => {
                format!("{}{value}{}", &route[..open], &route[close + 1..])
            }
            _ => route.to_owned(),
        }
    }
}

/// Every failure of the API: its HTTP status says what kind, this says what.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// For people.
    pub error: String,
}

/// A service's health, as its standard gRPC health check answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceHealth {
    /// e.g. `identity`.
    pub name: String,
    /// Its gRPC address.
    pub address: SocketAddr,
    /// Whether it answered SERVING.
    pub healthy: bool,
    /// `SERVING`, or what went wrong.
    pub detail: String,
}

/// The stack at a glance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overview {
    /// govbus's version.
    pub version: String,
    /// The NATS URL the services use.
    pub nats_url: String,
    /// Whether that server is the embedded one.
    pub nats_embedded: bool,
    /// Whether the console's own connection is up.
    pub nats_connected: bool,
    /// The data folder.
    pub data_dir: String,
    /// Whether the services speak mutual TLS.
    pub tls: bool,
    /// Where their certificates are, when they do.
    pub certificates_dir: Option<String>,
    /// Each service's health.
    pub services: Vec<ServiceHealth>,
    /// Dead letters waiting, when the count could be read.
    pub dead_letters: Option<u64>,
    /// Traces the console keeps.
    pub traces_kept: usize,
}

/// A stream and its consumers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamView {
    /// e.g. `GOVBUS_IDENTITY`.
    pub name: String,
    /// The publishing service (the stream's owner), or [`DEAD_LETTER_SERVICE`].
    pub service: String,
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// The last sequence.
    pub last_sequence: u64,
    /// Messages stored per second, over the last sampling interval.
    pub publish_rate: f64,
    /// Its consumers.
    pub consumers: Vec<ConsumerView>,
}

/// The [`StreamView::service`] of the dead-letter stream.
pub const DEAD_LETTER_SERVICE: &str = "deadletter";

/// A durable consumer's position.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsumerView {
    /// Durable name.
    pub name: String,
    /// The consuming service.
    pub service: String,
    /// The event subjects it takes.
    pub filter_subjects: Vec<String>,
    /// Matching messages not yet delivered.
    pub pending: u64,
    /// Delivered, not yet acknowledged.
    pub ack_pending: u64,
    /// Redelivered at least once and not yet acknowledged.
    pub redelivered: u64,
    /// `pending + ack_pending`: what the consumer has still to finish.
    pub lag: u64,
    /// Deliveries per second, over the last sampling interval.
    pub delivery_rate: f64,
}

/// Who sends events to whom.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowEdge {
    /// The publishing service.
    pub from: String,
    /// The consuming service.
    pub to: String,
    /// The consumer carrying the flow.
    pub consumer: String,
    /// Event types (subjects without the bus prefix), `*` for all.
    pub events: Vec<String>,
    /// Deliveries per second.
    pub rate: f64,
    /// Still to be handled.
    pub lag: u64,
}

/// Which events to list or follow.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EventFilter {
    /// Only this service's events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Only this event type, e.g. `identity.citizen.deceased.v1`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// At most this many (recent events only; 50 unless given, 1,000 at most).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// An event as operators see it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventView {
    /// Stream sequence, when read from a stream.
    pub sequence: Option<u64>,
    /// NATS subject.
    pub subject: String,
    /// CloudEvents id.
    pub id: Option<String>,
    /// CloudEvents type.
    pub event_type: Option<String>,
    /// Publishing service.
    pub source: Option<String>,
    /// When it happened (RFC 3339).
    pub time: Option<String>,
    /// The correlation id shared by a chain of events.
    pub correlation_id: Option<String>,
    /// The trace it belongs to.
    pub trace_id: Option<String>,
    /// The payload as JSON with personal fields masked; `None` when it cannot be decoded.
    pub data: Option<serde_json::Value>,
    /// Why the payload could not be decoded.
    pub decode_error: Option<String>,
}

/// A page of a list.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Page {
    /// The first sequence (1 unless given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<u64>,
    /// At most this many (100 unless given, 1,000 at most).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// An event a consumer gave up on, with why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetterView {
    /// Its sequence in the dead-letter stream.
    pub sequence: u64,
    /// Why the consumer gave up.
    pub reason: String,
    /// How often it was delivered.
    pub deliveries: u64,
    /// The consuming service.
    pub service: String,
    /// The consumer that gave up.
    pub consumer: String,
    /// The stream the event came from.
    pub stream: String,
    /// Its sequence there.
    pub stream_sequence: u64,
    /// Its subject.
    pub subject: String,
    /// When it was dead-lettered (RFC 3339).
    pub dead_lettered_at: String,
    /// The event itself.
    pub event: EventView,
}

/// A page of dead letters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetterList {
    /// All dead letters waiting.
    pub count: u64,
    /// This page of them.
    pub items: Vec<DeadLetterView>,
}

/// What a replay handed back to consumers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Replayed {
    /// Dead letters replayed.
    pub replayed: usize,
}

/// How many recent traces.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TraceQuery {
    /// At most this many (100 unless given, 10,000 at most).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// Whose SPBE assessment.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SpbeQuery {
    /// The instance's region code; Kota Malang (`35.73`) unless given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// The year; the latest assessed unless given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub year: Option<i32>,
}

/// The SPBE dashboard: evaluation's answers in their proto3 JSON form.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spbe {
    /// `govbus.evaluation.v1.History`.
    pub history: serde_json::Value,
    /// `govbus.evaluation.v1.Assessment` of the year, when there is one.
    pub assessment: Option<serde_json::Value>,
    /// `govbus.evaluation.v1.IntegrationEvidence`.
    pub evidence: serde_json::Value,
}

/// Which complaints.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ComplaintsQuery {
    /// Only those with this agency (its code).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agency: Option<String>,
    /// Only those in this status: `awaiting_verification`, `refused`, `with_agency`,
    /// `responded` or `closed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// At most this many (1 to 500, 100 unless given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// From an earlier answer's `next_page_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
}

/// Complaints as operators see them: no complainant, no text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Complaints {
    /// Newest first.
    pub complaints: Vec<ComplaintRow>,
    /// Empty on the last page.
    pub next_page_token: String,
    /// Each class with the working days the agency has to respond.
    pub classes: Vec<ClassDays>,
    /// Working days verification has.
    pub verification_working_days: u32,
    /// Where the agencies' list comes from.
    pub agencies_source: String,
}

/// One complaint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ComplaintRow {
    /// Its reference.
    pub complaint_ref: String,
    /// `awaiting_verification`, `refused`, `with_agency`, `responded` or `closed`.
    pub status: String,
    /// The agency's code.
    pub agency_code: String,
    /// The agency's name.
    pub agency_name: String,
    /// What it is about.
    pub category: String,
    /// How it came.
    pub channel: String,
    /// Its class, once accepted.
    pub class: String,
    /// When the current stage is due (RFC 3339), if one is.
    pub deadline: String,
    /// The current stage passed its deadline.
    pub escalated: bool,
    /// The national channel's tracking number, once forwarded.
    pub national_ref: String,
    /// When it was filed (RFC 3339).
    pub filed_at: String,
}

/// A complaint class and its working days.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClassDays {
    /// The class.
    pub class: String,
    /// Working days the agency has.
    pub working_days: u32,
}

/// Verify the processing log, optionally against the heads an earlier verification reported.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// Where each chain ended before: a chain that ends earlier now lost entries.
    #[serde(default)]
    pub heads: Vec<Head>,
}

/// A verification, with its verdict first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verified {
    /// Whether no problem was found.
    pub intact: bool,
    /// What was checked and found.
    #[serde(flatten)]
    pub report: Report,
}

/// One person's processing history. A POST: a NIK travels in a body, never in a URL (URLs end
/// up in access logs).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectRequest {
    /// The person's NIK.
    pub nik: String,
}

/// A person's processing history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubjectHistory {
    /// Whether identity knows the NIK (then deliveries of events about the person are included).
    pub registered: bool,
    /// Whether the whole log verified intact when the history was read.
    pub log_intact: bool,
    /// Every processing recorded, oldest first.
    pub entries: Vec<Entry>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_takes_its_parameter() {
        assert_eq!(paths::with(paths::REPLAY, "7"), "/api/deadletters/7/replay");
        assert_eq!(paths::with(paths::TRACE, "ab"), "/api/traces/ab");
        assert_eq!(paths::with(paths::OVERVIEW, "x"), paths::OVERVIEW);
    }

    #[test]
    fn filters_leave_out_what_is_not_asked() {
        let query = serde_urlencoded::to_string(EventFilter {
            service: Some("identity".into()),
            event_type: Some("identity.citizen.deceased.v1".into()),
            limit: None,
        })
        .expect("encodes");
        assert_eq!(query, "service=identity&type=identity.citizen.deceased.v1");
    }
}
