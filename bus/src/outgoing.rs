//! An encoded event ready to send: what an outbox stores and what the relay sends.
//!
//! An event's headers are kept as `name:value` lines, the form the outbox stores them in, from
//! the moment the event is encoded: storing an event, reading it back and handing it from the
//! writer to the relay then copy one string rather than a map of a dozen headers, and cloning
//! an event only counts a reference. The NATS header map is built when the event is sent.

use std::str::FromStr as _;
use std::sync::{Arc, LazyLock};

use async_nats::header::HeaderName;
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;

use crate::envelope::{HeaderWriter, headers};
use crate::publish::error::{PublishError, PublishErrorKind};

/// Headers as `name:value` lines, one per value, in the order written.
///
/// Only the envelope and the trace context write here: their names hold no ':' and their
/// values no line break (values are percent-encoded), which NATS forbids in headers too.
#[derive(Debug, Default)]
pub(crate) struct HeaderLines(String);

impl HeaderLines {
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        Self(String::with_capacity(bytes))
    }
}

impl HeaderWriter for HeaderLines {
    fn put(&mut self, name: &str, value: &str) {
        self.0.reserve(name.len() + value.len() + 2);
        self.0.push_str(name);
        self.0.push(':');
        self.0.push_str(value);
        self.0.push('\n');
    }
}

/// An encoded event ready to send: subject, headers, payload, the event id and its trace
/// context fixed when it was encoded. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OutgoingEvent {
    parts: Arc<Parts>,
}

#[derive(Debug)]
struct Parts {
    id: String,
    subject: Subject,
    header_lines: String,
    payload: Bytes,
}

impl OutgoingEvent {
    pub(crate) fn new(id: String, subject: String, headers: HeaderLines, payload: Bytes) -> Self {
        Self {
            parts: Arc::new(Parts {
                id,
                subject: Subject::from(subject),
                header_lines: headers.0,
                payload,
            }),
        }
    }

    /// Builds an event from its subject, header name/value pairs (see
    /// [`header_pairs`](Self::header_pairs)) and payload; the id is read from the `ce-id`
    /// header. Refuses a name that is empty or holds ':' or white space, and a value that holds
    /// a line break: NATS headers cannot carry them.
    pub fn from_parts<N: AsRef<str>, V: AsRef<str>>(
        subject: impl Into<String>,
        header_pairs: impl IntoIterator<Item = (N, V)>,
        payload: impl Into<Bytes>,
    ) -> Result<Self, PublishError> {
        let mut lines = HeaderLines::default();
        for (name, value) in header_pairs {
            let (name, value) = (name.as_ref(), value.as_ref());
            if !is_header_name(name) {
                return Err(PublishError::with_detail(
                    PublishErrorKind::InvalidEvent,
                    format!("{name:?} is not a NATS header name"),
                ));
            }
            if value.contains(['\r', '\n']) {
                return Err(PublishError::with_detail(
                    PublishErrorKind::InvalidEvent,
                    format!("the value of header {name} holds a line break"),
                ));
            }
            lines.put(name, value);
        }
        Ok(Self::from_stored(subject, lines.0, payload))
    }

    /// Rebuilds an event from what an outbox stored: its subject, its
    /// [`header_lines`](Self::header_lines) and its payload. The id is read from the `ce-id`
    /// header (empty without one).
    pub fn from_stored(
        subject: impl Into<String>,
        header_lines: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Self {
        let header_lines = header_lines.into();
        let id = first_value(&header_lines, headers::ID)
            .unwrap_or_default()
            .to_owned();
        Self {
            parts: Arc::new(Parts {
                id,
                subject: Subject::from(subject.into()),
                header_lines,
                payload: payload.into(),
            }),
        }
    }

    /// The event id (also its `Nats-Msg-Id`).
    pub fn id(&self) -> &str {
        &self.parts.id
    }

    /// The NATS subject.
    pub fn subject(&self) -> &str {
        &self.parts.subject
    }

    pub(crate) fn nats_subject(&self) -> Subject {
        self.parts.subject.clone()
    }

    /// The first value of header `name` (compared without regard to case).
    pub fn header(&self, name: &str) -> Option<&str> {
        first_value(&self.parts.header_lines, name)
    }

    /// The headers (the CloudEvents envelope and the trace context) as `name:value` lines, one
    /// per value: the form an outbox stores.
    pub fn header_lines(&self) -> &str {
        &self.parts.header_lines
    }

    /// The headers as NATS sends them, built anew on each call.
    pub fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in lines(&self.parts.header_lines) {
            // Lines come from `from_parts` or the encoder, which write only what NATS headers
            // carry; a line an outside hand put in the outbox table with a name or value they
            // cannot carry is not sent (async-nats would panic on it).
            if let Some(name) = header_name(name)
                && !value.contains('\r')
            {
                map.append(name, value);
            }
        }
        map
    }

