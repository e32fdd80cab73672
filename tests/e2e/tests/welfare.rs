//! The welfare service end to end with a real identity service, nats-server and databases
//! (SQLite and PostgreSQL), driven only through the gRPC APIs.

use govbus_e2e::{Stack, StackOptions, StoredEvent, eventually};
use govbus_harness::TestBackend;
use govbus_proto::identity::v1 as identity;
use govbus_proto::welfare::v1 as pb;
use prost::Message;
use tonic::Code;

govbus_harness::on_both_backends!(
    households_need_living_registered_members,
    applications_follow_the_desil_thresholds,
    a_reassessment_into_desil_five_suspends_pkh,
    a_death_suspends_benefits_through_the_bus,
    a_relocation_updates_the_address,
    without_identity_applications_are_unavailable,
    fifty_applications_for_one_programme_at_once_grant_one,
    fifty_applications_with_one_key_run_once_and_answer_alike,
);

/// A household of two living citizens, assessed at `desil`.
async fn household(stack: &mut Stack, desil: u32) {
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
    assess(stack, desil).await;
}

async fn assess(stack: &mut Stack, desil: u32) -> pb::AssessHouseholdResponse {
    stack
        .welfare
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
    stack: &mut Stack,
    nik: &str,
    programme: pb::Programme,
) -> Result<pb::ApplyForProgrammeResponse, tonic::Status> {
    stack
        .welfare
        .apply_for_programme(pb::ApplyForProgrammeRequest {
            idempotency_key: String::new(),
            nik: nik.to_owned(),
            programme: programme.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn benefits(stack: &mut Stack, nik: &str) -> Vec<pb::Benefit> {
    stack
        .welfare
        .list_benefits(pb::ListBenefitsRequest {
            nik: nik.to_owned(),
        })
        .await
        .expect("listed")
        .into_inner()
        .benefits
}

async fn welfare_events(stack: &Stack, event_type: &str, count: usize) -> Vec<StoredEvent> {
    stack
        .wait_for_events("GOVBUS_WELFARE", event_type, count)
        .await
}

const KK: &str = "3573020101200001";
const MOTHER: &str = "3573025708900002";
const FATHER: &str = "3573020205880003";

async fn households_need_living_registered_members(backend: TestBackend) {
    let mut stack = Stack::start(backend, StackOptions::default()).await;
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
    let mut stack = Stack::start(backend, StackOptions::default()).await;
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
    let unassessed = apply(&mut stack, MOTHER, pb::Programme::Pkh)
        .await
        .expect_err("no desil yet");
    assert_eq!(unassessed.code(), Code::FailedPrecondition);

    assess(&mut stack, 5).await;
    let pkh = apply(&mut stack, MOTHER, pb::Programme::Pkh)
        .await
        .expect("decided");
    assert_eq!(pkh.status(), pb::BenefitStatus::Refused);
    assert!(
        pkh.reason.contains("PKH requires desil 1–4"),
        "{}",
        pkh.reason
    );
    let bpnt = apply(&mut stack, MOTHER, pb::Programme::Bpnt)
        .await
        .expect("decided");
    assert_eq!(bpnt.status(), pb::BenefitStatus::Active);
    let again = apply(&mut stack, MOTHER, pb::Programme::Bpnt)
        .await
        .expect_err("already receiving");
    assert_eq!(again.code(), Code::AlreadyExists);

    assess(&mut stack, 6).await;
    let pbi = apply(&mut stack, FATHER, pb::Programme::PbiJk)
        .await
        .expect("decided");
    assert_eq!(pbi.status(), pb::BenefitStatus::Refused);

    let unknown = apply(&mut stack, "3573021708900001", pb::Programme::Bpnt)
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::FailedPrecondition);
    assert!(unknown.message().contains("not in the population register"));

    let granted = welfare_events(&stack, "welfare.benefit.granted.v1", 1).await;
    let refused = welfare_events(&stack, "welfare.benefit.refused.v1", 2).await;
    let event = pb::BenefitGranted::decode(granted[0].payload.as_slice()).expect("decodes");
    assert_eq!(event.programme, "BPNT");
    assert_eq!(event.desil, 5);
    assert_eq!(refused.len(), 2);
    stack.stop().await;
}

async fn a_reassessment_into_desil_five_suspends_pkh(backend: TestBackend) {
    let mut stack = Stack::start(backend, StackOptions::default()).await;
    household(&mut stack, 2).await;
    let pkh = apply(&mut stack, MOTHER, pb::Programme::Pkh)
        .await
        .expect("granted");
    assert_eq!(pkh.status(), pb::BenefitStatus::Active);
    let bpnt = apply(&mut stack, MOTHER, pb::Programme::Bpnt)
        .await
        .expect("granted");
    assert_eq!(bpnt.status(), pb::BenefitStatus::Active);

    let assessed = assess(&mut stack, 5).await;
    assert_eq!(
        assessed.suspended_benefit_refs,
        std::slice::from_ref(&pkh.benefit_ref)
    );
    let benefits = benefits(&mut stack, MOTHER).await;
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

    let suspended = welfare_events(&stack, "welfare.benefit.suspended.v1", 1).await;
    let event = pb::BenefitSuspended::decode(suspended[0].payload.as_slice()).expect("decodes");
    assert_eq!(event.benefit_ref, pkh.benefit_ref);
    assert_eq!(event.programme, "PKH");
    stack.stop().await;
}

async fn a_death_suspends_benefits_through_the_bus(backend: TestBackend) {
    let mut stack = Stack::start(backend, StackOptions::default()).await;
    household(&mut stack, 3).await;
    let pkh = apply(&mut stack, MOTHER, pb::Programme::Pkh)
        .await
        .expect("granted");
    let father_pkh = apply(&mut stack, FATHER, pb::Programme::Pkh)
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
        benefits(&mut stack, MOTHER)
            .await
            .iter()
            .any(|b| b.status() == pb::BenefitStatus::Suspended)
    })
    .await;
    let mother = benefits(&mut stack, MOTHER).await;
    assert_eq!(mother[0].benefit_ref, pkh.benefit_ref);
    assert_eq!(mother[0].reason, "recipient deceased");
    let father = benefits(&mut stack, FATHER).await;
    assert_eq!(father[0].benefit_ref, father_pkh.benefit_ref);
    assert_eq!(
        father[0].status(),
        pb::BenefitStatus::Active,
        "only the deceased's benefits stop"
    );

    let suspended = welfare_events(&stack, "welfare.benefit.suspended.v1", 1).await;
    assert_eq!(suspended.len(), 1);
    assert_eq!(
        suspended[0].correlation_id, "death-of-mother",
        "the suspension joins the death's transaction"
    );

    let deceased = apply(&mut stack, MOTHER, pb::Programme::Bpnt)
        .await
        .expect_err("deceased");
    assert_eq!(deceased.code(), Code::FailedPrecondition);
    assert!(deceased.message().contains("deceased"));
    stack.stop().await;
}

