//! Service calls: identity's `VerifyCitizen` over a population register of many citizens,
//! against a bare tonic unary call (the standard health check), both over mutual TLS with a
//! tracing span per call and the same number of requests in flight.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use govbus_bus::BusOptions;
use govbus_identity::domain::{NewCitizen, RegistrationInput, Sex};
use govbus_identity::{Application, IdentityConfig};
use govbus_kit::access::{AccessPolicy, Grants};
use govbus_kit::audit::SubjectKey;
use govbus_kit::development_ca::generate_development_certificates;
use govbus_kit::grpc::FieldProblems;
use govbus_kit::tls::{CertificatePaths, ServiceTls};
use govbus_proto::identity::v1 as identity;
use govbus_proto::identity::v1::identity_service_client::IdentityServiceClient;
use govbus_proto::identity::v1::{RegisterCitizenRequest, VerifyCitizenRequest};
use govbus_storage::{DatabaseOptions, DbError, Synchronous};
use tonic::transport::server::TcpIncoming;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::measure::{Comparison, Run, Stopwatch};

/// The goal: `VerifyCitizen` reaches 70 % of a bare unary call's rate.
pub const GOAL: f64 = 0.7;

/// What to call.
#[derive(Debug, Clone, Copy)]
pub struct CallSettings {
    /// Calls per run.
    pub calls: u64,
    /// Requests in flight.
    pub in_flight: usize,
}

/// The certificates and the identity service's database, kept between runs so the register
/// can grow from one population size to the next.
#[derive(Debug)]
pub struct CallBench {
    certificates: PathBuf,
    database_url: String,
    citizens: u64,
}

