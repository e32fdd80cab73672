//! The gateway's own database: the registry of applications, the applications' event types
//! and publications, the subscriptions; SQLite by default, PostgreSQL for several gateways.

use govbus_storage::{Database, DbError, Migration};

/// The migrations' component name.
pub const COMPONENT: &str = "gateway";

/// Its migrations, in order.
pub const MIGRATIONS: &[Migration] = &[
    crate::applications::MIGRATION,
    crate::pubsub::MIGRATION,
    crate::pubsub::subscriptions::MIGRATION,
    crate::pubsub::subscriptions::PUSH_MIGRATION,
];

/// Opens the gateway's database at `url` (`sqlite://…` or `postgres://…`), migrated.
pub async fn open(url: &str) -> Result<Database, DbError> {
    govbus_storage::open(
        url,
        COMPONENT,
        MIGRATIONS,
        govbus_storage::DatabaseOptions {
            name: COMPONENT.to_owned(),
            ..govbus_storage::DatabaseOptions::default()
        },
    )
    .await
}
