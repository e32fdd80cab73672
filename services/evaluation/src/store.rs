//! The evaluation tables: instances, scores, targets.

use govbus_kit::db::now_micros;
use govbus_kit::{DbError, Migration};
use sqlx::AnyConnection;

/// The evaluation service's migrations.
pub const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    description: "instances, scores, targets, integration evidence",
    sqlite: TABLES,
    postgres: TABLES,
}];

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
    connection: &mut AnyConnection,
    instance_code: &str,
    instance_name: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO instances (instance_code, instance_name, province_code, updated_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (instance_code) DO UPDATE SET instance_name = excluded.instance_name,
             updated_at = excluded.updated_at",
    )
    .bind(instance_code)
    .bind(instance_name)
    .bind(&instance_code[..2])
    .bind(now_micros())
    .execute(connection)
    .await
    .map_err(DbError::sql("recording an instance"))?;
    Ok(())
}

/// An instance's name.
pub async fn instance_name(
    connection: &mut AnyConnection,
    instance_code: &str,
) -> Result<Option<String>, DbError> {
    let row: Option<(String,)> =
        sqlx::query_as("SELECT instance_name FROM instances WHERE instance_code = $1")
            .bind(instance_code)
            .fetch_optional(connection)
            .await
            .map_err(DbError::sql("reading an instance"))?;
    Ok(row.map(|(name,)| name))
}

/// Records or replaces one score.
pub async fn upsert_score(
    connection: &mut AnyConnection,
    instance_code: &str,
    year: i32,
    kind: Kind,
    instrument_id: &str,
    score: &Score,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO scores (instance_code, year, kind, indicator, level, notes, instrument_id, recorded_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (instance_code, year, kind, indicator) DO UPDATE SET level = excluded.level,
             notes = excluded.notes, instrument_id = excluded.instrument_id, recorded_at = excluded.recorded_at",
    )
    .bind(instance_code)
    .bind(i64::from(year))
    .bind(kind.as_str())
    .bind(i64::from(score.indicator))
    .bind(i64::from(score.level))
    .bind(&score.notes)
    .bind(instrument_id)
    .bind(now_micros())
    .execute(connection)
    .await
    .map_err(DbError::sql("recording a score"))?;
    Ok(())
}

/// An instance's scores of one kind for a year.
pub async fn scores(
    connection: &mut AnyConnection,
    instance_code: &str,
    year: i32,
    kind: Kind,
) -> Result<Vec<Score>, DbError> {
    let rows: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT indicator, level, notes FROM scores
         WHERE instance_code = $1 AND year = $2 AND kind = $3 ORDER BY indicator",
    )
    .bind(instance_code)
    .bind(i64::from(year))
    .bind(kind.as_str())
    .fetch_all(connection)
    .await
    .map_err(DbError::sql("reading scores"))?;
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
pub async fn evaluated_years(
    connection: &mut AnyConnection,
    instance_code: &str,
) -> Result<Vec<i32>, DbError> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT DISTINCT year FROM scores WHERE instance_code = $1 AND kind = 'evaluator' ORDER BY year",
    )
    .bind(instance_code)
    .fetch_all(connection)
    .await
    .map_err(DbError::sql("reading evaluated years"))?;
    Ok(rows
        .into_iter()
        .filter_map(|(year,)| i32::try_from(year).ok())
        .collect())
}

/// Every instance's evaluator scores for a year, optionally within a province:
/// (instance code, instance name, scores).
pub async fn evaluator_scores_of_year(
    connection: &mut AnyConnection,
    year: i32,
    province_code: Option<&str>,
) -> Result<Vec<(String, String, Vec<Score>)>, DbError> {
    let rows: Vec<(String, String, i64, i64, String)> = sqlx::query_as(
        "SELECT s.instance_code, i.instance_name, s.indicator, s.level, s.notes
         FROM scores s JOIN instances i ON i.instance_code = s.instance_code
         WHERE s.year = $1 AND s.kind = 'evaluator' AND ($2 = '' OR i.province_code = $2)
         ORDER BY s.instance_code, s.indicator",
    )
    .bind(i64::from(year))
    .bind(province_code.unwrap_or(""))
    .fetch_all(connection)
    .await
    .map_err(DbError::sql("reading a year's scores"))?;
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
    connection: &mut AnyConnection,
    instance_code: &str,
    year: i32,
    target: i64,
    source: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO targets (instance_code, year, target, source) VALUES ($1, $2, $3, $4)
         ON CONFLICT (instance_code, year) DO UPDATE SET target = excluded.target, source = excluded.source",
    )
    .bind(instance_code)
    .bind(i64::from(year))
    .bind(target)
    .bind(source)
    .execute(connection)
    .await
    .map_err(DbError::sql("recording a target"))?;
    Ok(())
}

/// An instance's targets: (year, target in hundredths, source).
pub async fn targets(
    connection: &mut AnyConnection,
    instance_code: &str,
) -> Result<Vec<(i32, i64, String)>, DbError> {
    let rows: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT year, target, source FROM targets WHERE instance_code = $1 ORDER BY year",
    )
    .bind(instance_code)
    .fetch_all(connection)
    .await
    .map_err(DbError::sql("reading targets"))?;
    Ok(rows
        .into_iter()
        .filter_map(|(year, target, source)| Some((i32::try_from(year).ok()?, target, source)))
        .collect())
}
