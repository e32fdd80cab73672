//! The writer: one thread per database that runs every write, committing them in groups.
//!
//! ```text
//!  callers ──job──► channel ──► writer thread (its own current-thread runtime)
//!                                 BEGIN
//!                                 for each job that arrived while the last commit ran:
//!                                     SAVEPOINT ── run the job ──► RELEASE (kept) / ROLLBACK TO (failed)
//!                                 outbox rows for the kept jobs' events (positions in commit order)
//!                                 COMMIT (durable)
//!                                 events ──► relay feed;  answers ──► callers
//! ```
//!
//! A job's statements run on the writer's connection on the writer's thread: on SQLite a
//! statement is a function call, with no hand-off to another thread; on PostgreSQL a round trip
//! on the writer's own connection. A savepoint is a round trip too, so on PostgreSQL a group
//! first runs without them; when a job in it fails, that transaction is rolled back and the
//! group runs again with a savepoint per job (and so do the next few groups). On PostgreSQL
//! the writer may own several connections, each with its thread, running groups at once: a free one takes the jobs waiting, row locks keep
//! conflicting commands apart as they do across processes, and the commit turn (the outbox
//! rows, the commit, the hand-over to the relay) passes from one to the next, so that events
//! reach the relay in position order. A job that fails is rolled back alone and answered with its
//! own error; one that collides with another transaction (a deadlock) is rolled back and run
//! again in the next group; the others commit. Every caller is answered after the commit that
//! holds its job, so an answer is never based on state that might still roll back. On SQLite
//! the writer also finishes a checkpoint itself, between groups, when its log has grown past a
//! bound, so that the log is written from its start again instead of growing.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use govbus_bus::OutgoingEvent;
use opentelemetry::trace::FutureExt as _;
use tokio::sync::{OwnedMutexGuard, mpsc, oneshot};
use tracing::Instrument as _;

use crate::error::DbError;
use crate::outbox::feed::{Committed, OutboxFeed};
use crate::postgres::PostgresConnection;
use crate::sql::Sql;
use crate::sqlite::SqliteConnection;

/// How many times a job that collided with another transaction is run again before its caller
/// is told.
const MAX_ATTEMPTS: u32 = 20;

/// A command's transaction: its statements (through [`Sql`], which it dereferences to) and the
/// events it publishes through the outbox.
#[derive(Debug)]
pub struct Tx<'c> {
    sql: Sql<'c>,
    events: Vec<OutgoingEvent>,
}

impl<'c> Tx<'c> {
    fn new(sql: Sql<'c>) -> Self {
        Self {
            sql,
            events: Vec::new(),
        }
    }

    /// Publishes `event` if, and once, this command commits: it is stored in the outbox with
    /// the command's changes and handed to the relay after the commit.
    pub fn enqueue(&mut self, event: OutgoingEvent) {
        self.events.push(event);
    }
}

impl<'c> std::ops::Deref for Tx<'c> {
    type Target = Sql<'c>;

    fn deref(&self) -> &Sql<'c> {
        &self.sql
    }
}

impl std::ops::DerefMut for Tx<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.sql
    }
}

