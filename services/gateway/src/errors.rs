//! Errors as HTTP answers: the gRPC status mapped to its HTTP status by the standard table, and
//! the body in the shape of Google's API errors, with every field violation.
//!
//! ```json
//! {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": "…",
//!            "details": [{"@type": "type.googleapis.com/google.rpc.BadRequest",
//!                         "fieldViolations": [{"field": "nik", "description": "…"}]}]}}
//! ```

use axum::body::Body;
use axum::response::Response;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use serde::Serialize;
use tonic::Code;
use tonic_types::StatusExt;

/// The HTTP status of a gRPC code (the gRPC-HTTP mapping of the transcoding specification).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The name of a gRPC code, as the JSON error carries it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The JSON error body.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorDetail {
    /// The HTTP status.
    pub code: u16,
    /// The gRPC code's name.
    pub status: &'static str,
    /// The message.
    pub message: String,
    /// A `google.rpc.BadRequest` with the field violations, when there are any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<BadRequest>,
}

/// `google.rpc.BadRequest` in its JSON form.
#[derive(Debug, Clone, Serialize)]
pub struct BadRequest {
    /// Its type URL.
    #[serde(rename = "@type")]
    pub type_url: &'static str,
    /// Every invalid field.
    #[serde(rename = "fieldViolations")]
    pub field_violations: Vec<FieldViolation>,
}

/// One invalid field.
#[derive(Debug, Clone, Serialize)]
pub struct FieldViolation {
    /// The field.
    pub field: String,
    /// What is wrong with it.
    pub description: String,
}

impl ErrorBody {
    /// The body of a failed call.
    pub fn of_status(status: &tonic::Status) -> (StatusCode, Self) {
        let http = http_status(status.code());
        let violations: Vec<FieldViolation> = status
            .get_details_bad_request()
            .map(|bad| {
                bad.field_violations
                    .into_iter()
                    .map(|violation| FieldViolation {
                        field: violation.field,
                        description: violation.description,
                    })
                    .collect()
            })
            .unwrap_or_default();
        (
            http,
            Self::new(http, status.code(), status.message(), violations),
        )
    }

    /// A body for `code` with `message` and `violations`.
    pub fn new(
        http: StatusCode,
        code: Code,
        message: impl Into<String>,
        violations: Vec<FieldViolation>,
    ) -> Self {
        let details = if violations.is_empty() {
            Vec::new()
        } else {
            vec![BadRequest {
                type_url: "type.googleapis.com/google.rpc.BadRequest",
                field_violations: violations,
            }]
        };
        Self {
            error: ErrorDetail {
                code: http.as_u16(),
                status: code_name(code),
                message: message.into(),
                details,
            },
        }
    }
}

pub(crate) fn json(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `value` as a JSON answer with `status`.
pub(crate) fn json_value(status: StatusCode, value: &serde_json::Value) -> Response {
    json(status, serde_json::to_vec(value).unwrap_or_default())
}

pub(crate) fn error(status: StatusCode, code: Code, message: impl Into<String>) -> Response {
    failure(status, ErrorBody::new(status, code, message, Vec::new()))
}

pub(crate) fn failure(status: StatusCode, body: ErrorBody) -> Response {
    json(status, serde_json::to_vec(&body).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_standard_statuses() {
        assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(
            http_status(Code::FailedPrecondition),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(http_status(Code::AlreadyExists), StatusCode::CONFLICT);
        assert_eq!(http_status(Code::PermissionDenied), StatusCode::FORBIDDEN);
        assert_eq!(http_status(Code::Unauthenticated), StatusCode::UNAUTHORIZED);
        assert_eq!(
            http_status(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            http_status(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            http_status(Code::DeadlineExceeded),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(http_status(Code::Cancelled).as_u16(), 499);
    }
}
