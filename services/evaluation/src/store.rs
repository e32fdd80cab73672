//! The evaluation tables: instances, scores, targets.

use govbus_storage::time::now_micros;
use govbus_storage::{DbError, Migration, Sql};

/// The evaluation service's migrations.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "instances, scores, targets, integration evidence",
        sqlite: TABLES,
        postgres: TABLES,
    },
    Migration {
        version: 2,
        description: "complaint handling evidence",
        sqlite: COMPLAINTS,
        postgres: COMPLAINTS,
    },
    Migration {
        version: 3,
        description: "reviews of the service connector and their follow-ups",
        sqlite: CONNECTOR_REVIEWS,
        postgres: CONNECTOR_REVIEWS,
    },
    Migration {
        version: 4,
        description: "the uses of links beyond the instance (SPLP)",
        sqlite: LINKS,
        postgres: LINKS,
    },
];

/// Per link and operation: attempts that succeeded and failed, and when each last happened
/// (microseconds since the epoch, 0 for never).
const LINKS: &str = "
    CREATE TABLE evidence_links (
        link TEXT NOT NULL,
        operation TEXT NOT NULL,
        succeeded BIGINT NOT NULL,
        failed BIGINT NOT NULL,
        last_succeeded BIGINT NOT NULL,
        last_failed BIGINT NOT NULL,
        PRIMARY KEY (link, operation)
    );
";

/// Reviews of the bus's use (SPBE indicator 18) and follow-ups; never changed once recorded.
/// `review_id` is empty for a review.
const CONNECTOR_REVIEWS: &str = "
    CREATE TABLE connector_reviews (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        held_on TEXT NOT NULL,
        findings TEXT NOT NULL,
        review_id TEXT NOT NULL,
        recorded_by TEXT NOT NULL,
        recorded_via TEXT NOT NULL,
        recorded_at BIGINT NOT NULL
    );
    CREATE INDEX connector_reviews_held_on ON connector_reviews (held_on);
";

/// Counts of complaint handling, by measure (`filed`, `forwarded`, `on-time:<class>`, …).
const COMPLAINTS: &str = "
    CREATE TABLE evidence_complaints (
        measure TEXT PRIMARY KEY,
        events BIGINT NOT NULL
    );
";

const TABLES: &str = "
    CREATE TABLE instances (
        instance_code TEXT PRIMARY KEY,
        instance_name TEXT NOT NULL,
        province_code TEXT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE TABLE scores (
        instance_code TEXT NOT NULL,
        year BIGINT NOT NULL,
        kind TEXT NOT NULL,
        indicator BIGINT NOT NULL,
        level BIGINT NOT NULL,
        notes TEXT NOT NULL,
        instrument_id TEXT NOT NULL,
        recorded_at BIGINT NOT NULL,
        PRIMARY KEY (instance_code, year, kind, indicator)
    );
    CREATE INDEX scores_year ON scores (year, kind);
    CREATE TABLE targets (
        instance_code TEXT NOT NULL,
        year BIGINT NOT NULL,
        target BIGINT NOT NULL,
        source TEXT NOT NULL,
        PRIMARY KEY (instance_code, year)
    );
    CREATE TABLE evidence_events (
        service TEXT NOT NULL,
        event_type TEXT NOT NULL,
        data_schema TEXT NOT NULL,
        events BIGINT NOT NULL,
        first_seen BIGINT NOT NULL,
        last_seen BIGINT NOT NULL,
        PRIMARY KEY (service, event_type)
    );
    CREATE TABLE evidence_flows (
        from_service TEXT NOT NULL,
        to_service TEXT NOT NULL,
        reactions BIGINT NOT NULL,
        PRIMARY KEY (from_service, to_service)
    );
    CREATE TABLE evidence_calls (
        caller TEXT NOT NULL,
        callee TEXT NOT NULL,
        method TEXT NOT NULL,
        calls BIGINT NOT NULL,
        PRIMARY KEY (caller, callee, method)
    );
    CREATE TABLE evidence_licensing (
        id BIGINT PRIMARY KEY,
        decisions BIGINT NOT NULL,
        within_deadline BIGINT NOT NULL,
        deemed_approved BIGINT NOT NULL
    );
    CREATE TABLE evidence_positions (
        stream TEXT PRIMARY KEY,
        last_sequence BIGINT NOT NULL
    );
";

/// Which scores: the instance's own or the evaluator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Penilaian mandiri.
    SelfAssessment,
    /// Nilai akhir.
    Evaluator,
}

impl Kind {
    /// Stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SelfAssessment => "self-assessment",
            Self::Evaluator => "evaluator",
        }
    }
}

/// One stored score.
#[derive(Debug, Clone)]
pub struct Score {
    /// Indicator number.
    pub indicator: u32,
    /// Level.
    pub level: u8,
    /// Evidence notes.
    pub notes: String,
}

/// Records or updates an instance.
pub async fn upsert_instance(
    sql: &mut Sql<'_>,
    instance_code: &str,
    instance_name: &str,
) -> Result<(), DbError> {
    sql.execute(
        "INSERT INTO instances (instance_code, instance_name, province_code, updated_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (instance_code) DO UPDATE SET instance_name = excluded.instance_name,
             updated_at = excluded.updated_at",
        &[
            instance_code.into(),
            instance_name.into(),
            instance_code.get(..2).unwrap_or_default().into(),
            now_micros().into(),
        ],
    )
    .await?;
    Ok(())
}

