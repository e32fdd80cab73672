//! The adapter API: one declaration of what a service publishes and consumes.
//!
//! A service adapter says, in one place, which events the service publishes and which events of
//! other services it consumes (with durable consumer names and handlers). Starting it provisions
//! the service's stream, the dead-letter stream and every consumer, and runs the consumers until
//! shutdown. The same declaration yields the service's [`ServiceContract`], the list of event
//! contracts that operators and the SPBE evaluation read.
//!
//! See `docs/adding-an-adapter.md` for a walk-through.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::consumer::{ConsumeError, Consumer, DeliveryObserver, prepare_consumer};
use crate::error::{Error, error_kind};
use crate::event::{Event, EventType};
use crate::provision;
use crate::publish::Publisher;
use crate::{Bus, Topology};

error_kind! {
    /// Why an adapter could not start.
    AdapterErrorKind {
        /// The declaration is inconsistent: a bad name, an event of another service, a duplicate
        /// consumer.
        InvalidDeclaration => "invalid adapter declaration",
        /// A stream or consumer could not be provisioned.
        Provision => "cannot provision adapter",
    }
}

/// An adapter that could not start.
pub type AdapterError = Error<AdapterErrorKind>;

/// One event a service publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedEvent {
    /// CloudEvents type.
    pub event_type: &'static str,
    /// Protobuf message name (the CloudEvents `dataschema`).
    pub schema: String,
}

/// One durable consumer of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedEvents {
    /// Durable consumer name.
    pub consumer: String,
    /// The service whose events it reads.
    pub source_service: String,
    /// The event types it handles.
    pub event_types: Vec<&'static str>,
}

/// What a service publishes and consumes: its event contracts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceContract {
    /// The service.
    pub service: String,
    /// The events it publishes.
    pub publishes: Vec<PublishedEvent>,
    /// Its consumers.
    pub consumes: Vec<ConsumedEvents>,
}

impl ServiceContract {
    /// The NATS subjects the service publishes on (for permissions).
    pub fn publish_subjects(&self, topology: &Topology) -> Vec<String> {
        self.publishes
            .iter()
            .map(|event| topology.event_subject(event.event_type))
            .collect()
    }

    /// The NATS subjects the service consumes (for permissions).
    pub fn consume_subjects(&self, topology: &Topology) -> Vec<String> {
        self.consumes
            .iter()
            .flat_map(|consumed| {
                consumed
                    .event_types
                    .iter()
                    .map(|event_type| match *event_type {
                        "*" => topology.service_subjects(&consumed.source_service),
                        event_type => topology.event_subject(event_type),
                    })
            })
            .collect()
    }
}

/// The declaration of a service on the bus.
///
/// ```
/// # use govbus_bus::{Consumer, EventMeta, HandleError, ServiceAdapter};
/// # #[derive(Clone, PartialEq, prost::Message)]
/// # pub struct CitizenDeceased { #[prost(string, tag = "1")] pub citizen_ref: String }
/// # impl prost::Name for CitizenDeceased { const PACKAGE: &'static str = "govbus.identity.v1"; const NAME: &'static str = "CitizenDeceased"; }
/// # impl govbus_bus::Event for CitizenDeceased { const TYPE: &'static str = "identity.citizen.deceased.v1"; }
/// # #[derive(Clone, PartialEq, prost::Message)]
/// # pub struct BenefitSuspended { #[prost(string, tag = "1")] pub benefit_ref: String }
/// # impl prost::Name for BenefitSuspended { const PACKAGE: &'static str = "govbus.welfare.v1"; const NAME: &'static str = "BenefitSuspended"; }
/// # impl govbus_bus::Event for BenefitSuspended { const TYPE: &'static str = "welfare.benefit.suspended.v1"; }
/// async fn on_death(event: CitizenDeceased, meta: EventMeta) -> Result<(), HandleError> { Ok(()) }
///
/// let welfare = ServiceAdapter::new("welfare")
///     .publishes::<BenefitSuspended>()
///     .consumer(Consumer::new("welfare-identity").on::<CitizenDeceased, _, _>(on_death));
///
/// let contract = welfare.contract()?;
/// assert_eq!(contract.publishes[0].event_type, "welfare.benefit.suspended.v1");
/// assert_eq!(contract.consumes[0].source_service, "identity");
/// # Ok::<(), govbus_bus::AdapterError>(())
/// ```
#[derive(Debug)]
pub struct ServiceAdapter {
    service: String,
    publishes: Vec<PublishedEvent>,
    consumers: Vec<Consumer>,
    observer: Option<Arc<dyn DeliveryObserver>>,
}

impl ServiceAdapter {
    /// The adapter of `service` (lowercase; it names the service's subjects and stream).
    pub fn new(service: impl Into<String>) -> Self {
        Self {
            service: service.into(),
            publishes: Vec::new(),
            consumers: Vec::new(),
            observer: None,
        }
    }

