//! Building and running the complaints service.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use govbus_bus::{Backoff, Bus, BusOptions, Consumer, EventMeta, HandleError, ServiceAdapter};
use govbus_civil::calendar::WorkingCalendar;
use govbus_identity_client::IdentityClient;
use govbus_kit::audit::CallAudit;
use govbus_kit::grpc::{MAX_REQUEST_BYTES, server_with_health_and_reflection};
use govbus_kit::outbound::{HttpTarget, HttpTargetSettings};
use govbus_kit::periodic::PeriodicTask;
use govbus_kit::runtime::{bind, open_processing_log};
use govbus_kit::{ServiceRuntime, StartError};
use govbus_proto::FILE_DESCRIPTOR_SET;
use govbus_proto::complaints::v1::complaints_service_server::ComplaintsServiceServer;
use govbus_proto::complaints::v1::{
    ComplaintAccepted, ComplaintClosed, ComplaintEscalated, ComplaintFiled, ComplaintForwarded,
    ComplaintRefused, ComplaintReopened, ComplaintResponded, ComplaintRouted,
};
use govbus_storage::{Storage, StorageSettings};

use crate::domain::Deadlines;
use crate::grpc::ComplaintsApi;
use crate::national::NationalChannel;
use crate::office::Office;
use crate::store::MIGRATIONS;
use govbus_civil::agencies::Agencies;

/// The service name on the bus and in the database's migration records.
pub const SERVICE: &str = "complaints";

/// The durable consumer that forwards accepted complaints to the national channel.
pub const NATIONAL_CONSUMER: &str = "complaints-national-channel";

/// Why complaints processes its own acceptances, as the processing log records it.
const NATIONAL_CONSUMER_PURPOSE: &str =
    "Forward accepted complaints to the national complaints channel (SP4N-LAPOR)";

/// The national channel, if the deployment has one.
#[derive(Debug, Clone)]
pub struct NationalSettings {
    /// The endpoint accepted complaints are posted to.
    pub url: String,
    /// Its bearer token.
    pub bearer_token: Option<String>,
    /// PEM certificates of authorities trusted besides the system's.
    pub extra_roots_pem: Option<Vec<u8>>,
    /// The longest one attempt may take.
    pub timeout: Duration,
    /// The government the complaints are about, as the national channel knows it.
    pub instance: String,
    /// Deliveries before a complaint the channel keeps refusing or failing is dead-lettered.
    pub max_deliveries: u64,
    /// Delays between attempts.
    pub backoff: Backoff,
}

/// Everything the complaints service needs to start.
#[derive(Debug, Clone)]
pub struct ComplaintsConfig {
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// Where gRPC listens; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The identity service, e.g. `http://127.0.0.1:50051`.
    pub identity_url: String,
    /// The bus connection.
    pub bus: BusOptions,
    /// The database, the outbox relay and retention.
    pub storage: StorageSettings,
    /// Mutual TLS: this service's certificate and the CA it trusts; `None` serves plain
    /// HTTP/2 (development and tests only).
    pub tls: Option<govbus_kit::tls::ServiceTls>,
    /// Who may call which method (enforced with `tls` only).
    pub access: Option<govbus_kit::access::AccessPolicy>,
    /// The agencies complaints are routed to; `None`: Kota Malang's, shipped.
    pub agencies: Option<Arc<Agencies>>,
    /// The deployment's key for hashing people in the processing log.
    pub audit_subject_key: Option<govbus_kit::audit::SubjectKey>,
    /// The time-stamping authority that stamps each processing-log block (none: blocks are
    /// untimestamped, and `govbus audit verify` says so).
    pub audit_timestamps: Option<govbus_kit::audit::Tsa>,
    /// Working days of each stage.
    pub deadlines: Deadlines,
    /// How often passed deadlines are looked for.
    pub deadline_check_interval: Duration,
    /// The working-day calendar; `None`: the shipped decrees.
    pub calendar: Option<&'static WorkingCalendar>,
    /// The national channel; `None`: complaints stay in the city.
    pub national: Option<NationalSettings>,
    /// How long a complaint's texts are kept after its handling ended (refused, closed, or
    /// responded and not reopened); then they are erased, hourly, in small batches.
    pub keep_ended_texts: Duration,
}

