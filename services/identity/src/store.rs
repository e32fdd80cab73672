//! The `citizens` table.

use govbus_kit::db::now_micros;
use govbus_kit::{DbError, Migration};
use sqlx::AnyConnection;
use time::Date;

use crate::domain::{NewCitizen, Nik, PersonName};
use govbus_civil::{format_date, past_date};

/// The identity service's migrations.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "citizens",
    sqlite: CITIZENS,
    postgres: CITIZENS,
}];

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

/// The citizen with this NIK, if registered.
pub async fn find_by_nik(
    connection: &mut AnyConnection,
    nik: &Nik,
) -> Result<Option<StoredCitizen>, DbError> {
    let row: Option<(String, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT citizen_ref, full_name, birth_date, kelurahan_code, date_of_death
         FROM citizens WHERE nik = $1",
    )
    .bind(nik.as_str())
    .fetch_optional(connection)
    .await
    .map_err(DbError::sql("reading a citizen"))?;
    let Some((citizen_ref, full_name, birth_date, kelurahan_code, date_of_death)) = row else {
        return Ok(None);
    };
    let corrupt = |what: &str| DbError::Sql {
        context: "reading a citizen",
        source: sqlx::Error::Decode(format!("stored {what} is invalid").into()),
    };
    Ok(Some(StoredCitizen {
        citizen_ref,
        full_name: PersonName::parse(&full_name).map_err(|_| corrupt("full_name"))?,
        birth_date: past_date(&birth_date).map_err(|_| corrupt("birth_date"))?,
        kelurahan_code,
        deceased: date_of_death.is_some(),
    }))
}

/// Inserts a new citizen; a concurrent registration of the same NIK fails the unique index.
pub async fn insert(
    connection: &mut AnyConnection,
    citizen_ref: &str,
    citizen: &NewCitizen,
) -> Result<(), DbError> {
    let now = now_micros();
    sqlx::query(
        "INSERT INTO citizens (citizen_ref, nik, kk_number, full_name, birth_place, birth_date,
                               sex, street, kelurahan_code, registered_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(citizen_ref)
    .bind(citizen.nik.as_str())
    .bind(citizen.kk_number.as_str())
    .bind(citizen.full_name.as_str())
    .bind(&citizen.birth_place)
    .bind(format_date(citizen.birth_date))
    .bind(citizen.sex.as_str())
    .bind(&citizen.street)
    .bind(citizen.kelurahan.code())
    .bind(now)
    .bind(now)
    .execute(connection)
    .await
    .map_err(DbError::sql("registering a citizen"))?;
    Ok(())
}

/// Changes a citizen's address.
pub async fn update_address(
    connection: &mut AnyConnection,
    citizen_ref: &str,
    street: &str,
    kelurahan_code: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE citizens SET street = $1, kelurahan_code = $2, updated_at = $3 WHERE citizen_ref = $4",
    )
    .bind(street)
    .bind(kelurahan_code)
    .bind(now_micros())
    .bind(citizen_ref)
    .execute(connection)
    .await
    .map_err(DbError::sql("updating an address"))?;
    Ok(())
}

/// Records a death.
pub async fn mark_deceased(
    connection: &mut AnyConnection,
    citizen_ref: &str,
    date_of_death: Date,
) -> Result<(), DbError> {
    sqlx::query("UPDATE citizens SET date_of_death = $1, updated_at = $2 WHERE citizen_ref = $3")
        .bind(format_date(date_of_death))
        .bind(now_micros())
        .bind(citizen_ref)
        .execute(connection)
        .await
        .map_err(DbError::sql("recording a death"))?;
    Ok(())
}
