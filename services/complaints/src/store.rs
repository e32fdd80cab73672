//! The `complaints` table.

use govbus_storage::time::now_micros;
use govbus_storage::{DbError, Migration, Sql};

use crate::domain::{Category, Channel, ComplaintClass, Due, RefusalGround, Status};

/// The complaints service's migrations.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "complaints",
        sqlite: TABLES,
        postgres: TABLES,
    },
    Migration {
        version: 2,
        description: "texts erased after their retention period",
        sqlite: TEXTS_ERASED,
        postgres: TEXTS_ERASED,
    },
];

// When the complaint's texts (the resident's, the office's reasons and response) were erased
// after its retention period; NULL while they are kept. A complaint's handling has ended when it
// is refused, closed, or responded and not reopened.
const TEXTS_ERASED: &str = "
    ALTER TABLE complaints ADD COLUMN texts_erased_at BIGINT;
    CREATE INDEX complaints_ended ON complaints (updated_at)
        WHERE texts_erased_at IS NULL AND status IN ('refused', 'responded', 'closed');
";

// `due_at` is the deadline of the stage the complaint waits in (verification, or the agency's
// response), counted from `due_from` in `due_working_days`; `escalated` says that deadline
// passed and was escalated, once.
const TABLES: &str = "
    CREATE TABLE complaints (
        complaint_ref TEXT PRIMARY KEY,
        complainant_ref TEXT NOT NULL,
        agency_code TEXT NOT NULL,
        category TEXT NOT NULL,
        channel TEXT NOT NULL,
        body TEXT NOT NULL,
        benefit_ref TEXT NOT NULL DEFAULT '',
        application_ref TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        complaint_class TEXT,
        refusal_ground TEXT,
        refusal_reason TEXT NOT NULL DEFAULT '',
        routing_note TEXT NOT NULL DEFAULT '',
        response TEXT NOT NULL DEFAULT '',
        reopen_reason TEXT NOT NULL DEFAULT '',
        due_at BIGINT,
        due_from BIGINT,
        due_working_days BIGINT,
        due_provisional BIGINT NOT NULL DEFAULT 0,
        escalated BIGINT NOT NULL DEFAULT 0,
        responded_within_deadline BIGINT NOT NULL DEFAULT 0,
        reopened BIGINT NOT NULL DEFAULT 0,
        national_ref TEXT,
        filed_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX complaints_due ON complaints (due_at) WHERE escalated = 0 AND due_at IS NOT NULL;
    CREATE INDEX complaints_agency ON complaints (agency_code, complaint_ref);
    CREATE INDEX complaints_complainant ON complaints (complainant_ref);
";

/// A stored complaint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredComplaint {
    /// Reference (a UUIDv7: newer references sort after older ones).
    pub complaint_ref: String,
    /// The complainant's pseudonymous reference.
    pub complainant_ref: String,
    /// The agency it is with (or was named for).
    pub agency_code: String,
    /// Category.
    pub category: Category,
    /// Channel.
    pub channel: Channel,
    /// The resident's text.
    pub text: String,
    /// The benefit it is about, or empty.
    pub benefit_ref: String,
    /// The licence application it is about, or empty.
    pub application_ref: String,
    /// Status.
    pub status: Status,
    /// Class, once accepted.
    pub class: Option<ComplaintClass>,
    /// Ground of a refusal.
    pub refusal_ground: Option<RefusalGround>,
    /// Reason of a refusal.
    pub refusal_reason: String,
    /// Why it was last routed to another agency.
    pub routing_note: String,
    /// The agency's last response.
    pub response: String,
    /// Why it was last reopened.
    pub reopen_reason: String,
    /// The deadline of the stage it waits in, if the city owes something.
    pub due: Option<Due>,
    /// The current stage's deadline passed and was escalated.
    pub escalated: bool,
    /// The last response came within its deadline.
    pub responded_within_deadline: bool,
    /// Times reopened.
    pub reopened: u32,
    /// The national channel's tracking number.
    pub national_ref: Option<String>,
    /// When filed.
    pub filed_at: i64,
}

/// The columns of a [`Row`], in its order.
macro_rules! columns {
    () => {
        "complaint_ref, complainant_ref, agency_code, category, channel, body, benefit_ref, \
         application_ref, status, complaint_class, refusal_ground, refusal_reason, routing_note, \
         response, reopen_reason, due_at, due_from, due_working_days, due_provisional, escalated, \
         responded_within_deadline, reopened, national_ref, filed_at"
    };
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
    String,
    Option<String>,
    Option<String>,
    String,
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    i64,
    i64,
    i64,
    i64,
    Option<String>,
    i64,
);

