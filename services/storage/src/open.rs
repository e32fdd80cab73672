//! Opening a service's database: connected, with the storage's own tables and then the
//! service's migrated to their latest versions.

use crate::database::{Database, DatabaseOptions};
use crate::error::DbError;
use crate::migrate::{self, Migration};
use crate::schema;

/// Connects to `url`, applies the kit's migrations and then `component`'s.
pub async fn open(
    url: &str,
    component: &str,
    migrations: &[Migration],
    options: DatabaseOptions,
) -> Result<Database, DbError> {
    let db = Database::open(url, options).await?;
    migrate::apply(&db, schema::COMPONENT, schema::MIGRATIONS).await?;
    migrate::apply(&db, component, migrations).await?;
    Ok(db)
}
