//! Running statements: [`Sql`], a connection on either backend, as a command's transaction or as
//! a reader.
//!
//! A service's store is written once against `Sql`, with `$1, $2, …` placeholders and the types
//! both backends share (`BIGINT`, `TEXT`, bytes). On SQLite a statement runs on the calling
//! thread (the writer's own, or the reader's task), with no hand-off to another thread; on
//! PostgreSQL it is one round trip on the connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::OwnedSemaphorePermit;

use crate::backend::Backend;
use crate::error::{DbError, DbErrorKind};
use crate::postgres::{PostgresConnection, PostgresReaders};
use crate::sqlite::{SqliteConnection, SqliteReaders};
use crate::statement::Statement;
use crate::value::{FromRow, Value};

/// A connection to the service's database: a command's transaction (inside
/// [`Database::write`](crate::Database::write)) or a reader ([`Database::read`](crate::Database::read)).
///
/// A statement that fails inside a command fails the whole command: the writer rolls its
/// savepoint back and answers with that error even if the command went on. Where a conflict is
/// expected, write the statement so that it cannot fail (`INSERT … ON CONFLICT DO NOTHING`, then
/// look at the rows it changed).
#[derive(Debug)]
pub struct Sql<'c> {
    connection: Handle<'c>,
    failure: Option<DbError>,
}

#[derive(Debug)]
enum Handle<'c> {
    SqliteWriter(&'c mut SqliteConnection),
    SqliteReader(PooledSqlite),
    PostgresWriter(&'c mut PostgresConnection),
    PostgresReader(PooledPostgres),
}

impl<'c> Sql<'c> {
    pub(crate) fn sqlite_writer(connection: &'c mut SqliteConnection) -> Self {
        Self {
            connection: Handle::SqliteWriter(connection),
            failure: None,
        }
    }

    pub(crate) fn postgres_writer(connection: &'c mut PostgresConnection) -> Self {
        Self {
            connection: Handle::PostgresWriter(connection),
            failure: None,
        }
    }
}

impl Sql<'static> {
    pub(crate) fn sqlite_reader(connection: SqliteConnection, pool: Arc<SqliteReaders>) -> Self {
        Self {
            connection: Handle::SqliteReader(PooledSqlite {
                connection: Some(connection),
                pool,
            }),
            failure: None,
        }
    }

    pub(crate) fn postgres_reader(
        connection: PostgresConnection,
        permit: OwnedSemaphorePermit,
        pool: Arc<PostgresReaders>,
    ) -> Self {
        Self {
            connection: Handle::PostgresReader(PooledPostgres {
                connection: Some(connection),
                pool,
                _permit: permit,
            }),
            failure: None,
        }
    }
}

