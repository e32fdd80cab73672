//! Publishing: events through the transactional outbox and its relay into JetStream, against
//! raw async-nats JetStream publishes of govbus's exact messages (the CloudEvents headers, the
//! trace context and `Nats-Msg-Id` de-duplication) with acknowledgements pipelined.
//!
//! The govbus figure is the live path: commands commit events while the relay runs, and the
//! relay publishes them from memory as they commit; timed from the first commit to the last
//! acknowledgement. Three reference runs beside it: the recovery path (a backlog committed while
//! no relay ran, read from the table), raw publishing of the bare payload, to separate what
//! the envelope costs (mostly in the server) from what the outbox costs, and the live path's
//! commits alone (no relay), for what the outbox rows cost of the machine's processors.

use std::collections::VecDeque;
use std::path::Path;

use anyhow::Context as _;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use govbus_bus::{Bus, BusOptions, Causality, OutgoingEvent, ServiceAdapter};
use govbus_storage::outbox;
use govbus_storage::{DatabaseOptions, DbError, OutboxRelay, RelaySettings};

use crate::measure::{Comparison, Run, Stopwatch};
use crate::sample::{SERVICE, SampleRecorded, raw_payload, sample};

/// What to publish.
#[derive(Debug, Clone, Copy)]
pub struct PublishSettings {
    /// Events per path.
    pub events: u64,
    /// Payload bytes.
    pub payload: usize,
    /// Acknowledgements the raw path keeps in flight.
    pub in_flight: usize,
}

/// The goal: the live path reaches 80 % of raw pipelined publishing of the same messages.
pub const GOAL: f64 = 0.8;

/// Events one command commits in the live path, and commands committing at once.
const EVENTS_PER_COMMAND: usize = 100;
const COMMITTERS: usize = 4;

/// Both paths against the server at `nats_url`; the outboxes live in SQLite files in `dir`.
pub async fn compare(
    nats_url: &str,
    dir: &Path,
    settings: PublishSettings,
) -> anyhow::Result<Comparison> {
    let bare = raw(nats_url, settings).await?;
    let baseline = raw_with_envelope(nats_url, settings).await?;
    let govbus = live(nats_url, dir, settings).await?;
    let recovery = through_outbox(nats_url, dir, settings).await?;
    let commits = commits_alone(nats_url, dir, settings).await?;
    Ok(
        Comparison::new("publish (events/s)", govbus, baseline, GOAL)
            .with_step(recovery)
            .with_step(bare)
            .with_step(commits),
    )
}

