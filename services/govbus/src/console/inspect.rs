//! Reading the bus for operators: streams, consumers and their lag, the flow between services,
//! events decoded with personal fields masked.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Instant;

use async_nats::jetstream;
use futures_util::TryStreamExt as _;
use govbus_bus::{Bus, CONSUMER_SERVICE_METADATA, Envelope};
use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage as _, Value};

use crate::api::{ConsumerView, DEAD_LETTER_SERVICE, EventView, FlowEdge, StreamView};

/// What personal fields are replaced with.
pub const MASK: &str = "•••";

static POOL: LazyLock<Option<DescriptorPool>> =
    LazyLock::new(|| DescriptorPool::decode(govbus_proto::FILE_DESCRIPTOR_SET).ok());

/// Keeps the previous reading of each counter, to turn counters into rates.
#[derive(Debug, Default)]
pub struct Rates {
    previous: Mutex<HashMap<String, Sample>>,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    value: u64,
    rate: f64,
}

impl Rates {
    /// The rate of `counter` since the reading at least a second old; the last rate otherwise.
    pub fn rate(&self, key: &str, value: u64) -> f64 {
        let now = Instant::now();
        let mut previous = self.previous.lock().unwrap_or_else(PoisonError::into_inner);
        match previous.get_mut(key) {
            Some(sample) => {
                let elapsed = now.duration_since(sample.at).as_secs_f64();
                if elapsed >= 1.0 {
                    sample.rate = value.saturating_sub(sample.value) as f64 / elapsed;
                    sample.at = now;
                    sample.value = value;
                }
                sample.rate
            }
            None => {
                previous.insert(
                    key.to_owned(),
                    Sample {
                        at: now,
                        value,
                        rate: 0.0,
                    },
                );
                0.0
            }
        }
    }
}

/// Every govbus stream (and the dead-letter stream) with its consumers.
pub async fn streams(bus: &Bus, rates: &Rates) -> Result<Vec<StreamView>, String> {
    let prefix = format!("{}_", stream_prefix(bus));
    let mut views = Vec::new();
    for (stream, info) in bus_streams(bus).await? {
        let name = info.config.name.clone();
        let consumers: Vec<jetstream::consumer::Info> = stream
            .consumers()
            .try_collect()
            .await
            .map_err(|error| format!("listing consumers of {name}: {error}"))?;
        let bus_prefix = format!("{}.", bus.topology().prefix());
        let mut consumer_views: Vec<ConsumerView> = consumers
            .into_iter()
            .map(|consumer| {
                let service = consumer
                    .config
                    .metadata
                    .get(CONSUMER_SERVICE_METADATA)
                    .cloned()
                    .unwrap_or_else(|| "unknown".to_owned());
                let mut filters = consumer.config.filter_subjects.clone();
                if let Some(subject) = Some(consumer.config.filter_subject.clone())
                    .filter(|subject| !subject.is_empty())
                {
                    filters.push(subject);
                }
                let ack_pending = consumer.num_ack_pending as u64;
                ConsumerView {
                    delivery_rate: rates.rate(
                        &format!("{name}/{}", consumer.name),
                        consumer.delivered.consumer_sequence,
                    ),
                    name: consumer.name,
                    service,
                    filter_subjects: filters
                        .into_iter()
                        .map(|subject| subject.trim_start_matches(&bus_prefix).to_owned())
                        .collect(),
                    pending: consumer.num_pending,
                    ack_pending,
                    redelivered: consumer.num_redelivered as u64,
                    lag: consumer.num_pending + ack_pending,
                }
            })
            .collect();
        consumer_views.sort_by(|a, b| a.name.cmp(&b.name));
        views.push(StreamView {
            service: name.trim_start_matches(&prefix).to_ascii_lowercase(),
            messages: info.state.messages,
            bytes: info.state.bytes,
            last_sequence: info.state.last_sequence,
            publish_rate: rates.rate(&name, info.state.last_sequence),
            consumers: consumer_views,
            name,
        });
    }
    views.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(views)
}

