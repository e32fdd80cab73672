//! The `govbus.complaints.v1.ComplaintsService` gRPC API.

use govbus_civil::Nik;
use govbus_kit::audit::{CallAudit, CallContext, DataSubject};
use govbus_kit::grpc::{FieldProblems, causality, database_status, idempotent, internal_status};
use govbus_proto::complaints::v1 as pb;
use govbus_proto::complaints::v1::complaints_service_server::ComplaintsService;
use tonic::{Request, Response, Status};

use crate::domain::{self, Category, Channel, ComplaintClass, RefusalGround};
use crate::office::{ComplaintsError, NewComplaint, Office, Verification, to_proto, to_summary};

/// A complaint's text, in characters.
const TEXT: (usize, usize) = (10, 4_000);
/// A response's text.
const RESPONSE: (usize, usize) = (1, 4_000);
/// A reason or note.
const REASON: (usize, usize) = (1, 1_000);
/// The default and largest page.
const PAGE: (u32, u32) = (100, 500);

/// The gRPC face of the [`Office`].
#[derive(Debug, Clone)]
pub struct ComplaintsApi {
    office: Office,
    audit: CallAudit,
}

impl ComplaintsApi {
    /// Serves `office`, recording every call that touches a complainant in the processing log.
    pub fn new(office: Office, audit: CallAudit) -> Self {
        Self { office, audit }
    }

    fn agency(&self, problems: &mut FieldProblems, field: &str, code: &str) -> Option<String> {
        let code = code.trim();
        if code.is_empty() {
            problems.push(field, "is required: an agency code (ListAgencies)");
            return None;
        }
        if self.office.agencies().get(code).is_none() {
            problems.push(field, "names no agency of the list (ListAgencies)");
            return None;
        }
        Some(code.to_owned())
    }

    /// Records a call about the complaint `complaint` in the processing log under its
    /// complainant.
    fn record(&self, call: &CallContext, complaint: &pb::Complaint) {
        self.audit
            .record(call, DataSubject::Citizen(&complaint.complainant_ref));
    }

    /// A command's outcome as its answer: recorded under the complainant, errors as statuses.
    fn answered(
        &self,
        call: &CallContext,
        outcome: Result<pb::Complaint, ComplaintsError>,
    ) -> Result<Option<pb::Complaint>, Status> {
        let complaint = outcome.map_err(status)?;
        self.record(call, &complaint);
        Ok(Some(complaint))
    }
}

