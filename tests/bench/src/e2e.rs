//! End to end: a gRPC command (identity's `RegisterCitizen`: validation, database and outbox in
//! one transaction) → the relay → JetStream → a consumer in another service → its projection,
//! timed per event from sending the command to the projection's commit. First at the peak a
//! closed loop reaches, then at half of that rate, paced, for the latency.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use govbus_bus::{Bus, BusOptions, Consumer, EventMeta, ServiceAdapter};
use govbus_harness::{TestBackend, TestDatabase};
use govbus_proto::identity::v1::CitizenRegistered;
use govbus_proto::identity::v1::identity_service_client::IdentityServiceClient;
use govbus_storage::command::handle_batch_once;
use govbus_storage::inbox::handle_error;
use govbus_storage::{DatabaseOptions, Migration, OutboxRelay, RelaySettings, WriterStats};
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};

use crate::calls::{CallBench, registration};
use crate::measure::{Run, Stopwatch};

/// The goals: 10,000 events/s at peak, p99 ≤ 25 ms at half of it.
pub const GOAL_RATE: f64 = 10_000.0;
/// p99 goal in milliseconds.
pub const GOAL_P99_MS: f64 = 25.0;

/// What to send.
#[derive(Debug, Clone, Copy)]
pub struct EndToEndSettings {
    /// Commands in the peak run.
    pub peak_commands: u64,
    /// Commands in the paced run.
    pub paced_commands: u64,
    /// Commands in flight in the peak run.
    pub in_flight: usize,
    /// Both services' databases in PostgreSQL (schemas of the local `test` database) instead
    /// of SQLite files.
    pub postgres: bool,
}

/// Both runs.
#[derive(Debug, Clone, Serialize)]
pub struct EndToEnd {
    /// As fast as 64 clients go.
    pub peak: Run,
    /// Paced at half the peak.
    pub paced: Run,
    /// In the paced run, the time to the command's answer alone (its commit durable).
    pub paced_answers: Option<crate::Latency>,
    /// Peak resident memory of the benchmark process (every service and the clients), MiB.
    pub peak_rss_mib: Option<f64>,
    /// In the peak run, commands per commit in identity's writer (each command one event).
    pub identity_commands_per_commit: f64,
    /// In the peak run, the consumer's batches per commit in the mirror's writer.
    pub mirror_batches_per_commit: f64,
    /// Events per commit in the mirror's writer in the peak run.
    pub mirror_events_per_commit: f64,
}

/// Commands per commit between two readings of a writer's counters.
fn per_commit(before: WriterStats, after: WriterStats, items: u64) -> f64 {
    let commits = after.commits.saturating_sub(before.commits).max(1);
    items as f64 / commits as f64
}

impl EndToEnd {
    /// Whether both goals are met.
    pub fn meets_goals(&self) -> bool {
        self.peak.rate() >= GOAL_RATE
            && self
                .paced
                .latency
                .is_some_and(|latency| latency.p99_ms <= GOAL_P99_MS)
    }
}

const MIRROR: &[Migration] = &[Migration {
    version: 1,
    description: "registry mirror",
    sqlite: "CREATE TABLE mirror (citizen_ref TEXT PRIMARY KEY, kelurahan_code TEXT NOT NULL,
             birth_year BIGINT NOT NULL)",
    postgres: "CREATE TABLE mirror (citizen_ref TEXT PRIMARY KEY, kelurahan_code TEXT NOT NULL,
               birth_year BIGINT NOT NULL)",
}];

/// What an event costs at the least on this machine: the processor time per operation of each
/// raw part an event of the end-to-end path goes through (a bare mTLS unary call, a raw
/// JetStream publish of the same message, a raw pull and ack, rusqlite committing the command's
/// rows), each measured alone in the same run, summed. The projection's own commit is left out,
/// so the floor is a little lower than the true one. Its rate is what the machine's processors
/// could do if govbus added nothing: an upper bound for any bus built of these parts.
#[derive(Debug, Clone, Serialize)]
pub struct Floor {
    /// Each part, with its processor time per operation in microseconds.
    pub parts: Vec<(String, f64)>,
    /// Their sum.
    pub cpu_micros_per_event: f64,
    /// Events per second the machine's processors could carry at that cost.
    pub rate: f64,
}