async fn a_relocation_updates_the_address(backend: TestBackend) {
    let mut stack = Stack::start(backend, StackOptions::default()).await;
    household(&mut stack, 3).await;
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
    // The relocation is the only event welfare's consumer takes here: once it is delivered and
    // acknowledged, welfare has applied it.
    eventually("welfare consumed the relocation", async || {
        let Ok(stream) = stack.bus.jetstream().get_stream("GOVBUS_IDENTITY").await else {
            return false;
        };
        let Ok(consumer) = stream.consumer_info("welfare-identity").await else {
            return false;
        };
        consumer.delivered.consumer_sequence >= 1
            && consumer.num_ack_pending == 0
            && consumer.num_pending == 0
    })
    .await;
    // A grant carries the member's address as welfare knows it.
    let granted = apply(&mut stack, FATHER, pb::Programme::Bpnt)
        .await
        .expect("decided");
    assert_eq!(granted.status(), pb::BenefitStatus::Active);
    let events = welfare_events(&stack, "welfare.benefit.granted.v1", 1).await;
    let event = pb::BenefitGranted::decode(events[0].payload.as_slice()).expect("decodes");
    assert_eq!(event.kelurahan_code, "35.73.05.1001");
    stack.stop().await;
}

async fn without_identity_applications_are_unavailable(backend: TestBackend) {
    let mut stack = Stack::start(backend, StackOptions::default()).await;
    household(&mut stack, 3).await;
    stack.stop_identity().await;
    let status = apply(&mut stack, MOTHER, pb::Programme::Pkh)
        .await
        .expect_err("identity is down");
    assert_eq!(status.code(), Code::Unavailable);
    assert!(
        benefits(&mut stack, MOTHER).await.is_empty(),
        "nothing was decided"
    );
    stack.stop().await;
}

/// Fifty applications of one person for one programme at once, each with its own key: one is
/// granted, the other 49 find it (`ALREADY_EXISTS`), and one `BenefitGranted` is published.
async fn fifty_applications_for_one_programme_at_once_grant_one(backend: TestBackend) {
    let mut stack = Stack::start(backend, StackOptions::default()).await;
    household(&mut stack, 3).await;
    let answers = applications_at_once(&stack, |n| format!("apply-{n}")).await;
    let granted = answers.iter().filter(|answer| answer.is_ok()).count();
    assert_eq!(granted, 1, "{answers:?}");
    for answer in &answers {
        if let Err(status) = answer {
            assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
            assert!(status.message().contains("already receives"), "{status:?}");
        }
    }
    assert_eq!(
        welfare_events(&stack, "welfare.benefit.granted.v1", 1)
            .await
            .len(),
        1
    );
    let active = benefits(&mut stack, MOTHER)
        .await
        .into_iter()
        .filter(|benefit| benefit.status() == pb::BenefitStatus::Active)
        .count();
    assert_eq!(active, 1);
    stack.stop().await;
}

/// Fifty applications with one key at once: one runs, all fifty get its answer.
async fn fifty_applications_with_one_key_run_once_and_answer_alike(backend: TestBackend) {
    let mut stack = Stack::start(backend, StackOptions::default()).await;
    household(&mut stack, 3).await;
    let answers = applications_at_once(&stack, |_| "one-application".to_owned()).await;
    let first = answers[0].as_ref().expect("answered");
    for answer in &answers {
        assert_eq!(answer.as_ref().expect("answered"), first);
    }
    assert_eq!(benefits(&mut stack, MOTHER).await.len(), 1);
    assert_eq!(
        welfare_events(&stack, "welfare.benefit.granted.v1", 1)
            .await
            .len(),
        1
    );
    stack.stop().await;
}

async fn applications_at_once(
    stack: &Stack,
    key: impl Fn(usize) -> String,
) -> Vec<Result<pb::ApplyForProgrammeResponse, tonic::Status>> {
    let calls: Vec<_> = (0..50)
        .map(|n| {
            let mut welfare = stack.welfare.clone();
            let request = pb::ApplyForProgrammeRequest {
                idempotency_key: key(n),
                nik: MOTHER.to_owned(),
                programme: pb::Programme::Pkh.into(),
            };
            tokio::spawn(async move {
                welfare
                    .apply_for_programme(request)
                    .await
                    .map(tonic::Response::into_inner)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.expect("task"));
    }
    answers
}
