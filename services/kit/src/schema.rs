//! The tables the kit itself keeps in every service's database.

use crate::db::Migration;

/// Migration component name of the kit's tables.
pub const COMPONENT: &str = "govbus-kit";

/// The outbox, the inbox and idempotency keys.
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
}];
