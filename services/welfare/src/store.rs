//! The welfare tables: households, members, benefits.

use govbus_kit::db::now_micros;
use govbus_kit::{DbError, Migration};
use sqlx::AnyConnection;

use crate::domain::{BenefitStatus, Desil, Programme};

/// The welfare service's migrations.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "households, members, benefits",
    sqlite: TABLES,
    postgres: TABLES,
}];

const TABLES: &str = "
    CREATE TABLE households (
        household_ref TEXT PRIMARY KEY,
        kk_number TEXT NOT NULL UNIQUE,
        kelurahan_code TEXT NOT NULL,
        desil BIGINT,
        assessed_at BIGINT,
        registered_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE members (
        citizen_ref TEXT PRIMARY KEY,
        nik TEXT NOT NULL UNIQUE,
        household_ref TEXT NOT NULL REFERENCES households (household_ref),
        kelurahan_code TEXT NOT NULL,
        deceased BIGINT NOT NULL DEFAULT 0,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX members_household ON members (household_ref);
    CREATE TABLE benefits (
        benefit_ref TEXT PRIMARY KEY,
        citizen_ref TEXT NOT NULL,
        household_ref TEXT NOT NULL,
        programme TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL,
        decided_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX benefits_citizen ON benefits (citizen_ref);
    CREATE INDEX benefits_household ON benefits (household_ref);
";

/// A household.
#[derive(Debug, Clone)]
pub struct Household {
    /// Reference.
    pub household_ref: String,
    /// Kelurahan.
    pub kelurahan_code: String,
    /// Latest desil, if assessed.
    pub desil: Option<Desil>,
}

/// A household member.
#[derive(Debug, Clone)]
pub struct Member {
    /// Identity's reference.
    pub citizen_ref: String,
    /// Household.
    pub household_ref: String,
    /// Kelurahan.
    pub kelurahan_code: String,
}

/// A benefit.
#[derive(Debug, Clone)]
pub struct StoredBenefit {
    /// Reference.
    pub benefit_ref: String,
    /// Recipient.
    pub citizen_ref: String,
    /// Programme.
    pub programme: Programme,
    /// Status.
    pub status: BenefitStatus,
    /// Reason of the status (refusal or suspension).
    pub reason: String,
}

type HouseholdRow = (String, String, Option<i64>);

fn household(row: HouseholdRow) -> Household {
    let (household_ref, kelurahan_code, desil) = row;
    Household {
        household_ref,
        kelurahan_code,
        desil: desil
            .and_then(|value| u32::try_from(value).ok())
            .and_then(|value| Desil::parse(value).ok()),
    }
}

/// The household with this KK number.
pub async fn household_by_kk(
    connection: &mut AnyConnection,
    kk_number: &str,
) -> Result<Option<Household>, DbError> {
    let row: Option<HouseholdRow> = sqlx::query_as(
        "SELECT household_ref, kelurahan_code, desil FROM households WHERE kk_number = $1",
    )
    .bind(kk_number)
    .fetch_optional(connection)
    .await
    .map_err(DbError::sql("reading a household"))?;
    Ok(row.map(household))
}

/// The household with this reference.
pub async fn household_by_ref(
    connection: &mut AnyConnection,
    household_ref: &str,
) -> Result<Option<Household>, DbError> {
    let row: Option<HouseholdRow> = sqlx::query_as(
        "SELECT household_ref, kelurahan_code, desil FROM households WHERE household_ref = $1",
    )
    .bind(household_ref)
    .fetch_optional(connection)
    .await
    .map_err(DbError::sql("reading a household"))?;
    Ok(row.map(household))
}

/// Inserts a household.
pub async fn insert_household(
    connection: &mut AnyConnection,
    household_ref: &str,
    kk_number: &str,
    kelurahan_code: &str,
) -> Result<(), DbError> {
    let now = now_micros();
    sqlx::query(
        "INSERT INTO households (household_ref, kk_number, kelurahan_code, registered_at, updated_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(household_ref)
    .bind(kk_number)
    .bind(kelurahan_code)
    .bind(now)
    .bind(now)
    .execute(connection)
    .await
    .map_err(DbError::sql("registering a household"))?;
    Ok(())
}

/// Records an assessment.
pub async fn set_desil(
    connection: &mut AnyConnection,
    household_ref: &str,
    desil: Desil,
) -> Result<(), DbError> {
    let now = now_micros();
    sqlx::query("UPDATE households SET desil = $1, assessed_at = $2, updated_at = $3 WHERE household_ref = $4")
        .bind(i64::from(desil.value()))
        .bind(now)
        .bind(now)
        .bind(household_ref)
        .execute(connection)
        .await
        .map_err(DbError::sql("recording an assessment"))?;
    Ok(())
}

/// Whether a NIK belongs to a member of any household.
pub async fn member_by_nik(
    connection: &mut AnyConnection,
    nik: &str,
) -> Result<Option<Member>, DbError> {
    let row: Option<(String, String, String)> = sqlx::query_as(
        "SELECT citizen_ref, household_ref, kelurahan_code FROM members WHERE nik = $1",
    )
    .bind(nik)
    .fetch_optional(connection)
    .await
    .map_err(DbError::sql("reading a member"))?;
    Ok(
        row.map(|(citizen_ref, household_ref, kelurahan_code)| Member {
            citizen_ref,
            household_ref,
            kelurahan_code,
        }),
    )
}

/// Whether a citizen is a member of any household.
pub async fn member_exists(
    connection: &mut AnyConnection,
    citizen_ref: &str,
) -> Result<bool, DbError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT citizen_ref FROM members WHERE citizen_ref = $1")
            .bind(citizen_ref)
            .fetch_optional(connection)
            .await
            .map_err(DbError::sql("reading a member"))?;
    Ok(row.is_some())
}

/// Inserts a member.
pub async fn insert_member(
    connection: &mut AnyConnection,
    citizen_ref: &str,
    nik: &str,
    household_ref: &str,
    kelurahan_code: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO members (citizen_ref, nik, household_ref, kelurahan_code, updated_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(citizen_ref)
    .bind(nik)
    .bind(household_ref)
    .bind(kelurahan_code)
    .bind(now_micros())
    .execute(connection)
    .await
    .map_err(DbError::sql("registering a member"))?;
    Ok(())
}

/// Marks a member deceased; false when welfare does not know the citizen.
pub async fn mark_member_deceased(
    connection: &mut AnyConnection,
    citizen_ref: &str,
) -> Result<bool, DbError> {
    let result =
        sqlx::query("UPDATE members SET deceased = 1, updated_at = $1 WHERE citizen_ref = $2")
            .bind(now_micros())
            .bind(citizen_ref)
            .execute(connection)
            .await
            .map_err(DbError::sql("recording a member's death"))?;
    Ok(result.rows_affected() > 0)
}

/// Moves a member; false when welfare does not know the citizen.
pub async fn move_member(
    connection: &mut AnyConnection,
    citizen_ref: &str,
    kelurahan_code: &str,
) -> Result<bool, DbError> {
    let result = sqlx::query(
        "UPDATE members SET kelurahan_code = $1, updated_at = $2 WHERE citizen_ref = $3",
    )
    .bind(kelurahan_code)
    .bind(now_micros())
    .bind(citizen_ref)
    .execute(connection)
    .await
    .map_err(DbError::sql("updating a member's address"))?;
    Ok(result.rows_affected() > 0)
}

type BenefitRow = (String, String, String, String, String);

fn benefit(row: BenefitRow) -> Result<StoredBenefit, DbError> {
    let (benefit_ref, citizen_ref, programme, status, reason) = row;
    let corrupt = |what: &str| DbError::Sql {
        context: "reading a benefit",
        source: sqlx::Error::Decode(format!("stored {what} is invalid").into()),
    };
    Ok(StoredBenefit {
        benefit_ref,
        citizen_ref,
        programme: Programme::from_code(&programme).ok_or_else(|| corrupt("programme"))?,
        status: BenefitStatus::from_stored(&status).ok_or_else(|| corrupt("status"))?,
        reason,
    })
}

/// A citizen's benefits, oldest first.
pub async fn benefits_of(
    connection: &mut AnyConnection,
    citizen_ref: &str,
) -> Result<Vec<StoredBenefit>, DbError> {
    let rows: Vec<BenefitRow> = sqlx::query_as(
        "SELECT benefit_ref, citizen_ref, programme, status, reason FROM benefits
         WHERE citizen_ref = $1 ORDER BY decided_at, benefit_ref",
    )
    .bind(citizen_ref)
    .fetch_all(connection)
    .await
    .map_err(DbError::sql("listing benefits"))?;
    rows.into_iter().map(benefit).collect()
}

/// The active benefits of a household's members.
pub async fn active_benefits_of_household(
    connection: &mut AnyConnection,
    household_ref: &str,
) -> Result<Vec<StoredBenefit>, DbError> {
    let rows: Vec<BenefitRow> = sqlx::query_as(
        "SELECT benefit_ref, citizen_ref, programme, status, reason FROM benefits
         WHERE household_ref = $1 AND status = 'active' ORDER BY decided_at, benefit_ref",
    )
    .bind(household_ref)
    .fetch_all(connection)
    .await
    .map_err(DbError::sql("listing a household's benefits"))?;
    rows.into_iter().map(benefit).collect()
}

/// Inserts a decided application.
pub async fn insert_benefit(
    connection: &mut AnyConnection,
    benefit: &StoredBenefit,
    household_ref: &str,
) -> Result<(), DbError> {
    let now = now_micros();
    sqlx::query(
        "INSERT INTO benefits (benefit_ref, citizen_ref, household_ref, programme, status, reason,
                               decided_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&benefit.benefit_ref)
    .bind(&benefit.citizen_ref)
    .bind(household_ref)
    .bind(benefit.programme.code())
    .bind(benefit.status.as_str())
    .bind(&benefit.reason)
    .bind(now)
    .bind(now)
    .execute(connection)
    .await
    .map_err(DbError::sql("recording a decision"))?;
    Ok(())
}

/// Suspends a benefit with its reason.
pub async fn suspend(
    connection: &mut AnyConnection,
    benefit_ref: &str,
    reason: &str,
) -> Result<(), DbError> {
    sqlx::query("UPDATE benefits SET status = 'suspended', reason = $1, updated_at = $2 WHERE benefit_ref = $3")
        .bind(reason)
        .bind(now_micros())
        .bind(benefit_ref)
        .execute(connection)
        .await
        .map_err(DbError::sql("suspending a benefit"))?;
    Ok(())
}