/// How often texts past their retention period are looked for.
const RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// What complaints publishes and consumes, without starting it (for NATS permissions): the
/// same declaration as a running service's, with a handler that is never run.
pub fn contract() -> Result<govbus_bus::ServiceContract, govbus_bus::AdapterError> {
    consuming(publishing(), NotRunning, None).contract()
}

/// What complaints publishes.
fn publishing() -> ServiceAdapter {
    ServiceAdapter::new(SERVICE)
        .publishes::<ComplaintFiled>()
        .publishes::<ComplaintAccepted>()
        .publishes::<ComplaintRefused>()
        .publishes::<ComplaintRouted>()
        .publishes::<ComplaintResponded>()
        .publishes::<ComplaintClosed>()
        .publishes::<ComplaintReopened>()
        .publishes::<ComplaintEscalated>()
        .publishes::<ComplaintForwarded>()
}

/// What complaints consumes: its own acceptances, forwarded by `reactions`.
fn consuming(
    adapter: ServiceAdapter,
    reactions: impl Reactions,
    national: Option<&NationalSettings>,
) -> ServiceAdapter {
    let mut consumer = Consumer::new(NATIONAL_CONSUMER)
        .purpose(NATIONAL_CONSUMER_PURPOSE)
        .on(move |event: ComplaintAccepted, meta| {
            let reactions = reactions.clone();
            async move { reactions.complaint_accepted(event, meta).await }
        });
    if let Some(national) = national {
        consumer = consumer
            .max_deliveries(national.max_deliveries)
            .backoff(national.backoff.clone());
    }
    adapter.consumer(consumer)
}

/// What complaints does with its events.
trait Reactions: Clone + Send + Sync + 'static {
    fn complaint_accepted(
        &self,
        event: ComplaintAccepted,
        meta: EventMeta,
    ) -> impl Future<Output = Result<(), HandleError>> + Send;
}

impl Reactions for Office {
    fn complaint_accepted(
        &self,
        event: ComplaintAccepted,
        meta: EventMeta,
    ) -> impl Future<Output = Result<(), HandleError>> + Send {
        self.forward_accepted(event, meta)
    }
}

/// The handler of a declaration that is only read, never started.
#[derive(Debug, Clone, Copy)]
struct NotRunning;

impl Reactions for NotRunning {
    async fn complaint_accepted(
        &self,
        _: ComplaintAccepted,
        _: EventMeta,
    ) -> Result<(), HandleError> {
        Err(HandleError::permanent(
            "a declaration read for its contract never handles events",
        ))
    }
}

/// A running complaints service.
#[derive(Debug)]
pub struct Application {
    runtime: ServiceRuntime,
    escalations: PeriodicTask,
    retention: PeriodicTask,
}