/// An instance's name.
pub async fn instance_name(
    sql: &mut Sql<'_>,
    instance_code: &str,
) -> Result<Option<String>, DbError> {
    let row: Option<(String,)> = sql
        .query_opt(
            "SELECT instance_name FROM instances WHERE instance_code = $1",
            &[instance_code.into()],
        )
        .await?;
    Ok(row.map(|(name,)| name))
}

/// Records or replaces one score.
pub async fn upsert_score(
    sql: &mut Sql<'_>,
    instance_code: &str,
    year: i32,
    kind: Kind,
    instrument_id: &str,
    score: &Score,
) -> Result<(), DbError> {
    sql.execute(
        "INSERT INTO scores (instance_code, year, kind, indicator, level, notes, instrument_id, recorded_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (instance_code, year, kind, indicator) DO UPDATE SET level = excluded.level,
             notes = excluded.notes, instrument_id = excluded.instrument_id, recorded_at = excluded.recorded_at",
        &[
            instance_code.into(),
            i64::from(year).into(),
            kind.as_str().into(),
            i64::from(score.indicator).into(),
            i64::from(score.level).into(),
            score.notes.as_str().into(),
            instrument_id.into(),
            now_micros().into(),
        ],
    )
    .await?;
    Ok(())
}

/// An instance's scores of one kind for a year.
pub async fn scores(
    sql: &mut Sql<'_>,
    instance_code: &str,
    year: i32,
    kind: Kind,
) -> Result<Vec<Score>, DbError> {
    let rows: Vec<(i64, i64, String)> = sql
        .query_all(
            "SELECT indicator, level, notes FROM scores
             WHERE instance_code = $1 AND year = $2 AND kind = $3 ORDER BY indicator",
            &[
                instance_code.into(),
                i64::from(year).into(),
                kind.as_str().into(),
            ],
        )
        .await?;
    Ok(rows.into_iter().map(score).collect())
}

fn score((indicator, level, notes): (i64, i64, String)) -> Score {
    Score {
        indicator: u32::try_from(indicator).unwrap_or(0),
        level: u8::try_from(level).unwrap_or(0),
        notes,
    }
}

/// The years for which an instance has evaluator scores.
pub async fn evaluated_years(sql: &mut Sql<'_>, instance_code: &str) -> Result<Vec<i32>, DbError> {
    let rows: Vec<(i64,)> = sql
        .query_all(
            "SELECT DISTINCT year FROM scores WHERE instance_code = $1 AND kind = 'evaluator' ORDER BY year",
            &[instance_code.into()],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(year,)| i32::try_from(year).ok())
        .collect())
}

/// Every instance's evaluator scores for a year, optionally within a province:
/// (instance code, instance name, scores).
pub async fn evaluator_scores_of_year(
    sql: &mut Sql<'_>,
    year: i32,
    province_code: Option<&str>,
) -> Result<Vec<(String, String, Vec<Score>)>, DbError> {
    let rows: Vec<(String, String, i64, i64, String)> = sql
        .query_all(
            "SELECT s.instance_code, i.instance_name, s.indicator, s.level, s.notes
             FROM scores s JOIN instances i ON i.instance_code = s.instance_code
             WHERE s.year = $1 AND s.kind = 'evaluator' AND ($2 = '' OR i.province_code = $2)
             ORDER BY s.instance_code, s.indicator",
            &[i64::from(year).into(), province_code.unwrap_or("").into()],
        )
        .await?;
    let mut grouped: Vec<(String, String, Vec<Score>)> = Vec::new();
    for (code, name, indicator, level, notes) in rows {
        match grouped.last_mut() {
            Some((last, _, scores)) if *last == code => {
                scores.push(score((indicator, level, notes)))
            }
            _ => grouped.push((code, name, vec![score((indicator, level, notes))])),
        }
    }
    Ok(grouped)
}

/// Records or replaces a target.
pub async fn upsert_target(
    sql: &mut Sql<'_>,
    instance_code: &str,
    year: i32,
    target: i64,
    source: &str,
) -> Result<(), DbError> {
    sql.execute(
        "INSERT INTO targets (instance_code, year, target, source) VALUES ($1, $2, $3, $4)
         ON CONFLICT (instance_code, year) DO UPDATE SET target = excluded.target, source = excluded.source",
        &[
            instance_code.into(),
            i64::from(year).into(),
            target.into(),
            source.into(),
        ],
    )
    .await?;
    Ok(())
}

/// An instance's targets: (year, target in hundredths, source).
pub async fn targets(
    sql: &mut Sql<'_>,
    instance_code: &str,
) -> Result<Vec<(i32, i64, String)>, DbError> {
    let rows: Vec<(i64, i64, String)> = sql
        .query_all(
            "SELECT year, target, source FROM targets WHERE instance_code = $1 ORDER BY year",
            &[instance_code.into()],
        )
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(year, target, source)| Some((i32::try_from(year).ok()?, target, source)))
        .collect())
}
