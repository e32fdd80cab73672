//! The licensing service through its gRPC API: pathways per risk level, decisions, deemed
//! approval at the deadline (also across a restart), validation.

use std::time::Duration;

use govbus_e2e::{Stack, StackOptions, eventually};
use govbus_harness::TestBackend;
use govbus_licensing::{Deadlines, Period};
use govbus_proto::identity::v1 as identity;
use govbus_proto::licensing::v1 as pb;
use prost::Message;
use tonic::Code;

govbus_harness::on_both_backends!(
    low_and_medium_low_risk_are_issued_at_once,
    medium_high_risk_waits_for_a_verifier,
    no_decision_before_the_deadline_is_deemed_approved,
    deadlines_survive_a_restart,
    a_deadline_beyond_the_known_years_is_provisional_and_counted_again_at_start,
    invalid_or_unknown_applicants_are_refused,
);

const APPLICANT: &str = "3573025708900002";
const STREAM: &str = "GOVBUS_LICENSING";

fn application(risk: pb::RiskLevel) -> pb::ApplyForLicenceRequest {
    pb::ApplyForLicenceRequest {
        idempotency_key: String::new(),
        applicant_nik: APPLICANT.to_owned(),
        business_name: "Warung Bu Siti".to_owned(),
        kbli_code: "56103".to_owned(),
        kelurahan_code: "35.73.02.1001".to_owned(),
        risk_level: risk.into(),
    }
}

async fn stack_with_applicant(backend: TestBackend, deadlines: Deadlines) -> Stack {
    let mut stack = Stack::start(
        backend,
        StackOptions {
            deadlines,
            calendar: None,
        },
    )
    .await;
    stack
        .register_citizen(APPLICANT, "1990-08-17", identity::Sex::Female)
        .await;
    stack
}

async fn get(stack: &mut Stack, application_ref: &str) -> pb::Application {
    stack
        .licensing
        .get_application(pb::GetApplicationRequest {
            application_ref: application_ref.to_owned(),
        })
        .await
        .expect("application found")
        .into_inner()
}

async fn low_and_medium_low_risk_are_issued_at_once(backend: TestBackend) {
    let mut stack = stack_with_applicant(backend, Deadlines::default()).await;
    let low = stack
        .licensing
        .apply_for_licence(application(pb::RiskLevel::Rendah))
        .await
        .expect("applied")
        .into_inner();
    assert_eq!(low.status(), pb::ApplicationStatus::Issued);
    assert_eq!(low.document, "nib");
    assert_eq!(low.nib.len(), 13);
    assert!(low.nib.bytes().all(|b| b.is_ascii_digit()));
    assert!(low.deadline.is_empty());

    let medium_low = stack
        .licensing
        .apply_for_licence(application(pb::RiskLevel::MenengahRendah))
        .await
        .expect("applied")
        .into_inner();
    assert_eq!(medium_low.status(), pb::ApplicationStatus::Issued);
    assert_eq!(medium_low.document, "sertifikat-standar");
    assert_ne!(medium_low.nib, low.nib);

    let decided = stack
        .wait_for_events(STREAM, "licensing.licence.decided.v1", 2)
        .await;
    let decisions: Vec<pb::LicenceDecided> = decided
        .iter()
        .map(|event| pb::LicenceDecided::decode(event.payload.as_slice()).expect("decodes"))
        .collect();
    assert!(decisions.iter().all(|d| d.approved && d.within_deadline));
    assert_eq!(decisions[1].decided_by, "self-declaration");
    assert_eq!(
        stack
            .wait_for_events(STREAM, "licensing.nib.issued.v1", 2)
            .await
            .len(),
        2
    );
    let submitted = stack
        .wait_for_events(STREAM, "licensing.application.submitted.v1", 2)
        .await;
    let raw = String::from_utf8_lossy(&submitted[0].payload);
    assert!(!raw.contains(APPLICANT), "no NIK in events");
    stack.stop().await;
}

