//! The complaints office: filing, verification, routing, responses, closure and reopening, each
//! one transaction of the database's writer with its events; escalations of passed deadlines;
//! and forwarding accepted complaints to the national channel.

use govbus_bus::{Causality, EventMeta, HandleError, PublishError, Publisher};
use govbus_civil::Nik;
use govbus_civil::calendar::{Period, WorkingCalendar};
use govbus_identity_client::{IdentityClient, IdentityUnavailable, Verified};
use govbus_proto::complaints::v1 as pb;
use govbus_storage::command::{handle_once, run_command, stored_response};
use govbus_storage::inbox::handle_error;
use govbus_storage::time::{now_micros, rfc3339};
use govbus_storage::{Database, DbError, IdempotencyError, IdempotentRequest, Tx};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

use crate::domain::{
    self, Category, Channel, ComplaintClass, Deadlines, RefusalGround, Stage, Status,
};
use crate::national::NationalChannel;
use crate::store::{self, StoredComplaint};
use govbus_civil::agencies::Agencies;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ComplaintsError {
    /// The complainant is unknown to identity.
    #[error("the complainant is not in the population register")]
    NotInRegister,
    /// The complainant is deceased.
    #[error("the complainant is deceased")]
    Deceased,
    /// No such complaint.
    #[error("no complaint with this reference")]
    NotFound,
    /// The complaint is not where the command needs it.
    #[error("the complaint is {actual}; this needs it {expected}")]
    WrongStatus {
        /// Where the command needs it.
        expected: &'static str,
        /// Where it is.
        actual: &'static str,
    },
    /// Routing to the agency it is with.
    #[error("the complaint is already with {0}")]
    AlreadyWith(String),
    /// A response from an agency the complaint is not with.
    #[error("the complaint is with {0}, not with the responding agency")]
    NotWithAgency(String),
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

impl From<IdempotencyError> for ComplaintsError {
    fn from(error: IdempotencyError) -> Self {
        match error {
            IdempotencyError::Db(error) => Self::Db(error),
            other => Self::Idempotency(other),
        }
    }
}

/// A complaint as filed.
#[derive(Debug, Clone)]
pub struct NewComplaint {
    /// The complainant (verified, never stored).
    pub complainant: Nik,
    /// The agency the resident names (a known code).
    pub agency_code: String,
    /// Category.
    pub category: Category,
    /// The resident's text.
    pub text: String,
    /// Channel.
    pub channel: Channel,
    /// The benefit it is about, or empty.
    pub benefit_ref: String,
    /// The licence application it is about, or empty.
    pub application_ref: String,
}

/// What verification decided.
#[derive(Debug, Clone)]
pub enum Verification {
    /// Accepted with a class, for an agency (`None`: the one the resident named).
    Accept {
        /// The class.
        class: ComplaintClass,
        /// The agency responsible.
        agency_code: Option<String>,
    },
    /// Refused.
    Refuse {
        /// On what ground.
        ground: RefusalGround,
        /// Why, told to the resident.
        reason: String,
    },
}

/// The complaints office.
#[derive(Debug, Clone)]
pub struct Office {
    db: Database,
    publisher: Publisher,
    identity: IdentityClient,
    deadlines: Deadlines,
    calendar: &'static WorkingCalendar,
    agencies: Arc<Agencies>,
    national: Option<NationalChannel>,
}

/// A page of complaints.
#[derive(Debug, Clone)]
pub struct Page {
    /// The complaints.
    pub complaints: Vec<StoredComplaint>,
    /// The reference to read on after, if there may be more.
    pub next: Option<String>,
}

impl Office {
    /// An office over `db`, its deadlines counted in `calendar`'s working days, routing to
    /// `agencies`, forwarding accepted complaints to `national` when there is one.
    pub fn new(
        db: Database,
        publisher: Publisher,
        identity: IdentityClient,
        deadlines: Deadlines,
        calendar: &'static WorkingCalendar,
        agencies: Arc<Agencies>,
        national: Option<NationalChannel>,
    ) -> Self {
        Self {
            db,
            publisher,
            identity,
            deadlines,
            calendar,
            agencies,
            national,
        }
    }

    /// The agencies complaints are routed to.
    pub fn agencies(&self) -> &Agencies {
        &self.agencies
    }

    /// The working days of each stage.
    pub fn deadlines(&self) -> &Deadlines {
        &self.deadlines
    }

    /// Files a complaint: verifies the complainant and opens verification's deadline.
    pub async fn file(
        &self,
        complaint: NewComplaint,
        idempotency: Option<IdempotentRequest>,
        causality: Causality,
    ) -> Result<pb::Complaint, ComplaintsError> {
        if let Some(stored) =
            stored_response::<_, ComplaintsError>(&self.db, idempotency.as_ref()).await?
        {
            return Ok(stored);
        }
        let complainant_ref = match self.identity.verify(&complaint.complainant).await? {
            Verified::Living { citizen_ref } => citizen_ref,
            Verified::Deceased => return Err(ComplaintsError::Deceased),
            Verified::Unknown => return Err(ComplaintsError::NotInRegister),
        };
        let publisher = self.publisher.clone();
        let deadlines = self.deadlines.clone();
        let calendar = self.calendar;
        run_command(&self.db, idempotency, async move |tx| {
            let filed_at = now_micros();
            let due = domain::due(deadlines.verification, filed_at, calendar);
            let stored = StoredComplaint {
                complaint_ref: Uuid::now_v7().to_string(),
                complainant_ref: complainant_ref.clone(),
                agency_code: complaint.agency_code.clone(),
                category: complaint.category,
                channel: complaint.channel,
                text: complaint.text.clone(),
                benefit_ref: complaint.benefit_ref.clone(),
                application_ref: complaint.application_ref.clone(),
                status: Status::AwaitingVerification,
                class: None,
                refusal_ground: None,
                refusal_reason: String::new(),
                routing_note: String::new(),
                response: String::new(),
                reopen_reason: String::new(),
                due: Some(due),
                escalated: false,
                responded_within_deadline: false,
                reopened: 0,
                national_ref: None,
                filed_at,
            };
            store::insert(tx, &stored).await?;
            enqueue(
                tx,
                &publisher,
                &pb::ComplaintFiled {
                    complaint_ref: stored.complaint_ref.clone(),
                    complainant_ref: stored.complainant_ref.clone(),
                    agency_code: stored.agency_code.clone(),
                    category: stored.category.as_str().to_owned(),
                    channel: stored.channel.as_str().to_owned(),
                    benefit_ref: stored.benefit_ref.clone(),
                    application_ref: stored.application_ref.clone(),
                    deadline: rfc3339(due.at),
                },
                &causality,
            )?;
            Ok(to_proto(&stored))
        })
        .await
    }

    /// Verification's decision on a complaint waiting for it.
    pub async fn verify(
        &self,
        complaint_ref: String,
        verification: Verification,
        idempotency: Option<IdempotentRequest>,
        causality: Causality,
    ) -> Result<pb::Complaint, ComplaintsError> {
        let publisher = self.publisher.clone();
        let deadlines = self.deadlines.clone();
        let calendar = self.calendar;
        run_command(&self.db, idempotency, async move |tx| {
            let mut complaint = locked(
                tx,
                &complaint_ref,
                Status::AwaitingVerification,
                "awaiting verification",
            )
            .await?;
            let now = now_micros();
            let within_deadline = complaint.due.is_none_or(|due| now < due.at);
            match &verification {
                Verification::Accept { class, agency_code } => {
                    if let Some(agency) = agency_code {
                        complaint.agency_code.clone_from(agency);
                    }
                    complaint.status = Status::WithAgency;
                    complaint.class = Some(*class);
                    let due = domain::due(deadlines.response(*class), now, calendar);
                    complaint.escalated = false;
                    complaint.due = Some(due);
                    save(tx, &complaint, Status::AwaitingVerification).await?;
                    enqueue(
                        tx,
                        &publisher,
                        &pb::ComplaintAccepted {
                            complaint_ref: complaint.complaint_ref.clone(),
                            complainant_ref: complaint.complainant_ref.clone(),
                            agency_code: complaint.agency_code.clone(),
                            class: class.as_str().to_owned(),
                            category: complaint.category.as_str().to_owned(),
                            deadline: rfc3339(due.at),
                            within_deadline,
                            benefit_ref: complaint.benefit_ref.clone(),
                            application_ref: complaint.application_ref.clone(),
                        },
                        &causality,
                    )?;
                }
                Verification::Refuse { ground, reason } => {
                    complaint.status = Status::Refused;
                    complaint.refusal_ground = Some(*ground);
                    complaint.refusal_reason.clone_from(reason);
                    complaint.escalated = false;
                    complaint.due = None;
                    save(tx, &complaint, Status::AwaitingVerification).await?;
                    enqueue(
                        tx,
                        &publisher,
                        &pb::ComplaintRefused {
                            complaint_ref: complaint.complaint_ref.clone(),
                            complainant_ref: complaint.complainant_ref.clone(),
                            ground: ground.as_str().to_owned(),
                        },
                        &causality,
                    )?;
                }
            }
            Ok(to_proto(&complaint))
        })
        .await
    }

    /// Sends a complaint with an agency to another; its deadline stays.
    pub async fn route(
        &self,
        complaint_ref: String,
        agency_code: String,
        note: String,
        idempotency: Option<IdempotentRequest>,
        causality: Causality,
    ) -> Result<pb::Complaint, ComplaintsError> {
        let publisher = self.publisher.clone();
        run_command(&self.db, idempotency, async move |tx| {
            let mut complaint =
                locked(tx, &complaint_ref, Status::WithAgency, "with an agency").await?;
            if complaint.agency_code == agency_code {
                return Err(ComplaintsError::AlreadyWith(agency_code.clone()));
            }
            let from = std::mem::replace(&mut complaint.agency_code, agency_code.clone());
            complaint.routing_note.clone_from(&note);
            save(tx, &complaint, Status::WithAgency).await?;
            enqueue(
                tx,
                &publisher,
                &pb::ComplaintRouted {
                    complaint_ref: complaint.complaint_ref.clone(),
                    from_agency_code: from,
                    to_agency_code: agency_code.clone(),
                },
                &causality,
            )?;
            Ok(to_proto(&complaint))
        })
        .await
    }

    /// The agency's response to a complaint it has.
    pub async fn respond(
        &self,
        complaint_ref: String,
        agency_code: String,
        response: String,
        idempotency: Option<IdempotentRequest>,
        causality: Causality,
    ) -> Result<pb::Complaint, ComplaintsError> {
        let publisher = self.publisher.clone();
        run_command(&self.db, idempotency, async move |tx| {
            let mut complaint =
                locked(tx, &complaint_ref, Status::WithAgency, "with an agency").await?;
            if complaint.agency_code != agency_code {
                return Err(ComplaintsError::NotWithAgency(
                    complaint.agency_code.clone(),
                ));
            }
            let within_deadline = complaint.due.is_none_or(|due| now_micros() < due.at);
            let was_escalated = complaint.escalated;
            complaint.status = Status::Responded;
            complaint.response.clone_from(&response);
            complaint.responded_within_deadline = within_deadline;
            complaint.escalated = false;
            complaint.due = None;
            save(tx, &complaint, Status::WithAgency).await?;
            enqueue(
                tx,
                &publisher,
                &pb::ComplaintResponded {
                    complaint_ref: complaint.complaint_ref.clone(),
                    complainant_ref: complaint.complainant_ref.clone(),
                    agency_code: complaint.agency_code.clone(),
                    class: class_text(&complaint),
                    within_deadline,
                    was_escalated,
                },
                &causality,
            )?;
            Ok(to_proto(&complaint))
        })
        .await
    }

    /// The resident accepts the response.
    pub async fn close(
        &self,
        complaint_ref: String,
        idempotency: Option<IdempotentRequest>,
        causality: Causality,
    ) -> Result<pb::Complaint, ComplaintsError> {
        let publisher = self.publisher.clone();
        run_command(&self.db, idempotency, async move |tx| {
            let mut complaint =
                locked(tx, &complaint_ref, Status::Responded, "responded to").await?;
            complaint.status = Status::Closed;
            save(tx, &complaint, Status::Responded).await?;
            enqueue(
                tx,
                &publisher,
                &pb::ComplaintClosed {
                    complaint_ref: complaint.complaint_ref.clone(),
                    complainant_ref: complaint.complainant_ref.clone(),
                    agency_code: complaint.agency_code.clone(),
                    class: class_text(&complaint),
                },
                &causality,
            )?;
            Ok(to_proto(&complaint))
        })
        .await
    }

    /// The resident does not accept the response: back to the agency with a new deadline.
    pub async fn reopen(
        &self,
        complaint_ref: String,
        reason: String,
        idempotency: Option<IdempotentRequest>,
        causality: Causality,
    ) -> Result<pb::Complaint, ComplaintsError> {
        let publisher = self.publisher.clone();
        let deadlines = self.deadlines.clone();
        let calendar = self.calendar;
        run_command(&self.db, idempotency, async move |tx| {
            let mut complaint =
                locked(tx, &complaint_ref, Status::Responded, "responded to").await?;
            let class = complaint
                .class
                .ok_or_else(|| DbError::corrupt("reopening a complaint", "class"))?;
            let now = now_micros();
            let due = domain::due(deadlines.response(class), now, calendar);
            complaint.status = Status::WithAgency;
            complaint.reopen_reason.clone_from(&reason);
            complaint.reopened = complaint.reopened.saturating_add(1);
            complaint.escalated = false;
            complaint.due = Some(due);
            save(tx, &complaint, Status::Responded).await?;
            enqueue(
                tx,
                &publisher,
                &pb::ComplaintReopened {
                    complaint_ref: complaint.complaint_ref.clone(),
                    complainant_ref: complaint.complainant_ref.clone(),
                    agency_code: complaint.agency_code.clone(),
                    class: class.as_str().to_owned(),
                    deadline: rfc3339(due.at),
                },
                &causality,
            )?;
            Ok(to_proto(&complaint))
        })
        .await
    }

    /// A complaint.
    pub async fn complaint(&self, complaint_ref: &str) -> Result<StoredComplaint, ComplaintsError> {
        let mut sql = self.db.read().await?;
        store::find(&mut sql, complaint_ref)
            .await?
            .ok_or(ComplaintsError::NotFound)
    }

    /// Complaints newest first.
    pub async fn list(
        &self,
        agency: Option<&str>,
        status: Option<Status>,
        after: Option<&str>,
        size: u32,
    ) -> Result<Page, ComplaintsError> {
        let mut sql = self.db.read().await?;
        let mut complaints =
            store::list(&mut sql, agency, status, after, i64::from(size) + 1).await?;
        let more = complaints.len() > size as usize;
        complaints.truncate(size as usize);
        let next = more
            .then(|| complaints.last().map(|last| last.complaint_ref.clone()))
            .flatten();
        Ok(Page { complaints, next })
    }

    /// Erases the texts of every complaint whose handling ended more than `keep` ago, in
    /// batches (each its own short transaction, so commands are not held up); returns how
    /// many. Personal data kept no longer than needed (UU 27/2022 Pasal 16).
    pub async fn erase_ended_texts(&self, keep: Duration) -> Result<u64, ComplaintsError> {
        let erased =
            govbus_storage::retention::in_batches(&self.db, keep, async |tx, before, limit| {
                store::erase_ended_texts(tx, before, limit).await
            })
            .await?;
        if erased > 0 {
            tracing::info!(
                message = "Texts of ended complaints erased after their retention period.",
                erased,
            );
        }
        Ok(erased)
    }

    /// Escalates every waiting complaint whose stage's deadline passed, once per deadline;
    /// returns how many.
    pub async fn escalate_overdue(&self) -> Result<usize, ComplaintsError> {
        let mut escalated = 0;
        loop {
            // Look first beside the writer: most rounds find nothing.
            let overdue = {
                let mut sql = self.db.read().await?;
                store::overdue(&mut sql, now_micros(), 100).await?
            };
            if overdue.is_empty() {
                return Ok(escalated);
            }
            let publisher = self.publisher.clone();
            let round = self
                .db
                .write(async move |tx| {
                    let mut escalated = 0;
                    for complaint in &overdue {
                        let (Some(due_at), Some(stage)) =
                            (complaint.due.map(|due| due.at), Stage::of(complaint.status))
                        else {
                            continue;
                        };
                        // Only that deadline, only once: another replica's watcher, or a
                        // command that moved the complaint on, may have come first.
                        if !store::escalate(tx, &complaint.complaint_ref, due_at).await? {
                            continue;
                        }
                        let causality =
                            Causality::request(format!("deadline:{}", complaint.complaint_ref));
                        enqueue(
                            tx,
                            &publisher,
                            &pb::ComplaintEscalated {
                                complaint_ref: complaint.complaint_ref.clone(),
                                stage: stage.as_str().to_owned(),
                                deadline: rfc3339(due_at),
                                agency_code: complaint.agency_code.clone(),
                                class: class_text(complaint),
                            },
                            &causality,
                        )?;
                        tracing::info!(
                            message = "Complaint escalated: its deadline passed.",
                            complaint_ref = %complaint.complaint_ref,
                            stage = stage.as_str(),
                        );
                        escalated += 1;
                    }
                    Ok::<usize, ComplaintsError>(escalated)
                })
                .await?;
            if round == 0 {
                // Everything read was escalated by someone else in the meantime.
                return Ok(escalated);
            }
            escalated += round;
        }
    }

    /// Counts again, with the working days each was set with, the deadlines that reached a
    /// year whose days off were not shipped when they were set; returns how many changed.
    pub async fn recount_provisional_deadlines(&self) -> Result<usize, ComplaintsError> {
        let calendar = self.calendar;
        self.db
            .write(async move |tx| {
                let mut changed = 0;
                for complaint in store::provisional(tx).await? {
                    let Some(set) = complaint.due else {
                        continue;
                    };
                    let Some(days) = set.working_days else {
                        continue;
                    };
                    let due = domain::due(Period::WorkingDays(days), set.from, calendar);
                    if due.at != set.at || !due.provisional {
                        store::set_due(tx, &complaint.complaint_ref, due).await?;
                        changed += 1;
                    }
                }
                Ok::<_, ComplaintsError>(changed)
            })
            .await
    }

    /// `ComplaintAccepted`: delivers the complaint to the national channel, once, and records
    /// its tracking number. Without a national channel configured, nothing is forwarded.
    pub async fn forward_accepted(
        &self,
        event: pb::ComplaintAccepted,
        meta: EventMeta,
    ) -> Result<(), HandleError> {
        let Some(national) = &self.national else {
            return Ok(());
        };
        let complaint = {
            let mut sql = self.db.read().await.map_err(handle_error)?;
            store::find(&mut sql, &event.complaint_ref)
                .await
                .map_err(handle_error)?
        };
        let Some(complaint) = complaint else {
            return Err(HandleError::permanent(format!(
                "complaint {} is not in the database",
                event.complaint_ref
            )));
        };
        if complaint.national_ref.is_some() {
            return Ok(());
        }
        let agency = self
            .agencies
            .get(&complaint.agency_code)
            .map(|agency| agency.name.clone())
            .unwrap_or_default();
        let national_ref = national
            .deliver(&complaint, &agency, &event.deadline)
            .await
            .map_err(|error| error.into_handle_error())?;
        let causality = Causality::following(&meta);
        let publisher = self.publisher.clone();
        handle_once(&self.db, &meta, async move |tx| {
            if store::set_national_ref(tx, &complaint.complaint_ref, &national_ref)
                .await
                .map_err(handle_error)?
            {
                let forwarded = pb::ComplaintForwarded {
                    complaint_ref: complaint.complaint_ref.clone(),
                    national_ref: national_ref.clone(),
                    agency_code: complaint.agency_code.clone(),
                };
                tx.enqueue(
                    publisher
                        .encode(&forwarded, &causality)
                        .map_err(HandleError::permanent)?,
                );
                tracing::info!(
                    message = "Complaint forwarded to the national channel.",
                    complaint_ref = %complaint.complaint_ref,
                );
            }
            Ok(())
        })
        .await
    }
}

/// The complaint `complaint_ref`, locked, if it is in `status`.
async fn locked(
    tx: &mut Tx<'_>,
    complaint_ref: &str,
    status: Status,
    expected: &'static str,
) -> Result<StoredComplaint, ComplaintsError> {
    let complaint = store::find_for_update(tx, complaint_ref)
        .await?
        .ok_or(ComplaintsError::NotFound)?;
    if complaint.status != status {
        return Err(ComplaintsError::WrongStatus {
            expected,
            actual: complaint.status.as_str(),
        });
    }
    Ok(complaint)
}

/// Writes a command's changes; the row was read locked in `expected`, so it is still there.
async fn save(
    tx: &mut Tx<'_>,
    complaint: &StoredComplaint,
    expected: Status,
) -> Result<(), ComplaintsError> {
    if store::update(tx, complaint, expected).await? {
        Ok(())
    } else {
        Err(ComplaintsError::WrongStatus {
            expected: expected.as_str(),
            actual: "changed meanwhile",
        })
    }
}

fn class_text(complaint: &StoredComplaint) -> String {
    complaint
        .class
        .map(ComplaintClass::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn enqueue<E: govbus_bus::Event>(
    tx: &mut Tx<'_>,
    publisher: &Publisher,
    event: &E,
    causality: &Causality,
) -> Result<(), ComplaintsError> {
    tx.enqueue(publisher.encode(event, causality)?);
    Ok(())
}

/// A complaint as the API shows it.
pub fn to_proto(complaint: &StoredComplaint) -> pb::Complaint {
    let waiting = Stage::of(complaint.status).is_some();
    pb::Complaint {
        complaint_ref: complaint.complaint_ref.clone(),
        status: complaint.status.to_proto().into(),
        complainant_ref: complaint.complainant_ref.clone(),
        agency_code: complaint.agency_code.clone(),
        category: complaint.category.to_proto().into(),
        channel: complaint.channel.to_proto().into(),
        text: complaint.text.clone(),
        benefit_ref: complaint.benefit_ref.clone(),
        application_ref: complaint.application_ref.clone(),
        class: complaint
            .class
            .map_or(pb::ComplaintClass::Unspecified, ComplaintClass::to_proto)
            .into(),
        refusal_ground: complaint
            .refusal_ground
            .map_or(pb::RefusalGround::Unspecified, RefusalGround::to_proto)
            .into(),
        refusal_reason: complaint.refusal_reason.clone(),
        response: complaint.response.clone(),
        deadline: match (waiting, complaint.due) {
            (true, Some(due)) => rfc3339(due.at),
            _ => String::new(),
        },
        deadline_provisional: waiting && complaint.due.is_some_and(|due| due.provisional),
        escalated: waiting && complaint.escalated,
        responded_within_deadline: complaint.responded_within_deadline,
        reopened: complaint.reopened,
        national_ref: complaint.national_ref.clone().unwrap_or_default(),
        filed_at: rfc3339(complaint.filed_at),
    }
}

/// A complaint without its text and complainant.
pub fn to_summary(complaint: &StoredComplaint) -> pb::ComplaintSummary {
    let full = to_proto(complaint);
    pb::ComplaintSummary {
        complaint_ref: full.complaint_ref,
        status: full.status,
        agency_code: full.agency_code,
        category: full.category,
        channel: full.channel,
        class: full.class,
        deadline: full.deadline,
        escalated: full.escalated,
        national_ref: full.national_ref,
        filed_at: full.filed_at,
    }
}
