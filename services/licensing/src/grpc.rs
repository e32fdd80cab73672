//! The `govbus.licensing.v1.LicensingService` gRPC API.

use govbus_civil::{Kelurahan, Nik, text_line};
use govbus_kit::audit::{CallAudit, CallContext, DataSubject};
use govbus_kit::grpc::{FieldProblems, causality, database_status, idempotent, internal_status};
use govbus_proto::licensing::v1 as pb;
use govbus_proto::licensing::v1::licensing_service_server::LicensingService;
use tonic::{Request, Response, Status};

use crate::domain::{RiskLevel, kbli_code};
use crate::office::{LicensingError, NewApplication, Office};

/// The gRPC face of the [`Office`].
#[derive(Debug, Clone)]
pub struct LicensingApi {
    office: Office,
    audit: CallAudit,
}

impl LicensingApi {
    /// Serves `office`, recording each application in the processing log under its applicant.
    pub fn new(office: Office, audit: CallAudit) -> Self {
        Self { office, audit }
    }
}

#[tonic::async_trait]
impl LicensingService for LicensingApi {
    async fn apply_for_licence(
        &self,
        request: Request<pb::ApplyForLicenceRequest>,
    ) -> Result<Response<pb::Application>, Status> {
        let causality = causality(&request);
        let call = CallContext::of(&request);
        let request = request.into_inner();
        async {
            let mut problems = FieldProblems::default();
            problems.check_idempotency_key(&request.idempotency_key);
            let applicant = problems.check("applicant_nik", Nik::parse(&request.applicant_nik));
            let business_name =
                problems.check("business_name", text_line(&request.business_name, 200));
            let kbli = problems.check("kbli_code", kbli_code(&request.kbli_code));
            let kelurahan =
                problems.check("kelurahan_code", Kelurahan::parse(&request.kelurahan_code));
            let risk_level = problems.check(
                "risk_level",
                RiskLevel::from_proto(request.risk_level())
                    .ok_or("is required: rendah, menengah rendah, menengah tinggi or tinggi"),
            );
            let (
                Some(applicant),
                Some(business_name),
                Some(kbli_code),
                Some(kelurahan),
                Some(risk_level),
                true,
            ) = (
                applicant,
                business_name,
                kbli,
                kelurahan,
                risk_level,
                problems.is_empty(),
            )
            else {
                return Err(problems.into_status());
            };
            self.audit
                .record(&call, DataSubject::Nik(applicant.as_str()));
            let application = NewApplication {
                applicant,
                business_name,
                kbli_code,
                kelurahan,
                risk_level,
            };
            let idempotency = idempotent(
                "licensing.ApplyForLicence",
                &request.idempotency_key,
                &request,
            );
            self.office
                .apply(application, idempotency, causality)
                .await
                .map(Response::new)
                .map_err(status)
        }
        .await
    }

    async fn decide_application(
        &self,
        request: Request<pb::DecideApplicationRequest>,
    ) -> Result<Response<pb::Application>, Status> {
        let causality = causality(&request);
        let request = request.into_inner();
        async {
            let mut problems = FieldProblems::default();
            problems.check_idempotency_key(&request.idempotency_key);
            let application_ref =
                problems.check("application_ref", reference(&request.application_ref));
            let reason = request.reason.trim();
            if !request.approve && reason.is_empty() {
                problems.push("reason", "is required when refusing");
            }
            if reason.chars().count() > 500 || reason.chars().any(char::is_control) {
                problems.push(
                    "reason",
                    "must be at most 500 characters without control characters",
                );
            }
            let (Some(application_ref), true) = (application_ref, problems.is_empty()) else {
                return Err(problems.into_status());
            };
            let idempotency = idempotent(
                "licensing.DecideApplication",
                &request.idempotency_key,
                &request,
            );
            self.office
                .decide(
                    application_ref.to_owned(),
                    request.approve,
                    reason.to_owned(),
                    idempotency,
                    causality,
                )
                .await
                .map(Response::new)
                .map_err(status)
        }
        .await
    }

    async fn get_application(
        &self,
        request: Request<pb::GetApplicationRequest>,
    ) -> Result<Response<pb::Application>, Status> {
        let request = request.into_inner();
        let mut problems = FieldProblems::default();
        let Some(application_ref) =
            problems.check("application_ref", reference(&request.application_ref))
        else {
            return Err(problems.into_status());
        };
        self.office
            .application(&application_ref)
            .await
            .map(Response::new)
            .map_err(status)
    }
}

/// An application reference: a UUID.
fn reference(text: &str) -> Result<String, &'static str> {
    uuid::Uuid::parse_str(text.trim())
        .map(|uuid| uuid.to_string())
        .map_err(|_| "must be an application reference (a UUID)")
}

/// Domain errors as gRPC statuses.
fn status(error: LicensingError) -> Status {
    match &error {
        LicensingError::NotFound => Status::not_found(error.to_string()),
        LicensingError::NotInRegister
        | LicensingError::Deceased
        | LicensingError::NotPending(_)
        | LicensingError::DeadlinePassed(_)
        | LicensingError::Idempotency(_) => Status::failed_precondition(error.to_string()),
        LicensingError::IdentityUnavailable(_) => {
            tracing::warn!(message = "Identity service unavailable.", %error);
            Status::unavailable(error.to_string())
        }
        LicensingError::Db(db) => database_status(db),
        LicensingError::Event(_) => internal_status(&error),
    }
}
