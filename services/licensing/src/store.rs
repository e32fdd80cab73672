//! The `applications` table.

use govbus_storage::time::now_micros;
use govbus_storage::{DbError, Migration, Sql};

use crate::domain::{RiskLevel, Stage, Status};

/// The licensing service's migrations.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "applications",
        sqlite: TABLES,
        postgres: TABLES,
    },
    Migration {
        version: 2,
        description: "deadlines counted into a year whose days off are not known yet",
        sqlite: PROVISIONAL,
        postgres: PROVISIONAL,
    },
    Migration {
        version: 3,
        description: "the working days a deadline was set with, to count it again with them",
        sqlite: PERIOD,
        postgres: PERIOD,
    },
    Migration {
        version: 4,
        description: "rejected applications' details erased after their retention period",
        sqlite: ERASED,
        postgres: ERASED,
    },
];

// When a rejected application's details (the business name, the document, the reasons) were
// erased after its retention period; NULL while they are kept.
const ERASED: &str = "
    ALTER TABLE applications ADD COLUMN details_erased_at BIGINT;
    CREATE INDEX applications_rejected ON applications (updated_at)
        WHERE details_erased_at IS NULL AND status = 'rejected';
";

const PERIOD: &str = "ALTER TABLE applications ADD COLUMN due_working_days BIGINT;";

const PROVISIONAL: &str =
    "ALTER TABLE applications ADD COLUMN due_provisional BIGINT NOT NULL DEFAULT 0;";

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
    /// Whether the deadline counted days of a year whose days off are not shipped yet.
    pub due_provisional: bool,
    /// The working days the deadline was set with (none for a clock-time deadline).
    pub due_working_days: Option<u32>,
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
    i64,
    Option<i64>,
    String,
    i64,
    String,
);

/// The columns of a [`Row`], in its order.
macro_rules! columns {
    () => {
        "application_ref, applicant_ref, kbli_code, kelurahan_code, risk_level, nib, document, \
         status, stage, due_at, due_provisional, due_working_days, decision_reason, flagged_for_review, \
         flag_reason"
    };
}

fn application(row: Row) -> Result<StoredApplication, DbError> {
    let corrupt = |what| DbError::corrupt("reading an application", what);
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
        due_provisional,
        due_working_days,
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
        due_provisional: due_provisional != 0,
        due_working_days: due_working_days.and_then(|days| u32::try_from(days).ok()),
        decision_reason,
        flagged_for_review: flagged != 0,
        flag_reason,
    })
}

/// Inserts a new application submitted at `now`; false when its NIB is taken (the caller draws
/// another).
pub async fn insert(
    sql: &mut Sql<'_>,
    application: &StoredApplication,
    business_name: &str,
    now: i64,
) -> Result<bool, DbError> {
    let decided_at = (application.status != crate::domain::Status::Pending).then_some(now);
    let inserted = sql
        .execute(
            "INSERT INTO applications (application_ref, applicant_ref, business_name, kbli_code,
                 kelurahan_code, risk_level, nib, document, status, stage, due_at, due_provisional,
                 due_working_days, decided_at, submitted_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
             ON CONFLICT (nib) DO NOTHING",
            &[
                application.application_ref.as_str().into(),
                application.applicant_ref.as_str().into(),
                business_name.into(),
                application.kbli_code.as_str().into(),
                application.kelurahan_code.as_str().into(),
                application.risk_level.as_str().into(),
                application.nib.as_str().into(),
                application.document.as_str().into(),
                application.status.as_str().into(),
                application.stage.map(Stage::as_str).into(),
                application.due_at.into(),
                i64::from(application.due_provisional).into(),
                application.due_working_days.map(i64::from).into(),
                decided_at.into(),
                now.into(),
                now.into(),
            ],
        )
        .await?;
    Ok(inserted == 1)
}

const APPLICATION: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM applications WHERE application_ref = $1"
);

/// The application with this reference.
pub async fn find(
    sql: &mut Sql<'_>,
    application_ref: &str,
) -> Result<Option<StoredApplication>, DbError> {
    let row: Option<Row> = sql
        .query_opt(APPLICATION, &[application_ref.into()])
        .await?;
    row.map(application).transpose()
}

/// The application with this reference, locked until the command commits: decisions on one
/// application follow each other, each seeing what the previous one decided.
pub async fn find_for_update(
    sql: &mut Sql<'_>,
    application_ref: &str,
) -> Result<Option<StoredApplication>, DbError> {
    let row: Option<Row> = sql
        .query_opt_for_update(APPLICATION, &[application_ref.into()])
        .await?;
    row.map(application).transpose()
}

