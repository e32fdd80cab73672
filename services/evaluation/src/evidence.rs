//! Integration evidence, projected live from every service's events.
//!
//! For each event the projection counts the event type per publishing service (its contract:
//! type and schema, first and last seen), counts reactions between services (an event whose
//! causation type belongs to another service), adds up the calls services report receiving
//! (`*.calls.counted.v1`), and tallies licensing decisions against their deadlines. Each event costs a fixed number of keyed upserts, whatever the history.
//!
//! Events are applied in stream order, once: the projection remembers the last sequence it
//! applied per stream, in the same transaction as the counts, so a redelivery changes nothing and
//! a rebuild ([`Evidence::rebuild`]) replays each stream from its start into empty tables.

use std::collections::BTreeMap;

use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::consumer::pull::OrderedConfig;
use futures_util::StreamExt;
use govbus_bus::dead_letter::headers::REPLAY_FOR;
use govbus_bus::{Bus, Envelope, EventMeta, HandleError};
use govbus_proto::complaints::v1 as complaints;
use govbus_proto::gateway::v1 as gateway;
use govbus_proto::identity::v1 as identity;
use govbus_proto::licensing::v1 as licensing;
use govbus_storage::inbox::handle_error;
use govbus_storage::time::to_micros;
use govbus_storage::{Database, DbError, Sql};
use prost::Message;

/// One event to project.
#[derive(Debug, Clone)]
pub struct ObservedEvent<'a> {
    /// The stream it is stored in.
    pub stream: &'a str,
    /// Its sequence there.
    pub sequence: u64,
    /// Its envelope.
    pub envelope: &'a Envelope,
    /// Its payload.
    pub payload: &'a [u8],
}

/// Counts for one event type of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventCount {
    /// Publishing service.
    pub service: String,
    /// Type.
    pub event_type: String,
    /// Protobuf schema.
    pub schema: String,
    /// How many.
    pub events: u64,
    /// First seen (microseconds since the epoch).
    pub first_seen: i64,
    /// Last seen.
    pub last_seen: i64,
}

/// Reactions from one service to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowCount {
    /// The service whose event caused the reaction.
    pub from_service: String,
    /// The service that reacted.
    pub to_service: String,
    /// How many events it published in reaction.
    pub reactions: u64,
}

/// Calls from one service to another's method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallCount {
    /// The calling service.
    pub caller: String,
    /// The called service.
    pub callee: String,
    /// The gRPC method.
    pub method: String,
    /// How many calls.
    pub calls: u64,
}

/// Licensing decisions against their deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeadlineCounts {
    /// Decisions and issuances.
    pub decisions: u64,
    /// Of which within the deadline.
    pub within_deadline: u64,
    /// Deemed approved when the deadline passed.
    pub deemed_approved: u64,
}

/// The projected evidence.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EvidenceSnapshot {
    /// Event counts.
    pub events: Vec<EventCount>,
    /// Flows between services.
    pub flows: Vec<FlowCount>,
    /// Calls between services.
    pub calls: Vec<CallCount>,
    /// Licensing deadlines.
    pub licensing: DeadlineCounts,
    /// Complaint handling, by measure ([`complaint_measures`]).
    pub complaints: BTreeMap<String, u64>,
    /// The uses of links beyond the instance (SPLP), per link and operation.
    pub links: Vec<LinkCount>,
}

/// How one link beyond the instance fared for one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkCount {
    /// The link, e.g. `splp`.
    pub link: String,
    /// `publish` or `call`.
    pub operation: String,
    /// Attempts that succeeded.
    pub succeeded: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// When one last succeeded (microseconds since the epoch; 0: never).
    pub last_succeeded: i64,
    /// When one last failed (0: never).
    pub last_failed: i64,
}

impl LinkCount {
    /// Whether the link works: it succeeded, and did not fail since.
    pub fn works(&self) -> bool {
        self.last_succeeded > 0 && self.last_succeeded >= self.last_failed
    }
}

/// The evidence projection over the evaluation database.
#[derive(Debug, Clone)]
pub struct Evidence {
    db: Database,
}

fn service_of(event_type: &str) -> &str {
    event_type.split('.').next().unwrap_or(event_type)
}

fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

