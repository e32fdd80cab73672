//! The console's routes: pages, the JSON API, `/metrics` and `/healthz`.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{Stream, StreamExt as _};
use govbus_proto::evaluation::v1 as evaluation;
use govbus_proto::evaluation::v1::evaluation_service_client::EvaluationServiceClient;
use serde::{Deserialize, Serialize};

use super::ConsoleState;
use super::inspect::{self, EventView};
use crate::stack::{check_health, grpc_channel};

/// Kota Malang, the instance the SPBE dashboard shows unless asked for another.
const DEFAULT_INSTANCE: &str = "35.73";

pub(super) fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/style.css", get(style))
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics))
        .route("/api/overview", get(overview))
        .route("/api/services", get(services))
        .route("/api/streams", get(streams))
        .route("/api/flow", get(flow))
        .route("/api/events", get(events))
        .route("/api/events/live", get(live_events))
        .route("/api/deadletters", get(dead_letters))
        .route("/api/deadletters/replay-all", post(replay_all))
        .route("/api/deadletters/{sequence}", get(dead_letter))
        .route("/api/deadletters/{sequence}/replay", post(replay))
        .route("/api/traces", get(traces))
        .route("/api/traces/{trace_id}", get(trace))
        .route("/api/spbe", get(spbe))
        .route("/api/audit/verify", post(super::audit::verify))
        .route("/api/audit/subject", post(super::audit::subject))
        .with_state(state)
}

