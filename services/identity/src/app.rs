//! Building and running the identity service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use govbus_bus::{Bus, BusOptions, Causality, ServiceAdapter};
use govbus_kit::audit::CallAudit;
use govbus_kit::call_counts::{CallReporter, Counted};
use govbus_kit::grpc::{MAX_REQUEST_BYTES, server_with_health_and_reflection};
use govbus_kit::runtime::{bind, open_processing_log};
use govbus_kit::{ServiceRuntime, StartError};
use govbus_proto::FILE_DESCRIPTOR_SET;
use govbus_proto::identity::v1::identity_service_server::IdentityServiceServer;
use govbus_proto::identity::v1::{
    CallsCounted, CitizenDeceased, CitizenRegistered, CitizenRelocated,
};
use govbus_storage::{Storage, StorageSettings};

use crate::grpc::{DirectCalls, IdentityApi};
use crate::registry::Registry;
use crate::store::MIGRATIONS;

/// How much of the register SQLite's reading connections map into memory (unless the storage
/// settings say otherwise): 1 GiB, more than the register of a city of a million (about
/// 200 MB). Nearly every read asks for one NIK, spread over the whole register, which is far
/// larger than a connection's own page cache; through the map such a read costs no system call
/// and no copy of the page (docs/benchmarks.md). The pages read count in the process's
/// resident memory, shared with the kernel's page cache, which reclaims them like any cached
/// file page.
const REGISTER_MAP: u64 = 1024 * 1024 * 1024;

/// The service name on the bus and in the database's migration records.
pub const SERVICE: &str = "identity";

/// Everything the identity service needs to start.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
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
    /// Who may call which method (enforced with `tls` only: callers are known by their
    /// certificates).
    pub access: Option<govbus_kit::access::AccessPolicy>,
    /// The deployment's key for hashing people in the processing log. With `tls` (whose key
    /// signs the log), every call and event delivery touching a person is recorded.
    pub audit_subject_key: Option<govbus_kit::audit::SubjectKey>,
    /// The time-stamping authority that stamps each processing-log block (none: blocks are
    /// untimestamped, and `govbus audit verify` says so).
    pub audit_timestamps: Option<govbus_kit::audit::Tsa>,
    /// How often counts of other services' calls are published.
    pub call_report_interval: Duration,
}

/// Identity's declaration on the bus: the events it publishes (it consumes none).
fn declaration() -> ServiceAdapter {
    ServiceAdapter::new(SERVICE)
        .publishes::<CitizenRegistered>()
        .publishes::<CitizenRelocated>()
        .publishes::<CitizenDeceased>()
        .publishes::<CallsCounted>()
}

/// What identity publishes and consumes, without starting it (for NATS permissions).
pub fn contract() -> Result<govbus_bus::ServiceContract, govbus_bus::AdapterError> {
    declaration().contract()
}

/// A running identity service.
#[derive(Debug)]
pub struct Application {
    runtime: ServiceRuntime,
    reporter: CallReporter,
}

impl Application {
    /// Opens the database (migrating it), connects to the bus, provisions the identity stream,
    /// starts the outbox relay and the gRPC server.
    pub async fn build(config: IdentityConfig) -> Result<Self, StartError> {
        // Boxed: starting is a large future, and callers await it inside their own.
        Box::pin(Self::start(config)).await
    }

    async fn start(config: IdentityConfig) -> Result<Self, StartError> {
        let mut settings = config.storage;
        settings
            .database
            .sqlite_reader_map
            .get_or_insert(REGISTER_MAP);
        let db = Storage::open(&config.database_url, SERVICE, MIGRATIONS, &settings).await?;
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
        let adapter = declaration().start(&bus).await?;
        let storage = Storage::start(db.clone(), adapter.publisher().clone(), settings);
        let registry = Registry::new(db.clone(), adapter.publisher().clone());
        let calls = DirectCalls::default();
        let publisher = adapter.publisher().clone();
        let reporter = CallReporter::spawn(
            calls.clone(),
            db.clone(),
            config.call_report_interval,
            move |counted: Counted<'_, (Arc<str>, &'static str)>| {
                let (caller, method) = counted.key;
                publisher.encode(
                    &CallsCounted {
                        caller: caller.to_string(),
                        method: (*method).to_owned(),
                        calls: counted.calls,
                        period_start: counted.period_start.to_owned(),
                        period_end: counted.period_end.to_owned(),
                    },
                    &Causality::root(),
                )
            },
        );
        let listener = bind(config.listen).await?;
        let router = server_with_health_and_reflection::<IdentityServiceServer<IdentityApi>>(
            SERVICE,
            FILE_DESCRIPTOR_SET,
            config.access.clone(),
        )
        .await?
        .add_service(
            IdentityServiceServer::new(IdentityApi::new(
                registry,
                calls,
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
        Ok(Self { runtime, reporter })
    }

    /// The gRPC port (useful when the configured port was 0).
    pub fn port(&self) -> u16 {
        self.runtime.address().port()
    }

    /// Whether this replica publishes identity's outbox now (holds its lease).
    pub fn relays(&self) -> bool {
        self.runtime.relays()
    }

    /// Its database writer's counters: commands handed to it, groups committed.
    pub fn writer_stats(&self) -> govbus_storage::WriterStats {
        self.runtime.writer_stats()
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
        self.reporter.stop().await;
        self.runtime.stop().await;
    }
}