impl CallBench {
    /// Makes certificates and an empty register in `dir`.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        let certificates = dir.join("certs");
        generate_development_certificates(
            &certificates,
            &["identity", "bench", "hello", "gateway"],
        )?;
        Ok(Self {
            certificates,
            database_url: format!("sqlite://{}", dir.join("identity.db").display()),
            citizens: 0,
        })
    }

    /// Citizens registered so far.
    pub fn citizens(&self) -> u64 {
        self.citizens
    }

    /// Registers citizens until there are `total` (straight into the register's table, as an
    /// initial load from the civil registry would; no events).
    pub async fn grow_to(&mut self, total: u64) -> anyhow::Result<()> {
        let db = govbus_storage::open(
            &self.database_url,
            "identity",
            govbus_identity::store::MIGRATIONS,
            DatabaseOptions {
                // A load, not commands: no client waits for its durability.
                synchronous: Synchronous::Normal,
                ..DatabaseOptions::default()
            },
        )
        .await?;
        while self.citizens < total {
            let end = total.min(self.citizens + 10_000);
            let citizens = (self.citizens..end)
                .map(|index| Ok((reference(index), citizen(index)?)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            db.write(async move |tx| {
                for (reference, citizen) in &citizens {
                    govbus_identity::store::insert(tx, reference, citizen).await?;
                }
                Ok::<(), DbError>(())
            })
            .await?;
            self.citizens = end;
        }
        db.close().await;
        Ok(())
    }

    /// The certificate files of `name`.
    pub(crate) fn certificate_paths(&self, name: &str) -> CertificatePaths {
        CertificatePaths::in_dir(&self.certificates, name)
    }

    pub(crate) fn tls(&self, name: &str) -> anyhow::Result<ServiceTls> {
        Ok(ServiceTls::from_files(
            name,
            &CertificatePaths::in_dir(&self.certificates, name),
        )?)
    }

    /// identity as `govbus up` runs it (mutual TLS, the access policy, the processing log),
    /// letting `bench` call `method`.
    pub(crate) async fn identity(
        &self,
        nats_url: &str,
        database_url: &str,
        method: &str,
    ) -> anyhow::Result<Application> {
        // Boxed: the service's start is a large future, and the scenarios await several.
        Box::pin(self.identity_with(nats_url, database_url, method, &["bench"])).await
    }

    /// identity on this register, letting `callers` call `method`.
    pub(crate) async fn identity_for(
        &self,
        nats_url: &str,
        method: &str,
        callers: &[&str],
    ) -> anyhow::Result<Application> {
        Box::pin(self.identity_with(nats_url, &self.database_url, method, callers)).await
    }

    async fn identity_with(
        &self,
        nats_url: &str,
        database_url: &str,
        method: &str,
        callers: &[&str],
    ) -> anyhow::Result<Application> {
        let callers = callers
            .iter()
            .map(|caller| format!("{caller:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let grants = Grants::parse(&format!(
            "[[grant]]\ncallers = [{callers}]\nmethods = [\"govbus.identity.v1.IdentityService/{method}\"]\npurpose = \"Benchmark\"\n"
        ))
        .map_err(anyhow::Error::msg)?;
        Ok(Application::build(IdentityConfig {
            database_url: database_url.to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            bus: BusOptions::new(nats_url).client_name("identity"),
            storage: govbus_storage::StorageSettings::default(),
            tls: Some(self.tls("identity")?),
            access: Some(AccessPolicy::new(grants)),
            audit_subject_key: Some(SubjectKey::new([7; 32])),
            audit_timestamps: None,
            call_report_interval: Duration::from_secs(3600),
        })
        .await?)
    }

    /// Runs both paths.
    pub async fn compare(
        &self,
        nats_url: &str,
        settings: CallSettings,
    ) -> anyhow::Result<Comparison> {
        let baseline = self.hello(settings).await?;
        let govbus = self.verify_citizen(nats_url, settings).await?;
        Ok(Comparison::new(
            format!("VerifyCitizen, {} citizens (calls/s)", self.citizens),
            govbus,
            baseline,
            GOAL,
        ))
    }

    /// identity as `govbus up` runs it: mutual TLS, the access policy, the processing log
    /// (every call is an entry), telemetry; called by `bench` for random registered NIKs.
    pub async fn verify_citizen(
        &self,
        nats_url: &str,
        settings: CallSettings,
    ) -> anyhow::Result<Run> {
        let identity = self
            .identity(nats_url, &self.database_url, "VerifyCitizen")
            .await?;
        let channel = channel(identity.address(), "identity", &self.tls("bench")?).await?;
        let citizens = self.citizens;
        let run = drive(settings, move |task, call| {
            verify(channel.clone(), spread(task, call, citizens))
        })
        .await?;
        identity.stop().await;
        Ok(Run {
            label: "govbus identity: mTLS, policy, processing log, spans".to_owned(),
            ..run
        })
    }

    /// A bare tonic server answering the standard health check, over mutual TLS, with a span per
    /// call through the same subscriber.
    pub async fn hello(&self, settings: CallSettings) -> anyhow::Result<Run> {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let server = tonic::transport::Server::builder()
            .tls_config(self.tls("hello")?.server_config())?
            .trace_fn(|_| tracing::info_span!("hello"))
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true)));
        let server = tokio::spawn(server);
        let channel = channel(address, "hello", &self.tls("bench")?).await?;
        let run = drive(settings, move |_, _| {
            let mut client = HealthClient::new(channel.clone());
            async move {
                client
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await?;
                Ok(())
            }
        })
        .await;
        server.abort();
        Ok(Run {
            label: "bare tonic unary: mTLS, a span".to_owned(),
            ..run?
        })
    }
}

pub(crate) async fn channel(
    address: SocketAddr,
    server: &str,
    tls: &ServiceTls,
) -> anyhow::Result<tonic::transport::Channel> {
    tonic::transport::Endpoint::from_shared(format!("https://{address}"))?
        .tcp_nodelay(true)
        .tls_config(tls.client_config(server))?
        .connect()
        .await
        .context("connecting")
}

/// The citizen call `call` of task `task` asks for: the lookups spread over the whole register.
pub(crate) fn spread(task: usize, call: u64, citizens: u64) -> u64 {
    (task as u64 * 7_919 + call * 104_729) % citizens.max(1)
}

/// One `VerifyCitizen` of citizen `index` over `channel`, which must find them.
pub(crate) async fn verify(channel: tonic::transport::Channel, index: u64) -> anyhow::Result<()> {
    let answer = IdentityServiceClient::new(channel)
        .verify_citizen(VerifyCitizenRequest {
            nik: nik(index),
            ..Default::default()
        })
        .await?
        .into_inner();
    anyhow::ensure!(!answer.citizen_ref.is_empty(), "citizen {index} not found");
    Ok(())
}

