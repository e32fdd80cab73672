//! The SPBE evaluation service through its gRPC API: a hand-computed index and its sub-indices,
//! self-assessment and final scores apart, history with targets, ranking with ties, and live
//! evidence from the identity/welfare/licensing flows, rebuilt identically by replay.

use std::collections::BTreeMap;

use govbus_e2e::{Stack, StackOptions, eventually};
use govbus_harness::TestBackend;
use govbus_proto::evaluation::v1 as pb;
use govbus_proto::identity::v1 as identity;
use govbus_proto::licensing::v1 as licensing;
use govbus_proto::welfare::v1 as welfare;
use tonic::Code;

govbus_harness::on_both_backends!(
    an_assessment_gives_the_hand_computed_index,
    history_and_targets_follow_the_final_scores,
    ranking_shares_ranks_on_ties,
    live_evidence_follows_the_flows_and_rebuilds_identically,
    connector_reviews_are_recorded_checked_and_weighed,
);

/// Levels: `base` everywhere, `base + 1` on `raised`.
fn levels(base: u32, raised: &[u32]) -> Vec<pb::IndicatorScore> {
    (1..=47)
        .map(|indicator| pb::IndicatorScore {
            indicator,
            level: if raised.contains(&indicator) {
                base + 1
            } else {
                base
            },
            evidence_notes: format!("bukti indikator {indicator}"),
        })
        .collect()
}

/// 2.60 exactly: level 2, plus one on 11–20 (+0.25), 32–41 (+0.275) and 21–25 (+0.075).
fn index_2_60() -> Vec<pb::IndicatorScore> {
    let raised: Vec<u32> = (11..=20).chain(32..=41).chain(21..=25).collect();
    levels(2, &raised)
}

/// 4.24 exactly: level 4, plus one on 1–10 (+0.13), 11–12 (+0.05) and 42–43 (+0.06).
fn index_4_24() -> Vec<pb::IndicatorScore> {
    let raised: Vec<u32> = (1..=12).chain(42..=43).collect();
    levels(4, &raised)
}

async fn record(
    stack: &mut Stack,
    code: &str,
    name: &str,
    year: i32,
    kind: pb::ScoreKind,
    scores: Vec<pb::IndicatorScore>,
) -> pb::RecordAssessmentResponse {
    stack
        .evaluation
        .record_assessment(pb::RecordAssessmentRequest {
            idempotency_key: String::new(),
            instance_code: code.to_owned(),
            instance_name: name.to_owned(),
            year,
            kind: kind.into(),
            scores,
        })
        .await
        .expect("recorded")
        .into_inner()
}

