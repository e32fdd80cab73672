//! The stack's state: the overview, the services' health and the Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ApiResult};
use super::inspect;
use super::state::ConsoleState;
use crate::api::{DEAD_LETTER_SERVICE, Overview, ServiceHealth};
use crate::endpoints::check_health;

pub(super) async fn metrics(State(state): State<ConsoleState>) -> Response {
    let Some(handle) = state.observability().metrics.clone() else {
        return ApiError::not_found("no metrics recorder is installed in this process")
            .into_response();
    };
    // Gauges read from JetStream at scrape time, so they are never stale.
    match inspect::streams(state.bus(), state.rates()).await {
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
                if stream.service == DEAD_LETTER_SERVICE {
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

async fn service_health(state: &ConsoleState) -> Vec<ServiceHealth> {
    let checks = state
        .endpoints()
        .services
        .iter()
        .map(|endpoint| async move {
            let result = check_health(endpoint, state.tls()).await;
            ServiceHealth {
                name: endpoint.name.clone(),
                address: endpoint.address,
                healthy: result.is_ok(),
                detail: result.map_or_else(|error| error.to_string(), |()| "SERVING".to_owned()),
            }
        });
    futures_util::future::join_all(checks).await
}

pub(super) async fn services(State(state): State<ConsoleState>) -> ApiResult<Vec<ServiceHealth>> {
    Ok(Json(service_health(&state).await))
}

pub(super) async fn overview(State(state): State<ConsoleState>) -> ApiResult<Overview> {
    let endpoints = &state.endpoints();
    let bus = state.bus();
    Ok(Json(Overview {
        version: env!("CARGO_PKG_VERSION").to_owned(),
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
        traces_kept: state.observability().traces.len(),
    }))
}
