//! The whole stack in one process: NATS (embedded or given), the services and the console,
//! started in dependency order and stopped in reverse.
//!
//! # Layout
//!
//! - [`data_dir`]: the data folder, held by one stack at a time.
//! - [`nats`]: the embedded nats-server, watched and restarted.
//! - [`users`]: its users, one per service, with the permissions of the service's contract.
//! - [`trust`]: certificates and the access policy.
//! - [`services`]: starting the services in order, with the rollback of a failed start.
//! - [`gateway`]: the REST gateway for applications, in front of the services.
//! - [`callers`]: the callers that are not services (the console, operators' tools).

mod callers;
mod data_dir;
mod error;
mod gateway;
mod nats;
mod services;
mod trust;
mod users;

pub use callers::{CONSOLE, GATEWAY, OPERATOR};
pub use error::StackError;
pub use trust::{Certificates, certificate_names, shipped_policy};

use std::time::{Duration, Instant};

use govbus_bus::{Bus, BusOptions};
use govbus_kit::audit::{SubjectKey, TrustAnchors};
use govbus_kit::tls::ServiceTls;
use govbus_natsd::EmbeddedNatsSettings;
use tokio_util::sync::CancellationToken;

use crate::config::StackConfig;
use crate::console::{AuditAccess, Console, ConsoleState};
use crate::endpoints::{Endpoints, check_health};
use crate::observability::Observability;
use data_dir::DataDirLock;
use gateway::RunningGateway;
use nats::SupervisedNats;
use services::{RunningServices, Shared};
use trust::open_policy;
use users::NatsUsers;

/// A running stack.
#[derive(Debug)]
pub struct Stack {
    nats: Option<SupervisedNats>,
    services: RunningServices,
    gateway: Option<RunningGateway>,
    console: Option<Console>,
    endpoints: Endpoints,
    /// The operator's identity, for the health checks.
    operator_tls: Option<ServiceTls>,
    /// Ends the access policy's reload task.
    stop_watching_policy: CancellationToken,
    /// The embedded server's users.
    users: NatsUsers,
    shutdown_timeout: Duration,
    _lock: DataDirLock,
}

impl Stack {
    /// Starts every part; on failure, what already started is stopped again.
    pub async fn start(
        config: StackConfig,
        observability: Observability,
    ) -> Result<Self, StackError> {
        let lock = DataDirLock::acquire(&config.data_dir)?;
        let agencies = config.instance.agencies()?;
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
        let timestamps = config.audit.tsa().map_err(|problem| {
            StackError::Audit(govbus_kit::audit::AuditError::Invalid(problem))
        })?;
        let tsa_trust = config.audit.tsa_trust().map_err(|problem| {
            StackError::Audit(govbus_kit::audit::AuditError::Invalid(problem))
        })?;
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
                let supervised = SupervisedNats::start(settings).await?;
                let url = supervised.client_url.clone();
                (Some(supervised), url, users)
            }
        };
        let shared = Shared {
            agencies: &agencies,
            config: &config,
            nats_url: &nats_url,
            users: &users,
            certificates: certificates.as_ref(),
            access: access.as_ref(),
            audit_subject_key: subject_key.as_ref(),
            audit_timestamps: timestamps.as_ref(),
        };
        let started = async {
            Box::pin(gateway::provision_stream(users.options(&nats_url, GATEWAY))).await?;
            Box::pin(RunningServices::start(&shared)).await
        };
        let services = match Box::pin(started).await {
            Ok(services) => services,
            Err(error) => {
                stop_watching_policy.cancel();
                stop_nats(nats, config.shutdown_timeout).await;
                return Err(error);
            }
        };
        let endpoints = services.endpoints();
        let mut stack = Self {
            nats,
            services,
            gateway: None,
            console: None,
            endpoints: Endpoints {
                nats_url: nats_url.clone(),
                nats_embedded: config.nats.url.is_none(),
                services: endpoints,
                console: None,
                gateway: None,
                gateway_url: None,
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
        if config.gateway.enabled {
            match (&certificates, &access) {
                (Some(certificates), Some(access)) => {
                    match Box::pin(RunningGateway::start(
                        &config,
                        certificates,
                        access,
                        &stack.endpoints.services,
                        &stack.services,
                        users.options(&nats_url, GATEWAY),
                        subject_key.as_ref(),
                    ))
                    .await
                    {
                        Ok(gateway) => {
                            stack.endpoints.gateway = Some(gateway.address());
                            stack.endpoints.gateway_url = Some(gateway.url().to_owned());
                            stack.gateway = Some(gateway);
                        }
                        Err(error) => {
                            stack.stop().await;
                            return Err(error);
                        }
                    }
                }
                _ => tracing::warn!(
                    message = "The REST gateway is not started: it needs tls.enabled, since services believe the application it names only from its certificate.",
                ),
            }
        }
        if config.console.enabled {
            let console = async {
                let bus = Bus::connect(users.options(&nats_url, CONSOLE))
                    .await
                    .map_err(StackError::ConsoleBus)?;
                let tls = match &certificates {
                    Some(certificates) => Some(certificates.identity(CONSOLE)?),
                    None => None,
                };
                let audit = match (&tls, &subject_key) {
                    (Some(tls), Some(subject_key)) => Some(AuditAccess {
                        subject_key: subject_key.clone(),
                        trust: match &tsa_trust {
                            Some(tsa) => {
                                TrustAnchors::from_pem(tls.ca_pem())?.with_tsa(tsa.clone())
                            }
                            None => TrustAnchors::from_pem(tls.ca_pem())?,
                        },
                    }),
                    _ => None,
                };
                let state =
                    ConsoleState::new(bus, stack.endpoints.clone(), observability, tls, audit);
                Ok(Console::start(config.console.listen, state).await?)
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
        self.nats.as_ref().and_then(SupervisedNats::pid)
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
                        reason: reason.to_string(),
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
            if let Some(gateway) = self.gateway {
                gateway.stop().await;
            }
            self.services.stop().await;
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

async fn stop_nats(nats: Option<SupervisedNats>, timeout: Duration) {
    if let Some(supervised) = nats {
        supervised.stop(timeout).await;
    }
}
