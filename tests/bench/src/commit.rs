//! Committing: commands through the database's writer alone (no gRPC, no relay), to show what a
//! durable commit costs and what group commit recovers: one command in flight (each waits for
//! its own sync) and many (they share one), with SQLite syncing every commit (`FULL`, the
//! default) or not (`NORMAL`, for comparison only). Beside them, the floor: rusqlite alone on
//! one thread, committing the same rows in groups of the size the writer reached.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use govbus_bus::{Bus, BusOptions, Causality, OutgoingEvent, ServiceAdapter};
use govbus_harness::{TestBackend, TestDatabase};
use govbus_storage::{DatabaseOptions, DbError, Migration, Synchronous};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::measure::{Run, Stopwatch};
use crate::sample::{SERVICE, SampleRecorded, sample};

/// What to commit.
#[derive(Debug, Clone, Copy)]
pub struct CommitSettings {
    /// Commands per run.
    pub commands: u64,
    /// Run on PostgreSQL (a fresh schema) instead of SQLite files.
    pub postgres: bool,
}

/// One run: the commands, how many commits they took, latency per command.
#[derive(Debug, Clone, Serialize)]
pub struct CommitRun {
    /// The run (rate and latency).
    pub run: Run,
    /// Commands in flight.
    pub in_flight: usize,
    /// SQLite's `synchronous` (`FULL`/`NORMAL`), or `postgres`.
    pub durability: String,
    /// Commands per commit, on average.
    pub per_commit: f64,
    /// SQLite only: rusqlite alone, the same rows committed in groups of `per_commit` commands
    /// with the same durability, on one thread with nothing else to do.
    pub raw: Option<Run>,
}

/// [`CommitRun::durability`] of the runs on SQLite with `synchronous = FULL` (the default).
pub const SQLITE_FULL: &str = "SQLite FULL";

const ITEMS: &[Migration] = &[Migration {
    version: 1,
    description: "items",
    sqlite: "CREATE TABLE items (id BIGINT PRIMARY KEY, value BIGINT NOT NULL)",
    postgres: "CREATE TABLE items (id BIGINT PRIMARY KEY, value BIGINT NOT NULL)",
}];

