//! The CloudEvents 1.0 envelope in binary content mode over NATS headers.
//!
//! Each context attribute travels as its own header, named `ce-<attribute>`, with the value
//! percent-encoded as the CloudEvents HTTP and NATS bindings describe: space, `"`, `%` and every
//! character outside printable ASCII become `%XX` of their UTF-8 bytes. `datacontenttype` travels
//! as `content-type`, and the payload is the encoded protobuf message. Header names are written in
//! lowercase and read without regard to case.
//!
//! govbus adds two extension attributes, `correlationid` (the business transaction the event
//! belongs to), `causationid` (the event or request that caused it) and, when an event caused
//! it, `causationtype` (that event's type, so a reader sees which service reacted to which
//! without looking the cause up), and sets `Nats-Msg-Id` to
//! the event id so JetStream stores a re-published event once.

use std::borrow::Cow;
use std::fmt::Write as _;

use async_nats::HeaderMap;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::{Error, error_kind};

/// The CloudEvents specification version govbus speaks.
pub const SPEC_VERSION: &str = "1.0";
/// The content type of every govbus event payload.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/protobuf";

/// Header names used by the envelope.
pub mod headers {
    /// CloudEvents `id`.
    pub const ID: &str = "ce-id";
    /// CloudEvents `source`.
    pub const SOURCE: &str = "ce-source";
    /// CloudEvents `type`.
    pub const TYPE: &str = "ce-type";
    /// CloudEvents `specversion`.
    pub const SPEC_VERSION: &str = "ce-specversion";
    /// CloudEvents `time`.
    pub const TIME: &str = "ce-time";
    /// CloudEvents `subject`.
    pub const SUBJECT: &str = "ce-subject";
    /// CloudEvents `dataschema`.
    pub const DATA_SCHEMA: &str = "ce-dataschema";
    /// CloudEvents `datacontenttype`, carried as the content type in binary mode.
    pub const CONTENT_TYPE: &str = "content-type";
    /// govbus extension: the business transaction the event belongs to.
    pub const CORRELATION_ID: &str = "ce-correlationid";
    /// govbus extension: the event or request that caused this event.
    pub const CAUSATION_ID: &str = "ce-causationid";
    /// govbus extension: the type of the event that caused this event.
    pub const CAUSATION_TYPE: &str = "ce-causationtype";
    /// JetStream de-duplication id (set to the event id).
    pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// W3C trace state.
    pub const TRACESTATE: &str = "tracestate";
}

/// Where headers are written: a NATS header map, or the lines an outbox stores.
pub trait HeaderWriter {
    /// Sets header `name` to `value` (already encoded as the header must carry it).
    fn put(&mut self, name: &str, value: &str);
}

impl HeaderWriter for HeaderMap {
    fn put(&mut self, name: &str, value: &str) {
        self.insert(name, value);
    }
}

/// Characters that must be percent-encoded in a header value: controls, space, `"` and `%`.
/// (Non-ASCII characters are always encoded by `utf8_percent_encode`.)
const HEADER_VALUE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

error_kind! {
    /// Why a message's envelope could not be read.
    EnvelopeErrorKind {
        /// A required attribute header is absent.
        MissingAttribute => "missing CloudEvents attribute",
        /// An attribute header is present but its value is invalid.
        InvalidAttribute => "invalid CloudEvents attribute",
        /// The message is not CloudEvents 1.0.
        UnsupportedSpecVersion => "unsupported CloudEvents specversion",
        /// The payload is not protobuf.
        UnsupportedContentType => "unsupported content type",
    }
}

/// An envelope that could not be read from a message's headers.
pub type EnvelopeError = Error<EnvelopeErrorKind>;

/// The CloudEvents context attributes of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Unique id of the event (a UUIDv7 for events govbus creates).
    pub id: String,
    /// Who produced the event, a URI reference such as `/govbus/identity`.
    pub source: String,
    /// Versioned event type, e.g. `identity.citizen.deceased.v1`.
    pub event_type: String,
    /// When the event happened.
    pub time: OffsetDateTime,
    /// The aggregate the event is about (never personal data).
    pub subject: Option<String>,
    /// Payload content type; `application/protobuf` for govbus events.
    pub data_content_type: String,
    /// The protobuf message name of the payload, e.g. `govbus.identity.v1.CitizenDeceased`.
    pub data_schema: Option<String>,
    /// The business transaction this event belongs to.
    pub correlation_id: String,
    /// The event or request that caused this one.
    pub causation_id: Option<String>,
    /// The type of the event that caused this one, when an event did.
    pub causation_type: Option<String>,
}

