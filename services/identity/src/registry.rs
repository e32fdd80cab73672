//! The register's commands and queries: each command changes the database, stores its event in
//! the outbox and (when the client sent one) its idempotency key, in one transaction.

use govbus_bus::{Causality, PublishError, Publisher};
use govbus_proto::identity::v1 as pb;
use govbus_storage::command::run_command;
use govbus_storage::{Database, DbError, IdempotencyError, IdempotentRequest};
use time::Date;
use uuid::Uuid;

use crate::domain::{Kelurahan, NewCitizen, Nik, PersonName, Sex};
use crate::store;
use govbus_civil::format_date;

/// Why a command or query failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The NIK is registered already.
    #[error("a citizen with this NIK is already registered")]
    AlreadyRegistered,
    /// No citizen has this NIK.
    #[error("no citizen with this NIK is registered")]
    NotFound,
    /// The citizen's death is recorded.
    #[error("the citizen's death is already recorded")]
    Deceased,
    /// A relocation to where the citizen already lives.
    #[error("the citizen already lives in kelurahan {0}")]
    SameKelurahan(String),
    /// A date of death before the date of birth.
    #[error("date_of_death is before the citizen's date of birth")]
    DeathBeforeBirth,
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

impl From<IdempotencyError> for RegistryError {
    fn from(error: IdempotencyError) -> Self {
        match error {
            IdempotencyError::Db(error) => Self::Db(error),
            other => Self::Idempotency(other),
        }
    }
}

/// What `VerifyCitizen` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    /// A living citizen whose details agree.
    Match {
        /// The pseudonymous reference.
        citizen_ref: String,
    },
    /// A citizen whose details agree and who has died.
    Deceased {
        /// The pseudonymous reference.
        citizen_ref: String,
    },
    /// Unknown NIK, or details that disagree.
    NoMatch,
}

/// The population register.
#[derive(Debug, Clone)]
pub struct Registry {
    db: Database,
    publisher: Publisher,
}

impl Registry {
    /// A register over `db`, publishing through `publisher` via the outbox.
    pub fn new(db: Database, publisher: Publisher) -> Self {
        Self { db, publisher }
    }

    /// Registers a citizen and publishes `CitizenRegistered`.
    pub async fn register(
        &self,
        citizen: NewCitizen,
        warnings: Vec<String>,
        idempotency: Option<IdempotentRequest>,
        causality: Causality,
    ) -> Result<pb::RegisterCitizenResponse, RegistryError> {
        let publisher = self.publisher.clone();
        run_command(&self.db, idempotency, async move |tx| {
            let citizen_ref = Uuid::now_v7().to_string();
            if !store::insert(tx, &citizen_ref, &citizen).await? {
                return Err(RegistryError::AlreadyRegistered);
            }
            let event = pb::CitizenRegistered {
                citizen_ref: citizen_ref.clone(),
                kelurahan_code: citizen.kelurahan.code().to_owned(),
                birth_year: u32::try_from(citizen.birth_date.year()).unwrap_or(0),
                sex: proto_sex(citizen.sex).into(),
            };
            tx.enqueue(publisher.encode(&event, &causality)?);
            Ok(pb::RegisterCitizenResponse {
                citizen_ref,
                warnings: warnings.clone(),
            })
        })
        .await
    }

    /// Answers whether `nik` (and the name and birth date, where given) is a living citizen.
    pub async fn verify(
        &self,
        nik: &Nik,
        full_name: Option<&PersonName>,
        birth_date: Option<Date>,
    ) -> Result<Verification, RegistryError> {
        let mut sql = self.db.read().await?;
        let Some(citizen) = store::find_by_nik(&mut sql, nik).await? else {
            return Ok(Verification::NoMatch);
        };
        let name_agrees = full_name.is_none_or(|name| citizen.full_name.matches(name.as_str()));
        let date_agrees = birth_date.is_none_or(|date| date == citizen.birth_date);
        Ok(match (name_agrees && date_agrees, citizen.deceased) {
            (false, _) => Verification::NoMatch,
            (true, false) => Verification::Match {
                citizen_ref: citizen.citizen_ref,
            },
            (true, true) => Verification::Deceased {
                citizen_ref: citizen.citizen_ref,
            },
        })
    }

    /// Moves a living citizen to another kelurahan and publishes `CitizenRelocated`.
    pub async fn relocate(
        &self,
        nik: Nik,
        street: String,
        kelurahan: Kelurahan,
        idempotency: Option<IdempotentRequest>,
        causality: Causality,
    ) -> Result<pb::RecordRelocationResponse, RegistryError> {
        let publisher = self.publisher.clone();
        run_command(&self.db, idempotency, async move |tx| {
            let citizen = store::find_by_nik_for_update(tx, &nik)
                .await?
                .ok_or(RegistryError::NotFound)?;
            if citizen.deceased {
                return Err(RegistryError::Deceased);
            }
            if citizen.kelurahan_code == kelurahan.code() {
                return Err(RegistryError::SameKelurahan(citizen.kelurahan_code));
            }
            store::update_address(tx, &citizen.citizen_ref, &street, kelurahan.code()).await?;
            let event = pb::CitizenRelocated {
                citizen_ref: citizen.citizen_ref.clone(),
                from_kelurahan_code: citizen.kelurahan_code.clone(),
                to_kelurahan_code: kelurahan.code().to_owned(),
            };
            tx.enqueue(publisher.encode(&event, &causality)?);
            Ok(pb::RecordRelocationResponse {
                citizen_ref: citizen.citizen_ref,
                from_kelurahan_code: citizen.kelurahan_code,
                to_kelurahan_code: kelurahan.code().to_owned(),
            })
        })
        .await
    }

    /// Records a death and publishes `CitizenDeceased`.
    pub async fn record_death(
        &self,
        nik: Nik,
        date_of_death: Date,
        idempotency: Option<IdempotentRequest>,
        causality: Causality,
    ) -> Result<pb::RecordDeathResponse, RegistryError> {
        let publisher = self.publisher.clone();
        run_command(&self.db, idempotency, async move |tx| {
            let citizen = store::find_by_nik_for_update(tx, &nik)
                .await?
                .ok_or(RegistryError::NotFound)?;
            if citizen.deceased {
                return Err(RegistryError::Deceased);
            }
            if date_of_death < citizen.birth_date {
                return Err(RegistryError::DeathBeforeBirth);
            }
            store::mark_deceased(tx, &citizen.citizen_ref, date_of_death).await?;
            let event = pb::CitizenDeceased {
                citizen_ref: citizen.citizen_ref.clone(),
                date_of_death: format_date(date_of_death),
            };
            tx.enqueue(publisher.encode(&event, &causality)?);
            Ok(pb::RecordDeathResponse {
                citizen_ref: citizen.citizen_ref,
            })
        })
        .await
    }
}

fn proto_sex(sex: Sex) -> pb::Sex {
    match sex {
        Sex::Male => pb::Sex::Male,
        Sex::Female => pb::Sex::Female,
    }
}
