//! The console's processing-log API: verifying the log, and one person's history.
//!
//! Both are POSTs: a NIK travels in the body, never in a URL (URLs end up in access logs).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use govbus_civil::Nik;
use govbus_kit::audit::{self, DataSubject};
use govbus_proto::identity::v1 as identity;
use govbus_proto::identity::v1::identity_service_client::IdentityServiceClient;

use super::error::{ApiError, ApiResult};
use super::state::{AuditAccess, ConsoleState};
use crate::api::{SubjectHistory, SubjectRequest, Verified, VerifyRequest};
use crate::endpoints::grpc_channel;

pub(super) async fn verify(
    State(state): State<ConsoleState>,
    body: Option<Json<VerifyRequest>>,
) -> ApiResult<Verified> {
    let access = access(&state)?;
    let request = body.map(|Json(request)| request).unwrap_or_default();
    let blocks = read(&state).await?;
    let report = audit::verify(
        &blocks,
        state.bus().topology(),
        &access.trust,
        &request.heads,
    );
    if !report.intact() {
        tracing::warn!(
            message = "The processing log failed verification.",
            problems = report.problems.len(),
        );
    }
    Ok(Json(Verified {
        intact: report.intact(),
        report,
    }))
}

pub(super) async fn subject(
    State(state): State<ConsoleState>,
    Json(request): Json<SubjectRequest>,
) -> ApiResult<SubjectHistory> {
    let access = access(&state)?;
    let nik = Nik::parse(&request.nik)
        .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, format!("nik: {error}")))?;
    // Calls carry the NIK; events carry the pseudonymous reference identity gave the person.
    let citizen_ref = citizen_ref(&state, &nik).await?;
    let mut digests = vec![access.subject_key.digest(DataSubject::Nik(nik.as_str()))];
    if let Some(reference) = &citizen_ref {
        digests.push(access.subject_key.digest(DataSubject::Citizen(reference)));
    }
    let blocks = read(&state).await?;
    let report = audit::verify(&blocks, state.bus().topology(), &access.trust, &[]);
    Ok(Json(SubjectHistory {
        registered: citizen_ref.is_some(),
        log_intact: report.intact(),
        entries: audit::history(&blocks, &digests),
    }))
}

fn access(state: &ConsoleState) -> Result<&AuditAccess, ApiError> {
    state.audit().ok_or_else(|| {
        ApiError::unavailable(
            "the processing log is off in this stack (it needs TLS: set tls.enabled = true)",
        )
    })
}

async fn read(state: &ConsoleState) -> Result<Vec<audit::StoredBlock>, ApiError> {
    audit::read_log(state.bus().jetstream(), state.bus().topology())
        .await
        .map_err(|error| ApiError::unavailable(error.to_string()))
}

/// The person's reference at identity, if the NIK is registered (dead or alive).
async fn citizen_ref(state: &ConsoleState, nik: &Nik) -> Result<Option<String>, ApiError> {
    let endpoint = state
        .endpoints()
        .service("identity")
        .ok_or_else(|| ApiError::unavailable("no identity service in this stack"))?;
    let channel = grpc_channel(endpoint, state.tls())
        .map_err(|error| ApiError::unavailable(format!("identity: {error}")))?;
    let response = IdentityServiceClient::new(channel)
        .verify_citizen(identity::VerifyCitizenRequest {
            nik: nik.as_str().to_owned(),
            ..Default::default()
        })
        .await
        .map_err(|status| ApiError::unavailable(format!("identity: {}", status.message())))?
        .into_inner();
    Ok((!response.citizen_ref.is_empty()).then_some(response.citizen_ref))
}
