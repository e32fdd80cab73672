//! A delivered event as its handler sees it (where it came from, [`EventMeta`]), what the
//! handler answers ([`HandleError`]), and who is told of a handled delivery about a person.

use std::time::Duration;

use time::OffsetDateTime;

use crate::envelope::Envelope;
use crate::error::{Error, error_kind};

error_kind! {
    /// How a handler failed.
    HandleErrorKind {
        /// Worth retrying later (a database timeout, a service that is down).
        Transient => "transient handler failure",
        /// Retrying cannot help (the event contradicts the handler's state, a bug).
        Permanent => "permanent handler failure",
    }
}

/// A handler's failure, telling the consumer whether to retry.
pub type HandleError = Error<HandleErrorKind>;

impl HandleError {
    /// A failure worth retrying: the message is redelivered after a back-off delay.
    pub fn transient(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::with_source(HandleErrorKind::Transient, cause)
    }

    /// A failure retrying cannot fix: the message goes to the dead-letter stream at once.
    pub fn permanent(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::with_source(HandleErrorKind::Permanent, cause)
    }

    /// A transient failure whose cause said when to come back (an HTTP `Retry-After`): the
    /// message is redelivered after `delay` or the back-off delay, whichever is longer (at most
    /// an hour).
    pub fn transient_after(
        cause: impl Into<Box<dyn std::error::Error + Send + Sync>>,
        delay: Duration,
    ) -> Self {
        Self::with_source(
            HandleErrorKind::Transient,
            RetryAfter {
                delay,
                cause: cause.into(),
            },
        )
    }

    /// The delay the cause asked for, if it did ([`HandleError::transient_after`]).
    pub fn retry_after(&self) -> Option<Duration> {
        std::error::Error::source(self)
            .and_then(|source| source.downcast_ref::<RetryAfter>())
            .map(|retry| retry.delay)
    }
}

/// A cause that said when to retry.
#[derive(Debug)]
struct RetryAfter {
    delay: Duration,
    cause: Box<dyn std::error::Error + Send + Sync>,
}

impl std::fmt::Display for RetryAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (retry after {} s)", self.cause, self.delay.as_secs())
    }
}

impl std::error::Error for RetryAfter {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.cause.as_ref())
    }
}

/// Where and how a message was delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The durable consumer that received it.
    pub consumer: String,
    /// The stream it is stored in.
    pub stream: String,
    /// Its sequence number in that stream.
    pub stream_sequence: u64,
    /// Which delivery this is: 1 the first time, 2 for the first redelivery, …
    pub attempt: u64,
    /// The NATS subject it was published on.
    pub nats_subject: String,
    /// When JetStream stored it.
    pub published: OffsetDateTime,
    /// True when an operator replayed it from the dead-letter stream.
    pub replayed: bool,
}

/// Everything about an event except its payload: handed to handlers with the decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    /// The CloudEvents attributes.
    pub envelope: Envelope,
    /// The delivery.
    pub delivery: Delivery,
    /// The W3C `traceparent` the producer sent, if any.
    pub traceparent: Option<String>,
}

/// A handled delivery of an event about a person (an event type with a
/// [data subject](crate::Event::data_subject)), reported to the adapter's [`DeliveryObserver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandledDelivery<'a> {
    /// The consuming service.
    pub service: &'a str,
    /// The durable consumer that handled it.
    pub consumer: &'a str,
    /// The CloudEvents type.
    pub event_type: &'a str,
    /// The service that published it.
    pub publisher: &'a str,
    /// The pseudonymous reference of the person the event is about.
    pub data_subject: &'a str,
    /// Why the consumer processes it, as declared with [`Consumer::purpose`](super::Consumer::purpose).
    pub purpose: &'a str,
    /// The W3C trace id the event carried, if any (32 lowercase hex digits).
    pub trace_id: Option<&'a str>,
}

/// Told of every handled delivery of an event about a person: the processing log's hook.
///
/// Called on the consumer's task after the handler succeeded and before the ack, so it must
/// not block; queue the work.
pub trait DeliveryObserver: Send + Sync + std::fmt::Debug {
    /// `delivery` was handled.
    fn handled(&self, delivery: &HandledDelivery<'_>);
}