async fn an_assessment_gives_the_hand_computed_index(backend: TestBackend) {
    let mut stack = Stack::start(backend, StackOptions::default()).await;
    // Domains 1–3 at level 2 and domain 4 at level 3: 2 × 54.5 % + 3 × 45.5 % = 2.455 → 2.46.
    let scores = (1..=47)
        .map(|indicator| pb::IndicatorScore {
            indicator,
            level: if indicator >= 32 { 3 } else { 2 },
            evidence_notes: String::new(),
        })
        .collect::<Vec<_>>();
    let (first, rest) = scores.split_at(20);
    let partial = record(
        &mut stack,
        "35.73",
        "Pemerintah Kota Malang",
        2024,
        pb::ScoreKind::Evaluator,
        first.to_vec(),
    )
    .await;
    assert_eq!((partial.scored, partial.total), (20, 47));
    assert!(
        partial.index.is_none(),
        "no index until every indicator has a level"
    );
    let complete = record(
        &mut stack,
        "35.73",
        "Pemerintah Kota Malang",
        2024,
        pb::ScoreKind::Evaluator,
        rest.to_vec(),
    )
    .await;
    let index = complete.index.expect("complete");
    assert_eq!(index.value, "2.46");
    assert_eq!(index.predicate, "Cukup");
    let domains: BTreeMap<u32, String> = index
        .domains
        .iter()
        .map(|d| (d.number, d.value.clone()))
        .collect();
    assert_eq!(domains[&1], "2.00");
    assert_eq!(domains[&4], "3.00");
    assert_eq!(index.aspects.len(), 8);
    assert_eq!(complete.instrument_id, "permenpanrb-59-2020");

    // The instance's own assessment is kept apart from the evaluator's.
    record(
        &mut stack,
        "35.73",
        "",
        2024,
        pb::ScoreKind::SelfAssessment,
        index_2_60(),
    )
    .await;
    let assessment = stack
        .evaluation
        .get_assessment(pb::GetAssessmentRequest {
            instance_code: "35.73".to_owned(),
            year: 2024,
        })
        .await
        .expect("found")
        .into_inner();
    let own = assessment.self_assessment_index.expect("complete");
    assert_eq!(
        (own.value.as_str(), own.predicate.as_str()),
        ("2.60", "Baik")
    );
    assert_eq!(assessment.final_index.expect("complete").value, "2.46");
    let first_indicator = &assessment.indicators[0];
    assert_eq!(
        (first_indicator.self_level, first_indicator.final_level),
        (2, 2)
    );
    assert_eq!(first_indicator.weight, "1.30");
    assert_eq!(assessment.indicators[10].self_notes, "bukti indikator 11");

    let invalid = stack
        .evaluation
        .record_assessment(pb::RecordAssessmentRequest {
            idempotency_key: String::new(),
            instance_code: "99.99".to_owned(),
            instance_name: String::new(),
            year: 2024,
            kind: pb::ScoreKind::Unspecified.into(),
            scores: vec![],
        })
        .await
        .expect_err("invalid");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let fields: Vec<String> = govbus_kit::grpc::violations_of(&invalid)
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["instance_code", "kind", "scores"]);
    let out_of_range = stack
        .evaluation
        .record_assessment(pb::RecordAssessmentRequest {
            idempotency_key: String::new(),
            instance_code: "35.73".to_owned(),
            instance_name: String::new(),
            year: 2024,
            kind: pb::ScoreKind::Evaluator.into(),
            scores: vec![
                pb::IndicatorScore {
                    indicator: 1,
                    level: 3,
                    evidence_notes: String::new(),
                },
                pb::IndicatorScore {
                    indicator: 48,
                    level: 3,
                    evidence_notes: String::new(),
                },
                pb::IndicatorScore {
                    indicator: 2,
                    level: 6,
                    evidence_notes: String::new(),
                },
            ],
        })
        .await
        .expect_err("no indicator 48, no level 6");
    assert_eq!(out_of_range.code(), Code::InvalidArgument);
    // Every score outside the instrument is named, with its field.
    let violations: Vec<(String, String)> = govbus_kit::grpc::violations_of(&out_of_range)
        .into_iter()
        .map(|v| (v.field, v.description))
        .collect();
    assert_eq!(
        violations,
        [
            (
                "scores[1].indicator".to_owned(),
                "indicator 48 is not in permenpanrb-59-2020".to_owned()
            ),
            (
                "scores[2].level".to_owned(),
                "indicator 2: level 6 is not 1 to 5".to_owned()
            ),
        ]
    );
    stack.stop().await;
}

