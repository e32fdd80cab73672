//! Publishing events: encode once, send until JetStream acknowledges.
//!
//! Publishing is split in two so a transactional outbox can sit between the halves:
//! [`Publisher::encode`] turns an event into an [`OutgoingEvent`]
//! (subject, headers, payload; the event id and trace context fixed at that moment) that can be
//! stored with the state change that produced it, and [`Publisher::send`] /
//! [`Publisher::send_batch`] deliver stored events to JetStream, retrying until acknowledged.
//! Because the event id travels as `Nats-Msg-Id`, sending the same `OutgoingEvent` twice inside
//! the stream's duplicate window stores it once.

pub(crate) mod error;

pub use error::{PublishError, PublishErrorKind};

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, context::PublishErrorKind as NatsPublishErrorKind};
use bytes::Bytes;
use futures_util::future::join_all;
use opentelemetry::KeyValue;
use time::OffsetDateTime;
use tracing::{Instrument, field};
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::consumer::EventMeta;
use crate::counters::CountersByType;
use crate::envelope::{Envelope, PROTOBUF_CONTENT_TYPE};
use crate::event::{Event, EventType};
use crate::outgoing::{HeaderLines, OutgoingEvent};
use crate::topology::Topology;
use crate::trace_context;

/// How long and how often a publisher retries an unacknowledged event.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Delays between attempts.
    pub backoff: Backoff,
    /// Stop retrying after this long; `None` retries until acknowledged.
    pub give_up_after: Option<Duration>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            // A cluster electing a new stream leader answers "no responders" for a second or
            // two; retrying at least once a second resumes soon after, at the cost of a few
            // more one-message attempts during a longer outage.
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(1)),
            give_up_after: Some(Duration::from_secs(120)),
        }
    }
}

impl RetryPolicy {
    /// Stop retrying after `limit` (`None`: retry until acknowledged).
    pub fn give_up_after(mut self, limit: Option<Duration>) -> Self {
        self.give_up_after = limit;
        self
    }

    /// Use these delays between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

/// The correlation and causation ids an event carries.
///
/// - [`Causality::root`]: the event starts a transaction (its correlation id is its own id).
/// - [`Causality::request`]: the event was caused by an incoming request with this id.
/// - [`Causality::following`]: the event was caused by a consumed event and joins its transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Causality {
    correlation_id: Option<String>,
    causation_id: Option<String>,
    causation_type: Option<String>,
}

impl Causality {
    /// The event starts a new transaction.
    pub fn root() -> Self {
        Self::default()
    }

    /// The event was caused by the request `request_id`, which also names the transaction.
    pub fn request(request_id: impl Into<String>) -> Self {
        let request_id = request_id.into();
        Self {
            correlation_id: Some(request_id.clone()),
            causation_id: Some(request_id),
            causation_type: None,
        }
    }

    /// The event was caused by the consumed event `cause`.
    pub fn following(cause: &EventMeta) -> Self {
        Self {
            correlation_id: Some(cause.envelope.correlation_id.clone()),
            causation_id: Some(cause.envelope.id.clone()),
            causation_type: Some(cause.envelope.event_type.clone()),
        }
    }

    /// Explicit ids, for callers that carry them from elsewhere.
    pub fn new(correlation_id: impl Into<String>, causation_id: Option<String>) -> Self {
        Self {
            correlation_id: Some(correlation_id.into()),
            causation_id,
            causation_type: None,
        }
    }
}

const MESSAGING_SYSTEM: &str = "messaging.system";
const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
const MESSAGING_OPERATION_NAME: &str = "messaging.operation.name";
const MESSAGING_DESTINATION: &str = "messaging.destination.name";
const MESSAGING_MESSAGE_ID: &str = "messaging.message.id";
const CLOUDEVENTS_TYPE: &str = "cloudevents.event_type";
const GOVBUS_SERVICE: &str = "govbus.service";

/// Room for an event's header lines, so that writing them grows the string once at most: the
/// envelope and the trace context of a govbus event take about 520 bytes.
const HEADER_BYTES: usize = 640;

/// Where JetStream stored an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReceipt {
    /// The stream that holds it.
    pub stream: String,
    /// Its sequence number in that stream.
    pub sequence: u64,
    /// True when JetStream already had an event with this id (nothing new was stored).
    pub duplicate: bool,
}

