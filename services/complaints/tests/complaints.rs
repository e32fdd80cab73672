//! The complaints service end to end: a real nats-server, a real identity service, real
//! databases (SQLite and PostgreSQL), a local HTTP server standing in for the national channel
//! that fails on purpose, and the service driven through its gRPC API.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use govbus_bus::{Backoff, Bus, BusOptions, ServiceAdapter};
use govbus_civil::agencies::Agencies;
use govbus_civil::calendar::{Period, WorkingCalendar};
use govbus_complaints::office::Office;
use govbus_complaints::store::MIGRATIONS;
use govbus_complaints::{Application, ComplaintsConfig, Deadlines, NationalSettings};
use govbus_harness::{NatsServer, TestBackend, TestDatabase};
use govbus_identity_client::IdentityClient;
use govbus_kit::grpc::violations_of;
use govbus_proto::complaints::v1 as pb;
use govbus_proto::complaints::v1::complaints_service_client::ComplaintsServiceClient;
use govbus_proto::identity::v1 as identity;
use govbus_proto::identity::v1::identity_service_client::IdentityServiceClient;
use govbus_storage::{RelaySettings, Storage, StorageSettings};
use tonic::Code;
use tonic::transport::Channel;

govbus_harness::on_both_backends!(
    a_complaint_goes_from_filing_through_response_and_reopening_to_closure,
    verification_refuses_with_a_reason_and_bad_requests_get_every_field_problem,
    a_passed_deadline_is_escalated_once_by_every_replica_together,
    concurrent_escalation_rounds_escalate_each_deadline_once,
    concurrent_decisions_on_one_complaint_from_two_replicas_take_effect_once,
    accepted_complaints_reach_the_national_channel_through_its_failures,
    a_complaint_the_national_channel_refuses_is_dead_lettered_with_the_reason,
    the_texts_of_ended_complaints_are_erased_once_after_their_retention_period,
);

const COMPLAINANT: &str = "3573025708900002";
const TEXT: &str = "Lampu penerangan jalan di Jl. Ijen mati sejak dua minggu.";
const STREAM: &str = "GOVBUS_COMPLAINTS";

/// What the stand-in national channel does with each delivery, in turn (the last one repeats).
#[derive(Debug, Clone, Copy)]
enum Answer {
    Unavailable,
    Refuse,
    Take,
}

#[derive(Debug, Default)]
struct Received {
    keys: Vec<String>,
    authorizations: Vec<String>,
    bodies: Vec<serde_json::Value>,
}

#[derive(Clone)]
struct ChannelState {
    answers: Arc<Vec<Answer>>,
    received: Arc<Mutex<Received>>,
}

/// A local HTTP server in the national channel's place.
struct NationalChannel {
    url: String,
    received: Arc<Mutex<Received>>,
    task: tokio::task::JoinHandle<()>,
}

impl NationalChannel {
    async fn start(answers: Vec<Answer>) -> Self {
        let received = Arc::new(Mutex::new(Received::default()));
        let state = ChannelState {
            answers: Arc::new(answers),
            received: received.clone(),
        };
        let router = axum::Router::new()
            .route("/complaints", axum::routing::post(take))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listener");
        let url = format!(
            "http://{}/complaints",
            listener.local_addr().expect("address")
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serves");
        });
        Self {
            url,
            received,
            task,
        }
    }

    fn received(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().expect("lock")
    }
}

