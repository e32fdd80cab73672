//! The welfare tables: households, members, benefits.

use govbus_storage::time::now_micros;
use govbus_storage::{DbError, Migration, Sql};

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
    sql: &mut Sql<'_>,
    kk_number: &str,
) -> Result<Option<Household>, DbError> {
    let row: Option<HouseholdRow> = sql
        .query_opt(
            "SELECT household_ref, kelurahan_code, desil FROM households WHERE kk_number = $1",
            &[kk_number.into()],
        )
        .await?;
    Ok(row.map(household))
}

/// The household with this KK number, locked until the command commits (see
/// [`Sql::query_opt_for_update`]).
pub async fn household_by_kk_for_update(
    sql: &mut Sql<'_>,
    kk_number: &str,
) -> Result<Option<Household>, DbError> {
    let row: Option<HouseholdRow> = sql
        .query_opt_for_update(
            "SELECT household_ref, kelurahan_code, desil FROM households WHERE kk_number = $1",
            &[kk_number.into()],
        )
        .await?;
    Ok(row.map(household))
}

/// The household with this reference.
pub async fn household_by_ref(
    sql: &mut Sql<'_>,
    household_ref: &str,
) -> Result<Option<Household>, DbError> {
    let row: Option<HouseholdRow> = sql
        .query_opt(
            "SELECT household_ref, kelurahan_code, desil FROM households WHERE household_ref = $1",
            &[household_ref.into()],
        )
        .await?;
    Ok(row.map(household))
}

/// Inserts a household; false when its KK number is registered already.
pub async fn insert_household(
    sql: &mut Sql<'_>,
    household_ref: &str,
    kk_number: &str,
    kelurahan_code: &str,
) -> Result<bool, DbError> {
    let now = now_micros();
    let inserted = sql
        .execute(
            "INSERT INTO households (household_ref, kk_number, kelurahan_code, registered_at, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (kk_number) DO NOTHING",
            &[
                household_ref.into(),
                kk_number.into(),
                kelurahan_code.into(),
                now.into(),
                now.into(),
            ],
        )
        .await?;
    Ok(inserted == 1)
}

/// Records an assessment.
pub async fn set_desil(
    sql: &mut Sql<'_>,
    household_ref: &str,
    desil: Desil,
) -> Result<(), DbError> {
    let now = now_micros();
    sql.execute(
        "UPDATE households SET desil = $1, assessed_at = $2, updated_at = $3 WHERE household_ref = $4",
        &[
            i64::from(desil.value()).into(),
            now.into(),
            now.into(),
            household_ref.into(),
        ],
    )
    .await?;
    Ok(())
}

const MEMBER_BY_NIK: &str =
    "SELECT citizen_ref, household_ref, kelurahan_code FROM members WHERE nik = $1";

/// The member with this NIK, if any household has it.
pub async fn member_by_nik(sql: &mut Sql<'_>, nik: &str) -> Result<Option<Member>, DbError> {
    let row: Option<(String, String, String)> = sql.query_opt(MEMBER_BY_NIK, &[nik.into()]).await?;
    Ok(row.map(member))
}

/// The member with this NIK, locked until the command commits: applications of one person
/// are decided one after the other, each seeing the benefits the previous one granted.
pub async fn member_by_nik_for_update(
    sql: &mut Sql<'_>,
    nik: &str,
) -> Result<Option<Member>, DbError> {
    let row: Option<(String, String, String)> = sql
        .query_opt_for_update(MEMBER_BY_NIK, &[nik.into()])
        .await?;
    Ok(row.map(member))
}

fn member((citizen_ref, household_ref, kelurahan_code): (String, String, String)) -> Member {
    Member {
        citizen_ref,
        household_ref,
        kelurahan_code,
    }
}

