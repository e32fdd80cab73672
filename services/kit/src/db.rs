//! The service's database: SQLite by default, PostgreSQL when a `postgres://` URL is given.
//!
//! All queries are written once, with `$1, $2, …` placeholders and types both backends share
//! (`BIGINT`, `TEXT`, binary payloads), through sqlx's `Any` driver. Where the two dialects
//! differ (identity columns, binary types), migrations carry one script per backend.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyConnection, AnyPool, Executor, Transaction};
use time::OffsetDateTime;

/// Which database engine is behind a [`Database`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (the zero-set-up default).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// A database error, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names no supported database.
    #[error("unsupported database URL {0:?}: use sqlite://<file> or postgres://…")]
    UnsupportedUrl(String),
    /// The SQLite file's folder could not be created.
    #[error("cannot create the database folder {path}: {source}")]
    Folder {
        /// The folder.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A query or connection failed.
    #[error("{context}: {source}")]
    Sql {
        /// What was being done.
        context: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
}

impl DbError {
    /// Wraps a driver error with context.
    pub fn sql(context: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Sql { context, source }
    }

    /// True when the error is a unique-constraint violation (a concurrent duplicate).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Self::Sql {
                source: sqlx::Error::Database(error),
                ..
            } => error.is_unique_violation(),
            _ => false,
        }
    }

    /// True when retrying may succeed: the database is busy, locked or unreachable.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Sql { source, .. } => match source {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(error) => {
                    let message = error.message();
                    // SQLITE_BUSY / SQLITE_LOCKED, PostgreSQL serialization and connection errors.
                    message.contains("database is locked")
                        || message.contains("database table is locked")
                        || error.code().is_some_and(|code| {
                            matches!(&*code, "5" | "6" | "517" | "40001" | "40P01" | "57P01")
                                || code.starts_with("08")
                        })
                }
                _ => false,
            },
            _ => false,
        }
    }
}

/// One schema change, with a script for each backend.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Applied in increasing order; never reuse or renumber.
    pub version: i64,
    /// What it does.
    pub description: &'static str,
    /// The SQLite script (may hold several statements).
    pub sqlite: &'static str,
    /// The PostgreSQL script (may hold several statements).
    pub postgres: &'static str,
}

/// A connection pool to the service's database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    /// SQLite lets one writer in at a time and makes the others sleep and retry (its busy
    /// handler backs off up to 100 ms), which collapses throughput under concurrent handlers.
    /// Writers of this process queue here instead, in order, and enter SQLite one at a time.
    write_turn: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// A write transaction: commit it, or drop it to roll back. On SQLite it holds the process's
/// write turn until it ends.
#[derive(Debug)]
pub struct WriteTransaction {
    inner: Transaction<'static, Any>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTransaction {
    /// Commits.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.inner.commit().await
    }

    /// Rolls back (dropping the transaction does too, without waiting).
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.inner.rollback().await
    }
}

impl std::ops::Deref for WriteTransaction {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.inner
    }
}

impl std::ops::DerefMut for WriteTransaction {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.inner
    }
}

