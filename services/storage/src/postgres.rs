//! PostgreSQL through sqlx: one connection per use, statements prepared once per connection.
//!
//! The writer keeps one connection of its own; readers share a small pool of connections kept
//! here rather than sqlx's pool, which tests every connection with a round trip when it is handed
//! back.

use std::str::FromStr;
use std::sync::{Arc, Mutex};

use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, ConnectOptions as _, Connection as _, Postgres};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{DbError, DbErrorKind};
use crate::statement::Statement;
use crate::value::{FromRow, Row, Value, ValueKind};

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 256;

/// The connection options behind a `postgres://` URL.
pub(crate) fn options_of(url: &str) -> Result<PgConnectOptions, DbError> {
    let options = PgConnectOptions::from_str(url).map_err(|error| {
        DbError::new(
            DbErrorKind::Config,
            "reading the PostgreSQL URL",
            error.to_string(),
        )
    })?;
    Ok(options
        .statement_cache_capacity(STATEMENT_CACHE)
        .log_statements(tracing::log::LevelFilter::Trace))
}

/// One PostgreSQL connection.
#[derive(Debug)]
pub(crate) struct PostgresConnection {
    connection: PgConnection,
    /// Set while a statement runs: a connection whose statement was abandoned midway (its
    /// future dropped) is closed rather than reused.
    busy: bool,
}

impl PostgresConnection {
    pub(crate) async fn connect(options: &PgConnectOptions) -> Result<Self, DbError> {
        let connection = options
            .connect()
            .await
            .map_err(|error| DbError::postgres("connecting to PostgreSQL", error))?;
        Ok(Self {
            connection,
            busy: false,
        })
    }

    /// Runs several statements without parameters in one round trip (the simple protocol).
    pub(crate) async fn execute_script(&mut self, script: &str) -> Result<(), DbError> {
        self.busy = true;
        sqlx::raw_sql(AssertSqlSafe(script.to_owned()))
            .execute(&mut self.connection)
            .await
            .map_err(|error| DbError::postgres("running a script", error).with_statement(script))?;
        self.busy = false;
        Ok(())
    }

    /// Runs a script whose text is fixed (savepoints, transaction control).
    pub(crate) async fn execute_static(&mut self, script: &'static str) -> Result<(), DbError> {
        self.busy = true;
        sqlx::raw_sql(script)
            .execute(&mut self.connection)
            .await
            .map_err(|error| DbError::postgres("running a script", error).with_statement(script))?;
        self.busy = false;
        Ok(())
    }

    pub(crate) async fn execute(
        &mut self,
        sql: Statement,
        params: &[Value<'_>],
    ) -> Result<u64, DbError> {
        let text = sql.clone();
        self.busy = true;
        let done = bind_all(sqlx::query(AssertSqlSafe(sql.into_cow())), params)
            .execute(&mut self.connection)
            .await
            .map_err(|error| {
                DbError::postgres("running a statement", error).with_statement(&text)
            })?;
        self.busy = false;
        Ok(done.rows_affected())
    }

    pub(crate) async fn query<T: FromRow>(
        &mut self,
        sql: Statement,
        params: &[Value<'_>],
        limit: usize,
    ) -> Result<Vec<T>, DbError> {
        let text = sql.clone();
        self.busy = true;
        let query = bind_all(sqlx::query(AssertSqlSafe(sql.into_cow())), params);
        let rows = if limit == 1 {
            query
                .fetch_optional(&mut self.connection)
                .await
                .map(|row| row.into_iter().collect::<Vec<_>>())
        } else {
            query.fetch_all(&mut self.connection).await
        }
        .map_err(|error| DbError::postgres("running a query", error).with_statement(&text))?;
        self.busy = false;
        rows.iter()
            .take(limit)
            .map(|row| {
                T::from_row(&Row::postgres(row)).map_err(|error| error.with_statement(&text))
            })
            .collect()
    }

    /// The driver's connection, for the few statements that bind arrays.
    pub(crate) fn raw(&mut self) -> &mut PgConnection {
        &mut self.connection
    }

    /// Whether the connection still answers.
    pub(crate) async fn ping(&mut self) -> bool {
        self.connection.ping().await.is_ok()
    }

    pub(crate) async fn close(self) {
        let _ = self.connection.close().await;
    }
}

fn bind_all<'q>(
    mut query: Query<'q, Postgres, PgArguments>,
    params: &[Value<'q>],
) -> Query<'q, Postgres, PgArguments> {
    for value in params {
        query = match *value {
            Value::Int(value) => query.bind(value),
            Value::Real(value) => query.bind(value),
            Value::Text(value) => query.bind(value),
            Value::Blob(value) => query.bind(value),
            Value::Null(ValueKind::Int) => query.bind(None::<i64>),
            Value::Null(ValueKind::Real) => query.bind(None::<f64>),
            Value::Null(ValueKind::Text) => query.bind(None::<&str>),
            Value::Null(ValueKind::Blob) => query.bind(None::<&[u8]>),
        };
    }
    query
}

/// Connections for readers: at most `max` open at once, idle ones kept for reuse.
#[derive(Debug)]
pub(crate) struct PostgresReaders {
    options: PgConnectOptions,
    idle: Mutex<Vec<PostgresConnection>>,
    permits: Arc<Semaphore>,
}

impl PostgresReaders {
    pub(crate) fn new(options: PgConnectOptions, max: usize) -> Self {
        Self {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max.max(1))),
        }
    }

    /// A connection, waiting while `max` are in use.
    pub(crate) async fn take(&self) -> Result<(PostgresConnection, OwnedSemaphorePermit), DbError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| DbError::closed("waiting for a reading connection"))?;
        let idle = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let connection = match idle {
            Some(connection) => connection,
            None => PostgresConnection::connect(&self.options).await?,
        };
        Ok((connection, permit))
    }

    /// Keeps `connection` for the next reader unless a statement was abandoned on it.
    pub(crate) fn give_back(&self, connection: PostgresConnection) {
        if connection.busy {
            return;
        }
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(connection);
        }
    }

    /// Stops handing out connections and drops the idle ones.
    pub(crate) fn close(&self) {
        self.permits.close();
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }
}