/// Inserts a member; false when the citizen is a member of a household already.
pub async fn insert_member(
    sql: &mut Sql<'_>,
    citizen_ref: &str,
    nik: &str,
    household_ref: &str,
    kelurahan_code: &str,
) -> Result<bool, DbError> {
    let inserted = sql
        .execute(
            "INSERT INTO members (citizen_ref, nik, household_ref, kelurahan_code, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING",
            &[
                citizen_ref.into(),
                nik.into(),
                household_ref.into(),
                kelurahan_code.into(),
                now_micros().into(),
            ],
        )
        .await?;
    Ok(inserted == 1)
}

/// Marks a member deceased; false when welfare does not know the citizen.
pub async fn mark_member_deceased(sql: &mut Sql<'_>, citizen_ref: &str) -> Result<bool, DbError> {
    let changed = sql
        .execute(
            "UPDATE members SET deceased = 1, updated_at = $1 WHERE citizen_ref = $2",
            &[now_micros().into(), citizen_ref.into()],
        )
        .await?;
    Ok(changed > 0)
}

/// Moves a member; false when welfare does not know the citizen.
pub async fn move_member(
    sql: &mut Sql<'_>,
    citizen_ref: &str,
    kelurahan_code: &str,
) -> Result<bool, DbError> {
    let changed = sql
        .execute(
            "UPDATE members SET kelurahan_code = $1, updated_at = $2 WHERE citizen_ref = $3",
            &[
                kelurahan_code.into(),
                now_micros().into(),
                citizen_ref.into(),
            ],
        )
        .await?;
    Ok(changed > 0)
}

type BenefitRow = (String, String, String, String, String);

fn benefit(row: BenefitRow) -> Result<StoredBenefit, DbError> {
    let (benefit_ref, citizen_ref, programme, status, reason) = row;
    let corrupt = |what| DbError::corrupt("reading a benefit", what);
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
    sql: &mut Sql<'_>,
    citizen_ref: &str,
) -> Result<Vec<StoredBenefit>, DbError> {
    let rows: Vec<BenefitRow> = sql
        .query_all(
            "SELECT benefit_ref, citizen_ref, programme, status, reason FROM benefits
             WHERE citizen_ref = $1 ORDER BY decided_at, benefit_ref",
            &[citizen_ref.into()],
        )
        .await?;
    rows.into_iter().map(benefit).collect()
}

/// The active benefits of a household's members.
pub async fn active_benefits_of_household(
    sql: &mut Sql<'_>,
    household_ref: &str,
) -> Result<Vec<StoredBenefit>, DbError> {
    let rows: Vec<BenefitRow> = sql
        .query_all(
            "SELECT benefit_ref, citizen_ref, programme, status, reason FROM benefits
             WHERE household_ref = $1 AND status = 'active' ORDER BY decided_at, benefit_ref",
            &[household_ref.into()],
        )
        .await?;
    rows.into_iter().map(benefit).collect()
}

/// Inserts a decided application.
pub async fn insert_benefit(
    sql: &mut Sql<'_>,
    benefit: &StoredBenefit,
    household_ref: &str,
) -> Result<(), DbError> {
    let now = now_micros();
    sql.execute(
        "INSERT INTO benefits (benefit_ref, citizen_ref, household_ref, programme, status, reason,
                               decided_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            benefit.benefit_ref.as_str().into(),
            benefit.citizen_ref.as_str().into(),
            household_ref.into(),
            benefit.programme.code().into(),
            benefit.status.as_str().into(),
            benefit.reason.as_str().into(),
            now.into(),
            now.into(),
        ],
    )
    .await?;
    Ok(())
}

/// Suspends an active benefit with its reason; false when it was no longer active (a
/// concurrent command suspended it first), so that it is suspended, and announced, once.
pub async fn suspend(sql: &mut Sql<'_>, benefit_ref: &str, reason: &str) -> Result<bool, DbError> {
    let changed = sql
        .execute(
            "UPDATE benefits SET status = 'suspended', reason = $1, updated_at = $2
             WHERE benefit_ref = $3 AND status = 'active'",
            &[reason.into(), now_micros().into(), benefit_ref.into()],
        )
        .await?;
    Ok(changed == 1)
}