fn complaint(row: Row) -> Result<StoredComplaint, DbError> {
    let corrupt = |what| DbError::corrupt("reading a complaint", what);
    let (
        complaint_ref,
        complainant_ref,
        agency_code,
        category,
        channel,
        text,
        benefit_ref,
        application_ref,
        status,
        class,
        refusal_ground,
        refusal_reason,
        routing_note,
        response,
        reopen_reason,
        due_at,
        due_from,
        due_working_days,
        due_provisional,
        escalated,
        within,
        reopened,
        national_ref,
        filed_at,
    ) = row;
    Ok(StoredComplaint {
        complaint_ref,
        complainant_ref,
        agency_code,
        category: Category::from_stored(&category).ok_or_else(|| corrupt("category"))?,
        channel: Channel::from_stored(&channel).ok_or_else(|| corrupt("channel"))?,
        text,
        benefit_ref,
        application_ref,
        status: Status::from_stored(&status).ok_or_else(|| corrupt("status"))?,
        class: class
            .map(|class| ComplaintClass::from_stored(&class).ok_or_else(|| corrupt("class")))
            .transpose()?,
        refusal_ground: refusal_ground
            .map(|ground| RefusalGround::from_stored(&ground).ok_or_else(|| corrupt("ground")))
            .transpose()?,
        refusal_reason,
        routing_note,
        response,
        reopen_reason,
        due: match (due_at, due_from) {
            (Some(at), Some(from)) => Some(Due {
                at,
                from,
                working_days: due_working_days.and_then(|days| u32::try_from(days).ok()),
                provisional: due_provisional != 0,
            }),
            _ => None,
        },
        escalated: escalated != 0,
        responded_within_deadline: within != 0,
        reopened: u32::try_from(reopened).unwrap_or(u32::MAX),
        national_ref,
        filed_at,
    })
}

fn complaints(rows: Vec<Row>) -> Result<Vec<StoredComplaint>, DbError> {
    rows.into_iter().map(complaint).collect()
}

/// Stores a new complaint (with its verification deadline).
pub async fn insert(sql: &mut Sql<'_>, complaint: &StoredComplaint) -> Result<(), DbError> {
    let due = complaint.due;
    sql.execute(
        "INSERT INTO complaints (complaint_ref, complainant_ref, agency_code, category, channel,
             body, benefit_ref, application_ref, status, due_at, due_from, due_working_days,
             due_provisional, filed_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        &[
            complaint.complaint_ref.as_str().into(),
            complaint.complainant_ref.as_str().into(),
            complaint.agency_code.as_str().into(),
            complaint.category.as_str().into(),
            complaint.channel.as_str().into(),
            complaint.text.as_str().into(),
            complaint.benefit_ref.as_str().into(),
            complaint.application_ref.as_str().into(),
            complaint.status.as_str().into(),
            due.map(|due| due.at).into(),
            due.map(|due| due.from).into(),
            due.and_then(|due| due.working_days).map(i64::from).into(),
            i64::from(due.is_some_and(|due| due.provisional)).into(),
            complaint.filed_at.into(),
            complaint.filed_at.into(),
        ],
    )
    .await?;
    Ok(())
}

const BY_REF: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM complaints WHERE complaint_ref = $1"
);

/// The complaint with this reference.
pub async fn find(
    sql: &mut Sql<'_>,
    complaint_ref: &str,
) -> Result<Option<StoredComplaint>, DbError> {
    let row: Option<Row> = sql.query_opt(BY_REF, &[complaint_ref.into()]).await?;
    row.map(complaint).transpose()
}

/// The complaint with this reference, locked until the command commits: commands on one
/// complaint follow each other, each seeing what the previous one did.
pub async fn find_for_update(
    sql: &mut Sql<'_>,
    complaint_ref: &str,
) -> Result<Option<StoredComplaint>, DbError> {
    let row: Option<Row> = sql
        .query_opt_for_update(BY_REF, &[complaint_ref.into()])
        .await?;
    row.map(complaint).transpose()
}

/// Writes a command's changes to a complaint it read locked and changed, if it is still in
/// `expected` status; false otherwise.
pub async fn update(
    sql: &mut Sql<'_>,
    complaint: &StoredComplaint,
    expected: Status,
) -> Result<bool, DbError> {
    let due = complaint.due;
    let changed = sql
        .execute(
            "UPDATE complaints SET agency_code = $1, status = $2, complaint_class = $3,
                 refusal_ground = $4, refusal_reason = $5, routing_note = $6, response = $7,
                 reopen_reason = $8, due_at = $9, due_from = $10, due_working_days = $11,
                 due_provisional = $12, escalated = $13, responded_within_deadline = $14,
                 reopened = $15, updated_at = $16
             WHERE complaint_ref = $17 AND status = $18",
            &[
                complaint.agency_code.as_str().into(),
                complaint.status.as_str().into(),
                complaint.class.map(ComplaintClass::as_str).into(),
                complaint.refusal_ground.map(RefusalGround::as_str).into(),
                complaint.refusal_reason.as_str().into(),
                complaint.routing_note.as_str().into(),
                complaint.response.as_str().into(),
                complaint.reopen_reason.as_str().into(),
                due.map(|due| due.at).into(),
                due.map(|due| due.from).into(),
                due.and_then(|due| due.working_days).map(i64::from).into(),
                i64::from(due.is_some_and(|due| due.provisional)).into(),
                i64::from(complaint.escalated).into(),
                i64::from(complaint.responded_within_deadline).into(),
                i64::from(complaint.reopened).into(),
                now_micros().into(),
                complaint.complaint_ref.as_str().into(),
                expected.as_str().into(),
            ],
        )
        .await?;
    Ok(changed == 1)
}

