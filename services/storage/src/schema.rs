//! The tables kept in every service's database beside the service's own.

use crate::migrate::Migration;

/// Migration component name of these tables (kept from when they lived in `govbus-kit`, so
/// databases created then carry on).
pub const COMPONENT: &str = "govbus-kit";

/// The outbox, the inbox, idempotency keys, and the relay's lease and position.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "outbox, inbox and idempotency keys",
    sqlite: "
        CREATE TABLE outbox (
            position INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id TEXT NOT NULL UNIQUE,
            subject TEXT NOT NULL,
            headers TEXT NOT NULL,
            payload BLOB NOT NULL,
            created_at BIGINT NOT NULL,
            sent_at BIGINT,
            stream_sequence BIGINT,
            failed_at BIGINT,
            last_error TEXT
        );
        CREATE INDEX outbox_pending ON outbox (position) WHERE sent_at IS NULL AND failed_at IS NULL;
        CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
        CREATE TABLE inbox (
            consumer TEXT NOT NULL,
            event_id TEXT NOT NULL,
            processed_at BIGINT NOT NULL,
            PRIMARY KEY (consumer, event_id)
        );
        CREATE INDEX inbox_processed ON inbox (processed_at);
        CREATE TABLE idempotency_keys (
            scope TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            response BLOB NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (scope, idempotency_key)
        );
    ",
    postgres: "
        CREATE TABLE outbox (
            position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id TEXT NOT NULL UNIQUE,
            subject TEXT NOT NULL,
            headers TEXT NOT NULL,
            payload BYTEA NOT NULL,
            created_at BIGINT NOT NULL,
            sent_at BIGINT,
            stream_sequence BIGINT,
            failed_at BIGINT,
            last_error TEXT
        );
        CREATE INDEX outbox_pending ON outbox (position) WHERE sent_at IS NULL AND failed_at IS NULL;
        CREATE INDEX outbox_sent ON outbox (sent_at) WHERE sent_at IS NOT NULL;
        CREATE TABLE inbox (
            consumer TEXT NOT NULL,
            event_id TEXT NOT NULL,
            processed_at BIGINT NOT NULL,
            PRIMARY KEY (consumer, event_id)
        );
        CREATE INDEX inbox_processed ON inbox (processed_at);
        CREATE TABLE idempotency_keys (
            scope TEXT NOT NULL,
            idempotency_key TEXT NOT NULL,
            request_hash TEXT NOT NULL,
            response BYTEA NOT NULL,
            created_at BIGINT NOT NULL,
            PRIMARY KEY (scope, idempotency_key)
        );
    ",
},
Migration {
    version: 2,
    description: "the relay's lease and published position; idempotency keys claimed first; retention indexes",
    sqlite: RELAY_LEASE,
    postgres: RELAY_LEASE,
}];

/// One row per outbox: who relays it (a lease, so that one process publishes at a time) and how
/// far it is published (every position up to `published_position` is stored in JetStream or
/// failed for good; `stream_sequence` is where the last of them was stored). Rows are no longer
/// marked one by one. Seeded from the rows already marked sent.
const RELAY_LEASE: &str = "
    CREATE TABLE outbox_relay (
        name TEXT PRIMARY KEY,
        holder TEXT,
        lease_until BIGINT NOT NULL,
        published_position BIGINT NOT NULL,
        stream_sequence BIGINT NOT NULL
    );
    WITH watermark AS (
        SELECT COALESCE(
            (SELECT MIN(position) - 1 FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL),
            (SELECT MAX(position) FROM outbox),
            0) AS position
    )
    INSERT INTO outbox_relay (name, holder, lease_until, published_position, stream_sequence)
    SELECT 'outbox', NULL, 0, watermark.position,
           COALESCE((SELECT MAX(stream_sequence) FROM outbox
                     WHERE sent_at IS NOT NULL AND outbox.position <= watermark.position), 0)
    FROM watermark;
    DROP INDEX outbox_pending;
    DROP INDEX outbox_sent;
    ALTER TABLE idempotency_keys ADD COLUMN completed BIGINT NOT NULL DEFAULT 1;
    CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
";