/// govbus, live: `COMMITTERS` tasks commit commands of `EVENTS_PER_COMMAND` events each while
/// the relay runs; timed from the first commit to the last acknowledgement. The events are
/// encoded before the clock starts (encoding belongs to the command, not to publishing).
pub async fn live(nats_url: &str, dir: &Path, settings: PublishSettings) -> anyhow::Result<Run> {
    let bus = Bus::connect(BusOptions::new(nats_url).client_name("bench-live")).await?;
    let adapter = ServiceAdapter::new(SERVICE)
        .publishes::<SampleRecorded>()
        .start(&bus)
        .await?;
    let publisher = adapter.publisher().clone();
    let stream_name = bus.topology().service_stream(SERVICE);
    let already = stored(bus.jetstream(), &stream_name).await?;
    let db = outbox_database(dir, "publish-live").await?;
    let relay = OutboxRelay::new(db.clone(), publisher.clone(), RelaySettings::default()).spawn();
    while !relay.holds_lease() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let commands = encoded_commands(&publisher, settings)?;
    let stopwatch = Stopwatch::start();
    commit_all(&db, commands).await?;
    let js = bus.jetstream();
    while stored(js, &stream_name).await? < already + settings.events {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let run = stopwatch.run("outbox relay, live", settings.events);
    relay.shutdown().await;
    anyhow::ensure!(
        outbox::pending_count(&db).await? == 0,
        "events left in the outbox"
    );
    expect_stored(js, &stream_name, already + settings.events).await?;
    adapter.shutdown().await;
    db.close().await;
    Ok(run)
}

/// The live path's commits alone, no relay running: what the outbox rows cost.
pub async fn commits_alone(
    nats_url: &str,
    dir: &Path,
    settings: PublishSettings,
) -> anyhow::Result<Run> {
    let bus = Bus::connect(BusOptions::new(nats_url).client_name("bench-commits")).await?;
    let publisher = ServiceAdapter::new(SERVICE)
        .publishes::<SampleRecorded>()
        .publisher(&bus)?;
    let db = outbox_database(dir, "publish-commits").await?;
    let commands = encoded_commands(&publisher, settings)?;
    let stopwatch = Stopwatch::start();
    commit_all(&db, commands).await?;
    let run = stopwatch.run("the same commits alone, no relay", settings.events);
    anyhow::ensure!(
        outbox::pending_count(&db).await? == i64::try_from(settings.events)?,
        "events missing from the outbox"
    );
    db.close().await;
    Ok(run)
}

/// `settings.events` samples, encoded, in commands of [`EVENTS_PER_COMMAND`] (encoding belongs
/// to the command, not to publishing: it is done before any clock starts).
fn encoded_commands(
    publisher: &govbus_bus::Publisher,
    settings: PublishSettings,
) -> anyhow::Result<Vec<Vec<OutgoingEvent>>> {
    let event = sample(settings.payload);
    let mut commands = Vec::new();
    let mut encoded = 0;
    while encoded < settings.events {
        let count = (EVENTS_PER_COMMAND as u64).min(settings.events - encoded);
        commands.push(
            (0..count)
                .map(|_| publisher.encode(&event, &Causality::root()))
                .collect::<Result<Vec<_>, _>>()?,
        );
        encoded += count;
    }
    Ok(commands)
}

/// Commits `commands` from [`COMMITTERS`] tasks at once, each command's events in the outbox.
async fn commit_all(
    db: &govbus_storage::Database,
    commands: Vec<Vec<OutgoingEvent>>,
) -> anyhow::Result<()> {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(commands));
    let mut committers = tokio::task::JoinSet::new();
    for _ in 0..COMMITTERS {
        let (db, queue) = (db.clone(), std::sync::Arc::clone(&queue));
        committers.spawn(async move {
            loop {
                let Some(events) = queue.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.pop()
                else {
                    return anyhow::Ok(());
                };
                db.write(async move |tx| {
                    for event in &events {
                        tx.enqueue(event.clone());
                    }
                    Ok::<(), DbError>(())
                })
                .await?;
            }
        });
    }
    while let Some(done) = committers.join_next().await {
        done??;
    }
    Ok(())
}

/// Raw async-nats: publish, keep `in_flight` acknowledgements outstanding, await the oldest.
pub async fn raw(nats_url: &str, settings: PublishSettings) -> anyhow::Result<Run> {
    let payload = raw_payload(settings.payload);
    pipelined(nats_url, "RAW_PUBLISH", "raw.publish", settings, || {
        PublishMessage::build().payload(payload.clone())
    })
    .await
    .map(|run| Run {
        label: "async-nats, pipelined".to_owned(),
        ..run
    })
}

/// Raw async-nats as in [`raw`], each message carrying the headers govbus gives the same event:
/// one encoded event's headers, with a fresh event id (`ce-id`, `Nats-Msg-Id`) per message.
pub async fn raw_with_envelope(nats_url: &str, settings: PublishSettings) -> anyhow::Result<Run> {
    let bus = Bus::connect(BusOptions::new(nats_url).client_name("bench-envelope")).await?;
    let publisher = ServiceAdapter::new(SERVICE)
        .publishes::<SampleRecorded>()
        .start(&bus)
        .await?
        .publisher()
        .clone();
    let template = publisher.encode(&sample(settings.payload), &Causality::root())?;
    let run = pipelined(nats_url, "RAW_ENVELOPE", "raw.envelope", settings, || {
        let id = uuid::Uuid::now_v7().to_string();
        let mut headers = template.header_map();
        headers.insert("ce-id", id.as_str());
        headers.insert("Nats-Msg-Id", id.as_str());
        PublishMessage::build()
            .headers(headers)
            .payload(template.payload().clone())
    })
    .await?;
    Ok(Run {
        label: "async-nats, pipelined, with govbus's envelope".to_owned(),
        ..run
    })
}