impl Floor {
    /// From `parts` (name, the run that measured it), on `processors`; none if a part's
    /// processor time was not measured.
    pub fn from_parts(parts: &[(&str, &Run)], processors: usize) -> Option<Self> {
        let parts = parts
            .iter()
            .map(|(name, run)| Some(((*name).to_owned(), run.cpu_micros_per_operation()?)))
            .collect::<Option<Vec<_>>>()?;
        let cpu_micros_per_event: f64 = parts.iter().map(|(_, micros)| micros).sum();
        (cpu_micros_per_event > 0.0).then(|| Self {
            rate: processors as f64 * 1e6 / cpu_micros_per_event,
            parts,
            cpu_micros_per_event,
        })
    }
}

/// When each command was sent, by request id (the events' correlation id), and the latencies of
/// those whose event reached the projection.
#[derive(Debug, Default)]
struct Clock {
    sent: Mutex<HashMap<String, Instant>>,
    latencies: Mutex<Vec<u64>>,
    /// Per command, until its answer.
    answers: Mutex<Vec<u64>>,
    applied: std::sync::atomic::AtomicU64,
    target: std::sync::atomic::AtomicU64,
    done: Notify,
}

/// Runs identity and a mirror service on `nats_url`, databases in `dir`.
pub async fn run(
    nats_url: &str,
    dir: &Path,
    calls: &CallBench,
    settings: EndToEndSettings,
) -> anyhow::Result<EndToEnd> {
    // Kept until the run ends: dropping a PostgreSQL test database removes its schema.
    let (_identity_db, identity_url) =
        database(settings.postgres, &dir.join("e2e-identity.db")).await?;
    let (_mirror_db, mirror_url) = database(settings.postgres, &dir.join("e2e-mirror.db")).await?;
    let identity = calls
        .identity(nats_url, &identity_url, "RegisterCitizen")
        .await?;
    let clock = Arc::new(Clock::default());
    let bus = Bus::connect(BusOptions::new(nats_url).client_name("mirror")).await?;
    let db =
        govbus_storage::open(&mirror_url, "mirror", MIRROR, DatabaseOptions::default()).await?;
    let mirror_db = db.clone();
    let mirror = ServiceAdapter::new("mirror");
    let relay = OutboxRelay::new(
        db.clone(),
        mirror.publisher(&bus)?,
        RelaySettings::default(),
    )
    .spawn();
    let projection_clock = Arc::clone(&clock);
    let consumer = mirror
        .consumer(Consumer::new("mirror-identity").concurrency(2).on_batch(
            256,
            move |batch: Vec<(CitizenRegistered, EventMeta)>| {
                let (db, clock) = (db.clone(), Arc::clone(&projection_clock));
                async move {
                    let metas: Vec<&EventMeta> = batch.iter().map(|(_, meta)| meta).collect();
                    let events: Vec<CitizenRegistered> =
                        batch.iter().map(|(event, _)| event.clone()).collect();
                    handle_batch_once(&db, &metas, async move |tx, fresh| {
                        for (event, fresh) in events.iter().zip(fresh) {
                            if *fresh {
                                tx.execute(
                                    "INSERT INTO mirror (citizen_ref, kelurahan_code, birth_year)
                                     VALUES ($1, $2, $3)",
                                    &[
                                        event.citizen_ref.as_str().into(),
                                        event.kelurahan_code.as_str().into(),
                                        event.birth_year.into(),
                                    ],
                                )
                                .await
                                .map_err(handle_error)?;
                            }
                        }
                        Ok(())
                    })
                    .await?;
                    clock.applied_now(batch.iter().map(|(_, meta)| meta));
                    Ok(())
                }
            },
        ))
        .start(&bus)
        .await?;
    let channel =
        crate::calls::channel(identity.address(), "identity", &calls.tls("bench")?).await?;

    let (identity_before, mirror_before) = (identity.writer_stats(), mirror_db.stats());
    let peak = drive(
        &channel,
        &clock,
        0,
        settings.peak_commands,
        Pace::ClosedLoop(settings.in_flight),
    )
    .await?;
    let (identity_after, mirror_after) = (identity.writer_stats(), mirror_db.stats());
    let rate = (peak.rate() / 2.0).max(1.0);
    let paced = drive(
        &channel,
        &clock,
        settings.peak_commands,
        settings.paced_commands,
        Pace::PerSecond(rate),
    )
    .await?;
    let paced_answers = crate::Latency::from_micros(std::mem::take(
        &mut *clock
            .answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    ));
    consumer.shutdown().await;
    relay.shutdown().await;
    identity.stop().await;
    Ok(EndToEnd {
        peak: Run {
            label: format!("{} in flight", settings.in_flight),
            ..peak
        },
        paced: Run {
            label: format!("paced at {rate:.0}/s"),
            ..paced
        },
        paced_answers,
        peak_rss_mib: peak_rss_mib(),
        identity_commands_per_commit: per_commit(
            identity_before,
            identity_after,
            identity_after.committed_jobs - identity_before.committed_jobs,
        ),
        mirror_batches_per_commit: per_commit(
            mirror_before,
            mirror_after,
            mirror_after.committed_jobs - mirror_before.committed_jobs,
        ),
        mirror_events_per_commit: per_commit(mirror_before, mirror_after, settings.peak_commands),
    })
}

