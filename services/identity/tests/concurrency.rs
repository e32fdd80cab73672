//! Concurrent commands about one citizen, on SQLite and on PostgreSQL, through two identity
//! instances on one database (each with its own writer and relay, as two replicas have): what
//! one command read is never acted on twice, and one idempotency key runs once.

use std::time::Duration;

use govbus_bus::{Bus, BusOptions};
use govbus_harness::{NatsServer, TestBackend, TestDatabase};
use govbus_identity::{Application, IdentityConfig};
use govbus_proto::identity::v1 as pb;
use govbus_proto::identity::v1::identity_service_client::IdentityServiceClient;
use govbus_storage::{RelaySettings, StorageSettings};
use tonic::Code;
use tonic::transport::Channel;

govbus_harness::on_both_backends!(
    fifty_deaths_of_one_citizen_at_once_record_one,
    fifty_deaths_with_one_key_run_once_and_answer_alike,
    fifty_moves_of_one_citizen_at_once_record_one,
    fifty_moves_with_one_key_run_once_and_answer_alike,
    fifty_registrations_of_one_nik_at_once_register_one,
);

const NIK: &str = "3573025708900002";
const CONCURRENT: usize = 50;

/// Two identity instances on one database and one nats-server.
struct Replicas {
    _nats: NatsServer,
    _db: TestDatabase,
    apps: Vec<Application>,
    clients: Vec<IdentityServiceClient<Channel>>,
    bus: Bus,
}

impl Replicas {
    async fn start(backend: TestBackend) -> Self {
        let nats = NatsServer::start().expect("nats-server starts");
        let db = TestDatabase::new(backend).await.expect("test database");
        let mut apps = Vec::new();
        let mut clients = Vec::new();
        for _ in 0..2 {
            let app = Application::build(IdentityConfig {
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
                call_report_interval: Duration::from_secs(3600),
                tls: None,
                access: None,
                audit_subject_key: None,
                audit_timestamps: None,
            })
            .await
            .expect("identity starts");
            clients.push(
                IdentityServiceClient::connect(format!("http://{}", app.address()))
                    .await
                    .expect("client connects"),
            );
            apps.push(app);
        }
        let bus = Bus::connect(BusOptions::new(nats.client_url()).client_name("test"))
            .await
            .expect("test bus");
        let replicas = Self {
            _nats: nats,
            _db: db,
            apps,
            clients,
            bus,
        };
        replicas
            .client(0)
            .register_citizen(registration(NIK, ""))
            .await
            .expect("registered");
        replicas
    }

    fn client(&self, n: usize) -> IdentityServiceClient<Channel> {
        self.clients[n % self.clients.len()].clone()
    }

    /// Sends `CONCURRENT` requests at once, spread over both instances.
    async fn at_once<R, F, Fut>(&self, call: F) -> Vec<Result<R, tonic::Status>>
    where
        R: Send + 'static,
        F: Fn(usize, IdentityServiceClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>> + Send + 'static,
    {
        let calls: Vec<_> = (0..CONCURRENT)
            .map(|n| tokio::spawn(call(n, self.client(n))))
            .collect();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.expect("task").map(tonic::Response::into_inner));
        }
        answers
    }

    /// The events of `event_type` in identity's stream, once the relays have published every
    /// event committed.
    async fn events_of(&self, event_type: &str, expected_total: u64) -> usize {
        let mut stream = self
            .bus
            .jetstream()
            .get_stream("GOVBUS_IDENTITY")
            .await
            .expect("stream");
        for _ in 0..1500 {
            if stream.info().await.expect("info").state.messages >= expected_total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let last = stream.info().await.expect("info").state.last_sequence;
        assert_eq!(last, expected_total, "every committed event published once");
        let mut count = 0;
        for sequence in 1..=last {
            let message = stream.get_raw_message(sequence).await.expect("message");
            if message.headers.get("ce-type").map(|value| value.as_str()) == Some(event_type) {
                count += 1;
            }
        }
        count
    }

    async fn stop(self) {
        for app in self.apps {
            app.stop().await;
        }
    }
}

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

