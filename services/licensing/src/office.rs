//! The licensing office: applications, decisions, deadlines, and the reaction to deaths.

use std::time::Duration;

use govbus_bus::{Causality, EventMeta, HandleError, PublishError, Publisher};
use govbus_civil::{Kelurahan, Nik};
use govbus_identity::client::{IdentityClient, IdentityUnavailable, Verified};
use govbus_kit::command::{handle_once, run_command, stored_response};
use govbus_kit::db::{from_micros, now_micros};
use govbus_kit::inbox::handle_error;
use govbus_kit::{Database, DbError, IdempotencyError, IdempotentRequest, RelayWaker, outbox};
use govbus_proto::identity::v1 as identity;
use govbus_proto::licensing::v1 as pb;
use sqlx::AnyConnection;
use time::format_description::well_known::Rfc3339;
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
    relay: RelayWaker,
    identity: IdentityClient,
    deadlines: Deadlines,
}

impl Office {
    /// An office over `db` with these service-level deadlines.
    pub fn new(
        db: Database,
        publisher: Publisher,
        relay: RelayWaker,
        identity: IdentityClient,
        deadlines: Deadlines,
    ) -> Self {
        Self {
            db,
            publisher,
            relay,
            identity,
            deadlines,
        }
    }

    /// Receives an application: verifies the applicant, issues the NIB, and either issues the
    /// document at once or opens the stage that waits for a decision.
    pub async fn apply(
        &self,
        application: &NewApplication,
        idempotency: Option<IdempotentRequest<'_>>,
        causality: &Causality,
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
        run_command(&self.db, &self.relay, idempotency, async |transaction| {
            let application_ref = Uuid::now_v7().to_string();
            let nib = new_nib(transaction).await?;
            let risk = application.risk_level;
            let (document, status, stage, due_at) = match risk.pathway() {
                Pathway::Immediate { document, .. } => (document, Status::Issued, None, None),
                Pathway::Pending { document, stage } => {
                    let due = now_micros().saturating_add(micros(self.deadlines.of(stage)));
                    (document, Status::Pending, Some(stage), Some(due))
                }
            };
            let stored = StoredApplication {
                application_ref: application_ref.clone(),
                applicant_ref: applicant_ref.clone(),
                kbli_code: application.kbli_code.clone(),
                kelurahan_code: application.kelurahan.code().to_owned(),
                risk_level: risk,
                nib: nib.clone(),
                document: document.to_owned(),
                status,
                stage,
                due_at,
                decision_reason: String::new(),
                flagged_for_review: false,
                flag_reason: String::new(),
            };
            store::insert(transaction, &stored, &application.business_name).await?;
            self.enqueue(
                transaction,
                &pb::ApplicationSubmitted {
                    application_ref: application_ref.clone(),
                    applicant_ref: applicant_ref.clone(),
                    kbli_code: stored.kbli_code.clone(),
                    kelurahan_code: stored.kelurahan_code.clone(),
                    risk_level: risk.as_str().to_owned(),
                },
                causality,
            )
            .await?;
            self.enqueue(
                transaction,
                &pb::NibIssued {
                    application_ref: application_ref.clone(),
                    nib,
                    risk_level: risk.as_str().to_owned(),
                },
                causality,
            )
            .await?;
            if let Pathway::Immediate {
                document,
                decided_by,
            } = risk.pathway()
            {
                self.enqueue(
                    transaction,
                    &pb::LicenceDecided {
                        application_ref: application_ref.clone(),
                        document: document.to_owned(),
                        approved: true,
                        decided_by: decided_by.to_owned(),
                        reason: String::new(),
                        within_deadline: true,
                        risk_level: risk.as_str().to_owned(),
                    },
                    causality,
                )
                .await?;
            }
            Ok(to_proto(&stored))
        })
        .await
    }