/// The bus's streams (`GOVBUS_*`, dead letters included) with their current info, by name.
async fn bus_streams(
    bus: &Bus,
) -> Result<Vec<(jetstream::stream::Stream, jetstream::stream::Info)>, String> {
    let prefix = format!("{}_", stream_prefix(bus));
    let js = bus.jetstream();
    let names: Vec<String> = js
        .stream_names()
        .try_collect()
        .await
        .map_err(|error| format!("listing streams: {error}"))?;
    let mut streams = Vec::new();
    for name in names.into_iter().filter(|name| name.starts_with(&prefix)) {
        let mut stream = js
            .get_stream(&name)
            .await
            .map_err(|error| format!("reading stream {name}: {error}"))?;
        let info = stream
            .info()
            .await
            .map_err(|error| format!("reading stream {name}: {error}"))?
            .clone();
        streams.push((stream, info));
    }
    streams.sort_by(|a, b| a.1.config.name.cmp(&b.1.config.name));
    Ok(streams)
}

/// The flow between services, from the streams' consumers.
pub fn flow(streams: &[StreamView]) -> Vec<FlowEdge> {
    let mut edges = Vec::new();
    for stream in streams
        .iter()
        .filter(|stream| stream.service != DEAD_LETTER_SERVICE)
    {
        for consumer in &stream.consumers {
            let service_prefix = format!("{}.", stream.service);
            let events = consumer
                .filter_subjects
                .iter()
                .map(|subject| {
                    let event = subject.trim_start_matches(&service_prefix);
                    if event == ">" {
                        "*".to_owned()
                    } else {
                        event.to_owned()
                    }
                })
                .collect();
            edges.push(FlowEdge {
                from: stream.service.clone(),
                to: consumer.service.clone(),
                consumer: consumer.name.clone(),
                events,
                rate: consumer.delivery_rate,
                lag: consumer.lag,
            });
        }
    }
    edges
}

/// The `GOVBUS` of `GOVBUS_IDENTITY`.
fn stream_prefix(bus: &Bus) -> String {
    bus.topology().prefix().to_ascii_uppercase()
}

/// Recent events of the services' streams, newest first, filtered by service and type.
pub async fn recent_events(
    bus: &Bus,
    service: Option<&str>,
    event_type: Option<&str>,
    limit: usize,
) -> Result<Vec<EventView>, String> {
    let prefix = format!("{}_", stream_prefix(bus));
    let mut events = Vec::new();
    for (stream, info) in bus_streams(bus).await? {
        let Some(owner) = info
            .config
            .name
            .strip_prefix(&prefix)
            .map(str::to_ascii_lowercase)
        else {
            continue;
        };
        if owner == DEAD_LETTER_SERVICE || service.is_some_and(|wanted| wanted != owner) {
            continue;
        }
        let mut sequence = info.state.last_sequence;
        let mut taken = 0;
        // Looks back at most 20 times the limit, so a rare type does not scan a whole stream.
        let mut budget = limit.saturating_mul(20).max(100);
        while sequence >= info.state.first_sequence.max(1) && taken < limit && budget > 0 {
            budget -= 1;
            if let Ok(message) = stream.get_raw_message(sequence).await {
                let view = view_of(
                    Some(message.sequence),
                    &message.subject,
                    Some(&message.headers),
                    &message.payload,
                );
                if event_type.is_none_or(|wanted| view.event_type.as_deref() == Some(wanted)) {
                    events.push((message.time, view));
                    taken += 1;
                }
            }
            sequence -= 1;
        }
    }
    events.sort_by_key(|event| std::cmp::Reverse(event.0));
    Ok(events
        .into_iter()
        .take(limit)
        .map(|(_, view)| view)
        .collect())
}

/// Decodes a message: its envelope from the headers, its payload by the schema the envelope
/// names, personal fields masked.
pub fn view_of(
    sequence: Option<u64>,
    subject: &str,
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
) -> EventView {
    let envelope = Envelope::from_headers(headers).ok();
    let trace_id = headers
        .and_then(|headers| headers.get("traceparent"))
        .and_then(|value| {
            govbus_bus::trace_context::trace_id_of(value.as_str()).map(str::to_owned)
        });
    let (data, decode_error) = match envelope
        .as_ref()
        .and_then(|envelope| envelope.data_schema.clone())
    {
        Some(schema) => match decode_masked(&schema, payload) {
            Ok(json) => (Some(json), None),
            Err(error) => (None, Some(error)),
        },
        None => (None, Some("no readable envelope or schema".to_owned())),
    };
    EventView {
        sequence,
        subject: subject.to_owned(),
        id: envelope.as_ref().map(|envelope| envelope.id.clone()),
        event_type: envelope
            .as_ref()
            .map(|envelope| envelope.event_type.clone()),
        source: envelope.as_ref().map(|envelope| envelope.source.clone()),
        time: envelope.as_ref().and_then(|envelope| {
            envelope
                .time
                .format(&time::format_description::well_known::Rfc3339)
                .ok()
        }),
        correlation_id: envelope
            .as_ref()
            .map(|envelope| envelope.correlation_id.clone()),
        trace_id,
        data,
        decode_error,
    }
}

