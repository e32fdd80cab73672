//! The integration that matters: a death recorded once at identity stops welfare payments and
//! flags licences, through the bus, with every event delivered once, on SQLite and PostgreSQL,
//! also when NATS is down while the commands run.

use govbus_e2e::{Stack, StackOptions, eventually};
use govbus_harness::TestBackend;
use govbus_proto::identity::v1 as identity;
use govbus_proto::licensing::v1 as licensing;
use govbus_proto::welfare::v1 as welfare;

govbus_harness::on_both_backends!(
    a_death_suspends_benefits_and_flags_licences,
    the_flow_completes_when_nats_returns,
);

const NIK: &str = "3573025708900002";
const KK: &str = "3573020101200001";

/// Register → household assessed into desil 3 → PKH granted → a licence → returns the benefit
/// and application references.
async fn enrol(stack: &mut Stack) -> (String, String) {
    stack
        .register_citizen(NIK, "1990-08-17", identity::Sex::Female)
        .await;
    stack
        .welfare
        .register_household(welfare::RegisterHouseholdRequest {
            idempotency_key: String::new(),
            kk_number: KK.to_owned(),
            kelurahan_code: "35.73.02.1001".to_owned(),
            member_niks: vec![NIK.to_owned()],
        })
        .await
        .expect("household registered");
    stack
        .welfare
        .assess_household(welfare::AssessHouseholdRequest {
            idempotency_key: String::new(),
            kk_number: KK.to_owned(),
            desil: 3,
        })
        .await
        .expect("assessed");
    let benefit = stack
        .welfare
        .apply_for_programme(welfare::ApplyForProgrammeRequest {
            idempotency_key: String::new(),
            nik: NIK.to_owned(),
            programme: welfare::Programme::Pkh.into(),
        })
        .await
        .expect("applied")
        .into_inner();
    assert_eq!(benefit.status(), welfare::BenefitStatus::Active);
    let licence = stack
        .licensing
        .apply_for_licence(licensing::ApplyForLicenceRequest {
            idempotency_key: String::new(),
            applicant_nik: NIK.to_owned(),
            business_name: "Toko Kelontong".to_owned(),
            kbli_code: "47111".to_owned(),
            kelurahan_code: "35.73.02.1001".to_owned(),
            risk_level: licensing::RiskLevel::Rendah.into(),
        })
        .await
        .expect("licence issued")
        .into_inner();
    (benefit.benefit_ref, licence.application_ref)
}

async fn record_death(stack: &mut Stack) {
    let mut request = tonic::Request::new(identity::RecordDeathRequest {
        idempotency_key: "death-certificate-0042".to_owned(),
        nik: NIK.to_owned(),
        date_of_death: "2024-11-01".to_owned(),
    });
    request.metadata_mut().insert(
        "x-request-id",
        "death-certificate-0042".parse().expect("ascii"),
    );
    stack
        .identity
        .record_death(request)
        .await
        .expect("death recorded");
}

async fn assert_consequences(stack: &mut Stack, benefit_ref: &str, application_ref: &str) {
    eventually("the benefit is suspended", async || {
        let benefits = stack
            .welfare
            .list_benefits(welfare::ListBenefitsRequest {
                nik: NIK.to_owned(),
            })
            .await
            .expect("listed")
            .into_inner()
            .benefits;
        benefits.iter().any(|b| {
            b.benefit_ref == benefit_ref && b.status() == welfare::BenefitStatus::Suspended
        })
    })
    .await;
    eventually("the licence is flagged", async || {
        stack
            .licensing
            .get_application(licensing::GetApplicationRequest {
                application_ref: application_ref.to_owned(),
            })
            .await
            .expect("found")
            .into_inner()
            .flagged_for_review
    })
    .await;
    let suspended = stack
        .wait_for_events("GOVBUS_WELFARE", "welfare.benefit.suspended.v1", 1)
        .await;
    let flagged = stack
        .wait_for_events("GOVBUS_LICENSING", "licensing.licence.flagged.v1", 1)
        .await;
    assert_eq!(suspended.len(), 1, "suspended once");
    assert_eq!(flagged.len(), 1, "flagged once");
    for event in suspended.iter().chain(&flagged) {
        assert_eq!(
            event.correlation_id, "death-certificate-0042",
            "one transaction across services"
        );
    }
    let deaths = stack
        .events("GOVBUS_IDENTITY", "identity.citizen.deceased.v1")
        .await;
    assert_eq!(deaths.len(), 1, "the death was published once");
}

async fn a_death_suspends_benefits_and_flags_licences(backend: TestBackend) {
    let mut stack = Stack::start(backend, StackOptions::default()).await;
    let (benefit_ref, application_ref) = enrol(&mut stack).await;
    record_death(&mut stack).await;
    // A retried death certificate changes nothing.
    record_death(&mut stack).await;
    assert_consequences(&mut stack, &benefit_ref, &application_ref).await;
    stack.stop().await;
}

async fn the_flow_completes_when_nats_returns(backend: TestBackend) {
    let mut stack = Stack::start(backend, StackOptions::default()).await;
    let (benefit_ref, application_ref) = enrol(&mut stack).await;
    tokio::task::block_in_place(|| stack.nats.stop().expect("nats stops"));
    record_death(&mut stack).await;
    tokio::task::block_in_place(|| stack.nats.restart().expect("nats restarts"));
    assert_consequences(&mut stack, &benefit_ref, &application_ref).await;
    stack.stop().await;
}
