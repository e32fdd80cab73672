//! A whole govbus stack for end-to-end tests: one private nats-server, the identity, welfare,
//! licensing and evaluation services each with its own database (SQLite files or PostgreSQL schemas), and gRPC
//! clients. Tests drive the services only through their gRPC APIs and read what they published
//! from the streams.

// Test support: a failure to set up is a test failure, with the reason.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::time::Duration;

use govbus_bus::{Bus, BusOptions};
use govbus_harness::{NatsServer, TestBackend, TestDatabase};
use govbus_licensing::Deadlines;
use govbus_proto::evaluation::v1::evaluation_service_client::EvaluationServiceClient;
use govbus_proto::identity::v1 as identity;
use govbus_proto::identity::v1::identity_service_client::IdentityServiceClient;
use govbus_proto::licensing::v1::licensing_service_client::LicensingServiceClient;
use govbus_proto::welfare::v1::welfare_service_client::WelfareServiceClient;
use govbus_storage::{RelaySettings, StorageSettings};
use tonic::transport::Channel;

/// How the stack is configured.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// Licensing's service-level deadlines.
    pub deadlines: Deadlines,
    /// Licensing's working-day calendar; `None`: the shipped decrees.
    pub calendar: Option<&'static govbus_civil::calendar::WorkingCalendar>,
}

/// One message read back from a stream.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// CloudEvents type.
    pub event_type: String,
    /// Correlation id.
    pub correlation_id: String,
    /// Protobuf payload.
    pub payload: Vec<u8>,
}

/// A running stack.
#[derive(Debug)]
pub struct Stack {
    /// The private nats-server.
    pub nats: NatsServer,
    databases: Vec<TestDatabase>,
    identity_app: Option<govbus_identity::Application>,
    welfare_app: Option<govbus_welfare::Application>,
    licensing_app: Option<govbus_licensing::Application>,
    evaluation_app: Option<govbus_evaluation::Application>,
    licensing_config: govbus_licensing::LicensingConfig,
    /// Identity's gRPC client.
    pub identity: IdentityServiceClient<Channel>,
    /// Welfare's gRPC client.
    pub welfare: WelfareServiceClient<Channel>,
    /// Licensing's gRPC client.
    pub licensing: LicensingServiceClient<Channel>,
    /// Evaluation's gRPC client.
    pub evaluation: EvaluationServiceClient<Channel>,
    /// A bus connection for reading streams.
    pub bus: Bus,
}

fn storage() -> StorageSettings {
    StorageSettings {
        relay: RelaySettings {
            poll_interval: Duration::from_millis(100),
            ..RelaySettings::default()
        },
        ..StorageSettings::default()
    }
}

fn any_port() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

impl Stack {
    /// Starts nats-server and the three services on `backend`.
    pub async fn start(backend: TestBackend, options: StackOptions) -> Self {
        // Boxed: starting three services is a large future to keep on a test's stack.
        Box::pin(Self::build(backend, options)).await
    }

    async fn build(backend: TestBackend, options: StackOptions) -> Self {
        let nats = NatsServer::start().expect("nats-server starts");
        let mut databases = Vec::new();
        for _ in 0..4 {
            databases.push(TestDatabase::new(backend).await.expect("test database"));
        }
        let bus_options = |name: &str| {
            BusOptions::new(nats.client_url())
                .client_name(name)
                .request_timeout(Duration::from_millis(500))
        };
        let identity_app = govbus_identity::Application::build(govbus_identity::IdentityConfig {
            database_url: databases[0].url().to_owned(),
            listen: any_port(),
            bus: bus_options("identity"),
            storage: storage(),
            tls: None,
            access: None,
            audit_subject_key: None,
            audit_timestamps: None,
            call_report_interval: std::time::Duration::from_millis(200),
        })
        .await
        .expect("identity starts");
        let identity_url = format!("http://{}", identity_app.address());
        let welfare_app = govbus_welfare::Application::build(govbus_welfare::WelfareConfig {
            database_url: databases[1].url().to_owned(),
            listen: any_port(),
            identity_url: identity_url.clone(),
            bus: bus_options("welfare"),
            storage: storage(),
            tls: None,
            access: None,
            audit_subject_key: None,
            audit_timestamps: None,
        })
        .await
        .expect("welfare starts");
        let licensing_config = govbus_licensing::LicensingConfig {
            database_url: databases[2].url().to_owned(),
            listen: any_port(),
            identity_url: identity_url.clone(),
            bus: bus_options("licensing"),
            storage: storage(),
            tls: None,
            access: None,
            audit_subject_key: None,
            audit_timestamps: None,
            deadlines: options.deadlines,
            deadline_check_interval: Duration::from_millis(50),
            calendar: options.calendar,
            keep_rejected_details: Duration::from_secs(730 * 24 * 3600),
        };
        let licensing_app = govbus_licensing::Application::build(licensing_config.clone())
            .await
            .expect("licensing starts");
        let evaluation_app =
            govbus_evaluation::Application::build(govbus_evaluation::EvaluationConfig {
                database_url: databases[3].url().to_owned(),
                listen: any_port(),
                bus: bus_options("evaluation"),
                storage: storage(),
                tls: None,
                access: None,
                evidence_services: govbus_evaluation::EvaluationConfig::default_evidence_services(),
                instruments_dir: None,
                membership: govbus_evaluation::Membership::shipped(&[
                    ("identity", "dispendukcapil"),
                    ("welfare", "dinsos-p3ap2kb"),
                    ("licensing", "disnaker-pmptsp"),
                ])
                .expect("the shipped agencies"),
            })
            .await
            .expect("evaluation starts");
        let evaluation =
            EvaluationServiceClient::connect(format!("http://{}", evaluation_app.address()))
                .await
                .expect("evaluation client");
        let identity = IdentityServiceClient::connect(identity_url)
            .await
            .expect("identity client");
        let welfare = WelfareServiceClient::connect(format!("http://{}", welfare_app.address()))
            .await
            .expect("welfare client");
        let licensing =
            LicensingServiceClient::connect(format!("http://{}", licensing_app.address()))
                .await
                .expect("licensing client");
        let bus = Bus::connect(bus_options("e2e"))
            .await
            .expect("bus connects");
        Self {
            nats,
            databases,
            identity_app: Some(identity_app),
            welfare_app: Some(welfare_app),
            licensing_app: Some(licensing_app),
            evaluation_app: Some(evaluation_app),
            licensing_config,
            identity,
            welfare,
            licensing,
            evaluation,
            bus,
        }
    }

