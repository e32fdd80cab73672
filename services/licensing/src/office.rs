//! The licensing office: applications, decisions, deadlines, and the reaction to deaths.

use govbus_bus::{Causality, EventMeta, HandleError, PublishError, Publisher};
use govbus_civil::calendar::WorkingCalendar;
use govbus_civil::{Kelurahan, Nik};
use govbus_identity_client::{IdentityClient, IdentityUnavailable, Verified};
use govbus_proto::identity::v1 as identity;
use govbus_proto::licensing::v1 as pb;
use govbus_storage::command::{handle_once, run_command, stored_response};
use govbus_storage::inbox::handle_error;
use govbus_storage::time::{from_micros, now_micros, rfc3339, to_micros};
use govbus_storage::{Database, DbError, IdempotencyError, IdempotentRequest, Tx};
use std::time::Duration;
use uuid::Uuid;

use crate::domain::{Deadlines, Pathway, RiskLevel, Status};
use crate::store::{self, StoredApplication};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum LicensingError {
    /// The applicant is unknown to identity.
    #[error("the applicant is not in the population register")]
    NotInRegister,
    /// The applicant is deceased.
    #[error("the applicant is deceased")]
    Deceased,
    /// No such application.
    #[error("no application with this reference")]
    NotFound,
    /// The application waits for no decision.
    #[error("the application is not waiting for a decision (it is {0})")]
    NotPending(&'static str),
    /// The deadline passed before the decision.
    #[error(
        "the service-level deadline passed at {0}; the application is deemed approved (fiktif positif)"
    )]
    DeadlinePassed(String),
    /// Identity did not answer.
    #[error(transparent)]
    IdentityUnavailable(#[from] IdentityUnavailable),
    /// The idempotency key was used for another request.
    #[error(transparent)]
    Idempotency(IdempotencyError),
    /// The event could not be encoded.
    #[error("cannot encode the event: {0}")]
    Event(#[from] PublishError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<IdempotencyError> for LicensingError {
    fn from(error: IdempotencyError) -> Self {
        match error {
            IdempotencyError::Db(error) => Self::Db(error),
            other => Self::Idempotency(other),
        }
    }
}

/// An application as submitted.
#[derive(Debug, Clone)]
pub struct NewApplication {
    /// Applicant's NIK (verified, never stored).
    pub applicant: Nik,
    /// Business name.
    pub business_name: String,
    /// KBLI code.
    pub kbli_code: String,
    /// Location.
    pub kelurahan: Kelurahan,
    /// Risk level.
    pub risk_level: RiskLevel,
}

/// The licensing office.
#[derive(Debug, Clone)]
pub struct Office {
    db: Database,
    publisher: Publisher,
    identity: IdentityClient,
    deadlines: Deadlines,
    calendar: &'static WorkingCalendar,
}

impl Office {
    /// An office over `db` with these service-level deadlines, counted in `calendar`'s working
    /// days.
    pub fn new(
        db: Database,
        publisher: Publisher,
        identity: IdentityClient,
        deadlines: Deadlines,
        calendar: &'static WorkingCalendar,
    ) -> Self {
        Self {
            db,
            publisher,
            identity,
            deadlines,
            calendar,
        }
    }

    /// Erases the details of every application rejected more than `keep` ago, in batches
    /// (each its own short transaction); returns how many. Personal data kept no longer than
    /// needed (UU 27/2022 Pasal 16).
    pub async fn erase_rejected_details(&self, keep: Duration) -> Result<u64, LicensingError> {
        let erased =
            govbus_storage::retention::in_batches(&self.db, keep, async |tx, before, limit| {
                store::erase_rejected_details(tx, before, limit).await
            })
            .await?;
        if erased > 0 {
            tracing::info!(
                message = "Details of rejected applications erased after their retention period.",
                erased,
            );
        }
        Ok(erased)
    }

    /// Counts again, with the working days each was set with, the deadlines that reached a
    /// year whose days off were not shipped when they were set; returns how many moved or
    /// stopped being provisional. Run at start: a release with the year's decree sets them
    /// right, and changed settings never reach applications already submitted.
    pub async fn recount_provisional_deadlines(&self) -> Result<usize, LicensingError> {
        let calendar = self.calendar;
        self.db
            .write(async move |tx| {
                let pending = store::provisional_pending(tx).await?;
                let mut changed = 0;
                for (application_ref, due_at, days, submitted_at) in pending {
                    let Ok(days) = u32::try_from(days) else {
                        continue;
                    };
                    let due = calendar.deadline(from_micros(submitted_at), days);
                    let at = to_micros(due.at);
                    if at != due_at || !due.provisional {
                        store::set_due(tx, &application_ref, at, due.provisional).await?;
                        changed += 1;
                    }
                }
                Ok::<_, LicensingError>(changed)
            })
            .await
    }

    /// Receives an application: verifies the applicant, issues the NIB, and either issues the
    /// document at once or opens the stage that waits for a decision.
    pub async fn apply(
        &self,
        application: NewApplication,
        idempotency: Option<IdempotentRequest>,
        causality: Causality,
    ) -> Result<pb::Application, LicensingError> {
        if let Some(stored) =
            stored_response::<_, LicensingError>(&self.db, idempotency.as_ref()).await?
        {
            return Ok(stored);
        }
        let applicant_ref = match self.identity.verify(&application.applicant).await? {
            Verified::Living { citizen_ref } => citizen_ref,
            Verified::Deceased => return Err(LicensingError::Deceased),
            Verified::Unknown => return Err(LicensingError::NotInRegister),
        };
        let publisher = self.publisher.clone();
        let deadlines = self.deadlines.clone();
        let calendar = self.calendar;
        run_command(&self.db, idempotency, async move |tx| {
            // One clock reading: the deadline is counted from the submission time stored.
            let submitted_at = now_micros();
            let application_ref = Uuid::now_v7().to_string();
            let risk = application.risk_level;
            let (document, status, stage, due) = match risk.pathway() {
                Pathway::Immediate { document, .. } => (document, Status::Issued, None, None),
                Pathway::Pending { document, stage } => {
                    let due = deadlines.due(stage, from_micros(submitted_at), calendar);
                    let days = deadlines.of(stage).working_days();
                    (document, Status::Pending, Some(stage), Some((due, days)))
                }
            };
            let mut stored = StoredApplication {
                application_ref: application_ref.clone(),
                applicant_ref: applicant_ref.clone(),
                kbli_code: application.kbli_code.clone(),
                kelurahan_code: application.kelurahan.code().to_owned(),
                risk_level: risk,
                nib: new_nib(),
                document: document.to_owned(),
                status,
                stage,
                due_at: due.map(|(due, _)| to_micros(due.at)),
                due_provisional: due.is_some_and(|(due, _)| due.provisional),
                due_working_days: due.and_then(|(_, days)| days),
                decision_reason: String::new(),
                flagged_for_review: false,
                flag_reason: String::new(),
            };
            // A drawn NIB that is taken (one in nine trillion) is drawn again.
            while !store::insert(tx, &stored, &application.business_name, submitted_at).await? {
                stored.nib = new_nib();
            }
            enqueue(
                tx,
                &publisher,
                &pb::ApplicationSubmitted {
                    application_ref: application_ref.clone(),
                    applicant_ref: applicant_ref.clone(),
                    kbli_code: stored.kbli_code.clone(),
                    kelurahan_code: stored.kelurahan_code.clone(),
                    risk_level: risk.as_str().to_owned(),
                },
                &causality,
            )?;
            enqueue(
                tx,
                &publisher,
                &pb::NibIssued {
                    application_ref: application_ref.clone(),
                    nib: stored.nib.clone(),
                    risk_level: risk.as_str().to_owned(),
                },
                &causality,
            )?;
            if let Pathway::Immediate {
                document,
                decided_by,
            } = risk.pathway()
            {
                enqueue(
                    tx,
                    &publisher,
                    &pb::LicenceDecided {
                        application_ref: application_ref.clone(),
                        document: document.to_owned(),
                        approved: true,
                        decided_by: decided_by.to_owned(),
                        reason: String::new(),
                        within_deadline: true,
                        risk_level: risk.as_str().to_owned(),
                    },
                    &causality,
                )?;
            }
            Ok(to_proto(&stored))
        })
        .await
    }

    /// Records a verifier's or approver's decision, if it comes before the deadline.
    pub async fn decide(
        &self,
        application_ref: String,
        approve: bool,
        reason: String,
        idempotency: Option<IdempotentRequest>,
        causality: Causality,
    ) -> Result<pb::Application, LicensingError> {
        let publisher = self.publisher.clone();
        run_command(&self.db, idempotency, async move |tx| {
            let mut application = store::find_for_update(tx, &application_ref)
                .await?
                .ok_or(LicensingError::NotFound)?;
            if application.status != Status::Pending {
                return Err(LicensingError::NotPending(application.status.as_str()));
            }
            if let Some(due_at) = application.due_at
                && now_micros() >= due_at
            {
                return Err(LicensingError::DeadlinePassed(rfc3339(due_at)));
            }
            let status = if approve {
                Status::Approved
            } else {
                Status::Rejected
            };
            if !store::decide(tx, &application_ref, status, &reason).await? {
                return Err(LicensingError::NotPending("no longer pending"));
            }
            enqueue(
                tx,
                &publisher,
                &pb::LicenceDecided {
                    application_ref: application_ref.clone(),
                    document: application.document.clone(),
                    approved: approve,
                    decided_by: application
                        .stage
                        .map(|stage| stage.as_str())
                        .unwrap_or_default()
                        .to_owned(),
                    reason: reason.clone(),
                    within_deadline: true,
                    risk_level: application.risk_level.as_str().to_owned(),
                },
                &causality,
            )?;
            application.status = status;
            application.decision_reason = reason.clone();
            application.due_at = None;
            Ok(to_proto(&application))
        })
        .await
    }

    /// An application's state.
    pub async fn application(
        &self,
        application_ref: &str,
    ) -> Result<pb::Application, LicensingError> {
        let mut sql = self.db.read().await?;
        store::find(&mut sql, application_ref)
            .await?
            .map(|application| to_proto(&application))
            .ok_or(LicensingError::NotFound)
    }

    /// Deems approved every pending application whose deadline passed; returns how many.
    pub async fn deem_overdue_approved(&self) -> Result<usize, LicensingError> {
        let mut deemed = 0;
        loop {
            // Look first beside the writer: most rounds find nothing.
            let overdue = {
                let mut sql = self.db.read().await?;
                store::overdue(&mut sql, now_micros(), 100).await?
            };
            if overdue.is_empty() {
                return Ok(deemed);
            }
            let publisher = self.publisher.clone();
            deemed += self
                .db
                .write(async move |tx| {
                    let mut deemed = 0;
                    for application in &overdue {
                        // Only if still pending: a decision, or another replica's watcher, may
                        // have come first.
                        if !store::decide(
                            tx,
                            &application.application_ref,
                            Status::DeemedApproved,
                            "",
                        )
                        .await?
                        {
                            continue;
                        }
                        let causality =
                            Causality::request(format!("deadline:{}", application.application_ref));
                        enqueue(
                            tx,
                            &publisher,
                            &pb::LicenceDeemedApproved {
                                application_ref: application.application_ref.clone(),
                                document: application.document.clone(),
                                stage: application
                                    .stage
                                    .map(|stage| stage.as_str())
                                    .unwrap_or_default()
                                    .to_owned(),
                                deadline: application.due_at.map(rfc3339).unwrap_or_default(),
                                risk_level: application.risk_level.as_str().to_owned(),
                            },
                            &causality,
                        )?;
                        tracing::info!(
                            message = "Application deemed approved (fiktif positif).",
                            application_ref = %application.application_ref,
                        );
                        deemed += 1;
                    }
                    Ok::<usize, LicensingError>(deemed)
                })
                .await?;
        }
    }

    /// `CitizenDeceased`: the holder's licences and applications need review.
    pub async fn on_citizen_deceased(
        &self,
        event: identity::CitizenDeceased,
        meta: EventMeta,
    ) -> Result<(), HandleError> {
        let causality = Causality::following(&meta);
        let publisher = self.publisher.clone();
        handle_once(&self.db, &meta, async move |tx| {
            let applications = store::of_applicant(tx, &event.citizen_ref)
                .await
                .map_err(handle_error)?;
            for application in applications.iter().filter(|a| !a.flagged_for_review) {
                let reason = "holder deceased";
                if !store::flag(tx, &application.application_ref, reason)
                    .await
                    .map_err(handle_error)?
                {
                    continue;
                }
                enqueue(
                    tx,
                    &publisher,
                    &pb::LicenceFlaggedForReview {
                        application_ref: application.application_ref.clone(),
                        reason: reason.to_owned(),
                    },
                    &causality,
                )
                .map_err(HandleError::permanent)?;
            }
            Ok(())
        })
        .await
    }
}

fn enqueue<E: govbus_bus::Event>(
    tx: &mut Tx<'_>,
    publisher: &Publisher,
    event: &E,
    causality: &Causality,
) -> Result<(), LicensingError> {
    tx.enqueue(publisher.encode(event, causality)?);
    Ok(())
}

/// A 13-digit NIB, never starting with 0.
fn new_nib() -> String {
    let random = u128::from_be_bytes(*Uuid::new_v4().as_bytes());
    format!("{}", 1_000_000_000_000 + random % 9_000_000_000_000)
}

fn to_proto(application: &StoredApplication) -> pb::Application {
    pb::Application {
        application_ref: application.application_ref.clone(),
        risk_level: application.risk_level.to_proto().into(),
        status: application.status.to_proto().into(),
        nib: application.nib.clone(),
        document: application.document.clone(),
        deadline: match (application.status, application.due_at) {
            (Status::Pending, Some(due_at)) => rfc3339(due_at),
            _ => String::new(),
        },
        decision_reason: application.decision_reason.clone(),
        flagged_for_review: application.flagged_for_review,
        flag_reason: application.flag_reason.clone(),
        deadline_provisional: application.status == Status::Pending && application.due_provisional,
    }
}
