//! The welfare office: its commands, and its reactions to identity's events. Every change and
//! the events it produces commit in one transaction.

use govbus_bus::{Causality, EventMeta, HandleError, PublishError, Publisher};
use govbus_civil::{Kelurahan, KkNumber, Nik};
use govbus_kit::command::{handle_once, run_command, stored_response};
use govbus_kit::inbox::handle_error;
use govbus_kit::{Database, DbError, IdempotencyError, IdempotentRequest, RelayWaker, outbox};
use govbus_proto::identity::v1 as identity;
use govbus_proto::welfare::v1 as pb;
use sqlx::AnyConnection;
use uuid::Uuid;

use crate::domain::{BenefitStatus, Decision, Desil, Programme, decide, reassessment_suspends};
use crate::store::{self, StoredBenefit};
use govbus_identity::client::{IdentityClient, IdentityUnavailable, Verified};

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
    relay: RelayWaker,
    identity: IdentityClient,
}

impl Office {
    /// An office over `db` that verifies people with `identity`.
    pub fn new(
        db: Database,
        publisher: Publisher,
        relay: RelayWaker,
        identity: IdentityClient,
    ) -> Self {
        Self {
            db,
            publisher,
            relay,
            identity,
        }
    }

    /// Registers a household whose members identity knows as living citizens.
    pub async fn register_household(
        &self,
        kk_number: &KkNumber,
        kelurahan: &Kelurahan,
        members: &[Nik],
        idempotency: Option<IdempotentRequest<'_>>,
        causality: &Causality,
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
        run_command(&self.db, &self.relay, idempotency, async |transaction| {
            if store::household_by_kk(transaction, kk_number.as_str())
                .await?
                .is_some()
            {
                return Err(WelfareError::HouseholdExists);
            }
            let household_ref = Uuid::now_v7().to_string();
            store::insert_household(
                transaction,
                &household_ref,
                kk_number.as_str(),
                kelurahan.code(),
            )
            .await?;
            for (index, (nik, citizen_ref)) in members.iter().zip(&citizen_refs).enumerate() {
                if store::member_exists(transaction, citizen_ref).await? {
                    return Err(WelfareError::AlreadyMember {
                        who: format!("member {}", index + 1),
                    });
                }
                store::insert_member(
                    transaction,
                    citizen_ref,
                    nik.as_str(),
                    &household_ref,
                    kelurahan.code(),
                )
                .await?;
            }
            let event = pb::HouseholdRegistered {
                household_ref: household_ref.clone(),
                kelurahan_code: kelurahan.code().to_owned(),
                member_count: u32::try_from(members.len()).unwrap_or(u32::MAX),
            };
            outbox::enqueue(transaction, &self.publisher.encode(&event, causality)?).await?;
            Ok(pb::RegisterHouseholdResponse { household_ref })
        })
        .await
    }

