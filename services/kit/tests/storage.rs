//! The outbox, the relay, the inbox and idempotency keys on SQLite and on PostgreSQL, with a
//! real nats-server.

use std::time::Duration;

use govbus_bus::{Bus, BusOptions, Causality, Publisher, ServiceAdapter};
use govbus_harness::{NatsServer, TestBackend, TestDatabase};
use govbus_kit::outbox::{self, OutboxRelay, RelaySettings};
use govbus_kit::{Database, IdempotencyError, IdempotentRequest, inbox, open_database};
use govbus_proto::identity::v1::CitizenRegistered;

govbus_harness::on_both_backends!(
    migrations_can_run_twice,
    the_relay_sends_committed_events_once,
    a_rolled_back_command_publishes_nothing,
    events_wait_while_nats_is_down_and_flow_when_it_returns,
    a_refused_event_is_kept_as_failed_and_blocks_nothing,
    the_inbox_claims_each_event_once,
    a_batch_claims_each_event_once_in_one_statement,
    idempotency_keys_return_the_first_response,
);

async fn database(backend: TestBackend) -> (TestDatabase, Database) {
    let test_db = TestDatabase::new(backend).await.expect("test database");
    let db = open_database(test_db.url(), "kit-tests", &[])
        .await
        .expect("database opens");
    (test_db, db)
}

