//! The service's database: SQLite by default, PostgreSQL when a `postgres://` URL is given.
//!
//! Writes go to the database's one writer ([`Database::write`]), which commits concurrent
//! commands together; reads take a reading connection of their own ([`Database::read`]) and run
//! beside the writer.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::backend::Backend;
use crate::error::DbError;
use crate::outbox::feed::OutboxFeed;
use crate::postgres::{self, PostgresConnection, PostgresReaders};
use crate::sql::Sql;
use crate::sqlite::{self, Checkpointer, SqliteConnection, SqliteReaders, Synchronous};
use crate::writer::{
    self, Counters, Reconnect, Tx, WorkJob, WriterConnection, WriterHandle, WriterSettings,
    WriterStats, WriterThread,
};

/// How a database is run.
#[derive(Debug, Clone)]
pub struct DatabaseOptions {
    /// Names the writer's thread (the service's name).
    pub name: String,
    /// SQLite's durability; [`Synchronous::Full`] unless a test or benchmark says otherwise.
    pub synchronous: Synchronous,
    /// Most commands committed together on SQLite.
    pub max_group_sqlite: usize,
    /// Most commands committed together on PostgreSQL. Each command's savepoint is a
    /// subtransaction, and PostgreSQL keeps the first 64 of a transaction in shared memory;
    /// beyond them other sessions' visibility checks slow down.
    pub max_group_postgres: usize,
    /// Connections the writer runs groups on at once, on PostgreSQL (SQLite takes one writer
    /// at a time): a command's statements are round trips, so one connection waits on the
    /// server most of the time.
    pub writer_connections_postgres: usize,
    /// Commands waiting for the writer before callers wait to hand theirs over.
    pub queue: usize,
    /// Reading connections kept open (SQLite) or open at most (PostgreSQL).
    pub readers: usize,
    /// Committed events held in memory for the relay; beyond this the relay reads them from
    /// the outbox table.
    pub feed_capacity: usize,
    /// On SQLite, the size of the log (`-wal` file) past which the writer finishes a checkpoint
    /// itself, so that SQLite writes the log from its start again: about the log's largest size.
    pub sqlite_log_limit: u64,
    /// On SQLite, how much of the database file reading connections read through a memory
    /// map instead of copying each page they need from the kernel (`Some(0)`: none). `None`, the
    /// default, leaves the choice to the service and maps nothing unless it chooses: the pages
    /// read through a map count in the process's resident memory, which only pays where reads
    /// spread over a table too large for a connection's own cache (identity's register).
    pub sqlite_reader_map: Option<u64>,
}

impl Default for DatabaseOptions {
    fn default() -> Self {
        Self {
            name: "govbus".to_owned(),
            synchronous: Synchronous::Full,
            max_group_sqlite: 512,
            max_group_postgres: 60,
            writer_connections_postgres: 4,
            queue: 4096,
            readers: 8,
            feed_capacity: 8192,
            sqlite_log_limit: sqlite::LOG_LIMIT,
            sqlite_reader_map: None,
        }
    }
}

/// A handle to the service's database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    backend: Backend,
    writer: Mutex<Option<WriterHandle>>,
    thread: tokio::sync::Mutex<WriterThread>,
    readers: Readers,
    feed: Arc<OutboxFeed>,
    counters: Arc<Counters>,
    checkpointer: Mutex<Option<Checkpointer>>,
}

#[derive(Debug)]
enum Readers {
    Sqlite(Arc<SqliteReaders>),
    Postgres(Arc<PostgresReaders>),
}

