//! The outbox and its relay on SQLite and PostgreSQL with a real nats-server: events published
//! once and in order per aggregate, through outages and restarts, by one relay at a time.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use govbus_bus::{Causality, OutgoingEvent, StreamSettings};
use govbus_harness::{NatsServer, TestBackend};
use govbus_storage::outbox::{self, lease};
use govbus_storage::{DbError, OutboxRelay, RelaySettings};
use support::{
    bus, bus_with, commit_events, commit_in_batches, database, eventually, open, registered,
    stream_contents, stream_messages,
};

govbus_harness::on_both_backends!(
    committed_events_are_published_once_in_order_from_memory,
    a_backlog_is_published_from_the_table,
    a_rolled_back_command_publishes_nothing,
    events_wait_while_nats_is_down_and_flow_when_it_returns,
    a_pause_mid_stream_keeps_every_aggregates_events_in_order,
    a_crash_mid_stream_keeps_every_aggregates_events_in_order,
    a_refused_event_is_kept_as_failed_and_blocks_nothing,
    a_relay_taking_over_skips_what_the_stream_holds_even_after_the_duplicate_window,
    two_relays_on_one_outbox_never_both_publish_and_one_takes_over_when_the_other_dies,
    acknowledged_events_survive_nats_killed,
);

fn fast() -> RelaySettings {
    RelaySettings {
        poll_interval: Duration::from_millis(100),
        lease: Duration::from_secs(2),
        ..RelaySettings::default()
    }
}

async fn committed_events_are_published_once_in_order_from_memory(backend: TestBackend) {
    let (_test_db, db) = database(backend).await;
    let server = NatsServer::start().expect("nats");
    let (bus, publisher) = bus(&server).await;
    let relay = OutboxRelay::new(db.clone(), publisher.clone(), fast()).spawn();
    eventually("the relay holds the lease", async || relay.holds_lease()).await;
    let ids = commit_events(
        &db,
        &publisher,
        (0..300).map(|n| registered(n % 7, n as u32)),
    )
    .await;
    eventually("every event is published", async || {
        outbox::pending_count(&db).await.unwrap_or(-1) == 0
    })
    .await;
    relay.shutdown().await;
    let stored = stream_contents(&bus).await;
    assert_eq!(
        stored
            .iter()
            .map(|(id, _, _)| id.clone())
            .collect::<Vec<_>>(),
        ids,
        "the stream holds each event once, in commit order"
    );
    let progress = lease::progress(&db).await.expect("progress");
    assert_eq!(progress.stream_sequence, 300);
}

async fn a_backlog_is_published_from_the_table(backend: TestBackend) {
    let (_test_db, db) = database(backend).await;
    let server = NatsServer::start().expect("nats");
    let (bus, publisher) = bus(&server).await;
    // Committed while no relay runs: nothing holds them in memory.
    let ids = commit_events(&db, &publisher, (0..1200).map(|n| registered(n, 1))).await;
    assert_eq!(outbox::pending_count(&db).await.expect("count"), 1200);
    let relay = OutboxRelay::new(db.clone(), publisher.clone(), fast());
    assert_eq!(relay.relay_pending().await.expect("relayed"), 1200);
    assert_eq!(outbox::pending_count(&db).await.expect("count"), 0);
    let stored: Vec<String> = stream_contents(&bus)
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(stored, ids);
    // Once more: nothing left to send.
    assert_eq!(relay.relay_pending().await.expect("relayed"), 0);
    assert_eq!(stream_messages(&bus).await, 1200);
}

async fn a_rolled_back_command_publishes_nothing(backend: TestBackend) {
    let (_test_db, db) = database(backend).await;
    let server = NatsServer::start().expect("nats");
    let (bus, publisher) = bus(&server).await;
    let event = publisher
        .encode(&registered(1, 1), &Causality::root())
        .expect("encodes");
    let refused = db
        .write(async move |tx| {
            tx.enqueue(event.clone());
            Err::<(), DbError>(DbError::new(
                govbus_storage::DbErrorKind::Query,
                "testing",
                "the command fails",
            ))
        })
        .await;
    assert!(refused.is_err());
    let relay = OutboxRelay::new(db.clone(), publisher, fast());
    assert_eq!(relay.relay_pending().await.expect("relayed"), 0);
    assert_eq!(stream_messages(&bus).await, 0);
}