#[tonic::async_trait]
impl ComplaintsService for ComplaintsApi {
    async fn file_complaint(
        &self,
        request: Request<pb::FileComplaintRequest>,
    ) -> Result<Response<pb::FileComplaintResponse>, Status> {
        let causality = causality(&request);
        let call = CallContext::of(&request);
        let request = request.into_inner();
        let mut problems = FieldProblems::default();
        problems.check_idempotency_key(&request.idempotency_key);
        let complainant = problems.check("complainant_nik", Nik::parse(&request.complainant_nik));
        let agency = self.agency(&mut problems, "agency_code", &request.agency_code);
        let category = problems.check(
            "category",
            Category::from_proto(request.category()).ok_or("is required"),
        );
        let channel = problems.check(
            "channel",
            Channel::from_proto(request.channel()).ok_or("is required: web, sms, app or counter"),
        );
        let text = problems.check("text", domain::free_text(&request.text, TEXT.0, TEXT.1));
        let benefit_ref = problems.check("benefit_ref", optional_reference(&request.benefit_ref));
        let application_ref = problems.check(
            "application_ref",
            optional_reference(&request.application_ref),
        );
        let (
            Some(complainant),
            Some(agency_code),
            Some(category),
            Some(channel),
            Some(text),
            Some(benefit_ref),
            Some(application_ref),
            true,
        ) = (
            complainant,
            agency,
            category,
            channel,
            text,
            benefit_ref,
            application_ref,
            problems.is_empty(),
        )
        else {
            return Err(problems.into_status());
        };
        self.audit
            .record(&call, DataSubject::Nik(complainant.as_str()));
        let idempotency = idempotent(
            "complaints.FileComplaint",
            &request.idempotency_key,
            &request,
        );
        let complaint = NewComplaint {
            complainant,
            agency_code,
            category,
            text,
            channel,
            benefit_ref,
            application_ref,
        };
        let complaint = self
            .office
            .file(complaint, idempotency, causality)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::FileComplaintResponse {
            complaint: Some(complaint),
        }))
    }

    async fn verify_complaint(
        &self,
        request: Request<pb::VerifyComplaintRequest>,
    ) -> Result<Response<pb::VerifyComplaintResponse>, Status> {
        let causality = causality(&request);
        let call = CallContext::of(&request);
        let request = request.into_inner();
        let (mut problems, complaint_ref) =
            command_fields(&request.idempotency_key, &request.complaint_ref);
        let verification = match &request.decision {
            None => {
                problems.push("decision", "is required: accept or refuse");
                None
            }
            Some(pb::verify_complaint_request::Decision::Accept(accept)) => {
                let class = problems.check(
                    "accept.class",
                    ComplaintClass::from_proto(accept.class()).ok_or(
                        "is required: ringan, normatif, tidak berkadar pengawasan or berkadar pengawasan",
                    ),
                );
                let agency_code = if accept.agency_code.trim().is_empty() {
                    Some(None)
                } else {
                    self.agency(&mut problems, "accept.agency_code", &accept.agency_code)
                        .map(Some)
                };
                match (class, agency_code) {
                    (Some(class), Some(agency_code)) => {
                        Some(Verification::Accept { class, agency_code })
                    }
                    _ => None,
                }
            }
            Some(pb::verify_complaint_request::Decision::Refuse(refuse)) => {
                let ground = problems.check(
                    "refuse.ground",
                    RefusalGround::from_proto(refuse.ground())
                        .ok_or("is required: unclear or not a public service"),
                );
                let reason = problems.check(
                    "refuse.reason",
                    domain::free_text(&refuse.reason, REASON.0, REASON.1),
                );
                match (ground, reason) {
                    (Some(ground), Some(reason)) => Some(Verification::Refuse { ground, reason }),
                    _ => None,
                }
            }
        };
        let (Some(complaint_ref), Some(verification), true) =
            (complaint_ref, verification, problems.is_empty())
        else {
            return Err(problems.into_status());
        };
        let idempotency = idempotent(
            "complaints.VerifyComplaint",
            &request.idempotency_key,
            &request,
        );
        let complaint = self.answered(
            &call,
            self.office
                .verify(complaint_ref, verification, idempotency, causality)
                .await,
        )?;
        Ok(Response::new(pb::VerifyComplaintResponse { complaint }))
    }

    async fn route_complaint(
        &self,
        request: Request<pb::RouteComplaintRequest>,
    ) -> Result<Response<pb::RouteComplaintResponse>, Status> {
        let causality = causality(&request);
        let call = CallContext::of(&request);
        let request = request.into_inner();
        let (mut problems, complaint_ref) =
            command_fields(&request.idempotency_key, &request.complaint_ref);
        let agency = self.agency(&mut problems, "agency_code", &request.agency_code);
        let note = problems.check(
            "reason",
            domain::free_text(&request.reason, REASON.0, REASON.1),
        );
        let (Some(complaint_ref), Some(agency_code), Some(note), true) =
            (complaint_ref, agency, note, problems.is_empty())
        else {
            return Err(problems.into_status());
        };
        let idempotency = idempotent(
            "complaints.RouteComplaint",
            &request.idempotency_key,
            &request,
        );
        let complaint = self.answered(
            &call,
            self.office
                .route(complaint_ref, agency_code, note, idempotency, causality)
                .await,
        )?;
        Ok(Response::new(pb::RouteComplaintResponse { complaint }))
    }

    async fn respond_to_complaint(
        &self,
        request: Request<pb::RespondToComplaintRequest>,
    ) -> Result<Response<pb::RespondToComplaintResponse>, Status> {
        let causality = causality(&request);
        let call = CallContext::of(&request);
        let request = request.into_inner();
        let (mut problems, complaint_ref) =
            command_fields(&request.idempotency_key, &request.complaint_ref);
        let agency = self.agency(&mut problems, "agency_code", &request.agency_code);
        let response = problems.check(
            "response",
            domain::free_text(&request.response, RESPONSE.0, RESPONSE.1),
        );
        let (Some(complaint_ref), Some(agency_code), Some(response), true) =
            (complaint_ref, agency, response, problems.is_empty())
        else {
            return Err(problems.into_status());
        };
        let idempotency = idempotent(
            "complaints.RespondToComplaint",
            &request.idempotency_key,
            &request,
        );
        let complaint = self.answered(
            &call,
            self.office
                .respond(complaint_ref, agency_code, response, idempotency, causality)
                .await,
        )?;
        Ok(Response::new(pb::RespondToComplaintResponse { complaint }))
    }

    async fn close_complaint(
        &self,
        request: Request<pb::CloseComplaintRequest>,
    ) -> Result<Response<pb::CloseComplaintResponse>, Status> {
        let causality = causality(&request);
        let call = CallContext::of(&request);
        let request = request.into_inner();
        let (problems, complaint_ref) =
            command_fields(&request.idempotency_key, &request.complaint_ref);
        let (Some(complaint_ref), true) = (complaint_ref, problems.is_empty()) else {
            return Err(problems.into_status());
        };
        let idempotency = idempotent(
            "complaints.CloseComplaint",
            &request.idempotency_key,
            &request,
        );
        let complaint = self.answered(
            &call,
            self.office
                .close(complaint_ref, idempotency, causality)
                .await,
        )?;
        Ok(Response::new(pb::CloseComplaintResponse { complaint }))
    }

    async fn reopen_complaint(
        &self,
        request: Request<pb::ReopenComplaintRequest>,
    ) -> Result<Response<pb::ReopenComplaintResponse>, Status> {
        let causality = causality(&request);
        let call = CallContext::of(&request);
        let request = request.into_inner();
        let (mut problems, complaint_ref) =
            command_fields(&request.idempotency_key, &request.complaint_ref);
        let reason = problems.check(
            "reason",
            domain::free_text(&request.reason, REASON.0, REASON.1),
        );
        let (Some(complaint_ref), Some(reason), true) =
            (complaint_ref, reason, problems.is_empty())
        else {
            return Err(problems.into_status());
        };
        let idempotency = idempotent(
            "complaints.ReopenComplaint",
            &request.idempotency_key,
            &request,
        );
        let complaint = self.answered(
            &call,
            self.office
                .reopen(complaint_ref, reason, idempotency, causality)
                .await,
        )?;
        Ok(Response::new(pb::ReopenComplaintResponse { complaint }))
    }

    async fn get_complaint(
        &self,
        request: Request<pb::GetComplaintRequest>,
    ) -> Result<Response<pb::GetComplaintResponse>, Status> {
        let call = CallContext::of(&request);
        let request = request.into_inner();
        let mut problems = FieldProblems::default();
        let Some(complaint_ref) =
            problems.check("complaint_ref", reference(&request.complaint_ref))
        else {
            return Err(problems.into_status());
        };
        let complaint = self
            .office
            .complaint(&complaint_ref)
            .await
            .map_err(status)?;
        let complaint = to_proto(&complaint);
        self.record(&call, &complaint);
        Ok(Response::new(pb::GetComplaintResponse {
            complaint: Some(complaint),
        }))
    }

    async fn list_complaints(
        &self,
        request: Request<pb::ListComplaintsRequest>,
    ) -> Result<Response<pb::ListComplaintsResponse>, Status> {
        let request = request.into_inner();
        let mut problems = FieldProblems::default();
        let agency = if request.agency_code.trim().is_empty() {
            Some(None)
        } else {
            self.agency(&mut problems, "agency_code", &request.agency_code)
                .map(Some)
        };
        let status_filter = match request.status() {
            pb::ComplaintStatus::Unspecified => None,
            status => domain::Status::from_proto(status),
        };
        let size = match request.page_size {
            0 => PAGE.0,
            size if size <= PAGE.1 => size,
            _ => {
                problems.push("page_size", format!("must be at most {}", PAGE.1));
                PAGE.0
            }
        };
        let after = if request.page_token.is_empty() {
            Some(None)
        } else {
            problems
                .check(
                    "page_token",
                    reference(&request.page_token)
                        .map_err(|_| "must be a next_page_token this method answered"),
                )
                .map(Some)
        };
        let (Some(agency), Some(after), true) = (agency, after, problems.is_empty()) else {
            return Err(problems.into_status());
        };
        let page = self
            .office
            .list(agency.as_deref(), status_filter, after.as_deref(), size)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListComplaintsResponse {
            complaints: page.complaints.iter().map(to_summary).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn list_agencies(
        &self,
        _request: Request<pb::ListAgenciesRequest>,
    ) -> Result<Response<pb::ListAgenciesResponse>, Status> {
        let agencies = self.office.agencies();
        let deadlines = self.office.deadlines();
        Ok(Response::new(pb::ListAgenciesResponse {
            agencies: agencies
                .iter()
                .map(|agency| pb::Agency {
                    code: agency.code.clone(),
                    name: agency.name.clone(),
                    kind: agency.kind.clone(),
                })
                .collect(),
            classes: ComplaintClass::ALL
                .iter()
                .map(|class| pb::ClassDeadline {
                    class: class.to_proto().into(),
                    working_days: deadlines.response(*class).working_days().unwrap_or(0),
                })
                .collect(),
            verification_working_days: deadlines.verification.working_days().unwrap_or(0),
            source: agencies.source().to_owned(),
        }))
    }
}

/// A command's problems so far, with its idempotency key and complaint reference checked.
fn command_fields(idempotency_key: &str, complaint_ref: &str) -> (FieldProblems, Option<String>) {
    let mut problems = FieldProblems::default();
    problems.check_idempotency_key(idempotency_key);
    let complaint_ref = problems.check("complaint_ref", reference(complaint_ref));
    (problems, complaint_ref)
}

/// A complaint reference: a UUID.
fn reference(text: &str) -> Result<String, &'static str> {
    uuid::Uuid::parse_str(text.trim())
        .map(|uuid| uuid.to_string())
        .map_err(|_| "must be a complaint reference (a UUID)")
}

/// Another service's reference (a UUID), or nothing.
fn optional_reference(text: &str) -> Result<String, &'static str> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(String::new());
    }
    uuid::Uuid::parse_str(text)
        .map(|uuid| uuid.to_string())
        .map_err(|_| "must be empty or a reference (a UUID)")
}

/// Domain errors as gRPC statuses.
fn status(error: ComplaintsError) -> Status {
    match &error {
        ComplaintsError::NotFound => Status::not_found(error.to_string()),
        ComplaintsError::NotInRegister
        | ComplaintsError::Deceased
        | ComplaintsError::WrongStatus { .. }
        | ComplaintsError::AlreadyWith(_)
        | ComplaintsError::NotWithAgency(_)
        | ComplaintsError::Idempotency(_) => Status::failed_precondition(error.to_string()),
        ComplaintsError::IdentityUnavailable(_) => {
            tracing::warn!(message = "Identity service unavailable.", %error);
            Status::unavailable(error.to_string())
        }
        ComplaintsError::Db(db) => database_status(db),
        ComplaintsError::Event(_) => internal_status(&error),
    }
}