async fn history_and_targets_follow_the_final_scores(backend: TestBackend) {
    let mut stack = Stack::start(backend, StackOptions::default()).await;
    record(
        &mut stack,
        "35.73",
        "Pemerintah Kota Malang",
        2022,
        pb::ScoreKind::Evaluator,
        index_2_60(),
    )
    .await;
    record(
        &mut stack,
        "35.73",
        "Pemerintah Kota Malang",
        2024,
        pb::ScoreKind::Evaluator,
        index_4_24(),
    )
    .await;
    stack
        .evaluation
        .set_target(pb::SetTargetRequest {
            idempotency_key: String::new(),
            instance_code: "35.73".to_owned(),
            year: 2024,
            target: "3.02".to_owned(),
            source: "Perwali Kota Malang tentang RPJMD".to_owned(),
        })
        .await
        .expect("target set");
    let history = stack
        .evaluation
        .get_history(pb::GetHistoryRequest {
            instance_code: "35.73".to_owned(),
        })
        .await
        .expect("history")
        .into_inner();
    assert_eq!(history.instance_name, "Pemerintah Kota Malang");
    let years: Vec<(i32, &str, &str, &str)> = history
        .years
        .iter()
        .map(|y| {
            (
                y.year,
                y.index.as_str(),
                y.predicate.as_str(),
                y.change.as_str(),
            )
        })
        .collect();
    assert_eq!(
        years,
        [
            (2022, "2.60", "Baik", ""),
            (2024, "4.24", "Memuaskan", "+1.64")
        ]
    );
    let latest = &history.years[1];
    assert_eq!(latest.target, "3.02");
    assert_eq!(latest.target_ratio, "1.40", "4.24 / 3.02 = 1.404");
    assert!(latest.target_met);
    assert!(history.years[0].target.is_empty());

    let bad_target = stack
        .evaluation
        .set_target(pb::SetTargetRequest {
            idempotency_key: String::new(),
            instance_code: "35.73".to_owned(),
            year: 2024,
            target: "6.5".to_owned(),
            source: String::new(),
        })
        .await
        .expect_err("invalid");
    let fields: Vec<String> = govbus_kit::grpc::violations_of(&bad_target)
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["target", "source"]);
    stack.stop().await;
}