/// Pending applications whose deadline passed, oldest deadline first.
pub async fn overdue(
    sql: &mut Sql<'_>,
    now: i64,
    limit: i64,
) -> Result<Vec<StoredApplication>, DbError> {
    let rows: Vec<Row> = sql
        .query_all(
            concat!(
                "SELECT ",
                columns!(),
                " FROM applications WHERE status = 'pending' AND due_at <= $1
                 ORDER BY due_at LIMIT $2"
            ),
            &[now.into(), limit.into()],
        )
        .await?;
    rows.into_iter().map(application).collect()
}

/// An applicant's applications.
pub async fn of_applicant(
    sql: &mut Sql<'_>,
    applicant_ref: &str,
) -> Result<Vec<StoredApplication>, DbError> {
    let rows: Vec<Row> = sql
        .query_all(
            concat!(
                "SELECT ",
                columns!(),
                " FROM applications WHERE applicant_ref = $1 ORDER BY submitted_at"
            ),
            &[applicant_ref.into()],
        )
        .await?;
    rows.into_iter().map(application).collect()
}

/// Records a decision on a pending application; false if it was no longer pending.
pub async fn decide(
    sql: &mut Sql<'_>,
    application_ref: &str,
    status: Status,
    reason: &str,
) -> Result<bool, DbError> {
    let now = now_micros();
    let changed = sql
        .execute(
            "UPDATE applications SET status = $1, decision_reason = $2, decided_at = $3, updated_at = $4
             WHERE application_ref = $5 AND status = 'pending'",
            &[
                status.as_str().into(),
                reason.into(),
                now.into(),
                now.into(),
                application_ref.into(),
            ],
        )
        .await?;
    Ok(changed == 1)
}

/// Flags an application for review; false when it was flagged already.
pub async fn flag(sql: &mut Sql<'_>, application_ref: &str, reason: &str) -> Result<bool, DbError> {
    let changed = sql
        .execute(
            "UPDATE applications SET flagged_for_review = 1, flag_reason = $1, updated_at = $2
             WHERE application_ref = $3 AND flagged_for_review = 0",
            &[reason.into(), now_micros().into(), application_ref.into()],
        )
        .await?;
    Ok(changed == 1)
}

/// Pending applications whose deadline is provisional: reference, deadline, the working days
/// it was set with, submission time; locked until the command commits.
pub async fn provisional_pending(
    sql: &mut Sql<'_>,
) -> Result<Vec<(String, i64, i64, i64)>, DbError> {
    sql.query_all_for_update(
        "SELECT application_ref, due_at, due_working_days, submitted_at FROM applications
         WHERE status = 'pending' AND due_provisional = 1 AND due_working_days IS NOT NULL
           AND due_at IS NOT NULL",
        &[],
    )
    .await
}

/// Sets a pending application's deadline.
pub async fn set_due(
    sql: &mut Sql<'_>,
    application_ref: &str,
    due_at: i64,
    provisional: bool,
) -> Result<(), DbError> {
    sql.execute(
        "UPDATE applications SET due_at = $1, due_provisional = $2, updated_at = $3
         WHERE application_ref = $4 AND status = 'pending'",
        &[
            due_at.into(),
            i64::from(provisional).into(),
            now_micros().into(),
            application_ref.into(),
        ],
    )
    .await?;
    Ok(())
}

/// Erases the details of at most `limit` applications rejected before `before` whose details are
/// still kept: the business name, the document, the decision's and the flag's reasons; the
/// references, the NIB, the KBLI code, the region, the dates and the outcome stay for
/// statistics. Returns how many were erased.
pub async fn erase_rejected_details(
    sql: &mut Sql<'_>,
    before: i64,
    limit: i64,
) -> Result<u64, DbError> {
    // The conditions again outside the subquery: on PostgreSQL an application changed meanwhile
    // is checked again on its new row.
    sql.execute(
        "UPDATE applications SET business_name = '', document = '', decision_reason = '',
             flag_reason = '', details_erased_at = $1
         WHERE application_ref IN (
             SELECT application_ref FROM applications
             WHERE details_erased_at IS NULL AND status = 'rejected' AND updated_at < $2
             ORDER BY updated_at LIMIT $3)
           AND details_erased_at IS NULL AND status = 'rejected' AND updated_at < $2",
        &[now_micros().into(), before.into(), limit.into()],
    )
    .await
}