impl Clock {
    fn applied_now<'a>(&self, metas: impl Iterator<Item = &'a EventMeta>) {
        let now = Instant::now();
        let mut sent = self
            .sent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut latencies = self
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut count = 0;
        for meta in metas {
            if let Some(at) = sent.remove(&meta.envelope.correlation_id) {
                latencies.push(now.duration_since(at).as_micros() as u64);
                count += 1;
            }
        }
        let applied = self
            .applied
            .fetch_add(count, std::sync::atomic::Ordering::SeqCst)
            + count;
        if applied >= self.target.load(std::sync::atomic::Ordering::SeqCst) {
            self.done.notify_one();
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Pace {
    ClosedLoop(usize),
    PerSecond(f64),
}

/// Sends commands `first..first + count` and waits until the projection applied every one.
async fn drive(
    channel: &tonic::transport::Channel,
    clock: &Arc<Clock>,
    first: u64,
    count: u64,
    pace: Pace,
) -> anyhow::Result<Run> {
    clock.applied.store(0, std::sync::atomic::Ordering::SeqCst);
    clock
        .target
        .store(count, std::sync::atomic::Ordering::SeqCst);
    clock
        .latencies
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
    clock
        .answers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clear();
    let limit = Arc::new(Semaphore::new(match pace {
        Pace::ClosedLoop(in_flight) => in_flight,
        Pace::PerSecond(_) => 1024,
    }));
    let stopwatch = Stopwatch::start();
    let mut tasks = tokio::task::JoinSet::new();
    for index in first..first + count {
        if let Pace::PerSecond(rate) = pace {
            let due = Duration::from_secs_f64((index - first) as f64 / rate);
            tokio::time::sleep(due.saturating_sub(stopwatch.elapsed())).await;
        }
        let permit = Arc::clone(&limit).acquire_owned().await?;
        let (mut client, clock) = (
            IdentityServiceClient::new(channel.clone()),
            Arc::clone(clock),
        );
        tasks.spawn(async move {
            let _permit = permit;
            let request_id = format!("e2e-{index}");
            let mut request = tonic::Request::new(registration(index)?);
            request
                .metadata_mut()
                .insert("x-request-id", request_id.parse()?);
            clock
                .sent
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(request_id, Instant::now());
            let asked = Instant::now();
            client.register_citizen(request).await?;
            clock
                .answers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(asked.elapsed().as_micros() as u64);
            anyhow::Ok(())
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while clock.applied.load(std::sync::atomic::Ordering::SeqCst) < count {
        // A wake-up left from the previous run only makes this loop look again.
        tokio::time::timeout_at(deadline, clock.done.notified())
            .await
            .map_err(|_| anyhow::anyhow!("the projection did not apply every event"))?;
    }
    let run = stopwatch.run("", count);
    let latencies = std::mem::take(
        &mut *clock
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    Ok(run.with_latencies(latencies))
}

/// A database for one service: a SQLite file at `file`, or a fresh PostgreSQL schema.
async fn database(postgres: bool, file: &Path) -> anyhow::Result<(Option<TestDatabase>, String)> {
    if postgres {
        let database = TestDatabase::new(TestBackend::Postgres).await?;
        let url = database.url().to_owned();
        Ok((Some(database), url))
    } else {
        Ok((None, format!("sqlite://{}", file.display())))
    }
}

/// `VmHWM` of this process, in MiB.
fn peak_rss_mib() -> Option<f64> {
    govbus_harness::service::peak_rss_kib("self").map(|kib| kib as f64 / 1024.0)
}
