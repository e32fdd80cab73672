//! The `applications` table.

use govbus_kit::db::now_micros;
use govbus_kit::{DbError, Migration};
use sqlx::AnyConnection;

use crate::domain::{RiskLevel, Stage, Status};

/// The licensing service's migrations.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "applications",
    sqlite: TABLES,
    postgres: TABLES,
}];

const TABLES: &str = "
    CREATE TABLE applications (
        application_ref TEXT PRIMARY KEY,
        applicant_ref TEXT NOT NULL,
        business_name TEXT NOT NULL,
        kbli_code TEXT NOT NULL,
        kelurahan_code TEXT NOT NULL,
        risk_level TEXT NOT NULL,
        nib TEXT NOT NULL UNIQUE,
        document TEXT NOT NULL,
        status TEXT NOT NULL,
        stage TEXT,
        due_at BIGINT,
        decided_at BIGINT,
        decision_reason TEXT NOT NULL DEFAULT '',
        flagged_for_review BIGINT NOT NULL DEFAULT 0,
        flag_reason TEXT NOT NULL DEFAULT '',
        submitted_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX applications_due ON applications (due_at) WHERE status = 'pending';
    CREATE INDEX applications_applicant ON applications (applicant_ref);
";

/// A stored application.
#[derive(Debug, Clone)]
pub struct StoredApplication {
    /// Reference.
    pub application_ref: String,
    /// Applicant's pseudonymous reference.
    pub applicant_ref: String,
    /// KBLI code.
    pub kbli_code: String,
    /// Location.
    pub kelurahan_code: String,
    /// Risk level.
    pub risk_level: RiskLevel,
    /// NIB.
    pub nib: String,
    /// The document the level requires.
    pub document: String,
    /// Status.
    pub status: Status,
    /// Waiting stage, if pending.
    pub stage: Option<Stage>,
    /// Deadline (microseconds since the epoch), if pending.
    pub due_at: Option<i64>,
    /// Reason of a refusal.
    pub decision_reason: String,
    /// Flagged for review.
    pub flagged_for_review: bool,
    /// Why.
    pub flag_reason: String,
}

type Row = (
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
    String,
    i64,
    String,
);

const COLUMNS: &str =
    "application_ref, applicant_ref, kbli_code, kelurahan_code, risk_level, nib, document,
                       status, stage, due_at, decision_reason, flagged_for_review, flag_reason";

fn application(row: Row) -> Result<StoredApplication, DbError> {
    let corrupt = |what: &str| DbError::Sql {
        context: "reading an application",
        source: sqlx::Error::Decode(format!("stored {what} is invalid").into()),
    };
    let (
        application_ref,
        applicant_ref,
        kbli_code,
        kelurahan_code,
        risk_level,
        nib,
        document,
        status,
        stage,
        due_at,
        decision_reason,
        flagged,
        flag_reason,
    ) = row;
    Ok(StoredApplication {
        application_ref,
        applicant_ref,
        kbli_code,
        kelurahan_code,
        risk_level: RiskLevel::from_stored(&risk_level).ok_or_else(|| corrupt("risk_level"))?,
        nib,
        document,
        status: Status::from_stored(&status).ok_or_else(|| corrupt("status"))?,
        stage: match stage {
            None => None,
            Some(stage) => Some(Stage::from_stored(&stage).ok_or_else(|| corrupt("stage"))?),
        },
        due_at,
        decision_reason,
        flagged_for_review: flagged != 0,
        flag_reason,
    })
}

/// Inserts a new application.
pub async fn insert(
    connection: &mut AnyConnection,
    application: &StoredApplication,
    business_name: &str,
) -> Result<(), DbError> {
    let now = now_micros();
    sqlx::query(
        "INSERT INTO applications (application_ref, applicant_ref, business_name, kbli_code,
             kelurahan_code, risk_level, nib, document, status, stage, due_at, decided_at,
             submitted_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&application.application_ref)
    .bind(&application.applicant_ref)
    .bind(business_name)
    .bind(&application.kbli_code)
    .bind(&application.kelurahan_code)
    .bind(application.risk_level.as_str())
    .bind(&application.nib)
    .bind(&application.document)
    .bind(application.status.as_str())
    .bind(application.stage.map(Stage::as_str))
    .bind(application.due_at)
    .bind((application.status != crate::domain::Status::Pending).then_some(now))
    .bind(now)
    .bind(now)
    .execute(connection)
    .await
    .map_err(DbError::sql("storing an application"))?;
    Ok(())
}

/// The application with this reference.
pub async fn find(
    connection: &mut AnyConnection,
    application_ref: &str,
) -> Result<Option<StoredApplication>, DbError> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM applications WHERE application_ref = $1"
    )))
    .bind(application_ref)
    .fetch_optional(connection)
    .await
    .map_err(DbError::sql("reading an application"))?;
    row.map(application).transpose()
}

/// Whether a NIB is taken.
pub async fn nib_taken(connection: &mut AnyConnection, nib: &str) -> Result<bool, DbError> {
    let row: Option<(String,)> = sqlx::query_as("SELECT nib FROM applications WHERE nib = $1")
        .bind(nib)
        .fetch_optional(connection)
        .await
        .map_err(DbError::sql("checking a NIB"))?;
    Ok(row.is_some())
}

/// Pending applications whose deadline passed, oldest deadline first.
pub async fn overdue(
    connection: &mut AnyConnection,
    now: i64,
    limit: i64,
) -> Result<Vec<StoredApplication>, DbError> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM applications WHERE status = 'pending' AND due_at <= $1
         ORDER BY due_at LIMIT $2"
    )))
    .bind(now)
    .bind(limit)
    .fetch_all(connection)
    .await
    .map_err(DbError::sql("reading overdue applications"))?;
    rows.into_iter().map(application).collect()
}

/// An applicant's applications.
pub async fn of_applicant(
    connection: &mut AnyConnection,
    applicant_ref: &str,
) -> Result<Vec<StoredApplication>, DbError> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM applications WHERE applicant_ref = $1 ORDER BY submitted_at"
    )))
    .bind(applicant_ref)
    .fetch_all(connection)
    .await
    .map_err(DbError::sql("reading an applicant's applications"))?;
    rows.into_iter().map(application).collect()
}

/// Records a decision on a pending application; false if it was no longer pending.
pub async fn decide(
    connection: &mut AnyConnection,
    application_ref: &str,
    status: Status,
    reason: &str,
) -> Result<bool, DbError> {
    let now = now_micros();
    let result = sqlx::query(
        "UPDATE applications SET status = $1, decision_reason = $2, decided_at = $3, updated_at = $4
         WHERE application_ref = $5 AND status = 'pending'",
    )
    .bind(status.as_str())
    .bind(reason)
    .bind(now)
    .bind(now)
    .bind(application_ref)
    .execute(connection)
    .await
    .map_err(DbError::sql("recording a decision"))?;
    Ok(result.rows_affected() == 1)
}

/// Flags an application for review.
pub async fn flag(
    connection: &mut AnyConnection,
    application_ref: &str,
    reason: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE applications SET flagged_for_review = 1, flag_reason = $1, updated_at = $2
         WHERE application_ref = $3",
    )
    .bind(reason)
    .bind(now_micros())
    .bind(application_ref)
    .execute(connection)
    .await
    .map_err(DbError::sql("flagging an application"))?;
    Ok(())
}