/// Each command inserts a row and enqueues one event (stored in the outbox; no relay runs).
pub async fn run(
    nats_url: &str,
    dir: &Path,
    settings: CommitSettings,
) -> anyhow::Result<Vec<CommitRun>> {
    let bus = Bus::connect(BusOptions::new(nats_url).client_name("bench-commit")).await?;
    let publisher = ServiceAdapter::new(SERVICE)
        .publishes::<SampleRecorded>()
        .publisher(&bus)?;
    let payload = sample(256);
    let durabilities: &[Option<Synchronous>] = if settings.postgres {
        &[None]
    } else {
        &[Some(Synchronous::Full), Some(Synchronous::Normal)]
    };
    let mut runs = Vec::new();
    for (round, durability) in durabilities.iter().enumerate() {
        for in_flight in [1, 64] {
            let _postgres;
            let url = if settings.postgres {
                let database = TestDatabase::new(TestBackend::Postgres).await?;
                let url = database.url().to_owned();
                _postgres = database;
                url
            } else {
                format!(
                    "sqlite://{}",
                    dir.join(format!("commit-{round}-{in_flight}.db")).display()
                )
            };
            let db = govbus_storage::open(
                &url,
                "bench-commit",
                ITEMS,
                DatabaseOptions {
                    synchronous: durability.unwrap_or(Synchronous::Full),
                    ..DatabaseOptions::default()
                },
            )
            .await?;
            let commands = if in_flight == 1 {
                settings.commands / 10
            } else {
                settings.commands
            };
            let before = db.stats();
            let limit = Arc::new(Semaphore::new(in_flight));
            let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(
                usize::try_from(commands).unwrap_or(0),
            )));
            let stopwatch = Stopwatch::start();
            let mut tasks = tokio::task::JoinSet::new();
            for id in 0..commands {
                let permit = Arc::clone(&limit).acquire_owned().await?;
                let (db, publisher, payload, latencies) = (
                    db.clone(),
                    publisher.clone(),
                    payload.clone(),
                    Arc::clone(&latencies),
                );
                tasks.spawn(async move {
                    let _permit = permit;
                    let sent = Instant::now();
                    let id = i64::try_from(id)?;
                    let event = publisher.encode(&payload, &Causality::root())?;
                    db.write(async move |tx| {
                        tx.execute(
                            "INSERT INTO items (id, value) VALUES ($1, $2)",
                            &[id.into(), 1_i64.into()],
                        )
                        .await?;
                        tx.enqueue(event.clone());
                        Ok::<(), DbError>(())
                    })
                    .await?;
                    latencies
                        .lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .push(sent.elapsed().as_micros() as u64);
                    anyhow::Ok(())
                });
                while let Some(done) = tasks.try_join_next() {
                    done??;
                }
            }
            while let Some(done) = tasks.join_next().await {
                done??;
            }
            let run = stopwatch.run(format!("{in_flight} in flight"), commands);
            let after = db.stats();
            db.close().await;
            let latencies =
                std::mem::take(&mut *latencies.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
            let commits = after.commits.saturating_sub(before.commits).max(1);
            let per_commit = commands as f64 / commits as f64;
            let raw = match durability {
                Some(synchronous) => {
                    let file = dir.join(format!("commit-{round}-{in_flight}-raw.db"));
                    let template = publisher.encode(&payload, &Causality::root())?;
                    let group = (per_commit.round() as u64).max(1);
                    let synchronous = *synchronous;
                    Some(
                        tokio::task::spawn_blocking(move || {
                            raw_sqlite(&file, synchronous, commands, group, &template)
                        })
                        .await??,
                    )
                }
                None => None,
            };
            runs.push(CommitRun {
                run: run.with_latencies(latencies),
                in_flight,
                durability: match durability {
                    Some(Synchronous::Full) => SQLITE_FULL.to_owned(),
                    Some(Synchronous::Normal) => "SQLite NORMAL".to_owned(),
                    None => "PostgreSQL".to_owned(),
                },
                per_commit,
                raw,
            });
        }
    }
    Ok(runs)
}

/// rusqlite alone: `commands` commands, each an item row and an outbox row holding `event` as
/// the writer stores it, committed `group` commands per transaction with `synchronous`.
fn raw_sqlite(
    file: &Path,
    synchronous: Synchronous,
    commands: u64,
    group: u64,
    event: &OutgoingEvent,
) -> anyhow::Result<Run> {
    let mut connection = rusqlite::Connection::open(file)?;
    connection.execute_batch(&format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = {};
         CREATE TABLE items (id BIGINT PRIMARY KEY, value BIGINT NOT NULL);",
        match synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    ))?;
    // The outbox as every govbus database has it, with its indexes.
    for migration in govbus_storage::schema::MIGRATIONS {
        connection.execute_batch(migration.sqlite)?;
    }
    let headers = event.header_lines();
    let stopwatch = Stopwatch::start();
    let mut id = 0_i64;
    let total = i64::try_from(commands)?;
    while id < total {
        let transaction = connection.transaction()?;
        {
            let mut item =
                transaction.prepare_cached("INSERT INTO items (id, value) VALUES (?1, ?2)")?;
            let mut outbox = transaction.prepare_cached(
                "INSERT INTO outbox (event_id, subject, headers, payload, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let end = total.min(id + i64::try_from(group)?);
            while id < end {
                item.execute((id, 1_i64))?;
                let event_id = uuid::Uuid::now_v7().to_string();
                outbox.execute((
                    event_id.as_str(),
                    event.subject(),
                    headers,
                    event.payload().as_ref(),
                    id,
                ))?;
                id += 1;
            }
        }
        transaction.commit()?;
    }
    let run = stopwatch.run(format!("rusqlite alone, {group} per commit"), commands);
    let stored: i64 = connection.query_row("SELECT COUNT(*) FROM outbox", [], |row| row.get(0))?;
    anyhow::ensure!(stored == total, "{stored} of {total} rows stored");
    Ok(run)
}