impl Database {
    /// Opens `url`: `sqlite://path/to/file.db` (created if missing) or `postgres://…`, and
    /// starts its writer.
    pub async fn open(url: &str, options: DatabaseOptions) -> Result<Self, DbError> {
        let backend: Backend = url.parse()?;
        let feed = Arc::new(OutboxFeed::new(options.feed_capacity));
        let counters = Arc::new(Counters::new(&options.name));
        type Connect = std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<WriterConnection, DbError>> + Send>,
        >;
        let mut checkpointer = None;
        let (connects, settings, readers): (Vec<Connect>, _, _) = match backend {
            Backend::Sqlite => {
                let path = sqlite::file_of(url)?;
                let writer_path = path.clone();
                let synchronous = options.synchronous;
                let connect: Connect = Box::pin(async move {
                    SqliteConnection::open_writer(&writer_path, synchronous)
                        .map(WriterConnection::Sqlite)
                });
                let settings = WriterSettings {
                    max_group: options.max_group_sqlite.max(1),
                    reconnect: None,
                    sqlite_log: Some((sqlite::log_of(&path), options.sqlite_log_limit)),
                };
                checkpointer = Some(path.clone());
                let readers = Readers::Sqlite(Arc::new(SqliteReaders::new(
                    path,
                    options.readers,
                    options.sqlite_reader_map.unwrap_or(0),
                )));
                (vec![connect], settings, readers)
            }
            Backend::Postgres => {
                let connect_options = postgres::options_of(url)?;
                let for_reconnect = connect_options.clone();
                let reconnect: Reconnect = Arc::new(move || {
                    let options = for_reconnect.clone();
                    Box::pin(async move { PostgresConnection::connect(&options).await })
                });
                let connects = (0..options.writer_connections_postgres.max(1))
                    .map(|_| {
                        let connecting = reconnect();
                        let connect: Connect =
                            Box::pin(
                                async move { connecting.await.map(WriterConnection::Postgres) },
                            );
                        connect
                    })
                    .collect();
                let settings = WriterSettings {
                    max_group: options.max_group_postgres.max(1),
                    reconnect: Some(reconnect),
                    sqlite_log: None,
                };
                let readers = Readers::Postgres(Arc::new(PostgresReaders::new(
                    connect_options,
                    options.readers,
                )));
                (connects, settings, readers)
            }
        };
        let writer::Started {
            handle: writer,
            thread,
            ready,
        } = writer::spawn(
            &options.name,
            connects,
            settings,
            Arc::clone(&feed),
            options.queue,
            Arc::clone(&counters),
        )?;
        for ready in ready {
            ready
                .await
                .map_err(|_| DbError::closed("starting the database writer"))??;
        }
        // Once the writer made the file (and set WAL mode).
        let checkpointer = checkpointer
            .map(|path| Checkpointer::start(&options.name, path))
            .transpose()?;
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                writer: Mutex::new(Some(writer)),
                thread: tokio::sync::Mutex::new(thread),
                readers,
                feed,
                counters,
                checkpointer: Mutex::new(checkpointer),
            }),
        })
    }

    /// The engine behind this database.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// A reading connection of its own: statements run on the calling task without waiting for
    /// the writer, and see what it committed.
    pub async fn read(&self) -> Result<Sql<'static>, DbError> {
        match &self.inner.readers {
            Readers::Sqlite(pool) => {
                let connection = pool.take()?;
                Ok(Sql::sqlite_reader(connection, Arc::clone(pool)))
            }
            Readers::Postgres(pool) => {
                let (connection, permit) = pool.take().await?;
                Ok(Sql::postgres_reader(connection, permit, Arc::clone(pool)))
            }
        }
    }

    /// Runs `work` in the writer: inside its own savepoint of the next group of commands,
    /// committed together. Returns once that commit is durable.
    ///
    /// `work` may run more than once: when it collides with a concurrent transaction (another
    /// process on the same PostgreSQL database), its savepoint is rolled back and it runs again
    /// in the next group. It must not act outside the database except through
    /// [`Tx::enqueue`]. A statement that fails fails the whole of `work` (see [`Sql`]).
    pub async fn write<R, E, F>(&self, work: F) -> Result<R, E>
    where
        F: AsyncFn(&mut Tx<'_>) -> Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let Some(writer) = self.writer() else {
            return Err(E::from(DbError::closed("handing a command to the writer")));
        };
        let (reply, answer) = oneshot::channel();
        writer.submit(Box::new(WorkJob::new(work, reply))).await;
        answer
            .await
            .unwrap_or_else(|_| Err(E::from(DbError::closed("waiting for the writer"))))
    }

    /// Finishes the commands already handed to the writer, stops it and closes every
    /// connection. Later calls fail with [`DbErrorKind::Closed`].
    pub async fn close(&self) {
        let writer = self
            .inner
            .writer
            .lock()
            .ok()
            .and_then(|mut writer| writer.take());
        drop(writer);
        self.inner.thread.lock().await.join().await;
        let checkpointer = self
            .inner
            .checkpointer
            .lock()
            .ok()
            .and_then(|mut checkpointer| checkpointer.take());
        if let Some(mut checkpointer) = checkpointer {
            // Joins a thread: off the runtime's workers.
            let _ = tokio::task::spawn_blocking(move || checkpointer.stop()).await;
        }
        match &self.inner.readers {
            Readers::Sqlite(pool) => pool.close(),
            Readers::Postgres(pool) => pool.close(),
        }
    }

    /// What the writer did so far (for tests and benchmarks; the same is counted in the
    /// `govbus_db_*` metrics).
    pub fn stats(&self) -> WriterStats {
        self.inner.counters.stats()
    }

    pub(crate) fn feed(&self) -> &Arc<OutboxFeed> {
        &self.inner.feed
    }

    fn writer(&self) -> Option<WriterHandle> {
        self.inner
            .writer
            .lock()
            .ok()
            .and_then(|writer| writer.clone())
    }
}
