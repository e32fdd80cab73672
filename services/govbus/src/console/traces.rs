//! Recent traces kept in memory, and one trace's spans.

use axum::Json;
use axum::extract::{Path, Query, State};

use super::error::{ApiError, ApiResult};
use super::state::ConsoleState;
use crate::api::{RecordedSpan, TraceQuery, TraceSummary};

pub(super) async fn traces(
    State(state): State<ConsoleState>,
    Query(query): Query<TraceQuery>,
) -> ApiResult<Vec<TraceSummary>> {
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    Ok(Json(state.observability().traces.recent(limit)))
}

pub(super) async fn trace(
    State(state): State<ConsoleState>,
    Path(trace_id): Path<String>,
) -> ApiResult<Vec<RecordedSpan>> {
    state
        .observability()
        .traces
        .get(&trace_id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("trace {trace_id} is not kept (or never was)")))
}