async fn events_wait_while_nats_is_down_and_flow_when_it_returns(backend: TestBackend) {
    let (_test_db, db) = database(backend).await;
    let mut server = NatsServer::start().expect("nats");
    let (bus, publisher) = bus(&server).await;
    let relay = OutboxRelay::new(db.clone(), publisher.clone(), fast()).spawn();
    commit_events(&db, &publisher, (0..50).map(|n| registered(n, 1))).await;
    eventually("the first events are published", async || {
        outbox::pending_count(&db).await.unwrap_or(-1) == 0
    })
    .await;

    tokio::task::block_in_place(|| server.stop().expect("nats stops"));
    // Commands keep succeeding while NATS is down; their events wait.
    commit_events(&db, &publisher, (50..150).map(|n| registered(n, 1))).await;
    assert!(outbox::pending_count(&db).await.expect("count") > 0);

    tokio::task::block_in_place(|| server.restart().expect("nats restarts"));
    eventually("the waiting events are published", async || {
        outbox::pending_count(&db).await.unwrap_or(-1) == 0
    })
    .await;
    relay.shutdown().await;
    let stored = stream_contents(&bus).await;
    let unique: HashSet<&String> = stored.iter().map(|(id, _, _)| id).collect();
    assert_eq!((stored.len(), unique.len()), (150, 150), "each event once");
    assert!(outbox::failed_events(&db).await.expect("failed").is_empty());
}

