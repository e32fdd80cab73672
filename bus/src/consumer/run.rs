//! The consumer loop: fetch, spread over workers, handle, settle.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, AckKind};
use futures_util::{FutureExt, StreamExt};
use opentelemetry::trace::{FutureExt as _, SpanKind, TraceContextExt as _, Tracer as _};
use opentelemetry::{Context, KeyValue, StringValue};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::handler::{ErasedHandler, HandlerFailure};
use super::{
    ConsumeError, ConsumeErrorKind, Consumer, ConsumerSettings, Delivery, DeliveryObserver,
    EventMeta, HandleError, HandleErrorKind, HandledDelivery,
};
use crate::Bus;
use crate::backoff::Backoff;
use crate::counters::CountersByType;
use crate::dead_letter::{self, DeadLetters, Failure};
use crate::envelope::{Envelope, headers};
use crate::provision;
use crate::trace_context;

/// How long a pull request waits on the server, and how often the server proves it is alive.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);

struct ConsumerContext {
    bus: Bus,
    service: String,
    name: String,
    stream: String,
    source_subjects: String,
    config: pull::Config,
    handlers: std::collections::BTreeMap<&'static str, Arc<dyn ErasedHandler>>,
    every_event: Option<Arc<dyn ErasedHandler>>,
    settings: ConsumerSettings,
    dead_letters: DeadLetters,
    observer: Option<Arc<dyn DeliveryObserver>>,
    purpose: String,
    /// Whether any handler takes batches (most consumers take events one at a time and skip
    /// forming batches).
    takes_batches: bool,
    /// `govbus_events_consumed_total` by event type, one counter per outcome
    /// ([`Outcome::NAMES`]), each registered when first counted.
    consumed_counters: CountersByType<Arc<[std::sync::OnceLock<metrics::Counter>; 3]>>,
    /// Records the `process` span of each message (see [`trace_context`]).
    tracer: opentelemetry::global::BoxedTracer,
    /// The consumer's names as span attributes, made once.
    span_names: SpanNames,
}

/// What every `process` span of a consumer names, made once.
struct SpanNames {
    consumer: StringValue,
    service: StringValue,
    stream: StringValue,
}

/// Consumer metadata key naming the service that consumes.
pub const CONSUMER_SERVICE_METADATA: &str = "govbus_service";
/// Consumer metadata key naming the service whose events are consumed.
pub const CONSUMER_SOURCE_METADATA: &str = "govbus_source";

/// A provisioned consumer, ready to run.
pub(crate) struct PreparedConsumer {
    context: Arc<ConsumerContext>,
    nats_consumer: jetstream::consumer::Consumer<pull::Config>,
}

/// Provisions the source stream (if its owner has not yet) and the durable consumer.
pub(crate) async fn prepare_consumer(
    bus: &Bus,
    service: &str,
    consumer: Consumer,
    observer: Option<Arc<dyn DeliveryObserver>>,
) -> Result<PreparedConsumer, ConsumeError> {
    let topology = bus.topology();
    topology
        .check_consumer(&consumer.name)
        .map_err(|error| ConsumeError::with_source(ConsumeErrorKind::InvalidDeclaration, error))?;
    let source = consumer.source_service()?.to_owned();
    topology
        .check_service(&source)
        .map_err(|error| ConsumeError::with_source(ConsumeErrorKind::InvalidDeclaration, error))?;
    let filter_subjects = if consumer.takes_every_event() {
        vec![topology.service_subjects(&source)]
    } else {
        consumer
            .handlers
            .keys()
            .map(|event_type| topology.event_subject(event_type))
            .collect()
    };
    let config = pull::Config {
        durable_name: Some(consumer.name.clone()),
        description: Some(format!("{service}: {} events", source)),
        ack_policy: AckPolicy::Explicit,
        ack_wait: consumer.settings.ack_wait,
        // Unlimited at the server: the bus itself dead-letters after max_deliveries, so a
        // message is never silently left behind.
        max_deliver: -1,
        deliver_policy: DeliverPolicy::All,
        filter_subjects,
        max_ack_pending: consumer.settings.max_ack_pending,
        // Read by operators' tools to draw who consumes whose events.
        metadata: std::collections::HashMap::from([
            (CONSUMER_SERVICE_METADATA.to_owned(), service.to_owned()),
            (CONSUMER_SOURCE_METADATA.to_owned(), source.clone()),
        ]),
        ..Default::default()
    };
    let takes_batches = consumer
        .handlers
        .values()
        .chain(consumer.every_event_of.as_ref().map(|(_, handler)| handler))
        .any(|handler| handler.as_batch().is_some());
    let context = Arc::new(ConsumerContext {
        bus: bus.clone(),
        service: service.to_owned(),
        stream: topology.service_stream(&source),
        source_subjects: topology.service_subjects(&source),
        name: consumer.name.clone(),
        config,
        handlers: consumer.handlers,
        every_event: consumer.every_event_of.map(|(_, handler)| handler),
        settings: consumer.settings,
        dead_letters: bus.dead_letters(),
        observer,
        purpose: consumer
            .purpose
            .unwrap_or_else(|| format!("not declared by consumer {}", consumer.name)),
        takes_batches,
        consumed_counters: CountersByType::default(),
        tracer: trace_context::tracer(),
        span_names: SpanNames {
            consumer: StringValue::from(consumer.name.clone()),
            service: StringValue::from(service.to_owned()),
            stream: StringValue::from(topology.service_stream(&source)),
        },
    });
    let nats_consumer = provision_consumer(&context).await?;
    Ok(PreparedConsumer {
        context,
        nats_consumer,
    })
}