impl Evidence {
    /// The projection in `db`.
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Applies a delivered event (from a live consumer), once.
    pub async fn on_event(
        &self,
        payload: bytes::Bytes,
        meta: EventMeta,
    ) -> Result<(), HandleError> {
        self.db
            .write(async move |tx| {
                let event = ObservedEvent {
                    stream: &meta.delivery.stream,
                    sequence: meta.delivery.stream_sequence,
                    envelope: &meta.envelope,
                    payload: &payload,
                };
                apply(tx, &event).await.map(|_| ())
            })
            .await
            .map_err(handle_error)
    }

    /// The evidence as projected now.
    pub async fn snapshot(&self) -> Result<EvidenceSnapshot, DbError> {
        let mut sql = self.db.read().await?;
        let events: Vec<(String, String, String, i64, i64, i64)> = sql
            .query_all(
                "SELECT service, event_type, data_schema, events, first_seen, last_seen
                 FROM evidence_events ORDER BY service, event_type",
                &[],
            )
            .await?;
        let flows: Vec<(String, String, i64)> = sql
            .query_all(
                "SELECT from_service, to_service, reactions FROM evidence_flows
                 ORDER BY from_service, to_service",
                &[],
            )
            .await?;
        let calls: Vec<(String, String, String, i64)> = sql
            .query_all(
                "SELECT caller, callee, method, calls FROM evidence_calls
                 ORDER BY caller, callee, method",
                &[],
            )
            .await?;
        let licensing: Option<(i64, i64, i64)> = sql
            .query_opt(
                "SELECT decisions, within_deadline, deemed_approved FROM evidence_licensing WHERE id = 1",
                &[],
            )
            .await?;
        let complaints: Vec<(String, i64)> = sql
            .query_all(
                "SELECT measure, events FROM evidence_complaints ORDER BY measure",
                &[],
            )
            .await?;
        let links: Vec<(String, String, i64, i64, i64, i64)> = sql
            .query_all(
                "SELECT link, operation, succeeded, failed, last_succeeded, last_failed
                 FROM evidence_links ORDER BY link, operation",
                &[],
            )
            .await?;
        Ok(EvidenceSnapshot {
            links: links
                .into_iter()
                .map(
                    |(link, operation, succeeded, failed, last_succeeded, last_failed)| LinkCount {
                        link,
                        operation,
                        succeeded: count(succeeded),
                        failed: count(failed),
                        last_succeeded,
                        last_failed,
                    },
                )
                .collect(),
            complaints: complaints
                .into_iter()
                .map(|(measure, events)| (measure, count(events)))
                .collect(),
            events: events
                .into_iter()
                .map(
                    |(service, event_type, schema, events, first_seen, last_seen)| EventCount {
                        service,
                        event_type,
                        schema,
                        events: count(events),
                        first_seen,
                        last_seen,
                    },
                )
                .collect(),
            flows: flows
                .into_iter()
                .map(|(from_service, to_service, reactions)| FlowCount {
                    from_service,
                    to_service,
                    reactions: count(reactions),
                })
                .collect(),
            calls: calls
                .into_iter()
                .map(|(caller, callee, method, calls)| CallCount {
                    caller,
                    callee,
                    method,
                    calls: count(calls),
                })
                .collect(),
            licensing: licensing
                .map(|(decisions, within, deemed)| DeadlineCounts {
                    decisions: count(decisions),
                    within_deadline: count(within),
                    deemed_approved: count(deemed),
                })
                .unwrap_or_default(),
        })
    }

    /// Empties the projection and replays `streams` from their first event, in one transaction;
    /// returns how many events each stream replayed. Live consumers skip what the rebuild applied.
    ///
    /// The rebuild holds the writer while it reads the streams: the service's other writes wait
    /// for it (a rebuild is an operator's occasional action).
    pub async fn rebuild(
        &self,
        bus: &Bus,
        streams: &[String],
    ) -> Result<BTreeMap<String, u64>, RebuildError> {
        let bus = bus.clone();
        let streams = streams.to_vec();
        let replayed = self
            .db
            .write(async move |tx| replay(tx, &bus, &streams).await)
            .await?;
        tracing::info!(message = "Evidence rebuilt from the streams.", ?replayed);
        Ok(replayed)
    }

