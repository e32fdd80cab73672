//! SQLite through rusqlite: statements run on the calling thread, prepared once per connection.
//!
//! Statements are written with PostgreSQL's `$1, $2, …` placeholders; they are rewritten once per
//! connection to SQLite's `?1, ?2, …`, which bind by number exactly as PostgreSQL does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::{ToSqlOutput, ValueRef};

use crate::error::{DbError, DbErrorKind};
use crate::value::{FromRow, Row, Value};

/// How SQLite makes a commit durable (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    /// Every commit is on disk before it is answered (`FULL`): a power loss loses nothing that
    /// was answered. The default.
    Full,
    /// Commits are on disk at the next checkpoint (`NORMAL` in WAL mode): a power loss can lose
    /// the last commits, though never corrupts the file. For tests and benchmarks only.
    Normal,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

/// How long a connection waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 256;
/// Rewritten statements remembered per connection; statements generated with many placeholders
/// (batches) could otherwise grow the map without bound.
const TRANSLATION_CACHE: usize = 1024;

/// The file behind a `sqlite://` URL, its folder created if missing.
pub(crate) fn file_of(url: &str) -> Result<PathBuf, DbError> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = rest.split_once('?').map_or(rest, |(path, _)| path);
    if path.is_empty() || path == ":memory:" || path.starts_with("file::memory:") {
        return Err(DbError::new(
            DbErrorKind::Config,
            "opening the database",
            format!(
                "{url:?} names no file: govbus keeps SQLite databases in files (sqlite://path/to/service.db)"
            ),
        ));
    }
    let path = PathBuf::from(path);
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|error| {
            DbError::new(
                DbErrorKind::Config,
                "creating the database folder",
                format!("{}: {error}", parent.display()),
            )
        })?;
    }
    Ok(path)
}

/// One SQLite connection.
#[derive(Debug)]
pub(crate) struct SqliteConnection {
    connection: rusqlite::Connection,
    translated: HashMap<Box<str>, Arc<str>>,
}

