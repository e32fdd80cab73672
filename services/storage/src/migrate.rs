//! Schema migrations: numbered scripts per component, applied once, in order, by the writer.

use crate::backend::Backend;
use crate::database::Database;
use crate::error::DbError;
use crate::time::now_micros;

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

/// Serialises migrators of one PostgreSQL database (released at commit).
const MIGRATION_LOCK: &str = "SELECT pg_advisory_xact_lock(7243019)";

/// Applies the `migrations` of `component` that are not applied yet, each in its own commit.
/// Safe to run from several processes at once.
pub async fn apply(
    db: &Database,
    component: &str,
    migrations: &[Migration],
) -> Result<(), DbError> {
    db.write(async |tx| {
        // Two processes creating the table at once collide in PostgreSQL's catalog even with
        // IF NOT EXISTS: they take turns.
        if tx.backend() == Backend::Postgres {
            tx.execute_script(MIGRATION_LOCK).await?;
        }
        tx.execute_script(
            "CREATE TABLE IF NOT EXISTS govbus_migrations (
                component TEXT NOT NULL,
                version BIGINT NOT NULL,
                description TEXT NOT NULL,
                applied_at BIGINT NOT NULL,
                PRIMARY KEY (component, version)
            )",
        )
        .await
    })
    .await?;
    for migration in migrations.iter().copied() {
        let name = component.to_owned();
        let applied = db
            .write(async move |tx| {
                if tx.backend() == Backend::Postgres {
                    tx.execute_script(MIGRATION_LOCK).await?;
                }
                let done: Option<(i64,)> = tx
                    .query_opt(
                        "SELECT version FROM govbus_migrations WHERE component = $1 AND version = $2",
                        &[name.as_str().into(), migration.version.into()],
                    )
                    .await?;
                if done.is_some() {
                    return Ok::<bool, DbError>(false);
                }
                let script = match tx.backend() {
                    Backend::Sqlite => migration.sqlite,
                    Backend::Postgres => migration.postgres,
                };
                tx.execute_script(script).await?;
                tx.execute(
                    "INSERT INTO govbus_migrations (component, version, description, applied_at)
                     VALUES ($1, $2, $3, $4)",
                    &[
                        name.as_str().into(),
                        migration.version.into(),
                        migration.description.into(),
                        now_micros().into(),
                    ],
                )
                .await?;
                Ok(true)
            })
            .await?;
        if applied {
            tracing::info!(
                message = "Database migration applied.",
                component,
                version = migration.version,
                description = migration.description,
            );
        }
    }
    Ok(())
}
