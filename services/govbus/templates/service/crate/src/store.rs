//! The {{name}} tables: residents' requests.

use govbus_storage::time::now_micros;
use govbus_storage::{DbError, Migration, Sql};

/// The {{name}} service's migrations, each written for both backends.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "requests",
    sqlite: TABLES,
    postgres: TABLES,
}];

const TABLES: &str = "
    CREATE TABLE requests (
        request_ref TEXT PRIMARY KEY,
        citizen_ref TEXT NOT NULL,
        text TEXT NOT NULL,
        closed BIGINT NOT NULL DEFAULT 0,
        close_reason TEXT NOT NULL DEFAULT '',
        filed_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX requests_citizen ON requests (citizen_ref);
";

/// A stored request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRequest {
    /// Its reference.
    pub request_ref: String,
    /// The resident's pseudonymous reference.
    pub citizen_ref: String,
    /// What they asked for.
    pub text: String,
    /// Whether it is closed.
    pub closed: bool,
    /// Why, when it is.
    pub close_reason: String,
}

/// Stores a new, open request.
pub async fn insert(
    sql: &mut Sql<'_>,
    request_ref: &str,
    citizen_ref: &str,
    text: &str,
) -> Result<(), DbError> {
    let now = now_micros();
    sql.execute(
        "INSERT INTO requests (request_ref, citizen_ref, text, filed_at, updated_at)
         VALUES ($1, $2, $3, $4, $4)",
        &[request_ref.into(), citizen_ref.into(), text.into(), now.into()],
    )
    .await?;
    Ok(())
}

/// The request `request_ref`, if there is one.
pub async fn get(sql: &mut Sql<'_>, request_ref: &str) -> Result<Option<StoredRequest>, DbError> {
    let row: Option<(String, String, String, i64, String)> = sql
        .query_opt(
            "SELECT request_ref, citizen_ref, text, closed, close_reason
             FROM requests WHERE request_ref = $1",
            &[request_ref.into()],
        )
        .await?;
    Ok(row.map(
        |(request_ref, citizen_ref, text, closed, close_reason)| StoredRequest {
            request_ref,
            citizen_ref,
            text,
            closed: closed != 0,
            close_reason,
        },
    ))
}

/// Closes the open requests of `citizen_ref` with `reason`; returns the ones it closed. Reads
/// them with a row lock, so two deaths handled at once (replicas) close each request once.
pub async fn close_open_of(
    sql: &mut Sql<'_>,
    citizen_ref: &str,
    reason: &str,
) -> Result<Vec<String>, DbError> {
    let open: Vec<(String,)> = sql
        .query_all_for_update(
            "SELECT request_ref FROM requests WHERE citizen_ref = $1 AND closed = 0",
            &[citizen_ref.into()],
        )
        .await?;
    let now = now_micros();
    let mut closed = Vec::with_capacity(open.len());
    for (request_ref,) in open {
        // Only what this command closed: a request another command closed meanwhile is not
        // reported (and not published) twice.
        let changed = sql
            .execute(
                "UPDATE requests SET closed = 1, close_reason = $2, updated_at = $3
                 WHERE request_ref = $1 AND closed = 0",
                &[request_ref.as_str().into(), reason.into(), now.into()],
            )
            .await?;
        if changed == 1 {
            closed.push(request_ref);
        }
    }
    Ok(closed)
}
