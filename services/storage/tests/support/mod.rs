//! What the storage tests share: a database of their own with a test table, a bus and a
//! publisher for identity's events.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use govbus_bus::{Bus, BusOptions, Causality, Publisher, ServiceAdapter, StreamSettings};
use govbus_harness::{NatsServer, TestBackend, TestDatabase};
use govbus_proto::identity::v1::CitizenRegistered;
use govbus_storage::{Database, DatabaseOptions, DbError, Migration};
use tokio::sync::oneshot;

/// A table for the tests' own commands.
pub const ACCOUNTS: &[Migration] = &[Migration {
    version: 1,
    description: "accounts",
    sqlite: "CREATE TABLE accounts (name TEXT PRIMARY KEY, balance BIGINT NOT NULL, note TEXT NOT NULL DEFAULT '')",
    postgres: "CREATE TABLE accounts (name TEXT PRIMARY KEY, balance BIGINT NOT NULL, note TEXT NOT NULL DEFAULT '')",
}];

pub async fn database(backend: TestBackend) -> (TestDatabase, Database) {
    let test_db = TestDatabase::new(backend).await.expect("test database");
    let db = open(&test_db).await;
    (test_db, db)
}

/// The test database opened with a writer of one connection on either backend, so that a job
/// holding it holds back every other command (on PostgreSQL the writer has several otherwise).
pub async fn database_with_one_writer(backend: TestBackend) -> (TestDatabase, Database) {
    let test_db = TestDatabase::new(backend).await.expect("test database");
    let db = open_with(&test_db, 1).await;
    (test_db, db)
}

/// Holds the writer inside a job (which first runs `statement`, if given) until the returned
/// sender fires, so that the commands handed over meanwhile queue up and go into one group
/// (with a writer of one connection: [`database_with_one_writer`]).
pub async fn hold_writer_after(
    db: &Database,
    statement: Option<&'static str>,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (release, released) = oneshot::channel::<()>();
    let (entered, inside) = oneshot::channel::<()>();
    let released = Arc::new(tokio::sync::Mutex::new(Some(released)));
    let entered = Arc::new(std::sync::Mutex::new(Some(entered)));
    let db = db.clone();
    let holder = tokio::spawn(async move {
        db.write(async move |tx| {
            if let Some(statement) = statement {
                tx.execute(statement, &[]).await?;
            }
            if let Some(entered) = entered.lock().ok().and_then(|mut e| e.take()) {
                let _ = entered.send(());
            }
            if let Some(released) = released.lock().await.take() {
                let _ = released.await;
            }
            Ok::<(), DbError>(())
        })
        .await
        .expect("holding job");
    });
    inside.await.expect("the writer runs the holding job");
    (release, holder)
}

pub async fn hold_writer(db: &Database) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    hold_writer_after(db, None).await
}

/// Runs `statement` (no parameters) as a command of its own.
pub async fn execute(db: &Database, statement: &'static str) -> Result<(), DbError> {
    db.write(async move |tx| tx.execute(statement, &[]).await.map(|_| ()))
        .await
}

/// Another handle on the same database, with a writer of its own (as another process has).
pub async fn open(test_db: &TestDatabase) -> Database {
    open_with(
        test_db,
        DatabaseOptions::default().writer_connections_postgres,
    )
    .await
}

async fn open_with(test_db: &TestDatabase, writer_connections_postgres: usize) -> Database {
    govbus_storage::open(
        test_db.url(),
        "storage-tests",
        ACCOUNTS,
        DatabaseOptions {
            name: "storage-tests".to_owned(),
            writer_connections_postgres,
            ..DatabaseOptions::default()
        },
    )
    .await
    .expect("database opens")
}

pub async fn bus(server: &NatsServer) -> (Bus, Publisher) {
    bus_with(server, StreamSettings::default()).await
}

pub async fn bus_with(server: &NatsServer, settings: StreamSettings) -> (Bus, Publisher) {
    let bus = Bus::connect(
        BusOptions::new(server.client_url())
            .client_name("storage-tests")
            .request_timeout(Duration::from_millis(500))
            .stream_settings(settings),
    )
    .await
    .expect("bus connects");
    let identity = ServiceAdapter::new("identity")
        .publishes::<CitizenRegistered>()
        .start(&bus)
        .await
        .expect("identity stream provisioned");
    (bus, identity.publisher().clone())
}

/// An event about citizen `aggregate`, numbered `n` (its birth year carries the number, so the
/// stream can be checked for order).
pub fn registered(aggregate: usize, n: u32) -> CitizenRegistered {
    CitizenRegistered {
        citizen_ref: format!("warga-{aggregate}"),
        kelurahan_code: "35.73.02.1001".to_owned(),
        birth_year: n,
        sex: 1,
    }
}

/// Commits one command per event, each with one event; returns the event ids in order.
pub async fn commit_events(
    db: &Database,
    publisher: &Publisher,
    events: impl IntoIterator<Item = CitizenRegistered>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for event in events {
        let encoded = publisher
            .encode(&event, &Causality::root())
            .expect("encodes");
        ids.push(encoded.id().to_owned());
        db.write(async move |tx| {
            tx.enqueue(encoded.clone());
            Ok::<(), DbError>(())
        })
        .await
        .expect("committed");
    }
    ids
}

/// Commits `events` in commands of `per_command` events each; returns the event ids in order.
pub async fn commit_in_batches(
    db: &Database,
    publisher: &Publisher,
    events: Vec<CitizenRegistered>,
    per_command: usize,
) -> Vec<String> {
    let mut ids = Vec::new();
    for chunk in events.chunks(per_command.max(1)) {
        let encoded: Vec<_> = chunk
            .iter()
            .map(|event| {
                publisher
                    .encode(event, &Causality::root())
                    .expect("encodes")
            })
            .collect();
        ids.extend(encoded.iter().map(|event| event.id().to_owned()));
        db.write(async move |tx| {
            for event in &encoded {
                tx.enqueue(event.clone());
            }
            Ok::<(), DbError>(())
        })
        .await
        .expect("committed");
    }
    ids
}

/// Messages in identity's stream.
pub async fn stream_messages(bus: &Bus) -> u64 {
    let mut stream = bus
        .jetstream()
        .get_stream("GOVBUS_IDENTITY")
        .await
        .expect("stream");
    stream.info().await.expect("info").state.messages
}

/// Every message of identity's stream, in stream order: (ce-id, ce-subject, the event).
pub async fn stream_contents(bus: &Bus) -> Vec<(String, String, CitizenRegistered)> {
    use prost::Message as _;
    let stream = bus
        .jetstream()
        .get_stream("GOVBUS_IDENTITY")
        .await
        .expect("stream");
    let last = stream.cached_info().state.last_sequence;
    let mut contents = Vec::new();
    for sequence in 1..=last {
        let message = stream.get_raw_message(sequence).await.expect("message");
        let header = |name: &str| {
            message
                .headers
                .get(name)
                .map(|value| value.as_str().to_owned())
                .unwrap_or_default()
        };
        contents.push((
            header("ce-id"),
            header("ce-subject"),
            CitizenRegistered::decode(message.payload.as_ref()).expect("payload"),
        ));
    }
    contents
}

pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..3000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for: {what}");
}