/// Complaints whose stage's deadline passed and was not escalated yet, oldest deadline first.
pub async fn overdue(
    sql: &mut Sql<'_>,
    now: i64,
    limit: i64,
) -> Result<Vec<StoredComplaint>, DbError> {
    let rows: Vec<Row> = sql
        .query_all(
            concat!(
                "SELECT ",
                columns!(),
                " FROM complaints WHERE escalated = 0 AND due_at IS NOT NULL AND due_at <= $1
                 ORDER BY due_at, complaint_ref LIMIT $2"
            ),
            &[now.into(), limit.into()],
        )
        .await?;
    complaints(rows)
}

/// Marks the deadline `due_at` of a complaint escalated; false when it was escalated already
/// (by another replica's watcher) or the complaint moved on to another deadline.
pub async fn escalate(
    sql: &mut Sql<'_>,
    complaint_ref: &str,
    due_at: i64,
) -> Result<bool, DbError> {
    let changed = sql
        .execute(
            "UPDATE complaints SET escalated = 1, updated_at = $1
             WHERE complaint_ref = $2 AND due_at = $3 AND escalated = 0",
            &[now_micros().into(), complaint_ref.into(), due_at.into()],
        )
        .await?;
    Ok(changed == 1)
}

/// Erases the texts of at most `limit` complaints whose handling ended before `before` and whose
/// texts are still kept: the resident's text, the refusal's reason, the routing note, the
/// response and the reopening's reason; the references, dates and outcome stay for statistics.
/// Returns how many were erased.
pub async fn erase_ended_texts(sql: &mut Sql<'_>, before: i64, limit: i64) -> Result<u64, DbError> {
    // The conditions again outside the subquery: on PostgreSQL a complaint reopened meanwhile
    // is checked again on its new row, and left alone.
    sql.execute(
        "UPDATE complaints SET body = '', refusal_reason = '', routing_note = '', response = '',
             reopen_reason = '', texts_erased_at = $1
         WHERE complaint_ref IN (
             SELECT complaint_ref FROM complaints
             WHERE texts_erased_at IS NULL AND status IN ('refused', 'responded', 'closed')
               AND updated_at < $2
             ORDER BY updated_at LIMIT $3)
           AND texts_erased_at IS NULL AND status IN ('refused', 'responded', 'closed')
           AND updated_at < $2",
        &[now_micros().into(), before.into(), limit.into()],
    )
    .await
}

/// Records the national channel's tracking number; false when one was recorded already.
pub async fn set_national_ref(
    sql: &mut Sql<'_>,
    complaint_ref: &str,
    national_ref: &str,
) -> Result<bool, DbError> {
    let changed = sql
        .execute(
            "UPDATE complaints SET national_ref = $1, updated_at = $2
             WHERE complaint_ref = $3 AND national_ref IS NULL",
            &[
                national_ref.into(),
                now_micros().into(),
                complaint_ref.into(),
            ],
        )
        .await?;
    Ok(changed == 1)
}

/// Complaints newest first, after `before` (a reference) when given, with `agency` and in
/// `status` when given.
pub async fn list(
    sql: &mut Sql<'_>,
    agency: Option<&str>,
    status: Option<Status>,
    before: Option<&str>,
    limit: i64,
) -> Result<Vec<StoredComplaint>, DbError> {
    let rows: Vec<Row> = sql
        .query_all(
            concat!(
                "SELECT ",
                columns!(),
                " FROM complaints WHERE ($1 = '' OR agency_code = $1) AND ($2 = '' OR status = $2)
                   AND ($3 = '' OR complaint_ref < $3)
                 ORDER BY complaint_ref DESC LIMIT $4"
            ),
            &[
                agency.unwrap_or("").into(),
                status.map_or("", Status::as_str).into(),
                before.unwrap_or("").into(),
                limit.into(),
            ],
        )
        .await?;
    complaints(rows)
}

/// Complaints waiting with a provisional deadline, locked until the command commits.
pub async fn provisional(sql: &mut Sql<'_>) -> Result<Vec<StoredComplaint>, DbError> {
    let rows: Vec<Row> = sql
        .query_all_for_update(
            concat!(
                "SELECT ",
                columns!(),
                " FROM complaints WHERE due_provisional = 1 AND due_at IS NOT NULL
                   AND due_from IS NOT NULL AND due_working_days IS NOT NULL"
            ),
            &[],
        )
        .await?;
    complaints(rows)
}

/// Sets a waiting complaint's deadline as counted again.
pub async fn set_due(sql: &mut Sql<'_>, complaint_ref: &str, due: Due) -> Result<(), DbError> {
    sql.execute(
        "UPDATE complaints SET due_at = $1, due_provisional = $2, updated_at = $3
         WHERE complaint_ref = $4 AND due_at IS NOT NULL",
        &[
            due.at.into(),
            i64::from(due.provisional).into(),
            now_micros().into(),
            complaint_ref.into(),
        ],
    )
    .await?;
    Ok(())
}