async fn medium_high_risk_waits_for_a_verifier(backend: TestBackend) {
    let mut stack = stack_with_applicant(backend, Deadlines::default()).await;
    let pending = stack
        .licensing
        .apply_for_licence(application(pb::RiskLevel::MenengahTinggi))
        .await
        .expect("applied")
        .into_inner();
    assert_eq!(pending.status(), pb::ApplicationStatus::Pending);
    assert_eq!(pending.document, "sertifikat-standar");
    assert!(!pending.deadline.is_empty());
    assert_eq!(pending.nib.len(), 13, "the NIB comes at once");

    let no_reason = stack
        .licensing
        .decide_application(pb::DecideApplicationRequest {
            idempotency_key: String::new(),
            application_ref: pending.application_ref.clone(),
            approve: false,
            reason: String::new(),
        })
        .await
        .expect_err("a refusal needs a reason");
    assert_eq!(no_reason.code(), Code::InvalidArgument);

    let approved = stack
        .licensing
        .decide_application(pb::DecideApplicationRequest {
            idempotency_key: String::new(),
            application_ref: pending.application_ref.clone(),
            approve: true,
            reason: String::new(),
        })
        .await
        .expect("decided")
        .into_inner();
    assert_eq!(approved.status(), pb::ApplicationStatus::Approved);
    let twice = stack
        .licensing
        .decide_application(pb::DecideApplicationRequest {
            idempotency_key: String::new(),
            application_ref: pending.application_ref.clone(),
            approve: false,
            reason: "changed my mind".to_owned(),
        })
        .await
        .expect_err("already decided");
    assert_eq!(twice.code(), Code::FailedPrecondition);

    let decided = stack
        .wait_for_events(STREAM, "licensing.licence.decided.v1", 1)
        .await;
    let decision = pb::LicenceDecided::decode(decided[0].payload.as_slice()).expect("decodes");
    assert!(decision.approved && decision.within_deadline);
    assert_eq!(decision.decided_by, "verification");
    stack.stop().await;
}

async fn no_decision_before_the_deadline_is_deemed_approved(backend: TestBackend) {
    let deadlines = Deadlines {
        verification: Period::Exactly(Duration::from_secs(3600)),
        approval: Period::Exactly(Duration::from_millis(300)),
    };
    let mut stack = stack_with_applicant(backend, deadlines).await;
    let pending = stack
        .licensing
        .apply_for_licence(application(pb::RiskLevel::Tinggi))
        .await
        .expect("applied")
        .into_inner();
    assert_eq!(pending.status(), pb::ApplicationStatus::Pending);
    assert_eq!(pending.document, "izin");
    let reference = pending.application_ref.clone();
    eventually("the application is deemed approved", async || {
        get(&mut stack, &reference).await.status() == pb::ApplicationStatus::DeemedApproved
    })
    .await;
    let deemed = stack
        .wait_for_events(STREAM, "licensing.licence.deemed-approved.v1", 1)
        .await;
    let event = pb::LicenceDeemedApproved::decode(deemed[0].payload.as_slice()).expect("decodes");
    assert_eq!(event.application_ref, reference);
    assert_eq!(event.stage, "approval");
    assert_eq!(event.deadline, pending.deadline);

    let late = stack
        .licensing
        .decide_application(pb::DecideApplicationRequest {
            idempotency_key: String::new(),
            application_ref: reference,
            approve: false,
            reason: "too late".to_owned(),
        })
        .await
        .expect_err("deemed approved already");
    assert_eq!(late.code(), Code::FailedPrecondition);
    assert_eq!(
        stack
            .events(STREAM, "licensing.licence.deemed-approved.v1")
            .await
            .len(),
        1,
        "deemed approved once"
    );
    stack.stop().await;
}

async fn deadlines_survive_a_restart(backend: TestBackend) {
    let deadlines = Deadlines {
        verification: Period::Exactly(Duration::from_millis(500)),
        approval: Period::Exactly(Duration::from_secs(3600)),
    };
    let mut stack = stack_with_applicant(backend, deadlines).await;
    let pending = stack
        .licensing
        .apply_for_licence(application(pb::RiskLevel::MenengahTinggi))
        .await
        .expect("applied")
        .into_inner();
    stack.stop_licensing().await;
    // The deadline passes while licensing is down.
    tokio::time::sleep(Duration::from_millis(700)).await;
    stack.start_licensing().await;
    let reference = pending.application_ref.clone();
    eventually("the restarted service deems it approved", async || {
        get(&mut stack, &reference).await.status() == pb::ApplicationStatus::DeemedApproved
    })
    .await;
    stack
        .wait_for_events(STREAM, "licensing.licence.deemed-approved.v1", 1)
        .await;
    stack.stop().await;
}