    /// Makes sure every stream has a position row (see [`rebuild`](Self::rebuild)).
    pub async fn ensure_positions(&self, streams: &[String]) -> Result<(), DbError> {
        let streams = streams.to_vec();
        self.db
            .write(async move |tx| {
                for stream in &streams {
                    tx.execute(
                        "INSERT INTO evidence_positions (stream, last_sequence) VALUES ($1, 0)
                         ON CONFLICT (stream) DO NOTHING",
                        &[stream.as_str().into()],
                    )
                    .await?;
                }
                Ok(())
            })
            .await
    }
}

/// Applies one event if its sequence is past the stream's position. Returns whether it was
/// applied.
pub async fn apply(sql: &mut Sql<'_>, event: &ObservedEvent<'_>) -> Result<bool, DbError> {
    // Locked: waits for a rebuild holding the row, then reads the position it left.
    let position: Option<(i64,)> = sql
        .query_opt_for_update(
            "SELECT last_sequence FROM evidence_positions WHERE stream = $1",
            &[event.stream.into()],
        )
        .await?;
    let sequence = i64::try_from(event.sequence).unwrap_or(i64::MAX);
    if position.is_some_and(|(last,)| sequence <= last) {
        return Ok(false);
    }
    let envelope = event.envelope;
    let service = service_of(&envelope.event_type);
    let seen = to_micros(envelope.time);
    sql.execute(
        "INSERT INTO evidence_events (service, event_type, data_schema, events, first_seen, last_seen)
         VALUES ($1, $2, $3, 1, $4, $4)
         ON CONFLICT (service, event_type) DO UPDATE SET events = evidence_events.events + 1,
             data_schema = excluded.data_schema,
             first_seen = CASE WHEN excluded.first_seen < evidence_events.first_seen
                               THEN excluded.first_seen ELSE evidence_events.first_seen END,
             last_seen = CASE WHEN excluded.last_seen > evidence_events.last_seen
                              THEN excluded.last_seen ELSE evidence_events.last_seen END",
        &[
            service.into(),
            envelope.event_type.as_str().into(),
            envelope.data_schema.as_deref().unwrap_or("").into(),
            seen.into(),
        ],
    )
    .await?;
    if let Some(cause) = &envelope.causation_type {
        let from = service_of(cause);
        if from != service {
            sql.execute(
                "INSERT INTO evidence_flows (from_service, to_service, reactions) VALUES ($1, $2, 1)
                 ON CONFLICT (from_service, to_service) DO UPDATE
                     SET reactions = evidence_flows.reactions + 1",
                &[from.into(), service.into()],
            )
            .await?;
        }
    }
    if let Some((caller, callee, method, calls)) = counted_calls(service, envelope, event.payload) {
        sql.execute(
            "INSERT INTO evidence_calls (caller, callee, method, calls) VALUES ($1, $2, $3, $4)
             ON CONFLICT (caller, callee, method) DO UPDATE SET calls = evidence_calls.calls + $4",
            &[
                caller.as_str().into(),
                callee.as_str().into(),
                method.as_str().into(),
                i64::try_from(calls).unwrap_or(i64::MAX).into(),
            ],
        )
        .await?;
    }
    if envelope.event_type == "gateway.link.checked.v1"
        && let Ok(checked) = gateway::LinkChecked::decode(event.payload)
        && checked.succeeded + checked.failed > 0
    {
        let (succeeded, failed) = (
            i64::try_from(checked.succeeded).unwrap_or(i64::MAX),
            i64::try_from(checked.failed).unwrap_or(i64::MAX),
        );
        let at = |count: i64| if count > 0 { seen } else { 0 };
        sql.execute(
            "INSERT INTO evidence_links (link, operation, succeeded, failed, last_succeeded, last_failed)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (link, operation) DO UPDATE SET
                 succeeded = evidence_links.succeeded + excluded.succeeded,
                 failed = evidence_links.failed + excluded.failed,
                 last_succeeded = CASE WHEN excluded.last_succeeded > evidence_links.last_succeeded
                                       THEN excluded.last_succeeded ELSE evidence_links.last_succeeded END,
                 last_failed = CASE WHEN excluded.last_failed > evidence_links.last_failed
                                    THEN excluded.last_failed ELSE evidence_links.last_failed END",
            &[
                checked.link.as_str().into(),
                checked.operation.as_str().into(),
                succeeded.into(),
                failed.into(),
                at(succeeded).into(),
                at(failed).into(),
            ],
        )
        .await?;
    }
    let (decisions, within, deemed): (i64, i64, i64) = match envelope.event_type.as_str() {
        "licensing.licence.decided.v1" => match licensing::LicenceDecided::decode(event.payload) {
            Ok(decided) => (1, i64::from(decided.within_deadline), 0),
            Err(_) => (0, 0, 0),
        },
        "licensing.licence.deemed-approved.v1" => (0, 0, 1),
        _ => (0, 0, 0),
    };
    if decisions + deemed > 0 {
        sql.execute(
            "INSERT INTO evidence_licensing (id, decisions, within_deadline, deemed_approved)
             VALUES (1, $1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET decisions = evidence_licensing.decisions + $1,
                 within_deadline = evidence_licensing.within_deadline + $2,
                 deemed_approved = evidence_licensing.deemed_approved + $3",
            &[decisions.into(), within.into(), deemed.into()],
        )
        .await?;
    }
    for measure in complaint_measures(&envelope.event_type, event.payload) {
        sql.execute(
            "INSERT INTO evidence_complaints (measure, events) VALUES ($1, 1)
             ON CONFLICT (measure) DO UPDATE SET events = evidence_complaints.events + 1",
            &[measure.as_str().into()],
        )
        .await?;
    }
    sql.execute(
        "INSERT INTO evidence_positions (stream, last_sequence) VALUES ($1, $2)
         ON CONFLICT (stream) DO UPDATE SET last_sequence = excluded.last_sequence",
        &[event.stream.into(), sequence.into()],
    )
    .await?;
    Ok(true)
}

/// The calls a `*.calls.counted.v1` event reports: (caller, called service, method, calls). A
/// service reports the calls made to it; the gateway those it made for applications, naming
/// the service.
fn counted_calls(
    service: &str,
    envelope: &Envelope,
    payload: &[u8],
) -> Option<(String, String, String, u64)> {
    if envelope.event_type == "gateway.calls.counted.v1" {
        let counted = gateway::ApplicationCallsCounted::decode(payload).ok()?;
        return Some((
            counted.caller,
            counted.service,
            counted.method,
            counted.calls,
        ));
    }
    if !envelope.event_type.ends_with(".calls.counted.v1") {
        return None;
    }
    let counted = identity::CallsCounted::decode(payload).ok()?;
    Some((
        counted.caller,
        service.to_owned(),
        counted.method,
        counted.calls,
    ))
}

/// What a complaints event counts towards: `filed`, `accepted`, `refused`, `responded`,
/// `forwarded`, `escalated:<stage>`, and per class `on-time:<class>` (a response within its
/// deadline) or `late:<class>` (a response deadline that passed: escalated, or answered late
/// before the escalation).
pub fn complaint_measures(event_type: &str, payload: &[u8]) -> Vec<String> {
    match event_type {
        "complaints.complaint.filed.v1" => vec!["filed".to_owned()],
        "complaints.complaint.accepted.v1" => vec!["accepted".to_owned()],
        "complaints.complaint.refused.v1" => vec!["refused".to_owned()],
        "complaints.complaint.forwarded.v1" => vec!["forwarded".to_owned()],
        "complaints.complaint.responded.v1" => {
            let Ok(responded) = complaints::ComplaintResponded::decode(payload) else {
                return Vec::new();
            };
            let mut measures = vec!["responded".to_owned()];
            if responded.within_deadline {
                measures.push(format!("on-time:{}", responded.class));
            } else if !responded.was_escalated {
                measures.push(format!("late:{}", responded.class));
            }
            measures
        }
        "complaints.complaint.escalated.v1" => {
            let Ok(escalated) = complaints::ComplaintEscalated::decode(payload) else {
                return Vec::new();
            };
            let mut measures = vec![format!("escalated:{}", escalated.stage)];
            if escalated.stage == "response" {
                measures.push(format!("late:{}", escalated.class));
            }
            measures
        }
        _ => Vec::new(),
    }
}

/// Empties the projection and replays `streams` into it (see [`Evidence::rebuild`]).
async fn replay(
    sql: &mut Sql<'_>,
    bus: &Bus,
    streams: &[String],
) -> Result<BTreeMap<String, u64>, RebuildError> {
    for statement in [
        "DELETE FROM evidence_events",
        "DELETE FROM evidence_flows",
        "DELETE FROM evidence_calls",
        "DELETE FROM evidence_licensing",
        "DELETE FROM evidence_complaints",
        "DELETE FROM evidence_links",
        // Positions are updated, not deleted, so a live consumer waiting on a position row
        // reads the rebuilt one.
        "UPDATE evidence_positions SET last_sequence = 0",
    ] {
        sql.execute(statement, &[]).await?;
    }
    let mut replayed = BTreeMap::new();
    for name in streams {
        let Ok(mut stream) = bus.jetstream().get_stream(name).await else {
            replayed.insert(name.clone(), 0);
            continue;
        };
        let last = stream
            .info()
            .await
            .map_err(|e| RebuildError::Bus(e.to_string()))?
            .state
            .last_sequence;
        let mut applied = 0;
        if last > 0 {
            let consumer = stream
                .create_consumer(OrderedConfig {
                    deliver_policy: DeliverPolicy::All,
                    ..Default::default()
                })
                .await
                .map_err(|e| RebuildError::Bus(e.to_string()))?;
            let mut messages = consumer
                .messages()
                .await
                .map_err(|e| RebuildError::Bus(e.to_string()))?;
            while let Some(message) = messages.next().await {
                let message = message.map_err(|e| RebuildError::Bus(e.to_string()))?;
                let sequence = message
                    .info()
                    .map_err(|e| RebuildError::Bus(e.to_string()))?
                    .stream_sequence;
                let replay_copy = message
                    .headers
                    .as_ref()
                    .is_some_and(|h| h.get(REPLAY_FOR).is_some());
                if !replay_copy
                    && let Ok(envelope) = Envelope::from_headers(message.headers.as_ref())
                {
                    let event = ObservedEvent {
                        stream: name,
                        sequence,
                        envelope: &envelope,
                        payload: &message.payload,
                    };
                    if apply(sql, &event).await? {
                        applied += 1;
                    }
                }
                if sequence >= last {
                    break;
                }
            }
        }
        sql.execute(
            "INSERT INTO evidence_positions (stream, last_sequence) VALUES ($1, $2)
             ON CONFLICT (stream) DO UPDATE SET last_sequence = excluded.last_sequence",
            &[
                name.as_str().into(),
                i64::try_from(last).unwrap_or(i64::MAX).into(),
            ],
        )
        .await?;
        replayed.insert(name.clone(), applied);
    }
    Ok(replayed)
}

/// Why a rebuild failed.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A stream could not be read.
    #[error("reading the streams: {0}")]
    Bus(String),
}