type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// A unit of work for the writer, with its caller's answer.
pub(crate) trait Job: Send {
    /// The caller's span and trace context: the job runs inside them, so what it records (the
    /// spans of the events it encodes, its log lines) belongs to the caller's trace.
    fn span(&self) -> (&tracing::Span, &opentelemetry::Context);
    /// Runs the work once; true when it succeeded.
    fn run<'a, 'c>(&'a mut self, tx: &'a mut Tx<'c>) -> LocalBoxFuture<'a, bool>;
    /// Replaces the work's outcome with `error` (a statement failed, or the job cannot run).
    fn fail(&mut self, error: DbError);
    /// Counts an attempt; returns how many there were.
    fn attempt(&mut self) -> u32;
    /// Answers the caller: the work's outcome if its group committed, else why not.
    fn answer(self: Box<Self>, commit: Result<(), &DbError>);
}

/// A job running `work`, answering through `reply`.
pub(crate) struct WorkJob<F, R, E> {
    work: F,
    outcome: Option<Result<R, E>>,
    reply: Option<oneshot::Sender<Result<R, E>>>,
    span: tracing::Span,
    context: opentelemetry::Context,
    attempts: u32,
}

impl<F, R, E> WorkJob<F, R, E> {
    pub(crate) fn new(work: F, reply: oneshot::Sender<Result<R, E>>) -> Self {
        Self {
            work,
            outcome: None,
            reply: Some(reply),
            span: tracing::Span::current(),
            context: opentelemetry::Context::current(),
            attempts: 0,
        }
    }
}

impl<F, R, E> Job for WorkJob<F, R, E>
where
    F: AsyncFn(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
    R: Send + 'static,
    E: From<DbError> + Send + 'static,
{
    fn span(&self) -> (&tracing::Span, &opentelemetry::Context) {
        (&self.span, &self.context)
    }

    fn run<'a, 'c>(&'a mut self, tx: &'a mut Tx<'c>) -> LocalBoxFuture<'a, bool> {
        Box::pin(async move {
            let outcome = (self.work)(tx).await;
            let succeeded = outcome.is_ok();
            self.outcome = Some(outcome);
            succeeded
        })
    }

    fn fail(&mut self, error: DbError) {
        self.outcome = Some(Err(E::from(error)));
    }

    fn attempt(&mut self) -> u32 {
        self.attempts += 1;
        self.attempts
    }

    fn answer(mut self: Box<Self>, commit: Result<(), &DbError>) {
        let answer = match commit {
            Ok(()) => self.outcome.take().unwrap_or_else(|| {
                Err(E::from(DbError::closed(
                    "answering a command that never ran",
                )))
            }),
            Err(error) => Err(E::from(error.clone())),
        };
        if let Some(reply) = self.reply.take() {
            // The caller may have gone (its request was cancelled); its job committed anyway.
            let _ = reply.send(answer);
        }
    }
}

/// The connection the writer owns.
pub(crate) enum WriterConnection {
    Sqlite(SqliteConnection),
    Postgres(PostgresConnection),
}

/// How to make a new PostgreSQL connection after the old one broke.
pub(crate) type Reconnect = Arc<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<PostgresConnection, DbError>> + Send>>
        + Send
        + Sync,
>;

/// Settings of the writer.
#[derive(Clone)]
pub(crate) struct WriterSettings {
    /// Most jobs committed together.
    pub(crate) max_group: usize,
    pub(crate) reconnect: Option<Reconnect>,
    /// On SQLite, the database's log (`-wal` file), watched for growth past its limit.
    pub(crate) sqlite_log: Option<(std::path::PathBuf, u64)>,
}

/// What the writer did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Jobs handed to the writer.
    pub submitted: u64,
    /// Groups committed.
    pub commits: u64,
    /// Jobs in committed groups (kept or rolled back alone).
    pub committed_jobs: u64,
    /// Groups that failed as a whole (their jobs were answered with the error).
    pub failed_groups: u64,
    /// On PostgreSQL, groups run again with a savepoint per job because a job failed in their
    /// first run, which has none.
    pub groups_run_again: u64,
}

/// The writer's counters, shared by its handle and its thread.
#[derive(Debug)]
pub(crate) struct Counters {
    submitted: AtomicU64,
    commits: AtomicU64,
    committed_jobs: AtomicU64,
    failed_groups: AtomicU64,
    groups_run_again: AtomicU64,
    commits_metric: metrics::Counter,
    jobs_metric: metrics::Counter,
    group_size: metrics::Histogram,
}

impl Counters {
    pub(crate) fn new(name: &str) -> Self {
        let database = name.to_owned();
        Self {
            submitted: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            committed_jobs: AtomicU64::new(0),
            failed_groups: AtomicU64::new(0),
            groups_run_again: AtomicU64::new(0),
            commits_metric: metrics::counter!("govbus_db_commits_total", "database" => database.clone()),
            jobs_metric: metrics::counter!("govbus_db_commands_total", "database" => database.clone()),
            group_size: metrics::histogram!("govbus_db_commands_per_commit", "database" => database),
        }
    }

    pub(crate) fn stats(&self) -> WriterStats {
        WriterStats {
            submitted: self.submitted.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            committed_jobs: self.committed_jobs.load(Ordering::Relaxed),
            failed_groups: self.failed_groups.load(Ordering::Relaxed),
            groups_run_again: self.groups_run_again.load(Ordering::Relaxed),
        }
    }

    fn committed(&self, jobs: usize) {
        let jobs = u64::try_from(jobs).unwrap_or(u64::MAX);
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.committed_jobs.fetch_add(jobs, Ordering::Relaxed);
        self.commits_metric.increment(1);
        self.jobs_metric.increment(jobs);
        self.group_size.record(jobs as f64);
    }
}

/// Sends jobs to the writer thread.
#[derive(Debug, Clone)]
pub(crate) struct WriterHandle {
    jobs: mpsc::Sender<Box<dyn Job>>,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for dyn Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

impl WriterHandle {
    /// Hands `job` to the writer, waiting while its queue is full.
    pub(crate) async fn submit(&self, job: Box<dyn Job>) {
        match self.jobs.send(job).await {
            Ok(()) => {
                self.counters.submitted.fetch_add(1, Ordering::Relaxed);
            }
            Err(mpsc::error::SendError(job)) => {
                job.answer(Err(&DbError::closed("handing a command to the writer")));
            }
        }
    }
}

/// The writer's threads; [`join`](Self::join) waits for them to finish the jobs already queued.
#[derive(Debug)]
pub(crate) struct WriterThread {
    done: Vec<oneshot::Receiver<()>>,
}

impl WriterThread {
    pub(crate) async fn join(&mut self) {
        for done in self.done.drain(..) {
            let _ = done.await;
        }
    }
}

/// A writer just started: its handle, its threads, and whether each connection opened.
pub(crate) struct Started {
    pub(crate) handle: WriterHandle,
    pub(crate) thread: WriterThread,
    pub(crate) ready: Vec<oneshot::Receiver<Result<(), DbError>>>,
}

/// The queue of jobs, taken from by whichever of the writer's connections is free.
type Jobs = Arc<tokio::sync::Mutex<mpsc::Receiver<Box<dyn Job>>>>;

/// Starts one writer thread per connection in `connects`, each then owning its connection.
///
/// Each connect future runs on its thread's own runtime, so that a PostgreSQL connection's
/// socket is driven by the thread that uses it.
pub(crate) fn spawn<C>(
    name: &str,
    connects: Vec<C>,
    settings: WriterSettings,
    feed: Arc<OutboxFeed>,
    queue: usize,
    counters: Arc<Counters>,
) -> Result<Started, DbError>
where
    C: Future<Output = Result<WriterConnection, DbError>> + Send + 'static,
{
    let (jobs, receiver) = mpsc::channel::<Box<dyn Job>>(queue.max(1));
    let receiver: Jobs = Arc::new(tokio::sync::Mutex::new(receiver));
    let turn = Arc::new(tokio::sync::Mutex::new(()));
    let mut ready = Vec::with_capacity(connects.len());
    let mut done = Vec::with_capacity(connects.len());
    for (lane, connect) in connects.into_iter().enumerate() {
        let (ready_sender, lane_ready) = oneshot::channel();
        let (done_sender, lane_done) = oneshot::channel();
        let thread_name = if lane == 0 {
            format!("{name}-writer")
        } else {
            format!("{name}-writer-{lane}")
        };
        let writer = Writer {
            connection: None,
            settings: settings.clone(),
            feed: Arc::clone(&feed),
            carried: VecDeque::new(),
            counters: Arc::clone(&counters),
            turn: Arc::clone(&turn),
            guarded_groups: 0,
            log_size: 0,
        };
        spawn_thread(
            thread_name,
            connect,
            writer,
            Arc::clone(&receiver),
            ready_sender,
            done_sender,
        )?;
        ready.push(lane_ready);
        done.push(lane_done);
    }
    Ok(Started {
        handle: WriterHandle { jobs, counters },
        thread: WriterThread { done },
        ready,
    })
}

/// Runs `writer` on a thread of its own over the connection `connect` opens, taking jobs from
/// `jobs` until every handle is gone.
fn spawn_thread<C>(
    thread_name: String,
    connect: C,
    mut writer: Writer,
    jobs: Jobs,
    ready_sender: oneshot::Sender<Result<(), DbError>>,
    done_sender: oneshot::Sender<()>,
) -> Result<(), DbError>
where
    C: Future<Output = Result<WriterConnection, DbError>> + Send + 'static,
{
    std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = ready_sender.send(Err(DbError::new(
                        crate::error::DbErrorKind::Config,
                        "starting the database writer",
                        error.to_string(),
                    )));
                    return;
                }
            };
            runtime.block_on(async move {
                match connect.await {
                    Ok(connection) => {
                        let _ = ready_sender.send(Ok(()));
                        writer.connection = Some(connection);
                    }
                    Err(error) => {
                        let _ = ready_sender.send(Err(error));
                        return;
                    }
                }
                writer.run(&jobs).await;
                writer.close().await;
            });
            let _ = done_sender.send(());
        })
        .map(|_| ())
        .map_err(|error| {
            DbError::new(
                crate::error::DbErrorKind::Config,
                "starting the database writer",
                error.to_string(),
            )
        })
}

