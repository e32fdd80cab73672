//! The {{name}} service end to end: a real nats-server and a real database (SQLite and
//! PostgreSQL), driven through its gRPC API and identity's events.

use std::time::{Duration, Instant};

use govbus_bus::{Bus, BusOptions, ServiceAdapter};
use govbus_harness::{NatsServer, TestBackend, TestDatabase};
use govbus_kit::grpc::violations_of;
use govbus_proto::identity::v1::CitizenDeceased;
use govbus_proto::{{name}}::v1 as pb;
use govbus_proto::{{name}}::v1::{{name}}_service_client::{{Name}}ServiceClient;
use govbus_storage::{RelaySettings, StorageSettings};
use govbus_{{name}}::{Application, {{Name}}Config};
use tonic::Code;
use tonic::transport::Channel;

govbus_harness::on_both_backends!(
    a_filed_request_is_stored_published_and_answered_once,
    invalid_requests_get_every_field_problem,
    a_residents_death_closes_their_open_requests_once,
);

struct TestApp {
    _nats: NatsServer,
    _db: TestDatabase,
    app: Option<Application>,
    client: {{Name}}ServiceClient<Channel>,
    bus: Bus,
}

impl TestApp {
    async fn spawn(backend: TestBackend) -> Self {
        let db = TestDatabase::new(backend).await.expect("test database");
        let nats = NatsServer::start().expect("nats-server starts");
        let app = Application::build({{Name}}Config {
            database_url: db.url().to_owned(),
            listen: "127.0.0.1:0".parse().expect("address"),
            bus: BusOptions::new(nats.client_url()).client_name("{{name}}"),
            storage: StorageSettings {
                relay: RelaySettings {
                    poll_interval: Duration::from_millis(100),
                    ..RelaySettings::default()
                },
                ..StorageSettings::default()
            },
            tls: None,
            access: None,
            audit_subject_key: None,
            audit_timestamps: None,
        })
        .await
        .expect("{{name}} starts");
        let client = {{Name}}ServiceClient::connect(format!("http://{}", app.address()))
            .await
            .expect("connects");
        let bus = Bus::connect(BusOptions::new(nats.client_url()).client_name("{{name}}-test"))
            .await
            .expect("bus");
        Self {
            _nats: nats,
            _db: db,
            app: Some(app),
            client,
            bus,
        }
    }

    /// How many events of `event_type` {{name}}'s stream holds (none before the relay's
    /// first publication made the stream).
    async fn events(&self, event_type: &str) -> usize {
        let name = self.bus.topology().service_stream("{{name}}");
        let Ok(mut stream) = self.bus.jetstream().get_stream(name).await else {
            return 0;
        };
        let Ok(info) = stream.info().await else {
            return 0;
        };
        let mut count = 0;
        for sequence in 1..=info.state.last_sequence {
            if let Ok(message) = stream.get_raw_message(sequence).await
                && message
                    .headers
                    .get("ce-type")
                    .is_some_and(|value| value.as_str() == event_type)
            {
                count += 1;
            }
        }
        count
    }

    async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
    }
}

fn filing(citizen_ref: &str, key: &str) -> pb::FileRequestRequest {
    pb::FileRequestRequest {
        citizen_ref: citizen_ref.to_owned(),
        text: "Mohon informasi jadwal layanan".to_owned(),
        idempotency_key: key.to_owned(),
    }
}

/// Waits until `check` holds (the relay and the consumers work in the background).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn a_filed_request_is_stored_published_and_answered_once(backend: TestBackend) {
    let mut test = TestApp::spawn(backend).await;
    let first = test
        .client
        .file_request(filing("c-1", "key-1"))
        .await
        .expect("filed")
        .into_inner();
    let again = test
        .client
        .file_request(filing("c-1", "key-1"))
        .await
        .expect("retried")
        .into_inner();
    assert_eq!(first.request_ref, again.request_ref, "the retry answers as the first time");
    let stored = test
        .client
        .get_request(pb::GetRequestRequest {
            request_ref: first.request_ref.clone(),
        })
        .await
        .expect("read")
        .into_inner()
        .request
        .expect("a request");
    assert_eq!(stored.state(), pb::RequestState::Open);
    eventually("RequestFiled", async || {
        test.events("{{name}}.request.filed.v1").await == 1
    })
    .await;
    test.stop().await;
}

async fn invalid_requests_get_every_field_problem(backend: TestBackend) {
    let mut test = TestApp::spawn(backend).await;
    let status = test
        .client
        .file_request(pb::FileRequestRequest {
            idempotency_key: "a\u{7}bell".to_owned(),
            ..pb::FileRequestRequest::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = violations_of(&status)
        .into_iter()
        .map(|violation| violation.field)
        .collect();
    for field in ["citizen_ref", "text", "idempotency_key"] {
        assert!(fields.iter().any(|found| found == field), "{field} in {fields:?}");
    }
    let missing = test
        .client
        .get_request(pb::GetRequestRequest {
            request_ref: "no-such-request".to_owned(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);
    test.stop().await;
}

async fn a_residents_death_closes_their_open_requests_once(backend: TestBackend) {
    let mut test = TestApp::spawn(backend).await;
    let filed = test
        .client
        .file_request(filing("c-2", "key-2"))
        .await
        .expect("filed")
        .into_inner();
    // As identity would.
    let identity = ServiceAdapter::new("identity")
        .publishes::<CitizenDeceased>()
        .publisher(&test.bus)
        .expect("publisher");
    let death = CitizenDeceased {
        citizen_ref: "c-2".to_owned(),
        date_of_death: "2026-11-30".to_owned(),
    };
    // Two deaths recorded for one person (two events): the request closes once.
    identity.publish(&death).await.expect("published");
    identity.publish(&death).await.expect("published");
    eventually("the request closed", async || {
        let request = test
            .client
            .get_request(pb::GetRequestRequest {
                request_ref: filed.request_ref.clone(),
            })
            .await
            .ok()
            .and_then(|response| response.into_inner().request);
        request.is_some_and(|request| request.state() == pb::RequestState::Closed)
    })
    .await;
    eventually("RequestClosed", async || {
        test.events("{{name}}.request.closed.v1").await == 1
    })
    .await;
    // Time for a second closing to show, if the second death produced one.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(test.events("{{name}}.request.closed.v1").await, 1);
    test.stop().await;
}
