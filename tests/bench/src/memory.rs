//! Memory: each service as its own process (the workspace's binaries, configured as in
//! production: mutual TLS, the access policy, the processing log) under the end-to-end load.
//!
//! 64 clients register citizens at identity as fast as it answers, then record the deaths of
//! half of them. Every registration and death goes through identity's outbox to JetStream; the
//! evaluation service consumes every event as evidence, welfare and licensing consume the
//! deaths. When every consumer has caught up, each process's peak resident set (`VmHWM`) is
//! read.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use govbus_harness::ServiceProcess;
use govbus_harness::service::{free_port, workspace_binary};
use govbus_kit::development_ca::generate_development_certificates;
use govbus_proto::identity::v1::RecordDeathRequest;
use govbus_proto::identity::v1::identity_service_client::IdentityServiceClient;
use serde::Serialize;
use tokio::sync::Semaphore;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::calls::{channel, nik, registration};
use crate::measure::Run;

/// The services, in start order (welfare and licensing call identity).
const SERVICES: [&str; 4] = ["identity", "evaluation", "welfare", "licensing"];

/// How long a service may take to start, or the consumers to catch up, before the run fails.
const PATIENCE: Duration = Duration::from_secs(120);

/// What to send.
#[derive(Debug, Clone, Copy)]
pub struct MemorySettings {
    /// Citizens registered (half of them then die).
    pub registrations: u64,
    /// Commands in flight.
    pub in_flight: usize,
}

/// One service's memory.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceMemory {
    /// The service.
    pub service: String,
    /// Peak resident memory over the run, MiB.
    pub peak_rss_mib: f64,
}

/// The load and what each service needed.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryUnderLoad {
    /// The commands sent (registrations, then deaths), closed loop.
    pub commands: Run,
    /// Events identity published (every consumer handled those it subscribes to).
    pub events: u64,
    /// Each service's peak.
    pub services: Vec<ServiceMemory>,
}

/// Runs the four service binaries on `nats_url`, their files in `dir`, and loads them.
pub async fn run(
    nats_url: &str,
    dir: &Path,
    settings: MemorySettings,
) -> anyhow::Result<MemoryUnderLoad> {
    let certificates = dir.join("certs");
    let mut names = SERVICES.to_vec();
    names.push("bench");
    generate_development_certificates(&certificates, &names)?;
    let policy = dir.join("access-policy.toml");
    std::fs::write(&policy, ACCESS_POLICY)?;
    let subject_key = dir.join("subject.key");
    std::fs::write(&subject_key, format!("{}\n", "07".repeat(32)))?;
    let tls = govbus_kit::tls::ServiceTls::from_files(
        "bench",
        &govbus_kit::tls::CertificatePaths::in_dir(&certificates, "bench"),
    )?;

    let mut addresses = Vec::new();
    let mut processes = Vec::new();
    for service in SERVICES {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let upper = service.to_ascii_uppercase();
        let mut env = vec![
            ("GOVBUS_NATS_URL".to_owned(), nats_url.to_owned()),
            ("GOVBUS_LOG".to_owned(), "warn".to_owned()),
            (
                "GOVBUS_TLS_DIR".to_owned(),
                certificates.display().to_string(),
            ),
            (
                "GOVBUS_ACCESS_POLICY".to_owned(),
                policy.display().to_string(),
            ),
            (
                "GOVBUS_AUDIT_SUBJECT_KEY".to_owned(),
                subject_key.display().to_string(),
            ),
            (
                format!("GOVBUS_{upper}_DATABASE_URL"),
                format!("sqlite://{}", dir.join(format!("{service}.db")).display()),
            ),
            (format!("GOVBUS_{upper}_LISTEN"), address.to_string()),
        ];
        if let Some(identity) = addresses.first() {
            env.push((
                "GOVBUS_IDENTITY_URL".to_owned(),
                format!("https://{identity}"),
            ));
        }
        let env: Vec<(&str, &str)> = env
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let binary = workspace_binary(&format!("govbus-{service}"), &format!("govbus-{service}"))?;
        let process = ServiceProcess::start(&binary, service, &env, dir)?;
        wait_healthy(address, service, &tls, &process).await?;
        addresses.push(address);
        processes.push(process);
    }

    let identity = IdentityServiceClient::new(channel(addresses[0], "identity", &tls).await?);
    let started = Instant::now();
    let registrations = settings.registrations;
    drive(&identity, settings.in_flight, 0..registrations, |index| {
        Command::Register(index)
    })
    .await?;
    let deaths = registrations / 2;
    drive(&identity, settings.in_flight, 0..deaths, Command::Death).await?;
    let commands = Run::new(
        format!("{} in flight", settings.in_flight),
        registrations + deaths,
        started.elapsed(),
    );
    let events = wait_until_consumed(nats_url, registrations + deaths, &processes).await?;

    let mut services = Vec::new();
    for (service, process) in SERVICES.iter().zip(&mut processes) {
        let kib = process
            .peak_rss_kib()
            .with_context(|| format!("{service} is not running:\n{}", process.log()))?;
        services.push(ServiceMemory {
            service: (*service).to_owned(),
            peak_rss_mib: kib as f64 / 1024.0,
        });
    }
    for process in &mut processes {
        process.stop()?;
    }
    Ok(MemoryUnderLoad {
        commands,
        events,
        services,
    })
}

