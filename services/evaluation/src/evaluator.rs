//! Assessments, targets, history and ranking.

use std::collections::BTreeMap;
use std::sync::Arc;

use govbus_bus::{Causality, PublishError, Publisher};
use govbus_proto::evaluation::v1 as pb;
use govbus_storage::command::run_command;
use govbus_storage::{Database, DbError, IdempotencyError, IdempotentRequest};

use crate::connector::{ConnectorContext, Membership};
use crate::evidence::{Evidence, EvidenceSnapshot};
use crate::instrument::{IndexReport, Instrument, Instruments};
use crate::reviews::{self, ConnectorReview, NewReview, ReviewProblem};
use crate::score::{Hundredths, signed};
use crate::store::{self, Kind, Score};
use crate::suggestions::suggest;

/// Why a command or query failed.
#[derive(Debug, thiserror::Error)]
pub enum EvaluationError {
    /// No instrument covers the year.
    #[error("no evaluation instrument covers {0}")]
    NoInstrument(i32),
    /// Scores naming an indicator or a level outside the instrument: every one of them.
    #[error("{}", describe_outside(.0))]
    OutsideInstrument(Vec<OutsideInstrument>),
    /// Nothing recorded for the instance.
    #[error("nothing is recorded for this instance and year")]
    NotFound,
    /// The idempotency key was used for another request.
    #[error(transparent)]
    Idempotency(IdempotencyError),
    /// A follow-up that names no review it can follow.
    #[error(transparent)]
    Review(#[from] ReviewProblem),
    /// The event could not be encoded.
    #[error("cannot encode the event: {0}")]
    Event(#[from] PublishError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<IdempotencyError> for EvaluationError {
    fn from(error: IdempotencyError) -> Self {
        match error {
            IdempotencyError::Db(error) => Self::Db(error),
            other => Self::Idempotency(other),
        }
    }
}

/// The evaluator.
#[derive(Debug, Clone)]
pub struct Evaluator {
    db: Database,
    publisher: Publisher,
    instruments: Arc<Instruments>,
    evidence: Evidence,
    membership: Membership,
}

/// A submitted score that the year's instrument does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutsideInstrument {
    /// The score's position in the request.
    pub position: usize,
    /// What is outside: the indicator, or its level.
    pub part: ScorePart,
    /// Why, for the caller.
    pub problem: String,
}

/// The part of a submitted score that a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScorePart {
    /// The indicator's number.
    Indicator,
    /// The level given to it.
    Level,
}

