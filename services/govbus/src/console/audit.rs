//! The console's processing-log API: verifying the log, and one person's history.
//!
//! Both are POSTs: a NIK travels in the body, never in a URL (URLs end up in access logs).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use govbus_civil::Nik;
use govbus_kit::audit::{self, DataSubject, Entry, Head, Report, SubjectKey, TrustAnchors};
use govbus_proto::identity::v1 as identity;
use govbus_proto::identity::v1::identity_service_client::IdentityServiceClient;
use serde::{Deserialize, Serialize};

use super::ConsoleState;
use super::api::{ApiError, ApiResult};
use crate::stack::grpc_channel;

/// What the console needs to read the processing log: the subject key and the CA that issued
/// the writers' certificates.
#[derive(Debug, Clone)]
pub struct AuditAccess {
    /// The deployment's key for hashing people.
    pub subject_key: SubjectKey,
    /// The CA the writers' certificates must chain to.
    pub trust: TrustAnchors,
}

/// `POST /api/audit/verify`: optionally the heads an earlier verification reported.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifyRequest {
    #[serde(default)]
    heads: Vec<Head>,
}

/// A verification, with its verdict first.
#[derive(Debug, Serialize)]
pub(super) struct Verified {
    intact: bool,
    #[serde(flatten)]
    report: Report,
}

pub(super) async fn verify(
    State(state): State<ConsoleState>,
    body: Option<Json<VerifyRequest>>,
) -> ApiResult<Verified> {
    let access = access(&state)?;
    let request = body.map(|Json(request)| request).unwrap_or_default();
    let blocks = read(&state).await?;
    let report = audit::verify(
        &blocks,
        state.inner.bus.topology(),
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SubjectRequest {
    nik: String,
}

/// A person's processing history.
#[derive(Debug, Serialize)]
pub(super) struct SubjectHistory {
    /// Whether identity knows the NIK (then deliveries of events about the person are included).
    registered: bool,
    /// Whether the whole log verified intact when the history was read.
    log_intact: bool,
    entries: Vec<Entry>,
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
    let report = audit::verify(&blocks, state.inner.bus.topology(), &access.trust, &[]);
    Ok(Json(SubjectHistory {
        registered: citizen_ref.is_some(),
        log_intact: report.intact(),
        entries: audit::history(&blocks, &digests),
    }))
}

fn access(state: &ConsoleState) -> Result<&AuditAccess, ApiError> {
    state.inner.audit.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "the processing log is off in this stack (it needs TLS: set tls.enabled = true)",
        )
    })
}

async fn read(state: &ConsoleState) -> Result<Vec<audit::StoredBlock>, ApiError> {
    audit::read_log(state.inner.bus.jetstream(), state.inner.bus.topology())
        .await
        .map_err(|error| ApiError::unavailable(error.to_string()))
}

/// The person's reference at identity, if the NIK is registered (dead or alive).
async fn citizen_ref(state: &ConsoleState, nik: &Nik) -> Result<Option<String>, ApiError> {
    let endpoint = state
        .inner
        .endpoints
        .services
        .iter()
        .find(|endpoint| endpoint.name == "identity")
        .ok_or_else(|| ApiError::unavailable("no identity service in this stack"))?;
    let channel = grpc_channel(endpoint, state.inner.tls.as_ref())
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
