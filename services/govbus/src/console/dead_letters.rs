//! Dead letters: listing, showing and replaying them.

use axum::Json;
use axum::extract::{Path, Query, State};

use super::error::{ApiError, ApiResult};
use super::inspect;
use super::state::ConsoleState;
use crate::api::{DeadLetterList, DeadLetterView, Page, Replayed};

fn dead_letter_view(letter: &govbus_bus::DeadLetter) -> DeadLetterView {
    DeadLetterView {
        sequence: letter.sequence,
        reason: letter.reason.clone(),
        deliveries: letter.deliveries,
        service: letter.service.clone(),
        consumer: letter.consumer.clone(),
        stream: letter.stream.clone(),
        stream_sequence: letter.stream_sequence,
        subject: letter.subject.clone(),
        dead_lettered_at: letter
            .dead_lettered_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        event: inspect::view_of(
            Some(letter.stream_sequence),
            &letter.subject,
            Some(&letter.headers),
            &letter.payload,
        ),
    }
}

pub(super) async fn dead_letters(
    State(state): State<ConsoleState>,
    Query(page): Query<Page>,
) -> ApiResult<DeadLetterList> {
    let letters = state.bus().dead_letters();
    let count = letters
        .count()
        .await
        .map_err(|error| ApiError::unavailable(error.to_string()))?;
    let items = letters
        .list(
            page.from.unwrap_or(1),
            page.limit.unwrap_or(100).clamp(1, 1_000),
        )
        .await
        .map_err(|error| ApiError::unavailable(error.to_string()))?;
    Ok(Json(DeadLetterList {
        count,
        items: items.iter().map(dead_letter_view).collect(),
    }))
}

pub(super) async fn dead_letter(
    State(state): State<ConsoleState>,
    Path(sequence): Path<u64>,
) -> ApiResult<DeadLetterView> {
    let letter = state
        .bus()
        .dead_letters()
        .get(sequence)
        .await
        .map_err(dead_letter_error)?;
    Ok(Json(dead_letter_view(&letter)))
}

fn dead_letter_error(error: govbus_bus::DeadLetterError) -> ApiError {
    match error.kind() {
        govbus_bus::DeadLetterErrorKind::NotFound => ApiError::not_found(error.to_string()),
        _ => ApiError::unavailable(error.to_string()),
    }
}

pub(super) async fn replay(
    State(state): State<ConsoleState>,
    Path(sequence): Path<u64>,
) -> ApiResult<Replayed> {
    state
        .bus()
        .dead_letters()
        .replay(sequence)
        .await
        .map_err(dead_letter_error)?;
    tracing::info!(message = "Dead letter replayed from the console.", sequence);
    Ok(Json(Replayed { replayed: 1 }))
}

pub(super) async fn replay_all(State(state): State<ConsoleState>) -> ApiResult<Replayed> {
    let replayed = state
        .bus()
        .dead_letters()
        .replay_all()
        .await
        .map_err(dead_letter_error)?;
    tracing::info!(
        message = "All dead letters replayed from the console.",
        replayed
    );
    Ok(Json(Replayed { replayed }))
}