impl SqliteConnection {
    /// The connection that writes: WAL, the given durability, foreign keys on.
    pub(crate) fn open_writer(path: &Path, synchronous: Synchronous) -> Result<Self, DbError> {
        let connection = rusqlite::Connection::open(path)
            .map_err(|error| DbError::sqlite("opening the database", error))?;
        let mut connection = Self::prepare(connection)?;
        // Checkpoints run beside the writer ([`Checkpointer`]) and, rarely, between its groups
        // ([`SqliteConnection::checkpoint`]), never inside a commit its commands wait for.
        connection.execute_script(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; \
             PRAGMA wal_autocheckpoint = 0;",
            synchronous.pragma()
        ))?;
        Ok(connection)
    }

    /// A connection that only reads (`query_only`), beside the writer (WAL), reading the first
    /// `map` bytes of the database file through a memory map (`mmap_size`; 0: none).
    pub(crate) fn open_reader(path: &Path, map: u64) -> Result<Self, DbError> {
        let connection = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE
                | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
                | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|error| DbError::sqlite("opening a reading connection", error))?;
        let mut connection = Self::prepare(connection)?;
        connection.execute_script(&format!(
            "PRAGMA query_only = ON; PRAGMA foreign_keys = ON; PRAGMA mmap_size = {map};"
        ))?;
        Ok(connection)
    }

    fn prepare(connection: rusqlite::Connection) -> Result<Self, DbError> {
        connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(|error| DbError::sqlite("setting the busy timeout", error))?;
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Self {
            connection,
            translated: HashMap::new(),
        })
    }

    /// Runs several statements without parameters (migrations, pragmas, savepoints).
    pub(crate) fn execute_script(&mut self, script: &str) -> Result<(), DbError> {
        self.connection
            .execute_batch(script)
            .map_err(|error| DbError::sqlite("running a script", error).with_statement(script))
    }

    /// Copies the write-ahead log into the database file (`PASSIVE`): on the [`Checkpointer`]'s
    /// connection every 100 ms, and on the writer's, between groups, when the log has grown past
    /// its limit (`DatabaseOptions::sqlite_log_limit`).
    ///
    /// The [`Checkpointer`] beside a writer that never pauses never catches up with the log's
    /// end, so SQLite never starts the log again from its beginning: it grew by every commit
    /// (2 GB in a one-minute benchmark), each write extending the file (blocks allocated and
    /// zeroed, its size journaled at every sync). Run by the writer, nothing is added meanwhile:
    /// this checkpoint copies what the thread has not yet copied and reaches the end (unless a
    /// reader still reads an older snapshot), and the next commit writes the log from its start
    /// again, over blocks the file already has. Only that remainder waits for it, not the bulk
    /// of the copying and syncing, which stays on the thread. `PASSIVE`: it waits for no reader,
    /// and gives way when the thread is checkpointing (the next growth tries again).
    pub(crate) fn checkpoint(&mut self) {
        if let Err(error) = self.execute_script("PRAGMA wal_checkpoint(PASSIVE)") {
            tracing::warn!(message = "SQLite checkpoint failed; the next one retries.", %error);
        }
    }

    /// Runs one statement; returns the rows it changed.
    pub(crate) fn execute(&mut self, sql: &str, params: &[Value<'_>]) -> Result<u64, DbError> {
        let statement = self.translate(sql);
        let mut prepared = self
            .connection
            .prepare_cached(&statement)
            .map_err(|error| DbError::sqlite("preparing a statement", error).with_statement(sql))?;
        bind(&mut prepared, params).map_err(|error| error.with_statement(sql))?;
        let changed = prepared
            .raw_execute()
            .map_err(|error| DbError::sqlite("running a statement", error).with_statement(sql))?;
        Ok(u64::try_from(changed).unwrap_or(0))
    }

    /// Runs one query; returns up to `limit` rows.
    pub(crate) fn query<T: FromRow>(
        &mut self,
        sql: &str,
        params: &[Value<'_>],
        limit: usize,
    ) -> Result<Vec<T>, DbError> {
        let statement = self.translate(sql);
        let mut prepared = self
            .connection
            .prepare_cached(&statement)
            .map_err(|error| DbError::sqlite("preparing a query", error).with_statement(sql))?;
        bind(&mut prepared, params).map_err(|error| error.with_statement(sql))?;
        let mut rows = prepared.raw_query();
        let mut read = Vec::new();
        while read.len() < limit {
            let row = rows
                .next()
                .map_err(|error| DbError::sqlite("running a query", error).with_statement(sql))?;
            let Some(row) = row else { break };
            read.push(T::from_row(&Row::sqlite(row)).map_err(|error| error.with_statement(sql))?);
        }
        Ok(read)
    }

    /// The rowid the last successful insert assigned.
    pub(crate) fn last_insert_rowid(&self) -> i64 {
        self.connection.last_insert_rowid()
    }

    /// The statement with `?N` for each `$N`, as prepared; remembered per connection.
    fn translate(&mut self, sql: &str) -> Arc<str> {
        if let Some(translated) = self.translated.get(sql) {
            return Arc::clone(translated);
        }
        if self.translated.len() >= TRANSLATION_CACHE {
            self.translated.clear();
        }
        let translated: Arc<str> = Arc::from(to_sqlite_placeholders(sql));
        self.translated
            .insert(Box::from(sql), Arc::clone(&translated));
        translated
    }
}

fn bind(
    statement: &mut rusqlite::CachedStatement<'_>,
    params: &[Value<'_>],
) -> Result<(), DbError> {
    let expected = statement.parameter_count();
    if expected != params.len() {
        return Err(DbError::new(
            DbErrorKind::Query,
            "binding parameters",
            format!(
                "the statement has {expected} parameters, {} were given",
                params.len()
            ),
        ));
    }
    for (index, value) in params.iter().enumerate() {
        statement
            .raw_bind_parameter(index + 1, value)
            .map_err(|error| DbError::sqlite("binding a parameter", error))?;
    }
    Ok(())
}

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Int(value) => ValueRef::Integer(value),
            Value::Real(value) => ValueRef::Real(value),
            Value::Text(value) => ValueRef::Text(value.as_bytes()),
            Value::Blob(value) => ValueRef::Blob(value),
            Value::Null(_) => ValueRef::Null,
        }))
    }
}

/// Rewrites `$N` placeholders outside quotes as `?N`.
fn to_sqlite_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quote: Option<char> = None;
    let mut characters = sql.chars().peekable();
    while let Some(character) = characters.next() {
        match quote {
            Some(open) => {
                if character == open {
                    quote = None;
                }
                out.push(character);
            }
            None => match character {
                '\'' | '"' => {
                    quote = Some(character);
                    out.push(character);
                }
                '$' if characters.peek().is_some_and(char::is_ascii_digit) => out.push('?'),
                other => out.push(other),
            },
        }
    }
    out
}

