//! The dead-letter stream: messages a consumer could not handle, with the reason, kept for an
//! operator to inspect and replay.
//!
//! A dead letter is the original message (payload and headers) plus `Govbus-Dead-Letter-*`
//! headers naming the reason, the delivery count, the consumer and where the message came from.
//! It is written to `<prefix>.deadletter.<service>.<consumer>` in the `<PREFIX>_DEADLETTER`
//! stream before the original is acknowledged, so nothing is lost between the two.
//!
//! Replaying publishes the original message again on its original subject, marked for the one
//! consumer that failed it (other consumers of that subject acknowledge it without handling),
//! and then removes the dead letter.

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, stream::LastRawMessageErrorKind};
use bytes::Bytes;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::envelope::{self, Envelope, decode_value, encode_value, format_time};
use crate::error::{Error, error_kind};
use crate::provision::{self, StreamSettings};
use crate::publish::PublishReceipt;
use crate::topology::Topology;

/// Header names added to a dead letter.
pub mod headers {
    /// Why the message was dead-lettered.
    pub const REASON: &str = "Govbus-Dead-Letter-Reason";
    /// How many times it was delivered before.
    pub const DELIVERIES: &str = "Govbus-Dead-Letter-Deliveries";
    /// The service whose consumer gave up.
    pub const SERVICE: &str = "Govbus-Dead-Letter-Service";
    /// The durable consumer that gave up.
    pub const CONSUMER: &str = "Govbus-Dead-Letter-Consumer";
    /// The stream the message came from.
    pub const STREAM: &str = "Govbus-Dead-Letter-Stream";
    /// Its sequence in that stream.
    pub const SEQUENCE: &str = "Govbus-Dead-Letter-Sequence";
    /// Its original subject.
    pub const SUBJECT: &str = "Govbus-Dead-Letter-Subject";
    /// When it was dead-lettered.
    pub const TIME: &str = "Govbus-Dead-Letter-Time";
    /// On a replayed message: the only consumer that should handle it.
    pub const REPLAY_FOR: &str = "Govbus-Replay-For";
    /// On a replayed message: the dead-letter sequence it was replayed from.
    pub const REPLAY_OF: &str = "Govbus-Replay-Of";
}

error_kind! {
    /// Why a dead-letter operation failed.
    DeadLetterErrorKind {
        /// No dead letter has that sequence number.
        NotFound => "no such dead letter",
        /// The stored message lacks the dead-letter headers.
        Malformed => "not a dead letter",
        /// The dead-letter stream could not be read, written or updated.
        Storage => "dead-letter stream unavailable",
        /// The replayed message was not acknowledged by JetStream.
        Publish => "replay not published",
    }
}

/// A failed dead-letter operation.
pub type DeadLetterError = Error<DeadLetterErrorKind>;

/// One dead letter.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its sequence in the dead-letter stream (what replay takes).
    pub sequence: u64,
    /// Why the consumer gave up.
    pub reason: String,
    /// How many times the message was delivered to the consumer.
    pub deliveries: u64,
    /// The service of the consumer that gave up.
    pub service: String,
    /// The consumer that gave up.
    pub consumer: String,
    /// The stream the message came from.
    pub stream: String,
    /// Its sequence in that stream.
    pub stream_sequence: u64,
    /// Its original subject.
    pub subject: String,
    /// When it was dead-lettered.
    pub dead_lettered_at: OffsetDateTime,
    /// The original headers.
    pub headers: HeaderMap,
    /// The original payload.
    pub payload: Bytes,
}

impl DeadLetter {
    /// The CloudEvents envelope of the original message, if it had a readable one.
    pub fn envelope(&self) -> Option<Envelope> {
        Envelope::from_headers(Some(&self.headers)).ok()
    }
}

/// What went wrong with a message, and where it came from: the input to [`DeadLetters::write`].
#[derive(Debug, Clone)]
pub struct Failure<'a> {
    /// The service (or bus component, such as the gateway) whose consumer gave up.
    pub service: &'a str,
    /// That consumer.
    pub consumer: &'a str,
    /// The stream the message came from.
    pub stream: &'a str,
    /// Its sequence there.
    pub stream_sequence: u64,
    /// Its subject.
    pub subject: &'a str,
    /// How many times it was delivered.
    pub deliveries: u64,
    /// Why the consumer gave up.
    pub reason: &'a str,
}

/// Access to the dead-letter stream.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    jetstream: jetstream::Context,
    topology: Arc<Topology>,
}

