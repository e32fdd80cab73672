//! The `govbus.{{name}}.v1.{{Name}}Service` gRPC API.

use govbus_kit::audit::{CallAudit, CallContext, DataSubject};
use govbus_kit::grpc::{FieldProblems, causality, database_status, idempotent, internal_status};
use govbus_proto::{{name}}::v1 as pb;
use govbus_proto::{{name}}::v1::{{name}}_service_server::{{Name}}Service;
use tonic::{Request, Response, Status};

use crate::office::{Office, {{Name}}Error};

/// Longest request text, in characters.
const MAX_TEXT: usize = 2_000;

/// The gRPC face of the [`Office`].
#[derive(Debug, Clone)]
pub struct {{Name}}Api {
    office: Office,
    audit: CallAudit,
}

impl {{Name}}Api {
    /// Serves `office`, recording each call about a person in the processing log.
    pub fn new(office: Office, audit: CallAudit) -> Self {
        Self { office, audit }
    }
}

#[tonic::async_trait]
impl {{Name}}Service for {{Name}}Api {
    async fn file_request(
        &self,
        request: Request<pb::FileRequestRequest>,
    ) -> Result<Response<pb::FileRequestResponse>, Status> {
        let causality = causality(&request);
        let call = CallContext::of(&request);
        let request = request.into_inner();
        let mut problems = FieldProblems::default();
        problems.check_idempotency_key(&request.idempotency_key);
        if request.citizen_ref.trim().is_empty() {
            problems.push("citizen_ref", "is required");
        }
        let length = request.text.trim().chars().count();
        if !(1..=MAX_TEXT).contains(&length) {
            problems.push("text", format!("must hold 1 to {MAX_TEXT} characters"));
        }
        if !problems.is_empty() {
            return Err(problems.into_status());
        }
        self.audit
            .record(&call, DataSubject::Citizen(&request.citizen_ref));
        let idempotency = idempotent(
            "{{name}}.FileRequest",
            &request.idempotency_key,
            &request,
        );
        self.office
            .file_request(
                request.citizen_ref,
                request.text.trim().to_owned(),
                idempotency,
                causality,
            )
            .await
            .map(Response::new)
            .map_err(status)
    }

    async fn get_request(
        &self,
        request: Request<pb::GetRequestRequest>,
    ) -> Result<Response<pb::GetRequestResponse>, Status> {
        let call = CallContext::of(&request);
        let request = request.into_inner();
        if request.request_ref.trim().is_empty() {
            let mut problems = FieldProblems::default();
            problems.push("request_ref", "is required");
            return Err(problems.into_status());
        }
        let stored = self
            .office
            .request(&request.request_ref)
            .await
            .map_err(status)?;
        self.audit
            .record(&call, DataSubject::Citizen(&stored.citizen_ref));
        let state = if stored.closed {
            pb::RequestState::Closed
        } else {
            pb::RequestState::Open
        };
        Ok(Response::new(pb::GetRequestResponse {
            request: Some(pb::Request {
                request_ref: stored.request_ref,
                citizen_ref: stored.citizen_ref,
                text: stored.text,
                state: state.into(),
                close_reason: stored.close_reason,
            }),
        }))
    }
}

/// Domain errors as gRPC statuses.
fn status(error: {{Name}}Error) -> Status {
    match &error {
        {{Name}}Error::NotFound => Status::not_found(error.to_string()),
        {{Name}}Error::Idempotency(_) => Status::failed_precondition(error.to_string()),
        {{Name}}Error::Db(db) => database_status(db),
        {{Name}}Error::Event(_) => internal_status(&error),
    }
}