struct Writer {
    /// `None` until its thread connected, and while a broken PostgreSQL connection waits to be
    /// replaced.
    connection: Option<WriterConnection>,
    settings: WriterSettings,
    feed: Arc<OutboxFeed>,
    /// Jobs to run again in the next group (they collided with another transaction).
    carried: VecDeque<Box<dyn Job>>,
    counters: Arc<Counters>,
    /// Shared by the writer's connections: held from a group's outbox rows until its events
    /// are in the feed.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// On PostgreSQL: how many more groups run with a savepoint per job from the start, after
    /// a group run without them had a job fail.
    guarded_groups: u32,
    /// On SQLite: the log's size when the writer last checkpointed it (the file keeps its size
    /// when SQLite writes it from the start again; it grows only past it).
    log_size: u64,
}

/// What became of one job in its group.
enum Ran {
    Kept(Box<dyn Job>, Vec<OutgoingEvent>),
    Failed(Box<dyn Job>),
}

impl Ran {
    fn into_job(self) -> Box<dyn Job> {
        match self {
            Ran::Kept(job, _) | Ran::Failed(job) => job,
        }
    }
}

/// Why a group could not commit.
struct GroupFailed {
    error: DbError,
    ran: Vec<Ran>,
}

impl Writer {
    async fn run(&mut self, jobs: &Jobs) {
        loop {
            let mut group: Vec<Box<dyn Job>> = self.carried.drain(..).collect();
            // The queue is held while waiting for work: the other connections wait behind, and
            // the first free one takes what arrived. Jobs carried from the last group run at
            // once, with whatever is waiting if the queue is free (another connection may be
            // holding it, waiting for work that does not come).
            let receiver = if group.is_empty() {
                Some(jobs.lock().await)
            } else {
                jobs.try_lock().ok()
            };
            if let Some(mut receiver) = receiver {
                if group.is_empty() {
                    match receiver.recv().await {
                        Some(job) => group.push(job),
                        None => return,
                    }
                }
                while group.len() < self.settings.max_group {
                    match receiver.try_recv() {
                        Ok(job) => group.push(job),
                        Err(_) => break,
                    }
                }
            }
            self.run_group(group).await;
        }
    }