/// Runs `settings.calls` calls from `settings.in_flight` tasks, timing each.
pub(crate) async fn drive<F, Fut>(settings: CallSettings, call: F) -> anyhow::Result<Run>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let call = Arc::new(call);
    let per_task = settings.calls / settings.in_flight as u64;
    // Warm the connection and the caches before timing.
    for warm in 0..100 {
        call(0, warm).await?;
    }
    let stopwatch = Stopwatch::start();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..settings.in_flight {
        let call = call.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(per_task as usize);
            for n in 0..per_task {
                let begun = Instant::now();
                call(task, n).await?;
                latencies.push(begun.elapsed().as_micros() as u64);
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(settings.calls as usize);
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done??);
    }
    Ok(stopwatch
        .run("", latencies.len() as u64)
        .with_latencies(latencies))
}

const KECAMATAN: [&str; 5] = ["357301", "357302", "357303", "357304", "357305"];

/// The NIK of citizen `index`: a Kota Malang kecamatan, a birth date, a serial.
pub fn nik(index: u64) -> String {
    let (kecamatan, day, month, year, serial) = parts(index);
    let day = if index.is_multiple_of(2) {
        day + 40
    } else {
        day
    };
    format!(
        "{}{day:02}{month:02}{:02}{serial:04}",
        KECAMATAN[kecamatan],
        year % 100
    )
}

fn parts(index: u64) -> (usize, u64, u64, u64, u64) {
    let kecamatan = (index % 5) as usize;
    let rest = index / 5;
    let serial = 1 + rest % 9_999;
    let date = rest / 9_999;
    let day = 1 + date % 28;
    let month = 1 + (date / 28) % 12;
    let year = 1950 + (date / 336) % 50;
    (kecamatan, day, month, year, serial)
}

fn reference(index: u64) -> String {
    format!("00000000-0000-7000-8000-{index:012}")
}

/// The registration request of citizen `index`, as the front office would send it.
pub fn registration(index: u64) -> anyhow::Result<RegisterCitizenRequest> {
    let (nik, kk, birth_date) = identifiers(index);
    Ok(RegisterCitizenRequest {
        idempotency_key: format!("bench-{index}"),
        nik,
        kk_number: kk,
        full_name: "Warga Kota Malang".to_owned(),
        birth_place: "Malang".to_owned(),
        birth_date,
        sex: if index.is_multiple_of(2) {
            identity::Sex::Female
        } else {
            identity::Sex::Male
        }
        .into(),
        address: Some(identity::Address {
            street: "Jl. Ijen 1".to_owned(),
            kelurahan_code: "35.73.02.1001".to_owned(),
        }),
    })
}

/// NIK, KK number and birth date of citizen `index`.
fn identifiers(index: u64) -> (String, String, String) {
    let (kecamatan, day, month, year, serial) = parts(index);
    (
        nik(index),
        format!("{}0101{:02}{serial:04}", KECAMATAN[kecamatan], year % 100),
        format!("{year}-{month:02}-{day:02}"),
    )
}

fn citizen(index: u64) -> anyhow::Result<NewCitizen> {
    let (nik, kk, birth_date) = identifiers(index);
    let mut problems = FieldProblems::default();
    let parsed = NewCitizen::parse(
        RegistrationInput {
            nik: &nik,
            kk_number: &kk,
            full_name: "Warga Kota Malang",
            birth_place: "Malang",
            birth_date: &birth_date,
            sex: Some(if index.is_multiple_of(2) {
                Sex::Female
            } else {
                Sex::Male
            }),
            street: "Jl. Ijen 1",
            kelurahan_code: "35.73.02.1001",
        },
        &mut problems,
    );
    match parsed {
        Some((citizen, _warnings)) if problems.is_empty() => Ok(citizen),
        _ => anyhow::bail!("citizen {index} is not valid: {problems:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_citizens_are_valid_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for index in (0..2_000_000).step_by(997).chain(0..1_000) {
            let citizen = citizen(index).expect("valid");
            assert!(seen.insert(citizen.nik.as_str().to_owned()) || index < 1_000);
        }
    }
}