impl Sql<'_> {
    /// The engine behind this connection, for the rare statement that differs.
    pub fn backend(&self) -> Backend {
        match self.connection {
            Handle::SqliteWriter(_) | Handle::SqliteReader(_) => Backend::Sqlite,
            Handle::PostgresWriter(_) | Handle::PostgresReader(_) => Backend::Postgres,
        }
    }

    /// Runs one statement; returns how many rows it changed.
    pub async fn execute(
        &mut self,
        sql: impl Into<Statement>,
        params: &[Value<'_>],
    ) -> Result<u64, DbError> {
        let sql = sql.into();
        let outcome = match &mut self.connection {
            Handle::SqliteWriter(connection) => connection.execute(&sql, params),
            Handle::SqliteReader(pooled) => match pooled.connection.as_mut() {
                Some(connection) => connection.execute(&sql, params),
                None => Err(DbError::closed("running a statement")),
            },
            Handle::PostgresWriter(connection) => connection.execute(sql, params).await,
            Handle::PostgresReader(pooled) => match pooled.connection.as_mut() {
                Some(connection) => connection.execute(sql, params).await,
                None => Err(DbError::closed("running a statement")),
            },
        };
        self.remember(outcome)
    }

    /// The first row the query returns, if any.
    pub async fn query_opt<T: FromRow>(
        &mut self,
        sql: impl Into<Statement>,
        params: &[Value<'_>],
    ) -> Result<Option<T>, DbError> {
        let rows = self.query(sql.into(), params, 1).await?;
        Ok(rows.into_iter().next())
    }

    /// The first row the query returns; an error if there is none.
    pub async fn query_one<T: FromRow>(
        &mut self,
        sql: impl Into<Statement>,
        params: &[Value<'_>],
    ) -> Result<T, DbError> {
        let sql = sql.into();
        let head = sql.clone();
        match self.query_opt(sql, params).await? {
            Some(row) => Ok(row),
            None => self.remember(Err(DbError::new(
                DbErrorKind::Query,
                "reading a row",
                "the query returned no row",
            )
            .with_statement(&head))),
        }
    }

    /// Every row the query returns.
    pub async fn query_all<T: FromRow>(
        &mut self,
        sql: impl Into<Statement>,
        params: &[Value<'_>],
    ) -> Result<Vec<T>, DbError> {
        self.query(sql.into(), params, usize::MAX).await
    }

    /// Like [`query_opt`](Self::query_opt), locking the rows read until the command commits
    /// (`FOR UPDATE` on PostgreSQL; SQLite's single writer already excludes every other). Read
    /// what a command is about to change this way, so that concurrent commands on the same rows
    /// (in other processes too) run one after the other instead of both acting on what they
    /// read.
    pub async fn query_opt_for_update<T: FromRow>(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
    ) -> Result<Option<T>, DbError> {
        let sql = self.for_update(sql);
        self.query_opt(sql, params).await
    }

    /// Like [`query_all`](Self::query_all), locking the rows read (see
    /// [`query_opt_for_update`](Self::query_opt_for_update)).
    pub async fn query_all_for_update<T: FromRow>(
        &mut self,
        sql: &'static str,
        params: &[Value<'_>],
    ) -> Result<Vec<T>, DbError> {
        let sql = self.for_update(sql);
        self.query_all(sql, params).await
    }

    /// Runs several statements without parameters (migrations).
    pub async fn execute_script(&mut self, script: &str) -> Result<(), DbError> {
        let outcome = match &mut self.connection {
            Handle::SqliteWriter(connection) => connection.execute_script(script),
            Handle::SqliteReader(pooled) => match pooled.connection.as_mut() {
                Some(connection) => connection.execute_script(script),
                None => Err(DbError::closed("running a script")),
            },
            Handle::PostgresWriter(connection) => connection.execute_script(script).await,
            Handle::PostgresReader(pooled) => match pooled.connection.as_mut() {
                Some(connection) => connection.execute_script(script).await,
                None => Err(DbError::closed("running a script")),
            },
        };
        self.remember(outcome)
    }

    /// The first error a statement on this connection returned since the last call.
    pub(crate) fn take_failure(&mut self) -> Option<DbError> {
        self.failure.take()
    }

    async fn query<T: FromRow>(
        &mut self,
        sql: Statement,
        params: &[Value<'_>],
        limit: usize,
    ) -> Result<Vec<T>, DbError> {
        let outcome = match &mut self.connection {
            Handle::SqliteWriter(connection) => connection.query(&sql, params, limit),
            Handle::SqliteReader(pooled) => match pooled.connection.as_mut() {
                Some(connection) => connection.query(&sql, params, limit),
                None => Err(DbError::closed("running a query")),
            },
            Handle::PostgresWriter(connection) => connection.query(sql, params, limit).await,
            Handle::PostgresReader(pooled) => match pooled.connection.as_mut() {
                Some(connection) => connection.query(sql, params, limit).await,
                None => Err(DbError::closed("running a query")),
            },
        };
        self.remember(outcome)
    }

    fn for_update(&self, sql: &'static str) -> Statement {
        match self.backend() {
            Backend::Sqlite => Statement::from(sql),
            Backend::Postgres => Statement::from(with_for_update(sql)),
        }
    }

    fn remember<T>(&mut self, outcome: Result<T, DbError>) -> Result<T, DbError> {
        if let Err(error) = &outcome
            && self.failure.is_none()
        {
            self.failure = Some(error.clone());
        }
        outcome
    }
}

/// `sql` followed by `FOR UPDATE`, built once per statement: statements are literals, so the
/// texts kept are as many as the program has.
fn with_for_update(sql: &'static str) -> &'static str {
    static TEXTS: OnceLock<Mutex<HashMap<&'static str, &'static str>>> = OnceLock::new();
    let mut texts = TEXTS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    texts
        .entry(sql)
        .or_insert_with(|| Box::leak(format!("{sql} FOR UPDATE").into_boxed_str()))
}

/// A reading SQLite connection, handed back to its pool when dropped.
#[derive(Debug)]
struct PooledSqlite {
    connection: Option<SqliteConnection>,
    pool: Arc<SqliteReaders>,
}

impl Drop for PooledSqlite {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.pool.give_back(connection);
        }
    }
}

/// A reading PostgreSQL connection, handed back to its pool when dropped.
#[derive(Debug)]
struct PooledPostgres {
    connection: Option<PostgresConnection>,
    pool: Arc<PostgresReaders>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for PooledPostgres {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.pool.give_back(connection);
        }
    }
}
