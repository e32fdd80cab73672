//! The identity service end to end: real nats-server, real database (SQLite and PostgreSQL),
//! driven only through its gRPC API.

use std::time::Duration;

use govbus_bus::{Bus, BusOptions};
use govbus_harness::{NatsServer, TestBackend, TestDatabase};
use govbus_identity::{Application, IdentityConfig};
use govbus_kit::grpc::violations_of;
use govbus_proto::identity::v1 as pb;
use govbus_proto::identity::v1::identity_service_client::IdentityServiceClient;
use govbus_storage::{RelaySettings, StorageSettings};
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

govbus_harness::on_both_backends!(
    registering_publishes_an_event_without_personal_data,
    invalid_requests_get_every_field_problem,
    retried_commands_return_the_first_result,
    verification_answers_match_no_match_and_deceased,
    relocation_and_death_publish_events_and_guard_state,
    commands_succeed_while_nats_is_down_and_events_follow,
    health_and_reflection_are_served,
    a_register_kept_before_the_nik_ordered_table_is_carried_over,
);

struct TestApp {
    nats: NatsServer,
    db: TestDatabase,
    app: Option<Application>,
    client: IdentityServiceClient<Channel>,
    bus: Bus,
}

impl TestApp {
    async fn spawn(backend: TestBackend) -> Self {
        Self::spawn_on(TestDatabase::new(backend).await.expect("test database")).await
    }

    /// identity on a database prepared by the test.
    async fn spawn_on(db: TestDatabase) -> Self {
        let nats = NatsServer::start().expect("nats-server starts");
        let config = IdentityConfig {
            database_url: db.url().to_owned(),
            listen: "127.0.0.1:0".parse().expect("address"),
            bus: BusOptions::new(nats.client_url())
                .client_name("identity")
                .request_timeout(Duration::from_millis(500)),
            storage: StorageSettings {
                relay: RelaySettings {
                    poll_interval: Duration::from_millis(100),
                    ..RelaySettings::default()
                },
                ..StorageSettings::default()
            },
            call_report_interval: Duration::from_millis(200),
            tls: None,
            access: None,
            audit_subject_key: None,
            audit_timestamps: None,
        };
        let app = Application::build(config).await.expect("identity starts");
        let client = IdentityServiceClient::connect(format!("http://{}", app.address()))
            .await
            .expect("client connects");
        let bus = Bus::connect(BusOptions::new(nats.client_url()).client_name("test"))
            .await
            .expect("test bus");
        Self {
            nats,
            db,
            app: Some(app),
            client,
            bus,
        }
    }

    /// Every event in the identity stream, as (type, payload).
    async fn events(&self) -> Vec<(String, Vec<u8>)> {
        let mut stream = self
            .bus
            .jetstream()
            .get_stream("GOVBUS_IDENTITY")
            .await
            .expect("stream");
        let last = stream.info().await.expect("info").state.last_sequence;
        let mut events = Vec::new();
        for sequence in 1..=last {
            if let Ok(message) = stream.get_raw_message(sequence).await {
                let event_type = message
                    .headers
                    .get("ce-type")
                    .map(|value| value.as_str().to_owned())
                    .unwrap_or_default();
                events.push((event_type, message.payload.to_vec()));
            }
        }
        events
    }

