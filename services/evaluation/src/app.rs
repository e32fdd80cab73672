//! Building and running the evaluation service.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use govbus_bus::{Bus, BusOptions, Consumer, EventMeta, HandleError, ServiceAdapter};
use govbus_kit::grpc::{MAX_REQUEST_BYTES, server_with_health_and_reflection};
use govbus_kit::runtime::bind;
use govbus_kit::{ServiceRuntime, StartError};
use govbus_proto::FILE_DESCRIPTOR_SET;
use govbus_proto::evaluation::v1::AssessmentRecorded;
use govbus_proto::evaluation::v1::evaluation_service_server::EvaluationServiceServer;
use govbus_storage::{Storage, StorageSettings};

use crate::connector::Membership;
use crate::evaluator::Evaluator;
use crate::evidence::Evidence;
use crate::grpc::EvaluationApi;
use crate::instrument::Instruments;
use crate::store::MIGRATIONS;

/// The service name on the bus and in the database's migration records.
pub const SERVICE: &str = "evaluation";

/// Everything the evaluation service needs to start.
#[derive(Debug, Clone)]
pub struct EvaluationConfig {
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
    /// The services whose events are evidence (each has its own durable consumer).
    pub evidence_services: Vec<String>,
    /// A folder of further instrument files (`*.toml`), beside the shipped one.
    pub instruments_dir: Option<PathBuf>,
    /// The instance's agencies and whose each service is: what SPBE indicator 18 counts.
    pub membership: Membership,
}

impl EvaluationConfig {
    /// The services govbus runs today, and its gateway.
    pub fn default_evidence_services() -> Vec<String> {
        ["identity", "welfare", "licensing", "gateway"]
            .map(str::to_owned)
            .to_vec()
    }
}

/// What evaluation publishes and consumes with `evidence_services`, without starting it (for
/// NATS permissions): the same declaration as a running evaluation's, with handlers that are
/// never run.
pub fn contract(
    evidence_services: &[String],
) -> Result<govbus_bus::ServiceContract, govbus_bus::AdapterError> {
    declaration(evidence_services, NotRunning).contract()
}

/// What evaluation publishes, and its evidence consumers, one per service in
/// `evidence_services`, handled by `projection` (the evidence, in a running evaluation).
fn declaration(evidence_services: &[String], projection: impl Projection) -> ServiceAdapter {
    let mut declaration = ServiceAdapter::new(SERVICE).publishes::<AssessmentRecorded>();
    for service in evidence_services {
        let projection = projection.clone();
        declaration = declaration.consumer(
            Consumer::new(format!("evaluation-{service}"))
                // One at a time, in stream order: the projection applies each sequence once.
                .concurrency(1)
                .max_ack_pending(1)
                .every_event_of(service.clone(), move |payload, meta| {
                    let projection = projection.clone();
                    async move { projection.on_event(payload, meta).await }
                }),
        );
    }
    declaration
}

/// What evaluation does with every event of the services it observes.
trait Projection: Clone + Send + Sync + 'static {
    fn on_event(
        &self,
        payload: Bytes,
        meta: EventMeta,
    ) -> impl Future<Output = Result<(), HandleError>> + Send;
}

impl Projection for Evidence {
    fn on_event(
        &self,
        payload: Bytes,
        meta: EventMeta,
    ) -> impl Future<Output = Result<(), HandleError>> + Send {
        Evidence::on_event(self, payload, meta)
    }
}

/// The handlers of a declaration that is only read, never started.
#[derive(Debug, Clone, Copy)]
struct NotRunning;

impl Projection for NotRunning {
    async fn on_event(&self, _: Bytes, _: EventMeta) -> Result<(), HandleError> {
        Err(HandleError::permanent(
            "a declaration read for its contract never handles events",
        ))
    }
}

/// A running evaluation service.
#[derive(Debug)]
pub struct Application {
    runtime: ServiceRuntime,
}

impl Application {
    /// Loads the instruments, opens the database, starts the evidence consumers, the outbox
    /// relay and the gRPC server.
    pub async fn build(config: EvaluationConfig) -> Result<Self, StartError> {
        let instruments =
            Instruments::load(config.instruments_dir.as_deref()).map_err(|error| {
                StartError::Data {
                    what: "evaluation instruments",
                    source: error.into(),
                }
            })?;
        let db = Storage::open(&config.database_url, SERVICE, MIGRATIONS, &config.storage).await?;
        let bus = Bus::connect(config.bus).await?;
        let evidence = Evidence::new(db.clone());
        let streams: Vec<String> = config
            .evidence_services
            .iter()
            .map(|service| bus.topology().service_stream(service))
            .collect();
        evidence.ensure_positions(&streams).await?;
        let declaration = declaration(&config.evidence_services, evidence.clone());
        let publisher = declaration.publisher(&bus)?;
        let storage = Storage::start(db.clone(), publisher.clone(), config.storage);
        let evaluator = Evaluator::new(
            db.clone(),
            publisher,
            Arc::new(instruments),
            evidence,
            config.membership,
        );
        let adapter = declaration.start(&bus).await?;
        let listener = bind(config.listen).await?;
        let router = server_with_health_and_reflection::<EvaluationServiceServer<EvaluationApi>>(
            SERVICE,
            FILE_DESCRIPTOR_SET,
            config.access.clone(),
        )
        .await?
        .add_service(
            EvaluationServiceServer::new(EvaluationApi::new(evaluator, bus, streams))
                .max_decoding_message_size(MAX_REQUEST_BYTES),
        );
        // Evaluation reads no one's personal data: its evidence consumers count events by type
        // and time without decoding them, and its API serves indicators. It keeps no chain in
        // the processing log.
        let runtime = ServiceRuntime::start(
            router,
            listener,
            config.tls.as_ref(),
            storage,
            adapter,
            None,
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

    /// Stops the service in order.
    pub async fn stop(self) {
        self.runtime.stop().await;
    }
}