    /// Reports every handled delivery of an event about a person to `observer` (the
    /// processing log).
    pub fn observe_deliveries(mut self, observer: Arc<dyn DeliveryObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Declares that the service publishes events of type `E`.
    pub fn publishes<E: Event>(mut self) -> Self {
        self.publishes.push(PublishedEvent {
            event_type: E::TYPE,
            schema: E::full_name(),
        });
        self
    }

    /// Adds a durable consumer.
    pub fn consumer(mut self, consumer: Consumer) -> Self {
        self.consumers.push(consumer);
        self
    }

    /// The service name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Checks the declaration and returns the service's event contracts.
    pub fn contract(&self) -> Result<ServiceContract, AdapterError> {
        let invalid = |detail: String| {
            AdapterError::with_detail(AdapterErrorKind::InvalidDeclaration, detail)
        };
        Topology::default()
            .check_service(&self.service)
            .map_err(|error| {
                AdapterError::with_source(AdapterErrorKind::InvalidDeclaration, error)
            })?;
        for event in &self.publishes {
            let parsed = EventType::parse(event.event_type).map_err(|error| {
                AdapterError::with_source(AdapterErrorKind::InvalidDeclaration, error)
            })?;
            if parsed.service() != self.service {
                return Err(invalid(format!(
                    "{} publishes {}, which belongs to service {:?}",
                    self.service,
                    event.event_type,
                    parsed.service()
                )));
            }
        }
        let mut names = BTreeSet::new();
        let mut consumes = Vec::with_capacity(self.consumers.len());
        for consumer in &self.consumers {
            if !names.insert(consumer.name()) {
                return Err(invalid(format!(
                    "consumer {:?} is declared twice",
                    consumer.name()
                )));
            }
            let source = consumer.source_service().map_err(consume_to_adapter)?;
            consumes.push(ConsumedEvents {
                consumer: consumer.name().to_owned(),
                source_service: source.to_owned(),
                event_types: consumer.event_types().collect(),
            });
        }
        Ok(ServiceContract {
            service: self.service.clone(),
            publishes: self.publishes.clone(),
            consumes,
        })
    }

    /// The publisher this adapter will use, available before [`start`](Self::start) so that
    /// handlers declared afterwards can publish through it. It sends only the declared events.
    pub fn publisher(&self, bus: &Bus) -> Result<Publisher, AdapterError> {
        Ok(bus
            .publisher(&self.service)
            .map_err(|error| {
                AdapterError::with_source(AdapterErrorKind::InvalidDeclaration, error)
            })?
            .restricted_to(self.publishes.iter().map(|event| event.event_type)))
    }

    /// Provisions streams and consumers and starts consuming.
    pub async fn start(self, bus: &Bus) -> Result<RunningAdapter, AdapterError> {
        let contract = self.contract()?;
        let topology = bus.topology();
        let publisher = self.publisher(bus)?;
        if !self.publishes.is_empty() {
            provision::ensure_stream(
                bus.jetstream(),
                bus.stream_settings(),
                &topology.service_stream(&self.service),
                vec![topology.service_subjects(&self.service)],
                &format!("govbus events published by {}", self.service),
            )
            .await
            .map_err(|error| AdapterError::with_source(AdapterErrorKind::Provision, error))?;
        }
        if !self.consumers.is_empty() {
            bus.dead_letters()
                .ensure_stream(bus.stream_settings())
                .await
                .map_err(|error| AdapterError::with_source(AdapterErrorKind::Provision, error))?;
        }
        let mut prepared = Vec::with_capacity(self.consumers.len());
        for consumer in self.consumers {
            prepared.push(
                prepare_consumer(bus, &self.service, consumer, self.observer.clone())
                    .await
                    .map_err(consume_to_adapter)?,
            );
        }
        let shutdown = CancellationToken::new();
        let consumers = prepared
            .into_iter()
            .map(|consumer| {
                let name = consumer.name().to_owned();
                let task = tokio::spawn(consumer.run(shutdown.child_token()));
                (name, task)
            })
            .collect();
        tracing::info!(
            message = "Service adapter started.",
            service = %self.service,
            publishes = contract.publishes.len(),
            consumers = contract.consumes.len(),
        );
        Ok(RunningAdapter {
            contract,
            publisher,
            shutdown,
            consumers,
        })
    }
}

fn consume_to_adapter(error: ConsumeError) -> AdapterError {
    let kind = match error.kind() {
        crate::ConsumeErrorKind::Provision => AdapterErrorKind::Provision,
        _ => AdapterErrorKind::InvalidDeclaration,
    };
    AdapterError::with_source(kind, error)
}

/// A started adapter: its publisher and its running consumers.
#[derive(Debug)]
pub struct RunningAdapter {
    contract: ServiceContract,
    publisher: Publisher,
    shutdown: CancellationToken,
    consumers: Vec<(String, JoinHandle<()>)>,
}

impl RunningAdapter {
    /// Publishes the events this service declared (and only those).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The service's event contracts.
    pub fn contract(&self) -> &ServiceContract {
        &self.contract
    }

    /// Stops fetching, lets in-flight messages finish, and returns when every consumer stopped.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for (name, task) in self.consumers {
            if let Err(error) = task.await {
                tracing::error!(message = "Consumer task failed.", consumer = %name, %error);
            }
        }
    }
}