    /// Stops the identity service (to see how the others cope without it).
    pub async fn stop_identity(&mut self) {
        if let Some(app) = self.identity_app.take() {
            app.stop().await;
        }
    }

    /// Stops licensing; [`start_licensing`](Self::start_licensing) brings it back on its database.
    pub async fn stop_licensing(&mut self) {
        if let Some(app) = self.licensing_app.take() {
            app.stop().await;
        }
    }

    /// Counts licensing's deadlines in `calendar` from its next start.
    pub fn set_licensing_calendar(
        &mut self,
        calendar: &'static govbus_civil::calendar::WorkingCalendar,
    ) {
        self.licensing_config.calendar = Some(calendar);
    }

    /// Starts licensing again on the same database, and reconnects the client.
    pub async fn start_licensing(&mut self) {
        let app = Box::pin(govbus_licensing::Application::build(
            self.licensing_config.clone(),
        ))
        .await
        .expect("licensing restarts");
        self.licensing = LicensingServiceClient::connect(format!("http://{}", app.address()))
            .await
            .expect("licensing client");
        self.licensing_app = Some(app);
    }

    /// Registers a citizen of Kota Malang; returns the citizen reference.
    pub async fn register_citizen(
        &mut self,
        nik: &str,
        birth_date: &str,
        sex: identity::Sex,
    ) -> String {
        self.identity
            .register_citizen(identity::RegisterCitizenRequest {
                idempotency_key: String::new(),
                nik: nik.to_owned(),
                kk_number: "3573020101200001".to_owned(),
                full_name: "Warga Malang".to_owned(),
                birth_place: "Malang".to_owned(),
                birth_date: birth_date.to_owned(),
                sex: sex.into(),
                address: Some(identity::Address {
                    street: "Jl. Ijen 1".to_owned(),
                    kelurahan_code: "35.73.02.1001".to_owned(),
                }),
            })
            .await
            .expect("citizen registered")
            .into_inner()
            .citizen_ref
    }

    /// Every event of `event_type` in `stream`.
    pub async fn events(&self, stream: &str, event_type: &str) -> Vec<StoredEvent> {
        let Ok(mut stream) = self.bus.jetstream().get_stream(stream).await else {
            return Vec::new();
        };
        let last = stream
            .info()
            .await
            .map(|info| info.state.last_sequence)
            .unwrap_or(0);
        let mut events = Vec::new();
        for sequence in 1..=last {
            let Ok(message) = stream.get_raw_message(sequence).await else {
                continue;
            };
            let header = |name: &str| {
                message
                    .headers
                    .get(name)
                    .map(|value| value.as_str().to_owned())
                    .unwrap_or_default()
            };
            if header("ce-type") == event_type {
                events.push(StoredEvent {
                    event_type: header("ce-type"),
                    correlation_id: header("ce-correlationid"),
                    payload: message.payload.to_vec(),
                });
            }
        }
        events
    }

    /// Waits until `stream` holds at least `count` events of `event_type`.
    pub async fn wait_for_events(
        &self,
        stream: &str,
        event_type: &str,
        count: usize,
    ) -> Vec<StoredEvent> {
        for _ in 0..1500 {
            let events = self.events(stream, event_type).await;
            if events.len() >= count {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("fewer than {count} {event_type} events in {stream}");
    }

    /// Stops every service, then the server.
    pub async fn stop(mut self) {
        if let Some(app) = self.evaluation_app.take() {
            app.stop().await;
        }
        if let Some(app) = self.licensing_app.take() {
            app.stop().await;
        }
        if let Some(app) = self.welfare_app.take() {
            app.stop().await;
        }
        if let Some(app) = self.identity_app.take() {
            app.stop().await;
        }
        drop(self.databases);
    }
}

/// Polls `check` every 20 ms until it holds; gives up (panics) after 30 s. A bound on a hung
/// test, not a timed assertion.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..1500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for: {what}");
}