impl Envelope {
    /// Writes the envelope into `headers`, including `Nats-Msg-Id`.
    pub fn write_headers(&self, headers: &mut impl HeaderWriter) {
        headers.put(headers::SPEC_VERSION, SPEC_VERSION);
        headers.put(headers::ID, &encoded(&self.id));
        headers.put(headers::SOURCE, &encoded(&self.source));
        headers.put(headers::TYPE, &encoded(&self.event_type));
        headers.put(headers::TIME, &format_time(self.time));
        headers.put(headers::CONTENT_TYPE, &encoded(&self.data_content_type));
        if let Some(subject) = &self.subject {
            headers.put(headers::SUBJECT, &encoded(subject));
        }
        if let Some(schema) = &self.data_schema {
            headers.put(headers::DATA_SCHEMA, &encoded(schema));
        }
        headers.put(headers::CORRELATION_ID, &encoded(&self.correlation_id));
        if let Some(causation) = &self.causation_id {
            headers.put(headers::CAUSATION_ID, &encoded(causation));
        }
        if let Some(causation_type) = &self.causation_type {
            headers.put(headers::CAUSATION_TYPE, &encoded(causation_type));
        }
        headers.put(headers::NATS_MSG_ID, &encoded(&self.id));
    }

    /// Reads an envelope from a message's headers.
    ///
    /// `id`, `source`, `type`, `specversion` (which must be `1.0`), `time` and the content type
    /// (which must be `application/protobuf`) are required; a missing `correlationid` defaults to
    /// the event id, so events from producers that do not set it still form a transaction.
    pub fn from_headers(headers: Option<&HeaderMap>) -> Result<Self, EnvelopeError> {
        let attributes = Attributes::read(headers)?;
        let spec_version = attributes.required(headers::SPEC_VERSION)?;
        if spec_version != SPEC_VERSION {
            return Err(EnvelopeError::with_detail(
                EnvelopeErrorKind::UnsupportedSpecVersion,
                format!("{spec_version:?}, expected {SPEC_VERSION:?}"),
            ));
        }
        let data_content_type = attributes.required(headers::CONTENT_TYPE)?;
        if !is_protobuf(&data_content_type) {
            return Err(EnvelopeError::with_detail(
                EnvelopeErrorKind::UnsupportedContentType,
                format!("{data_content_type:?}, expected {PROTOBUF_CONTENT_TYPE:?}"),
            ));
        }
        let id = attributes.required(headers::ID)?;
        let time_text = attributes.required(headers::TIME)?;
        let time = OffsetDateTime::parse(&time_text, &Rfc3339).map_err(|error| {
            EnvelopeError::with_detail(
                EnvelopeErrorKind::InvalidAttribute,
                format!(
                    "{}={time_text:?} is not an RFC 3339 timestamp: {error}",
                    headers::TIME
                ),
            )
        })?;
        Ok(Self {
            correlation_id: attributes
                .optional(headers::CORRELATION_ID)?
                .unwrap_or_else(|| id.clone()),
            id,
            source: attributes.required(headers::SOURCE)?,
            event_type: attributes.required(headers::TYPE)?,
            time,
            subject: attributes.optional(headers::SUBJECT)?,
            data_content_type,
            data_schema: attributes.optional(headers::DATA_SCHEMA)?,
            causation_id: attributes.optional(headers::CAUSATION_ID)?,
            causation_type: attributes.optional(headers::CAUSATION_TYPE)?,
        })
    }
}

fn is_protobuf(content_type: &str) -> bool {
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case(PROTOBUF_CONTENT_TYPE)
        || media_type.eq_ignore_ascii_case("application/x-protobuf")
}

/// Formats a timestamp as RFC 3339 in UTC with microseconds.
pub fn format_time(time: OffsetDateTime) -> String {
    let utc = time.to_offset(time::UtcOffset::UTC);
    let mut text = String::with_capacity(27);
    let _ = write!(
        text,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        utc.year(),
        u8::from(utc.month()),
        utc.day(),
        utc.hour(),
        utc.minute(),
        utc.second(),
        utc.microsecond()
    );
    text
}

/// Percent-encodes a header value.
pub fn encode_value(value: &str) -> String {
    encoded(value).into_owned()
}

/// `value` percent-encoded, borrowed when nothing needed encoding.
fn encoded(value: &str) -> Cow<'_, str> {
    utf8_percent_encode(value, HEADER_VALUE).into()
}

/// Decodes a percent-encoded header value.
pub fn decode_value(name: &str, value: &str) -> Result<String, EnvelopeError> {
    percent_decode_str(value)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| {
            EnvelopeError::with_detail(
                EnvelopeErrorKind::InvalidAttribute,
                format!("{name} is not valid percent-encoded UTF-8"),
            )
        })
}

/// The envelope headers of one message, keyed by lowercase name.
struct Attributes<'a> {
    values: Vec<(String, &'a str)>,
}

