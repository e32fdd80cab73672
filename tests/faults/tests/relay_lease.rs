//! Two identity processes on one PostgreSQL database share one outbox: commands go to both,
//! one relays (the holder of the outbox's lease), and no event is stored twice. The holder is
//! killed (SIGKILL, its lease not given up); the other takes the lease over and publishes what
//! was left and what comes after.

use std::time::{Duration, Instant};

use govbus_harness::service::{ServiceProcess, free_port, workspace_binary};
use govbus_harness::{NatsCluster, TestBackend, TestDatabase};
use govbus_proto::identity::v1::identity_service_client::IdentityServiceClient;
use govbus_storage::outbox::lease;
use govbus_storage::{Database, DatabaseOptions};
use tonic::transport::Channel;

const STREAM: &str = "GOVBUS_IDENTITY";

struct Replica {
    process: ServiceProcess,
    client: IdentityServiceClient<Channel>,
}

fn start_replica(
    name: &str,
    nats_url: &str,
    database_url: &str,
    dir: &std::path::Path,
) -> anyhow::Result<Replica> {
    let address = format!("127.0.0.1:{}", free_port()?);
    let process = ServiceProcess::start(
        &workspace_binary("govbus-identity", "govbus-identity")?,
        name,
        &[
            ("GOVBUS_NATS_URL", nats_url),
            ("GOVBUS_IDENTITY_DATABASE_URL", database_url),
            ("GOVBUS_IDENTITY_LISTEN", &address),
            ("GOVBUS_LOG", "warn"),
        ],
        dir,
    )?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    Ok(Replica {
        process,
        client: IdentityServiceClient::new(channel),
    })
}

/// Registers citizens `range`, alternating between the replicas that run.
async fn register(
    replicas: &mut [&mut Replica],
    range: std::ops::Range<u64>,
) -> anyhow::Result<()> {
    for index in range {
        let replica = &mut replicas[usize::try_from(index)? % replicas.len()];
        let request = govbus_bench::calls::registration(index)?;
        // A replica still starting answers UNAVAILABLE; ask again.
        let started = Instant::now();
        loop {
            match replica.client.register_citizen(request.clone()).await {
                Ok(_) => break,
                Err(status) if started.elapsed() < govbus_faults::RECOVERY_LIMIT => {
                    let _ = status;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(status) => {
                    anyhow::bail!("{status:?}\n{}", replica.process.log());
                }
            }
        }
    }
    Ok(())
}

/// Waits until the stream holds `count` messages; returns its last sequence.
async fn stored(js: &async_nats::jetstream::Context, count: u64) -> anyhow::Result<u64> {
    let started = Instant::now();
    loop {
        if let Ok(mut stream) = js.get_stream(STREAM).await
            && let Ok(info) = stream.info().await
            && info.state.messages >= count
        {
            return Ok(info.state.last_sequence);
        }
        anyhow::ensure!(
            started.elapsed() < govbus_faults::RECOVERY_LIMIT,
            "the stream never held {count} events"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The process id in the lease's holder name (`host:pid:random`).
async fn holder_pid(db: &Database) -> anyhow::Result<Option<u32>> {
    Ok(lease::holder(db)
        .await?
        .and_then(|holder| holder.split(':').nth(1).and_then(|pid| pid.parse().ok())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_identity_processes_on_one_database_publish_once_and_take_over() -> anyhow::Result<()> {
    let nats = NatsCluster::start(1)?;
    let database = TestDatabase::new(TestBackend::Postgres).await?;
    let dir = tempfile::tempdir()?;
    let mut first = start_replica(
        "identity-a",
        &nats.client_urls(),
        database.url(),
        dir.path(),
    )?;
    let mut second = start_replica(
        "identity-b",
        &nats.client_urls(),
        database.url(),
        dir.path(),
    )?;
    register(&mut [&mut first, &mut second], 0..100).await?;
    let js = async_nats::jetstream::new(async_nats::connect(nats.client_urls()).await?);
    let last = stored(&js, 100).await?;
    assert_eq!(last, 100, "100 commands, 100 events stored, none twice");

    let observer = Database::open(database.url(), DatabaseOptions::default()).await?;
    let holder = holder_pid(&observer).await?;
    let (holder, survivor) = if holder == first.process.pid() {
        (&mut first, &mut second)
    } else {
        assert_eq!(
            holder,
            second.process.pid(),
            "one of the two holds the lease"
        );
        (&mut second, &mut first)
    };
    // The holder commits twenty more and dies at once, perhaps before publishing them.
    register(&mut [&mut *holder], 100..120).await?;
    holder.process.kill()?;
    let killed = Instant::now();
    let survivor_pid = survivor.process.pid();
    while holder_pid(&observer).await? != survivor_pid {
        anyhow::ensure!(
            killed.elapsed() < govbus_faults::RECOVERY_LIMIT,
            "the survivor never took the lease over:\n{}",
            survivor.process.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let taken_over = killed.elapsed();
    register(&mut [&mut *survivor], 120..150).await?;
    let last = stored(&js, 150).await?;
    assert_eq!(last, 150, "150 commands, 150 events stored, none twice");
    eprintln!(
        "relay lease: 150 events committed by two processes, each stored once; the survivor \
         took the lease {taken_over:?} after the holder was killed"
    );
    observer.close().await;
    Ok(())
}