    async fn wait_for_events(&self, count: usize) -> Vec<(String, Vec<u8>)> {
        for _ in 0..1500 {
            let events = self.events().await;
            if events.len() >= count {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("fewer than {count} events were published");
    }

    async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
    }
}

const NIK: &str = "3573025708900002";

fn registration(nik: &str, key: &str) -> pb::RegisterCitizenRequest {
    pb::RegisterCitizenRequest {
        idempotency_key: key.to_owned(),
        nik: nik.to_owned(),
        kk_number: "3573020101200001".to_owned(),
        full_name: "Siti Aminah".to_owned(),
        birth_place: "Malang".to_owned(),
        birth_date: "1990-08-17".to_owned(),
        sex: pb::Sex::Female.into(),
        address: Some(pb::Address {
            street: "Jl. Ijen No. 1, RT 01/RW 02".to_owned(),
            kelurahan_code: "35.73.02.1001".to_owned(),
        }),
    }
}

async fn registrations_in_stream(test: &TestApp) -> usize {
    test.events()
        .await
        .iter()
        .filter(|(event_type, _)| event_type == "identity.citizen.registered.v1")
        .count()
}

async fn registering_publishes_an_event_without_personal_data(backend: TestBackend) {
    let mut test = TestApp::spawn(backend).await;
    let response = test
        .client
        .register_citizen(registration(NIK, ""))
        .await
        .expect("registered")
        .into_inner();
    assert!(!response.citizen_ref.is_empty());
    assert!(response.warnings.is_empty());

    let events = test.wait_for_events(1).await;
    assert_eq!(events[0].0, "identity.citizen.registered.v1");
    let event = pb::CitizenRegistered::decode(events[0].1.as_slice()).expect("decodes");
    assert_eq!(event.citizen_ref, response.citizen_ref);
    assert_eq!(event.kelurahan_code, "35.73.02.1001");
    assert_eq!(event.birth_year, 1990);
    assert_eq!(event.sex(), pb::Sex::Female);
    let raw = String::from_utf8_lossy(&events[0].1);
    assert!(
        !raw.contains(NIK) && !raw.contains("Siti"),
        "no NIK or name in the event"
    );

    let duplicate = test
        .client
        .register_citizen(registration(NIK, ""))
        .await
        .expect_err("already registered");
    assert_eq!(duplicate.code(), Code::AlreadyExists);
    test.stop().await;
}

async fn invalid_requests_get_every_field_problem(backend: TestBackend) {
    let mut test = TestApp::spawn(backend).await;
    let mut request = registration("3573021708900001", "");
    request.kk_number = "123".to_owned();
    request.sex = pb::Sex::Female.into(); // the NIK says male
    request.birth_date = "1990-08-18".to_owned(); // the NIK says the 17th
    request.address = Some(pb::Address {
        street: String::new(),
        kelurahan_code: "35.73.09.9999".to_owned(),
    });
    let status = test
        .client
        .register_citizen(request)
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = violations_of(&status)
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(
        fields,
        [
            "kk_number",
            "address.street",
            "address.kelurahan_code",
            "birth_date",
            "sex"
        ]
    );
    assert!(
        !status.message().contains("3573021708900001"),
        "the NIK is not echoed"
    );

    let bad_nik = test
        .client
        .verify_citizen(pb::VerifyCitizenRequest {
            nik: "12345".to_owned(),
            ..Default::default()
        })
        .await
        .expect_err("invalid");
    assert_eq!(bad_nik.code(), Code::InvalidArgument);
    let violations = violations_of(&bad_nik);
    assert_eq!(violations[0].field, "nik");
    assert!(violations[0].description.contains("16 digits"));

    // Nothing was written, nothing published.
    assert_eq!(registrations_in_stream(&test).await, 0);
    test.stop().await;
}

async fn retried_commands_return_the_first_result(backend: TestBackend) {
    let mut test = TestApp::spawn(backend).await;
    let first = test
        .client
        .register_citizen(registration(NIK, "key-1"))
        .await
        .expect("registered")
        .into_inner();
    let retry = test
        .client
        .register_citizen(registration(NIK, "key-1"))
        .await
        .expect("the retry returns the first result")
        .into_inner();
    assert_eq!(first, retry);

    let mut different = registration("3573021708900001", "key-1");
    different.sex = pb::Sex::Male.into();
    let reused = test
        .client
        .register_citizen(different)
        .await
        .expect_err("key reused for another request");
    assert_eq!(reused.code(), Code::FailedPrecondition);

    let death = pb::RecordDeathRequest {
        idempotency_key: "death-1".to_owned(),
        nik: NIK.to_owned(),
        date_of_death: "2024-11-01".to_owned(),
    };
    let recorded = test
        .client
        .record_death(death.clone())
        .await
        .expect("recorded")
        .into_inner();
    let again = test
        .client
        .record_death(death)
        .await
        .expect("retry")
        .into_inner();
    assert_eq!(recorded, again);

    let events = test.wait_for_events(2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(test.events().await.len(), events.len());
    assert_eq!(
        events.len(),
        2,
        "one registration and one death, each published once"
    );
    test.stop().await;
}

async fn verification_answers_match_no_match_and_deceased(backend: TestBackend) {
    let mut test = TestApp::spawn(backend).await;
    let citizen_ref = test
        .client
        .register_citizen(registration(NIK, ""))
        .await
        .expect("registered")
        .into_inner()
        .citizen_ref;
    let mut verify = async |nik: &str, name: &str, birth_date: &str| {
        test.client
            .verify_citizen(pb::VerifyCitizenRequest {
                nik: nik.to_owned(),
                full_name: name.to_owned(),
                birth_date: birth_date.to_owned(),
            })
            .await
            .expect("answered")
            .into_inner()
    };
    let matched = verify(NIK, "  siti  AMINAH ", "1990-08-17").await;
    assert_eq!(matched.result(), pb::VerificationResult::Match);
    assert_eq!(matched.citizen_ref, citizen_ref);
    assert_eq!(
        verify(NIK, "", "").await.result(),
        pb::VerificationResult::Match
    );
    let wrong_name = verify(NIK, "Siti Rahma", "").await;
    assert_eq!(wrong_name.result(), pb::VerificationResult::NoMatch);
    assert!(
        wrong_name.citizen_ref.is_empty(),
        "no reference leaks on a mismatch"
    );
    assert_eq!(
        verify(NIK, "", "1990-08-18").await.result(),
        pb::VerificationResult::NoMatch
    );
    assert_eq!(
        verify("3573021708900001", "", "").await.result(),
        pb::VerificationResult::NoMatch
    );

    test.client
        .record_death(pb::RecordDeathRequest {
            idempotency_key: String::new(),
            nik: NIK.to_owned(),
            date_of_death: "2024-11-01".to_owned(),
        })
        .await
        .expect("death recorded");
    let mut verify = async |nik: &str| {
        test.client
            .verify_citizen(pb::VerifyCitizenRequest {
                nik: nik.to_owned(),
                ..Default::default()
            })
            .await
            .expect("answered")
            .into_inner()
    };
    let deceased = verify(NIK).await;
    assert_eq!(deceased.result(), pb::VerificationResult::Deceased);
    assert_eq!(deceased.citizen_ref, citizen_ref);
    test.stop().await;
}

async fn relocation_and_death_publish_events_and_guard_state(backend: TestBackend) {
    let mut test = TestApp::spawn(backend).await;
    let citizen_ref = test
        .client
        .register_citizen(registration(NIK, ""))
        .await
        .expect("registered")
        .into_inner()
        .citizen_ref;
    let relocation = |kelurahan: &str| pb::RecordRelocationRequest {
        idempotency_key: String::new(),
        nik: NIK.to_owned(),
        new_address: Some(pb::Address {
            street: "Jl. Soekarno Hatta 9".to_owned(),
            kelurahan_code: kelurahan.to_owned(),
        }),
    };
    let moved = test
        .client
        .record_relocation(relocation("35.73.05.1001"))
        .await
        .expect("relocated")
        .into_inner();
    assert_eq!(moved.from_kelurahan_code, "35.73.02.1001");
    assert_eq!(moved.to_kelurahan_code, "35.73.05.1001");
    let same = test
        .client
        .record_relocation(relocation("35.73.05.1001"))
        .await
        .expect_err("already there");
    assert_eq!(same.code(), Code::FailedPrecondition);

    let unknown = test
        .client
        .record_death(pb::RecordDeathRequest {
            idempotency_key: String::new(),
            nik: "3573021708900001".to_owned(),
            date_of_death: "2024-11-01".to_owned(),
        })
        .await
        .expect_err("not registered");
    assert_eq!(unknown.code(), Code::NotFound);
    let before_birth = test
        .client
        .record_death(pb::RecordDeathRequest {
            idempotency_key: String::new(),
            nik: NIK.to_owned(),
            date_of_death: "1980-01-01".to_owned(),
        })
        .await
        .expect_err("before birth");
    assert_eq!(before_birth.code(), Code::FailedPrecondition);
    test.client
        .record_death(pb::RecordDeathRequest {
            idempotency_key: String::new(),
            nik: NIK.to_owned(),
            date_of_death: "2024-11-01".to_owned(),
        })
        .await
        .expect("death recorded");
    let twice = test
        .client
        .record_death(pb::RecordDeathRequest {
            idempotency_key: String::new(),
            nik: NIK.to_owned(),
            date_of_death: "2024-11-02".to_owned(),
        })
        .await
        .expect_err("already deceased");
    assert_eq!(twice.code(), Code::FailedPrecondition);
    let after_death = test
        .client
        .record_relocation(relocation("35.73.01.1001"))
        .await
        .expect_err("deceased");
    assert_eq!(after_death.code(), Code::FailedPrecondition);

    let events = test.wait_for_events(3).await;
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "identity.citizen.registered.v1",
            "identity.citizen.relocated.v1",
            "identity.citizen.deceased.v1"
        ]
    );
    let relocated = pb::CitizenRelocated::decode(events[1].1.as_slice()).expect("decodes");
    assert_eq!(relocated.citizen_ref, citizen_ref);
    assert_eq!(relocated.to_kelurahan_code, "35.73.05.1001");
    let deceased = pb::CitizenDeceased::decode(events[2].1.as_slice()).expect("decodes");
    assert_eq!(deceased.citizen_ref, citizen_ref);
    assert_eq!(deceased.date_of_death, "2024-11-01");
    test.stop().await;
}

