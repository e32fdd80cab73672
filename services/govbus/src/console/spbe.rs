//! The SPBE dashboard, read from evaluation.

use axum::Json;
use axum::extract::{Query, State};
use govbus_proto::evaluation::v1 as evaluation;
use govbus_proto::evaluation::v1::evaluation_service_client::EvaluationServiceClient;

use super::error::{ApiError, ApiResult};
use super::inspect;
use super::state::ConsoleState;
use crate::api::{Spbe, SpbeQuery};
use crate::endpoints::grpc_channel;

/// Kota Malang, the instance the SPBE dashboard shows unless asked for another.
const DEFAULT_INSTANCE: &str = "35.73";

pub(super) async fn spbe(
    State(state): State<ConsoleState>,
    Query(query): Query<SpbeQuery>,
) -> ApiResult<Spbe> {
    let endpoint = state
        .endpoints()
        .service("evaluation")
        .ok_or_else(|| ApiError::unavailable("no evaluation service in this stack"))?;
    let channel = grpc_channel(endpoint, state.tls())
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