impl Application {
    /// Opens the database, connects to the bus, starts forwarding accepted complaints, the
    /// escalation of passed deadlines, the outbox relay and the gRPC server.
    pub async fn build(config: ComplaintsConfig) -> Result<Self, StartError> {
        let data = |what: &'static str| {
            move |error: Box<dyn std::error::Error + Send + Sync>| StartError::Data {
                what,
                source: error,
            }
        };
        let agencies = match config.agencies {
            Some(agencies) => agencies,
            None => Arc::new(
                Agencies::shipped()
                    .map_err(|error| data("the agencies' list")(error.into()))?
                    .clone(),
            ),
        };
        let calendar = match config.calendar {
            Some(calendar) => calendar,
            None => WorkingCalendar::shipped()
                .map_err(|error| data("the working-day calendar")(error.into()))?,
        };
        let national = config
            .national
            .as_ref()
            .map(|national| {
                HttpTarget::new(HttpTargetSettings {
                    name: "sp4n-lapor",
                    url: national.url.clone(),
                    bearer_token: national.bearer_token.clone(),
                    extra_roots_pem: national.extra_roots_pem.clone(),
                    timeout: national.timeout,
                })
                .map(|target| NationalChannel::new(target, national.instance.clone()))
            })
            .transpose()
            .map_err(|error| data("the national channel")(error.into()))?;
        let db = Storage::open(&config.database_url, SERVICE, MIGRATIONS, &config.storage).await?;
        let bus = Bus::connect(config.bus).await?;
        let (processing_log, log_writer) = open_processing_log(
            &bus,
            SERVICE,
            config.tls.as_ref(),
            config.audit_subject_key.as_ref(),
            config.audit_timestamps.clone(),
        )
        .await?
        .unzip();
        let identity = IdentityClient::new(&config.identity_url, SERVICE, config.tls.as_ref())
            .map_err(|error| StartError::Dependency(error.into()))?;
        let mut declaration = publishing();
        if let Some(log) = &processing_log {
            declaration = declaration.observe_deliveries(Arc::new(log.clone()));
        }
        let publisher = declaration.publisher(&bus)?;
        let storage = Storage::start(db.clone(), publisher.clone(), config.storage);
        let office = Office::new(
            db.clone(),
            publisher,
            identity,
            config.deadlines,
            calendar,
            agencies,
            national,
        );
        let recounted = office
            .recount_provisional_deadlines()
            .await
            .map_err(|error| data("the provisional deadlines")(error.into()))?;
        if recounted > 0 {
            tracing::info!(
                message = "Deadlines counted again with the days off now known.",
                recounted
            );
        }
        let adapter = consuming(declaration, office.clone(), config.national.as_ref())
            .start(&bus)
            .await?;
        let retention = {
            let (office, keep) = (office.clone(), config.keep_ended_texts);
            PeriodicTask::spawn(
                "complaint text retention",
                RETENTION_CHECK_INTERVAL,
                move || {
                    let office = office.clone();
                    async move { office.erase_ended_texts(keep).await.map(|_| ()) }
                },
            )
        };
        let escalations = {
            let office = office.clone();
            PeriodicTask::spawn(
                "complaint escalations",
                config.deadline_check_interval,
                move || {
                    let office = office.clone();
                    async move { office.escalate_overdue().await.map(|_| ()) }
                },
            )
        };
        let listener = bind(config.listen).await?;
        let router = server_with_health_and_reflection::<ComplaintsServiceServer<ComplaintsApi>>(
            SERVICE,
            FILE_DESCRIPTOR_SET,
            config.access.clone(),
        )
        .await?
        .add_service(
            ComplaintsServiceServer::new(ComplaintsApi::new(
                office,
                CallAudit::new(processing_log),
            ))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        );
        let runtime = ServiceRuntime::start(
            router,
            listener,
            config.tls.as_ref(),
            storage,
            adapter,
            log_writer,
        )?;
        Ok(Self {
            runtime,
            escalations,
            retention,
        })
    }

    /// What it publishes and consumes on the bus.
    pub fn contract(&self) -> &govbus_bus::ServiceContract {
        self.runtime.contract()
    }

    /// The gRPC address.
    pub fn address(&self) -> SocketAddr {
        self.runtime.address()
    }

    /// Its gRPC services for `caller` in this process, through the same layers as over the
    /// network (the gateway under `govbus up`).
    pub fn in_process(&self, caller: &str) -> govbus_kit::in_process::InProcessChannel {
        self.runtime.in_process(caller)
    }

    /// Stops the service in order; unsent events stay in the outbox for the next start.
    pub async fn stop(self) {
        self.escalations.stop().await;
        self.retention.stop().await;
        self.runtime.stop().await;
    }
}
