//! Retention: inbox rows, idempotency keys and published outbox rows are deleted once they are
//! older than their windows, a small batch per commit so that commands are never held up; a
//! service erases its own personal data past its period the same way ([`in_batches`]).
//!
//! The defaults and why:
//! - **Inbox, 400 days.** An inbox row must outlive every chance of its event being delivered
//!   again. The oldest event a consumer can ever be given is the oldest its source stream
//!   keeps: govbus streams keep events for 366 days, so a consumer recreated from the start of
//!   its stream meets events up to that old. 400 days covers that with a margin.
//! - **Idempotency keys, 30 days.** A key must outlive every retry of its request. Clients
//!   retry within minutes; a batch job of an agency may be rerun after a long holiday (cuti
//!   bersama around Lebaran closes offices for over a week). A month covers both; a client
//!   must not reuse a key for a new request after that.
//! - **Published outbox rows, 7 days.** Once published, a row is only evidence for an operator
//!   comparing the outbox with the stream. Rows JetStream refused are kept until an operator
//!   removes them.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::database::Database;
use crate::error::DbError;
use crate::time::{micros_of, now_micros};

/// How long rows are kept, and how they are deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Inbox rows (processed event ids).
    pub inbox: Duration,
    /// Idempotency keys with their stored responses.
    pub idempotency_keys: Duration,
    /// Outbox rows already published.
    pub published_outbox: Duration,
    /// Rows deleted per commit.
    pub batch: usize,
    /// How often expired rows are looked for.
    pub interval: Duration,
}

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            inbox: 400 * DAY,
            idempotency_keys: 30 * DAY,
            published_outbox: 7 * DAY,
            batch: 500,
            interval: Duration::from_secs(60),
        }
    }
}

/// Rows one pruning deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Inbox rows.
    pub inbox: u64,
    /// Idempotency keys.
    pub idempotency_keys: u64,
    /// Outbox rows.
    pub outbox: u64,
}

const PRUNE_INBOX: &str = "DELETE FROM inbox WHERE (consumer, event_id) IN (
         SELECT consumer, event_id FROM inbox WHERE processed_at < $1 LIMIT $2)";
const PRUNE_KEYS: &str = "DELETE FROM idempotency_keys WHERE (scope, idempotency_key) IN (
         SELECT scope, idempotency_key FROM idempotency_keys
         WHERE created_at < $1 AND completed = 1 LIMIT $2)";
// The oldest published rows, by position (rows are in time order, so no index on `created_at`
// is needed: one less page to write at every commit), deleted if old enough.
const PRUNE_OUTBOX: &str = "DELETE FROM outbox WHERE created_at < $1 AND position IN (
         SELECT position FROM outbox
         WHERE position <= COALESCE(
                   (SELECT published_position FROM outbox_relay WHERE name = 'outbox'), 0)
           AND failed_at IS NULL
         ORDER BY position LIMIT $2)";

/// Deletes every expired row, `settings.batch` rows per commit.
pub async fn prune(db: &Database, settings: &RetentionSettings) -> Result<Pruned, DbError> {
    let now = now_micros();
    Ok(Pruned {
        inbox: prune_table(
            db,
            PRUNE_INBOX,
            now - micros_of(settings.inbox),
            settings.batch,
        )
        .await?,
        idempotency_keys: prune_table(
            db,
            PRUNE_KEYS,
            now - micros_of(settings.idempotency_keys),
            settings.batch,
        )
        .await?,
        outbox: prune_table(
            db,
            PRUNE_OUTBOX,
            now - micros_of(settings.published_outbox),
            settings.batch,
        )
        .await?,
    })
}

async fn prune_table(
    db: &Database,
    statement: &'static str,
    before: i64,
    batch: usize,
) -> Result<u64, DbError> {
    let batch = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
    let mut deleted = 0;
    loop {
        let removed = db
            .write(async move |tx| tx.execute(statement, &[before.into(), batch.into()]).await)
            .await?;
        deleted += removed;
        if removed < u64::try_from(batch).unwrap_or(u64::MAX) {
            return Ok(deleted);
        }
    }
}

/// Prunes in the background at the settings' interval.
#[derive(Debug)]
pub struct Pruner {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Pruner {
    /// Starts pruning `db`.
    pub fn spawn(db: Database, settings: RetentionSettings) -> Self {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(settings.interval) => {}
                }
                match prune(&db, &settings).await {
                    Ok(pruned) if pruned != Pruned::default() => tracing::info!(
                        message = "Expired rows deleted.",
                        inbox = pruned.inbox,
                        idempotency_keys = pruned.idempotency_keys,
                        outbox = pruned.outbox,
                    ),
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(message = "Cannot delete expired rows; will retry.", %error)
                    }
                }
            }
        });
        Self { stop, task }
    }

    /// Stops pruning (a batch under way finishes).
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Rows a service's own retention round changes per commit (see [`in_batches`]).
pub const BATCH: i64 = 100;

/// Runs `round(tx, before, BATCH)` (one command: at most [`BATCH`] rows, those last changed
/// before `keep` ago) until a round changes fewer than [`BATCH`]; returns how many rows changed
/// in all. A service erases its personal data past its retention period this way: each batch
/// its own short transaction, so commands are not held up, and `round`'s own condition that
/// the rows still need it, so that replicas running rounds at once change each row once.
pub async fn in_batches<F>(db: &Database, keep: Duration, round: F) -> Result<u64, DbError>
where
    F: AsyncFn(&mut crate::Tx<'_>, i64, i64) -> Result<u64, DbError>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let before = now_micros().saturating_sub(micros_of(keep));
    let mut changed = 0;
    loop {
        let round = round.clone();
        let this_round = db
            .write(async move |tx| round(tx, before, BATCH).await)
            .await?;
        changed += this_round;
        if this_round < BATCH as u64 {
            return Ok(changed);
        }
    }
}