    /// Records a household's desil; PKH benefits of a household reassessed into desil 5 or
    /// above are suspended pending verification.
    pub async fn assess_household(
        &self,
        kk_number: &KkNumber,
        desil: Desil,
        idempotency: Option<IdempotentRequest<'_>>,
        causality: &Causality,
    ) -> Result<pb::AssessHouseholdResponse, WelfareError> {
        run_command(&self.db, &self.relay, idempotency, async |transaction| {
            let household = store::household_by_kk(transaction, kk_number.as_str())
                .await?
                .ok_or(WelfareError::HouseholdNotFound)?;
            store::set_desil(transaction, &household.household_ref, desil).await?;
            let event = pb::HouseholdAssessed {
                household_ref: household.household_ref.clone(),
                desil: u32::from(desil.value()),
                previous_desil: household
                    .desil
                    .map_or(0, |previous| u32::from(previous.value())),
                kelurahan_code: household.kelurahan_code.clone(),
            };
            outbox::enqueue(transaction, &self.publisher.encode(&event, causality)?).await?;
            let mut suspended = Vec::new();
            for benefit in
                store::active_benefits_of_household(transaction, &household.household_ref).await?
            {
                if let Some(reason) = reassessment_suspends(benefit.programme, desil) {
                    self.suspend(transaction, &benefit, &reason, causality)
                        .await?;
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
        nik: &Nik,
        programme: Programme,
        idempotency: Option<IdempotentRequest<'_>>,
        causality: &Causality,
    ) -> Result<pb::ApplyForProgrammeResponse, WelfareError> {
        if let Some(stored) =
            stored_response::<_, WelfareError>(&self.db, idempotency.as_ref()).await?
        {
            return Ok(stored);
        }
        let who = "the applicant".to_owned();
        match self.identity.verify(nik).await? {
            Verified::Living { .. } => {}
            Verified::Deceased => return Err(WelfareError::Deceased { who }),
            Verified::Unknown => return Err(WelfareError::NotInRegister { who }),
        }
        run_command(&self.db, &self.relay, idempotency, async |transaction| {
            let member = store::member_by_nik(transaction, nik.as_str())
                .await?
                .ok_or(WelfareError::NotAMember)?;
            let household = store::household_by_ref(transaction, &member.household_ref)
                .await?
                .ok_or(WelfareError::NotAMember)?;
            let desil = household.desil.ok_or(WelfareError::NotAssessed)?;
            let current = store::benefits_of(transaction, &member.citizen_ref).await?;
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
            store::insert_benefit(transaction, &benefit, &household.household_ref).await?;
            let event = match status {
                BenefitStatus::Active => self.publisher.encode(
                    &pb::BenefitGranted {
                        benefit_ref: benefit_ref.clone(),
                        citizen_ref: member.citizen_ref,
                        household_ref: household.household_ref,
                        programme: programme.code().to_owned(),
                        desil: u32::from(desil.value()),
                        kelurahan_code: member.kelurahan_code,
                    },
                    causality,
                )?,
                _ => self.publisher.encode(
                    &pb::BenefitRefused {
                        benefit_ref: benefit_ref.clone(),
                        citizen_ref: member.citizen_ref,
                        programme: programme.code().to_owned(),
                        reason: reason.clone(),
                    },
                    causality,
                )?,
            };
            outbox::enqueue(transaction, &event).await?;
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
        let mut connection = self
            .db
            .pool()
            .acquire()
            .await
            .map_err(DbError::sql("acquiring a connection"))?;
        match store::member_by_nik(&mut connection, nik.as_str()).await? {
            None => Ok(Vec::new()),
            Some(member) => Ok(store::benefits_of(&mut connection, &member.citizen_ref).await?),
        }
    }

    /// `CitizenDeceased`: no payments to the dead. Suspends the person's active benefits.
    pub async fn on_citizen_deceased(
        &self,
        event: identity::CitizenDeceased,
        meta: EventMeta,
    ) -> Result<(), HandleError> {
        let causality = Causality::following(&meta);
        handle_once(&self.db, &self.relay, &meta, async |transaction| {
            if !store::mark_member_deceased(transaction, &event.citizen_ref)
                .await
                .map_err(handle_error)?
            {
                return Ok(());
            }
            let benefits = store::benefits_of(transaction, &event.citizen_ref)
                .await
                .map_err(handle_error)?;
            for benefit in benefits
                .iter()
                .filter(|b| b.status == BenefitStatus::Active)
            {
                self.suspend(transaction, benefit, "recipient deceased", &causality)
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
        handle_once(&self.db, &self.relay, &meta, async |transaction| {
            store::move_member(transaction, &event.citizen_ref, &event.to_kelurahan_code)
                .await
                .map_err(handle_error)?;
            Ok(())
        })
        .await
    }

    async fn suspend(
        &self,
        transaction: &mut AnyConnection,
        benefit: &StoredBenefit,
        reason: &str,
        causality: &Causality,
    ) -> Result<(), WelfareError> {
        store::suspend(transaction, &benefit.benefit_ref, reason).await?;
        let event = pb::BenefitSuspended {
            benefit_ref: benefit.benefit_ref.clone(),
            citizen_ref: benefit.citizen_ref.clone(),
            programme: benefit.programme.code().to_owned(),
            reason: reason.to_owned(),
        };
        outbox::enqueue(transaction, &self.publisher.encode(&event, causality)?).await?;
        tracing::info!(
            message = "Benefit suspended.",
            benefit_ref = %benefit.benefit_ref,
            programme = benefit.programme.code(),
            %reason,
        );
        Ok(())
    }
}
