//! The bus as operators see it: streams and consumers, the flow between services, events.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::{Stream, StreamExt as _};

use super::error::{ApiError, ApiResult};
use super::inspect;
use super::state::ConsoleState;
use crate::api::{EventFilter, EventView, FlowEdge, StreamView};

pub(super) async fn streams(State(state): State<ConsoleState>) -> ApiResult<Vec<StreamView>> {
    inspect::streams(state.bus(), state.rates())
        .await
        .map(Json)
        .map_err(ApiError::unavailable)
}

pub(super) async fn flow(State(state): State<ConsoleState>) -> ApiResult<Vec<FlowEdge>> {
    let streams = inspect::streams(state.bus(), state.rates())
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(inspect::flow(&streams)))
}

pub(super) async fn events(
    State(state): State<ConsoleState>,
    Query(filter): Query<EventFilter>,
) -> ApiResult<Vec<EventView>> {
    let limit = filter.limit.unwrap_or(50).clamp(1, 1_000);
    inspect::recent_events(
        state.bus(),
        filter.service.as_deref(),
        filter.event_type.as_deref(),
        limit,
    )
    .await
    .map(Json)
    .map_err(ApiError::unavailable)
}

/// Server-sent events: every new event of the services' streams, decoded and masked, as it is
/// published.
pub(super) async fn live_events(
    State(state): State<ConsoleState>,
    Query(filter): Query<EventFilter>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let prefix = state.bus().topology().prefix().to_owned();
    let subject = match &filter.service {
        Some(service) => format!("{prefix}.{service}.>"),
        None => format!("{prefix}.>"),
    };
    let subscriber = state
        .bus()
        .client()
        .subscribe(subject)
        .await
        .map_err(|error| ApiError::unavailable(format!("subscribing: {error}")))?;
    let dead_letters = format!("{prefix}.deadletter.");
    let wanted_type = filter.event_type;
    let closing = state.closing().clone();
    let stream = subscriber
        .filter_map(move |message| {
            let keep = !message.subject.starts_with(&dead_letters);
            let view = keep.then(|| {
                inspect::view_of(
                    None,
                    &message.subject,
                    message.headers.as_ref(),
                    &message.payload,
                )
            });
            let view = view.filter(|view| {
                wanted_type
                    .as_deref()
                    .is_none_or(|wanted| view.event_type.as_deref() == Some(wanted))
            });
            async move { view }
        })
        .map(|view| {
            Ok(SseEvent::default()
                .event("event")
                .json_data(view)
                .unwrap_or_else(|_| SseEvent::default().comment("unencodable event")))
        })
        .take_until(closing.cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
