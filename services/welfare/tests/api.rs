//! The welfare service end to end with a real identity service, nats-server and databases
//! (SQLite and PostgreSQL), driven only through the gRPC APIs.

use std::time::Duration;

use govbus_bus::{Bus, BusOptions};
use govbus_harness::{NatsServer, TestBackend, TestDatabase};
use govbus_kit::RelaySettings;
use govbus_proto::identity::v1 as identity;
use govbus_proto::identity::v1::identity_service_client::IdentityServiceClient;
use govbus_proto::welfare::v1 as pb;
use govbus_proto::welfare::v1::welfare_service_client::WelfareServiceClient;
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

govbus_harness::on_both_backends!(
    households_need_living_registered_members,
    applications_follow_the_desil_thresholds,
    a_reassessment_into_desil_five_suspends_pkh,
    a_death_suspends_benefits_through_the_bus,
    a_relocation_updates_the_address,
    without_identity_applications_are_unavailable,
);

struct Stack {
    _nats: NatsServer,
    _databases: Vec<TestDatabase>,
    identity_app: Option<govbus_identity::Application>,
    welfare_app: Option<govbus_welfare::Application>,
    identity: IdentityServiceClient<Channel>,
    welfare: WelfareServiceClient<Channel>,
    bus: Bus,
}

fn relay() -> RelaySettings {
    RelaySettings {
        poll_interval: Duration::from_millis(100),
        ..RelaySettings::default()
    }
}

impl Stack {
    async fn start(backend: TestBackend) -> Self {
        let nats = NatsServer::start().expect("nats-server");
        let identity_db = TestDatabase::new(backend).await.expect("identity db");
        let welfare_db = TestDatabase::new(backend).await.expect("welfare db");
        let bus_options = |name: &str| {
            BusOptions::new(nats.client_url())
                .client_name(name)
                .request_timeout(Duration::from_millis(500))
        };
        let identity_app = govbus_identity::Application::build(govbus_identity::IdentityConfig {
            database_url: identity_db.url().to_owned(),
            listen: "127.0.0.1:0".parse().expect("address"),
            bus: bus_options("identity"),
            relay: relay(),
        })
        .await
        .expect("identity starts");
        let identity_url = format!("http://{}", identity_app.address());
        let welfare_app = govbus_welfare::Application::build(govbus_welfare::WelfareConfig {
            database_url: welfare_db.url().to_owned(),
            listen: "127.0.0.1:0".parse().expect("address"),
            identity_url: identity_url.clone(),
            bus: bus_options("welfare"),
            relay: relay(),
        })
        .await
        .expect("welfare starts");
        let identity = IdentityServiceClient::connect(identity_url)
            .await
            .expect("identity client");
        let welfare = WelfareServiceClient::connect(format!("http://{}", welfare_app.address()))
            .await
            .expect("welfare client");
        let bus = Bus::connect(bus_options("test")).await.expect("bus");
        Self {
            _nats: nats,
            _databases: vec![identity_db, welfare_db],
            identity_app: Some(identity_app),
            welfare_app: Some(welfare_app),
            identity,
            welfare,
            bus,
        }
    }

