//! The govbus event bus: typed domain events as CloudEvents over NATS JetStream.
//!
//! Services publish protobuf events with `publisher.publish(&event)` and handle other services'
//! events in `async fn`s that receive the decoded event and its envelope. Underneath, every
//! event is a CloudEvents 1.0 event in binary content mode (attributes as `ce-*` NATS headers,
//! the protobuf as payload), stored in a per-service JetStream stream, de-duplicated by its
//! UUIDv7 id, and traced with W3C trace context so a consumer's span continues the producer's
//! trace. Consumers are durable pull consumers with explicit acks; what they cannot handle goes
//! to a dead-letter stream with the reason, from which an operator can replay it.
//!
//! # Layout
//!
//! - [`connect`]: [`BusOptions`] (servers, credentials, TLS, retry) and the [`Bus`] connection.
//! - [`topology`]: subject and stream names, all derived from one prefix.
//! - [`event`]: the [`Event`] trait tying a protobuf message to its versioned type.
//! - [`envelope`]: the CloudEvents attributes and their NATS header mapping.
//! - [`outgoing`]: [`OutgoingEvent`], an encoded event as an outbox stores it.
//! - [`publish`]: [`Publisher`], encoding events and sending them until acknowledged.
//! - [`consumer`]: [`Consumer`] declarations, handler outcomes, redelivery and dead-lettering.
//! - [`dead_letter`]: reading and replaying the dead-letter stream.
//! - [`adapter`]: [`ServiceAdapter`], one declaration of what a service publishes and consumes.
//! - [`permissions`]: the NATS permissions a service needs, from its contract.
//! - [`provision`]: creating and updating streams idempotently.
//! - [`trace_context`]: W3C `traceparent` in NATS headers.
//! - [`backoff`]: exponential back-off shared by retries and redeliveries.
//! - [`error`]: the [`Error`] type with a `kind()` per operation.

pub mod adapter;
pub mod backoff;
pub mod connect;
pub mod consumer;
mod counters;
pub mod dead_letter;
pub mod envelope;
pub mod error;
pub mod event;
pub mod outgoing;
pub mod permissions;
pub mod provision;
pub mod publish;
pub mod topology;
pub mod trace_context;

pub use adapter::{
    AdapterError, AdapterErrorKind, ConsumedEvents, PublishedEvent, RunningAdapter, ServiceAdapter,
    ServiceContract,
};
pub use backoff::Backoff;
pub use connect::{Bus, BusOptions, ConnectError, ConnectErrorKind, Credentials, TlsSettings};
pub use consumer::{
    CONSUMER_SERVICE_METADATA, CONSUMER_SOURCE_METADATA, ConsumeError, ConsumeErrorKind, Consumer,
    ConsumerSettings, Delivery, DeliveryObserver, EventMeta, HandleError, HandleErrorKind,
    HandledDelivery,
};
pub use dead_letter::{DeadLetter, DeadLetterError, DeadLetterErrorKind, DeadLetters};
pub use envelope::{Envelope, EnvelopeError, EnvelopeErrorKind};
pub use error::Error;
pub use event::{Event, EventType, EventTypeError, EventTypeErrorKind};
pub use outgoing::OutgoingEvent;
pub use provision::{ProvisionError, ProvisionErrorKind, StreamSettings};
pub use publish::{
    Causality, FailedPublish, PendingPublish, PublishError, PublishErrorKind, PublishReceipt,
    Publisher, RetryPolicy,
};
pub use topology::{NameError, NameErrorKind, Topology};

/// `docs/adding-an-adapter.md`, compiled and run as doc tests so the guide stays true.
#[cfg(doctest)]
#[doc = include_str!("../../docs/adding-an-adapter.md")]
pub struct AddingAnAdapterGuide;
