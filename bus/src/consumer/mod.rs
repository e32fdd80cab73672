//! Consuming events: durable JetStream pull consumers with explicit acks, typed handlers,
//! redelivery with back-off, and dead letters.
//!
//! A [`Consumer`] reads the events of one publishing service. For each delivered message:
//!
//! | what happened | what the consumer does |
//! | --- | --- |
//! | the handler returned `Ok` | ack |
//! | a [transient](HandleError::transient) error, deliveries left | nak with an exponential delay |
//! | a transient error on the last allowed delivery | dead letter, then ack |
//! | a [permanent](HandleError::permanent) error | dead letter, then ack |
//! | no readable CloudEvents envelope, unknown type, or a payload that does not decode | dead letter, then ack |
//! | delivered more often than allowed without an outcome (the process died mid-handling) | dead letter, then ack |
//!
//! A message is acknowledged only after its dead letter is stored, so nothing is lost; if the
//! dead-letter stream is unreachable the message is nak'ed and tried again later.
//!
//! Handlers run concurrently up to [`ConsumerSettings::concurrency`]. Messages with the same
//! CloudEvents `subject` (the same aggregate) go to the same worker, so they are handled in the
//! order they arrive; redeliveries can still reorder them, so handlers must be idempotent.

mod delivery;
mod handler;
mod run;

pub use delivery::{
    Delivery, DeliveryObserver, EventMeta, HandleError, HandleErrorKind, HandledDelivery,
};
pub use run::{CONSUMER_SERVICE_METADATA, CONSUMER_SOURCE_METADATA};

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::error::{Error, error_kind};
use crate::event::{Event, EventType};

pub(crate) use handler::ErasedHandler;
pub(crate) use run::prepare_consumer;

error_kind! {
    /// Why a consumer could not run.
    ConsumeErrorKind {
        /// The declaration is inconsistent (no handlers, events of several services, a bad name).
        InvalidDeclaration => "invalid consumer declaration",
        /// Its stream, consumer or the dead-letter stream could not be provisioned.
        Provision => "cannot provision consumer",
    }
}

/// A consumer that could not run.
pub type ConsumeError = Error<ConsumeErrorKind>;

/// Tuning of one consumer.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerSettings {
    /// Handlers running at once (and workers messages are spread over).
    pub concurrency: usize,
    /// Deliveries before a transiently failing message is dead-lettered.
    pub max_deliveries: u64,
    /// Redelivery delays after transient failures.
    pub backoff: Backoff,
    /// How long JetStream waits for an ack before redelivering (a crashed handler).
    pub ack_wait: Duration,
    /// Messages requested from JetStream per pull.
    pub batch_size: usize,
    /// Unacknowledged messages JetStream lets this consumer hold.
    pub max_ack_pending: i64,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            max_deliveries: 8,
            backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(60)),
            ack_wait: Duration::from_secs(30),
            batch_size: 256,
            max_ack_pending: 4096,
        }
    }
}

/// A durable consumer of one service's events, with a handler per event type.
///
/// ```
/// # use govbus_bus::{Consumer, EventMeta, HandleError};
/// # #[derive(Clone, PartialEq, prost::Message)]
/// # pub struct CitizenDeceased { #[prost(string, tag = "1")] pub citizen_ref: String }
/// # impl prost::Name for CitizenDeceased {
/// #     const PACKAGE: &'static str = "govbus.identity.v1";
/// #     const NAME: &'static str = "CitizenDeceased";
/// # }
/// # impl govbus_bus::Event for CitizenDeceased { const TYPE: &'static str = "identity.citizen.deceased.v1"; }
/// async fn suspend_benefits(event: CitizenDeceased, meta: EventMeta) -> Result<(), HandleError> {
///     // … update the database, idempotently …
///     Ok(())
/// }
///
/// let consumer = Consumer::new("welfare-identity")
///     .on::<CitizenDeceased, _, _>(suspend_benefits)
///     .max_deliveries(5);
/// assert_eq!(consumer.source_service()?, "identity");
/// # Ok::<(), govbus_bus::ConsumeError>(())
/// ```
pub struct Consumer {
    pub(crate) name: String,
    pub(crate) handlers: BTreeMap<&'static str, Arc<dyn ErasedHandler>>,
    /// The service whose every event goes to `any_handler` (see [`Consumer::every_event_of`]).
    pub(crate) every_event_of: Option<(String, Arc<dyn ErasedHandler>)>,
    pub(crate) settings: ConsumerSettings,
    /// Why the service processes these events, for the processing log.
    pub(crate) purpose: Option<String>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("name", &self.name)
            .field("event_types", &self.handlers.keys().collect::<Vec<_>>())
            .field(
                "every_event_of",
                &self.every_event_of.as_ref().map(|(service, _)| service),
            )
            .field("settings", &self.settings)
            .finish()
    }
}

