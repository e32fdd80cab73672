//! The welfare office: its commands, and its reactions to identity's events. Every change and
//! the events it produces commit in one transaction.

use govbus_bus::{Causality, EventMeta, HandleError, PublishError, Publisher};
use govbus_civil::{Kelurahan, KkNumber, Nik};
use govbus_proto::identity::v1 as identity;
use govbus_proto::welfare::v1 as pb;
use govbus_storage::command::{handle_once, run_command, stored_response};
use govbus_storage::inbox::handle_error;
use govbus_storage::{Database, DbError, IdempotencyError, IdempotentRequest, Sql, Tx};
use uuid::Uuid;

use crate::domain::{BenefitStatus, Decision, Desil, Programme, decide, reassessment_suspends};
use crate::store::{self, StoredBenefit};
use govbus_identity_client::{IdentityClient, IdentityUnavailable, Verified};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum WelfareError {
    /// A NIK identity does not know.
    #[error("{who} is not in the population register")]
    NotInRegister {
        /// Which person (e.g. "member 2"), never the NIK.
        who: String,
    },
    /// A person whose death is recorded.
    #[error("{who} is deceased")]
    Deceased {
        /// Which person.
        who: String,
    },
    /// A KK already registered.
    #[error("a household with this KK number is already registered")]
    HouseholdExists,
    /// A member of another household.
    #[error("{who} is already a member of a registered household")]
    AlreadyMember {
        /// Which person.
        who: String,
    },
    /// No household with this KK.
    #[error("no household with this KK number is registered")]
    HouseholdNotFound,
    /// The applicant belongs to no registered household.
    #[error(
        "the applicant is not a member of a registered household; register the household first"
    )]
    NotAMember,
    /// The household was never assessed.
    #[error("the applicant's household has no welfare assessment (desil) yet")]
    NotAssessed,
    /// An active benefit of the same programme.
    #[error("the applicant already receives {0}")]
    AlreadyReceiving(&'static str),
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

impl From<IdempotencyError> for WelfareError {
    fn from(error: IdempotencyError) -> Self {
        match error {
            IdempotencyError::Db(error) => Self::Db(error),
            other => Self::Idempotency(other),
        }
    }
}

/// The welfare office.
#[derive(Debug, Clone)]
pub struct Office {
    db: Database,
    publisher: Publisher,
    identity: IdentityClient,
}

impl Office {
    /// An office over `db` that verifies people with `identity`.
    pub fn new(db: Database, publisher: Publisher, identity: IdentityClient) -> Self {
        Self {
            db,
            publisher,
            identity,
        }
    }

    /// Registers a household whose members identity knows as living citizens.
    pub async fn register_household(
        &self,
        kk_number: KkNumber,
        kelurahan: Kelurahan,
        members: Vec<Nik>,
        idempotency: Option<IdempotentRequest>,
        causality: Causality,
    ) -> Result<pb::RegisterHouseholdResponse, WelfareError> {
        if let Some(stored) =
            stored_response::<_, WelfareError>(&self.db, idempotency.as_ref()).await?
        {
            return Ok(stored);
        }
        let mut citizen_refs = Vec::with_capacity(members.len());
        for (index, nik) in members.iter().enumerate() {
            let who = format!("member {}", index + 1);
            match self.identity.verify(nik).await? {
                Verified::Living { citizen_ref } => citizen_refs.push(citizen_ref),
                Verified::Deceased => return Err(WelfareError::Deceased { who }),
                Verified::Unknown => return Err(WelfareError::NotInRegister { who }),
            }
        }
        let publisher = self.publisher.clone();
        run_command(&self.db, idempotency, async move |tx| {
            let household_ref = Uuid::now_v7().to_string();
            if !store::insert_household(tx, &household_ref, kk_number.as_str(), kelurahan.code())
                .await?
            {
                return Err(WelfareError::HouseholdExists);
            }
            for (index, (nik, citizen_ref)) in members.iter().zip(&citizen_refs).enumerate() {
                if !store::insert_member(
                    tx,
                    citizen_ref,
                    nik.as_str(),
                    &household_ref,
                    kelurahan.code(),
                )
                .await?
                {
                    return Err(WelfareError::AlreadyMember {
                        who: format!("member {}", index + 1),
                    });
                }
            }
            let event = pb::HouseholdRegistered {
                household_ref: household_ref.clone(),
                kelurahan_code: kelurahan.code().to_owned(),
                member_count: u32::try_from(members.len()).unwrap_or(u32::MAX),
            };
            tx.enqueue(publisher.encode(&event, &causality)?);
            Ok(pb::RegisterHouseholdResponse { household_ref })
        })
        .await
    }

    /// Records a household's desil; PKH benefits of a household reassessed into desil 5 or
    /// above are suspended pending verification.
    pub async fn assess_household(
        &self,
        kk_number: KkNumber,
        desil: Desil,
        idempotency: Option<IdempotentRequest>,
        causality: Causality,
    ) -> Result<pb::AssessHouseholdResponse, WelfareError> {
        let publisher = self.publisher.clone();
        run_command(&self.db, idempotency, async move |tx| {
            // Locked: concurrent assessments of one household follow each other, each knowing
            // the desil the previous one recorded.
            let household = store::household_by_kk_for_update(tx, kk_number.as_str())
                .await?
                .ok_or(WelfareError::HouseholdNotFound)?;
            store::set_desil(tx, &household.household_ref, desil).await?;
            let event = pb::HouseholdAssessed {
                household_ref: household.household_ref.clone(),
                desil: u32::from(desil.value()),
                previous_desil: household
                    .desil
                    .map_or(0, |previous| u32::from(previous.value())),
                kelurahan_code: household.kelurahan_code.clone(),
            };
            tx.enqueue(publisher.encode(&event, &causality)?);
            let mut suspended = Vec::new();
            for benefit in store::active_benefits_of_household(tx, &household.household_ref).await?
            {
                if let Some(reason) = reassessment_suspends(benefit.programme, desil)
                    && suspend(tx, &publisher, &benefit, &reason, &causality).await?
                {
                    suspended.push(benefit.benefit_ref);
                }
            }
            Ok(pb::AssessHouseholdResponse {
                household_ref: household.household_ref,
                suspended_benefit_refs: suspended,
            })
        })
        .await
    }

    /// Decides an application after identity verified the applicant.
    pub async fn apply(
        &self,
        nik: Nik,
        programme: Programme,
        idempotency: Option<IdempotentRequest>,
        causality: Causality,
    ) -> Result<pb::ApplyForProgrammeResponse, WelfareError> {
        if let Some(stored) =
            stored_response::<_, WelfareError>(&self.db, idempotency.as_ref()).await?
        {
            return Ok(stored);
        }
        let who = "the applicant".to_owned();
        match self.identity.verify(&nik).await? {
            Verified::Living { .. } => {}
            Verified::Deceased => return Err(WelfareError::Deceased { who }),
            Verified::Unknown => return Err(WelfareError::NotInRegister { who }),
        }
        let publisher = self.publisher.clone();
        run_command(&self.db, idempotency, async move |tx| {
            // Locked: one person's applications are decided one after the other, each seeing
            // what the previous one granted.
            let member = store::member_by_nik_for_update(tx, nik.as_str())
                .await?
                .ok_or(WelfareError::NotAMember)?;
            let household = store::household_by_ref(tx, &member.household_ref)
                .await?
                .ok_or(WelfareError::NotAMember)?;
            let desil = household.desil.ok_or(WelfareError::NotAssessed)?;
            let current = store::benefits_of(tx, &member.citizen_ref).await?;
            if current.iter().any(|benefit| {
                benefit.programme == programme && benefit.status == BenefitStatus::Active
            }) {
                return Err(WelfareError::AlreadyReceiving(programme.code()));
            }
            let benefit_ref = Uuid::now_v7().to_string();
            let (status, reason) = match decide(programme, desil) {
                Decision::Granted => (BenefitStatus::Active, String::new()),
                Decision::Refused(reason) => (BenefitStatus::Refused, reason),
            };
            let benefit = StoredBenefit {
                benefit_ref: benefit_ref.clone(),
                citizen_ref: member.citizen_ref.clone(),
                programme,
                status,
                reason: reason.clone(),
            };
            store::insert_benefit(tx, &benefit, &household.household_ref).await?;
            let event = match status {
                BenefitStatus::Active => publisher.encode(
                    &pb::BenefitGranted {
                        benefit_ref: benefit_ref.clone(),
                        citizen_ref: member.citizen_ref,
                        household_ref: household.household_ref,
                        programme: programme.code().to_owned(),
                        desil: u32::from(desil.value()),
                        kelurahan_code: member.kelurahan_code,
                    },
                    &causality,
                )?,
                _ => publisher.encode(
                    &pb::BenefitRefused {
                        benefit_ref: benefit_ref.clone(),
                        citizen_ref: member.citizen_ref,
                        programme: programme.code().to_owned(),
                        reason: reason.clone(),
                    },
                    &causality,
                )?,
            };
            tx.enqueue(event);
            Ok(pb::ApplyForProgrammeResponse {
                benefit_ref,
                status: status.to_proto().into(),
                reason,
            })
        })
        .await
    }

    /// A person's benefits (none when welfare does not know the NIK).
    pub async fn benefits(&self, nik: &Nik) -> Result<Vec<StoredBenefit>, WelfareError> {
        let mut sql = self.db.read().await?;
        match store::member_by_nik(&mut sql, nik.as_str()).await? {
            None => Ok(Vec::new()),
            Some(member) => Ok(store::benefits_of(&mut sql, &member.citizen_ref).await?),
        }
    }

    /// `CitizenDeceased`: no payments to the dead. Suspends the person's active benefits.
    pub async fn on_citizen_deceased(
        &self,
        event: identity::CitizenDeceased,
        meta: EventMeta,
    ) -> Result<(), HandleError> {
        let causality = Causality::following(&meta);
        let publisher = self.publisher.clone();
        handle_once(&self.db, &meta, async move |tx| {
            if !store::mark_member_deceased(tx, &event.citizen_ref)
                .await
                .map_err(handle_error)?
            {
                return Ok(());
            }
            let benefits = store::benefits_of(tx, &event.citizen_ref)
                .await
                .map_err(handle_error)?;
            for benefit in benefits
                .iter()
                .filter(|b| b.status == BenefitStatus::Active)
            {
                suspend(tx, &publisher, benefit, "recipient deceased", &causality)
                    .await
                    .map_err(|error| match error {
                        WelfareError::Db(db) => handle_error(db),
                        other => HandleError::permanent(other),
                    })?;
            }
            Ok(())
        })
        .await
    }

    /// `CitizenRelocated`: no stale addresses.
    pub async fn on_citizen_relocated(
        &self,
        event: identity::CitizenRelocated,
        meta: EventMeta,
    ) -> Result<(), HandleError> {
        handle_once(&self.db, &meta, async move |tx| {
            store::move_member(tx, &event.citizen_ref, &event.to_kelurahan_code)
                .await
                .map_err(handle_error)?;
            Ok(())
        })
        .await
    }
}

/// Suspends `benefit` and publishes `BenefitSuspended`; false when it was no longer active.
async fn suspend(
    tx: &mut Tx<'_>,
    publisher: &Publisher,
    benefit: &StoredBenefit,
    reason: &str,
    causality: &Causality,
) -> Result<bool, WelfareError> {
    let sql: &mut Sql<'_> = tx;
    if !store::suspend(sql, &benefit.benefit_ref, reason).await? {
        return Ok(false);
    }
    let event = pb::BenefitSuspended {
        benefit_ref: benefit.benefit_ref.clone(),
        citizen_ref: benefit.citizen_ref.clone(),
        programme: benefit.programme.code().to_owned(),
        reason: reason.to_owned(),
    };
    tx.enqueue(publisher.encode(&event, causality)?);
    tracing::info!(
        message = "Benefit suspended.",
        benefit_ref = %benefit.benefit_ref,
        programme = benefit.programme.code(),
        %reason,
    );
    Ok(true)
}
