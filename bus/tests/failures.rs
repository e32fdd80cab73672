//! Handler failures, poison messages, dead letters and replay against a real nats-server.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use common::{CitizenRegistered, counting_consumer, eventually, identity, registered, start};
use govbus_bus::envelope::headers;
use govbus_bus::{Backoff, Bus, Consumer, DeadLetter, EventMeta, HandleError, ServiceAdapter};

const WAIT: Duration = Duration::from_secs(20);

fn fast_backoff() -> Backoff {
    Backoff {
        jitter: 0.0,
        ..Backoff::new(Duration::from_millis(200), Duration::from_millis(800))
    }
}

async fn dead_letters(bus: &Bus, expected: usize) -> Vec<DeadLetter> {
    let letters = bus.dead_letters();
    eventually("dead letters arrive", WAIT, async || {
        letters.count().await.unwrap_or(0) as usize >= expected
    })
    .await;
    letters.list(1, 100).await.expect("dead letters listed")
}

async fn assert_nothing_pending(bus: &Bus, consumer: &str) {
    eventually("the consumer has nothing pending", WAIT, async || {
        let Ok(stream) = bus.jetstream().get_stream("GOVBUS_IDENTITY").await else {
            return false;
        };
        match stream.consumer_info(consumer).await {
            Ok(info) => info.num_ack_pending == 0 && info.num_pending == 0,
            Err(_) => false,
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_is_redelivered_with_backoff_then_succeeds() {
    let (_server, bus) = start().await;
    let identity = identity(&bus).await;
    let attempts = Arc::new(Mutex::new(Vec::<(u64, Instant)>::new()));
    let recorder = Arc::clone(&attempts);
    let welfare = ServiceAdapter::new("welfare")
        .consumer(
            Consumer::new("welfare-identity")
                .backoff(fast_backoff())
                .max_deliveries(5)
                .on(move |_: CitizenRegistered, meta: EventMeta| {
                    let recorder = Arc::clone(&recorder);
                    async move {
                        recorder
                            .lock()
                            .expect("lock")
                            .push((meta.delivery.attempt, Instant::now()));
                        if meta.delivery.attempt < 3 {
                            Err(HandleError::transient(std::io::Error::other(
                                "database busy",
                            )))
                        } else {
                            Ok(())
                        }
                    }
                }),
        )
        .start(&bus)
        .await
        .expect("welfare starts");

    identity
        .publisher()
        .publish(&registered(1))
        .await
        .expect("published");
    eventually("the third delivery succeeds", WAIT, async || {
        attempts.lock().expect("lock").len() >= 3
    })
    .await;
    assert_nothing_pending(&bus, "welfare-identity").await;
    let attempts = attempts.lock().expect("lock").clone();
    assert_eq!(
        attempts.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    // JetStream never redelivers a nak'ed message before its delay: 200 ms, then 400 ms.
    assert!(attempts[1].1 - attempts[0].1 >= Duration::from_millis(200));
    assert!(attempts[2].1 - attempts[1].1 >= Duration::from_millis(400));
    assert_eq!(bus.dead_letters().count().await.expect("count"), 0);

    welfare.shutdown().await;
    identity.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failures_and_exhausted_retries_become_dead_letters() {
    let (_server, bus) = start().await;
    let identity = identity(&bus).await;
    let welfare = ServiceAdapter::new("welfare")
        .consumer(
            Consumer::new("welfare-identity")
                .backoff(fast_backoff())
                .max_deliveries(3)
                .on(|event: CitizenRegistered, _meta: EventMeta| async move {
                    if event.citizen_ref == "citizen-1" {
                        Err(HandleError::permanent(std::io::Error::other(
                            "household already closed",
                        )))
                    } else {
                        Err(HandleError::transient(std::io::Error::other(
                            "identity service down",
                        )))
                    }
                }),
        )
        .start(&bus)
        .await
        .expect("welfare starts");

    let first = identity
        .publisher()
        .publish(&registered(1))
        .await
        .expect("published");
    let second = identity
        .publisher()
        .publish(&registered(2))
        .await
        .expect("published");
    let letters = dead_letters(&bus, 2).await;
    assert_eq!(letters.len(), 2);
    let permanent = letters
        .iter()
        .find(|letter| letter.stream_sequence == first.sequence)
        .expect("permanent failure dead-lettered");
    assert!(
        permanent.reason.contains("failed permanently"),
        "{}",
        permanent.reason
    );
    assert!(permanent.reason.contains("household already closed"));
    assert_eq!(permanent.deliveries, 1);
    assert_eq!(permanent.consumer, "welfare-identity");
    assert_eq!(permanent.service, "welfare");
    assert_eq!(permanent.stream, "GOVBUS_IDENTITY");
    assert_eq!(permanent.subject, "govbus.identity.citizen.registered.v1");
    let envelope = permanent.envelope().expect("original headers kept");
    assert_eq!(envelope.event_type, "identity.citizen.registered.v1");
    let original: CitizenRegistered =
        prost::Message::decode(permanent.payload.clone()).expect("payload kept");
    assert_eq!(original, registered(1));

    let exhausted = letters
        .iter()
        .find(|letter| letter.stream_sequence == second.sequence)
        .expect("exhausted retries dead-lettered");
    assert_eq!(exhausted.deliveries, 3);
    assert!(
        exhausted.reason.contains("all 3 deliveries"),
        "{}",
        exhausted.reason
    );
    assert!(exhausted.reason.contains("identity service down"));

    // The originals are acknowledged: nothing stuck behind them.
    assert_nothing_pending(&bus, "welfare-identity").await;
    welfare.shutdown().await;
    identity.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_and_good_ones_keep_flowing() {
    let (_server, bus) = start().await;
    let identity = identity(&bus).await;
    let handled = Arc::new(AtomicUsize::new(0));
    let welfare = ServiceAdapter::new("welfare")
        .consumer(
            // One worker: a poison message that blocked would block everything after it.
            counting_consumer("welfare-identity", &handled).concurrency(1),
        )
        .start(&bus)
        .await
        .expect("welfare starts");

    let subject = "govbus.identity.citizen.registered.v1";
    let good = identity
        .publisher()
        .encode(&registered(1), &govbus_bus::Causality::root())
        .expect("encodes");
    let js = bus.jetstream();
    // 1. No headers at all.
    js.publish(subject, "not an event".into())
        .await
        .expect("sent")
        .await
        .expect("stored");
    // 2. A valid envelope around bytes that are not the protobuf message.
    let mut bad_payload = good.header_map();
    bad_payload.insert(headers::NATS_MSG_ID, "poison-2");
    js.publish_with_headers(subject, bad_payload, vec![0xff, 0xff, 0xff].into())
        .await
        .expect("sent")
        .await
        .expect("stored");
    // 3. An event type nobody here handles.
    let mut unknown = good.header_map();
    unknown.insert(headers::TYPE, "identity.citizen.teleported.v1");
    unknown.insert(headers::NATS_MSG_ID, "poison-3");
    js.publish_with_headers(subject, unknown, good.payload().clone())
        .await
        .expect("sent")
        .await
        .expect("stored");
    // 4. A CloudEvents version this bus does not speak.
    let mut old_spec = HeaderMap::new();
    for (name, values) in good.header_map().iter() {
        let name: &str = name.as_ref();
        old_spec.insert(name, values[0].as_str());
    }
    old_spec.insert(headers::SPEC_VERSION, "0.3");
    old_spec.insert(headers::NATS_MSG_ID, "poison-4");
    js.publish_with_headers(subject, old_spec, good.payload().clone())
        .await
        .expect("sent")
        .await
        .expect("stored");
    // Then good events.
    for n in 10..20 {
        identity
            .publisher()
            .publish(&registered(n))
            .await
            .expect("published");
    }

    eventually("every good event is handled", WAIT, async || {
        handled.load(Ordering::SeqCst) == 10
    })
    .await;
    let letters = dead_letters(&bus, 4).await;
    let reasons: Vec<&str> = letters
        .iter()
        .map(|letter| letter.reason.as_str())
        .collect();
    assert_eq!(letters.len(), 4, "{reasons:?}");
    assert!(reasons[0].contains("no headers"), "{}", reasons[0]);
    assert!(
        reasons[1].contains("not a valid govbus.identity.v1.CitizenRegistered"),
        "{}",
        reasons[1]
    );
    assert!(
        reasons[2].contains("unknown event type \"identity.citizen.teleported.v1\""),
        "{}",
        reasons[2]
    );
    assert!(reasons[3].contains("specversion"), "{}", reasons[3]);
    assert_nothing_pending(&bus, "welfare-identity").await;

    welfare.shutdown().await;
    identity.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_dead_letter_is_handled_again_by_its_consumer_only() {
    let (_server, bus) = start().await;
    let identity = identity(&bus).await;
    let fixed = Arc::new(AtomicBool::new(false));
    let handled = Arc::new(Mutex::new(Vec::<EventMeta>::new()));
    let (flag, recorder) = (Arc::clone(&fixed), Arc::clone(&handled));
    let others = Arc::new(AtomicUsize::new(0));
    let welfare = ServiceAdapter::new("welfare")
        .consumer(Consumer::new("welfare-identity").on(
            move |_: CitizenRegistered, meta: EventMeta| {
                let (flag, recorder) = (Arc::clone(&flag), Arc::clone(&recorder));
                async move {
                    if !flag.load(Ordering::SeqCst) {
                        return Err(HandleError::permanent(std::io::Error::other(
                            "bug in handler",
                        )));
                    }
                    recorder.lock().expect("lock").push(meta);
                    Ok(())
                }
            },
        ))
        .start(&bus)
        .await
        .expect("welfare starts");
    // A second service consuming the same subject must not see the replay.
    let licensing = ServiceAdapter::new("licensing")
        .consumer(counting_consumer("licensing-identity", &others))
        .start(&bus)
        .await
        .expect("licensing starts");

    identity
        .publisher()
        .publish(&registered(7))
        .await
        .expect("published");
    let letters = dead_letters(&bus, 1).await;
    eventually("licensing handled the original", WAIT, async || {
        others.load(Ordering::SeqCst) == 1
    })
    .await;

    fixed.store(true, Ordering::SeqCst);
    let receipt = bus
        .dead_letters()
        .replay(letters[0].sequence)
        .await
        .expect("replayed");
    assert!(!receipt.duplicate);
    eventually("the replay is handled", WAIT, async || {
        !handled.lock().expect("lock").is_empty()
    })
    .await;
    let meta = handled.lock().expect("lock")[0].clone();
    assert!(meta.delivery.replayed);
    assert_eq!(
        meta.envelope.id,
        letters[0].envelope().expect("envelope").id
    );
    assert_eq!(bus.dead_letters().count().await.expect("count"), 0);
    assert_nothing_pending(&bus, "licensing-identity").await;
    assert_eq!(
        others.load(Ordering::SeqCst),
        1,
        "the replay was meant for welfare only"
    );
    let missing = bus
        .dead_letters()
        .get(letters[0].sequence)
        .await
        .expect_err("removed");
    assert_eq!(missing.kind(), govbus_bus::DeadLetterErrorKind::NotFound);

    licensing.shutdown().await;
    welfare.shutdown().await;
    identity.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_started_while_jetstream_answers_late_waits_for_it_and_starts() {
    let (mut server, _) = start().await;
    // Requests time out quickly here, so the frozen server below lets several of them lapse.
    let bus = Bus::connect(common::options(&server).request_timeout(Duration::from_millis(300)))
        .await
        .expect("bus connects");
    let handled = Arc::new(AtomicUsize::new(0));
    server.pause().expect("server frozen");
    let starting = ServiceAdapter::new("identity")
        .publishes::<CitizenRegistered>()
        .consumer(counting_consumer("late-starter", &handled))
        .start(&bus);
    let thaw = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        server.resume().expect("server thawed");
    };
    let (started, ()) = tokio::join!(starting, thaw);
    let adapter = started.expect("the adapter starts once the server answers");
    adapter
        .publisher()
        .publish(&registered(1))
        .await
        .expect("published");
    eventually("the event is handled", WAIT, async || {
        handled.load(Ordering::SeqCst) == 1
    })
    .await;
    adapter.shutdown().await;
}