#[cfg(test)]
mod tests {
    use govbus_proto::complaints::v1 as complaints;
    use prost::Message;

    use super::*;

    #[test]
    fn a_late_response_counts_once_whether_or_not_it_was_escalated_first() {
        let responded = |within_deadline, was_escalated| {
            complaints::ComplaintResponded {
                class: "ringan".to_owned(),
                within_deadline,
                was_escalated,
                ..Default::default()
            }
            .encode_to_vec()
        };
        let responded_type = "complaints.complaint.responded.v1";
        assert_eq!(
            complaint_measures(responded_type, &responded(true, false)),
            ["responded", "on-time:ringan"]
        );
        assert_eq!(
            complaint_measures(responded_type, &responded(false, false)),
            ["responded", "late:ringan"]
        );
        // Escalated first: the escalation already counted the deadline as missed.
        assert_eq!(
            complaint_measures(responded_type, &responded(false, true)),
            ["responded"]
        );
        let escalated = complaints::ComplaintEscalated {
            stage: "response".to_owned(),
            class: "ringan".to_owned(),
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(
            complaint_measures("complaints.complaint.escalated.v1", &escalated),
            ["escalated:response", "late:ringan"]
        );
        assert!(complaint_measures("licensing.nib.issued.v1", &[]).is_empty());
    }
}