    async fn close(&mut self) {
        if let Some(WriterConnection::Postgres(connection)) = self.connection.take() {
            connection.close().await;
        }
    }

    /// On SQLite, when the log has grown past its limit and past its size at the last such
    /// checkpoint: the rest of the log copied into the database file, after the group's
    /// commands were answered, so that SQLite writes the log from its start again.
    fn restart_log_when_grown(&mut self) {
        let (Some(WriterConnection::Sqlite(connection)), Some((log, limit))) =
            (self.connection.as_mut(), self.settings.sqlite_log.as_ref())
        else {
            return;
        };
        let size = std::fs::metadata(log).map_or(0, |metadata| metadata.len());
        if size > self.log_size.max(*limit) {
            connection.checkpoint();
            self.log_size = size;
        }
    }

    /// Runs `group` in one transaction and answers every job in it.
    async fn run_group(&mut self, group: Vec<Box<dyn Job>>) {
        if self.connection.is_none() && !self.reconnect().await {
            let error = DbError::new(
                crate::error::DbErrorKind::Unavailable,
                "reconnecting the writer",
                "PostgreSQL is unreachable",
            );
            for job in group {
                job.answer(Err(&error));
            }
            return;
        }
        let Some(connection) = self.connection.as_mut() else {
            return;
        };
        let mut retry = Vec::new();
        let outcome = match connection {
            WriterConnection::Sqlite(connection) => {
                sqlite_group(connection, group, &mut retry).await
            }
            WriterConnection::Postgres(connection) if self.guarded_groups > 0 => {
                self.guarded_groups -= 1;
                postgres_group(connection, group, &mut retry, &self.turn).await
            }
            WriterConnection::Postgres(connection) => {
                match postgres_group_unguarded(connection, group, &mut retry, &self.turn).await {
                    Unguarded::Done(outcome) => outcome,
                    Unguarded::Again(group) => {
                        self.counters
                            .groups_run_again
                            .fetch_add(1, Ordering::Relaxed);
                        self.guarded_groups = GUARDED_AFTER_FAILURE;
                        postgres_group(connection, group, &mut retry, &self.turn).await
                    }
                }
            }
        };
        self.carried.extend(retry);
        match outcome {
            Ok((ran, committed, turn)) => {
                self.counters.committed(ran.len());
                self.feed.push(committed);
                // The next group's events may go to the feed now.
                drop(turn);
                for job in ran {
                    match job {
                        Ran::Kept(job, _) | Ran::Failed(job) => job.answer(Ok(())),
                    }
                }
                self.restart_log_when_grown();
            }
            Err(GroupFailed { error, ran }) => {
                self.counters.failed_groups.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(message = "A group of commands could not commit.", %error);
                if matches!(self.connection, Some(WriterConnection::Postgres(_)))
                    && error.kind() == crate::error::DbErrorKind::Unavailable
                {
                    self.check_postgres().await;
                }
                for job in ran {
                    match job {
                        Ran::Kept(job, _) | Ran::Failed(job) => job.answer(Err(&error)),
                    }
                }
            }
        }
    }

