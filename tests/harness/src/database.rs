//! A private database per test: a SQLite file in a temporary folder, or a PostgreSQL schema of
//! its own in the `test` database, dropped afterwards.
//!
//! PostgreSQL is found at `GOVBUS_TEST_POSTGRES_URL`, by default
//! `postgres://postgres@127.0.0.1:5432/test` (trust authentication).

use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::{Connection, Executor, PgConnection};
use tempfile::TempDir;

use crate::HarnessError;

/// The default PostgreSQL database for tests.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Which engine a test database runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    /// A SQLite file.
    Sqlite,
    /// A schema in PostgreSQL.
    Postgres,
}

/// A database that belongs to one test.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    backend: TestBackend,
    _folder: Option<TempDir>,
    schema: Option<(String, String)>,
}

impl TestDatabase {
    /// A fresh database on `backend`.
    pub async fn new(backend: TestBackend) -> Result<Self, HarnessError> {
        match backend {
            TestBackend::Sqlite => Self::sqlite(),
            TestBackend::Postgres => Self::postgres().await,
        }
    }

    /// A SQLite file in a new temporary folder (created on first connection).
    pub fn sqlite() -> Result<Self, HarnessError> {
        let folder = tempfile::Builder::new()
            .prefix("govbus-db-")
            .tempdir()
            .map_err(HarnessError::io("creating the database folder"))?;
        Ok(Self {
            url: format!("sqlite://{}/service.db", folder.path().display()),
            backend: TestBackend::Sqlite,
            _folder: Some(folder),
            schema: None,
        })
    }

    /// A new, empty schema in PostgreSQL; connections through [`url`](Self::url) use it.
    pub async fn postgres() -> Result<Self, HarnessError> {
        let admin_url = std::env::var("GOVBUS_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default();
        let schema = format!("govbus_test_{}_{nanos}", std::process::id());
        let mut connection = PgConnection::connect(&admin_url).await.map_err(|error| {
            HarnessError::Database(format!(
                "cannot reach PostgreSQL at {admin_url} (set GOVBUS_TEST_POSTGRES_URL): {error}"
            ))
        })?;
        connection
            .execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .await
            .map_err(|error| {
                HarnessError::Database(format!("creating schema {schema}: {error}"))
            })?;
        let _ = connection.close().await;
        let separator = if admin_url.contains('?') { '&' } else { '?' };
        Ok(Self {
            url: format!("{admin_url}{separator}options=-c%20search_path%3D{schema}"),
            backend: TestBackend::Postgres,
            _folder: None,
            schema: Some((admin_url, schema)),
        })
    }

    /// The URL a service connects with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The engine.
    pub fn backend(&self) -> TestBackend {
        self.backend
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, schema)) = self.schema.take() else {
            return;
        };
        // Drop cannot await, and may run inside a runtime: use a thread with its own.
        let dropper = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(mut connection) = PgConnection::connect(&admin_url).await {
                    let _ = connection
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP SCHEMA IF EXISTS {schema} CASCADE"
                        )))
                        .await;
                    let _ = connection.close().await;
                }
            });
        });
        let _ = dropper.join();
    }
}

/// Runs each named `async fn scenario(backend: TestBackend)` of the calling module once per
/// backend, as the tests `sqlite::scenario` and `postgres::scenario`.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::TestBackend::Sqlite).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario($crate::TestBackend::Postgres).await;
                }
            )+
        }
    };
}