async fn commands_succeed_while_nats_is_down_and_events_follow(backend: TestBackend) {
    let mut test = TestApp::spawn(backend).await;
    tokio::task::block_in_place(|| test.nats.stop().expect("nats stops"));
    // 20 citizens born on different days of August 1990, each NIK serial distinct.
    for day in 1..=20u32 {
        let nik = format!("357302{:02}0890{:04}", day + 40, day);
        let mut request = registration(&nik, "");
        request.birth_date = format!("1990-08-{day:02}");
        test.client
            .register_citizen(request)
            .await
            .expect("registered while NATS is down");
    }
    tokio::task::block_in_place(|| test.nats.restart().expect("nats restarts"));
    let events = test.wait_for_events(20).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(test.events().await.len(), 20);
    assert_eq!(events.len(), 20, "every event published exactly once");
    test.stop().await;
}

async fn health_and_reflection_are_served(backend: TestBackend) {
    let test = TestApp::spawn(backend).await;
    let address = format!("http://{}", test.app.as_ref().expect("running").address());
    let channel = Channel::from_shared(address)
        .expect("uri")
        .connect()
        .await
        .expect("connects");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "govbus.identity.v1.IdentityService".to_owned(),
        })
        .await
        .expect("health answers")
        .into_inner();
    assert_eq!(
        serving.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream_once(request))
        .await
        .expect("reflection answers")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("message")
        .expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    // Only what this port serves: the descriptor set also holds the other services' contracts.
    assert_eq!(
        names,
        [
            "govbus.identity.v1.IdentityService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
        ],
    );
    // The health service it lists can be described too.
    let describe = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol(
            "grpc.health.v1.Health".to_owned(),
        )),
    };
    let response = reflection
        .server_reflection_info(tokio_stream_once(describe))
        .await
        .expect("reflection answers")
        .into_inner()
        .message()
        .await
        .expect("message")
        .expect("a response");
    let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
        panic!("health not described: {:?}", response.message_response);
    };
    assert!(!files.file_descriptor_proto.is_empty());
    test.stop().await;
}