fn describe_outside(problems: &[OutsideInstrument]) -> String {
    problems
        .iter()
        .map(|problem| problem.problem.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// One indicator's level as submitted.
#[derive(Debug, Clone)]
pub struct SubmittedScore {
    /// Indicator.
    pub indicator: u32,
    /// Level.
    pub level: u32,
    /// Notes.
    pub notes: String,
}

fn to_index(instrument: &Instrument, report: &IndexReport) -> pb::Index {
    pb::Index {
        value: report.overall.to_string(),
        predicate: report.predicate.clone(),
        domains: instrument
            .domains
            .iter()
            .filter_map(|domain| {
                Some(pb::SubIndex {
                    number: domain.number,
                    name: domain.name.clone(),
                    value: report.domains.get(&domain.number)?.to_string(),
                })
            })
            .collect(),
        aspects: instrument
            .aspects
            .iter()
            .filter_map(|aspect| {
                Some(pb::SubIndex {
                    number: aspect.number,
                    name: aspect.name.clone(),
                    value: report.aspects.get(&aspect.number)?.to_string(),
                })
            })
            .collect(),
    }
}

fn levels(scores: &[Score]) -> BTreeMap<u32, u8> {
    scores
        .iter()
        .map(|score| (score.indicator, score.level))
        .collect()
}

impl Evaluator {
    /// An evaluator over `db` with these instruments.
    pub fn new(
        db: Database,
        publisher: Publisher,
        instruments: Arc<Instruments>,
        evidence: Evidence,
        membership: Membership,
    ) -> Self {
        Self {
            db,
            publisher,
            instruments,
            evidence,
            membership,
        }
    }

    /// Records a review of the connector, or a follow-up of one.
    pub async fn record_review(
        &self,
        review: NewReview,
        idempotency: Option<IdempotentRequest>,
    ) -> Result<pb::ConnectorReview, EvaluationError> {
        run_command(&self.db, idempotency, async move |tx| {
            let recorded = reviews::record(tx, review.clone()).await??;
            tracing::info!(
                message = "Connector review recorded.",
                review = %recorded.id,
                kind = ?recorded.review.kind,
                recorded_by = %recorded.review.recorded_by,
            );
            Ok(recorded.to_pb())
        })
        .await
    }

    /// Every review and follow-up, the latest held first.
    pub async fn reviews(&self) -> Result<Vec<ConnectorReview>, EvaluationError> {
        let mut connection = self.connection().await?;
        Ok(reviews::all(&mut connection).await?)
    }

    /// What indicator 18 weighs, as of `as_of`, with `reviews`.
    fn connector<'a>(
        &'a self,
        reviews: &'a [ConnectorReview],
        as_of: time::Date,
    ) -> ConnectorContext<'a> {
        ConnectorContext {
            agencies: &self.membership.agencies,
            members: &self.membership.members,
            reviews,
            as_of,
        }
    }

    /// The instruments.
    pub fn instruments(&self) -> &Instruments {
        &self.instruments
    }

    /// The evidence projection.
    pub fn evidence(&self) -> &Evidence {
        &self.evidence
    }

    fn instrument(&self, year: i32) -> Result<&Instrument, EvaluationError> {
        self.instruments
            .for_year(year)
            .ok_or(EvaluationError::NoInstrument(year))
    }

    /// Records levels for an instance, year and kind.
    #[allow(clippy::too_many_arguments)]
    pub async fn record(
        &self,
        instance_code: String,
        instance_name: String,
        year: i32,
        kind: Kind,
        scores: &[SubmittedScore],
        idempotency: Option<IdempotentRequest>,
        causality: Causality,
    ) -> Result<pb::RecordAssessmentResponse, EvaluationError> {
        let instrument = self.instrument(year)?;
        let mut checked = Vec::with_capacity(scores.len());
        let mut outside = Vec::new();
        for (position, score) in scores.iter().enumerate() {
            if !instrument.indicators.contains_key(&score.indicator) {
                outside.push(OutsideInstrument {
                    position,
                    part: ScorePart::Indicator,
                    problem: format!("indicator {} is not in {}", score.indicator, instrument.id),
                });
                continue;
            }
            let Some(level) = u8::try_from(score.level)
                .ok()
                .filter(|level| (1..=instrument.max_level).contains(level))
            else {
                outside.push(OutsideInstrument {
                    position,
                    part: ScorePart::Level,
                    problem: format!(
                        "indicator {}: level {} is not 1 to {}",
                        score.indicator, score.level, instrument.max_level
                    ),
                });
                continue;
            };
            checked.push(Score {
                indicator: score.indicator,
                level,
                notes: score.notes.clone(),
            });
        }
        if !outside.is_empty() {
            return Err(EvaluationError::OutsideInstrument(outside));
        }
        let (publisher, instruments) = (self.publisher.clone(), Arc::clone(&self.instruments));
        run_command(&self.db, idempotency, async move |tx| {
            let instrument = instruments
                .for_year(year)
                .ok_or(EvaluationError::NoInstrument(year))?;
            store::upsert_instance(tx, &instance_code, &instance_name).await?;
            for score in &checked {
                store::upsert_score(tx, &instance_code, year, kind, &instrument.id, score).await?;
            }
            let all = store::scores(tx, &instance_code, year, kind).await?;
            let report = instrument.index(&levels(&all));
            let total = u32::try_from(instrument.indicators.len()).unwrap_or(u32::MAX);
            let scored = u32::try_from(all.len()).unwrap_or(u32::MAX);
            let event = pb::AssessmentRecorded {
                assessment_ref: format!("{instance_code}/{year}"),
                instance_code: instance_code.clone(),
                year,
                kind: kind.as_str().to_owned(),
                scored,
                total,
                index: report
                    .as_ref()
                    .map(|r| r.overall.to_string())
                    .unwrap_or_default(),
                predicate: report
                    .as_ref()
                    .map(|r| r.predicate.clone())
                    .unwrap_or_default(),
            };
            tx.enqueue(publisher.encode(&event, &causality)?);
            Ok(pb::RecordAssessmentResponse {
                instrument_id: instrument.id.clone(),
                scored,
                total,
                index: report.map(|report| to_index(instrument, &report)),
            })
        })
        .await
    }

    /// Both kinds of scores, the indices, and the evidence's suggestions.
    pub async fn assessment(
        &self,
        instance_code: &str,
        year: i32,
    ) -> Result<pb::Assessment, EvaluationError> {
        let instrument = self.instrument(year)?;
        let mut connection = self.connection().await?;
        let name = store::instance_name(&mut connection, instance_code)
            .await?
            .ok_or(EvaluationError::NotFound)?;
        let own = store::scores(&mut connection, instance_code, year, Kind::SelfAssessment).await?;
        let evaluator =
            store::scores(&mut connection, instance_code, year, Kind::Evaluator).await?;
        drop(connection);
        if own.is_empty() && evaluator.is_empty() {
            return Err(EvaluationError::NotFound);
        }
        let evidence = self.evidence.snapshot().await?;
        let reviews = self.reviews().await?;
        let connector = self.connector(&reviews, assessed_day(year));
        let find =
            |scores: &[Score], number: u32| scores.iter().find(|s| s.indicator == number).cloned();
        let indicators = instrument
            .indicators
            .values()
            .map(|indicator| {
                let own = find(&own, indicator.number);
                let evaluator = find(&evaluator, indicator.number);
                pb::IndicatorResult {
                    number: indicator.number,
                    name: indicator.name.clone(),
                    domain: indicator.domain,
                    aspect: indicator.aspect,
                    weight: Hundredths(indicator.weight).to_string(),
                    self_level: own.as_ref().map_or(0, |s| u32::from(s.level)),
                    final_level: evaluator.as_ref().map_or(0, |s| u32::from(s.level)),
                    self_notes: own.map(|s| s.notes).unwrap_or_default(),
                    evaluator_notes: evaluator.map(|s| s.notes).unwrap_or_default(),
                    suggested: suggestion(instrument, indicator.number, &evidence, &connector),
                }
            })
            .collect();
        Ok(pb::Assessment {
            instance_code: instance_code.to_owned(),
            instance_name: name,
            year,
            instrument_id: instrument.id.clone(),
            indicators,
            self_assessment_index: instrument
                .index(&levels(&own))
                .map(|r| to_index(instrument, &r)),
            final_index: instrument
                .index(&levels(&evaluator))
                .map(|r| to_index(instrument, &r)),
        })
    }

    /// Records a target.
    pub async fn set_target(
        &self,
        instance_code: String,
        year: i32,
        target: Hundredths,
        source: String,
        idempotency: Option<IdempotentRequest>,
    ) -> Result<pb::SetTargetResponse, EvaluationError> {
        run_command(&self.db, idempotency, async move |tx| {
            if store::instance_name(tx, &instance_code).await?.is_none() {
                return Err(EvaluationError::NotFound);
            }
            store::upsert_target(tx, &instance_code, year, target.0, &source).await?;
            Ok(pb::SetTargetResponse {})
        })
        .await
    }

    /// The final index per year, with changes and targets.
    pub async fn history(&self, instance_code: &str) -> Result<pb::History, EvaluationError> {
        let mut connection = self.connection().await?;
        let name = store::instance_name(&mut connection, instance_code)
            .await?
            .ok_or(EvaluationError::NotFound)?;
        let targets = store::targets(&mut connection, instance_code).await?;
        let mut years = Vec::new();
        let mut previous: Option<Hundredths> = None;
        for year in store::evaluated_years(&mut connection, instance_code).await? {
            let Ok(instrument) = self.instrument(year) else {
                continue;
            };
            let scores =
                store::scores(&mut connection, instance_code, year, Kind::Evaluator).await?;
            let Some(report) = instrument.index(&levels(&scores)) else {
                continue;
            };
            let target = targets
                .iter()
                .find(|(target_year, _, _)| *target_year == year);
            years.push(pb::YearResult {
                year,
                index: report.overall.to_string(),
                predicate: report.predicate.clone(),
                change: previous
                    .map(|before| signed(report.overall.minus(before)))
                    .unwrap_or_default(),
                target: target
                    .map(|(_, t, _)| Hundredths(*t).to_string())
                    .unwrap_or_default(),
                target_source: target
                    .map(|(_, _, source)| source.clone())
                    .unwrap_or_default(),
                target_ratio: target
                    .and_then(|(_, t, _)| Hundredths::ratio(report.overall.0, *t))
                    .map(|ratio| ratio.to_string())
                    .unwrap_or_default(),
                target_met: target.is_some_and(|(_, t, _)| report.overall.0 >= *t),
            });
            previous = Some(report.overall);
        }
        Ok(pb::History {
            instance_code: instance_code.to_owned(),
            instance_name: name,
            years,
        })
    }

    /// Ranks the instances with a complete final assessment for `year`.
    pub async fn ranking(
        &self,
        year: i32,
        province_code: Option<&str>,
    ) -> Result<pb::Ranking, EvaluationError> {
        let instrument = self.instrument(year)?;
        let mut connection = self.connection().await?;
        let mut indexed: Vec<(String, String, IndexReport)> =
            store::evaluator_scores_of_year(&mut connection, year, province_code)
                .await?
                .into_iter()
                .filter_map(|(code, name, scores)| {
                    Some((code, name, instrument.index(&levels(&scores))?))
                })
                .collect();
        indexed.sort_by(|a, b| b.2.overall.cmp(&a.2.overall).then_with(|| a.0.cmp(&b.0)));
        let mut instances = Vec::with_capacity(indexed.len());
        let mut rank = 0;
        let mut previous = None;
        for (position, (code, name, report)) in indexed.into_iter().enumerate() {
            if previous != Some(report.overall) {
                rank = u32::try_from(position + 1).unwrap_or(u32::MAX);
                previous = Some(report.overall);
            }
            instances.push(pb::RankedInstance {
                rank,
                instance_code: code,
                instance_name: name,
                index: report.overall.to_string(),
                predicate: report.predicate,
            });
        }
        Ok(pb::Ranking {
            year,
            province_code: province_code.unwrap_or_default().to_owned(),
            instances,
        })
    }

    /// The integration evidence with suggestions under the current instrument.
    pub async fn integration_evidence(
        &self,
        year: i32,
    ) -> Result<pb::IntegrationEvidence, EvaluationError> {
        let instrument = self.instrument(year)?;
        let evidence = self.evidence.snapshot().await?;
        let reviews = self.reviews().await?;
        let connector = self.connector(&reviews, assessed_day(year));
        let mut services: BTreeMap<String, pb::IntegratedService> = BTreeMap::new();
        for count in &evidence.events {
            let service =
                services
                    .entry(count.service.clone())
                    .or_insert_with(|| pb::IntegratedService {
                        service: count.service.clone(),
                        ..Default::default()
                    });
            service.publishes.push(pb::EventContract {
                event_type: count.event_type.clone(),
                schema: count.schema.clone(),
                count: count.events,
                first_seen: govbus_storage::time::rfc3339(count.first_seen),
                last_seen: govbus_storage::time::rfc3339(count.last_seen),
            });
        }
        for flow in &evidence.flows {
            if let Some(service) = services.get_mut(&flow.to_service) {
                service.consumes_from.push(flow.from_service.clone());
            }
        }
        for call in &evidence.calls {
            let service =
                services
                    .entry(call.caller.clone())
                    .or_insert_with(|| pb::IntegratedService {
                        service: call.caller.clone(),
                        ..Default::default()
                    });
            if !service.calls.contains(&call.callee) {
                service.calls.push(call.callee.clone());
            }
        }
        Ok(pb::IntegrationEvidence {
            instrument_id: instrument.id.clone(),
            services: services.into_values().collect(),
            flows: evidence
                .flows
                .iter()
                .map(|flow| pb::Flow {
                    from_service: flow.from_service.clone(),
                    to_service: flow.to_service.clone(),
                    reactions: flow.reactions,
                })
                .collect(),
            calls: evidence
                .calls
                .iter()
                .map(|call| pb::ServiceCall {
                    caller: call.caller.clone(),
                    callee: call.callee.clone(),
                    method: call.method.clone(),
                    calls: call.calls,
                })
                .collect(),
            licensing: Some(pb::LicensingDeadlines {
                decisions: evidence.licensing.decisions,
                within_deadline: evidence.licensing.within_deadline,
                deemed_approved: evidence.licensing.deemed_approved,
            }),
            suggestions: instrument
                .evidence
                .keys()
                .filter_map(|number| {
                    Some(pb::SuggestedIndicator {
                        indicator: *number,
                        name: instrument.indicators.get(number)?.name.clone(),
                        suggestion: suggestion(instrument, *number, &evidence, &connector),
                    })
                })
                .collect(),
        })
    }

    async fn connection(&self) -> Result<govbus_storage::Sql<'static>, DbError> {
        self.db.read().await
    }
}

/// The day a level for `year` is judged on: its last day, or today while the year runs.
fn assessed_day(year: i32) -> time::Date {
    let today = time::OffsetDateTime::now_utc().date();
    time::Date::from_calendar_date(year, time::Month::December, 31)
        .map_or(today, |last| last.min(today))
}

fn suggestion(
    instrument: &Instrument,
    indicator: u32,
    evidence: &EvidenceSnapshot,
    connector: &ConnectorContext<'_>,
) -> Option<pb::SuggestedLevel> {
    let suggestion = suggest(instrument, indicator, evidence, connector)?;
    let level_name = instrument
        .indicators
        .get(&indicator)
        .and_then(|i| {
            i.level_names
                .get(usize::from(suggestion.level).checked_sub(1)?)
        })
        .cloned()
        .unwrap_or_default();
    Some(pb::SuggestedLevel {
        level: u32::from(suggestion.level),
        level_name,
        facts: suggestion.facts,
    })
}