fn death(key: String) -> pb::RecordDeathRequest {
    pb::RecordDeathRequest {
        idempotency_key: key,
        nik: NIK.to_owned(),
        date_of_death: "2024-11-01".to_owned(),
    }
}

fn relocation(key: String) -> pb::RecordRelocationRequest {
    pb::RecordRelocationRequest {
        idempotency_key: key,
        nik: NIK.to_owned(),
        new_address: Some(pb::Address {
            street: "Jl. Soekarno Hatta 9".to_owned(),
            kelurahan_code: "35.73.05.1001".to_owned(),
        }),
    }
}

/// One answer succeeded; every other is `FAILED_PRECONDITION` with `message`.
fn one_succeeded<R: std::fmt::Debug>(answers: &[Result<R, tonic::Status>], message: &str) {
    let succeeded = answers.iter().filter(|answer| answer.is_ok()).count();
    assert_eq!(succeeded, 1, "{answers:?}");
    for answer in answers {
        if let Err(status) = answer {
            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
            assert!(status.message().contains(message), "{status:?}");
        }
    }
}

/// Every answer is the same success.
fn all_alike<R: PartialEq + std::fmt::Debug>(answers: &[Result<R, tonic::Status>]) {
    let first = answers[0].as_ref().expect("answered");
    for answer in answers {
        assert_eq!(answer.as_ref().expect("answered"), first);
    }
}

async fn fifty_deaths_of_one_citizen_at_once_record_one(backend: TestBackend) {
    let replicas = Replicas::start(backend).await;
    let answers = replicas
        .at_once(
            |n, mut client| async move { client.record_death(death(format!("death-{n}"))).await },
        )
        .await;
    one_succeeded(&answers, "already recorded");
    assert_eq!(
        replicas.events_of("identity.citizen.deceased.v1", 2).await,
        1
    );
    replicas.stop().await;
}

async fn fifty_deaths_with_one_key_run_once_and_answer_alike(backend: TestBackend) {
    let replicas = Replicas::start(backend).await;
    let answers = replicas
        .at_once(
            |_, mut client| async move { client.record_death(death("one-death".into())).await },
        )
        .await;
    all_alike(&answers);
    assert_eq!(
        replicas.events_of("identity.citizen.deceased.v1", 2).await,
        1
    );
    replicas.stop().await;
}

async fn fifty_moves_of_one_citizen_at_once_record_one(backend: TestBackend) {
    let replicas = Replicas::start(backend).await;
    let answers = replicas
        .at_once(|n, mut client| async move {
            client
                .record_relocation(relocation(format!("move-{n}")))
                .await
        })
        .await;
    one_succeeded(&answers, "already lives in kelurahan");
    assert_eq!(
        replicas.events_of("identity.citizen.relocated.v1", 2).await,
        1
    );
    replicas.stop().await;
}

async fn fifty_moves_with_one_key_run_once_and_answer_alike(backend: TestBackend) {
    let replicas = Replicas::start(backend).await;
    let answers = replicas
        .at_once(|_, mut client| async move {
            client
                .record_relocation(relocation("one-move".into()))
                .await
        })
        .await;
    all_alike(&answers);
    assert_eq!(
        replicas.events_of("identity.citizen.relocated.v1", 2).await,
        1
    );
    replicas.stop().await;
}

async fn fifty_registrations_of_one_nik_at_once_register_one(backend: TestBackend) {
    let replicas = Replicas::start(backend).await;
    // Another NIK than the one registered at start.
    let answers = replicas
        .at_once(|n, mut client| async move {
            client
                .register_citizen(registration("3573025708900003", &format!("register-{n}")))
                .await
        })
        .await;
    let succeeded = answers.iter().filter(|answer| answer.is_ok()).count();
    assert_eq!(succeeded, 1, "{answers:?}");
    for answer in &answers {
        if let Err(status) = answer {
            assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
        }
    }
    assert_eq!(
        replicas
            .events_of("identity.citizen.registered.v1", 2)
            .await,
        2
    );
    replicas.stop().await;
}