impl Consumer {
    /// A durable consumer named `name` (unique per service, kept by JetStream across restarts).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            handlers: BTreeMap::new(),
            every_event_of: None,
            settings: ConsumerSettings::default(),
            purpose: None,
        }
    }

    /// Why the service processes these events (e.g. "suspend benefits of deceased
    /// recipients"): recorded with every delivery of an event about a person.
    pub fn purpose(mut self, purpose: impl Into<String>) -> Self {
        self.purpose = Some(purpose.into());
        self
    }

    /// Handles events of type `E` in batches: `handler` receives up to `max` events that have
    /// arrived (it never waits for more), in order, and its result applies to all of them.
    ///
    /// For handlers whose cost is per transaction rather than per event: one transaction (one
    /// inbox insert, one commit) for the whole batch instead of one per event. If the handler
    /// fails permanently, the events are handled again one by one, so only the one that
    /// cannot be handled is dead-lettered. Batches form within a worker, so a consumer that
    /// wants large batches runs with a low [`concurrency`](Self::concurrency).
    pub fn on_batch<E, F, Fut>(mut self, max: usize, handler: F) -> Self
    where
        E: Event,
        F: Fn(Vec<(E, EventMeta)>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandleError>> + Send + 'static,
    {
        self.handlers.insert(
            E::TYPE,
            Arc::new(handler::TypedBatchHandler::<E, F>::new(max, handler)),
        );
        self
    }

    /// Handles events of type `E` with `handler`.
    pub fn on<E, F, Fut>(mut self, handler: F) -> Self
    where
        E: Event,
        F: Fn(E, EventMeta) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandleError>> + Send + 'static,
    {
        self.handlers.insert(
            E::TYPE,
            Arc::new(handler::TypedHandler::<E, F>::new(handler)),
        );
        self
    }

    /// Hands every event `service` publishes, whatever its type, to `handler` with its raw
    /// payload, unless a typed handler ([`on`](Self::on)) claims the type. For projections that
    /// read a whole service's stream, such as evaluation evidence; ordinary consumers should take
    /// only the types they need.
    pub fn every_event_of<F, Fut>(mut self, service: impl Into<String>, handler: F) -> Self
    where
        F: Fn(bytes::Bytes, EventMeta) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandleError>> + Send + 'static,
    {
        self.every_event_of = Some((service.into(), Arc::new(handler::RawHandler::new(handler))));
        self
    }

    /// Replaces all settings.
    pub fn settings(mut self, settings: ConsumerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Handlers running at once.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.settings.concurrency = concurrency.max(1);
        self
    }

    /// Deliveries before a transiently failing message is dead-lettered.
    pub fn max_deliveries(mut self, deliveries: u64) -> Self {
        self.settings.max_deliveries = deliveries.max(1);
        self
    }

    /// Redelivery delays after transient failures.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.settings.backoff = backoff;
        self
    }

    /// Unacknowledged messages JetStream lets this consumer hold (1 gives strict stream order,
    /// redeliveries included).
    pub fn max_ack_pending(mut self, pending: i64) -> Self {
        self.settings.max_ack_pending = pending.max(1);
        self
    }

    /// How long JetStream waits for an ack before redelivering.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.settings.ack_wait = ack_wait;
        self
    }

    /// The durable consumer name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The event types this consumer handles; `*` stands for every type of its source service.
    pub fn event_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.handlers
            .keys()
            .copied()
            .chain(self.every_event_of.as_ref().map(|_| "*"))
    }

    /// Whether every event of the source service is consumed.
    pub fn takes_every_event(&self) -> bool {
        self.every_event_of.is_some()
    }

    /// The one service whose events this consumer reads.
    pub fn source_service(&self) -> Result<&str, ConsumeError> {
        let mut services = self.handlers.keys().map(|name| {
            EventType::parse(name)
                .map(|parsed| parsed.service())
                .map_err(|error| {
                    ConsumeError::with_source(ConsumeErrorKind::InvalidDeclaration, error)
                })
        });
        let first = match (&self.every_event_of, services.next()) {
            (Some((service, _)), _) => service.as_str(),
            (None, Some(first)) => first?,
            (None, None) => {
                return Err(ConsumeError::with_detail(
                    ConsumeErrorKind::InvalidDeclaration,
                    format!("consumer {:?} has no handlers", self.name),
                ));
            }
        };
        for service in services {
            let service = service?;
            if service != first {
                return Err(ConsumeError::with_detail(
                    ConsumeErrorKind::InvalidDeclaration,
                    format!(
                        "consumer {:?} mixes events of {first:?} and {service:?}; declare one consumer per source service",
                        self.name
                    ),
                ));
            }
        }
        Ok(first)
    }
}