    /// The headers as name/value pairs, sorted by name.
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = lines(&self.parts.header_lines)
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        pairs.sort();
        pairs
    }

    /// The encoded protobuf payload.
    pub fn payload(&self) -> &Bytes {
        &self.parts.payload
    }
}

/// Whether NATS takes `name` as a header name: printable ASCII without ':'.
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic() && c != ':')
}

/// The names the envelope and the trace context write, made once: a name made from a `&str`
/// is a copy of it, one allocation per header of every event sent.
static KNOWN_NAMES: LazyLock<Vec<(&'static str, HeaderName)>> = LazyLock::new(|| {
    [
        headers::SPEC_VERSION,
        headers::ID,
        headers::SOURCE,
        headers::TYPE,
        headers::TIME,
        headers::SUBJECT,
        headers::DATA_SCHEMA,
        headers::CONTENT_TYPE,
        headers::CORRELATION_ID,
        headers::CAUSATION_ID,
        headers::CAUSATION_TYPE,
        headers::NATS_MSG_ID,
        headers::TRACEPARENT,
        headers::TRACESTATE,
    ]
    .into_iter()
    .map(|name| (name, HeaderName::from_static(name)))
    .collect()
});

fn header_name(name: &str) -> Option<HeaderName> {
    match KNOWN_NAMES.iter().find(|(known, _)| *known == name) {
        Some((_, header)) => Some(header.clone()),
        None if is_header_name(name) => HeaderName::from_str(name).ok(),
        None => None,
    }
}

fn lines(header_lines: &str) -> impl Iterator<Item = (&str, &str)> {
    header_lines.lines().filter_map(|line| line.split_once(':'))
}

fn first_value<'a>(header_lines: &'a str, name: &str) -> Option<&'a str> {
    lines(header_lines)
        .find(|(line_name, _)| line_name.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_headers_as_lines_and_sends_them_as_a_map() {
        let event = OutgoingEvent::from_parts(
            "govbus.identity.citizen.registered.v1",
            [
                ("ce-id", "0190a3c2-7c1e-7000-8000-000000000001"),
                ("ce-subject", "warga%2035.73"),
                ("Nats-Msg-Id", "0190a3c2-7c1e-7000-8000-000000000001"),
                ("x-custom", "kept"),
            ],
            vec![1, 2, 3],
        )
        .expect("valid headers");
        assert_eq!(event.id(), "0190a3c2-7c1e-7000-8000-000000000001");
        assert_eq!(event.header("CE-SUBJECT"), Some("warga%2035.73"));
        assert_eq!(event.header("ce-type"), None);
        let stored = OutgoingEvent::from_stored(
            event.subject(),
            event.header_lines().to_owned(),
            event.payload().clone(),
        );
        assert_eq!(stored.header_pairs(), event.header_pairs());
        let map = event.header_map();
        assert_eq!(
            map.get("Nats-Msg-Id").map(|value| value.as_str()),
            Some(event.id())
        );
        assert_eq!(
            map.get("x-custom").map(|value| value.as_str()),
            Some("kept")
        );
        assert_eq!(map.iter().count(), 4);
    }

    #[test]
    fn sends_no_stored_line_a_nats_header_cannot_carry() {
        let event = OutgoingEvent::from_stored(
            "s",
            "ce-id:1\nbad name:x\nce-subject:a\rb\nnot a header\n",
            Vec::new(),
        );
        let map = event.header_map();
        assert_eq!(map.len(), 1);
        assert_eq!(map.get("ce-id").map(|value| value.as_str()), Some("1"));
    }

    #[test]
    fn refuses_what_a_nats_header_cannot_carry() {
        for (name, value) in [
            ("", "x"),
            ("ce:id", "x"),
            ("ce id", "x"),
            ("cé-id", "x"),
            ("ce-id", "a\nb"),
        ] {
            let error =
                OutgoingEvent::from_parts("s", [(name, value)], Vec::new()).expect_err("refused");
            assert_eq!(error.kind(), PublishErrorKind::InvalidEvent, "{name:?}");
        }
    }
}