/// Copies the write-ahead log into the database file beside the writer.
///
/// SQLite's own checkpoints run inside the commit that fills the log past a threshold: that
/// commit, and every command in its group, then waits while a thousand pages are copied and the
/// file synced. Here a thread of its own checkpoints instead, every 100 ms (`PASSIVE`: it never
/// waits for the writer or for readers), and once more, fully, when the database closes. Beside
/// a writer that never pauses it never reaches the log's end, so the writer finishes the job
/// when the log grows past its limit ([`SqliteConnection::checkpoint`]).
#[derive(Debug)]
pub(crate) struct Checkpointer {
    stop: std::sync::mpsc::SyncSender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    pub(crate) fn start(name: &str, path: PathBuf) -> Result<Self, DbError> {
        let (stop, stopped) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name(format!("{name}-checkpoint"))
            .spawn(move || {
                let mut connection = match SqliteConnection::open_reader(&path, 0).and_then(|mut c| {
                    c.execute_script("PRAGMA query_only = OFF")?;
                    Ok(c)
                }) {
                    Ok(connection) => connection,
                    Err(error) => {
                        tracing::error!(message = "SQLite checkpoints cannot start; the log grows until the next start.", %error);
                        return;
                    }
                };
                loop {
                    let stop = !matches!(
                        stopped.recv_timeout(Duration::from_millis(100)),
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                    );
                    connection.checkpoint();
                    if stop {
                        // The writer has stopped: copy everything and empty the log.
                        let _ = connection.execute_script("PRAGMA wal_checkpoint(TRUNCATE)");
                        return;
                    }
                }
            })
            .map_err(|error| {
                DbError::new(DbErrorKind::Config, "starting the checkpointer", error.to_string())
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Runs a last, full checkpoint and stops (once the writer stopped).
    pub(crate) fn stop(&mut self) {
        let _ = self.stop.try_send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Dropped without close: the thread ends on its own at its next look.
        let _ = self.stop.try_send(());
    }
}

/// Past this size the writer's log is copied by the writer itself, so that it is written from
/// its start again: the log stays about this size (at 10,000 commands/s, about a second of
/// commits). [`DatabaseOptions::sqlite_log_limit`](crate::DatabaseOptions::sqlite_log_limit).
pub(crate) const LOG_LIMIT: u64 = 64 * 1024 * 1024;

/// The log (`-wal` file) beside the database at `path`.
pub(crate) fn log_of(path: &Path) -> PathBuf {
    let mut log = path.as_os_str().to_owned();
    log.push("-wal");
    PathBuf::from(log)
}

/// Reading connections, opened when needed and kept for reuse.
#[derive(Debug)]
pub(crate) struct SqliteReaders {
    path: PathBuf,
    map: u64,
    idle: Mutex<Vec<SqliteConnection>>,
    keep: usize,
}

impl SqliteReaders {
    pub(crate) fn new(path: PathBuf, keep: usize, map: u64) -> Self {
        Self {
            path,
            map,
            idle: Mutex::new(Vec::new()),
            keep,
        }
    }

    /// An idle reading connection, or a new one.
    pub(crate) fn take(&self) -> Result<SqliteConnection, DbError> {
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        match idle {
            Some(connection) => Ok(connection),
            None => SqliteConnection::open_reader(&self.path, self.map),
        }
    }

    /// Keeps `connection` for the next reader, up to the pool's size.
    pub(crate) fn give_back(&self, connection: SqliteConnection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.keep
        {
            idle.push(connection);
        }
    }

    /// Closes the idle connections.
    pub(crate) fn close(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_numbered_question_marks_outside_quotes() {
        assert_eq!(
            to_sqlite_placeholders("SELECT a FROM t WHERE b = $1 AND c = '$2' AND d = $12"),
            "SELECT a FROM t WHERE b = ?1 AND c = '$2' AND d = ?12"
        );
        assert_eq!(to_sqlite_placeholders("SELECT '$'"), "SELECT '$'");
    }

    /// The workspace's `.cargo/config.toml` compiles SQLite with a page cache per connection
    /// and without allocation counts; a build without it would put every connection of the
    /// process back behind the shared cache's mutex.
    #[test]
    fn sqlite_is_built_with_a_page_cache_per_connection() {
        let connection = rusqlite::Connection::open_in_memory().expect("opens");
        let mut statement = connection
            .prepare("PRAGMA compile_options")
            .expect("prepared");
        let options = statement
            .query_map([], |row| row.get::<_, String>(0))
            .expect("listed")
            .collect::<Result<Vec<_>, _>>()
            .expect("read");
        assert!(
            !options
                .iter()
                .any(|option| option == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
        assert!(
            options.iter().any(|option| option == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
    }

    #[test]
    fn urls_without_a_file_are_refused() {
        assert!(file_of("sqlite::memory:").is_err());
        assert!(file_of("sqlite://").is_err());
        let dir = std::env::temp_dir().join("govbus-storage-url-test");
        let path = file_of(&format!("sqlite://{}/x.db?mode=rwc", dir.display())).expect("file");
        assert_eq!(path, dir.join("x.db"));
    }
}
