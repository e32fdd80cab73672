//! A service's database with what runs beside it: the outbox relay and the pruner.

use govbus_bus::Publisher;

use crate::database::{Database, DatabaseOptions};
use crate::error::DbError;
use crate::migrate::Migration;
use crate::outbox::{OutboxRelay, RelayHandle, RelaySettings};
use crate::retention::{Pruner, RetentionSettings};

/// How a service's storage runs.
#[derive(Debug, Clone, Default)]
pub struct StorageSettings {
    /// The database (its name is set to the service's when opened).
    pub database: DatabaseOptions,
    /// The outbox relay.
    pub relay: RelaySettings,
    /// How long processed-event ids, idempotency keys and published outbox rows are kept.
    pub retention: RetentionSettings,
}

/// A service's running storage.
#[derive(Debug)]
pub struct Storage {
    db: Database,
    relay: RelayHandle,
    pruner: Pruner,
}

impl Storage {
    /// Opens `url` for `service`, applying the shared tables' migrations and then `migrations`.
    pub async fn open(
        url: &str,
        service: &str,
        migrations: &[Migration],
        settings: &StorageSettings,
    ) -> Result<Database, DbError> {
        let options = DatabaseOptions {
            name: service.to_owned(),
            ..settings.database.clone()
        };
        crate::open::open(url, service, migrations, options).await
    }

    /// Starts relaying `db`'s outbox with `publisher` and pruning expired rows.
    pub fn start(db: Database, publisher: Publisher, settings: StorageSettings) -> Self {
        let relay = OutboxRelay::new(db.clone(), publisher, settings.relay).spawn();
        let pruner = Pruner::spawn(db.clone(), settings.retention);
        Self { db, relay, pruner }
    }

    /// The database.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Whether this process publishes the outbox now (holds its lease).
    pub fn relays(&self) -> bool {
        self.relay.holds_lease()
    }

    /// Stops the relay (recording how far it got; unsent events wait for the next start) and
    /// the pruner, then closes the database once the commands handed to it have committed.
    pub async fn stop(self) {
        self.relay.shutdown().await;
        self.pruner.shutdown().await;
        self.db.close().await;
    }
}