async fn provision_consumer(
    context: &ConsumerContext,
) -> Result<jetstream::consumer::Consumer<pull::Config>, ConsumeError> {
    let stream = provision::existing_or_new_stream(
        context.bus.jetstream(),
        context.bus.stream_settings(),
        &context.stream,
        vec![context.source_subjects.clone()],
        "govbus events",
    )
    .await
    .map_err(|error| ConsumeError::with_source(ConsumeErrorKind::Provision, error))?;
    provision::patiently(
        &context.name,
        |error: &jetstream::stream::ConsumerError| {
            matches!(error.kind(), jetstream::stream::ConsumerErrorKind::TimedOut)
        },
        || stream.create_consumer(context.config.clone()),
    )
    .await
    .map_err(|error| {
        ConsumeError::with_detail(
            ConsumeErrorKind::Provision,
            format!("consumer {} on {}: {error}", context.name, context.stream),
        )
    })
}

impl PreparedConsumer {
    /// The durable consumer name.
    pub(crate) fn name(&self) -> &str {
        &self.context.name
    }

    /// Runs until `shutdown` is cancelled, then finishes the messages already handed to workers.
    pub(crate) async fn run(self, shutdown: CancellationToken) {
        let context = self.context;
        let mut nats_consumer = self.nats_consumer;
        let concurrency = context.settings.concurrency.max(1);
        let lane_capacity = (context.settings.batch_size / concurrency).max(1);
        let mut lanes = Vec::with_capacity(concurrency);
        let mut workers = JoinSet::new();
        for _ in 0..concurrency {
            let (sender, receiver) = mpsc::channel(lane_capacity);
            lanes.push(sender);
            workers.spawn(worker(Arc::clone(&context), receiver));
        }
        let reconnect = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut failures = 0;

        'fetching: while !shutdown.is_cancelled() {
            let started = nats_consumer
                .stream()
                .max_messages_per_batch(context.settings.batch_size)
                .expires(PULL_EXPIRES)
                .heartbeat(PULL_HEARTBEAT)
                .messages()
                .await;
            match started {
                Ok(mut messages) => loop {
                    let next = tokio::select! {
                        biased;
                        () = shutdown.cancelled() => break 'fetching,
                        next = messages.next() => next,
                    };
                    match next {
                        Some(Ok(message)) => {
                            failures = 0;
                            let lane = lane_of(&message, lanes.len());
                            if lanes[lane].send(message).await.is_err() {
                                tracing::error!(message = "Consumer worker stopped.", consumer = %context.name);
                                break 'fetching;
                            }
                        }
                        Some(Err(error)) => {
                            tracing::warn!(message = "Pull from JetStream failed.", consumer = %context.name, %error);
                            if matches!(
                                error.kind(),
                                MessagesErrorKind::ConsumerDeleted
                                    | MessagesErrorKind::NoResponders
                                    | MessagesErrorKind::RequestLimitExceeded
                                    | MessagesErrorKind::PushBasedConsumer
                            ) {
                                break;
                            }
                        }
                        None => break,
                    }
                },
                Err(error) => {
                    tracing::warn!(message = "Cannot start pulling from JetStream.", consumer = %context.name, %error);
                }
            }
            // The pull stream ended: wait, then make sure the consumer exists again.
            let delay = reconnect.delay(failures);
            failures += 1;
            tokio::select! {
                () = shutdown.cancelled() => break 'fetching,
                () = tokio::time::sleep(delay) => {}
            }
            match provision_consumer(&context).await {
                Ok(provisioned) => nats_consumer = provisioned,
                Err(error) => {
                    tracing::warn!(message = "Cannot re-create consumer; will retry.", consumer = %context.name, %error);
                }
            }
        }