async fn ranking_shares_ranks_on_ties(backend: TestBackend) {
    let mut stack = Stack::start(backend, StackOptions::default()).await;
    record(
        &mut stack,
        "35.73",
        "Pemerintah Kota Malang",
        2024,
        pb::ScoreKind::Evaluator,
        index_4_24(),
    )
    .await;
    record(
        &mut stack,
        "35.78",
        "Pemerintah Kota Surabaya",
        2024,
        pb::ScoreKind::Evaluator,
        index_4_24(),
    )
    .await;
    record(
        &mut stack,
        "35.07",
        "Pemerintah Kabupaten Malang",
        2024,
        pb::ScoreKind::Evaluator,
        index_2_60(),
    )
    .await;
    record(
        &mut stack,
        "32.73",
        "Pemerintah Kota Bandung",
        2024,
        pb::ScoreKind::Evaluator,
        levels(3, &[]),
    )
    .await;
    // Incomplete and self-assessed instances are not ranked.
    record(
        &mut stack,
        "35.79",
        "Pemerintah Kota Batu",
        2024,
        pb::ScoreKind::Evaluator,
        levels(5, &[])[..10].to_vec(),
    )
    .await;
    record(
        &mut stack,
        "35.71",
        "Pemerintah Kota Kediri",
        2024,
        pb::ScoreKind::SelfAssessment,
        levels(5, &[]),
    )
    .await;

    let mut ranking = async |province: &str| {
        stack
            .evaluation
            .get_ranking(pb::GetRankingRequest {
                year: 2024,
                province_code: province.to_owned(),
            })
            .await
            .expect("ranked")
            .into_inner()
            .instances
            .into_iter()
            .map(|i| (i.rank, i.instance_code, i.index))
            .collect::<Vec<_>>()
    };
    let owned = |rows: &[(u32, &str, &str)]| {
        rows.iter()
            .map(|(r, c, i)| (*r, (*c).to_owned(), (*i).to_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ranking("").await,
        owned(&[
            (1, "35.73", "4.24"),
            (1, "35.78", "4.24"),
            (3, "32.73", "3.00"),
            (4, "35.07", "2.60")
        ])
    );
    assert_eq!(
        ranking("35").await,
        owned(&[
            (1, "35.73", "4.24"),
            (1, "35.78", "4.24"),
            (3, "35.07", "2.60")
        ])
    );
    stack.stop().await;
}

const NIK: &str = "3573025708900002";

async fn run_flows(stack: &mut Stack) {
    stack
        .register_citizen(NIK, "1990-08-17", identity::Sex::Female)
        .await;
    stack
        .welfare
        .register_household(welfare::RegisterHouseholdRequest {
            idempotency_key: String::new(),
            kk_number: "3573020101200001".to_owned(),
            kelurahan_code: "35.73.02.1001".to_owned(),
            member_niks: vec![NIK.to_owned()],
        })
        .await
        .expect("household");
    stack
        .welfare
        .assess_household(welfare::AssessHouseholdRequest {
            idempotency_key: String::new(),
            kk_number: "3573020101200001".to_owned(),
            desil: 2,
        })
        .await
        .expect("assessed");
    stack
        .welfare
        .apply_for_programme(welfare::ApplyForProgrammeRequest {
            idempotency_key: String::new(),
            nik: NIK.to_owned(),
            programme: welfare::Programme::Pkh.into(),
        })
        .await
        .expect("granted");
    for risk in [
        licensing::RiskLevel::Rendah,
        licensing::RiskLevel::MenengahRendah,
    ] {
        stack
            .licensing
            .apply_for_licence(licensing::ApplyForLicenceRequest {
                idempotency_key: String::new(),
                applicant_nik: NIK.to_owned(),
                business_name: "Warung".to_owned(),
                kbli_code: "56103".to_owned(),
                kelurahan_code: "35.73.02.1001".to_owned(),
                risk_level: risk.into(),
            })
            .await
            .expect("issued");
    }
    stack
        .identity
        .record_death(identity::RecordDeathRequest {
            idempotency_key: String::new(),
            nik: NIK.to_owned(),
            date_of_death: "2024-11-01".to_owned(),
        })
        .await
        .expect("death");
}

async fn evidence(stack: &mut Stack) -> pb::IntegrationEvidence {
    stack
        .evaluation
        .get_integration_evidence(pb::GetIntegrationEvidenceRequest {})
        .await
        .expect("evidence")
        .into_inner()
}

fn flows(evidence: &pb::IntegrationEvidence) -> Vec<(String, String, u64)> {
    evidence
        .flows
        .iter()
        .map(|f| (f.from_service.clone(), f.to_service.clone(), f.reactions))
        .collect()
}

/// The whole evidence, timestamps included: a rebuild takes them from the events themselves.
fn comparable(evidence: &pb::IntegrationEvidence) -> String {
    format!("{:?}", evidence)
}

async fn live_evidence_follows_the_flows_and_rebuilds_identically(backend: TestBackend) {
    let mut stack = Stack::start(backend, StackOptions::default()).await;
    run_flows(&mut stack).await;
    // Identity: registered + deceased; welfare: household, assessed, granted, suspended;
    // licensing: 2 × (submitted, nib, decided) + 2 flagged.
    // Welfare verified the member once when registering the household and once for PKH;
    // licensing verified the applicant for each of two licences.
    let calls_of = |evidence: &pb::IntegrationEvidence, caller: &str| -> u64 {
        evidence
            .calls
            .iter()
            .filter(|c| c.caller == caller)
            .map(|c| c.calls)
            .sum()
    };
    eventually("the evidence has every event and call", async || {
        let evidence = evidence(&mut stack).await;
        let total: u64 = evidence
            .services
            .iter()
            .flat_map(|s| &s.publishes)
            .filter(|c| !c.event_type.ends_with(".calls.counted.v1"))
            .map(|c| c.count)
            .sum();
        total == 2 + 4 + 8
            && calls_of(&evidence, "welfare") == 2
            && calls_of(&evidence, "licensing") == 2
    })
    .await;
    let live = evidence(&mut stack).await;
    let services: Vec<&str> = live.services.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(services, ["identity", "licensing", "welfare"]);
    let identity_contract = &live.services[0].publishes;
    assert!(
        identity_contract
            .iter()
            .any(|c| c.event_type == "identity.citizen.deceased.v1"
                && c.schema == "govbus.identity.v1.CitizenDeceased"
                && c.count == 1)
    );
    assert_eq!(
        flows(&live),
        [
            ("identity".to_owned(), "licensing".to_owned(), 2),
            ("identity".to_owned(), "welfare".to_owned(), 1)
        ]
    );
    assert_eq!(live.services[2].consumes_from, ["identity"]);
    assert_eq!(live.services[2].calls, ["identity"]);
    assert!(
        live.calls
            .iter()
            .all(|c| c.callee == "identity" && c.method == "VerifyCitizen")
    );
    let licensing = live.licensing.expect("licensing counts");
    assert_eq!(
        (
            licensing.decisions,
            licensing.within_deadline,
            licensing.deemed_approved
        ),
        (2, 2, 0)
    );
    let suggestion = |indicator: u32| {
        live.suggestions
            .iter()
            .find(|s| s.indicator == indicator)
            .and_then(|s| s.suggestion.clone())
            .expect("suggested")
    };
    // Three of Kota Malang's agencies run services on the bus: some, not all.
    let connector = suggestion(18);
    assert_eq!(
        (connector.level, connector.level_name.as_str()),
        (2, "Terkelola"),
        "{:?}",
        connector.facts
    );
    assert_eq!(
        connector.facts[0],
        "3 of the instance's 29 agencies use the bus: dinsos-p3ap2kb (welfare); \
         disnaker-pmptsp (licensing); dispendukcapil (identity)"
    );
    assert!(
        connector
            .facts
            .iter()
            .any(|f| f == "welfare reacted 1 time(s) to events of identity")
    );
    assert!(
        connector
            .facts
            .iter()
            .any(|f| f == "welfare called identity.VerifyCitizen 2 time(s)"),
        "{:?}",
        connector.facts
    );
    assert_eq!(
        suggestion(45).level,
        4,
        "identity's events are consumed: Kolaborasi"
    );
    assert_eq!(suggestion(46).level, 4);
    assert_eq!(
        (suggestion(47).level, suggestion(47).level_name.as_str()),
        (5, "Optimalisasi")
    );

    // The suggestion stands beside the recorded level.
    record(
        &mut stack,
        "35.73",
        "Pemerintah Kota Malang",
        2026,
        pb::ScoreKind::SelfAssessment,
        levels(3, &[]),
    )
    .await;
    let assessment = stack
        .evaluation
        .get_assessment(pb::GetAssessmentRequest {
            instance_code: "35.73".to_owned(),
            year: 2026,
        })
        .await
        .expect("found")
        .into_inner();
    let eighteen = &assessment.indicators[17];
    assert_eq!((eighteen.number, eighteen.self_level), (18, 3));
    assert_eq!(eighteen.suggested.as_ref().map(|s| s.level), Some(2));
    assert!(assessment.indicators[0].suggested.is_none());

    // Replaying the streams from the start rebuilds the same projection.
    let rebuilt = stack
        .evaluation
        .rebuild_evidence(pb::RebuildEvidenceRequest {})
        .await
        .expect("rebuilt")
        .into_inner();
    let identity_events: u64 = live.services[0].publishes.iter().map(|c| c.count).sum();
    assert_eq!(
        rebuilt.replayed.get("GOVBUS_IDENTITY"),
        Some(&identity_events)
    );
    assert_eq!(rebuilt.replayed.get("GOVBUS_LICENSING"), Some(&8));
    let after = evidence(&mut stack).await;
    assert_eq!(comparable(&after), comparable(&live));

    // Events after the rebuild are still counted, once.
    stack
        .register_citizen("3573021708900001", "1990-08-17", identity::Sex::Male)
        .await;
    eventually("the new registration is counted", async || {
        let evidence = evidence(&mut stack).await;
        evidence.services[0]
            .publishes
            .iter()
            .any(|c| c.event_type == "identity.citizen.registered.v1" && c.count == 2)
    })
    .await;
    stack.stop().await;
}

type EvaluationClient =
    pb::evaluation_service_client::EvaluationServiceClient<tonic::transport::Channel>;

/// Records a review (`review_id` empty) or a follow-up with fixed findings.
async fn record_review(
    evaluation: &mut EvaluationClient,
    key: &str,
    held_on: &str,
    review_id: &str,
) -> Result<pb::ConnectorReview, tonic::Status> {
    let kind = if review_id.is_empty() {
        pb::ConnectorReviewKind::Review
    } else {
        pb::ConnectorReviewKind::FollowUp
    };
    evaluation
        .record_connector_review(pb::RecordConnectorReviewRequest {
            idempotency_key: key.to_owned(),
            kind: kind.into(),
            held_on: held_on.to_owned(),
            findings: "Two agencies still exchange files by e-mail.".to_owned(),
            review_id: review_id.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn fields_of(status: &tonic::Status) -> Vec<String> {
    govbus_kit::grpc::violations_of(status)
        .into_iter()
        .map(|v| v.field)
        .collect()
}

async fn connector_reviews_are_recorded_checked_and_weighed(backend: TestBackend) {
    let mut stack = Stack::start(backend, StackOptions::default()).await;
    // Days before today, so that the review falls in the twelve months the evidence weighs.
    let day = |days_ago: i64| {
        let day = time::OffsetDateTime::now_utc().date() - time::Duration::days(days_ago);
        format!(
            "{:04}-{:02}-{:02}",
            day.year(),
            u8::from(day.month()),
            day.day()
        )
    };
    // Eight at once under one key: one record, the same answer to each.
    let mut attempts = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let mut evaluation = stack.evaluation.clone();
        let held_on = day(60);
        attempts
            .spawn(async move { record_review(&mut evaluation, "review-1", &held_on, "").await });
    }
    let answers: Vec<pb::ConnectorReview> = attempts
        .join_all()
        .await
        .into_iter()
        .map(|answer| answer.expect("recorded"))
        .collect();
    let review = answers[0].clone();
    assert!(
        answers.iter().all(|answer| *answer == review),
        "{answers:?}"
    );
    assert_eq!(review.held_on, day(60));
    assert!(
        review.recorded_by.ends_with("(unverified: no TLS)"),
        "{review:?}"
    );

    // Follow-ups that cannot stand, each with its field.
    let evaluation = &mut stack.evaluation;
    let status = record_review(evaluation, "", &day(61), &review.id)
        .await
        .expect_err("before its review");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(fields_of(&status), ["held_on"]);
    let status = record_review(evaluation, "", &day(30), "no-such-review")
        .await
        .expect_err("no such review");
    assert_eq!(fields_of(&status), ["review_id"]);
    let status = evaluation
        .record_connector_review(pb::RecordConnectorReviewRequest {
            idempotency_key: String::new(),
            kind: pb::ConnectorReviewKind::FollowUp.into(),
            held_on: "2999-01-01".to_owned(),
            findings: String::new(),
            review_id: String::new(),
        })
        .await
        .expect_err("empty, in the future, naming nothing");
    assert_eq!(fields_of(&status), ["held_on", "findings", "review_id"]);

    let follow_up = record_review(evaluation, "", &day(20), &review.id)
        .await
        .expect("recorded");
    assert_eq!(follow_up.review_id, review.id);
    let listed = evaluation
        .list_connector_reviews(pb::ListConnectorReviewsRequest {})
        .await
        .expect("listed")
        .into_inner();
    let ids: Vec<&str> = listed.reviews.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, [follow_up.id.as_str(), review.id.as_str()]);

    // Weighed, but not every agency uses the bus and no SPLP link is evidenced: the
    // facts say what holds and what is missing.
    let evidence = evidence(&mut stack).await;
    let connector = evidence
        .suggestions
        .iter()
        .find(|s| s.indicator == 18)
        .and_then(|s| s.suggestion.clone())
        .expect("suggested");
    assert!(connector.level < 4, "{connector:?}");
    for expected in [
        format!(
            "periodic review held on {}, recorded by anonymous (unverified: no TLS)",
            day(60)
        ),
        format!(
            "its findings followed up on {}, recorded by anonymous (unverified: no TLS)",
            day(20)
        ),
    ] {
        assert!(
            connector.facts.contains(&expected),
            "{expected:?} not in {:?}",
            connector.facts
        );
    }
    stack.stop().await;
}