    async fn register_citizen(
        &mut self,
        nik: &str,
        birth_date: &str,
        sex: identity::Sex,
    ) -> String {
        self.identity
            .register_citizen(identity::RegisterCitizenRequest {
                idempotency_key: String::new(),
                nik: nik.to_owned(),
                kk_number: KK.to_owned(),
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

    /// A household of two living citizens, assessed at `desil`.
    async fn household(&mut self, desil: u32) {
        self.register_citizen(MOTHER, "1990-08-17", identity::Sex::Female)
            .await;
        self.register_citizen(FATHER, "1988-05-02", identity::Sex::Male)
            .await;
        self.welfare
            .register_household(pb::RegisterHouseholdRequest {
                idempotency_key: String::new(),
                kk_number: KK.to_owned(),
                kelurahan_code: "35.73.02.1001".to_owned(),
                member_niks: vec![MOTHER.to_owned(), FATHER.to_owned()],
            })
            .await
            .expect("household registered");
        self.assess(desil).await;
    }

    async fn assess(&mut self, desil: u32) -> pb::AssessHouseholdResponse {
        self.welfare
            .assess_household(pb::AssessHouseholdRequest {
                idempotency_key: String::new(),
                kk_number: KK.to_owned(),
                desil,
            })
            .await
            .expect("assessed")
            .into_inner()
    }

    async fn apply(
        &mut self,
        nik: &str,
        programme: pb::Programme,
    ) -> Result<pb::ApplyForProgrammeResponse, tonic::Status> {
        self.welfare
            .apply_for_programme(pb::ApplyForProgrammeRequest {
                idempotency_key: String::new(),
                nik: nik.to_owned(),
                programme: programme.into(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    async fn benefits(&mut self, nik: &str) -> Vec<pb::Benefit> {
        self.welfare
            .list_benefits(pb::ListBenefitsRequest {
                nik: nik.to_owned(),
            })
            .await
            .expect("listed")
            .into_inner()
            .benefits
    }

    /// Welfare's events of `event_type`, waiting until there are `count`.
    async fn welfare_events(&self, event_type: &str, count: usize) -> Vec<(Vec<u8>, String)> {
        for _ in 0..1500 {
            let events = self.events_of(event_type).await;
            if events.len() >= count {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("fewer than {count} {event_type} events");
    }

    async fn events_of(&self, event_type: &str) -> Vec<(Vec<u8>, String)> {
        let Ok(mut stream) = self.bus.jetstream().get_stream("GOVBUS_WELFARE").await else {
            return Vec::new();
        };
        let last = stream
            .info()
            .await
            .map(|info| info.state.last_sequence)
            .unwrap_or(0);
        let mut events = Vec::new();
        for sequence in 1..=last {
            if let Ok(message) = stream.get_raw_message(sequence).await {
                let header = |name: &str| {
                    message
                        .headers
                        .get(name)
                        .map(|value| value.as_str().to_owned())
                        .unwrap_or_default()
                };
                if header("ce-type") == event_type {
                    events.push((message.payload.to_vec(), header("ce-correlationid")));
                }
            }
        }
        events
    }

    async fn stop(mut self) {
        if let Some(app) = self.welfare_app.take() {
            app.stop().await;
        }
        if let Some(app) = self.identity_app.take() {
            app.stop().await;
        }
    }
}

const KK: &str = "3573020101200001";
const MOTHER: &str = "3573025708900002";
const FATHER: &str = "3573020205880003";

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..1500 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("gave up waiting for: {what}");
}

async fn households_need_living_registered_members(backend: TestBackend) {
    let mut stack = Stack::start(backend).await;
    stack
        .register_citizen(MOTHER, "1990-08-17", identity::Sex::Female)
        .await;
    let unknown = stack
        .welfare
        .register_household(pb::RegisterHouseholdRequest {
            idempotency_key: String::new(),
            kk_number: KK.to_owned(),
            kelurahan_code: "35.73.02.1001".to_owned(),
            member_niks: vec![MOTHER.to_owned(), FATHER.to_owned()],
        })
        .await
        .expect_err("the father is not registered");
    assert_eq!(unknown.code(), Code::FailedPrecondition);
    assert!(
        unknown
            .message()
            .contains("member 2 is not in the population register"),
        "{}",
        unknown.message()
    );
    assert!(!unknown.message().contains(FATHER));

    let invalid = stack
        .welfare
        .register_household(pb::RegisterHouseholdRequest {
            idempotency_key: String::new(),
            kk_number: "1".to_owned(),
            kelurahan_code: String::new(),
            member_niks: vec![MOTHER.to_owned(), MOTHER.to_owned()],
        })
        .await
        .expect_err("invalid");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let fields: Vec<String> = govbus_kit::grpc::violations_of(&invalid)
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["kk_number", "kelurahan_code", "member_niks[1]"]);

    stack
        .register_citizen(FATHER, "1988-05-02", identity::Sex::Male)
        .await;
    stack
        .welfare
        .register_household(pb::RegisterHouseholdRequest {
            idempotency_key: String::new(),
            kk_number: KK.to_owned(),
            kelurahan_code: "35.73.02.1001".to_owned(),
            member_niks: vec![MOTHER.to_owned(), FATHER.to_owned()],
        })
        .await
        .expect("both members are living citizens now");
    let again = stack
        .welfare
        .register_household(pb::RegisterHouseholdRequest {
            idempotency_key: String::new(),
            kk_number: KK.to_owned(),
            kelurahan_code: "35.73.02.1001".to_owned(),
            member_niks: vec![MOTHER.to_owned()],
        })
        .await
        .expect_err("registered already");
    assert_eq!(again.code(), Code::AlreadyExists);
    stack.stop().await;
}

async fn applications_follow_the_desil_thresholds(backend: TestBackend) {
    let mut stack = Stack::start(backend).await;
    stack
        .register_citizen(MOTHER, "1990-08-17", identity::Sex::Female)
        .await;
    stack
        .register_citizen(FATHER, "1988-05-02", identity::Sex::Male)
        .await;
    stack
        .welfare
        .register_household(pb::RegisterHouseholdRequest {
            idempotency_key: String::new(),
            kk_number: KK.to_owned(),
            kelurahan_code: "35.73.02.1001".to_owned(),
            member_niks: vec![MOTHER.to_owned(), FATHER.to_owned()],
        })
        .await
        .expect("household registered");
    let unassessed = stack
        .apply(MOTHER, pb::Programme::Pkh)
        .await
        .expect_err("no desil yet");
    assert_eq!(unassessed.code(), Code::FailedPrecondition);

    stack.assess(5).await;
    let pkh = stack
        .apply(MOTHER, pb::Programme::Pkh)
        .await
        .expect("decided");
    assert_eq!(pkh.status(), pb::BenefitStatus::Refused);
    assert!(
        pkh.reason.contains("PKH requires desil 1–4"),
        "{}",
        pkh.reason
    );
    let bpnt = stack
        .apply(MOTHER, pb::Programme::Bpnt)
        .await
        .expect("decided");
    assert_eq!(bpnt.status(), pb::BenefitStatus::Active);
    let again = stack
        .apply(MOTHER, pb::Programme::Bpnt)
        .await
        .expect_err("already receiving");
    assert_eq!(again.code(), Code::AlreadyExists);

    stack.assess(6).await;
    let pbi = stack
        .apply(FATHER, pb::Programme::PbiJk)
        .await
        .expect("decided");
    assert_eq!(pbi.status(), pb::BenefitStatus::Refused);

    let unknown = stack
        .apply("3573021708900001", pb::Programme::Bpnt)
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::FailedPrecondition);
    assert!(unknown.message().contains("not in the population register"));

    let granted = stack.welfare_events("welfare.benefit.granted.v1", 1).await;
    let refused = stack.welfare_events("welfare.benefit.refused.v1", 2).await;
    let event = pb::BenefitGranted::decode(granted[0].0.as_slice()).expect("decodes");
    assert_eq!(event.programme, "BPNT");
    assert_eq!(event.desil, 5);
    assert_eq!(refused.len(), 2);
    stack.stop().await;
}

async fn a_reassessment_into_desil_five_suspends_pkh(backend: TestBackend) {
    let mut stack = Stack::start(backend).await;
    stack.household(2).await;
    let pkh = stack
        .apply(MOTHER, pb::Programme::Pkh)
        .await
        .expect("granted");
    assert_eq!(pkh.status(), pb::BenefitStatus::Active);
    let bpnt = stack
        .apply(MOTHER, pb::Programme::Bpnt)
        .await
        .expect("granted");
    assert_eq!(bpnt.status(), pb::BenefitStatus::Active);

    let assessed = stack.assess(5).await;
    assert_eq!(assessed.suspended_benefit_refs, std::slice::from_ref(&pkh.benefit_ref));
    let benefits = stack.benefits(MOTHER).await;
    let pkh_now = benefits
        .iter()
        .find(|b| b.benefit_ref == pkh.benefit_ref)
        .expect("listed");
    assert_eq!(pkh_now.status(), pb::BenefitStatus::Suspended);
    assert_eq!(
        pkh_now.reason,
        "pending verification: household reassessed into desil 5"
    );
    let bpnt_now = benefits
        .iter()
        .find(|b| b.benefit_ref == bpnt.benefit_ref)
        .expect("listed");
    assert_eq!(bpnt_now.status(), pb::BenefitStatus::Active);

    let suspended = stack
        .welfare_events("welfare.benefit.suspended.v1", 1)
        .await;
    let event = pb::BenefitSuspended::decode(suspended[0].0.as_slice()).expect("decodes");
    assert_eq!(event.benefit_ref, pkh.benefit_ref);
    assert_eq!(event.programme, "PKH");
    stack.stop().await;
}

async fn a_death_suspends_benefits_through_the_bus(backend: TestBackend) {
    let mut stack = Stack::start(backend).await;
    stack.household(3).await;
    let pkh = stack
        .apply(MOTHER, pb::Programme::Pkh)
        .await
        .expect("granted");
    let father_pkh = stack
        .apply(FATHER, pb::Programme::Pkh)
        .await
        .expect("granted");

    let mut request = tonic::Request::new(identity::RecordDeathRequest {
        idempotency_key: String::new(),
        nik: MOTHER.to_owned(),
        date_of_death: "2024-11-01".to_owned(),
    });
    request
        .metadata_mut()
        .insert("x-request-id", "death-of-mother".parse().expect("ascii"));
    stack
        .identity
        .record_death(request)
        .await
        .expect("death recorded");

    eventually("the mother's benefit is suspended", async || {
        stack
            .benefits(MOTHER)
            .await
            .iter()
            .any(|b| b.status() == pb::BenefitStatus::Suspended)
    })
    .await;
    let mother = stack.benefits(MOTHER).await;
    assert_eq!(mother[0].benefit_ref, pkh.benefit_ref);
    assert_eq!(mother[0].reason, "recipient deceased");
    let father = stack.benefits(FATHER).await;
    assert_eq!(father[0].benefit_ref, father_pkh.benefit_ref);
    assert_eq!(
        father[0].status(),
        pb::BenefitStatus::Active,
        "only the deceased's benefits stop"
    );

    let suspended = stack
        .welfare_events("welfare.benefit.suspended.v1", 1)
        .await;
    assert_eq!(suspended.len(), 1);
    assert_eq!(
        suspended[0].1, "death-of-mother",
        "the suspension joins the death's transaction"
    );

    let deceased = stack
        .apply(MOTHER, pb::Programme::Bpnt)
        .await
        .expect_err("deceased");
    assert_eq!(deceased.code(), Code::FailedPrecondition);
    assert!(deceased.message().contains("deceased"));
    stack.stop().await;
}

async fn a_relocation_updates_the_address(backend: TestBackend) {
    let mut stack = Stack::start(backend).await;
    stack.household(3).await;
    stack
        .identity
        .record_relocation(identity::RecordRelocationRequest {
            idempotency_key: String::new(),
            nik: FATHER.to_owned(),
            new_address: Some(identity::Address {
                street: "Jl. Soekarno Hatta 9".to_owned(),
                kelurahan_code: "35.73.05.1001".to_owned(),
            }),
        })
        .await
        .expect("relocated");
    // Wait until identity published the relocation and welfare consumed everything.
    eventually("welfare consumed the relocation", async || {
        let Ok(mut stream) = stack.bus.jetstream().get_stream("GOVBUS_IDENTITY").await else {
            return false;
        };
        let published = stream
            .info()
            .await
            .map(|info| info.state.messages)
            .unwrap_or(0);
        let Ok(consumer) = stream.consumer_info("welfare-identity").await else {
            return false;
        };
        published == 3
            && consumer.delivered.stream_sequence == 3
            && consumer.num_ack_pending == 0
            && consumer.num_pending == 0
    })
    .await;
    // A grant carries the member's address as welfare knows it.
    let granted = stack
        .apply(FATHER, pb::Programme::Bpnt)
        .await
        .expect("decided");
    assert_eq!(granted.status(), pb::BenefitStatus::Active);
    let events = stack.welfare_events("welfare.benefit.granted.v1", 1).await;
    let event = pb::BenefitGranted::decode(events[0].0.as_slice()).expect("decodes");
    assert_eq!(event.kelurahan_code, "35.73.05.1001");
    stack.stop().await;
}

async fn without_identity_applications_are_unavailable(backend: TestBackend) {
    let mut stack = Stack::start(backend).await;
    stack.household(3).await;
    if let Some(identity) = stack.identity_app.take() {
        identity.stop().await;
    }
    let status = stack
        .apply(MOTHER, pb::Programme::Pkh)
        .await
        .expect_err("identity is down");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        stack.benefits(MOTHER).await.is_empty(),
        "nothing was decided"
    );
    stack.stop().await;
}