/// Creates `stream_name` over `subject` and publishes `settings.events` messages made by
/// `message`, keeping `settings.in_flight` acknowledgements outstanding; returns the run from
/// the first publish to the last acknowledgement, after checking every message was stored.
async fn pipelined(
    nats_url: &str,
    stream_name: &str,
    subject: &'static str,
    settings: PublishSettings,
    mut message: impl FnMut() -> PublishMessage,
) -> anyhow::Result<Run> {
    let js = jetstream::new(async_nats::connect(nats_url).await?);
    js.create_stream(stream::Config {
        name: stream_name.to_owned(),
        subjects: vec![subject.to_owned()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let mut window = VecDeque::with_capacity(settings.in_flight);
    let stopwatch = Stopwatch::start();
    for _ in 0..settings.events {
        let next = message();
        if window.len() >= settings.in_flight
            && let Some(ack) = window.pop_front()
        {
            let _: jetstream::publish::PublishAck = ack.await?;
        }
        window.push_back(js.send_publish(subject, next).await?);
    }
    for ack in window {
        ack.await?;
    }
    let run = stopwatch.run("", settings.events);
    expect_stored(&js, stream_name, settings.events).await?;
    Ok(run)
}

/// govbus, recovery: the events are committed to the outbox first while no relay runs (not
/// timed), then the relay publishes them from the table (timed).
pub async fn through_outbox(
    nats_url: &str,
    dir: &Path,
    settings: PublishSettings,
) -> anyhow::Result<Run> {
    let bus = Bus::connect(BusOptions::new(nats_url).client_name("bench-publish")).await?;
    let adapter = ServiceAdapter::new(SERVICE)
        .publishes::<SampleRecorded>()
        .start(&bus)
        .await?;
    let publisher = adapter.publisher().clone();
    let stream_name = bus.topology().service_stream(SERVICE);
    let already = stored(bus.jetstream(), &stream_name).await?;
    let db = outbox_database(dir, "publish").await?;
    let event = sample(settings.payload);
    let mut written = 0;
    while written < settings.events {
        let events = (0..1000.min(settings.events - written))
            .map(|_| publisher.encode(&event, &Causality::root()))
            .collect::<Result<Vec<_>, _>>()?;
        written += events.len() as u64;
        db.write(async move |tx| {
            for outgoing in &events {
                tx.enqueue(outgoing.clone());
            }
            Ok::<(), DbError>(())
        })
        .await
        .context("committing the outbox")?;
    }
    let relay = OutboxRelay::new(db.clone(), publisher, RelaySettings::default());
    let stopwatch = Stopwatch::start();
    let mut sent = 0;
    while sent < settings.events as usize {
        let round = relay.relay_pending().await?;
        anyhow::ensure!(round > 0, "the relay stalled after {sent} events");
        sent += round;
    }
    let run = stopwatch.run("outbox relay, backlog read from the table", settings.events);
    anyhow::ensure!(
        outbox::pending_count(&db).await? == 0,
        "rows left in the outbox"
    );
    expect_stored(bus.jetstream(), &stream_name, already + settings.events).await?;
    adapter.shutdown().await;
    db.close().await;
    Ok(run)
}

/// Checks the stream holds every event published.
async fn expect_stored(js: &jetstream::Context, stream: &str, events: u64) -> anyhow::Result<()> {
    let stored = stored(js, stream).await?;
    anyhow::ensure!(stored == events, "{stream}: {stored} of {events} stored");
    Ok(())
}

/// Messages `stream` holds.
async fn stored(js: &jetstream::Context, stream: &str) -> anyhow::Result<u64> {
    Ok(js.get_stream(stream).await?.info().await?.state.messages)
}

/// An outbox (no tables of its own) in the SQLite file `<name>.db` in `dir`.
async fn outbox_database(dir: &Path, name: &str) -> anyhow::Result<govbus_storage::Database> {
    let url = format!("sqlite://{}", dir.join(format!("{name}.db")).display());
    Ok(govbus_storage::open(
        &url,
        &format!("bench-{name}"),
        &[],
        DatabaseOptions::default(),
    )
    .await?)
}