/// Events of three citizens, committed 100 to a command so that many are in flight at once,
/// while nats-server is frozen and thawed, or killed and restarted (what was in flight at the
/// kill is lost and sent again): whatever was retried, each citizen's events are stored once,
/// in the order they were committed.
async fn an_outage_mid_stream_keeps_every_aggregates_events_in_order(
    backend: TestBackend,
    outage: fn(&mut NatsServer),
) {
    let (_test_db, db) = database(backend).await;
    let mut server = NatsServer::start().expect("nats");
    let (bus, publisher) = bus(&server).await;
    let relay = OutboxRelay::new(db.clone(), publisher.clone(), fast()).spawn();
    eventually("the relay holds the lease", async || relay.holds_lease()).await;
    let events: Vec<_> = (0..3000_u32)
        .map(|n| registered((n % 3) as usize, n / 3))
        .collect();
    let committing = {
        let (db, publisher) = (db.clone(), publisher.clone());
        tokio::spawn(async move { commit_in_batches(&db, &publisher, events, 100).await })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    tokio::task::block_in_place(|| outage(&mut server));
    committing.await.expect("commits");
    eventually("every event is published", async || {
        outbox::pending_count(&db).await.unwrap_or(-1) == 0
    })
    .await;
    relay.shutdown().await;
    let mut seen: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut ids = HashSet::new();
    for (id, subject, event) in stream_contents(&bus).await {
        assert!(ids.insert(id), "an event stored twice");
        seen.entry(subject).or_default().push(event.birth_year);
    }
    assert_eq!(ids.len(), 3000);
    for (aggregate, numbers) in seen {
        assert_eq!(numbers, (0..1000).collect::<Vec<_>>(), "{aggregate}");
    }
}

async fn a_pause_mid_stream_keeps_every_aggregates_events_in_order(backend: TestBackend) {
    an_outage_mid_stream_keeps_every_aggregates_events_in_order(backend, |server| {
        server.pause().expect("nats pauses");
        std::thread::sleep(Duration::from_millis(1500));
        server.resume().expect("nats resumes");
    })
    .await;
}

async fn a_crash_mid_stream_keeps_every_aggregates_events_in_order(backend: TestBackend) {
    an_outage_mid_stream_keeps_every_aggregates_events_in_order(backend, |server| {
        server.kill().expect("nats killed");
        server.restart().expect("nats restarts");
    })
    .await;
}

async fn a_refused_event_is_kept_as_failed_and_blocks_nothing(backend: TestBackend) {
    let (_test_db, db) = database(backend).await;
    let server = NatsServer::start().expect("nats");
    let (bus, publisher) = bus(&server).await;
    let mut ids = commit_events(&db, &publisher, (0..10).map(|n| registered(n, 1))).await;
    // Larger than the server's 1 MB max_payload: JetStream can never take it.
    let encoded = publisher
        .encode(&registered(10, 1), &Causality::root())
        .expect("encodes");
    let oversized = OutgoingEvent::from_stored(
        encoded.subject(),
        encoded.header_lines(),
        vec![7_u8; 2 * 1024 * 1024],
    );
    let oversized_id = oversized.id().to_owned();
    db.write(async move |tx| {
        tx.enqueue(oversized.clone());
        Ok::<(), DbError>(())
    })
    .await
    .expect("committed");
    ids.extend(commit_events(&db, &publisher, (11..20).map(|n| registered(n, 1))).await);

    let relay = OutboxRelay::new(db.clone(), publisher, fast());
    assert_eq!(relay.relay_pending().await.expect("relayed"), 19);
    assert_eq!(outbox::pending_count(&db).await.expect("count"), 0);
    let failed = outbox::failed_events(&db).await.expect("failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].event_id, oversized_id);
    assert!(failed[0].reason.contains("payload"), "{}", failed[0].reason);
    let stored: Vec<String> = stream_contents(&bus)
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(stored, ids, "the events behind it, in order");
}

/// Progress recorded behind what the stream holds (a crash between the acknowledgements and
/// the record), and a restart after JetStream's duplicate window: the new relay finds the
/// events in the stream and does not store them again.
async fn a_relay_taking_over_skips_what_the_stream_holds_even_after_the_duplicate_window(
    backend: TestBackend,
) {
    let (_test_db, db) = database(backend).await;
    let server = NatsServer::start().expect("nats");
    let (bus, publisher) = bus_with(
        &server,
        StreamSettings {
            duplicate_window: Duration::from_secs(1),
            ..StreamSettings::default()
        },
    )
    .await;
    commit_events(&db, &publisher, (0..40).map(|n| registered(n, 1))).await;
    let relay = OutboxRelay::new(db.clone(), publisher.clone(), fast());
    assert_eq!(relay.relay_pending().await.expect("relayed"), 40);
    support::execute(
        &db,
        "UPDATE outbox_relay SET published_position = 10, stream_sequence = 10",
    )
    .await
    .expect("progress set back");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    commit_events(&db, &publisher, (40..45).map(|n| registered(n, 1))).await;
    assert_eq!(relay.relay_pending().await.expect("relayed"), 5);
    assert_eq!(stream_messages(&bus).await, 45, "nothing stored twice");
    assert_eq!(outbox::pending_count(&db).await.expect("count"), 0);
}

/// Two processes on one outbox (two handles, each with its writer and relay): one publishes;
/// when it dies without giving the lease up, the other takes over.
async fn two_relays_on_one_outbox_never_both_publish_and_one_takes_over_when_the_other_dies(
    backend: TestBackend,
) {
    let (test_db, first_db) = database(backend).await;
    let server = NatsServer::start().expect("nats");
    let (bus, publisher) = bus(&server).await;
    let second_db = open(&test_db).await;

    // The first relay runs on a runtime of its own, so that it can die as a process does:
    // its tasks dropped without finishing (the lease is not given up).
    let dying = tokio::task::block_in_place(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
    })
    .expect("runtime");
    let first = {
        let (db, publisher) = (first_db.clone(), publisher.clone());
        dying
            .spawn(async move { OutboxRelay::new(db, publisher, fast()).spawn() })
            .await
            .expect("first relay")
    };
    eventually("the first relay holds the lease", async || {
        first.holds_lease()
    })
    .await;
    let second = OutboxRelay::new(second_db.clone(), publisher.clone(), fast()).spawn();

    // Commits from both processes; only the first relay publishes.
    let mut ids = commit_events(&first_db, &publisher, (0..60).map(|n| registered(n, 1))).await;
    ids.extend(commit_events(&second_db, &publisher, (60..120).map(|n| registered(n, 1))).await);
    eventually("everything is published", async || {
        outbox::pending_count(&first_db).await.unwrap_or(-1) == 0
    })
    .await;
    assert!(!second.holds_lease());

    // The first process dies.
    tokio::task::block_in_place(|| dying.shutdown_timeout(Duration::ZERO));
    drop(first);
    eventually("the second relay takes over", async || second.holds_lease()).await;
    ids.extend(commit_events(&second_db, &publisher, (120..150).map(|n| registered(n, 1))).await);
    eventually("the second relay publishes", async || {
        outbox::pending_count(&second_db).await.unwrap_or(-1) == 0
    })
    .await;
    second.shutdown().await;
    let stored: Vec<String> = stream_contents(&bus)
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(stored.len(), 150, "no event stored twice");
    assert_eq!(
        stored.iter().collect::<HashSet<_>>(),
        ids.iter().collect::<HashSet<_>>()
    );
}

/// Killed (SIGKILL) right after acknowledging, nats-server keeps every event it acknowledged:
/// what it acknowledged was written before. (A kill spares the page cache; the loss of the
/// machine is what `sync_interval: always` is for, which this server runs with.)
async fn acknowledged_events_survive_nats_killed(backend: TestBackend) {
    let (_test_db, db) = database(backend).await;
    let mut server = NatsServer::start_durable().expect("nats");
    let (bus, publisher) = bus(&server).await;
    let ids = commit_events(&db, &publisher, (0..200).map(|n| registered(n, 1))).await;
    let relay = OutboxRelay::new(db.clone(), publisher, fast());
    assert_eq!(relay.relay_pending().await.expect("relayed"), 200);
    tokio::task::block_in_place(|| {
        server.kill().expect("killed");
        server.restart().expect("restarted");
    });
    let stored: Vec<String> = stream_contents(&bus)
        .await
        .into_iter()
        .map(|(id, _, _)| id)
        .collect();
    assert_eq!(stored, ids);
}

/// The shipped single-server setting is in effect: JetStream syncs every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_nats_configuration_syncs_every_message() {
    let server = NatsServer::start_durable().expect("nats");
    let varz = reqwest_varz(server.monitor_port()).await;
    assert!(
        varz.contains("\"sync_always\": true") || varz.contains("\"sync_always\":true"),
        "{varz}"
    );
    let default = NatsServer::start().expect("nats");
    let varz = reqwest_varz(default.monitor_port()).await;
    assert!(!varz.contains("sync_always"), "{varz}");
}

/// `/varz` of the server on `port`, over a plain HTTP/1.0 request.
async fn reqwest_varz(port: u16) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("monitoring port");
    stream
        .write_all(b"GET /varz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    response
}