    /// After a failure that may have broken the connection: drops it if it no longer answers.
    async fn check_postgres(&mut self) {
        if let Some(WriterConnection::Postgres(connection)) = self.connection.as_mut()
            && !connection.ping().await
        {
            self.connection = None;
        }
    }

    async fn reconnect(&mut self) -> bool {
        let Some(reconnect) = self.settings.reconnect.clone() else {
            return false;
        };
        match reconnect().await {
            Ok(connection) => {
                tracing::info!(message = "Database writer reconnected.");
                self.connection = Some(WriterConnection::Postgres(connection));
                true
            }
            Err(error) => {
                tracing::warn!(message = "Database writer cannot reconnect.", %error);
                // Callers are answered at once; the next group tries again after a pause.
                tokio::time::sleep(Duration::from_millis(200)).await;
                false
            }
        }
    }
}

/// What to do with a job after it ran.
enum Verdict {
    Keep,
    RollBack,
    Retry,
}

/// Runs `job` in a transaction over `sql`, inside its span; classifies the outcome and returns
/// the events it enqueued.
async fn run_job(job: &mut Box<dyn Job>, sql: Sql<'_>) -> (Verdict, Vec<OutgoingEvent>) {
    let mut tx = Tx::new(sql);
    let (span, context) = job.span();
    let (span, context) = (span.clone(), context.clone());
    let succeeded = job
        .run(&mut tx)
        .with_context(context)
        .instrument(span)
        .await;
    let verdict = match tx.sql.take_failure() {
        Some(failure) if failure.kind() == crate::error::DbErrorKind::Deadlock => {
            if job.attempt() < MAX_ATTEMPTS {
                Verdict::Retry
            } else {
                job.fail(failure);
                Verdict::RollBack
            }
        }
        // A statement failed yet the job went on: it must not commit half done.
        Some(failure) if succeeded => {
            job.fail(failure);
            Verdict::RollBack
        }
        Some(_) => Verdict::RollBack,
        None if succeeded => Verdict::Keep,
        None => Verdict::RollBack,
    };
    (verdict, tx.events)
}

/// A group that committed: its jobs, its events with their positions, and the commit turn when
/// the group took it (its events go to the feed before the turn passes on).
type GroupCommitted = (Vec<Ran>, Vec<Committed>, Option<OwnedMutexGuard<()>>);