/// The bench client may register citizens and record deaths; welfare and licensing verify
/// applicants, as in the shipped policy.
const ACCESS_POLICY: &str = r#"
[[grant]]
callers = ["bench"]
methods = [
  "govbus.identity.v1.IdentityService/RegisterCitizen",
  "govbus.identity.v1.IdentityService/RecordDeath",
]
purpose = "Benchmark"

[[grant]]
callers = ["welfare", "licensing"]
methods = ["govbus.identity.v1.IdentityService/VerifyCitizen"]
purpose = "Verify that an applicant is a living resident"
"#;

#[derive(Debug, Clone, Copy)]
enum Command {
    Register(u64),
    Death(u64),
}

async fn drive(
    identity: &IdentityServiceClient<tonic::transport::Channel>,
    in_flight: usize,
    indexes: std::ops::Range<u64>,
    command: impl Fn(u64) -> Command,
) -> anyhow::Result<()> {
    let limit = Arc::new(Semaphore::new(in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    for index in indexes {
        let permit = Arc::clone(&limit).acquire_owned().await?;
        let mut client = identity.clone();
        let command = command(index);
        tasks.spawn(async move {
            let _permit = permit;
            match command {
                Command::Register(index) => {
                    client.register_citizen(registration(index)?).await?;
                }
                Command::Death(index) => {
                    client
                        .record_death(RecordDeathRequest {
                            idempotency_key: format!("bench-death-{index}"),
                            nik: nik(index),
                            date_of_death: "2025-01-02".to_owned(),
                        })
                        .await?;
                }
            }
            anyhow::Ok(())
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

async fn wait_healthy(
    address: std::net::SocketAddr,
    service: &str,
    tls: &govbus_kit::tls::ServiceTls,
    process: &ServiceProcess,
) -> anyhow::Result<()> {
    let started = Instant::now();
    // One channel, connecting lazily: it reconnects by itself until the service listens.
    let mut health = HealthClient::new(
        tonic::transport::Endpoint::from_shared(format!("https://{address}"))?
            .tls_config(tls.client_config(service))?
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy(),
    );
    loop {
        if health.check(HealthCheckRequest::default()).await.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < PATIENCE,
            "{service} did not start:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until identity's stream holds `published` events and every consumer of it (welfare's,
/// licensing's and evaluation's) has handled all it subscribes to; returns the events stored.
async fn wait_until_consumed(
    nats_url: &str,
    published: u64,
    processes: &[ServiceProcess],
) -> anyhow::Result<u64> {
    let jetstream = async_nats::jetstream::new(async_nats::connect(nats_url).await?);
    let started = Instant::now();
    loop {
        let mut stream = jetstream.get_stream("GOVBUS_IDENTITY").await?;
        let stored = stream.info().await?.state.messages;
        let mut consumers = stream.consumers();
        let mut behind = 0;
        let mut count = 0;
        while let Some(consumer) = consumers.next().await {
            let consumer = consumer?;
            behind += consumer.num_pending + consumer.num_ack_pending as u64;
            count += 1;
        }
        if stored >= published && count >= 3 && behind == 0 {
            return Ok(stored);
        }
        anyhow::ensure!(
            started.elapsed() < PATIENCE,
            "{stored} of {published} events stored, {behind} not yet handled by {count} \
             consumers:\n{}",
            processes
                .iter()
                .map(ServiceProcess::log)
                .collect::<Vec<_>>()
                .join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
