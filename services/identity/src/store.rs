//! The `citizens` table.

use govbus_storage::time::now_micros;
use govbus_storage::{DbError, Migration, Sql};
use time::Date;

use crate::domain::{NewCitizen, Nik, PersonName};
use govbus_civil::{format_date, past_date};

/// The identity service's migrations.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "citizens",
        sqlite: CITIZENS,
        postgres: CITIZENS,
    },
    Migration {
        version: 2,
        description: "citizens kept in NIK order (SQLite)",
        sqlite: CITIZENS_BY_NIK,
        postgres: "-- PostgreSQL reads a citizen through the NIK's index as it is.",
    },
];

const CITIZENS: &str = "
    CREATE TABLE citizens (
        citizen_ref TEXT PRIMARY KEY,
        nik TEXT NOT NULL UNIQUE,
        kk_number TEXT NOT NULL,
        full_name TEXT NOT NULL,
        birth_place TEXT NOT NULL,
        birth_date TEXT NOT NULL,
        sex TEXT NOT NULL,
        street TEXT NOT NULL,
        kelurahan_code TEXT NOT NULL,
        date_of_death TEXT,
        registered_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX citizens_kk_number ON citizens (kk_number);
";

/// Almost every read of the register asks for one NIK (`VerifyCitizen` above all, and every
/// command about a person). Kept in rowid order, such a read goes down the NIK's index and
/// then down the table, two page reads that miss the cache in a register of a million; kept in
/// NIK order (`WITHOUT ROWID`, the rows are small), it goes down the table once. The copy
/// takes a few seconds per million citizens, once.
const CITIZENS_BY_NIK: &str = "
    CREATE TABLE citizens_by_nik (
        nik TEXT PRIMARY KEY,
        citizen_ref TEXT NOT NULL UNIQUE,
        kk_number TEXT NOT NULL,
        full_name TEXT NOT NULL,
        birth_place TEXT NOT NULL,
        birth_date TEXT NOT NULL,
        sex TEXT NOT NULL,
        street TEXT NOT NULL,
        kelurahan_code TEXT NOT NULL,
        date_of_death TEXT,
        registered_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO citizens_by_nik (nik, citizen_ref, kk_number, full_name, birth_place, birth_date,
                                 sex, street, kelurahan_code, date_of_death, registered_at,
                                 updated_at)
        SELECT nik, citizen_ref, kk_number, full_name, birth_place, birth_date, sex, street,
               kelurahan_code, date_of_death, registered_at, updated_at
        FROM citizens;
    DROP TABLE citizens;
    ALTER TABLE citizens_by_nik RENAME TO citizens;
    CREATE INDEX citizens_kk_number ON citizens (kk_number);
";

/// What the register keeps of a citizen that commands need.
#[derive(Debug, Clone)]
pub struct StoredCitizen {
    /// Pseudonymous reference.
    pub citizen_ref: String,
    /// Full name.
    pub full_name: PersonName,
    /// Date of birth.
    pub birth_date: Date,
    /// Current kelurahan.
    pub kelurahan_code: String,
    /// Whether a death is recorded.
    pub deceased: bool,
}

type CitizenRow = (String, String, String, String, Option<String>);

const CITIZEN_BY_NIK: &str =
    "SELECT citizen_ref, full_name, birth_date, kelurahan_code, date_of_death
     FROM citizens WHERE nik = $1";

/// The citizen with this NIK, if registered.
pub async fn find_by_nik(sql: &mut Sql<'_>, nik: &Nik) -> Result<Option<StoredCitizen>, DbError> {
    let row: Option<CitizenRow> = sql
        .query_opt(CITIZEN_BY_NIK, &[nik.as_str().into()])
        .await?;
    row.map(citizen).transpose()
}

/// The citizen with this NIK, locked until the command commits: a command that changes the
/// citizen reads it this way, so that concurrent commands about one person (in other processes
/// too) act one after the other, each on what the previous one left.
pub async fn find_by_nik_for_update(
    sql: &mut Sql<'_>,
    nik: &Nik,
) -> Result<Option<StoredCitizen>, DbError> {
    let row: Option<CitizenRow> = sql
        .query_opt_for_update(CITIZEN_BY_NIK, &[nik.as_str().into()])
        .await?;
    row.map(citizen).transpose()
}

fn citizen(row: CitizenRow) -> Result<StoredCitizen, DbError> {
    let (citizen_ref, full_name, birth_date, kelurahan_code, date_of_death) = row;
    let corrupt = |what| DbError::corrupt("reading a citizen", what);
    Ok(StoredCitizen {
        citizen_ref,
        full_name: PersonName::parse(&full_name).map_err(|_| corrupt("full_name"))?,
        birth_date: past_date(&birth_date).map_err(|_| corrupt("birth_date"))?,
        kelurahan_code,
        deceased: date_of_death.is_some(),
    })
}

/// Inserts a new citizen; false when the NIK is registered already (also by a concurrent
/// command, whose commit this one then waits for).
pub async fn insert(
    sql: &mut Sql<'_>,
    citizen_ref: &str,
    citizen: &NewCitizen,
) -> Result<bool, DbError> {
    let now = now_micros();
    let birth_date = format_date(citizen.birth_date);
    let inserted = sql
        .execute(
            "INSERT INTO citizens (citizen_ref, nik, kk_number, full_name, birth_place, birth_date,
                                   sex, street, kelurahan_code, registered_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (nik) DO NOTHING",
            &[
                citizen_ref.into(),
                citizen.nik.as_str().into(),
                citizen.kk_number.as_str().into(),
                citizen.full_name.as_str().into(),
                citizen.birth_place.as_str().into(),
                birth_date.as_str().into(),
                citizen.sex.as_str().into(),
                citizen.street.as_str().into(),
                citizen.kelurahan.code().into(),
                now.into(),
                now.into(),
            ],
        )
        .await?;
    Ok(inserted == 1)
}

/// Changes a citizen's address.
pub async fn update_address(
    sql: &mut Sql<'_>,
    citizen_ref: &str,
    street: &str,
    kelurahan_code: &str,
) -> Result<(), DbError> {
    sql.execute(
        "UPDATE citizens SET street = $1, kelurahan_code = $2, updated_at = $3 WHERE citizen_ref = $4",
        &[
            street.into(),
            kelurahan_code.into(),
            now_micros().into(),
            citizen_ref.into(),
        ],
    )
    .await?;
    Ok(())
}

/// Records a death.
pub async fn mark_deceased(
    sql: &mut Sql<'_>,
    citizen_ref: &str,
    date_of_death: Date,
) -> Result<(), DbError> {
    let date = format_date(date_of_death);
    sql.execute(
        "UPDATE citizens SET date_of_death = $1, updated_at = $2 WHERE citizen_ref = $3",
        &[
            date.as_str().into(),
            now_micros().into(),
            citizen_ref.into(),
        ],
    )
    .await?;
    Ok(())
}
