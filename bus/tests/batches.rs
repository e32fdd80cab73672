//! Consumers that take events in batches (`Consumer::on_batch`), against a real nats-server.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{CitizenRegistered, eventually, identity, registered, start};
use govbus_bus::{Backoff, Bus, Consumer, EventMeta, HandleError, RunningAdapter, ServiceAdapter};

const WAIT: Duration = Duration::from_secs(20);

type Batches = Arc<Mutex<Vec<Vec<String>>>>;

async fn publish(bus: &Bus, range: std::ops::Range<usize>) {
    let identity = identity(bus).await;
    for n in range {
        identity
            .publisher()
            .publish(&registered(n))
            .await
            .expect("published");
    }
    identity.shutdown().await;
}

/// A batch consumer that records each batch; `fail` decides per batch what to return.
async fn batch_consumer(
    bus: &Bus,
    batches: &Batches,
    fail: impl Fn(&[String]) -> Option<HandleError> + Send + Sync + 'static,
) -> RunningAdapter {
    let batches = Arc::clone(batches);
    let fail = Arc::new(fail);
    ServiceAdapter::new("welfare")
        .consumer(
            Consumer::new("welfare-identity")
                .concurrency(1)
                .backoff(Backoff {
                    jitter: 0.0,
                    ..Backoff::new(Duration::from_millis(100), Duration::from_millis(400))
                })
                .on_batch(64, move |batch: Vec<(CitizenRegistered, EventMeta)>| {
                    let refs: Vec<String> = batch
                        .iter()
                        .map(|(event, _)| event.citizen_ref.clone())
                        .collect();
                    let failure = fail(&refs);
                    if failure.is_none() {
                        batches.lock().expect("lock").push(refs);
                    }
                    async move { failure.map_or(Ok(()), Err) }
                }),
        )
        .start(bus)
        .await
        .expect("consumer starts")
}

fn handled(batches: &Batches) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for batch in batches.lock().expect("lock").iter() {
        for reference in batch {
            *counts.entry(reference.clone()).or_default() += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_events_arrive_in_batches_in_order_each_once() {
    let (_server, bus) = start().await;
    publish(&bus, 0..300).await;
    let batches = Batches::default();
    let consumer = batch_consumer(&bus, &batches, |_| None).await;
    eventually("every event handled", WAIT, async || {
        handled(&batches).len() == 300
    })
    .await;
    consumer.shutdown().await;

    let batches = batches.lock().expect("lock").clone();
    assert!(batches.iter().all(|batch| batch.len() <= 64));
    assert!(
        batches.iter().any(|batch| batch.len() > 1),
        "events already stored are taken together: {:?}",
        batches.iter().map(Vec::len).collect::<Vec<_>>()
    );
    let order: Vec<String> = batches.into_iter().flatten().collect();
    let expected: Vec<String> = (0..300).map(|n| registered(n).citizen_ref).collect();
    assert_eq!(order, expected, "one worker keeps the stream's order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_dead_letters_only_the_event_at_fault() {
    let (_server, bus) = start().await;
    publish(&bus, 0..100).await;
    let poison = registered(42).citizen_ref;
    let batches = Batches::default();
    let consumer = batch_consumer(&bus, &batches, move |refs| {
        refs.contains(&poison)
            .then(|| HandleError::permanent(std::io::Error::other("cannot apply citizen-42")))
    })
    .await;
    eventually("the other 99 handled", WAIT, async || {
        handled(&batches).len() == 99
    })
    .await;
    eventually("one dead letter", WAIT, async || {
        bus.dead_letters().count().await.unwrap_or(0) == 1
    })
    .await;
    consumer.shutdown().await;

    let letters = bus.dead_letters().list(1, 10).await.expect("listed");
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0].reason.contains("cannot apply citizen-42"),
        "{}",
        letters[0].reason
    );
    let counts = handled(&batches);
    assert!(!counts.contains_key(&registered(42).citizen_ref));
    assert!(
        counts.values().all(|count| *count == 1),
        "none handled twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_failure_redelivers_the_batch() {
    let (_server, bus) = start().await;
    publish(&bus, 0..50).await;
    let failed_once = Arc::new(AtomicBool::new(false));
    let batches = Batches::default();
    let flag = Arc::clone(&failed_once);
    let consumer = batch_consumer(&bus, &batches, move |_| {
        (!flag.swap(true, Ordering::SeqCst))
            .then(|| HandleError::transient(std::io::Error::other("database busy")))
    })
    .await;
    eventually("every event handled", WAIT, async || {
        handled(&batches).len() == 50
    })
    .await;
    consumer.shutdown().await;
    assert!(failed_once.load(Ordering::SeqCst));
    assert!(handled(&batches).values().all(|count| *count == 1));
    assert_eq!(bus.dead_letters().count().await.expect("count"), 0);
}