/// Publishes the events of one service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Publisher {
    inner: Arc<PublisherInner>,
}

#[derive(Clone)]
struct PublisherInner {
    jetstream: jetstream::Context,
    topology: Arc<Topology>,
    service: String,
    source: String,
    retry: RetryPolicy,
    /// When set, only these event types may be published (the adapter's declaration).
    declared: Option<BTreeSet<&'static str>>,
    /// `govbus_events_published_total` by event type.
    published_counters: Arc<CountersByType<metrics::Counter>>,
    /// Publishes that may await their acknowledgement at once on this connection.
    max_in_flight: usize,
    /// Records the `create` span of each event encoded.
    tracer: Arc<opentelemetry::global::BoxedTracer>,
    /// The service's name as a span attribute, made once.
    service_value: opentelemetry::StringValue,
}

impl std::fmt::Debug for PublisherInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherInner")
            .field("service", &self.service)
            .field("source", &self.source)
            .field("retry", &self.retry)
            .field("declared", &self.declared)
            .field("max_in_flight", &self.max_in_flight)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub(crate) fn new(
        jetstream: jetstream::Context,
        topology: Arc<Topology>,
        service: &str,
        retry: RetryPolicy,
        max_in_flight: usize,
    ) -> Self {
        Self {
            inner: Arc::new(PublisherInner {
                jetstream,
                source: format!("/{}/{service}", topology.prefix()),
                topology,
                service: service.to_owned(),
                retry,
                declared: None,
                published_counters: Arc::default(),
                max_in_flight,
                tracer: Arc::new(trace_context::tracer()),
                service_value: opentelemetry::StringValue::from(service.to_owned()),
            }),
        }
    }

    /// A publisher that refuses event types outside `event_types`.
    pub(crate) fn restricted_to(self, event_types: impl IntoIterator<Item = &'static str>) -> Self {
        let mut inner = PublisherInner::clone(&self.inner);
        inner.declared = Some(event_types.into_iter().collect());
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The service whose events this publisher sends.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// How many publishes may await their acknowledgement at once
    /// ([`BusOptions::max_ack_inflight`](crate::BusOptions::max_ack_inflight)); a caller of
    /// [`start`](Self::start) that also retries must keep fewer than this pending, or a retry
    /// can wait for a slot that only its own pending publishes would free.
    pub fn max_in_flight(&self) -> usize {
        self.inner.max_in_flight
    }

    /// Publishes `event` as the start of a new transaction and waits for JetStream's
    /// acknowledgement, retrying per the [`RetryPolicy`].
    pub async fn publish<E: Event>(&self, event: &E) -> Result<PublishReceipt, PublishError> {
        self.publish_with(event, &Causality::root()).await
    }

    /// Publishes `event` with the given correlation and causation ids.
    pub async fn publish_with<E: Event>(
        &self,
        event: &E,
        causality: &Causality,
    ) -> Result<PublishReceipt, PublishError> {
        let outgoing = self.encode(event, causality)?;
        self.send(&outgoing).await
    }

    /// Encodes `event` for sending now or later (from an outbox).
    ///
    /// The event id (a UUIDv7), its time and the current trace context are fixed here.
    pub fn encode<E: Event>(
        &self,
        event: &E,
        causality: &Causality,
    ) -> Result<OutgoingEvent, PublishError> {
        let event_type = EventType::parse(E::TYPE)
            .map_err(|error| PublishError::with_source(PublishErrorKind::InvalidEvent, error))?;
        if event_type.service() != self.inner.service {
            return Err(PublishError::with_detail(
                PublishErrorKind::InvalidEvent,
                format!(
                    "{} belongs to service {:?}; this publisher is for {:?}",
                    E::TYPE,
                    event_type.service(),
                    self.inner.service
                ),
            ));
        }
        if let Some(declared) = &self.inner.declared
            && !declared.contains(E::TYPE)
        {
            return Err(PublishError::with_detail(
                PublishErrorKind::InvalidEvent,
                format!(
                    "{} is not declared by the {} adapter; add .publishes::<{}>()",
                    E::TYPE,
                    self.inner.service,
                    E::NAME
                ),
            ));
        }
        let id = Uuid::now_v7().to_string();
        let subject = self.inner.topology.event_subject(E::TYPE);
        let envelope = Envelope {
            correlation_id: causality
                .correlation_id
                .clone()
                .unwrap_or_else(|| id.clone()),
            causation_id: causality.causation_id.clone(),
            causation_type: causality.causation_type.clone(),
            id,
            source: self.inner.source.clone(),
            event_type: E::TYPE.to_owned(),
            time: OffsetDateTime::now_utc(),
            subject: event.subject().map(|subject| subject.into_owned()),
            data_content_type: PROTOBUF_CONTENT_TYPE.to_owned(),
            data_schema: Some(E::full_name()),
        };
        let mut headers = HeaderLines::with_capacity(HEADER_BYTES);
        envelope.write_headers(&mut headers);
        // The producer span of the event: a child of the current context (the call or the
        // handled event that produced it), over at once; its context travels in the headers.
        let span = {
            use opentelemetry::trace::{SpanBuilder, SpanKind, Tracer as _};
            let builder = SpanBuilder::from_name(trace_context::span_name("create", &subject))
                .with_kind(SpanKind::Producer)
                .with_attributes([
                    KeyValue::new(MESSAGING_SYSTEM, "nats"),
                    KeyValue::new(MESSAGING_OPERATION_TYPE, "create"),
                    KeyValue::new(MESSAGING_OPERATION_NAME, "create"),
                    KeyValue::new(MESSAGING_DESTINATION, subject.clone()),
                    KeyValue::new(MESSAGING_MESSAGE_ID, envelope.id.clone()),
                    KeyValue::new(CLOUDEVENTS_TYPE, E::TYPE),
                    KeyValue::new(GOVBUS_SERVICE, self.inner.service_value.clone()),
                ]);
            let parent = opentelemetry::Context::current();
            self.inner.tracer.build_with_context(builder, &parent)
        };
        let context = opentelemetry::trace::TraceContextExt::current_with_span(span);
        trace_context::inject_context(&context, &mut headers);
        opentelemetry::trace::TraceContextExt::span(&context).end();
        Ok(OutgoingEvent::new(
            envelope.id,
            subject,
            headers,
            Bytes::from(event.encode_to_vec()),
        ))
    }

    /// Sends one encoded event and waits for its acknowledgement, retrying per the policy.
    pub async fn send(&self, event: &OutgoingEvent) -> Result<PublishReceipt, PublishError> {
        let span = send_span(&self.inner.service, event.subject(), 1);
        span.record("messaging.message.id", event.id());
        self.send_with_retry(event).instrument(span).await
    }

    /// Sends `event` now and returns without waiting for JetStream's acknowledgement, for
    /// callers that keep many publishes in flight (the outbox relay). Await
    /// [`PendingPublish::first_attempt`] in the order of sending. Waits while [`max_in_flight`](Self::max_in_flight) publishes
    /// already await theirs, or while the connection's command queue is full (a disconnected
    /// client, up to the request timeout; the acknowledgement then reports the failure).
    pub async fn start(&self, event: OutgoingEvent) -> PendingPublish {
        let ack = self.start_send(&event).await;
        PendingPublish {
            publisher: self.clone(),
            event,
            ack,
        }
    }

    /// The span of sending `count` events at once, the first on `subject`: for callers that
    /// [`start`](Self::start) publishes themselves.
    pub fn batch_span(&self, subject: &str, count: usize) -> tracing::Span {
        send_span(&self.inner.service, subject, count)
    }

    /// Sends several encoded events with their acknowledgements pipelined, then retries any that
    /// were not acknowledged. Results come back in the order of `events`.
    pub async fn send_batch(
        &self,
        events: &[OutgoingEvent],
    ) -> Vec<Result<PublishReceipt, PublishError>> {
        let span = send_span(
            &self.inner.service,
            events.first().map(OutgoingEvent::subject).unwrap_or(""),
            events.len(),
        );
        async {
            let mut pending = Vec::with_capacity(events.len());
            for event in events {
                pending.push(self.start(event.clone()).await);
            }
            let first_attempts =
                join_all(pending.into_iter().map(PendingPublish::first_attempt)).await;
            let mut results = Vec::with_capacity(events.len());
            for first_attempt in first_attempts {
                results.push(match first_attempt {
                    Ok(receipt) => Ok(receipt),
                    Err(failed) => failed.retry().await,
                });
            }
            results
        }
        .instrument(span)
        .await
    }

    /// The message ids (`Nats-Msg-Id`) stored in this service's stream after stream sequence
    /// `sequence`, of at most the last `limit` messages: what a relay taking over must not
    /// send again (JetStream drops a repeated id only inside its duplicate window). Empty when
    /// the stream does not exist yet.
    pub async fn stored_ids_after(
        &self,
        sequence: u64,
        limit: usize,
    ) -> Result<std::collections::HashSet<String>, PublishError> {
        use futures_util::StreamExt as _;
        let name = self.inner.topology.service_stream(&self.inner.service);
        let mut stream = match self.inner.jetstream.get_stream(&name).await {
            Ok(stream) => stream,
            Err(error)
                if matches!(
                    error.kind(),
                    jetstream::context::GetStreamErrorKind::JetStream(ref source)
                        if source.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
                ) =>
            {
                return Ok(std::collections::HashSet::new());
            }
            Err(error) => {
                return Err(PublishError::with_detail(
                    PublishErrorKind::GaveUp,
                    format!("reading stream {name}: {error}"),
                ));
            }
        };
        let last = stream
            .info()
            .await
            .map_err(|error| {
                PublishError::with_detail(
                    PublishErrorKind::GaveUp,
                    format!("reading stream {name}: {error}"),
                )
            })?
            .state
            .last_sequence;
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        let first = sequence
            .saturating_add(1)
            .max(last.saturating_sub(limit) + 1);
        let stream = &stream;
        let mut ids = std::collections::HashSet::new();
        let mut messages = futures_util::stream::iter(first..=last)
            .map(|sequence| async move { (sequence, stream.get_raw_message(sequence).await) })
            .buffer_unordered(32);
        while let Some((sequence, message)) = messages.next().await {
            match message {
                Ok(message) => {
                    if let Some(id) = message.headers.get(async_nats::header::NATS_MESSAGE_ID) {
                        ids.insert(id.as_str().to_owned());
                    }
                }
                // Removed since (limits, deletes): nothing there to skip.
                Err(error)
                    if error.kind()
                        == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {}
                Err(error) => {
                    return Err(PublishError::with_detail(
                        PublishErrorKind::GaveUp,
                        format!("reading message {sequence} of stream {name}: {error}"),
                    ));
                }
            }
        }
        Ok(ids)
    }

    /// Counts an acknowledged event in `govbus_events_published_total` (a duplicate the
    /// server recognised was counted when first stored).
    fn published(&self, event: &OutgoingEvent, receipt: PublishReceipt) -> PublishReceipt {
        if !receipt.duplicate {
            let event_type = event
                .header(crate::envelope::headers::TYPE)
                .unwrap_or("unknown");
            self.inner
                .published_counters
                .of(event_type, || {
                    metrics::counter!(
                        "govbus_events_published_total",
                        "service" => self.inner.service.clone(),
                        "type" => event_type.to_owned(),
                    )
                })
                .increment(1);
        }
        receipt
    }

    async fn start_send(
        &self,
        event: &OutgoingEvent,
    ) -> Result<jetstream::context::PublishAckFuture, NatsPublishErrorKind> {
        self.inner
            .jetstream
            .send_publish(
                event.nats_subject(),
                jetstream::message::PublishMessage::build()
                    .headers(event.header_map())
                    .payload(event.payload().clone()),
            )
            .await
            .map_err(|error| error.kind())
    }

    async fn send_with_retry(&self, event: &OutgoingEvent) -> Result<PublishReceipt, PublishError> {
        let started = Instant::now();
        let mut attempt = 0;
        loop {
            let outcome = match self.start_send(event).await {
                Ok(ack) => ack.await.map_err(|error| (error.kind(), error.to_string())),
                Err(kind) => Err((kind, kind.to_string())),
            };
            let (kind, message) = match outcome {
                Ok(ack) => return Ok(self.published(event, receipt(ack))),
                Err(failure) => failure,
            };
            match kind {
                NatsPublishErrorKind::MaxPayloadExceeded => {
                    return Err(PublishError::with_detail(
                        PublishErrorKind::TooLarge,
                        message,
                    ));
                }
                NatsPublishErrorKind::WrongLastMessageId
                | NatsPublishErrorKind::WrongLastSequence => {
                    return Err(PublishError::with_detail(
                        PublishErrorKind::Rejected,
                        message,
                    ));
                }
                _ => {}
            }
            if let Some(limit) = self.inner.retry.give_up_after
                && started.elapsed() >= limit
            {
                return Err(PublishError::with_detail(
                    PublishErrorKind::GaveUp,
                    format!("after {attempt} retries over {limit:?}: {message}"),
                ));
            }
            let delay = self.inner.retry.backoff.delay(attempt);
            tracing::warn!(
                message = "Publish not acknowledged; retrying.",
                error = %message,
                event_id = event.id(),
                attempt,
                retry_in_ms = delay.as_millis() as u64,
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// A publish handed to the connection whose acknowledgement is still to come (see
/// [`Publisher::start`]).
#[must_use = "a publish is stored only once its acknowledgement arrives"]
pub struct PendingPublish {
    publisher: Publisher,
    event: OutgoingEvent,
    ack: Result<jetstream::context::PublishAckFuture, NatsPublishErrorKind>,
}

impl std::fmt::Debug for PendingPublish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingPublish")
            .field("event_id", &self.event.id())
            .field("sent", &self.ack.is_ok())
            .finish()
    }
}

impl PendingPublish {
    /// Waits for this attempt's acknowledgement (at most the request timeout from the first
    /// poll); on failure hands the publish back, to [`retry`](FailedPublish::retry) or to leave.
    /// Poll many of these together (the acknowledgements of a pipeline): their timeouts then
    /// run at once rather than one after another.
    pub async fn first_attempt(self) -> Result<PublishReceipt, FailedPublish> {
        let outcome = match self.ack {
            Ok(ack) => ack.await.map_err(|error| (error.kind(), error.to_string())),
            Err(kind) => Err((kind, kind.to_string())),
        };
        match outcome {
            Ok(ack) => Ok(self.publisher.published(&self.event, receipt(ack))),
            Err((kind, message)) => Err(FailedPublish {
                error: PublishError::with_detail(
                    match kind {
                        NatsPublishErrorKind::MaxPayloadExceeded => PublishErrorKind::TooLarge,
                        NatsPublishErrorKind::WrongLastMessageId
                        | NatsPublishErrorKind::WrongLastSequence => PublishErrorKind::Rejected,
                        _ => PublishErrorKind::GaveUp,
                    },
                    format!("not acknowledged: {message}"),
                ),
                publisher: self.publisher,
                event: self.event,
            }),
        }
    }
}

/// A publish whose first attempt was not acknowledged (see [`PendingPublish::first_attempt`]).
#[derive(Debug)]
pub struct FailedPublish {
    publisher: Publisher,
    event: OutgoingEvent,
    error: PublishError,
}

impl FailedPublish {
    /// Gives up on the event: why its attempt failed. [`TooLarge`](PublishErrorKind::TooLarge)
    /// and [`Rejected`](PublishErrorKind::Rejected) are final; anything else
    /// ([`GaveUp`](PublishErrorKind::GaveUp)) may succeed when sent again.
    pub fn into_error(self) -> PublishError {
        self.error
    }

    /// Sends the event again per the publisher's [`RetryPolicy`]; a final refusal is returned
    /// as it is, without sending.
    pub async fn retry(self) -> Result<PublishReceipt, PublishError> {
        if matches!(
            self.error.kind(),
            PublishErrorKind::TooLarge | PublishErrorKind::Rejected
        ) {
            return Err(self.error);
        }
        self.publisher.send_with_retry(&self.event).await
    }
}

fn send_span(service: &str, subject: &str, count: usize) -> tracing::Span {
    tracing::info_span!(
        "send",
        otel.name = format!("send {subject}"),
        otel.kind = "producer",
        messaging.system = "nats",
        messaging.operation.type = "send",
        messaging.operation.name = "send",
        messaging.destination.name = subject,
        messaging.batch.message_count = count,
        messaging.message.id = field::Empty,
        govbus.service = service,
    )
}

fn receipt(ack: jetstream::publish::PublishAck) -> PublishReceipt {
    PublishReceipt {
        stream: ack.stream,
        sequence: ack.sequence,
        duplicate: ack.duplicate,
    }
}