/// One group on SQLite: `BEGIN IMMEDIATE`, a savepoint per job, the outbox rows, `COMMIT`.
async fn sqlite_group(
    connection: &mut SqliteConnection,
    group: Vec<Box<dyn Job>>,
    retry: &mut Vec<Box<dyn Job>>,
) -> Result<GroupCommitted, GroupFailed> {
    let mut ran = Vec::with_capacity(group.len());
    if let Err(error) = connection.execute_script("BEGIN IMMEDIATE") {
        ran.extend(group.into_iter().map(Ran::Failed));
        return Err(GroupFailed { error, ran });
    }
    for mut job in group {
        if let Err(error) = connection.execute("SAVEPOINT job", &[]) {
            ran.push(Ran::Failed(job));
            return Err(sqlite_abort(connection, error, ran));
        }
        let (verdict, events) = run_job(&mut job, Sql::sqlite_writer(connection)).await;
        let end = match verdict {
            Verdict::Keep => connection.execute("RELEASE job", &[]),
            Verdict::RollBack | Verdict::Retry => connection
                .execute("ROLLBACK TO job", &[])
                .and_then(|_| connection.execute("RELEASE job", &[])),
        };
        match verdict {
            Verdict::Keep => ran.push(Ran::Kept(job, events)),
            Verdict::RollBack => ran.push(Ran::Failed(job)),
            Verdict::Retry => retry.push(job),
        }
        if let Err(error) = end {
            return Err(sqlite_abort(connection, error, ran));
        }
    }
    let events = ran_events(&mut ran);
    let committed = match sqlite_outbox_rows(connection, events) {
        Ok(committed) => committed,
        Err(error) => return Err(sqlite_abort(connection, error, ran)),
    };
    if let Err(error) = connection.execute_script("COMMIT") {
        return Err(sqlite_abort(connection, error, ran));
    }
    // SQLite has one connection that writes: commit order is its order.
    Ok((ran, committed, None))
}

fn sqlite_abort(connection: &mut SqliteConnection, error: DbError, ran: Vec<Ran>) -> GroupFailed {
    // Rolls back whatever is open; a failed COMMIT may already have ended the transaction.
    let _ = connection.execute_script("ROLLBACK");
    GroupFailed { error, ran }
}

/// Stores the kept jobs' events in the outbox; their positions follow commit order because
/// SQLite lets one writer in at a time.
fn sqlite_outbox_rows(
    connection: &mut SqliteConnection,
    events: Vec<OutgoingEvent>,
) -> Result<Vec<Committed>, DbError> {
    let now = crate::time::now_micros();
    let mut committed = Vec::with_capacity(events.len());
    for event in events {
        connection.execute(
            "INSERT INTO outbox (event_id, subject, headers, payload, created_at)
             VALUES ($1, $2, $3, $4, $5)",
            &[
                event.id().into(),
                event.subject().into(),
                event.header_lines().into(),
                event.payload().as_ref().into(),
                now.into(),
            ],
        )?;
        committed.push(Committed {
            position: connection.last_insert_rowid(),
            event,
        });
    }
    Ok(committed)
}

/// One group on PostgreSQL: `BEGIN`, a savepoint per job, then, holding the commit turn, the
/// outbox rows under the outbox's lock (so positions become visible in order, across processes
/// too) and `COMMIT`.
///
/// Savepoint statements share a round trip where they can: `BEGIN; SAVEPOINT job` opens the
/// group, `RELEASE SAVEPOINT job; SAVEPOINT job` closes one job and opens the next, and
/// `ROLLBACK TO SAVEPOINT job` undoes a failed job and leaves its savepoint open for the next.
async fn postgres_group(
    connection: &mut PostgresConnection,
    group: Vec<Box<dyn Job>>,
    retry: &mut Vec<Box<dyn Job>>,
    turn: &Arc<tokio::sync::Mutex<()>>,
) -> Result<GroupCommitted, GroupFailed> {
    let mut ran = Vec::with_capacity(group.len());
    if let Err(error) = connection.execute_static("BEGIN; SAVEPOINT job").await {
        ran.extend(group.into_iter().map(Ran::Failed));
        return Err(GroupFailed { error, ran });
    }
    let mut release_first = false;
    for mut job in group {
        if release_first
            && let Err(error) = connection
                .execute_static("RELEASE SAVEPOINT job; SAVEPOINT job")
                .await
        {
            ran.push(Ran::Failed(job));
            return Err(postgres_abort(connection, error, ran).await);
        }
        let (verdict, events) = run_job(&mut job, Sql::postgres_writer(connection)).await;
        let end = match verdict {
            Verdict::Keep => {
                release_first = true;
                Ok(())
            }
            Verdict::RollBack | Verdict::Retry => {
                release_first = false;
                connection.execute_static("ROLLBACK TO SAVEPOINT job").await
            }
        };
        match verdict {
            Verdict::Keep => ran.push(Ran::Kept(job, events)),
            Verdict::RollBack => ran.push(Ran::Failed(job)),
            Verdict::Retry => retry.push(job),
        }
        if let Err(error) = end {
            return Err(postgres_abort(connection, error, ran).await);
        }
    }
    postgres_commit(connection, ran, turn).await
}

