//! The relay's lease: of all the processes sharing one outbox (replicas of a service on one
//! PostgreSQL database), one publishes at a time.
//!
//! The lease is a row in the database (`outbox_relay`): its holder and until when. The holder
//! renews it well before it runs out; another process takes it only once it has run out, so a
//! holder that died is replaced within the lease's duration plus the others' polling interval.
//! On PostgreSQL the database's clock decides when a lease has run out, so replicas on machines
//! whose clocks differ cannot both believe they hold it. A holder stops publishing when its
//! last renewal is older than the lease minus a margin, before anyone else can take over.

use std::time::Duration;

use crate::backend::Backend;
use crate::database::Database;
use crate::error::DbError;
use crate::time::{micros_of, now_micros};

/// One process's claim on the outbox of one database.
#[derive(Debug, Clone)]
pub struct Lease {
    db: Database,
    holder: String,
    duration: Duration,
}

/// How far the outbox is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Every outbox position up to this one is stored in JetStream or failed for good.
    pub published_position: i64,
    /// The stream sequence of the last of them.
    pub stream_sequence: i64,
}

const ACQUIRE_SQLITE: &str = "UPDATE outbox_relay SET holder = $1, lease_until = $2 + $3
     WHERE name = 'outbox' AND (holder = $1 OR holder IS NULL OR lease_until < $2)";

const ACQUIRE_POSTGRES: &str = "UPDATE outbox_relay
     SET holder = $1,
         lease_until = (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT + $2
     WHERE name = 'outbox' AND (holder = $1 OR holder IS NULL
         OR lease_until < (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT)";

impl Lease {
    /// A claim by this process (named by host, process id and a random part) for `duration`.
    pub fn new(db: Database, duration: Duration) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "host".to_owned());
        let holder = format!(
            "{host}:{}:{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Self {
            db,
            holder,
            duration,
        }
    }

    /// This claim's holder name.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// How long a taken or renewed lease lasts.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Takes the lease if nobody holds it (or its holder let it run out), or renews it if this
    /// process holds it. True when this process holds it now.
    pub async fn acquire(&self) -> Result<bool, DbError> {
        let holder = self.holder.clone();
        let duration = micros_of(self.duration);
        self.db
            .write(async move |tx| {
                let changed = match tx.backend() {
                    Backend::Sqlite => {
                        tx.execute(
                            ACQUIRE_SQLITE,
                            &[holder.as_str().into(), now_micros().into(), duration.into()],
                        )
                        .await?
                    }
                    Backend::Postgres => {
                        tx.execute(ACQUIRE_POSTGRES, &[holder.as_str().into(), duration.into()])
                            .await?
                    }
                };
                Ok::<bool, DbError>(changed == 1)
            })
            .await
    }

    /// Gives the lease up, so another process can take it at once.
    pub async fn release(&self) -> Result<(), DbError> {
        let holder = self.holder.clone();
        self.db
            .write(async move |tx| {
                tx.execute(
                    "UPDATE outbox_relay SET holder = NULL, lease_until = 0
                     WHERE name = 'outbox' AND holder = $1",
                    &[holder.as_str().into()],
                )
                .await
                .map(|_| ())
            })
            .await
    }

    /// Records how far this holder published; false when it no longer holds the lease.
    pub async fn record(&self, progress: Progress) -> Result<bool, DbError> {
        let holder = self.holder.clone();
        self.db
            .write(async move |tx| {
                let changed = tx
                    .execute(
                        "UPDATE outbox_relay SET published_position = $1, stream_sequence = $2
                         WHERE name = 'outbox' AND holder = $3",
                        &[
                            progress.published_position.into(),
                            progress.stream_sequence.into(),
                            holder.as_str().into(),
                        ],
                    )
                    .await?;
                Ok::<bool, DbError>(changed == 1)
            })
            .await
    }

    /// How far the outbox is published, as last recorded.
    pub async fn progress(&self) -> Result<Progress, DbError> {
        progress(&self.db).await
    }
}

/// How far `db`'s outbox is published, as last recorded.
pub async fn progress(db: &Database) -> Result<Progress, DbError> {
    let mut sql = db.read().await?;
    let row: Option<(i64, i64)> = sql
        .query_opt(
            "SELECT published_position, stream_sequence FROM outbox_relay WHERE name = 'outbox'",
            &[],
        )
        .await?;
    let (published_position, stream_sequence) = row.unwrap_or((0, 0));
    Ok(Progress {
        published_position,
        stream_sequence,
    })
}

/// Who holds `db`'s outbox lease now, if anyone.
pub async fn holder(db: &Database) -> Result<Option<String>, DbError> {
    let mut sql = db.read().await?;
    let row: Option<(Option<String>, i64)> = sql
        .query_opt(
            "SELECT holder, lease_until FROM outbox_relay WHERE name = 'outbox'",
            &[],
        )
        .await?;
    Ok(row.and_then(|(holder, until)| holder.filter(|_| until >= now_micros())))
}
