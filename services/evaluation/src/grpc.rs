//! The `govbus.evaluation.v1.EvaluationService` gRPC API.

use govbus_civil::Regions;
use govbus_kit::grpc::{FieldProblems, causality, database_status, idempotent, internal_status};
use govbus_proto::evaluation::v1 as pb;
use govbus_proto::evaluation::v1::evaluation_service_server::EvaluationService;
use time::OffsetDateTime;
use tonic::{Request, Response, Status};

use crate::evaluator::{EvaluationError, Evaluator, ScorePart, SubmittedScore};
use crate::evidence::RebuildError;
use crate::reviews::{ConnectorReview, MAX_FINDINGS_CHARS, NewReview, ReviewKind, parse_day};
use crate::score::Hundredths;
use crate::store::Kind;

/// Most scores one request may carry.
const MAX_SCORES: usize = 200;

/// The gRPC face of the [`Evaluator`].
#[derive(Debug, Clone)]
pub struct EvaluationApi {
    evaluator: Evaluator,
    bus: govbus_bus::Bus,
    streams: Vec<String>,
}

impl EvaluationApi {
    /// Serves `evaluator`; rebuilds replay `streams` read through `bus`.
    pub fn new(evaluator: Evaluator, bus: govbus_bus::Bus, streams: Vec<String>) -> Self {
        Self {
            evaluator,
            bus,
            streams,
        }
    }
}

/// An instance code: a province (`35`) or a regency or city (`35.73`) that exists.
fn instance_code(text: &str) -> Result<String, &'static str> {
    let code = text.trim();
    let shaped = matches!(code.len(), 2 | 5)
        && code
            .char_indices()
            .all(|(i, c)| if i == 2 { c == '.' } else { c.is_ascii_digit() });
    if !shaped {
        return Err("must be a province (35) or regency/city (35.73) code");
    }
    if !Regions::shipped().contains(code) {
        return Err("names no province, regency or city");
    }
    Ok(code.to_owned())
}

fn year(value: i32) -> Result<i32, &'static str> {
    (2018..=2100)
        .contains(&value)
        .then_some(value)
        .ok_or("must be a year from 2018")
}

/// Who records a review: over mutual TLS, the caller the access layer established (an
/// application only through the gateway, named with it); without TLS (development only), the
/// name the caller claims in `x-govbus-caller`, marked as unverified.
fn recorder<T>(request: &Request<T>) -> (String, Option<String>) {
    if let Some(caller) = govbus_kit::call_facts::Caller::of(request) {
        return (
            caller.name.to_string(),
            caller.via.as_ref().map(ToString::to_string),
        );
    }
    if let Some(certified) = govbus_kit::peer::caller_of_request(request) {
        return (certified.to_string(), None);
    }
    let claimed = request
        .metadata()
        .get("x-govbus-caller")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|name| !name.is_empty() && name.len() <= 64)
        .unwrap_or("anonymous");
    (format!("{claimed} (unverified: no TLS)"), None)
}

fn current_year() -> i32 {
    OffsetDateTime::now_utc().year()
}

#[tonic::async_trait]
impl EvaluationService for EvaluationApi {
    async fn list_instruments(
        &self,
        _request: Request<pb::ListInstrumentsRequest>,
    ) -> Result<Response<pb::ListInstrumentsResponse>, Status> {
        Ok(Response::new(pb::ListInstrumentsResponse {
            instruments: self
                .evaluator
                .instruments()
                .all()
                .map(|instrument| pb::InstrumentSummary {
                    id: instrument.id.clone(),
                    name: instrument.name.clone(),
                    first_year: instrument.first_year,
                    last_year: instrument.last_year.unwrap_or(0),
                    indicators: u32::try_from(instrument.indicators.len()).unwrap_or(u32::MAX),
                })
                .collect(),
        }))
    }