/// Decodes `payload` as the message `schema` and returns it as JSON, every field marked
/// `(govbus.bus.v1.personal)` replaced by [`MASK`].
pub fn decode_masked(schema: &str, payload: &[u8]) -> Result<serde_json::Value, String> {
    let pool = POOL
        .as_ref()
        .ok_or_else(|| "the compiled contracts could not be read".to_owned())?;
    let descriptor = pool
        .get_message_by_name(schema)
        .ok_or_else(|| format!("unknown schema {schema:?}"))?;
    let mut message = DynamicMessage::decode(descriptor, payload)
        .map_err(|error| format!("payload is not a valid {schema}: {error}"))?;
    mask_personal(pool, &mut message);
    serde_json::to_value(&message).map_err(|error| error.to_string())
}

/// Converts a generated message to JSON with personal fields masked (for gRPC answers the
/// console shows).
pub fn to_masked_json(schema: &str, message: &impl prost::Message) -> serde_json::Value {
    decode_masked(schema, &message.encode_to_vec()).unwrap_or(serde_json::Value::Null)
}

fn mask_personal(pool: &DescriptorPool, message: &mut DynamicMessage) {
    let Some(personal) = pool.get_extension_by_name("govbus.bus.v1.personal") else {
        return;
    };
    mask_with(&personal, message);
}

fn mask_with(personal: &prost_reflect::ExtensionDescriptor, message: &mut DynamicMessage) {
    let fields: Vec<_> = message.descriptor().fields().collect();
    for field in fields {
        if !message.has_field(&field) {
            continue;
        }
        let options = field.options();
        let is_personal = options.has_extension(personal)
            && matches!(options.get_extension(personal).as_ref(), Value::Bool(true));
        if is_personal {
            message.set_field(&field, Value::String(MASK.to_owned()));
            continue;
        }
        mask_value(personal, message.get_field_mut(&field));
    }
}

fn mask_value(personal: &prost_reflect::ExtensionDescriptor, value: &mut Value) {
    match value {
        Value::Message(inner) => mask_with(personal, inner),
        Value::List(items) => items.iter_mut().for_each(|item| mask_value(personal, item)),
        Value::Map(entries) => entries
            .values_mut()
            .for_each(|item| mask_value(personal, item)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn personal_fields_are_masked_and_others_kept() {
        let event = govbus_proto::identity::v1::CitizenRelocated {
            citizen_ref: "cit_0193".into(),
            from_kelurahan_code: "35.73.01.1001".into(),
            to_kelurahan_code: "35.73.02.1001".into(),
        };
        let json = decode_masked(
            "govbus.identity.v1.CitizenRelocated",
            &event.encode_to_vec(),
        )
        .expect("decodes");
        assert_eq!(json["citizenRef"], MASK);
        assert_eq!(json["toKelurahanCode"], "35.73.02.1001");
    }

    #[test]
    fn a_nik_in_a_request_is_masked() {
        let request = govbus_proto::identity::v1::VerifyCitizenRequest {
            nik: "3573010101900001".into(),
            ..Default::default()
        };
        let json = to_masked_json("govbus.identity.v1.VerifyCitizenRequest", &request);
        assert_eq!(json["nik"], MASK);
        assert!(!json.to_string().contains("3573010101900001"));
    }

    #[test]
    fn an_unknown_schema_or_bad_payload_is_an_error_not_a_panic() {
        assert!(decode_masked("govbus.nothing.v1.Nothing", b"").is_err());
        assert!(decode_masked("govbus.identity.v1.CitizenRelocated", &[0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn rates_need_two_readings() {
        let rates = Rates::default();
        assert!((rates.rate("x", 10) - 0.0).abs() < f64::EPSILON);
        // Within a second the previous rate stands.
        assert!((rates.rate("x", 20) - 0.0).abs() < f64::EPSILON);
    }
}