async fn a_deadline_beyond_the_known_years_is_provisional_and_counted_again_at_start(
    backend: TestBackend,
) {
    // A thousand working days (four years) from any day reach a year whose decree of
    // national holidays and cuti bersama is not shipped: there only weekends are known.
    let deadlines = Deadlines {
        verification: Period::WorkingDays(5),
        approval: Period::WorkingDays(1_000),
    };
    let mut stack = stack_with_applicant(backend, deadlines).await;
    let pending = stack
        .licensing
        .apply_for_licence(application(pb::RiskLevel::Tinggi))
        .await
        .expect("applied")
        .into_inner();
    assert_eq!(pending.status(), pb::ApplicationStatus::Pending);
    assert!(pending.deadline_provisional, "{pending:?}");
    // Due at the end of a working day: 24:00 WIB, 17:00 UTC.
    assert!(
        pending.deadline.ends_with("T17:00:00Z"),
        "{}",
        pending.deadline
    );
    // The restart counts it again: with no new decree known, it stays as it was.
    stack.stop_licensing().await;
    stack.start_licensing().await;
    let again = get(&mut stack, &pending.application_ref).await;
    assert!(again.deadline_provisional);
    assert_eq!(again.deadline, pending.deadline);
    // A release that knows the coming years (test data: one national holiday on a Wednesday of
    // each) counts it again: later by those weekdays off, and no longer provisional.
    let mut known = govbus_civil::calendar::WorkingCalendar::shipped()
        .expect("shipped")
        .clone();
    let this_year = time::OffsetDateTime::now_utc().year();
    let mut added = 0;
    for year in 2025..=this_year + 6 {
        if known.knows(year) {
            continue;
        }
        let mut day = time::Date::from_calendar_date(year, time::Month::February, 1).expect("date");
        while day.weekday() != time::Weekday::Wednesday {
            day = day.next_day().expect("date");
        }
        known
            .add_year(
                year,
                &format!("# source: test data\n{day},libur,Hari libur uji\n"),
            )
            .expect("a year");
        added += 1;
    }
    assert!(added > 0);
    stack.set_licensing_calendar(Box::leak(Box::new(known)));
    stack.stop_licensing().await;
    stack.start_licensing().await;
    let counted = get(&mut stack, &pending.application_ref).await;
    assert!(!counted.deadline_provisional, "{counted:?}");
    assert!(
        counted.deadline > pending.deadline,
        "{} then {}",
        pending.deadline,
        counted.deadline
    );
    assert!(
        counted.deadline.ends_with("T17:00:00Z"),
        "{}",
        counted.deadline
    );
    stack.stop().await;
}

async fn invalid_or_unknown_applicants_are_refused(backend: TestBackend) {
    let mut stack = stack_with_applicant(backend, Deadlines::default()).await;
    let mut invalid = application(pb::RiskLevel::Unspecified);
    invalid.kbli_code = "561".to_owned();
    invalid.business_name = " ".to_owned();
    let status = stack
        .licensing
        .apply_for_licence(invalid)
        .await
        .expect_err("invalid");
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = govbus_kit::grpc::violations_of(&status)
        .into_iter()
        .map(|violation| violation.field)
        .collect();
    assert_eq!(fields, ["business_name", "kbli_code", "risk_level"]);

    let mut unknown = application(pb::RiskLevel::Rendah);
    unknown.applicant_nik = "3573021708900001".to_owned();
    let status = stack
        .licensing
        .apply_for_licence(unknown)
        .await
        .expect_err("not registered");
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert!(status.message().contains("not in the population register"));

    let missing = stack
        .licensing
        .get_application(pb::GetApplicationRequest {
            application_ref: "0190a3c2-7c1e-7000-8000-000000000001".to_owned(),
        })
        .await
        .expect_err("no such application");
    assert_eq!(missing.code(), Code::NotFound);
    stack.stop().await;
}