fn tokio_stream_once<T: Send + 'static>(
    item: T,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::iter([item])
}

/// Migration 2 rebuilds SQLite's register in NIK order: a register of the first schema keeps
/// every citizen, and is read and written as before.
async fn a_register_kept_before_the_nik_ordered_table_is_carried_over(backend: TestBackend) {
    let db = TestDatabase::new(backend).await.expect("test database");
    let first_schema = govbus_storage::open(
        db.url(),
        "identity",
        &govbus_identity::store::MIGRATIONS[..1],
        govbus_storage::DatabaseOptions::default(),
    )
    .await
    .expect("the first schema");
    let (citizen, _) = {
        let mut problems = govbus_kit::grpc::FieldProblems::default();
        let request = registration(NIK, "");
        let address = request.address.as_ref().expect("address");
        govbus_identity::domain::NewCitizen::parse(
            govbus_identity::domain::RegistrationInput {
                nik: &request.nik,
                kk_number: &request.kk_number,
                full_name: &request.full_name,
                birth_place: &request.birth_place,
                birth_date: &request.birth_date,
                sex: Some(govbus_identity::domain::Sex::Female),
                street: &address.street,
                kelurahan_code: &address.kelurahan_code,
            },
            &mut problems,
        )
        .expect("a valid citizen")
    };
    let citizen_ref = "00000000-0000-7000-8000-000000000001";
    first_schema
        .write(async move |tx| govbus_identity::store::insert(tx, citizen_ref, &citizen).await)
        .await
        .expect("stored under the first schema");
    first_schema.close().await;

    let mut test = TestApp::spawn_on(db).await;
    let verified = test
        .client
        .verify_citizen(pb::VerifyCitizenRequest {
            nik: NIK.to_owned(),
            full_name: "Siti Aminah".to_owned(),
            birth_date: "1990-08-17".to_owned(),
        })
        .await
        .expect("answered")
        .into_inner();
    assert_eq!(verified.result(), pb::VerificationResult::Match);
    assert_eq!(verified.citizen_ref, citizen_ref);
    let again = test
        .client
        .register_citizen(registration(NIK, ""))
        .await
        .expect_err("the NIK is registered already");
    assert_eq!(again.code(), Code::AlreadyExists);
    test.client
        .record_death(pb::RecordDeathRequest {
            nik: NIK.to_owned(),
            date_of_death: "2026-01-02".to_owned(),
            ..Default::default()
        })
        .await
        .expect("a death recorded on the carried-over row");
    let second = "3573025708900010";
    test.client
        .register_citizen(registration(second, ""))
        .await
        .expect("a new citizen registered");
    if backend == TestBackend::Sqlite {
        let file = test.db.url().trim_start_matches("sqlite://").to_owned();
        let connection = rusqlite::Connection::open(file).expect("the file opens");
        assert!(
            connection.prepare("SELECT rowid FROM citizens").is_err(),
            "the register is kept in NIK order (WITHOUT ROWID)"
        );
        let count: i64 = connection
            .query_row("SELECT count(*) FROM citizens", [], |row| row.get(0))
            .expect("counted");
        assert_eq!(count, 2);
    }
    test.stop().await;
}