impl DeadLetters {
    pub(crate) fn new(jetstream: jetstream::Context, topology: Arc<Topology>) -> Self {
        Self {
            jetstream,
            topology,
        }
    }

    /// Creates the dead-letter stream if needed. Dead letters never expire by age: they wait for
    /// an operator.
    pub async fn ensure_stream(&self, settings: &StreamSettings) -> Result<(), DeadLetterError> {
        let settings = StreamSettings {
            max_age: None,
            ..settings.clone()
        };
        provision::ensure_stream(
            &self.jetstream,
            &settings,
            &self.topology.dead_letter_stream(),
            vec![self.topology.dead_letter_subjects()],
            "govbus dead letters: messages consumers could not handle, with the reason",
        )
        .await
        .map_err(|error| DeadLetterError::with_source(DeadLetterErrorKind::Storage, error))
    }

    /// Stores a dead letter and waits for JetStream's acknowledgement.
    pub async fn write(
        &self,
        original_headers: Option<&HeaderMap>,
        payload: Bytes,
        failure: &Failure<'_>,
    ) -> Result<(), DeadLetterError> {
        let mut headers = HeaderMap::new();
        if let Some(original) = original_headers {
            for (name, values) in original.iter() {
                let name: &str = name.as_ref();
                if is_bus_header(name) {
                    continue;
                }
                for value in values {
                    headers.append(name, value.as_str());
                }
            }
        }
        headers.insert(headers::REASON, encode_value(failure.reason));
        headers.insert(headers::DELIVERIES, failure.deliveries.to_string());
        headers.insert(headers::SERVICE, failure.service);
        headers.insert(headers::CONSUMER, failure.consumer);
        headers.insert(headers::STREAM, failure.stream);
        headers.insert(headers::SEQUENCE, failure.stream_sequence.to_string());
        headers.insert(headers::SUBJECT, failure.subject);
        headers.insert(headers::TIME, format_time(OffsetDateTime::now_utc()));
        // Dead-lettering the same delivery twice (a crash before the original's ack) stores it once.
        headers.insert(
            envelope::headers::NATS_MSG_ID,
            format!(
                "deadletter:{}:{}:{}",
                failure.stream, failure.stream_sequence, failure.consumer
            ),
        );
        let subject = self
            .topology
            .dead_letter_subject(failure.service, failure.consumer);
        let ack = self
            .jetstream
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|error| DeadLetterError::with_source(DeadLetterErrorKind::Storage, error))?;
        ack.await
            .map_err(|error| DeadLetterError::with_source(DeadLetterErrorKind::Storage, error))?;
        Ok(())
    }

    /// How many dead letters are stored.
    pub async fn count(&self) -> Result<u64, DeadLetterError> {
        let mut stream = self.stream().await?;
        let info = stream.info().await.map_err(storage)?;
        Ok(info.state.messages)
    }

    /// Up to `limit` dead letters, oldest first, starting at sequence `from` (1 for all).
    pub async fn list(&self, from: u64, limit: usize) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let stream = self.stream().await?;
        list_from(&stream, &self.topology.dead_letter_subjects(), from, limit).await
    }

    /// The dead letter with this sequence number.
    pub async fn get(&self, sequence: u64) -> Result<DeadLetter, DeadLetterError> {
        let stream = self.stream().await?;
        get_from(&stream, sequence).await
    }

    /// Publishes the dead letter's original message again for the consumer that failed it, then
    /// removes the dead letter.
    ///
    /// The replay gets its own `Nats-Msg-Id` (so JetStream does not drop it as a duplicate of
    /// the original) that is the same for every replay of this dead letter, so replaying twice in
    /// quick succession stores it once.
    pub async fn replay(&self, sequence: u64) -> Result<PublishReceipt, DeadLetterError> {
        let stream = self.stream().await?;
        self.replay_from(&stream, sequence).await
    }

    async fn replay_from(
        &self,
        stream: &jetstream::stream::Stream,
        sequence: u64,
    ) -> Result<PublishReceipt, DeadLetterError> {
        let letter = get_from(stream, sequence).await?;
        let mut headers = letter.headers.clone();
        let original_id = headers
            .get(envelope::headers::ID)
            .map(|value| value.as_str().to_owned())
            .unwrap_or_else(|| format!("{}:{}", letter.stream, letter.stream_sequence));
        headers.insert(
            envelope::headers::NATS_MSG_ID,
            format!("{original_id}:replay:{sequence}"),
        );
        headers.insert(headers::REPLAY_FOR, letter.consumer.as_str());
        headers.insert(headers::REPLAY_OF, sequence.to_string());
        let ack = self
            .jetstream
            .publish_with_headers(letter.subject.clone(), headers, letter.payload.clone())
            .await
            .map_err(|error| DeadLetterError::with_source(DeadLetterErrorKind::Publish, error))?
            .await
            .map_err(|error| DeadLetterError::with_source(DeadLetterErrorKind::Publish, error))?;
        stream.delete_message(sequence).await.map_err(storage)?;
        Ok(PublishReceipt {
            stream: ack.stream,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// Replays every stored dead letter; returns how many were replayed.
    pub async fn replay_all(&self) -> Result<usize, DeadLetterError> {
        let stream = self.stream().await?;
        let mut replayed = 0;
        loop {
            let batch = list_from(&stream, &self.topology.dead_letter_subjects(), 1, 100).await?;
            if batch.is_empty() {
                return Ok(replayed);
            }
            for letter in batch {
                self.replay_from(&stream, letter.sequence).await?;
                replayed += 1;
            }
        }
    }

    async fn stream(&self) -> Result<jetstream::stream::Stream, DeadLetterError> {
        self.jetstream
            .get_stream(self.topology.dead_letter_stream())
            .await
            .map_err(storage)
    }
}

async fn list_from(
    stream: &jetstream::stream::Stream,
    subjects: &str,
    from: u64,
    limit: usize,
) -> Result<Vec<DeadLetter>, DeadLetterError> {
    let mut letters = Vec::new();
    let mut next = from.max(1);
    while letters.len() < limit {
        let found = stream
            .raw_message_builder()
            .sequence(next)
            .next_by_subject(subjects)
            .send()
            .await;
        match found {
            Ok(message) => {
                next = message.sequence + 1;
                letters.push(parse(message)?);
            }
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => break,
            Err(error) => return Err(storage(error)),
        }
    }
    Ok(letters)
}

async fn get_from(
    stream: &jetstream::stream::Stream,
    sequence: u64,
) -> Result<DeadLetter, DeadLetterError> {
    match stream.get_raw_message(sequence).await {
        Ok(message) => parse(message),
        Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => {
            Err(DeadLetterError::with_detail(
                DeadLetterErrorKind::NotFound,
                format!("sequence {sequence}"),
            ))
        }
        Err(error) => Err(storage(error)),
    }
}

fn storage(error: impl std::error::Error + Send + Sync + 'static) -> DeadLetterError {
    DeadLetterError::with_source(DeadLetterErrorKind::Storage, error)
}

/// Headers the bus sets itself and must not copy from an earlier life of the message.
fn is_bus_header(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    lower == "nats-msg-id"
        || lower.starts_with("govbus-dead-letter-")
        || lower.starts_with("govbus-replay-")
}

fn parse(message: jetstream::message::StreamMessage) -> Result<DeadLetter, DeadLetterError> {
    let headers = &message.headers;
    let text = |name: &str| -> Result<String, DeadLetterError> {
        let value = headers
            .get(name)
            .map(|value| value.as_str())
            .ok_or_else(|| {
                DeadLetterError::with_detail(
                    DeadLetterErrorKind::Malformed,
                    format!("sequence {}: header {name} missing", message.sequence),
                )
            })?;
        decode_value(name, value)
            .map_err(|error| DeadLetterError::with_source(DeadLetterErrorKind::Malformed, error))
    };
    let number = |name: &str| -> Result<u64, DeadLetterError> {
        text(name)?.parse().map_err(|_| {
            DeadLetterError::with_detail(
                DeadLetterErrorKind::Malformed,
                format!(
                    "sequence {}: header {name} is not a number",
                    message.sequence
                ),
            )
        })
    };
    let mut original = HeaderMap::new();
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        if !name.to_ascii_lowercase().starts_with("govbus-dead-letter-") {
            for value in values {
                original.append(name, value.as_str());
            }
        }
    }
    Ok(DeadLetter {
        sequence: message.sequence,
        reason: text(headers::REASON)?,
        deliveries: number(headers::DELIVERIES)?,
        service: text(headers::SERVICE)?,
        consumer: text(headers::CONSUMER)?,
        stream: text(headers::STREAM)?,
        stream_sequence: number(headers::SEQUENCE)?,
        subject: text(headers::SUBJECT)?,
        dead_lettered_at: OffsetDateTime::parse(&text(headers::TIME)?, &Rfc3339)
            .unwrap_or(message.time),
        headers: original,
        payload: message.payload,
    })
}