    /// Records a verifier's or approver's decision, if it comes before the deadline.
    pub async fn decide(
        &self,
        application_ref: &str,
        approve: bool,
        reason: &str,
        idempotency: Option<IdempotentRequest<'_>>,
        causality: &Causality,
    ) -> Result<pb::Application, LicensingError> {
        run_command(&self.db, &self.relay, idempotency, async |transaction| {
            let mut application = store::find(transaction, application_ref)
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
            if !store::decide(transaction, application_ref, status, reason).await? {
                return Err(LicensingError::NotPending("no longer pending"));
            }
            self.enqueue(
                transaction,
                &pb::LicenceDecided {
                    application_ref: application_ref.to_owned(),
                    document: application.document.clone(),
                    approved: approve,
                    decided_by: application
                        .stage
                        .map(|stage| stage.as_str())
                        .unwrap_or_default()
                        .to_owned(),
                    reason: reason.to_owned(),
                    within_deadline: true,
                    risk_level: application.risk_level.as_str().to_owned(),
                },
                causality,
            )
            .await?;
            application.status = status;
            application.decision_reason = reason.to_owned();
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
        let mut connection = self
            .db
            .pool()
            .acquire()
            .await
            .map_err(DbError::sql("acquiring a connection"))?;
        store::find(&mut connection, application_ref)
            .await?
            .map(|application| to_proto(&application))
            .ok_or(LicensingError::NotFound)
    }

    /// Deems approved every pending application whose deadline passed; returns how many.
    pub async fn deem_overdue_approved(&self) -> Result<usize, LicensingError> {
        let mut deemed = 0;
        loop {
            // Look first without the write lock: most rounds find nothing.
            let mut connection = self
                .db
                .pool()
                .acquire()
                .await
                .map_err(DbError::sql("acquiring a connection"))?;
            let overdue = store::overdue(&mut connection, now_micros(), 100).await?;
            drop(connection);
            if overdue.is_empty() {
                return Ok(deemed);
            }
            let mut transaction = self.db.begin().await?;
            for application in &overdue {
                if !store::decide(
                    &mut transaction,
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
                self.enqueue(
                    &mut transaction,
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
                )
                .await?;
                tracing::info!(
                    message = "Application deemed approved (fiktif positif).",
                    application_ref = %application.application_ref,
                );
                deemed += 1;
            }
            transaction
                .commit()
                .await
                .map_err(DbError::sql("committing deemed approvals"))?;
            self.relay.wake();
        }
    }

    /// `CitizenDeceased`: the holder's licences and applications need review.
    pub async fn on_citizen_deceased(
        &self,
        event: identity::CitizenDeceased,
        meta: EventMeta,
    ) -> Result<(), HandleError> {
        let causality = Causality::following(&meta);
        handle_once(&self.db, &self.relay, &meta, async |transaction| {
            let applications = store::of_applicant(transaction, &event.citizen_ref)
                .await
                .map_err(handle_error)?;
            for application in applications.iter().filter(|a| !a.flagged_for_review) {
                let reason = "holder deceased";
                store::flag(transaction, &application.application_ref, reason)
                    .await
                    .map_err(handle_error)?;
                self.enqueue(
                    transaction,
                    &pb::LicenceFlaggedForReview {
                        application_ref: application.application_ref.clone(),
                        reason: reason.to_owned(),
                    },
                    &causality,
                )
                .await
                .map_err(|error| match error {
                    LicensingError::Db(db) => handle_error(db),
                    other => HandleError::permanent(other),
                })?;
            }
            Ok(())
        })
        .await
    }

    async fn enqueue<E: govbus_bus::Event>(
        &self,
        transaction: &mut AnyConnection,
        event: &E,
        causality: &Causality,
    ) -> Result<(), LicensingError> {
        outbox::enqueue(transaction, &self.publisher.encode(event, causality)?).await?;
        Ok(())
    }
}

/// A new, unused 13-digit NIB.
async fn new_nib(transaction: &mut AnyConnection) -> Result<String, LicensingError> {
    loop {
        let random = u128::from_be_bytes(*Uuid::new_v4().as_bytes());
        // 13 digits, never starting with 0.
        let nib = format!("{}", 1_000_000_000_000 + random % 9_000_000_000_000);
        if !store::nib_taken(transaction, &nib).await? {
            return Ok(nib);
        }
    }
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

fn rfc3339(micros: i64) -> String {
    from_micros(micros).format(&Rfc3339).unwrap_or_default()
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
    }
}