impl Drop for NationalChannel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn take(
    State(state): State<ChannelState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> impl IntoResponse {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let attempt = {
        let mut received = state.received.lock().expect("lock");
        received.keys.push(header("idempotency-key"));
        received.authorizations.push(header("authorization"));
        received
            .bodies
            .push(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
        received.keys.len()
    };
    let answer = state.answers[(attempt - 1).min(state.answers.len() - 1)];
    match answer {
        Answer::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            "down for maintenance".to_owned(),
        )
            .into_response(),
        Answer::Refuse => (
            StatusCode::UNPROCESSABLE_ENTITY,
            r#"{"code":"invalid_agency","message":"we do not know this agency"}"#.to_owned(),
        )
            .into_response(),
        Answer::Take => (
            StatusCode::CREATED,
            format!(r#"{{"tracking_ref":"LAPOR-{attempt}"}}"#),
        )
            .into_response(),
    }
}

struct TestApp {
    nats: NatsServer,
    identity_url: String,
    _databases: Vec<TestDatabase>,
    identity_app: Option<govbus_identity::Application>,
    replicas: Vec<Application>,
    clients: Vec<ComplaintsServiceClient<Channel>>,
    identity: IdentityServiceClient<Channel>,
    bus: Bus,
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

fn national(url: &str) -> NationalSettings {
    NationalSettings {
        url: url.to_owned(),
        bearer_token: Some("test-token".to_owned()),
        extra_roots_pem: None,
        timeout: Duration::from_secs(5),
        instance: "Pemerintah Kota Malang".to_owned(),
        max_deliveries: 4,
        backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(200)),
    }
}

impl TestApp {
    /// nats-server, identity with the complainant registered, and `replicas` complaints
    /// services on one database.
    async fn spawn(
        backend: TestBackend,
        replicas: usize,
        deadlines: Deadlines,
        national: Option<NationalSettings>,
    ) -> Self {
        Self::spawn_watching(
            backend,
            replicas,
            deadlines,
            national,
            Duration::from_millis(50),
        )
        .await
    }

    /// As [`spawn`](Self::spawn), the watchers looking for passed deadlines every `interval`.
    async fn spawn_watching(
        backend: TestBackend,
        replicas: usize,
        deadlines: Deadlines,
        national: Option<NationalSettings>,
        interval: Duration,
    ) -> Self {
        let nats = NatsServer::start().expect("nats-server starts");
        let identity_db = TestDatabase::new(backend).await.expect("test database");
        let complaints_db = TestDatabase::new(backend).await.expect("test database");
        let bus_options = |name: &str| {
            BusOptions::new(nats.client_url())
                .client_name(name)
                .request_timeout(Duration::from_millis(500))
        };
        let identity_app = Box::pin(govbus_identity::Application::build(
            govbus_identity::IdentityConfig {
                database_url: identity_db.url().to_owned(),
                listen: any_port(),
                bus: bus_options("identity"),
                storage: storage(),
                tls: None,
                access: None,
                audit_subject_key: None,
                audit_timestamps: None,
                call_report_interval: Duration::from_secs(60),
            },
        ))
        .await
        .expect("identity starts");
        let identity_url = format!("http://{}", identity_app.address());
        let mut apps = Vec::new();
        let mut clients = Vec::new();
        for replica in 0..replicas {
            let app = Box::pin(Application::build(ComplaintsConfig {
                database_url: complaints_db.url().to_owned(),
                listen: any_port(),
                identity_url: identity_url.clone(),
                bus: bus_options(&format!("complaints-{replica}")),
                storage: storage(),
                tls: None,
                access: None,
                audit_subject_key: None,
                audit_timestamps: None,
                agencies: None,
                deadlines: deadlines.clone(),
                deadline_check_interval: interval,
                calendar: None,
                national: national.clone(),
                keep_ended_texts: Duration::from_secs(730 * 24 * 3600),
            }))
            .await
            .expect("complaints starts");
            clients.push(
                ComplaintsServiceClient::connect(format!("http://{}", app.address()))
                    .await
                    .expect("connects"),
            );
            apps.push(app);
        }
        let mut identity = IdentityServiceClient::connect(identity_url)
            .await
            .expect("connects");
        identity
            .register_citizen(identity::RegisterCitizenRequest {
                idempotency_key: String::new(),
                nik: COMPLAINANT.to_owned(),
                kk_number: "3573020101200001".to_owned(),
                full_name: "Siti Rahayu".to_owned(),
                birth_place: "Malang".to_owned(),
                birth_date: "1990-08-17".to_owned(),
                sex: identity::Sex::Female.into(),
                address: Some(identity::Address {
                    street: "Jl. Ijen 1".to_owned(),
                    kelurahan_code: "35.73.02.1001".to_owned(),
                }),
            })
            .await
            .expect("registered");
        let bus = Bus::connect(bus_options("complaints-test"))
            .await
            .expect("bus");
        Self {
            nats,
            identity_url: format!("http://{}", identity_app.address()),
            _databases: vec![identity_db, complaints_db],
            identity_app: Some(identity_app),
            replicas: apps,
            clients,
            identity,
            bus,
        }
    }

    fn complaints_database(&self) -> &TestDatabase {
        &self._databases[1]
    }

    /// An office of its own over the complaints database, as another replica's would be.
    async fn office(&self, deadlines: Deadlines) -> Office {
        let db = Storage::open(
            self.complaints_database().url(),
            "complaints",
            MIGRATIONS,
            &storage(),
        )
        .await
        .expect("database");
        let publisher = ServiceAdapter::new("complaints")
            .publishes::<pb::ComplaintEscalated>()
            .publisher(&self.bus)
            .expect("publisher");
        let identity =
            IdentityClient::new(&self.identity_url, "complaints", None).expect("identity client");
        Office::new(
            db,
            publisher,
            identity,
            deadlines,
            WorkingCalendar::shipped().expect("calendar"),
            std::sync::Arc::new(Agencies::shipped().expect("agencies").clone()),
            None,
        )
    }

    fn client(&self) -> ComplaintsServiceClient<Channel> {
        self.clients[0].clone()
    }

    async fn file(&self, key: &str) -> pb::Complaint {
        self.client()
            .file_complaint(filing(key))
            .await
            .expect("filed")
            .into_inner()
            .complaint
            .expect("a complaint")
    }

    async fn get(&self, complaint_ref: &str) -> pb::Complaint {
        self.client()
            .get_complaint(pb::GetComplaintRequest {
                complaint_ref: complaint_ref.to_owned(),
            })
            .await
            .expect("found")
            .into_inner()
            .complaint
            .expect("a complaint")
    }

    async fn accept(&self, complaint_ref: &str, class: pb::ComplaintClass) -> pb::Complaint {
        self.client()
            .verify_complaint(accepting(complaint_ref, class, ""))
            .await
            .expect("accepted")
            .into_inner()
            .complaint
            .expect("a complaint")
    }

    /// The payloads of every event of `event_type` in complaints' stream.
    async fn events(&self, event_type: &str) -> Vec<Vec<u8>> {
        let Ok(mut stream) = self.bus.jetstream().get_stream(STREAM).await else {
            return Vec::new();
        };
        let Ok(info) = stream.info().await else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for sequence in 1..=info.state.last_sequence {
            if let Ok(message) = stream.get_raw_message(sequence).await
                && message
                    .headers
                    .get("ce-type")
                    .is_some_and(|value| value.as_str() == event_type)
            {
                found.push(message.payload.to_vec());
            }
        }
        found
    }

    async fn stop(mut self) {
        for app in self.replicas.drain(..) {
            app.stop().await;
        }
        if let Some(identity) = self.identity_app.take() {
            identity.stop().await;
        }
        drop(self.identity);
        drop(self.nats);
    }
}

fn filing(key: &str) -> pb::FileComplaintRequest {
    pb::FileComplaintRequest {
        idempotency_key: key.to_owned(),
        complainant_nik: COMPLAINANT.to_owned(),
        agency_code: "dpuprpkp".to_owned(),
        category: pb::Category::Infrastructure.into(),
        text: TEXT.to_owned(),
        channel: pb::Channel::Sms.into(),
        benefit_ref: String::new(),
        application_ref: String::new(),
    }
}

fn accepting(
    complaint_ref: &str,
    class: pb::ComplaintClass,
    key: &str,
) -> pb::VerifyComplaintRequest {
    pb::VerifyComplaintRequest {
        idempotency_key: key.to_owned(),
        complaint_ref: complaint_ref.to_owned(),
        decision: Some(pb::verify_complaint_request::Decision::Accept(
            pb::Acceptance {
                class: class.into(),
                agency_code: String::new(),
            },
        )),
    }
}

/// Waits until `check` holds (the relay, the consumers and the watcher work in the background).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn no_personal_data(payloads: &[Vec<u8>]) {
    for payload in payloads {
        let raw = String::from_utf8_lossy(payload);
        assert!(!raw.contains(COMPLAINANT), "no NIK in events");
        assert!(
            !raw.contains("Lampu penerangan"),
            "no complaint text in events"
        );
        assert!(
            !raw.contains("Sudah diperbaiki"),
            "no response text in events"
        );
    }
}

async fn a_complaint_goes_from_filing_through_response_and_reopening_to_closure(
    backend: TestBackend,
) {
    let test = TestApp::spawn(backend, 1, Deadlines::default(), None).await;
    let filed = test.file("file-1").await;
    let again = test.file("file-1").await;
    assert_eq!(filed, again, "a retry answers as the first time");
    assert_eq!(filed.status(), pb::ComplaintStatus::AwaitingVerification);
    // Due at the end of a working day: 24:00 WIB is 17:00 UTC.
    assert!(filed.deadline.ends_with("T17:00:00Z"), "{}", filed.deadline);
    assert!(!filed.complainant_ref.is_empty());

    let accepted = test
        .accept(&filed.complaint_ref, pb::ComplaintClass::Normatif)
        .await;
    assert_eq!(accepted.status(), pb::ComplaintStatus::WithAgency);
    assert_eq!(accepted.class(), pb::ComplaintClass::Normatif);
    assert!(accepted.deadline.ends_with("T17:00:00Z"));
    assert!(accepted.deadline >= filed.deadline);

    let routed = test
        .client()
        .route_complaint(pb::RouteComplaintRequest {
            idempotency_key: String::new(),
            complaint_ref: filed.complaint_ref.clone(),
            agency_code: "kec-klojen".to_owned(),
            reason: "Lampu jalan lingkungan dikelola kecamatan".to_owned(),
        })
        .await
        .expect("routed")
        .into_inner()
        .complaint
        .expect("a complaint");
    assert_eq!(routed.agency_code, "kec-klojen");
    assert_eq!(
        routed.deadline, accepted.deadline,
        "routing keeps the deadline"
    );

    let respond = |agency: &str, text: &str| pb::RespondToComplaintRequest {
        idempotency_key: String::new(),
        complaint_ref: filed.complaint_ref.clone(),
        agency_code: agency.to_owned(),
        response: text.to_owned(),
    };
    let wrong = test
        .client()
        .respond_to_complaint(respond("dpuprpkp", "Bukan kami"))
        .await
        .expect_err("not the agency it is with");
    assert_eq!(wrong.code(), Code::FailedPrecondition);
    let responded = test
        .client()
        .respond_to_complaint(respond("kec-klojen", "Sudah diperbaiki hari ini"))
        .await
        .expect("responded")
        .into_inner()
        .complaint
        .expect("a complaint");
    assert_eq!(responded.status(), pb::ComplaintStatus::Responded);
    assert!(responded.responded_within_deadline);
    assert!(
        responded.deadline.is_empty(),
        "nothing is awaited from the city"
    );

    let reopened = test
        .client()
        .reopen_complaint(pb::ReopenComplaintRequest {
            idempotency_key: String::new(),
            complaint_ref: filed.complaint_ref.clone(),
            reason: "Lampu mati lagi".to_owned(),
        })
        .await
        .expect("reopened")
        .into_inner()
        .complaint
        .expect("a complaint");
    assert_eq!(reopened.status(), pb::ComplaintStatus::WithAgency);
    assert_eq!(reopened.reopened, 1);
    assert!(!reopened.deadline.is_empty());

    let early_close = test
        .client()
        .close_complaint(pb::CloseComplaintRequest {
            idempotency_key: String::new(),
            complaint_ref: filed.complaint_ref.clone(),
        })
        .await
        .expect_err("nothing to accept yet");
    assert_eq!(early_close.code(), Code::FailedPrecondition);
    test.client()
        .respond_to_complaint(respond("kec-klojen", "Sudah diperbaiki, kabel diganti"))
        .await
        .expect("responded again");
    let closed = test
        .client()
        .close_complaint(pb::CloseComplaintRequest {
            idempotency_key: String::new(),
            complaint_ref: filed.complaint_ref.clone(),
        })
        .await
        .expect("closed")
        .into_inner()
        .complaint
        .expect("a complaint");
    assert_eq!(closed.status(), pb::ComplaintStatus::Closed);
    assert_eq!(test.get(&filed.complaint_ref).await, closed);

    let mut all = Vec::new();
    for (event_type, count) in [
        ("complaints.complaint.filed.v1", 1),
        ("complaints.complaint.accepted.v1", 1),
        ("complaints.complaint.routed.v1", 1),
        ("complaints.complaint.responded.v1", 2),
        ("complaints.complaint.reopened.v1", 1),
        ("complaints.complaint.closed.v1", 1),
    ] {
        eventually(event_type, async || {
            test.events(event_type).await.len() == count
        })
        .await;
        all.extend(test.events(event_type).await);
    }
    no_personal_data(&all);

    // Listing: newest first, without texts, page by page.
    let second = test.file("file-2").await;
    let mut client = test.client();
    let page = client
        .list_complaints(pb::ListComplaintsRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("listed")
        .into_inner();
    assert_eq!(page.complaints.len(), 1);
    assert_eq!(page.complaints[0].complaint_ref, second.complaint_ref);
    let rest = client
        .list_complaints(pb::ListComplaintsRequest {
            page_size: 1,
            page_token: page.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .expect("listed")
        .into_inner();
    assert_eq!(rest.complaints[0].complaint_ref, filed.complaint_ref);
    assert!(rest.next_page_token.is_empty());
    let closed_only = client
        .list_complaints(pb::ListComplaintsRequest {
            status: pb::ComplaintStatus::Closed.into(),
            agency_code: "kec-klojen".to_owned(),
            ..Default::default()
        })
        .await
        .expect("listed")
        .into_inner();
    assert_eq!(closed_only.complaints.len(), 1);

    let agencies = client
        .list_agencies(pb::ListAgenciesRequest {})
        .await
        .expect("agencies")
        .into_inner();
    assert!(
        agencies
            .agencies
            .iter()
            .any(|agency| agency.code == "diskominfo")
    );
    assert!(agencies.source.contains("Nomor 7 Tahun 2016"));
    assert_eq!(agencies.verification_working_days, 3);
    let days: Vec<u32> = agencies.classes.iter().map(|c| c.working_days).collect();
    assert_eq!(days, [2, 5, 14, 60]);
    test.stop().await;
}

async fn verification_refuses_with_a_reason_and_bad_requests_get_every_field_problem(
    backend: TestBackend,
) {
    let test = TestApp::spawn(backend, 1, Deadlines::default(), None).await;
    let filed = test.file("").await;
    let refused = test
        .client()
        .verify_complaint(pb::VerifyComplaintRequest {
            idempotency_key: String::new(),
            complaint_ref: filed.complaint_ref.clone(),
            decision: Some(pb::verify_complaint_request::Decision::Refuse(
                pb::Refusal {
                    ground: pb::RefusalGround::NotPublicService.into(),
                    reason: "Sengketa antarwarga, bukan layanan publik".to_owned(),
                },
            )),
        })
        .await
        .expect("refused")
        .into_inner()
        .complaint
        .expect("a complaint");
    assert_eq!(refused.status(), pb::ComplaintStatus::Refused);
    assert_eq!(
        refused.refusal_ground(),
        pb::RefusalGround::NotPublicService
    );
    assert!(refused.deadline.is_empty());
    let twice = test
        .client()
        .verify_complaint(accepting(
            &filed.complaint_ref,
            pb::ComplaintClass::Ringan,
            "",
        ))
        .await
        .expect_err("already refused");
    assert_eq!(twice.code(), Code::FailedPrecondition);
    eventually("ComplaintRefused", async || {
        test.events("complaints.complaint.refused.v1").await.len() == 1
    })
    .await;

    let fields = |status: &tonic::Status| -> Vec<String> {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        violations_of(status)
            .into_iter()
            .map(|violation| violation.field)
            .collect()
    };
    let bad = test
        .client()
        .file_complaint(pb::FileComplaintRequest {
            idempotency_key: "a\u{7}bell".to_owned(),
            complainant_nik: "12".to_owned(),
            agency_code: "dinas-rahasia".to_owned(),
            category: 0,
            text: "pendek".to_owned(),
            channel: 0,
            benefit_ref: "not-a-ref".to_owned(),
            application_ref: "also-not".to_owned(),
        })
        .await
        .expect_err("refused");
    let found = fields(&bad);
    for field in [
        "idempotency_key",
        "complainant_nik",
        "agency_code",
        "category",
        "text",
        "channel",
        "benefit_ref",
        "application_ref",
    ] {
        assert!(found.iter().any(|f| f == field), "{field} in {found:?}");
    }
    let no_decision = test
        .client()
        .verify_complaint(pb::VerifyComplaintRequest {
            idempotency_key: String::new(),
            complaint_ref: "nope".to_owned(),
            decision: None,
        })
        .await
        .expect_err("refused");
    let found = fields(&no_decision);
    assert!(found.contains(&"decision".to_owned()) && found.contains(&"complaint_ref".to_owned()));
    let bad_class = test
        .client()
        .verify_complaint(pb::VerifyComplaintRequest {
            idempotency_key: String::new(),
            complaint_ref: filed.complaint_ref.clone(),
            decision: Some(pb::verify_complaint_request::Decision::Accept(
                pb::Acceptance {
                    class: 0,
                    agency_code: "nowhere".to_owned(),
                },
            )),
        })
        .await
        .expect_err("refused");
    let found = fields(&bad_class);
    assert!(found.contains(&"accept.class".to_owned()));
    assert!(found.contains(&"accept.agency_code".to_owned()));
    let bad_page = test
        .client()
        .list_complaints(pb::ListComplaintsRequest {
            page_size: 10_000,
            page_token: "garbage".to_owned(),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    let found = fields(&bad_page);
    assert!(found.contains(&"page_size".to_owned()) && found.contains(&"page_token".to_owned()));

    let mut stranger = filing("");
    stranger.complainant_nik = "3573025708900010".to_owned();
    let unknown = test
        .client()
        .file_complaint(stranger)
        .await
        .expect_err("not in the register");
    assert_eq!(unknown.code(), Code::FailedPrecondition);
    let missing = test
        .client()
        .get_complaint(pb::GetComplaintRequest {
            complaint_ref: uuid::Uuid::now_v7().to_string(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);
    test.stop().await;
}

/// Deadlines that pass at once, as working days would after their last day.
fn passing_at_once() -> Deadlines {
    let now = Period::Exactly(Duration::ZERO);
    Deadlines {
        verification: now,
        ringan: now,
        normatif: now,
        tidak_berkadar_pengawasan: now,
        berkadar_pengawasan: now,
    }
}

async fn a_passed_deadline_is_escalated_once_by_every_replica_together(backend: TestBackend) {
    // Two replicas on one database, each with its watcher looking every 50 ms.
    let test = TestApp::spawn(backend, 2, passing_at_once(), None).await;
    let filed = test.file("").await;
    eventually("the verification escalated", async || {
        test.get(&filed.complaint_ref).await.escalated
    })
    .await;
    let accepted = test
        .accept(&filed.complaint_ref, pb::ComplaintClass::Ringan)
        .await;
    assert_eq!(accepted.status(), pb::ComplaintStatus::WithAgency);
    eventually("the response escalated", async || {
        test.get(&filed.complaint_ref).await.escalated
    })
    .await;
    eventually("both escalations published", async || {
        test.events("complaints.complaint.escalated.v1").await.len() >= 2
    })
    .await;
    // Rounds enough for a second escalation of either deadline to show, if there were one.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let escalations: Vec<pb::ComplaintEscalated> = test
        .events("complaints.complaint.escalated.v1")
        .await
        .iter()
        .map(|payload| prost::Message::decode(payload.as_slice()).expect("decodes"))
        .collect();
    let stages: Vec<&str> = escalations.iter().map(|e| e.stage.as_str()).collect();
    assert_eq!(stages, ["verification", "response"]);
    assert_eq!(escalations[1].class, "ringan");
    // A response after the deadline is answered, and says it came late.
    let late = test
        .client()
        .respond_to_complaint(pb::RespondToComplaintRequest {
            idempotency_key: String::new(),
            complaint_ref: filed.complaint_ref.clone(),
            agency_code: "dpuprpkp".to_owned(),
            response: "Sudah diperbaiki".to_owned(),
        })
        .await
        .expect("responded")
        .into_inner()
        .complaint
        .expect("a complaint");
    assert!(!late.responded_within_deadline);
    eventually("ComplaintResponded", async || {
        test.events("complaints.complaint.responded.v1").await.len() == 1
    })
    .await;
    let responded: pb::ComplaintResponded = prost::Message::decode(
        test.events("complaints.complaint.responded.v1").await[0].as_slice(),
    )
    .expect("decodes");
    assert!(!responded.within_deadline && responded.was_escalated);
    test.stop().await;
}

/// Escalation rounds of several replicas at once (each reads the passed deadlines beside the
/// writer, then escalates them): every deadline is escalated once, with one event.
async fn concurrent_escalation_rounds_escalate_each_deadline_once(backend: TestBackend) {
    // The services' own watchers look once at start, then not for an hour.
    let test = TestApp::spawn_watching(
        backend,
        1,
        passing_at_once(),
        None,
        Duration::from_secs(3600),
    )
    .await;
    let mut filed = Vec::new();
    for _ in 0..10 {
        filed.push(test.file("").await.complaint_ref);
    }
    let offices = [
        test.office(passing_at_once()).await,
        test.office(passing_at_once()).await,
    ];
    let mut rounds = Vec::new();
    for n in 0..8 {
        let office = offices[n % 2].clone();
        rounds.push(tokio::spawn(async move { office.escalate_overdue().await }));
    }
    let mut escalated = 0;
    for round in rounds {
        escalated += round.await.expect("task").expect("a round");
    }
    // The services' own watchers take their first look as they start, which on a slow
    // database can fall among the filings: they may have escalated some of these first.
    assert!(escalated <= 10, "{escalated} escalations of 10 deadlines");
    for complaint_ref in &filed {
        assert!(test.get(complaint_ref).await.escalated);
    }
    eventually("the escalations published", async || {
        test.events("complaints.complaint.escalated.v1").await.len() >= 10
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let escalations: Vec<pb::ComplaintEscalated> = test
        .events("complaints.complaint.escalated.v1")
        .await
        .iter()
        .map(|payload| prost::Message::decode(payload.as_slice()).expect("decodes"))
        .collect();
    let escalated: std::collections::BTreeSet<&str> = escalations
        .iter()
        .map(|escalation| escalation.complaint_ref.as_str())
        .collect();
    assert_eq!(escalations.len(), 10, "each deadline escalated once in all");
    assert_eq!(escalated.len(), 10, "every complaint's deadline escalated");
    test.stop().await;
}

async fn concurrent_decisions_on_one_complaint_from_two_replicas_take_effect_once(
    backend: TestBackend,
) {
    let test = TestApp::spawn(backend, 2, Deadlines::default(), None).await;
    let filed = test.file("").await;
    // Sixteen officers accept it at once, with different keys, through both replicas; only the
    // first decision stands, the others find it decided.
    let mut decisions = Vec::new();
    for n in 0..16 {
        let mut client = test.clients[n % 2].clone();
        let request = accepting(
            &filed.complaint_ref,
            if n % 2 == 0 {
                pb::ComplaintClass::Ringan
            } else {
                pb::ComplaintClass::BerkadarPengawasan
            },
            &format!("officer-{n}"),
        );
        decisions.push(tokio::spawn(async move {
            client.verify_complaint(request).await
        }));
    }
    let mut accepted = Vec::new();
    for decision in decisions {
        match decision.await.expect("task") {
            Ok(response) => accepted.push(response.into_inner().complaint.expect("a complaint")),
            Err(status) => assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}"),
        }
    }
    assert_eq!(accepted.len(), 1, "one decision stands");
    let stored = test.get(&filed.complaint_ref).await;
    assert_eq!(stored.class, accepted[0].class);
    eventually("ComplaintAccepted", async || {
        !test
            .events("complaints.complaint.accepted.v1")
            .await
            .is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        test.events("complaints.complaint.accepted.v1").await.len(),
        1
    );
    test.stop().await;
}

async fn accepted_complaints_reach_the_national_channel_through_its_failures(backend: TestBackend) {
    let channel =
        NationalChannel::start(vec![Answer::Unavailable, Answer::Unavailable, Answer::Take]).await;
    let test = TestApp::spawn(
        backend,
        1,
        Deadlines::default(),
        Some(national(&channel.url)),
    )
    .await;
    let filed = test.file("").await;
    test.accept(
        &filed.complaint_ref,
        pb::ComplaintClass::TidakBerkadarPengawasan,
    )
    .await;
    eventually("the national tracking number", async || {
        !test.get(&filed.complaint_ref).await.national_ref.is_empty()
    })
    .await;
    assert_eq!(test.get(&filed.complaint_ref).await.national_ref, "LAPOR-3");
    eventually("ComplaintForwarded", async || {
        test.events("complaints.complaint.forwarded.v1").await.len() == 1
    })
    .await;
    {
        let received = channel.received();
        assert_eq!(received.keys.len(), 3, "two failures, then taken");
        assert!(
            received.keys.iter().all(|key| *key == filed.complaint_ref),
            "every attempt carries the same idempotency key"
        );
        assert!(
            received
                .authorizations
                .iter()
                .all(|a| a == "Bearer test-token")
        );
        let body = &received.bodies[2];
        assert_eq!(body["text"], TEXT);
        assert_eq!(body["class"], "tidak-berkadar-pengawasan");
        assert_eq!(body["agency"]["code"], "dpuprpkp");
        assert!(
            !body.to_string().contains(COMPLAINANT),
            "the NIK is not sent"
        );
    }
    no_personal_data(&test.events("complaints.complaint.forwarded.v1").await);
    test.stop().await;
}

async fn a_complaint_the_national_channel_refuses_is_dead_lettered_with_the_reason(
    backend: TestBackend,
) {
    let channel = NationalChannel::start(vec![Answer::Refuse]).await;
    let test = TestApp::spawn(
        backend,
        1,
        Deadlines::default(),
        Some(national(&channel.url)),
    )
    .await;
    let filed = test.file("").await;
    test.accept(&filed.complaint_ref, pb::ComplaintClass::Ringan)
        .await;
    let dead_letters = test.bus.dead_letters();
    let mut letters = Vec::new();
    eventually("the dead letter", async || {
        letters = dead_letters.list(0, 10).await.unwrap_or_default();
        !letters.is_empty()
    })
    .await;
    assert_eq!(letters.len(), 1);
    let reason = &letters[0].reason;
    assert!(
        reason.contains("422") && reason.contains("invalid_agency"),
        "{reason}"
    );
    assert!(
        !reason.contains("we do not know"),
        "the answer's free text is not quoted"
    );
    assert_eq!(channel.received().keys.len(), 1, "a refusal is not retried");
    assert!(test.get(&filed.complaint_ref).await.national_ref.is_empty());
    test.stop().await;
}

async fn the_texts_of_ended_complaints_are_erased_once_after_their_retention_period(
    backend: TestBackend,
) {
    let test = TestApp::spawn(backend, 1, Deadlines::default(), None).await;
    let refuse = async |complaint_ref: &str| {
        test.client()
            .verify_complaint(pb::VerifyComplaintRequest {
                idempotency_key: String::new(),
                complaint_ref: complaint_ref.to_owned(),
                decision: Some(pb::verify_complaint_request::Decision::Refuse(
                    pb::Refusal {
                        ground: pb::RefusalGround::NotPublicService.into(),
                        reason: "Sengketa antarwarga, bukan layanan publik".to_owned(),
                    },
                )),
            })
            .await
            .expect("refused");
    };
    let ended = test.file("").await.complaint_ref;
    refuse(&ended).await;
    let with_agency = test.file("").await.complaint_ref;
    test.accept(&with_agency, pb::ComplaintClass::Ringan).await;
    let waiting = test.file("").await.complaint_ref;
    let office = test.office(Deadlines::default()).await;

    // Within the period nothing goes; past it, only what ended.
    assert_eq!(
        office
            .erase_ended_texts(Duration::from_secs(3600))
            .await
            .expect("a round"),
        0
    );
    assert_eq!(
        office
            .erase_ended_texts(Duration::ZERO)
            .await
            .expect("a round"),
        1
    );
    let erased = test.get(&ended).await;
    assert_eq!(erased.text, "");
    assert_eq!(erased.refusal_reason, "");
    assert_eq!(
        erased.status(),
        pb::ComplaintStatus::Refused,
        "the outcome stays"
    );
    assert_eq!(erased.complaint_ref, ended);
    for kept in [&with_agency, &waiting] {
        assert_eq!(
            test.get(kept).await.text,
            TEXT,
            "a complaint still handled keeps its text"
        );
    }

    // Concurrent rounds from two replicas erase each ended complaint once in all.
    for _ in 0..12 {
        let complaint_ref = test.file("").await.complaint_ref;
        refuse(&complaint_ref).await;
    }
    let offices = [
        test.office(Deadlines::default()).await,
        test.office(Deadlines::default()).await,
    ];
    let mut rounds = Vec::new();
    for n in 0..6 {
        let office = offices[n % 2].clone();
        rounds.push(tokio::spawn(async move {
            office.erase_ended_texts(Duration::ZERO).await
        }));
    }
    let mut total = 0;
    for round in rounds {
        total += round.await.expect("task").expect("a round");
    }
    assert_eq!(total, 12, "each ended complaint's texts erased once");
    assert_eq!(test.get(&with_agency).await.text, TEXT);
    test.stop().await;
}
