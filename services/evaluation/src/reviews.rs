//! Reviews of the service connector (SPBE indicator 18): the periodic review of how the
//! instance's agencies use the bus, and the follow-up that acts on a review's findings.
//!
//! A record is written once and never changed or removed, so a follow-up's check of the review
//! it names (that it exists, is a review, and was held no later) cannot be invalidated by a
//! concurrent command. Who recorded it is the caller the access policy admitted, never a name
//! the request carries.

use govbus_proto::evaluation::v1 as pb;
use govbus_storage::time::{now_micros, rfc3339};
use govbus_storage::{DbError, Sql};
use time::Date;
use time::macros::format_description;

/// The longest findings text, in characters.
pub const MAX_FINDINGS_CHARS: usize = 4_000;

/// A review, or the follow-up of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewKind {
    /// Reviu berkala: how the agencies use the connector.
    Review,
    /// Tindak lanjut: what was done about a review's findings.
    FollowUp,
}

impl ReviewKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Review => "review",
            Self::FollowUp => "follow-up",
        }
    }

    fn stored(text: &str) -> Self {
        if text == Self::FollowUp.as_str() {
            Self::FollowUp
        } else {
            Self::Review
        }
    }

    /// The kind a request names, if it names one.
    pub fn of_request(kind: pb::ConnectorReviewKind) -> Option<Self> {
        match kind {
            pb::ConnectorReviewKind::Review => Some(Self::Review),
            pb::ConnectorReviewKind::FollowUp => Some(Self::FollowUp),
            pb::ConnectorReviewKind::Unspecified => None,
        }
    }

    fn to_pb(self) -> pb::ConnectorReviewKind {
        match self {
            Self::Review => pb::ConnectorReviewKind::Review,
            Self::FollowUp => pb::ConnectorReviewKind::FollowUp,
        }
    }
}

/// A recorded review or follow-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorReview {
    /// Its id.
    pub id: String,
    /// What was recorded.
    pub review: NewReview,
    /// When (microseconds since the epoch).
    pub recorded_at: i64,
}

/// A review or follow-up, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReview {
    /// Review or follow-up.
    pub kind: ReviewKind,
    /// The day it was held.
    pub held_on: Date,
    /// What it found, or what was done.
    pub findings: String,
    /// For a follow-up, the review it acts on.
    pub review_id: Option<String>,
    /// The caller that recorded it.
    pub recorded_by: String,
    /// The gateway it came through, if any.
    pub recorded_via: Option<String>,
}

/// A follow-up that cannot stand, and the request field that says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ReviewProblem {
    /// The field.
    pub field: &'static str,
    /// Why.
    pub problem: String,
}

/// Reads a `YYYY-MM-DD` day.
pub fn parse_day(text: &str) -> Result<Date, String> {
    Date::parse(text, format_description!("[year]-[month]-[day]"))
        .map_err(|_| format!("{text:?} is not a day written YYYY-MM-DD"))
}

fn day_text(day: Date) -> String {
    day.format(format_description!("[year]-[month]-[day]"))
        .unwrap_or_default()
}

/// The columns of a row, in [`Row`]'s order: statements are static text, so each spells them.
macro_rules! columns {
    () => {
        "id, kind, held_on, findings, review_id, recorded_by, recorded_via, recorded_at"
    };
}

type Row = (String, String, String, String, String, String, String, i64);

fn of_row((id, kind, held_on, findings, review_id, by, via, at): Row) -> ConnectorReview {
    ConnectorReview {
        id,
        review: NewReview {
            kind: ReviewKind::stored(&kind),
            // Written by `record` from a parsed day: always readable.
            held_on: parse_day(&held_on).unwrap_or(Date::MIN),
            findings,
            review_id: (!review_id.is_empty()).then_some(review_id),
            recorded_by: by,
            recorded_via: (!via.is_empty()).then_some(via),
        },
        recorded_at: at,
    }
}

/// Records `review`: a follow-up must name a recorded review held on or before it.
pub async fn record(
    sql: &mut Sql<'_>,
    review: NewReview,
) -> Result<Result<ConnectorReview, ReviewProblem>, DbError> {
    if let (ReviewKind::FollowUp, Some(review_id)) = (review.kind, &review.review_id) {
        let Some(reviewed) = find(sql, review_id).await? else {
            return Ok(Err(ReviewProblem {
                field: "review_id",
                problem: format!("no review {review_id:?} is recorded"),
            }));
        };
        if reviewed.review.kind != ReviewKind::Review {
            return Ok(Err(ReviewProblem {
                field: "review_id",
                problem: format!("{review_id:?} is a follow-up, not a review"),
            }));
        }
        if reviewed.review.held_on > review.held_on {
            return Ok(Err(ReviewProblem {
                field: "held_on",
                problem: format!(
                    "a follow-up cannot be held before its review (held on {})",
                    day_text(reviewed.review.held_on)
                ),
            }));
        }
    }
    let recorded = ConnectorReview {
        id: uuid::Uuid::now_v7().to_string(),
        review,
        recorded_at: now_micros(),
    };
    let review = &recorded.review;
    let held_on = day_text(review.held_on);
    sql.execute(
        concat!(
            "INSERT INTO connector_reviews (",
            columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ),
        &[
            recorded.id.as_str().into(),
            review.kind.as_str().into(),
            held_on.as_str().into(),
            review.findings.as_str().into(),
            review.review_id.as_deref().unwrap_or("").into(),
            review.recorded_by.as_str().into(),
            review.recorded_via.as_deref().unwrap_or("").into(),
            recorded.recorded_at.into(),
        ],
    )
    .await?;
    Ok(Ok(recorded))
}

async fn find(sql: &mut Sql<'_>, id: &str) -> Result<Option<ConnectorReview>, DbError> {
    let row: Option<Row> = sql
        .query_opt(
            concat!(
                "SELECT ",
                columns!(),
                " FROM connector_reviews WHERE id = $1"
            ),
            &[id.into()],
        )
        .await?;
    Ok(row.map(of_row))
}

/// Every review and follow-up, the latest held first.
pub async fn all(sql: &mut Sql<'_>) -> Result<Vec<ConnectorReview>, DbError> {
    let rows: Vec<Row> = sql
        .query_all(
            concat!(
                "SELECT ",
                columns!(),
                " FROM connector_reviews ORDER BY held_on DESC, recorded_at DESC"
            ),
            &[],
        )
        .await?;
    Ok(rows.into_iter().map(of_row).collect())
}

impl ConnectorReview {
    /// As the API answers it.
    pub fn to_pb(&self) -> pb::ConnectorReview {
        let review = &self.review;
        pb::ConnectorReview {
            id: self.id.clone(),
            kind: review.kind.to_pb().into(),
            held_on: day_text(review.held_on),
            findings: review.findings.clone(),
            review_id: review.review_id.clone().unwrap_or_default(),
            recorded_by: review.recorded_by.clone(),
            recorded_via: review.recorded_via.clone().unwrap_or_default(),
            recorded_at: rfc3339(self.recorded_at),
        }
    }

    /// The day it was held, `YYYY-MM-DD`.
    pub fn held_on_text(&self) -> String {
        day_text(self.review.held_on)
    }
}