/// How many groups run with savepoints from the start after one without them had a job fail:
/// while jobs fail (many requests for one record at once), running each group twice would
/// cost more than the savepoints.
const GUARDED_AFTER_FAILURE: u32 = 16;

/// What running a group without savepoints came to.
enum Unguarded {
    /// Every job was kept and the group committed (or failed as a whole), or a lone job failed
    /// and its transaction was rolled back.
    Done(Result<GroupCommitted, GroupFailed>),
    /// A job failed among others: the transaction was rolled back, and the group is to run
    /// again with a savepoint per job.
    Again(Vec<Box<dyn Job>>),
}

/// One group on PostgreSQL, first without a savepoint per job: each savepoint is a round trip
/// of its own, and most groups have no job that fails. When one fails, the whole transaction
/// is rolled back and the group runs again through [`postgres_group`], where that job is rolled
/// back alone; the jobs' changes commit only from a run in which every kept job succeeded, so
/// the outcome is the same as with savepoints throughout.
async fn postgres_group_unguarded(
    connection: &mut PostgresConnection,
    group: Vec<Box<dyn Job>>,
    retry: &mut Vec<Box<dyn Job>>,
    turn: &Arc<tokio::sync::Mutex<()>>,
) -> Unguarded {
    if let Err(error) = connection.execute_static("BEGIN").await {
        let ran = group.into_iter().map(Ran::Failed).collect();
        return Unguarded::Done(Err(GroupFailed { error, ran }));
    }
    let alone = group.len() == 1;
    let mut ran = Vec::with_capacity(group.len());
    let mut jobs = group.into_iter();
    while let Some(mut job) = jobs.next() {
        let (verdict, events) = run_job(&mut job, Sql::postgres_writer(connection)).await;
        if let Verdict::Keep = verdict {
            ran.push(Ran::Kept(job, events));
            continue;
        }
        let rolled_back = connection.execute_static("ROLLBACK").await;
        if alone && rolled_back.is_ok() {
            let ran = match verdict {
                Verdict::Retry => {
                    retry.push(job);
                    Vec::new()
                }
                Verdict::Keep | Verdict::RollBack => vec![Ran::Failed(job)],
            };
            return Unguarded::Done(Ok((ran, Vec::new(), None)));
        }
        let mut again: Vec<Box<dyn Job>> = ran.into_iter().map(Ran::into_job).collect();
        again.push(job);
        again.extend(jobs);
        return Unguarded::Again(again);
    }
    Unguarded::Done(postgres_commit(connection, ran, turn).await)
}

/// The end of a group on PostgreSQL: holding the commit turn when it has events, their outbox
/// rows, then `COMMIT`.
async fn postgres_commit(
    connection: &mut PostgresConnection,
    mut ran: Vec<Ran>,
    turn: &Arc<tokio::sync::Mutex<()>>,
) -> Result<GroupCommitted, GroupFailed> {
    let events = ran_events(&mut ran);
    // Groups without events commit in any order; those with events take their positions,
    // commit and reach the feed one after the other.
    let turn = if events.is_empty() {
        None
    } else {
        Some(Arc::clone(turn).lock_owned().await)
    };
    let committed = match crate::outbox::rows::postgres_rows(connection, events).await {
        Ok(committed) => committed,
        Err(error) => return Err(postgres_abort(connection, error, ran).await),
    };
    if let Err(error) = connection.execute_static("COMMIT").await {
        return Err(postgres_abort(connection, error, ran).await);
    }
    Ok((ran, committed, turn))
}

async fn postgres_abort(
    connection: &mut PostgresConnection,
    error: DbError,
    ran: Vec<Ran>,
) -> GroupFailed {
    let _ = connection.execute_static("ROLLBACK").await;
    GroupFailed { error, ran }
}

/// The kept jobs' events, in the order the jobs ran, taken out of `ran`.
fn ran_events(ran: &mut [Ran]) -> Vec<OutgoingEvent> {
    let mut events = Vec::new();
    for job in ran.iter_mut() {
        if let Ran::Kept(_, kept) = job {
            events.append(kept);
        }
    }
    events
}