        // Stop fetching; let every worker finish what it was handed.
        drop(lanes);
        while workers.join_next().await.is_some() {}
        context.bus.flush().await;
        tracing::info!(message = "Consumer stopped.", consumer = %context.name);
    }
}

/// Messages about the same aggregate (CloudEvents subject) go to the same worker.
fn lane_of(message: &jetstream::Message, lanes: usize) -> usize {
    let mut hasher = DefaultHasher::new();
    match header(message.headers.as_ref(), headers::SUBJECT) {
        Some(subject) => subject.hash(&mut hasher),
        None => message
            .info()
            .map(|info| info.stream_sequence)
            .unwrap_or_default()
            .hash(&mut hasher),
    }
    (hasher.finish() % lanes.max(1) as u64) as usize
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    headers?.get(name).map(|value| value.as_str())
}

async fn worker(context: Arc<ConsumerContext>, mut receiver: mpsc::Receiver<jetstream::Message>) {
    let mut next = None;
    loop {
        let message = match next.take() {
            Some(message) => message,
            None => match receiver.recv().await {
                Some(message) => message,
                None => return,
            },
        };
        let limit = if context.takes_batches {
            handler_for(&context, event_type_of(&message))
                .and_then(|handler| handler.as_batch())
                .map_or(1, |batch| batch.limit())
        } else {
            1
        };
        if limit <= 1 {
            process(&context, message).await;
            continue;
        }
        // Whatever of the same type has already arrived joins the batch, in order; the first
        // message of another type waits for the next round.
        let event_type = event_type_of(&message).to_owned();
        let mut batch = vec![message];
        while batch.len() < limit {
            match receiver.try_recv() {
                Ok(message) if event_type_of(&message) == event_type => batch.push(message),
                Ok(message) => {
                    next = Some(message);
                    break;
                }
                Err(_) => break,
            }
        }
        process_batch(&context, batch).await;
    }
}

/// The consumer's handler for `event_type`, if it has one.
fn handler_for<'a>(
    context: &'a ConsumerContext,
    event_type: &str,
) -> Option<&'a Arc<dyn ErasedHandler>> {
    context
        .handlers
        .get(event_type)
        .or(context.every_event.as_ref())
}

/// What to do with a delivered message.
enum Outcome {
    Ack,
    Retry(Duration),
    DeadLetter(String),
}