/// An API failure: a status and a message, as JSON `{"error": "…"}`.
#[derive(Debug)]
pub(super) struct ApiError(StatusCode, String);

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self(status, message.into())
    }

    pub(super) fn unavailable(message: impl Into<String>) -> Self {
        Self(StatusCode::SERVICE_UNAVAILABLE, message.into())
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self(StatusCode::NOT_FOUND, message.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

pub(super) type ApiResult<T> = Result<Json<T>, ApiError>;

async fn page() -> impl IntoResponse {
    asset(
        "text/html; charset=utf-8",
        include_str!("assets/index.html"),
    )
}

async fn script() -> impl IntoResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
}

async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", include_str!("assets/style.css"))
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

async fn metrics(State(state): State<ConsoleState>) -> Response {
    let Some(handle) = state.inner.observability.metrics.clone() else {
        return ApiError::not_found("no metrics recorder is installed in this process")
            .into_response();
    };
    // Gauges read from JetStream at scrape time, so they are never stale.
    match inspect::streams(&state.inner.bus, &state.inner.rates).await {
        Ok(streams) => {
            for stream in &streams {
                metrics::gauge!("govbus_stream_messages", "stream" => stream.name.clone())
                    .set(stream.messages as f64);
                for consumer in &stream.consumers {
                    let labels = [
                        ("stream", stream.name.clone()),
                        ("consumer", consumer.name.clone()),
                        ("service", consumer.service.clone()),
                    ];
                    metrics::gauge!("govbus_consumer_pending", &labels)
                        .set(consumer.pending as f64);
                    metrics::gauge!("govbus_consumer_ack_pending", &labels)
                        .set(consumer.ack_pending as f64);
                    metrics::gauge!("govbus_consumer_lag", &labels).set(consumer.lag as f64);
                    metrics::gauge!("govbus_consumer_redelivered", &labels)
                        .set(consumer.redelivered as f64);
                }
                if stream.service == "deadletter" {
                    metrics::gauge!("govbus_dead_letters").set(stream.messages as f64);
                }
            }
        }
        Err(error) => tracing::warn!(message = "Cannot read the streams for metrics.", %error),
    }
    handle.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response()
}

#[derive(Debug, Serialize)]
struct ServiceHealth {
    name: String,
    address: String,
    healthy: bool,
    detail: String,
}

async fn service_health(state: &ConsoleState) -> Vec<ServiceHealth> {
    let checks = state
        .inner
        .endpoints
        .services
        .iter()
        .map(|endpoint| async move {
            let result = check_health(endpoint, state.inner.tls.as_ref()).await;
            ServiceHealth {
                name: endpoint.name.clone(),
                address: endpoint.address.to_string(),
                healthy: result.is_ok(),
                detail: result.err().unwrap_or_else(|| "SERVING".to_owned()),
            }
        });
    futures_util::future::join_all(checks).await
}

async fn services(State(state): State<ConsoleState>) -> ApiResult<Vec<ServiceHealth>> {
    Ok(Json(service_health(&state).await))
}

#[derive(Debug, Serialize)]
struct Overview {
    version: &'static str,
    nats_url: String,
    nats_embedded: bool,
    nats_connected: bool,
    data_dir: String,
    /// Whether the services speak mutual TLS, and where their certificates are.
    tls: bool,
    certificates_dir: Option<String>,
    services: Vec<ServiceHealth>,
    dead_letters: Option<u64>,
    traces_kept: usize,
}

async fn overview(State(state): State<ConsoleState>) -> ApiResult<Overview> {
    let endpoints = &state.inner.endpoints;
    let bus = &state.inner.bus;
    Ok(Json(Overview {
        version: env!("CARGO_PKG_VERSION"),
        nats_url: endpoints.nats_url.clone(),
        nats_embedded: endpoints.nats_embedded,
        nats_connected: bus.client().connection_state() == async_nats::connection::State::Connected,
        data_dir: endpoints.data_dir.display().to_string(),
        tls: endpoints.certificates_dir.is_some(),
        certificates_dir: endpoints
            .certificates_dir
            .as_ref()
            .map(|dir| dir.display().to_string()),
        services: service_health(&state).await,
        dead_letters: bus.dead_letters().count().await.ok(),
        traces_kept: state.inner.observability.traces.len(),
    }))
}

async fn streams(State(state): State<ConsoleState>) -> ApiResult<Vec<inspect::StreamView>> {
    inspect::streams(&state.inner.bus, &state.inner.rates)
        .await
        .map(Json)
        .map_err(ApiError::unavailable)
}

async fn flow(State(state): State<ConsoleState>) -> ApiResult<Vec<inspect::FlowEdge>> {
    let streams = inspect::streams(&state.inner.bus, &state.inner.rates)
        .await
        .map_err(ApiError::unavailable)?;
    Ok(Json(inspect::flow(&streams)))
}

#[derive(Debug, Deserialize)]
struct EventFilter {
    service: Option<String>,
    #[serde(rename = "type")]
    event_type: Option<String>,
    limit: Option<usize>,
}

async fn events(
    State(state): State<ConsoleState>,
    Query(filter): Query<EventFilter>,
) -> ApiResult<Vec<EventView>> {
    let limit = filter.limit.unwrap_or(50).clamp(1, 1_000);
    inspect::recent_events(
        &state.inner.bus,
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
async fn live_events(
    State(state): State<ConsoleState>,
    Query(filter): Query<EventFilter>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let prefix = state.inner.bus.topology().prefix().to_owned();
    let subject = match &filter.service {
        Some(service) => format!("{prefix}.{service}.>"),
        None => format!("{prefix}.>"),
    };
    let subscriber = state
        .inner
        .bus
        .client()
        .subscribe(subject)
        .await
        .map_err(|error| ApiError::unavailable(format!("subscribing: {error}")))?;
    let dead_letters = format!("{prefix}.deadletter.");
    let wanted_type = filter.event_type;
    let closing = state.inner.closing.clone();
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

#[derive(Debug, Serialize)]
struct DeadLetterView {
    sequence: u64,
    reason: String,
    deliveries: u64,
    service: String,
    consumer: String,
    stream: String,
    stream_sequence: u64,
    subject: String,
    dead_lettered_at: String,
    event: EventView,
}

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

#[derive(Debug, Deserialize)]
struct Page {
    from: Option<u64>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct DeadLetterList {
    count: u64,
    items: Vec<DeadLetterView>,
}

async fn dead_letters(
    State(state): State<ConsoleState>,
    Query(page): Query<Page>,
) -> ApiResult<DeadLetterList> {
    let letters = state.inner.bus.dead_letters();
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

async fn dead_letter(
    State(state): State<ConsoleState>,
    Path(sequence): Path<u64>,
) -> ApiResult<DeadLetterView> {
    let letter = state
        .inner
        .bus
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

#[derive(Debug, Serialize)]
struct Replayed {
    replayed: usize,
}

async fn replay(
    State(state): State<ConsoleState>,
    Path(sequence): Path<u64>,
) -> ApiResult<Replayed> {
    state
        .inner
        .bus
        .dead_letters()
        .replay(sequence)
        .await
        .map_err(dead_letter_error)?;
    tracing::info!(message = "Dead letter replayed from the console.", sequence);
    Ok(Json(Replayed { replayed: 1 }))
}

async fn replay_all(State(state): State<ConsoleState>) -> ApiResult<Replayed> {
    let replayed = state
        .inner
        .bus
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

#[derive(Debug, Deserialize)]
struct TraceQuery {
    limit: Option<usize>,
}

async fn traces(
    State(state): State<ConsoleState>,
    Query(query): Query<TraceQuery>,
) -> ApiResult<Vec<govbus_kit::telemetry::TraceSummary>> {
    let limit = query.limit.unwrap_or(100).clamp(1, 10_000);
    Ok(Json(state.inner.observability.traces.recent(limit)))
}

async fn trace(
    State(state): State<ConsoleState>,
    Path(trace_id): Path<String>,
) -> ApiResult<Vec<govbus_kit::telemetry::RecordedSpan>> {
    state
        .inner
        .observability
        .traces
        .get(&trace_id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("trace {trace_id} is not kept (or never was)")))
}

#[derive(Debug, Deserialize)]
struct SpbeQuery {
    instance: Option<String>,
    year: Option<i32>,
}

#[derive(Debug, Serialize)]
struct Spbe {
    history: serde_json::Value,
    assessment: Option<serde_json::Value>,
    evidence: serde_json::Value,
}

async fn spbe(
    State(state): State<ConsoleState>,
    Query(query): Query<SpbeQuery>,
) -> ApiResult<Spbe> {
    let endpoint = state
        .inner
        .endpoints
        .services
        .iter()
        .find(|endpoint| endpoint.name == "evaluation")
        .ok_or_else(|| ApiError::unavailable("no evaluation service in this stack"))?;
    let channel = grpc_channel(endpoint, state.inner.tls.as_ref())
        .map_err(|error| ApiError::unavailable(format!("evaluation: {error}")))?;
    let mut client = EvaluationServiceClient::new(channel);
    let instance = query
        .instance
        .unwrap_or_else(|| DEFAULT_INSTANCE.to_owned());
    let unavailable =
        |status: tonic::Status| ApiError::unavailable(format!("evaluation: {}", status.message()));
    let history = client
        .get_history(evaluation::GetHistoryRequest {
            instance_code: instance.clone(),
        })
        .await
        .map_err(unavailable)?
        .into_inner();
    let year = query
        .year
        .or_else(|| history.years.iter().map(|year| year.year).max());
    let assessment = match year {
        Some(year) => client
            .get_assessment(evaluation::GetAssessmentRequest {
                instance_code: instance,
                year,
            })
            .await
            .ok()
            .map(|response| {
                inspect::to_masked_json("govbus.evaluation.v1.Assessment", &response.into_inner())
            }),
        None => None,
    };
    let evidence = client
        .get_integration_evidence(evaluation::GetIntegrationEvidenceRequest {})
        .await
        .map_err(unavailable)?
        .into_inner();
    Ok(Json(Spbe {
        history: inspect::to_masked_json("govbus.evaluation.v1.History", &history),
        assessment,
        evidence: inspect::to_masked_json("govbus.evaluation.v1.IntegrationEvidence", &evidence),
    }))
}
