//! The complaints page, read from the complaints service: where each complaint stands, without
//! its complainant or its text.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use govbus_proto::complaints::v1 as complaints;
use govbus_proto::complaints::v1::complaints_service_client::ComplaintsServiceClient;

use super::error::{ApiError, ApiResult};
use super::state::ConsoleState;
use crate::api::{ClassDays, ComplaintRow, Complaints, ComplaintsQuery};
use crate::endpoints::grpc_channel;

/// An enum value's proto name without its prefix, lowercase: `COMPLAINT_STATUS_WITH_AGENCY`
/// is `with_agency`.
fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_lowercase()
}

pub(super) async fn complaints(
    State(state): State<ConsoleState>,
    Query(query): Query<ComplaintsQuery>,
) -> ApiResult<Complaints> {
    let status = match query.status.as_deref() {
        None | Some("") => complaints::ComplaintStatus::Unspecified,
        Some(text) => complaints::ComplaintStatus::from_str_name(&format!(
            "COMPLAINT_STATUS_{}",
            text.to_uppercase()
        ))
        .filter(|status| *status != complaints::ComplaintStatus::Unspecified)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "status {text:?} is not one of awaiting_verification, refused, with_agency, \
                     responded, closed"
                ),
            )
        })?,
    };
    let endpoint = state
        .endpoints()
        .service("complaints")
        .ok_or_else(|| ApiError::unavailable("no complaints service in this stack"))?;
    let channel = grpc_channel(endpoint, state.tls())
        .map_err(|error| ApiError::unavailable(format!("complaints: {error}")))?;
    let mut client = ComplaintsServiceClient::new(channel);
    let answer = |status: tonic::Status| match status.code() {
        tonic::Code::InvalidArgument => {
            ApiError::new(StatusCode::BAD_REQUEST, status.message().to_owned())
        }
        _ => ApiError::unavailable(format!("complaints: {}", status.message())),
    };
    let agencies = client
        .list_agencies(complaints::ListAgenciesRequest {})
        .await
        .map_err(answer)?
        .into_inner();
    let listed = client
        .list_complaints(complaints::ListComplaintsRequest {
            agency_code: query.agency.unwrap_or_default(),
            status: status.into(),
            page_size: query.limit.unwrap_or(100),
            page_token: query.page_token.unwrap_or_default(),
        })
        .await
        .map_err(answer)?
        .into_inner();
    let names: BTreeMap<&str, &str> = agencies
        .agencies
        .iter()
        .map(|agency| (agency.code.as_str(), agency.name.as_str()))
        .collect();
    let class_name = |class: complaints::ComplaintClass| match class {
        complaints::ComplaintClass::Unspecified => String::new(),
        class => short(class.as_str_name(), "COMPLAINT_CLASS_"),
    };
    Ok(Json(Complaints {
        complaints: listed
            .complaints
            .iter()
            .map(|complaint| ComplaintRow {
                complaint_ref: complaint.complaint_ref.clone(),
                status: short(complaint.status().as_str_name(), "COMPLAINT_STATUS_"),
                agency_name: names
                    .get(complaint.agency_code.as_str())
                    .copied()
                    .unwrap_or_default()
                    .to_owned(),
                agency_code: complaint.agency_code.clone(),
                category: short(complaint.category().as_str_name(), "CATEGORY_"),
                channel: short(complaint.channel().as_str_name(), "CHANNEL_"),
                class: class_name(complaint.class()),
                deadline: complaint.deadline.clone(),
                escalated: complaint.escalated,
                national_ref: complaint.national_ref.clone(),
                filed_at: complaint.filed_at.clone(),
            })
            .collect(),
        next_page_token: listed.next_page_token,
        classes: agencies
            .classes
            .iter()
            .map(|class| ClassDays {
                class: class_name(class.class()),
                working_days: class.working_days,
            })
            .collect(),
        verification_working_days: agencies.verification_working_days,
        agencies_source: agencies.source,
    }))
}