impl Outcome {
    /// The outcomes' names in metrics and spans, by [`index`](Self::index).
    const NAMES: [&'static str; 3] = ["ack", "retry", "dead_letter"];

    fn index(&self) -> usize {
        match self {
            Self::Ack => 0,
            Self::Retry(_) => 1,
            Self::DeadLetter(_) => 2,
        }
    }

    fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

/// A message that passed the checks before its handler: readable, not given up on, handled by
/// this consumer.
struct Ready {
    message: jetstream::Message,
    /// The message's `process` span, as a context to run its work in.
    span: Context,
    meta: EventMeta,
    handler: Arc<dyn ErasedHandler>,
}

async fn process(context: &ConsumerContext, message: jetstream::Message) {
    if let Some(ready) = prepare(context, message).await {
        handle_one(context, ready).await;
    }
}

/// Handles one message on its own.
async fn handle_one(context: &ConsumerContext, ready: Ready) {
    let Ready {
        message,
        span,
        meta,
        handler,
    } = ready;
    async {
        let (stream_sequence, attempt) = (meta.delivery.stream_sequence, meta.delivery.attempt);
        let event_type = meta.envelope.event_type.clone();
        let handled = AssertUnwindSafe(handler.handle(message.payload.clone(), meta))
            .catch_unwind()
            .await;
        let outcome = match handled {
            Ok(Ok(data_subject)) => {
                observe(context, &message, &event_type, data_subject.as_deref());
                Outcome::Ack
            }
            Ok(Err(HandlerFailure::Undecodable(reason))) => Outcome::DeadLetter(reason),
            Ok(Err(HandlerFailure::Handler(error))) => after_failure(context, attempt, &error),
            Err(panic) => Outcome::DeadLetter(format!("handler panicked: {}", panic_text(&*panic))),
        };
        finish(context, &message, outcome, stream_sequence, attempt).await;
    }
    .with_context(span)
    .await;
}

/// Handles messages of one type together; a permanent failure or a panic is retried one
/// message at a time, so that only the message at fault is dead-lettered.
async fn process_batch(context: &ConsumerContext, messages: Vec<jetstream::Message>) {
    let mut ready = Vec::with_capacity(messages.len());
    for message in messages {
        if let Some(prepared) = prepare(context, message).await {
            ready.push(prepared);
        }
    }
    if ready.len() <= 1 {
        for one in ready {
            handle_one(context, one).await;
        }
        return;
    }
    let handler = Arc::clone(&ready[0].handler);
    let Some(batch_handler) = handler.as_batch() else {
        for one in ready {
            handle_one(context, one).await;
        }
        return;
    };
    let items = ready
        .iter()
        .map(|one| (one.message.payload.clone(), one.meta.clone()))
        .collect();
    let batch_span = context.tracer.build_with_context(
        opentelemetry::trace::SpanBuilder::from_name("process batch")
            .with_kind(SpanKind::Consumer)
            .with_attributes([
                KeyValue::new("messaging.system", "nats"),
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new(
                    "messaging.consumer.group.name",
                    context.span_names.consumer.clone(),
                ),
                KeyValue::new(
                    "messaging.batch.message_count",
                    i64::try_from(ready.len()).unwrap_or(i64::MAX),
                ),
                KeyValue::new("govbus.service", context.span_names.service.clone()),
            ]),
        &Context::new(),
    );
    let handled = AssertUnwindSafe(batch_handler.handle_batch(items))
        .catch_unwind()
        .with_context(Context::new().with_span(batch_span))
        .await;
    let result = match handled {
        Ok(result) if !matches!(&result.outcome, Err(error) if error.kind() == HandleErrorKind::Permanent) => {
            result
        }
        _ => {
            for one in ready {
                handle_one(context, one).await;
            }
            return;
        }
    };
    let mut outcomes: Vec<Option<Outcome>> = ready.iter().map(|_| None).collect();
    for (index, reason) in result.undecodable {
        outcomes[index] = Some(Outcome::DeadLetter(reason));
    }
    for (index, data_subject) in result.handled {
        let one = &ready[index];
        outcomes[index] = Some(match &result.outcome {
            Ok(()) => {
                observe(
                    context,
                    &one.message,
                    &one.meta.envelope.event_type,
                    data_subject.as_deref(),
                );
                Outcome::Ack
            }
            Err(error) => after_failure(context, one.meta.delivery.attempt, error),
        });
    }
    for (one, outcome) in ready.into_iter().zip(outcomes) {
        let (stream_sequence, attempt) =
            (one.meta.delivery.stream_sequence, one.meta.delivery.attempt);
        // Every message given to the handler has an outcome; this is only a guard.
        let outcome = outcome.unwrap_or(Outcome::Retry(context.settings.backoff.delay(0)));
        finish(context, &one.message, outcome, stream_sequence, attempt)
            .with_context(one.span)
            .await;
    }
}

/// Reads the delivery and its envelope and decides whether a handler should see it. Messages
/// that need no handler (a replay meant for another consumer) or cannot have one (unreadable,
/// unknown type, delivered too often) are settled here.
async fn prepare(context: &ConsumerContext, message: jetstream::Message) -> Option<Ready> {
    let (stream_sequence, attempt, published) = match message.info() {
        Ok(info) => (
            info.stream_sequence,
            u64::try_from(info.delivered).unwrap_or(1),
            info.published,
        ),
        Err(error) => {
            tracing::warn!(message = "Ignoring a message that is not a JetStream delivery.", %error);
            return None;
        }
    };
    let headers = message.headers.as_ref();
    let replay_for = header(headers, dead_letter::headers::REPLAY_FOR);
    if replay_for.is_some_and(|target| target != context.name) {
        // A replay meant for another consumer of the same subject.
        settle(context, &message, Outcome::Ack, stream_sequence, attempt).await;
        return None;
    }
    // The consumer span of the message, in its producer's trace.
    let name = trace_context::span_name("process", &message.subject);
    let destination = match &name {
        std::borrow::Cow::Borrowed(name) => StringValue::from(&name["process ".len()..]),
        std::borrow::Cow::Owned(_) => StringValue::from(message.subject.to_string()),
    };
    let span = context.tracer.build_with_context(
        opentelemetry::trace::SpanBuilder::from_name(name)
            .with_kind(SpanKind::Consumer)
            .with_attributes([
                KeyValue::new("messaging.system", "nats"),
                KeyValue::new("messaging.operation.type", "process"),
                KeyValue::new("messaging.operation.name", "process"),
                KeyValue::new("messaging.destination.name", destination),
                KeyValue::new(
                    "messaging.consumer.group.name",
                    context.span_names.consumer.clone(),
                ),
                KeyValue::new("govbus.service", context.span_names.service.clone()),
                KeyValue::new(
                    "messaging.message.body.size",
                    i64::try_from(message.payload.len()).unwrap_or(i64::MAX),
                ),
                KeyValue::new("messaging.nats.stream", context.span_names.stream.clone()),
                KeyValue::new(
                    "messaging.nats.stream_sequence",
                    i64::try_from(stream_sequence).unwrap_or(i64::MAX),
                ),
                KeyValue::new(
                    "messaging.nats.delivery_count",
                    i64::try_from(attempt).unwrap_or(i64::MAX),
                ),
            ]),
        &trace_context::extract(headers),
    );
    let span = Context::new().with_span(span);
    let delivery = Delivery {
        consumer: context.name.clone(),
        stream: context.stream.clone(),
        stream_sequence,
        attempt,
        nats_subject: message.subject.to_string(),
        published,
        replayed: replay_for.is_some(),
    };
    match check(context, &message, delivery, &span) {
        Ok((meta, handler)) => Some(Ready {
            message,
            span,
            meta,
            handler,
        }),
        Err(outcome) => {
            finish(context, &message, outcome, stream_sequence, attempt)
                .with_context(span)
                .await;
            None
        }
    }
}

/// The envelope, the delivery count and the handler (in the message's span).
fn check(
    context: &ConsumerContext,
    message: &jetstream::Message,
    delivery: Delivery,
    span: &Context,
) -> Result<(EventMeta, Arc<dyn ErasedHandler>), Outcome> {
    let envelope = Envelope::from_headers(message.headers.as_ref()).map_err(|error| {
        Outcome::DeadLetter(format!("unreadable CloudEvents envelope: {error}"))
    })?;
    let span = span.span();
    span.set_attribute(KeyValue::new("messaging.message.id", envelope.id.clone()));
    span.set_attribute(KeyValue::new(
        "cloudevents.event_type",
        envelope.event_type.clone(),
    ));
    let max = context.settings.max_deliveries;
    if delivery.attempt > max {
        return Err(Outcome::DeadLetter(format!(
            "delivered {} times without an outcome (limit {max}); the handler may have crashed or timed out",
            delivery.attempt
        )));
    }
    let handler = handler_for(context, &envelope.event_type).ok_or_else(|| {
        Outcome::DeadLetter(format!(
            "unknown event type {:?} for consumer {}",
            envelope.event_type, context.name
        ))
    })?;
    let meta = EventMeta {
        traceparent: header(message.headers.as_ref(), headers::TRACEPARENT).map(str::to_owned),
        envelope,
        delivery,
    };
    Ok((meta, Arc::clone(handler)))
}

/// Tells the observer (the processing log) of a handled event about a person.
fn observe(
    context: &ConsumerContext,
    message: &jetstream::Message,
    event_type: &str,
    data_subject: Option<&str>,
) {
    if let (Some(observer), Some(data_subject)) = (&context.observer, data_subject) {
        let traceparent = header(message.headers.as_ref(), headers::TRACEPARENT);
        observer.handled(&HandledDelivery {
            service: &context.service,
            consumer: &context.name,
            publisher: event_type.split('.').next().unwrap_or_default(),
            event_type,
            data_subject,
            purpose: &context.purpose,
            trace_id: traceparent.and_then(trace_context::trace_id_of),
        });
    }
}

/// The longest delay a handler's cause may ask for before its message is delivered again.
const LONGEST_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// After a handler failed: dead-letter it if the failure is permanent or deliveries are used
/// up, else redeliver it after a back-off.
fn after_failure(context: &ConsumerContext, attempt: u64, error: &HandleError) -> Outcome {
    let max = context.settings.max_deliveries;
    match error.kind() {
        HandleErrorKind::Permanent => {
            Outcome::DeadLetter(format!("handler failed permanently: {error}"))
        }
        _ if attempt >= max => Outcome::DeadLetter(format!(
            "handler failed on all {attempt} deliveries; last error: {error}"
        )),
        _ => {
            let backoff = context
                .settings
                .backoff
                .delay(u32::try_from(attempt - 1).unwrap_or(u32::MAX));
            let delay = error
                .retry_after()
                .map_or(backoff, |asked| asked.min(LONGEST_RETRY_AFTER).max(backoff));
            tracing::warn!(
                message = "Handler failed; message will be redelivered.",
                %error,
                attempt,
                retry_in_ms = delay.as_millis() as u64,
            );
            Outcome::Retry(delay)
        }
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string panic".to_owned())
}

/// Records the outcome on the current span and in the metrics, then settles the message.
async fn finish(
    context: &ConsumerContext,
    message: &jetstream::Message,
    outcome: Outcome,
    stream_sequence: u64,
    attempt: u64,
) {
    let recorded = outcome.name();
    let span = Context::current();
    span.span()
        .set_attribute(KeyValue::new("govbus.outcome", recorded));
    count_consumed(context, event_type_of(message), outcome.index(), 1);
    settle(context, message, outcome, stream_sequence, attempt).await;
    span.span().end();
}

/// Counts `count` messages of `event_type` settled with the outcome at `outcome` (an
/// [`Outcome::index`]).
fn count_consumed(context: &ConsumerContext, event_type: &str, outcome: usize, count: u64) {
    let counters = context
        .consumed_counters
        .of(event_type, || Arc::new(Default::default()));
    counters[outcome]
        .get_or_init(|| {
            metrics::counter!(
                "govbus_events_consumed_total",
                "service" => context.service.clone(),
                "consumer" => context.name.clone(),
                "type" => event_type.to_owned(),
                "outcome" => Outcome::NAMES[outcome],
            )
        })
        .increment(count);
}

async fn settle(
    context: &ConsumerContext,
    message: &jetstream::Message,
    outcome: Outcome,
    stream_sequence: u64,
    attempt: u64,
) {
    let kind = match outcome {
        Outcome::Ack => AckKind::Ack,
        Outcome::Retry(delay) => AckKind::Nak(Some(delay)),
        Outcome::DeadLetter(reason) => {
            tracing::warn!(
                message = "Message dead-lettered.",
                consumer = %context.name,
                stream = %context.stream,
                stream_sequence,
                attempt,
                %reason,
            );
            let failure = Failure {
                service: &context.service,
                consumer: &context.name,
                stream: &context.stream,
                stream_sequence,
                subject: &message.subject,
                deliveries: attempt,
                reason: &reason,
            };
            match context
                .dead_letters
                .write(message.headers.as_ref(), message.payload.clone(), &failure)
                .await
            {
                Ok(()) => AckKind::Ack,
                Err(error) => {
                    tracing::error!(
                        message = "Dead letter not stored; the message stays unacknowledged and is retried.",
                        consumer = %context.name,
                        stream_sequence,
                        %error,
                    );
                    AckKind::Nak(Some(context.settings.backoff.delay(4)))
                }
            }
        }
    };
    if let Err(error) = message.ack_with(kind).await {
        tracing::warn!(
            message = "Acknowledgement not sent; JetStream will redeliver.",
            consumer = %context.name,
            stream_sequence,
            %error,
        );
    }
}

/// The CloudEvents type of a delivered message, for metric labels.
fn event_type_of(message: &jetstream::Message) -> &str {
    header(message.headers.as_ref(), headers::TYPE).unwrap_or("unknown")
}
