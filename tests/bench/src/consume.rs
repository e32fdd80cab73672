//! Consuming: a govbus consumer (decode, trace context, idempotent inbox write in its database,
//! ack) against a raw async-nats pull consumer that only acks, over the same stored events.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt as _;
use govbus_bus::{Bus, BusOptions, Causality, Consumer, EventMeta, ServiceAdapter};
use govbus_storage::command::handle_batch_once;
use govbus_storage::{DatabaseOptions, OutboxRelay, RelaySettings};
use tokio::sync::Notify;

use crate::measure::{Comparison, Run, Stopwatch};
use crate::sample::{SERVICE, SampleRecorded, sample};

/// What to consume.
#[derive(Debug, Clone, Copy)]
pub struct ConsumeSettings {
    /// Events stored before either consumer starts.
    pub events: u64,
    /// Payload bytes.
    pub payload: usize,
}

/// The goal: govbus handles 60 % of what a bare acking consumer does.
pub const GOAL: f64 = 0.6;

/// Events one handler call takes at most.
const BATCH: usize = 256;

/// Workers of the govbus consumer: batches form within a worker, and SQLite takes one writer at
/// a time anyway.
const CONCURRENCY: usize = 2;

/// Unacknowledged messages either consumer may hold (govbus's default).
const MAX_ACK_PENDING: i64 = 4096;

/// Stores the events, then runs both consumers over them; the govbus consumer's inbox lives in a
/// SQLite file in `dir`.
pub async fn compare(
    nats_url: &str,
    dir: &Path,
    settings: ConsumeSettings,
) -> anyhow::Result<Comparison> {
    let bus = Bus::connect(BusOptions::new(nats_url).client_name("bench-consume")).await?;
    fill(&bus, settings).await?;
    let baseline = raw(
        nats_url,
        &bus.topology().service_stream(SERVICE),
        settings.events,
    )
    .await?;
    let govbus = govbus_consumer(&bus, dir, settings.events).await?;
    Ok(Comparison::new(
        "consume (events/s)",
        govbus,
        baseline,
        GOAL,
    ))
}

/// Publishes `settings.events` samples on the bench service's stream.
pub async fn fill(bus: &Bus, settings: ConsumeSettings) -> anyhow::Result<()> {
    let adapter = ServiceAdapter::new(SERVICE)
        .publishes::<SampleRecorded>()
        .start(bus)
        .await?;
    let event = sample(settings.payload);
    let mut sent = 0;
    while sent < settings.events {
        let batch: Vec<_> = (0..1000.min(settings.events - sent))
            .map(|_| adapter.publisher().encode(&event, &Causality::root()))
            .collect::<Result<_, _>>()?;
        for result in adapter.publisher().send_batch(&batch).await {
            result?;
        }
        sent += batch.len() as u64;
    }
    adapter.shutdown().await;
    Ok(())
}

/// A durable pull consumer that acks each message and does nothing else.
pub async fn raw(nats_url: &str, stream_name: &str, events: u64) -> anyhow::Result<Run> {
    let js = jetstream::new(async_nats::connect(nats_url).await?);
    let consumer = js
        .get_stream(stream_name)
        .await?
        .create_consumer(pull::Config {
            durable_name: Some("raw-ack".to_owned()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: MAX_ACK_PENDING,
            ..Default::default()
        })
        .await?;
    let stopwatch = Stopwatch::start();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(256)
        .messages()
        .await?;
    let mut acked = 0;
    while acked < events {
        let message = messages
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("the raw consumer's stream ended"))?
            .map_err(|error| anyhow::anyhow!("raw consumer: {error}"))?;
        message
            .ack()
            .await
            .map_err(|error| anyhow::anyhow!("ack: {error}"))?;
        acked += 1;
    }
    Ok(stopwatch.run("async-nats pull, ack only", acked))
}

/// A govbus service consuming the samples in batches with the kit's `handle_batch_once`: one
/// transaction per batch, the batch's event ids recorded in the inbox by one statement.
pub async fn govbus_consumer(bus: &Bus, dir: &Path, events: u64) -> anyhow::Result<Run> {
    let url = format!("sqlite://{}", dir.join("consume.db").display());
    let db = govbus_storage::open(&url, "bench-consume", &[], DatabaseOptions::default()).await?;
    let sink = ServiceAdapter::new("sink");
    let relay =
        OutboxRelay::new(db.clone(), sink.publisher(bus)?, RelaySettings::default()).spawn();
    let handled = Arc::new(AtomicU64::new(0));
    let done = Arc::new(Notify::new());
    let (counter, finished) = (handled.clone(), done.clone());
    let stopwatch = Stopwatch::start();
    let consumer = sink
        .consumer(
            Consumer::new("sink-bench")
                .concurrency(CONCURRENCY)
                .on_batch(BATCH, move |batch: Vec<(SampleRecorded, EventMeta)>| {
                    let (db, counter, finished) = (db.clone(), counter.clone(), finished.clone());
                    async move {
                        let metas: Vec<&EventMeta> = batch.iter().map(|(_, meta)| meta).collect();
                        handle_batch_once(&db, &metas, async |_tx, _fresh| Ok(())).await?;
                        let total = counter.fetch_add(batch.len() as u64, Ordering::Relaxed);
                        if total + batch.len() as u64 >= events {
                            finished.notify_one();
                        }
                        Ok(())
                    }
                }),
        )
        .start(bus)
        .await?;
    if handled.load(Ordering::Relaxed) < events {
        done.notified().await;
    }
    let run = stopwatch.run(
        "govbus consumer, batches, inbox in SQLite",
        handled.load(Ordering::Relaxed),
    );
    consumer.shutdown().await;
    relay.shutdown().await;
    Ok(run)
}
