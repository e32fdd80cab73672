//! Fault injection against govbus services running as real processes.
//!
//! A [`Deployment`] runs a private `nats-server` (or a cluster of them) and the identity and
//! welfare binaries, each with its own SQLite file, on ports picked at start. Scenarios drive commands with known ids,
//! crash or restart a part mid-burst, and then check every projection: events sent = events
//! applied, none applied twice, none lost, dead letters only for planted poison. No time is
//! asserted; waits are bounded only so that a hung run fails.
//!
//! # Layout
//!
//! - [`Deployment`]: the processes, their addresses and clients, and the checks the scenarios
//!   share.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use govbus_harness::NatsCluster;
use govbus_harness::service::{ServiceProcess, free_port, workspace_binary};
use govbus_proto::identity::v1::identity_service_client::IdentityServiceClient;
use govbus_proto::welfare::v1::welfare_service_client::WelfareServiceClient;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// How long a part may take to come back before a scenario fails.
pub const RECOVERY_LIMIT: Duration = Duration::from_secs(60);

/// Waits until the service `process` runs at `address` answers its health check; returns how
/// long that took. Fails with the process's log after [`RECOVERY_LIMIT`].
pub async fn wait_healthy(address: &str, process: &ServiceProcess) -> anyhow::Result<Duration> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    let mut health = HealthClient::new(channel);
    let started = Instant::now();
    loop {
        let answer = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await;
        if answer.is_ok() {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < RECOVERY_LIMIT,
            "not healthy after {RECOVERY_LIMIT:?}:\n{}",
            process.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// NATS, identity and welfare as processes.
#[derive(Debug)]
pub struct Deployment {
    /// The NATS server, or the members of the cluster.
    pub nats: NatsCluster,
    /// The identity service.
    pub identity: ServiceProcess,
    /// The welfare service.
    pub welfare: ServiceProcess,
    identity_address: String,
    welfare_address: String,
    dir: tempfile::TempDir,
    /// The scenarios' own client, connected to every member (it reconnects after a restart).
    observer: tokio::sync::OnceCell<async_nats::jetstream::Context>,
}

impl Deployment {
    /// Starts one NATS server and both services, and waits until they answer their health
    /// checks.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(NatsCluster::start(1)?, 1).await
    }

    /// Like [`start`](Self::start) on a cluster of `size` NATS servers, the services connected
    /// to all of them and their streams replicated on each.
    pub async fn start_clustered(size: usize) -> anyhow::Result<Self> {
        Self::start_on(NatsCluster::start(size)?, size).await
    }

    async fn start_on(nats: NatsCluster, replicas: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let identity_address = format!("127.0.0.1:{}", free_port()?);
        let welfare_address = format!("127.0.0.1:{}", free_port()?);
        let nats_url = nats.client_urls();
        let replicas = replicas.to_string();
        let identity_db = format!("sqlite://{}", dir.path().join("identity.db").display());
        let welfare_db = format!("sqlite://{}", dir.path().join("welfare.db").display());
        let identity_url = format!("http://{identity_address}");
        let identity = ServiceProcess::start(
            &workspace_binary("govbus-identity", "govbus-identity")?,
            "identity",
            &[
                ("GOVBUS_NATS_URL", &nats_url),
                ("GOVBUS_STREAM_REPLICAS", &replicas),
                ("GOVBUS_IDENTITY_DATABASE_URL", &identity_db),
                ("GOVBUS_IDENTITY_LISTEN", &identity_address),
                ("GOVBUS_LOG", "warn"),
            ],
            dir.path(),
        )?;
        let welfare = ServiceProcess::start(
            &workspace_binary("govbus-welfare", "govbus-welfare")?,
            "welfare",
            &[
                ("GOVBUS_NATS_URL", &nats_url),
                ("GOVBUS_STREAM_REPLICAS", &replicas),
                ("GOVBUS_IDENTITY_URL", &identity_url),
                ("GOVBUS_WELFARE_DATABASE_URL", &welfare_db),
                ("GOVBUS_WELFARE_LISTEN", &welfare_address),
                ("GOVBUS_LOG", "warn"),
            ],
            dir.path(),
        )?;
        let deployment = Self {
            nats,
            identity,
            welfare,
            identity_address,
            welfare_address,
            dir,
            observer: tokio::sync::OnceCell::new(),
        };
        deployment.wait_healthy("identity").await?;
        deployment.wait_healthy("welfare").await?;
        Ok(deployment)
    }

    fn address(&self, service: &str) -> &str {
        if service == "identity" {
            &self.identity_address
        } else {
            &self.welfare_address
        }
    }

    /// A channel to `service` (connects lazily, so it survives restarts).
    pub fn channel(&self, service: &str) -> anyhow::Result<Channel> {
        Ok(
            tonic::transport::Endpoint::from_shared(format!("http://{}", self.address(service)))?
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(10))
                .connect_lazy(),
        )
    }

    /// identity's client.
    pub fn identity_client(&self) -> anyhow::Result<IdentityServiceClient<Channel>> {
        Ok(IdentityServiceClient::new(self.channel("identity")?))
    }

    /// welfare's client.
    pub fn welfare_client(&self) -> anyhow::Result<WelfareServiceClient<Channel>> {
        Ok(WelfareServiceClient::new(self.channel("welfare")?))
    }

    /// Waits until `service` answers its health check; returns how long that took.
    pub async fn wait_healthy(&self, service: &str) -> anyhow::Result<Duration> {
        let process = if service == "identity" {
            &self.identity
        } else {
            &self.welfare
        };
        wait_healthy(self.address(service), process).await
    }

    /// Registers citizens `0..people` at identity, each in a household of one assessed in
    /// desil 1 with PKH granted at welfare; returns their NIKs.
    pub async fn people_with_benefits(&self, people: u64) -> anyhow::Result<Vec<String>> {
        use govbus_proto::welfare::v1 as welfare;
        let mut identity = self.identity_client()?;
        let mut welfare_client = self.welfare_client()?;
        let mut niks = Vec::new();
        for index in 0..people {
            let registration = govbus_bench::calls::registration(index)?;
            identity.register_citizen(registration.clone()).await?;
            welfare_client
                .register_household(welfare::RegisterHouseholdRequest {
                    idempotency_key: format!("household-{index}"),
                    kk_number: registration.kk_number.clone(),
                    kelurahan_code: "35.73.02.1001".to_owned(),
                    member_niks: vec![registration.nik.clone()],
                })
                .await?;
            welfare_client
                .assess_household(welfare::AssessHouseholdRequest {
                    idempotency_key: format!("assess-{index}"),
                    kk_number: registration.kk_number.clone(),
                    desil: 1,
                })
                .await?;
            let granted = welfare_client
                .apply_for_programme(welfare::ApplyForProgrammeRequest {
                    idempotency_key: format!("pkh-{index}"),
                    nik: registration.nik.clone(),
                    programme: welfare::Programme::Pkh.into(),
                })
                .await?
                .into_inner();
            anyhow::ensure!(granted.status() == welfare::BenefitStatus::Active);
            niks.push(registration.nik);
        }
        Ok(niks)
    }

    /// Waits until `count` messages are stored on `subject` in `stream`; returns when. A failed
    /// look (NATS or its stream leader still recovering) is retried until `RECOVERY_LIMIT`.
    pub async fn wait_stored(&self, stream: &str, subject: &str, count: u64) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let stored = match self.stored(stream, subject).await {
                Ok(stored) => stored.to_string(),
                Err(error) => format!("(not readable: {error:#})"),
            };
            if stored.parse::<u64>().is_ok_and(|stored| stored >= count) {
                return Ok(());
            }
            anyhow::ensure!(
                started.elapsed() < RECOVERY_LIMIT,
                "only {stored} of {count} on {subject}:\n{}\n{}",
                self.identity.log(),
                self.welfare.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every death in `niks` has suspended its benefit, then checks the projections
    /// ([`assert_every_benefit_suspended_once`](Self::assert_every_benefit_suspended_once));
    /// returns how long after `started` the last suspension was stored.
    pub async fn settle(
        &self,
        niks: &[String],
        poison: u64,
        started: Instant,
    ) -> anyhow::Result<Duration> {
        self.wait_stored(
            "GOVBUS_WELFARE",
            "govbus.welfare.benefit.suspended.v1",
            niks.len() as u64,
        )
        .await?;
        let caught_up = started.elapsed();
        self.assert_every_benefit_suspended_once(niks, poison)
            .await?;
        Ok(caught_up)
    }

    /// Every person in `niks` has exactly one benefit, suspended; every death and every
    /// suspension is stored once; only the `poison` planted was dead-lettered.
    pub async fn assert_every_benefit_suspended_once(
        &self,
        niks: &[String],
        poison: u64,
    ) -> anyhow::Result<()> {
        use govbus_proto::welfare::v1 as welfare;
        let people = niks.len() as u64;
        // Let any duplicate that would come, come.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let deaths = self
            .stored("GOVBUS_IDENTITY", "govbus.identity.citizen.deceased.v1")
            .await?;
        anyhow::ensure!(
            deaths == people + poison,
            "{deaths} deaths stored for {people} people and {poison} planted"
        );
        let suspended = self
            .stored("GOVBUS_WELFARE", "govbus.welfare.benefit.suspended.v1")
            .await?;
        anyhow::ensure!(
            suspended == people,
            "{suspended} suspensions stored for {people} deaths"
        );
        let mut welfare_client = self.welfare_client()?;
        for nik in niks {
            let benefits = welfare_client
                .list_benefits(welfare::ListBenefitsRequest { nik: nik.clone() })
                .await?
                .into_inner()
                .benefits;
            anyhow::ensure!(
                benefits.len() == 1 && benefits[0].status() == welfare::BenefitStatus::Suspended,
                "benefits not suspended exactly once: {benefits:?}"
            );
        }
        let dead_letters = self.dead_letters().await?;
        anyhow::ensure!(
            dead_letters == poison,
            "{dead_letters} dead letters for {poison} planted"
        );
        Ok(())
    }

    /// Records the deaths of `niks` at identity, `in_flight` at a time; each client retries a
    /// failed call with the same idempotency key until `RECOVERY_LIMIT`. `during` is called
    /// before the death at that index is sent (to inject a fault). Returns the retried calls.
    pub async fn record_deaths(
        &mut self,
        niks: &[String],
        in_flight: usize,
        mut during: impl FnMut(usize, &mut Self) -> anyhow::Result<()>,
    ) -> anyhow::Result<u64> {
        use govbus_proto::identity::v1::RecordDeathRequest;
        let started = Instant::now();
        let identity = self.identity_client()?;
        let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(in_flight));
        let mut commands = tokio::task::JoinSet::new();
        for (index, nik) in niks.iter().enumerate() {
            during(index, self)?;
            let permit = std::sync::Arc::clone(&limit).acquire_owned().await?;
            let (mut client, nik) = (identity.clone(), nik.clone());
            commands.spawn(async move {
                let _permit = permit;
                let request = RecordDeathRequest {
                    idempotency_key: format!("death-{nik}"),
                    nik,
                    date_of_death: "2025-01-02".to_owned(),
                };
                let mut retried = 0_u64;
                loop {
                    match client.record_death(request.clone()).await {
                        Ok(_) => return anyhow::Ok(retried),
                        Err(_) if started.elapsed() < RECOVERY_LIMIT => {
                            retried += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(status) => anyhow::bail!("death {index} never recorded: {status}"),
                    }
                }
            });
        }
        let mut retried = 0;
        while let Some(done) = commands.join_next().await {
            retried += done??;
        }
        Ok(retried)
    }

    /// Publishes on identity's stream a death event whose payload is not protobuf, as a faulty
    /// identity would: every consumer of it must dead-letter it and carry on.
    pub async fn plant_poison(&self, id: &str) -> anyhow::Result<()> {
        let js = self.jetstream().await?;
        let mut headers = async_nats::HeaderMap::new();
        for (name, value) in [
            ("ce-specversion", "1.0"),
            ("ce-id", id),
            ("ce-source", "/govbus/identity"),
            ("ce-type", "identity.citizen.deceased.v1"),
            ("ce-time", "2026-11-28T00:00:00Z"),
            ("ce-subject", id),
            ("content-type", "application/protobuf"),
            ("Nats-Msg-Id", id),
        ] {
            headers.insert(name, value);
        }
        js.publish_with_headers(
            "govbus.identity.citizen.deceased.v1",
            headers,
            vec![0xff, 0xff, 0xff].into(),
        )
        .await?
        .await?;
        Ok(())
    }

    /// A JetStream client of the deployment's NATS, connected once to every member and
    /// reconnecting by itself when one is killed or restarted.
    pub async fn jetstream(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        let context = self
            .observer
            .get_or_try_init(|| async {
                let servers = self
                    .nats
                    .members()
                    .iter()
                    .map(|member| member.client_url().parse::<async_nats::ServerAddr>())
                    .collect::<Result<Vec<_>, _>>()?;
                let client = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(2))
                    .retry_on_initial_connect()
                    .connect(servers)
                    .await?;
                anyhow::Ok(async_nats::jetstream::new(client))
            })
            .await?;
        Ok(context.clone())
    }

    /// The server leading `stream`'s replicas (`None` outside a cluster).
    pub async fn stream_leader(&self, stream: &str) -> anyhow::Result<Option<String>> {
        let mut stream = self.jetstream().await?.get_stream(stream).await?;
        let info = stream.info().await?;
        Ok(info
            .cluster
            .as_ref()
            .and_then(|cluster| cluster.leader.clone()))
    }

    /// Waits until each of `streams` has a leader and every other member of the cluster holds
    /// a current replica of it; returns how long that took.
    pub async fn wait_fully_replicated(&self, streams: &[&str]) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let followers = self.nats.members().len() - 1;
        'poll: loop {
            anyhow::ensure!(
                started.elapsed() < RECOVERY_LIMIT,
                "streams not fully replicated after {RECOVERY_LIMIT:?}:\n{}",
                self.nats.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            let Ok(js) = self.jetstream().await else {
                continue;
            };
            for name in streams {
                let Ok(mut stream) = js.get_stream(*name).await else {
                    continue 'poll;
                };
                let Ok(info) = stream.info().await else {
                    continue 'poll;
                };
                let Some(cluster) = &info.cluster else {
                    anyhow::bail!("{name} is not replicated: the deployment is not clustered");
                };
                let current = cluster
                    .replicas
                    .iter()
                    .filter(|peer| peer.current && !peer.offline)
                    .count();
                if cluster.leader.is_none() || current < followers {
                    continue 'poll;
                }
            }
            return Ok(started.elapsed());
        }
    }

    /// Events in `service`'s outbox not yet acknowledged by JetStream (read from its SQLite
    /// file while it runs).
    pub async fn pending_outbox_rows(&self, service: &str) -> anyhow::Result<u64> {
        let file = self.database_file(service);
        let pending: i64 = tokio::task::spawn_blocking(move || {
            let connection = rusqlite::Connection::open_with_flags(
                file,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            connection.busy_timeout(std::time::Duration::from_secs(10))?;
            connection.query_row(
                "SELECT COUNT(*) FROM outbox WHERE failed_at IS NULL AND position > COALESCE(
                     (SELECT published_position FROM outbox_relay WHERE name = 'outbox'), 0)",
                [],
                |row| row.get(0),
            )
        })
        .await??;
        Ok(u64::try_from(pending)?)
    }

    /// The path of `service`'s SQLite file.
    pub fn database_file(&self, service: &str) -> std::path::PathBuf {
        self.dir.path().join(format!("{service}.db"))
    }

    /// Messages stored on `subject` in `stream`.
    pub async fn stored(&self, stream: &str, subject: &str) -> anyhow::Result<u64> {
        let js = self.jetstream().await?;
        let stream = js.get_stream(stream).await.context("stream")?;
        let mut subjects = stream.info_with_subjects(subject).await?;
        let mut total = 0;
        while let Some(entry) = subjects.next().await {
            total += entry?.1 as u64;
        }
        Ok(total)
    }

    /// Messages in the dead-letter stream (none if it does not exist).
    pub async fn dead_letters(&self) -> anyhow::Result<u64> {
        let js = self.jetstream().await?;
        match js
            .get_stream(govbus_bus::Topology::default().dead_letter_stream())
            .await
        {
            Ok(mut stream) => Ok(stream.info().await?.state.messages),
            Err(_) => Ok(0),
        }
    }
}
