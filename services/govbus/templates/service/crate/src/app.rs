//! Building and running the {{name}} service.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use govbus_bus::{Bus, BusOptions, Consumer, EventMeta, HandleError, ServiceAdapter};
use govbus_kit::audit::CallAudit;
use govbus_kit::grpc::{MAX_REQUEST_BYTES, server_with_health_and_reflection};
use govbus_kit::runtime::{bind, open_processing_log};
use govbus_kit::{ServiceRuntime, StartError};
use govbus_proto::FILE_DESCRIPTOR_SET;
use govbus_proto::identity::v1::CitizenDeceased;
use govbus_proto::{{name}}::v1::{{name}}_service_server::{{Name}}ServiceServer;
use govbus_proto::{{name}}::v1::{RequestClosed, RequestFiled};
use govbus_storage::{Storage, StorageSettings};

use crate::grpc::{{Name}}Api;
use crate::office::Office;
use crate::store::MIGRATIONS;

/// The service name on the bus and in the database's migration records.
pub const SERVICE: &str = "{{name}}";

/// The durable consumer of identity's events.
pub const IDENTITY_CONSUMER: &str = "{{name}}-identity";

/// Why {{name}} processes identity's events about people, as the processing log records it.
const IDENTITY_CONSUMER_PURPOSE: &str = "Close the open requests of residents who have died";

/// Everything the {{name}} service needs to start.
#[derive(Debug, Clone)]
pub struct {{Name}}Config {
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// Where gRPC listens; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The bus connection.
    pub bus: BusOptions,
    /// The database, the outbox relay and retention.
    pub storage: StorageSettings,
    /// Mutual TLS: this service's certificate and the CA it trusts; `None` serves plain
    /// HTTP/2 (development and tests only).
    pub tls: Option<govbus_kit::tls::ServiceTls>,
    /// Who may call which method (enforced with `tls` only).
    pub access: Option<govbus_kit::access::AccessPolicy>,
    /// The deployment's key for hashing people in the processing log.
    pub audit_subject_key: Option<govbus_kit::audit::SubjectKey>,
    /// The time-stamping authority that stamps each processing-log block (none: blocks are
    /// untimestamped, and `govbus audit verify` says so).
    pub audit_timestamps: Option<govbus_kit::audit::Tsa>,
}

/// What {{name}} publishes and consumes, without starting it (for NATS permissions): the same
/// declaration as a running {{name}}'s, with handlers that are never run.
pub fn contract() -> Result<govbus_bus::ServiceContract, govbus_bus::AdapterError> {
    consuming(publishing(), NotRunning).contract()
}

/// What {{name}} publishes.
fn publishing() -> ServiceAdapter {
    ServiceAdapter::new(SERVICE)
        .publishes::<RequestFiled>()
        .publishes::<RequestClosed>()
}

/// What {{name}} consumes, and what handles it: `reactions` (the office, when running).
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

/// What {{name}} does with identity's events.
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

/// A running {{name}} service.
#[derive(Debug)]
pub struct Application {
    runtime: ServiceRuntime,
}

impl Application {
    /// Opens the database, connects to the bus, starts consuming identity's events, the outbox
    /// relay and the gRPC server.
    pub async fn build(config: {{Name}}Config) -> Result<Self, StartError> {
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
        let mut declaration = publishing();
        if let Some(log) = &processing_log {
            declaration = declaration.observe_deliveries(Arc::new(log.clone()));
        }
        let publisher = declaration.publisher(&bus)?;
        let storage = Storage::start(db.clone(), publisher.clone(), config.storage);
        let office = Office::new(db.clone(), publisher);
        let adapter = consuming(declaration, office.clone()).start(&bus).await?;
        let listener = bind(config.listen).await?;
        let router = server_with_health_and_reflection::<{{Name}}ServiceServer<{{Name}}Api>>(
            SERVICE,
            FILE_DESCRIPTOR_SET,
            config.access.clone(),
        )
        .await?
        .add_service(
            {{Name}}ServiceServer::new({{Name}}Api::new(office, CallAudit::new(processing_log)))
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
        Ok(Self { runtime })
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
        self.runtime.stop().await;
    }
}
