//! Publish and consume against a real nats-server: headers, de-duplication, restarts.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{CitizenRegistered, eventually, identity, registered, start};
use govbus_bus::envelope::headers;
use govbus_bus::{
    Bus, Causality, Consumer, EventMeta, HandleError, RunningAdapter, ServiceAdapter,
};

type Seen = Arc<Mutex<Vec<(CitizenRegistered, EventMeta)>>>;

fn recording_consumer(name: &str, seen: &Seen) -> Consumer {
    let seen = Arc::clone(seen);
    Consumer::new(name).ack_wait(Duration::from_secs(2)).on(
        move |event: CitizenRegistered, meta: EventMeta| {
            let seen = Arc::clone(&seen);
            async move {
                seen.lock().expect("lock").push((event, meta));
                Ok::<(), HandleError>(())
            }
        },
    )
}

async fn welfare(bus: &Bus, seen: &Seen) -> RunningAdapter {
    ServiceAdapter::new("welfare")
        .consumer(recording_consumer("welfare-identity", seen))
        .start(bus)
        .await
        .expect("welfare adapter starts")
}

fn counts(seen: &Seen) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (event, _) in seen.lock().expect("lock").iter() {
        *counts.entry(event.citizen_ref.clone()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_carries_every_envelope_attribute() {
    let (_server, bus) = start().await;
    let identity = identity(&bus).await;
    let seen = Seen::default();
    let welfare = welfare(&bus, &seen).await;

    let receipt = identity
        .publisher()
        .publish_with(&registered(1), &Causality::request("request-42"))
        .await
        .expect("published");
    assert_eq!(receipt.stream, "GOVBUS_IDENTITY");
    assert!(!receipt.duplicate);

    eventually(
        "the event is handled",
        Duration::from_secs(10),
        async || !seen.lock().expect("lock").is_empty(),
    )
    .await;
    let (event, meta) = seen.lock().expect("lock")[0].clone();
    assert_eq!(event, registered(1));
    let envelope = &meta.envelope;
    let id = uuid::Uuid::parse_str(&envelope.id).expect("the id is a UUID");
    assert_eq!(id.get_version_num(), 7, "event ids are UUIDv7");
    assert_eq!(envelope.source, "/govbus/identity");
    assert_eq!(envelope.event_type, "identity.citizen.registered.v1");
    assert_eq!(envelope.subject.as_deref(), Some("citizen-1"));
    assert_eq!(envelope.data_content_type, "application/protobuf");
    assert_eq!(
        envelope.data_schema.as_deref(),
        Some("govbus.identity.v1.CitizenRegistered")
    );
    assert_eq!(envelope.correlation_id, "request-42");
    assert_eq!(envelope.causation_id.as_deref(), Some("request-42"));
    assert_eq!(meta.delivery.attempt, 1);
    assert_eq!(meta.delivery.consumer, "welfare-identity");
    assert_eq!(
        meta.delivery.nats_subject,
        "govbus.identity.citizen.registered.v1"
    );
    assert!(!meta.delivery.replayed);

    // The raw message in the stream carries the binding's headers.
    let stream = bus
        .jetstream()
        .get_stream("GOVBUS_IDENTITY")
        .await
        .expect("stream exists");
    let stored = stream
        .get_raw_message(receipt.sequence)
        .await
        .expect("stored");
    let header = |name: &str| stored.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(header(headers::SPEC_VERSION).as_deref(), Some("1.0"));
    assert_eq!(header(headers::ID), Some(envelope.id.clone()));
    assert_eq!(header(headers::NATS_MSG_ID), Some(envelope.id.clone()));
    assert_eq!(
        header(headers::CONTENT_TYPE).as_deref(),
        Some("application/protobuf")
    );
    assert!(header(headers::TIME).is_some_and(|time| time.ends_with('Z')));

    welfare.shutdown().await;
    identity.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republished_event_is_stored_and_handled_once() {
    let (_server, bus) = start().await;
    let identity = identity(&bus).await;
    let seen = Seen::default();
    let welfare = welfare(&bus, &seen).await;

    let publisher = identity.publisher();
    let outgoing = publisher
        .encode(&registered(1), &Causality::root())
        .expect("encodes");
    let first = publisher.send(&outgoing).await.expect("first send");
    let second = publisher.send(&outgoing).await.expect("second send");
    assert!(!first.duplicate);
    assert!(
        second.duplicate,
        "JetStream recognises the same Nats-Msg-Id"
    );
    assert_eq!(first.sequence, second.sequence);
    // A later event proves the consumer has moved past the duplicate.
    publisher.publish(&registered(2)).await.expect("marker");

    eventually(
        "the marker is handled",
        Duration::from_secs(10),
        async || counts(&seen).contains_key("citizen-2"),
    )
    .await;
    assert_eq!(counts(&seen).get("citizen-1"), Some(&1));

    welfare.shutdown().await;
    identity.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_consumer_resumes_without_loss_or_duplicates() {
    let (_server, bus) = start().await;
    let identity = identity(&bus).await;
    let seen = Seen::default();
    let welfare_first = welfare(&bus, &seen).await;

    let publisher = identity.publisher().clone();
    for n in 0..100 {
        publisher.publish(&registered(n)).await.expect("published");
    }
    eventually(
        "some events are handled",
        Duration::from_secs(10),
        async || seen.lock().expect("lock").len() >= 20,
    )
    .await;
    welfare_first.shutdown().await;

    // Published while no consumer runs.
    for n in 100..150 {
        publisher.publish(&registered(n)).await.expect("published");
    }
    let welfare_second = welfare(&bus, &seen).await;
    eventually(
        "every event is handled",
        Duration::from_secs(30),
        async || counts(&seen).len() == 150,
    )
    .await;
    welfare_second.shutdown().await;

    let counts = counts(&seen);
    let duplicated: Vec<_> = counts.iter().filter(|(_, count)| **count > 1).collect();
    assert!(duplicated.is_empty(), "handled twice: {duplicated:?}");
    identity.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_when_the_server_restarts_mid_stream() {
    let (mut server, bus) = start().await;
    let identity = identity(&bus).await;
    let seen = Seen::default();
    let welfare = welfare(&bus, &seen).await;

    let publisher = identity.publisher().clone();
    let publishing = tokio::spawn(async move {
        for n in 0..300 {
            publisher
                .publish(&registered(n))
                .await
                .expect("acknowledged in the end");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    eventually(
        "the burst is under way",
        Duration::from_secs(10),
        async || seen.lock().expect("lock").len() >= 50,
    )
    .await;
    tokio::task::block_in_place(|| {
        server.stop().expect("server stops");
        std::thread::sleep(Duration::from_millis(300));
        server.restart().expect("server restarts");
    });
    publishing.await.expect("publisher finished");

    eventually(
        "every event is handled",
        Duration::from_secs(60),
        async || counts(&seen).len() == 300,
    )
    .await;
    let mut stream = bus
        .jetstream()
        .get_stream("GOVBUS_IDENTITY")
        .await
        .expect("stream exists");
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.state.messages, 300, "retries stored no duplicates");

    welfare.shutdown().await;
    identity.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_refuses_events_it_did_not_declare() {
    let (_server, bus) = start().await;
    let identity = identity(&bus).await;
    let error = identity
        .publisher()
        .publish(&common::CitizenDeceased {
            citizen_ref: "citizen-1".to_owned(),
        })
        .await
        .expect_err("undeclared event");
    assert_eq!(error.kind(), govbus_bus::PublishErrorKind::InvalidEvent);
    assert!(
        error.to_string().contains("publishes::<CitizenDeceased>"),
        "{error}"
    );

    let other = bus.publisher("welfare").expect("publisher");
    let error = other
        .publish(&registered(1))
        .await
        .expect_err("another service's event");
    assert_eq!(error.kind(), govbus_bus::PublishErrorKind::InvalidEvent);
    identity.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_takes_every_event_of_a_service_with_its_causation() {
    let (_server, bus) = start().await;
    let identity = ServiceAdapter::new("identity")
        .publishes::<CitizenRegistered>()
        .publishes::<common::CitizenDeceased>()
        .start(&bus)
        .await
        .expect("identity starts");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<EventMeta>::new()));
    let recorder = std::sync::Arc::clone(&seen);
    let projection = ServiceAdapter::new("evaluation")
        .consumer(Consumer::new("evaluation-identity").every_event_of(
            "identity",
            move |_payload: bytes::Bytes, meta: EventMeta| {
                let recorder = std::sync::Arc::clone(&recorder);
                async move {
                    recorder.lock().expect("lock").push(meta);
                    Ok::<(), HandleError>(())
                }
            },
        ))
        .start(&bus)
        .await
        .expect("projection starts");
    assert_eq!(projection.contract().consumes[0].event_types, ["*"]);
    assert_eq!(
        projection.contract().consume_subjects(bus.topology()),
        ["govbus.identity.>"]
    );

    identity
        .publisher()
        .publish(&registered(1))
        .await
        .expect("published");
    eventually(
        "the first event arrives",
        Duration::from_secs(10),
        async || seen.lock().expect("lock").len() == 1,
    )
    .await;
    let first = seen.lock().expect("lock")[0].clone();
    identity
        .publisher()
        .publish_with(
            &common::CitizenDeceased {
                citizen_ref: "citizen-1".to_owned(),
            },
            &Causality::following(&first),
        )
        .await
        .expect("published");
    eventually("both events arrive", Duration::from_secs(10), async || {
        seen.lock().expect("lock").len() == 2
    })
    .await;
    let second = seen.lock().expect("lock")[1].clone();
    assert_eq!(second.envelope.event_type, "identity.citizen.deceased.v1");
    assert_eq!(
        second.envelope.causation_id,
        Some(first.envelope.id.clone())
    );
    assert_eq!(
        second.envelope.causation_type.as_deref(),
        Some("identity.citizen.registered.v1")
    );
    assert_eq!(
        second.envelope.correlation_id,
        first.envelope.correlation_id
    );
    projection.shutdown().await;
    identity.shutdown().await;
}
