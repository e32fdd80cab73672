//! The whole stack in one process: NATS (embedded or given), the four services and the console,
//! started in dependency order and stopped in reverse.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use govbus_bus::{Bus, BusOptions};
use govbus_kit::telemetry::TraceStore;
use govbus_natsd::{EmbeddedNats, EmbeddedNatsSettings, NatsdError};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config::StackConfig;
use crate::console::{AuditAccess, Console, ConsoleState, ServiceEndpoint};
use govbus_bus::permissions::{NatsUser, Permissions, authorization, inbox_prefix};
use govbus_kit::access::AccessPolicy;
use govbus_kit::audit::{SubjectKey, TrustAnchors};
use govbus_kit::tls::{CertificatePaths, ServiceTls};

/// Why the stack could not start.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The data folder cannot be used.
    #[error("data folder {path}: {reason}")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The embedded NATS server did not start.
    #[error(transparent)]
    Nats(#[from] NatsdError),
    /// A service did not start.
    #[error("{service} did not start: {source}")]
    Service {
        /// The service.
        service: &'static str,
        /// Why.
        #[source]
        source: govbus_kit::StartError,
    },
    /// The console did not start.
    #[error("console did not start: {0}")]
    Console(String),
    /// The TLS certificates cannot be made or read.
    #[error("certificates in {dir}: {source}")]
    Certificates {
        /// Their folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: govbus_kit::tls::TlsError,
    },
    /// The processing log's subject key or CA cannot be used.
    #[error("processing log: {0}")]
    Audit(#[from] govbus_kit::audit::AuditError),
    /// The access policy cannot be used.
    #[error(transparent)]
    Policy(#[from] govbus_kit::access::PolicyError),
    /// The shipped access policy could not be written to the data folder.
    #[error("writing the access policy {path}: {source}")]
    PolicyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A service's bus contract is inconsistent (a programming error).
    #[error("the bus contract of {service}: {reason}")]
    Contract {
        /// The service.
        service: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A part did not report healthy in time.
    #[error("{part} is not healthy after {waited:?}: {reason}")]
    Unhealthy {
        /// The part.
        part: String,
        /// How long it was given.
        waited: Duration,
        /// The last answer.
        reason: String,
    },
}

/// What the stack needs from the process's telemetry.
#[derive(Debug, Clone)]
pub struct Observability {
    /// Recent traces (the console shows them).
    pub traces: TraceStore,
    /// The Prometheus registry, when a recorder is installed.
    pub metrics: Option<PrometheusHandle>,
}

/// Where each part of a running stack listens.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Endpoints {
    /// The NATS URL the services use.
    pub nats_url: String,
    /// Whether that server is the embedded one.
    pub nats_embedded: bool,
    /// The gRPC addresses, by service.
    pub services: Vec<ServiceEndpoint>,
    /// The console, when enabled.
    pub console: Option<SocketAddr>,
    /// The data folder.
    pub data_dir: PathBuf,
    /// The certificate folder when the services speak mutual TLS.
    pub certificates_dir: Option<PathBuf>,
}

impl Endpoints {
    /// The gRPC address of `service`.
    pub fn service(&self, service: &str) -> Option<SocketAddr> {
        self.services
            .iter()
            .find(|endpoint| endpoint.name == service)
            .map(|endpoint| endpoint.address)
    }
}

/// A running stack.
#[derive(Debug)]
pub struct Stack {
    nats: Option<Supervised>,
    identity: govbus_identity::Application,
    welfare: govbus_welfare::Application,
    licensing: govbus_licensing::Application,
    evaluation: govbus_evaluation::Application,
    console: Option<Console>,
    endpoints: Endpoints,
    /// The operator's identity, for the health checks.
    operator_tls: Option<ServiceTls>,
    /// Ends the access policy's reload task.
    stop_watching_policy: CancellationToken,
    /// The embedded server's users.
    users: NatsUsers,
    shutdown_timeout: Duration,
    /// Held while running: a second stack on the same data folder would corrupt it.
    _lock: File,
}

impl Stack {
    /// Starts every part; on failure, what already started is stopped again.
    pub async fn start(
        config: StackConfig,
        observability: Observability,
    ) -> Result<Self, StackError> {
        let lock = lock_data_dir(&config.data_dir)?;
        let certificates = match config.certificates_dir() {
            Some(dir) => Some(Certificates::open(dir)?),
            None => None,
        };
        let access = match &certificates {
            Some(_) => Some(open_policy(&config)?),
            None => None,
        };
        // The processing log is signed with the services' certificates, so it is kept with TLS.
        let subject_key = match &certificates {
            Some(_) => Some(SubjectKey::load_or_create(
                &config.data_dir.join("audit").join("subject.key"),
            )?),
            None => None,
        };
        let stop_watching_policy = CancellationToken::new();
        if let Some(access) = &access {
            access.watch(Duration::from_secs(2), stop_watching_policy.clone());
        }
        let (nats, nats_url, users) = match &config.nats.url {
            Some(url) => (
                None,
                url.clone(),
                NatsUsers::default().with_stream_replicas(config.nats.stream_replicas),
            ),
            None => {
                let users = NatsUsers::generate()?;
                let settings = EmbeddedNatsSettings {
                    binary: config.nats.server_binary.clone(),
                    dir: config.data_dir.join("nats"),
                    listen: config.nats.listen,
                    extra_config: Some(users.authorization.clone()),
                    // One server: every acknowledged event is on disk before it is acknowledged.
                    sync: govbus_natsd::JetStreamSync::Always,
                };
                let supervised = Supervised::start(settings).await?;
                let url = supervised.client_url.clone();
                (Some(supervised), url, users)
            }
        };
        let started = Box::pin(start_services(
            &config,
            &nats_url,
            &users,
            certificates.as_ref(),
            access.as_ref(),
            subject_key.as_ref(),
        ))
        .await;
        let (identity, welfare, licensing, evaluation) = match started {
            Ok(services) => services,
            Err(error) => {
                stop_watching_policy.cancel();
                stop_nats(nats, config.shutdown_timeout).await;
                return Err(error);
            }
        };
        let services = vec![
            ServiceEndpoint::new("identity", identity.address()),
            ServiceEndpoint::new("welfare", welfare.address()),
            ServiceEndpoint::new("licensing", licensing.address()),
            ServiceEndpoint::new("evaluation", evaluation.address()),
        ];
        let mut stack = Self {
            nats,
            identity,
            welfare,
            licensing,
            evaluation,
            console: None,
            endpoints: Endpoints {
                nats_url: nats_url.clone(),
                nats_embedded: config.nats.url.is_none(),
                services,
                console: None,
                data_dir: config.data_dir.clone(),
                certificates_dir: certificates
                    .as_ref()
                    .map(|certificates| certificates.dir.clone()),
            },
            operator_tls: match &certificates {
                Some(certificates) => Some(certificates.identity(OPERATOR)?),
                None => None,
            },
            shutdown_timeout: config.shutdown_timeout,
            stop_watching_policy,
            users: users.clone(),
            _lock: lock,
        };
        if config.console.enabled {
            let console = async {
                let bus = Bus::connect(users.options(&nats_url, CONSOLE))
                    .await
                    .map_err(|error| StackError::Console(format!("bus: {error}")))?;
                let tls = match &certificates {
                    Some(certificates) => Some(certificates.identity(CONSOLE)?),
                    None => None,
                };
                let audit = match (&tls, &subject_key) {
                    (Some(tls), Some(subject_key)) => Some(AuditAccess {
                        subject_key: subject_key.clone(),
                        trust: TrustAnchors::from_pem(tls.ca_pem())?,
                    }),
                    _ => None,
                };
                let state =
                    ConsoleState::new(bus, stack.endpoints.clone(), observability, tls, audit);
                Console::start(config.console.listen, state)
                    .await
                    .map_err(StackError::Console)
            }
            .await;
            match console {
                Ok(console) => {
                    stack.endpoints.console = Some(console.address());
                    stack.console = Some(console);
                }
                Err(error) => {
                    stack.stop().await;
                    return Err(error);
                }
            }
        }
        Ok(stack)
    }

    /// The embedded nats-server's process id (for operators' tools and fault tests).
    pub fn embedded_nats_pid(&self) -> Option<u32> {
        self.nats.as_ref().and_then(Supervised::pid)
    }

    /// Options to connect to the stack's NATS as `name` (a service or `console`), with its
    /// user and reply prefix when the stack generated users; for operators' tools and tests.
    pub fn bus_options(&self, name: &str) -> BusOptions {
        self.users.options(&self.endpoints.nats_url, name)
    }

    /// Where each part listens.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Waits until every service answers its gRPC health check with SERVING.
    pub async fn wait_until_healthy(&self, timeout: Duration) -> Result<(), StackError> {
        let started = Instant::now();
        for endpoint in &self.endpoints.services {
            loop {
                let reason = match check_health(endpoint, self.operator_tls.as_ref()).await {
                    Ok(()) => break,
                    Err(reason) => reason,
                };
                if started.elapsed() > timeout {
                    return Err(StackError::Unhealthy {
                        part: endpoint.name.clone(),
                        waited: timeout,
                        reason,
                    });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Stops everything in order: the console, then the services (each stops taking calls,
    /// finishes what it handles, and keeps unsent events in its outbox), then NATS, which
    /// flushes its store. Parts still running after the shutdown timeout are abandoned with an
    /// error in the log; nothing acknowledged is lost, since events live in outboxes and streams.
    pub async fn stop(self) {
        let timeout = self.shutdown_timeout;
        self.stop_watching_policy.cancel();
        let services = async {
            if let Some(console) = self.console {
                console.stop().await;
            }
            // Callers of identity first, so their in-flight calls to it can finish.
            self.welfare.stop().await;
            self.licensing.stop().await;
            self.evaluation.stop().await;
            self.identity.stop().await;
        };
        if tokio::time::timeout(timeout, services).await.is_err() {
            tracing::error!(
                message = "Services did not stop within the shutdown timeout.",
                timeout_secs = timeout.as_secs(),
            );
        }
        stop_nats(self.nats, timeout).await;
    }
}

async fn stop_nats(nats: Option<Supervised>, timeout: Duration) {
    if let Some(supervised) = nats {
        supervised.stop(timeout).await;
    }
}

/// The embedded nats-server with a watchdog that restarts it, on the same port and store, if
/// it exits while the stack runs; the services' connections reconnect by themselves.
#[derive(Debug)]
struct Supervised {
    server: Arc<Mutex<Option<EmbeddedNats>>>,
    client_url: String,
    watchdog: JoinHandle<()>,
    stop_watching: CancellationToken,
}

impl Supervised {
    async fn start(settings: EmbeddedNatsSettings) -> Result<Self, StackError> {
        let first = settings.clone();
        let server = tokio::task::spawn_blocking(move || EmbeddedNats::start(&first))
            .await
            .map_err(|error| StackError::Console(format!("NATS start task: {error}")))??;
        tracing::info!(
            message = "Embedded nats-server ready.",
            url = server.client_url(),
            version = server.version(),
        );
        let client_url = server.client_url().to_owned();
        // Restarts must come back where the clients look for the server.
        let mut restart = settings;
        if let Some(port) = server.client_port() {
            restart.listen.set_port(port);
        }
        let server = Arc::new(Mutex::new(Some(server)));
        let stop_watching = CancellationToken::new();
        let watchdog = tokio::spawn(watch(server.clone(), restart, stop_watching.clone()));
        Ok(Self {
            server,
            client_url,
            watchdog,
            stop_watching,
        })
    }

    async fn stop(self, timeout: Duration) {
        self.stop_watching.cancel();
        let _ = self.watchdog.await;
        let server = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(server) = server else {
            return;
        };
        match tokio::task::spawn_blocking(move || server.stop(timeout)).await {
            Ok(Ok(())) => tracing::info!(message = "Embedded nats-server stopped."),
            Ok(Err(error)) => {
                tracing::error!(message = "Embedded nats-server did not stop cleanly.", %error);
            }
            Err(error) => {
                tracing::error!(message = "Embedded nats-server stop task failed.", %error);
            }
        }
    }

    fn pid(&self) -> Option<u32> {
        self.server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(EmbeddedNats::pid)
    }
}

/// Checks every second that the embedded server runs, and restarts it when it does not.
async fn watch(
    server: Arc<Mutex<Option<EmbeddedNats>>>,
    settings: EmbeddedNatsSettings,
    stop: CancellationToken,
) {
    let mut failures: u32 = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let exited = server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            .is_some_and(|running| !running.is_running());
        if !exited {
            continue;
        }
        tracing::error!(
            message = "Embedded nats-server exited; restarting it.",
            log = %settings.dir.join("nats-server.log").display(),
        );
        let restart = settings.clone();
        match tokio::task::spawn_blocking(move || EmbeddedNats::start(&restart)).await {
            Ok(Ok(restarted)) => {
                tracing::info!(
                    message = "Embedded nats-server restarted.",
                    url = restarted.client_url(),
                );
                *server.lock().unwrap_or_else(PoisonError::into_inner) = Some(restarted);
                failures = 0;
            }
            Ok(Err(error)) => {
                failures = failures.saturating_add(1);
                tracing::error!(message = "Embedded nats-server did not restart.", %error, failures);
                // Back off so a server that cannot start does not spin.
                tokio::time::sleep(Duration::from_secs(u64::from(failures.min(30)))).await;
            }
            Err(error) => {
                tracing::error!(message = "Embedded nats-server restart task failed.", %error);
            }
        }
    }
}

fn lock_data_dir(dir: &std::path::Path) -> Result<File, StackError> {
    let failed = |reason: String| StackError::DataDir {
        path: dir.to_owned(),
        reason,
    };
    std::fs::create_dir_all(dir).map_err(|error| failed(format!("cannot create it: {error}")))?;
    let lock = File::create(dir.join("govbus.lock"))
        .map_err(|error| failed(format!("cannot write in it: {error}")))?;
    lock.try_lock().map_err(|_| {
        failed(
            "another govbus stack is running on it; stop it or choose another data_dir".to_owned(),
        )
    })?;
    Ok(lock)
}

type Services = (
    govbus_identity::Application,
    govbus_welfare::Application,
    govbus_licensing::Application,
    govbus_evaluation::Application,
);

async fn start_services(
    config: &StackConfig,
    nats_url: &str,
    users: &NatsUsers,
    certificates: Option<&Certificates>,
    access: Option<&AccessPolicy>,
    audit_subject_key: Option<&SubjectKey>,
) -> Result<Services, StackError> {
    let tls = |service: &str| match certificates {
        Some(certificates) => certificates.identity(service).map(Some),
        None => Ok(None),
    };
    let scheme = if certificates.is_some() {
        "https"
    } else {
        "http"
    };
    let bus = |service: &str| users.options(nats_url, service).wait_for_server(true);
    let failed = |service: &'static str| move |source| StackError::Service { service, source };
    let identity = govbus_identity::Application::build(govbus_identity::IdentityConfig {
        database_url: config.database_url("identity"),
        listen: config.identity.listen,
        bus: bus("identity"),
        storage: config.storage.settings(),
        tls: tls("identity")?,
        access: access.cloned(),
        audit_subject_key: audit_subject_key.cloned(),
        call_report_interval: Duration::from_secs(60),
    })
    .await
    .map_err(failed("identity"))?;
    let identity_url = format!("{scheme}://{}", identity.address());
    let rest = async {
        let welfare = govbus_welfare::Application::build(govbus_welfare::WelfareConfig {
            database_url: config.database_url("welfare"),
            listen: config.welfare.listen,
            identity_url: identity_url.clone(),
            bus: bus("welfare"),
            storage: config.storage.settings(),
            tls: tls("welfare")?,
            access: access.cloned(),
            audit_subject_key: audit_subject_key.cloned(),
        })
        .await
        .map_err(failed("welfare"))?;
        let licensing =
            match govbus_licensing::Application::build(govbus_licensing::LicensingConfig {
                database_url: config.database_url("licensing"),
                listen: config.licensing.listen,
                identity_url,
                bus: bus("licensing"),
                storage: config.storage.settings(),
                tls: tls("licensing")?,
                access: access.cloned(),
                audit_subject_key: audit_subject_key.cloned(),
                deadlines: govbus_licensing::Deadlines {
                    verification: config.licensing.verification_deadline,
                    approval: config.licensing.approval_deadline,
                },
                deadline_check_interval: Duration::from_secs(1),
            })
            .await
            {
                Ok(licensing) => licensing,
                Err(source) => {
                    welfare.stop().await;
                    return Err(failed("licensing")(source));
                }
            };
        let evaluation =
            match govbus_evaluation::Application::build(govbus_evaluation::EvaluationConfig {
                database_url: config.database_url("evaluation"),
                listen: config.evaluation.listen,
                bus: bus("evaluation"),
                storage: config.storage.settings(),
                tls: tls("evaluation")?,
                access: access.cloned(),
                evidence_services: govbus_evaluation::EvaluationConfig::default_evidence_services(),
                instruments_dir: None,
            })
            .await
            {
                Ok(evaluation) => evaluation,
                Err(source) => {
                    welfare.stop().await;
                    licensing.stop().await;
                    return Err(failed("evaluation")(source));
                }
            };
        Ok((welfare, licensing, evaluation))
    };
    match Box::pin(rest).await {
        Ok((welfare, licensing, evaluation)) => Ok((identity, welfare, licensing, evaluation)),
        Err(error) => {
            identity.stop().await;
            Err(error)
        }
    }
}

/// A channel to `endpoint`, over mutual TLS with `tls` (checking the server's certificate
/// names the service) or plain HTTP/2 without.
pub fn grpc_channel(
    endpoint: &ServiceEndpoint,
    tls: Option<&ServiceTls>,
) -> Result<tonic::transport::Channel, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut channel =
        tonic::transport::Endpoint::from_shared(format!("{scheme}://{}", endpoint.address))
            .map_err(|error| error.to_string())?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
    if let Some(tls) = tls {
        channel = channel
            .tls_config(tls.client_config(&endpoint.name))
            .map_err(|error| format!("TLS: {error}"))?;
    }
    Ok(channel.connect_lazy())
}

/// Asks a service's standard gRPC health service whether it is serving.
pub(crate) async fn check_health(
    endpoint: &ServiceEndpoint,
    tls: Option<&ServiceTls>,
) -> Result<(), String> {
    let channel = grpc_channel(endpoint, tls)?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
    match response.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!("reports {}", other.as_str_name())),
    }
}

/// The policy file in force: the configured one, or the shipped policy copied into the data
/// folder at the first start so operators can edit it there.
fn open_policy(config: &StackConfig) -> Result<AccessPolicy, StackError> {
    let path = match &config.tls.policy {
        Some(path) => path.clone(),
        None => {
            let path = config.data_dir.join("access-policy.toml");
            if !path.is_file() {
                std::fs::write(&path, SHIPPED_POLICY).map_err(|source| StackError::PolicyFile {
                    path: path.clone(),
                    source,
                })?;
            }
            path
        }
    };
    Ok(AccessPolicy::from_file(&path)?)
}

/// The access policy govbus ships (`deploy/access-policy.toml`).
pub const SHIPPED_POLICY: &str = include_str!("../../../../deploy/access-policy.toml");

/// The client identity of the console.
pub const CONSOLE: &str = "console";
/// The client identity of operators' tools (`govbus demo`).
pub const OPERATOR: &str = "operator";

/// The stack's certificate folder.
#[derive(Debug, Clone)]
pub struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    /// Opens `dir`, making a development CA and certificates there if it holds none.
    pub fn open(dir: PathBuf) -> Result<Self, StackError> {
        if !dir.join("ca.pem").is_file() {
            govbus_kit::tls::generate_development_certificates(
                &dir,
                &[
                    "identity",
                    "welfare",
                    "licensing",
                    "evaluation",
                    CONSOLE,
                    OPERATOR,
                ],
            )
            .map_err(|source| StackError::Certificates {
                dir: dir.clone(),
                source,
            })?;
            tracing::warn!(
                message = "Made a development CA and certificates; install certificates from your own CA for production.",
                dir = %dir.display(),
            );
        }
        Ok(Self { dir })
    }

    /// The certificate and key of `name`.
    pub fn identity(&self, name: &str) -> Result<ServiceTls, StackError> {
        ServiceTls::from_files(name, &CertificatePaths::in_dir(&self.dir, name)).map_err(|source| {
            StackError::Certificates {
                dir: self.dir.clone(),
                source,
            }
        })
    }
}

/// The NATS users of the embedded server: one per service with the permissions its contract
/// needs, and the console with an operator's. Passwords are random and new at every start;
/// they live only in memory and in the generated server configuration (readable by the owner).
#[derive(Debug, Clone, Default)]
pub(crate) struct NatsUsers {
    passwords: std::collections::HashMap<String, String>,
    authorization: String,
    stream_replicas: usize,
}

impl NatsUsers {
    fn generate() -> Result<Self, StackError> {
        let topology = govbus_bus::Topology::default();
        let contract =
            |service: &'static str,
             result: Result<govbus_bus::ServiceContract, govbus_bus::AdapterError>| {
                result.map_err(|error| StackError::Contract {
                    service,
                    reason: error.to_string(),
                })
            };
        let contracts = [
            contract("identity", govbus_identity::contract())?,
            contract("welfare", govbus_welfare::contract())?,
            contract("licensing", govbus_licensing::contract())?,
            contract(
                "evaluation",
                govbus_evaluation::contract(
                    &govbus_evaluation::EvaluationConfig::default_evidence_services(),
                ),
            )?,
        ];
        let mut users: Vec<NatsUser> = contracts
            .iter()
            .map(|contract| NatsUser {
                name: contract.service.clone(),
                password: uuid::Uuid::new_v4().simple().to_string(),
                permissions: Permissions::for_service(contract, &topology),
            })
            .collect();
        users.push(NatsUser {
            name: CONSOLE.to_owned(),
            password: uuid::Uuid::new_v4().simple().to_string(),
            permissions: Permissions::operator(&topology, CONSOLE),
        });
        Ok(Self {
            passwords: users
                .iter()
                .map(|user| (user.name.clone(), user.password.clone()))
                .collect(),
            authorization: authorization(&users),
            stream_replicas: 1,
        })
    }

    /// The same users; the streams the services create get `replicas` copies.
    fn with_stream_replicas(mut self, replicas: usize) -> Self {
        self.stream_replicas = replicas;
        self
    }

    /// Connection options for `name`: its user and reply prefix when users were generated.
    fn options(&self, nats_url: &str, name: &str) -> BusOptions {
        let options = BusOptions::new(nats_url)
            .client_name(name)
            .stream_replicas(self.stream_replicas);
        match self.passwords.get(name) {
            Some(password) => options
                .user_password(name, password.clone())
                .inbox_prefix(inbox_prefix(name)),
            None => options,
        }
    }
}
