//! Building and running the licensing service.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use govbus_bus::{Bus, BusOptions, Consumer, EventMeta, HandleError, ServiceAdapter};
use govbus_civil::calendar::WorkingCalendar;
use govbus_identity_client::IdentityClient;
use govbus_kit::audit::CallAudit;
use govbus_kit::grpc::{MAX_REQUEST_BYTES, server_with_health_and_reflection};
use govbus_kit::runtime::{bind, open_processing_log};
use govbus_kit::{ServiceRuntime, StartError};
use govbus_proto::FILE_DESCRIPTOR_SET;
use govbus_proto::identity::v1::CitizenDeceased;
use govbus_proto::licensing::v1::licensing_service_server::LicensingServiceServer;
use govbus_proto::licensing::v1::{
    ApplicationSubmitted, LicenceDecided, LicenceDeemedApproved, LicenceFlaggedForReview, NibIssued,
};
use govbus_storage::{Storage, StorageSettings};

use crate::domain::Deadlines;
use crate::grpc::LicensingApi;
use crate::office::Office;
use crate::store::MIGRATIONS;

/// The service name on the bus and in the database's migration records.
pub const SERVICE: &str = "licensing";

/// Why licensing processes identity's events about people, as the processing log records it.
const IDENTITY_CONSUMER_PURPOSE: &str =
    "Stop open licence applications of applicants who have died";

/// Everything the licensing service needs to start.
#[derive(Debug, Clone)]
pub struct LicensingConfig {
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
    /// Who may call which method (enforced with `tls` only: callers are known by their
    /// certificates).
    pub access: Option<govbus_kit::access::AccessPolicy>,
    /// The deployment's key for hashing people in the processing log. With `tls` (whose key
    /// signs the log), every call and event delivery touching a person is recorded.
    pub audit_subject_key: Option<govbus_kit::audit::SubjectKey>,
    /// The time-stamping authority that stamps each processing-log block (none: blocks are
    /// untimestamped, and `govbus audit verify` says so).
    pub audit_timestamps: Option<govbus_kit::audit::Tsa>,
    /// Service-level deadlines.
    pub deadlines: Deadlines,
    /// How often passed deadlines are looked for.
    pub deadline_check_interval: Duration,
    /// The working-day calendar deadlines are counted in; `None`: the shipped decrees.
    pub calendar: Option<&'static WorkingCalendar>,
    /// How long a rejected application's details are kept after its rejection; then they are
    /// erased, hourly, in small batches.
    pub keep_rejected_details: Duration,
}

/// How often details past their retention period are looked for.
const RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// What licensing publishes and consumes, without starting it (for NATS permissions): the same
/// declaration as a running licensing's, with a handler that is never run.
pub fn contract() -> Result<govbus_bus::ServiceContract, govbus_bus::AdapterError> {
    consuming(publishing(), NotRunning).contract()
}

/// The durable consumer of identity's events.
pub const IDENTITY_CONSUMER: &str = "licensing-identity";

/// What licensing publishes.
fn publishing() -> ServiceAdapter {
    ServiceAdapter::new(SERVICE)
        .publishes::<ApplicationSubmitted>()
        .publishes::<NibIssued>()
        .publishes::<LicenceDecided>()
        .publishes::<LicenceDeemedApproved>()
        .publishes::<LicenceFlaggedForReview>()
}

/// What licensing consumes, and what handles it: `reactions` (the office, in a running
/// licensing).
fn consuming(adapter: ServiceAdapter, reactions: impl IdentityReactions) -> ServiceAdapter {
    adapter.consumer(
        Consumer::new(IDENTITY_CONSUMER)
            .purpose(IDENTITY_CONSUMER_PURPOSE)
            .on(move |event: CitizenDeceased, meta| {
                let reactions = reactions.clone();
                async move { reactions.citizen_deceased(event, meta).await }
            }),
    )
}

/// What licensing does with identity's events.
trait IdentityReactions: Clone + Send + Sync + 'static {
    fn citizen_deceased(
        &self,
        event: CitizenDeceased,
        meta: EventMeta,
    ) -> impl Future<Output = Result<(), HandleError>> + Send;
}

impl IdentityReactions for Office {
    fn citizen_deceased(
        &self,
        event: CitizenDeceased,
        meta: EventMeta,
    ) -> impl Future<Output = Result<(), HandleError>> + Send {
        self.on_citizen_deceased(event, meta)
    }
}

/// The handler of a declaration that is only read, never started.
#[derive(Debug, Clone, Copy)]
struct NotRunning;

impl IdentityReactions for NotRunning {
    async fn citizen_deceased(&self, _: CitizenDeceased, _: EventMeta) -> Result<(), HandleError> {
        Err(HandleError::permanent(
            "a declaration read for its contract never handles events",
        ))
    }
}

/// A running licensing service.
#[derive(Debug)]
pub struct Application {
    runtime: ServiceRuntime,
    watcher: govbus_kit::periodic::PeriodicTask,
    retention: govbus_kit::periodic::PeriodicTask,
}

impl Application {
    /// Opens the database, connects to the bus, starts consuming identity's events, the deadline
    /// watcher, the outbox relay and the gRPC server.
    pub async fn build(config: LicensingConfig) -> Result<Self, StartError> {
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
        let calendar = match config.calendar {
            Some(calendar) => calendar,
            None => WorkingCalendar::shipped().map_err(|error| StartError::Data {
                what: "the working-day calendar",
                source: error.into(),
            })?,
        };
        let office = Office::new(db.clone(), publisher, identity, config.deadlines, calendar);
        let recounted = office
            .recount_provisional_deadlines()
            .await
            .map_err(|error| StartError::Data {
                what: "the provisional deadlines",
                source: error.into(),
            })?;
        if recounted > 0 {
            tracing::info!(
                message = "Deadlines counted again with the days off now known.",
                recounted
            );
        }
        let adapter = consuming(declaration, office.clone()).start(&bus).await?;
        let watcher = crate::deadlines::watch(office.clone(), config.deadline_check_interval);
        let retention = {
            let (office, keep) = (office.clone(), config.keep_rejected_details);
            govbus_kit::periodic::PeriodicTask::spawn(
                "licensing detail retention",
                RETENTION_CHECK_INTERVAL,
                move || {
                    let office = office.clone();
                    async move { office.erase_rejected_details(keep).await.map(|_| ()) }
                },
            )
        };
        let listener = bind(config.listen).await?;
        let router = server_with_health_and_reflection::<LicensingServiceServer<LicensingApi>>(
            SERVICE,
            FILE_DESCRIPTOR_SET,
            config.access.clone(),
        )
        .await?
        .add_service(
            LicensingServiceServer::new(LicensingApi::new(office, CallAudit::new(processing_log)))
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
            watcher,
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

    /// Stops the service in order.
    pub async fn stop(self) {
        self.watcher.stop().await;
        self.retention.stop().await;
        self.runtime.stop().await;
    }
}