async fn bus(server: &NatsServer) -> (Bus, Publisher) {
    let bus = Bus::connect(
        BusOptions::new(server.client_url())
            .client_name("kit-tests")
            .request_timeout(Duration::from_millis(500)),
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

fn registered(n: usize) -> CitizenRegistered {
    CitizenRegistered {
        citizen_ref: format!("warga-{n}"),
        kelurahan_code: "35.73.02.1001".to_owned(),
        birth_year: 1990,
        sex: 1,
    }
}

async fn enqueue(
    db: &Database,
    publisher: &Publisher,
    range: std::ops::Range<usize>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for n in range {
        let event = publisher
            .encode(&registered(n), &Causality::request(format!("request-{n}")))
            .expect("encodes");
        let mut transaction = db.begin().await.expect("begin");
        outbox::enqueue(&mut transaction, &event)
            .await
            .expect("enqueued");
        transaction.commit().await.expect("commit");
        ids.push(event.id().to_owned());
    }
    ids
}

async fn stream_messages(bus: &Bus) -> u64 {
    let mut stream = bus
        .jetstream()
        .get_stream("GOVBUS_IDENTITY")
        .await
        .expect("stream");
    stream.info().await.expect("info").state.messages
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..1500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for: {what}");
}

async fn migrations_can_run_twice(backend: TestBackend) {
    let (test_db, _db) = database(backend).await;
    let again = open_database(test_db.url(), "kit-tests", &[]).await;
    assert!(again.is_ok(), "{again:?}");
}

async fn the_relay_sends_committed_events_once(backend: TestBackend) {
    let (_test_db, db) = database(backend).await;
    let server = NatsServer::start().expect("nats");
    let (bus, publisher) = bus(&server).await;
    let ids = enqueue(&db, &publisher, 0..300).await;
    assert_eq!(outbox::pending_count(&db).await.expect("count"), 300);

    let relay = OutboxRelay::new(db.clone(), publisher.clone(), RelaySettings::default());
    assert_eq!(relay.relay_pending().await.expect("relayed"), 300);
    assert_eq!(outbox::pending_count(&db).await.expect("count"), 0);
    assert_eq!(stream_messages(&bus).await, 300);

    // The stream holds the events in outbox order, with their ids.
    let stream = bus
        .jetstream()
        .get_stream("GOVBUS_IDENTITY")
        .await
        .expect("stream");
    for (sequence, id) in [(1, &ids[0]), (300, &ids[299])] {
        let message = stream.get_raw_message(sequence).await.expect("message");
        assert_eq!(
            message.headers.get("ce-id").map(|v| v.as_str()),
            Some(id.as_str())
        );
    }
    // Each row records the stream sequence its event was stored under.
    assert_eq!(
        stream_sequences(&db).await,
        (1..=300).map(Some).collect::<Vec<_>>()
    );
    // A relay that runs again finds nothing to send.
    assert_eq!(relay.relay_pending().await.expect("relayed"), 0);
    assert_eq!(stream_messages(&bus).await, 300);
}

/// The stream sequence recorded in each outbox row, in outbox order.
async fn stream_sequences(db: &Database) -> Vec<Option<i64>> {
    let rows: Vec<(Option<i64>,)> =
        sqlx::query_as("SELECT stream_sequence FROM outbox ORDER BY position")
            .fetch_all(db.pool())
            .await
            .expect("outbox rows");
    rows.into_iter().map(|(sequence,)| sequence).collect()
}

async fn a_rolled_back_command_publishes_nothing(backend: TestBackend) {
    let (_test_db, db) = database(backend).await;
    let server = NatsServer::start().expect("nats");
    let (bus, publisher) = bus(&server).await;
    let event = publisher
        .encode(&registered(1), &Causality::root())
        .expect("encodes");
    let mut transaction = db.begin().await.expect("begin");
    outbox::enqueue(&mut transaction, &event)
        .await
        .expect("enqueued");
    transaction.rollback().await.expect("rollback");

    let relay = OutboxRelay::new(db.clone(), publisher, RelaySettings::default());
    assert_eq!(relay.relay_pending().await.expect("relayed"), 0);
    assert_eq!(stream_messages(&bus).await, 0);
}

async fn events_wait_while_nats_is_down_and_flow_when_it_returns(backend: TestBackend) {
    let (_test_db, db) = database(backend).await;
    let mut server = NatsServer::start().expect("nats");
    let (bus, publisher) = bus(&server).await;
    let relay = OutboxRelay::new(
        db.clone(),
        publisher.clone(),
        RelaySettings {
            poll_interval: Duration::from_millis(100),
            ..RelaySettings::default()
        },
    )
    .spawn();
    enqueue(&db, &publisher, 0..50).await;
    relay.wake();
    eventually("the first events are sent", async || {
        outbox::pending_count(&db).await.unwrap_or(-1) == 0
    })
    .await;

    tokio::task::block_in_place(|| server.stop().expect("nats stops"));
    // Commands keep succeeding while NATS is down; their events wait.
    enqueue(&db, &publisher, 50..150).await;
    relay.wake();
    assert!(outbox::pending_count(&db).await.expect("count") > 0);

    tokio::task::block_in_place(|| server.restart().expect("nats restarts"));
    eventually("the waiting events are sent", async || {
        outbox::pending_count(&db).await.unwrap_or(-1) == 0
    })
    .await;
    relay.shutdown().await;
    assert_eq!(
        stream_messages(&bus).await,
        150,
        "every event stored exactly once"
    );
    assert!(outbox::failed_events(&db).await.expect("failed").is_empty());
}

async fn the_inbox_claims_each_event_once(backend: TestBackend) {
    let (_test_db, db) = database(backend).await;
    let mut transaction = db.begin().await.expect("begin");
    assert!(
        inbox::claim(&mut transaction, "welfare-identity", "event-1")
            .await
            .expect("claim")
    );
    assert!(
        !inbox::claim(&mut transaction, "welfare-identity", "event-1")
            .await
            .expect("claim")
    );
    assert!(
        inbox::claim(&mut transaction, "licensing-identity", "event-1")
            .await
            .expect("claim")
    );
    transaction.commit().await.expect("commit");

    // A claim rolled back with its state change leaves the event unprocessed.
    let mut transaction = db.begin().await.expect("begin");
    assert!(
        inbox::claim(&mut transaction, "welfare-identity", "event-2")
            .await
            .expect("claim")
    );
    transaction.rollback().await.expect("rollback");
    let mut transaction = db.begin().await.expect("begin");
    assert!(
        inbox::claim(&mut transaction, "welfare-identity", "event-2")
            .await
            .expect("claim")
    );
    transaction.commit().await.expect("commit");
}

async fn idempotency_keys_return_the_first_response(backend: TestBackend) {
    let (_test_db, db) = database(backend).await;
    let request = IdempotentRequest::new("identity.RegisterCitizen", "key-1", b"request A");
    let mut transaction = db.begin().await.expect("begin");
    assert_eq!(
        request
            .stored_response(&mut transaction)
            .await
            .expect("read"),
        None
    );
    request
        .store_response(&mut transaction, b"response A")
        .await
        .expect("stored");
    transaction.commit().await.expect("commit");

    let mut connection = db.pool().acquire().await.expect("connection");
    let retried = IdempotentRequest::new("identity.RegisterCitizen", "key-1", b"request A");
    assert_eq!(
        retried
            .stored_response(&mut connection)
            .await
            .expect("read"),
        Some(b"response A".to_vec())
    );
    let other = IdempotentRequest::new("identity.RegisterCitizen", "key-1", b"request B");
    assert!(matches!(
        other.stored_response(&mut connection).await,
        Err(IdempotencyError::KeyReused { .. })
    ));
    let other_scope = IdempotentRequest::new("welfare.Apply", "key-1", b"request B");
    assert_eq!(
        other_scope
            .stored_response(&mut connection)
            .await
            .expect("read"),
        None
    );
}

async fn a_batch_claims_each_event_once_in_one_statement(backend: TestBackend) {
    let (_test_db, db) = database(backend).await;
    let mut transaction = db.begin().await.expect("begin");
    assert!(
        inbox::claim(&mut transaction, "welfare-identity", "event-2")
            .await
            .expect("claim")
    );
    transaction.commit().await.expect("commit");

    // Already processed, new, repeated within the batch, and beyond one statement's chunk.
    let mut ids: Vec<String> = ["event-1", "event-2", "event-3", "event-1"]
        .map(str::to_owned)
        .to_vec();
    ids.extend((0..600).map(|n| format!("bulk-{n}")));
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut transaction = db.begin().await.expect("begin");
    let fresh = inbox::claim_all(&mut transaction, "welfare-identity", &refs)
        .await
        .expect("claimed");
    assert_eq!(&fresh[..4], [true, false, true, false]);
    assert!(fresh[4..].iter().all(|fresh| *fresh));
    // Rolled back: nothing was recorded.
    transaction.rollback().await.expect("rollback");
    let mut transaction = db.begin().await.expect("begin");
    let again = inbox::claim_all(&mut transaction, "welfare-identity", &refs)
        .await
        .expect("claimed");
    assert_eq!(again, fresh);
    transaction.commit().await.expect("commit");
    let mut transaction = db.begin().await.expect("begin");
    let third = inbox::claim_all(&mut transaction, "welfare-identity", &refs[..5])
        .await
        .expect("claimed");
    assert_eq!(third, [false; 5]);
}

async fn a_refused_event_is_kept_as_failed_and_blocks_nothing(backend: TestBackend) {
    let (_test_db, db) = database(backend).await;
    let server = NatsServer::start().expect("nats");
    let (bus, publisher) = bus(&server).await;
    let mut ids = enqueue(&db, &publisher, 0..10).await;
    // Larger than the server's 1 MB max_payload: JetStream can never take it.
    let encoded = publisher
        .encode(&registered(10), &Causality::root())
        .expect("encodes");
    let oversized = govbus_bus::OutgoingEvent::from_parts(
        encoded.subject(),
        encoded.header_pairs(),
        vec![7_u8; 2 * 1024 * 1024],
    );
    let mut transaction = db.begin().await.expect("begin");
    outbox::enqueue(&mut transaction, &oversized)
        .await
        .expect("enqueued");
    transaction.commit().await.expect("commit");
    ids.extend(enqueue(&db, &publisher, 11..20).await);

    let relay = OutboxRelay::new(db.clone(), publisher, RelaySettings::default());
    assert_eq!(relay.relay_pending().await.expect("relayed"), 19);
    assert_eq!(outbox::pending_count(&db).await.expect("count"), 0);
    let failed = outbox::failed_events(&db).await.expect("failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].event_id, oversized.id());
    assert!(failed[0].reason.contains("payload"), "{}", failed[0].reason);
    // The events behind it were sent, in order.
    assert_eq!(stream_messages(&bus).await, 19);
    let stream = bus
        .jetstream()
        .get_stream("GOVBUS_IDENTITY")
        .await
        .expect("stream");
    let eleventh = stream.get_raw_message(11).await.expect("message");
    assert_eq!(
        eleventh.headers.get("ce-id").map(|v| v.as_str()),
        Some(ids[10].as_str())
    );
    let mut expected: Vec<Option<i64>> = (1..=10).map(Some).collect();
    expected.push(None);
    expected.extend((11..=19).map(Some));
    assert_eq!(stream_sequences(&db).await, expected);
}