impl<'a> Attributes<'a> {
    fn read(headers: Option<&'a HeaderMap>) -> Result<Self, EnvelopeError> {
        let Some(headers) = headers else {
            return Err(EnvelopeError::with_detail(
                EnvelopeErrorKind::MissingAttribute,
                "the message has no headers (not a CloudEvent in binary mode)",
            ));
        };
        let values = headers
            .iter()
            .filter_map(|(name, values)| {
                let name: &str = name.as_ref();
                let lower = name.to_ascii_lowercase();
                (lower.starts_with("ce-") || lower == headers::CONTENT_TYPE)
                    .then(|| values.first().map(|value| (lower, value.as_str())))
                    .flatten()
            })
            .collect();
        Ok(Self { values })
    }

    fn raw(&self, name: &str) -> Option<&'a str> {
        self.values
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| *value)
    }

    fn optional(&self, name: &str) -> Result<Option<String>, EnvelopeError> {
        match self.raw(name) {
            None => Ok(None),
            Some(value) => {
                let decoded = decode_value(name, value)?;
                Ok((!decoded.is_empty()).then_some(decoded))
            }
        }
    }

    fn required(&self, name: &str) -> Result<String, EnvelopeError> {
        self.optional(name)?.ok_or_else(|| {
            EnvelopeError::with_detail(
                EnvelopeErrorKind::MissingAttribute,
                format!("header {name} is missing or empty"),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            id: "0190a3c2-7c1e-7000-8000-000000000001".to_owned(),
            source: "/govbus/identity".to_owned(),
            event_type: "identity.citizen.deceased.v1".to_owned(),
            time: OffsetDateTime::from_unix_timestamp_nanos(1_732_780_800_123_456_000)
                .expect("valid time"),
            subject: Some("warga 35.73/ü \"x\" 100%".to_owned()),
            data_content_type: PROTOBUF_CONTENT_TYPE.to_owned(),
            data_schema: Some("govbus.identity.v1.CitizenDeceased".to_owned()),
            correlation_id: "req-1".to_owned(),
            causation_id: Some("req-1".to_owned()),
            causation_type: Some("identity.citizen.registered.v1".to_owned()),
        }
    }

    #[test]
    fn round_trips_through_headers() {
        let envelope = sample();
        let mut headers = HeaderMap::new();
        envelope.write_headers(&mut headers);
        assert_eq!(
            Envelope::from_headers(Some(&headers)).expect("decodes"),
            envelope
        );
        assert_eq!(
            headers.get(headers::NATS_MSG_ID).map(|v| v.as_str()),
            Some(envelope.id.as_str())
        );
        assert_eq!(
            headers.get(headers::TIME).map(|v| v.as_str()),
            Some("2024-11-28T08:00:00.123456Z")
        );
    }

    #[test]
    fn percent_encodes_as_the_binding_requires() {
        assert_eq!(
            encode_value("warga 35.73/ü \"x\" 100%"),
            "warga%2035.73/%C3%BC%20%22x%22%20100%25"
        );
        assert_eq!(encode_value("plain-ASCII_value.1"), "plain-ASCII_value.1");
        assert_eq!(
            decode_value("ce-subject", "a%20b%C3%BC").expect("valid"),
            "a bü"
        );
        assert!(decode_value("ce-subject", "%C3%28").is_err());
    }

    #[test]
    fn reads_headers_regardless_of_case() {
        let mut headers = HeaderMap::new();
        sample().write_headers(&mut headers);
        let mut upper = HeaderMap::new();
        for (name, values) in headers.iter() {
            let name: &str = name.as_ref();
            for value in values {
                upper.insert(name.to_ascii_uppercase().as_str(), value.as_str());
            }
        }
        assert_eq!(
            Envelope::from_headers(Some(&upper)).expect("decodes"),
            sample()
        );
    }

    #[test]
    fn names_the_missing_attribute() {
        let mut headers = HeaderMap::new();
        sample().write_headers(&mut headers);
        let mut without_type = HeaderMap::new();
        for (name, values) in headers.iter() {
            let name: &str = name.as_ref();
            if name != headers::TYPE {
                without_type.insert(name, values[0].as_str());
            }
        }
        let error = Envelope::from_headers(Some(&without_type)).expect_err("type is required");
        assert_eq!(error.kind(), EnvelopeErrorKind::MissingAttribute);
        assert!(error.to_string().contains("ce-type"), "{error}");
    }

    #[test]
    fn refuses_other_spec_versions_and_content_types() {
        let mut headers = HeaderMap::new();
        sample().write_headers(&mut headers);
        headers.insert(headers::SPEC_VERSION, "0.3");
        let error = Envelope::from_headers(Some(&headers)).expect_err("0.3 refused");
        assert_eq!(error.kind(), EnvelopeErrorKind::UnsupportedSpecVersion);

        let mut headers = HeaderMap::new();
        sample().write_headers(&mut headers);
        headers.insert(headers::CONTENT_TYPE, "application/json");
        let error = Envelope::from_headers(Some(&headers)).expect_err("json refused");
        assert_eq!(error.kind(), EnvelopeErrorKind::UnsupportedContentType);
        assert!(Envelope::from_headers(None).is_err());
    }
}