impl Database {
    /// Connects to `url`: `sqlite://path/to/file.db` (created if missing) or `postgres://…`.
    ///
    /// SQLite runs in WAL mode with a busy timeout, so readers never block the writer and a
    /// writer waits for another instead of failing.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        install_default_drivers();
        let backend: Backend = url.parse()?;
        // No ping before each use: it cost a round trip per transaction (on SQLite, a hop to the
        // connection's worker thread), and a broken connection fails the statement instead.
        let mut options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(10))
            .test_before_acquire(false);
        let url = match backend {
            Backend::Sqlite => {
                options = options.max_connections(8).after_connect(|connection, _| {
                    Box::pin(async move {
                        connection
                            .execute(
                                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                 PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;",
                            )
                            .await?;
                        Ok(())
                    })
                });
                sqlite_url(url)?
            }
            Backend::Postgres => {
                options = options.max_connections(16);
                url.to_owned()
            }
        };
        let pool = options
            .connect(&url)
            .await
            .map_err(DbError::sql("connecting to the database"))?;
        let write_turn =
            (backend == Backend::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(())));
        Ok(Self {
            pool,
            backend,
            write_turn,
        })
    }

    /// The engine behind this database.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for queries outside a transaction.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Starts a write transaction.
    ///
    /// On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`): a transaction that reads
    /// and then writes could otherwise fail when another writer committed in between.
    /// The other writers of this process wait their turn in order (see [`Database`]).
    pub async fn begin(&self) -> Result<WriteTransaction, DbError> {
        let turn = match &self.write_turn {
            Some(turn) => Some(Arc::clone(turn).lock_owned().await),
            None => None,
        };
        let transaction = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        };
        Ok(WriteTransaction {
            inner: transaction.map_err(DbError::sql("starting a transaction"))?,
            _turn: turn,
        })
    }

    /// Applies the `migrations` of `component` that are not applied yet, each in its own
    /// transaction. Safe to run from several instances at once.
    pub async fn migrate(&self, component: &str, migrations: &[Migration]) -> Result<(), DbError> {
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS govbus_migrations (
                component TEXT NOT NULL,
                version BIGINT NOT NULL,
                description TEXT NOT NULL,
                applied_at BIGINT NOT NULL,
                PRIMARY KEY (component, version)
            )",
        )
        .execute(&self.pool)
        .await
        .map_err(DbError::sql("creating the migrations table"))?;
        for migration in migrations {
            let mut transaction = self.begin().await?;
            if self.backend == Backend::Postgres {
                // Serialises concurrent migrators; released at commit.
                sqlx::query("SELECT pg_advisory_xact_lock(7243019)")
                    .execute(&mut *transaction)
                    .await
                    .map_err(DbError::sql("locking for migration"))?;
            }
            let applied: Option<(i64,)> = sqlx::query_as(
                "SELECT version FROM govbus_migrations WHERE component = $1 AND version = $2",
            )
            .bind(component)
            .bind(migration.version)
            .fetch_optional(&mut *transaction)
            .await
            .map_err(DbError::sql("reading applied migrations"))?;
            if applied.is_some() {
                continue;
            }
            let script = match self.backend {
                Backend::Sqlite => migration.sqlite,
                Backend::Postgres => migration.postgres,
            };
            sqlx::raw_sql(script)
                .execute(&mut *transaction)
                .await
                .map_err(DbError::sql("applying a migration"))?;
            sqlx::query(
                "INSERT INTO govbus_migrations (component, version, description, applied_at)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(component)
            .bind(migration.version)
            .bind(migration.description)
            .bind(now_micros())
            .execute(&mut *transaction)
            .await
            .map_err(DbError::sql("recording a migration"))?;
            transaction
                .commit()
                .await
                .map_err(DbError::sql("committing a migration"))?;
            tracing::info!(
                message = "Database migration applied.",
                component,
                version = migration.version,
                description = migration.description,
            );
        }
        Ok(())
    }

    /// Closes every connection.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Makes sure the SQLite file can be created: its folder exists and `mode=rwc` is set.
fn sqlite_url(url: &str) -> Result<String, DbError> {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:"
        && let Some(parent) = Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|source| DbError::Folder {
            path: parent.display().to_string(),
            source,
        })?;
    }
    let mut url = format!("sqlite://{path}");
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if !params.iter().any(|p| p.starts_with("mode=")) {
        params.push("mode=rwc");
    }
    url.push('?');
    url.push_str(&params.join("&"));
    Ok(url)
}

/// Now, as microseconds since the Unix epoch: how every timestamp is stored.
pub fn now_micros() -> i64 {
    to_micros(OffsetDateTime::now_utc())
}

/// A timestamp as microseconds since the Unix epoch.
pub fn to_micros(time: OffsetDateTime) -> i64 {
    i64::try_from(time.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX)
}

/// Microseconds since the Unix epoch as a timestamp.
pub fn from_micros(micros: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl FromStr for Backend {
    type Err = DbError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(DbError::UnsupportedUrl(url.to_owned()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_get_create_mode() {
        let dir = std::env::temp_dir().join("govbus-kit-url-test");
        let url = format!("sqlite://{}/x.db", dir.display());
        assert_eq!(
            sqlite_url(&url).expect("valid"),
            format!("sqlite://{}/x.db?mode=rwc", dir.display())
        );
        assert!(
            sqlite_url("sqlite://data.db?mode=ro")
                .expect("valid")
                .ends_with("?mode=ro")
        );
    }

    #[test]
    fn micros_round_trip() {
        let time =
            OffsetDateTime::from_unix_timestamp_nanos(1_732_780_800_123_456_000).expect("valid");
        assert_eq!(from_micros(to_micros(time)), time);
    }
}