    async fn record_assessment(
        &self,
        request: Request<pb::RecordAssessmentRequest>,
    ) -> Result<Response<pb::RecordAssessmentResponse>, Status> {
        let causality = causality(&request);
        let request = request.into_inner();
        let mut problems = FieldProblems::default();
        problems.check_idempotency_key(&request.idempotency_key);
        let code = problems.check("instance_code", instance_code(&request.instance_code));
        let year = problems.check("year", year(request.year));
        let kind = problems.check(
            "kind",
            match request.kind() {
                pb::ScoreKind::SelfAssessment => Ok(Kind::SelfAssessment),
                pb::ScoreKind::Evaluator => Ok(Kind::Evaluator),
                pb::ScoreKind::Unspecified => Err("is required: self-assessment or evaluator"),
            },
        );
        if request.scores.is_empty() || request.scores.len() > MAX_SCORES {
            problems.push("scores", format!("must hold 1 to {MAX_SCORES} scores"));
        }
        for (position, score) in request.scores.iter().enumerate() {
            if score.evidence_notes.chars().count() > 2000 {
                problems.push(
                    &format!("scores[{position}].evidence_notes"),
                    "must be at most 2000 characters",
                );
            }
        }
        let name = request.instance_name.trim();
        if name.chars().count() > 200 {
            problems.push("instance_name", "must be at most 200 characters");
        }
        let (Some(code), Some(year), Some(kind), true) = (code, year, kind, problems.is_empty())
        else {
            return Err(problems.into_status());
        };
        let name = if name.is_empty() {
            format!(
                "Pemerintah {}",
                Regions::shipped().name(&code).unwrap_or(&code)
            )
        } else {
            name.to_owned()
        };
        let scores: Vec<SubmittedScore> = request
            .scores
            .iter()
            .map(|score| SubmittedScore {
                indicator: score.indicator,
                level: score.level,
                notes: score.evidence_notes.trim().to_owned(),
            })
            .collect();
        let idempotency = idempotent(
            "evaluation.RecordAssessment",
            &request.idempotency_key,
            &request,
        );
        self.evaluator
            .record(
                code.to_owned(),
                name.to_owned(),
                year,
                kind,
                &scores,
                idempotency,
                causality,
            )
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn get_assessment(
        &self,
        request: Request<pb::GetAssessmentRequest>,
    ) -> Result<Response<pb::Assessment>, Status> {
        let request = request.into_inner();
        let mut problems = FieldProblems::default();
        let code = problems.check("instance_code", instance_code(&request.instance_code));
        let year = problems.check("year", year(request.year));
        let (Some(code), Some(year)) = (code, year) else {
            return Err(problems.into_status());
        };
        self.evaluator
            .assessment(&code, year)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn set_target(
        &self,
        request: Request<pb::SetTargetRequest>,
    ) -> Result<Response<pb::SetTargetResponse>, Status> {
        let request = request.into_inner();
        let mut problems = FieldProblems::default();
        problems.check_idempotency_key(&request.idempotency_key);
        let code = problems.check("instance_code", instance_code(&request.instance_code));
        let year = problems.check("year", year(request.year));
        let target = problems.check(
            "target",
            request
                .target
                .parse::<Hundredths>()
                .map_err(|error| error.to_string())
                .and_then(|target| {
                    (100..=500)
                        .contains(&target.0)
                        .then_some(target)
                        .ok_or_else(|| "must be an index from 1.00 to 5.00".to_owned())
                }),
        );
        let source = request.source.trim();
        if source.is_empty() || source.chars().count() > 300 {
            problems.push(
                "source",
                "must name the regulation that sets the target (at most 300 characters)",
            );
        }
        let (Some(code), Some(year), Some(target), true) =
            (code, year, target, problems.is_empty())
        else {
            return Err(problems.into_status());
        };
        let idempotency = idempotent("evaluation.SetTarget", &request.idempotency_key, &request);
        self.evaluator
            .set_target(
                code.to_owned(),
                year,
                target,
                source.to_owned(),
                idempotency,
            )
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::History>, Status> {
        let request = request.into_inner();
        let mut problems = FieldProblems::default();
        let Some(code) = problems.check("instance_code", instance_code(&request.instance_code))
        else {
            return Err(problems.into_status());
        };
        self.evaluator
            .history(&code)
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn get_ranking(
        &self,
        request: Request<pb::GetRankingRequest>,
    ) -> Result<Response<pb::Ranking>, Status> {
        let request = request.into_inner();
        let mut problems = FieldProblems::default();
        let year = problems.check("year", year(request.year));
        let province = request.province_code.trim();
        if !province.is_empty() && (province.len() != 2 || !Regions::shipped().contains(province)) {
            problems.push(
                "province_code",
                "must be a two-digit province code, or empty for the national ranking",
            );
        }
        let (Some(year), true) = (year, problems.is_empty()) else {
            return Err(problems.into_status());
        };
        self.evaluator
            .ranking(year, (!province.is_empty()).then_some(province))
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn get_integration_evidence(
        &self,
        _request: Request<pb::GetIntegrationEvidenceRequest>,
    ) -> Result<Response<pb::IntegrationEvidence>, Status> {
        self.evaluator
            .integration_evidence(current_year())
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn rebuild_evidence(
        &self,
        _request: Request<pb::RebuildEvidenceRequest>,
    ) -> Result<Response<pb::RebuildEvidenceResponse>, Status> {
        match self
            .evaluator
            .evidence()
            .rebuild(&self.bus, &self.streams)
            .await
        {
            Ok(replayed) => Ok(Response::new(pb::RebuildEvidenceResponse {
                replayed: replayed.into_iter().collect(),
            })),
            Err(RebuildError::Db(db)) => Err(status(EvaluationError::Db(db))),
            Err(error @ RebuildError::Bus(_)) => {
                tracing::warn!(message = "Evidence rebuild failed.", %error);
                Err(Status::unavailable(error.to_string()))
            }
        }
    }

    async fn record_connector_review(
        &self,
        request: Request<pb::RecordConnectorReviewRequest>,
    ) -> Result<Response<pb::ConnectorReview>, Status> {
        let (recorded_by, recorded_via) = recorder(&request);
        let request = request.into_inner();
        let mut problems = FieldProblems::default();
        problems.check_idempotency_key(&request.idempotency_key);
        let kind = problems.check(
            "kind",
            ReviewKind::of_request(request.kind())
                .ok_or("must be CONNECTOR_REVIEW_KIND_REVIEW or CONNECTOR_REVIEW_KIND_FOLLOW_UP"),
        );
        let today = OffsetDateTime::now_utc().date();
        let held_on = problems.check(
            "held_on",
            parse_day(request.held_on.trim()).and_then(|day| {
                if day > today {
                    Err(format!("{day} is after today"))
                } else {
                    Ok(day)
                }
            }),
        );
        let findings = request.findings.trim();
        if findings.is_empty() || findings.chars().count() > MAX_FINDINGS_CHARS {
            problems.push(
                "findings",
                format!("must say what was found or done (1 to {MAX_FINDINGS_CHARS} characters)"),
            );
        }
        let review_id = request.review_id.trim();
        match (kind, review_id.is_empty()) {
            (Some(ReviewKind::FollowUp), true) => {
                problems.push("review_id", "a follow-up must name the review it acts on");
            }
            (Some(ReviewKind::Review), false) => {
                problems.push("review_id", "a review follows up nothing: leave it empty");
            }
            _ => {}
        }
        let (Some(kind), Some(held_on), true) = (kind, held_on, problems.is_empty()) else {
            return Err(problems.into_status());
        };
        let idempotency = idempotent(
            "evaluation.RecordConnectorReview",
            &request.idempotency_key,
            &request,
        );
        self.evaluator
            .record_review(
                NewReview {
                    kind,
                    held_on,
                    findings: findings.to_owned(),
                    review_id: (!review_id.is_empty()).then(|| review_id.to_owned()),
                    recorded_by,
                    recorded_via,
                },
                idempotency,
            )
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn list_connector_reviews(
        &self,
        _request: Request<pb::ListConnectorReviewsRequest>,
    ) -> Result<Response<pb::ListConnectorReviewsResponse>, Status> {
        let reviews = self.evaluator.reviews().await.map_err(status)?;
        Ok(Response::new(pb::ListConnectorReviewsResponse {
            reviews: reviews.iter().map(ConnectorReview::to_pb).collect(),
        }))
    }
}

/// Domain errors as gRPC statuses.
fn status(error: EvaluationError) -> Status {
    match &error {
        EvaluationError::NotFound => Status::not_found(error.to_string()),
        EvaluationError::OutsideInstrument(outside) => {
            let mut problems = FieldProblems::default();
            for problem in outside {
                let part = match problem.part {
                    ScorePart::Indicator => "indicator",
                    ScorePart::Level => "level",
                };
                problems.push(
                    &format!("scores[{}].{part}", problem.position),
                    problem.problem.clone(),
                );
            }
            problems.into_status()
        }
        EvaluationError::Review(problem) => {
            let mut problems = FieldProblems::default();
            problems.push(problem.field, problem.problem.clone());
            problems.into_status()
        }
        EvaluationError::NoInstrument(_) | EvaluationError::Idempotency(_) => {
            Status::failed_precondition(error.to_string())
        }
        EvaluationError::Db(db) => database_status(db),
        EvaluationError::Event(_) => internal_status(&error),
    }
}
