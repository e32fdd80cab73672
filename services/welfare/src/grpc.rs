//! The `govbus.welfare.v1.WelfareService` gRPC API.

use govbus_civil::{Kelurahan, KkNumber, Nik};
use govbus_kit::audit::{CallAudit, CallContext, DataSubject};
use govbus_kit::grpc::{FieldProblems, causality, database_status, idempotent, internal_status};
use govbus_proto::welfare::v1 as pb;
use govbus_proto::welfare::v1::welfare_service_server::WelfareService;
use tonic::{Request, Response, Status};

use crate::domain::{Desil, Programme};
use crate::office::{Office, WelfareError};

/// Most members one household may list.
const MAX_MEMBERS: usize = 50;

/// The gRPC face of the [`Office`].
#[derive(Debug, Clone)]
pub struct WelfareApi {
    office: Office,
    audit: CallAudit,
}

impl WelfareApi {
    /// Serves `office`, recording each call about a person in the processing log.
    pub fn new(office: Office, audit: CallAudit) -> Self {
        Self { office, audit }
    }
}

#[tonic::async_trait]
impl WelfareService for WelfareApi {
    async fn register_household(
        &self,
        request: Request<pb::RegisterHouseholdRequest>,
    ) -> Result<Response<pb::RegisterHouseholdResponse>, Status> {
        let causality = causality(&request);
        let call = CallContext::of(&request);
        let request = request.into_inner();
        async {
            let mut problems = FieldProblems::default();
            problems.check_idempotency_key(&request.idempotency_key);
            let kk_number = problems.check("kk_number", KkNumber::parse(&request.kk_number));
            let kelurahan =
                problems.check("kelurahan_code", Kelurahan::parse(&request.kelurahan_code));
            if request.member_niks.is_empty() || request.member_niks.len() > MAX_MEMBERS {
                problems.push(
                    "member_niks",
                    format!("must list 1 to {MAX_MEMBERS} members"),
                );
            }
            let mut members = Vec::with_capacity(request.member_niks.len());
            for (index, nik) in request.member_niks.iter().enumerate() {
                if let Some(nik) = problems.check(&format!("member_niks[{index}]"), Nik::parse(nik))
                {
                    if members.contains(&nik) {
                        problems.push(&format!("member_niks[{index}]"), "is listed twice");
                    }
                    members.push(nik);
                }
            }
            let (Some(kk_number), Some(kelurahan), true) =
                (kk_number, kelurahan, problems.is_empty())
            else {
                return Err(problems.into_status());
            };
            for member in &members {
                self.audit.record(&call, DataSubject::Nik(member.as_str()));
            }
            let idempotency = idempotent(
                "welfare.RegisterHousehold",
                &request.idempotency_key,
                &request,
            );
            self.office
                .register_household(kk_number, kelurahan, members, idempotency, causality)
                .await
                .map(Response::new)
                .map_err(status)
        }
        .await
    }

    async fn assess_household(
        &self,
        request: Request<pb::AssessHouseholdRequest>,
    ) -> Result<Response<pb::AssessHouseholdResponse>, Status> {
        let causality = causality(&request);
        let request = request.into_inner();
        async {
            let mut problems = FieldProblems::default();
            problems.check_idempotency_key(&request.idempotency_key);
            let kk_number = problems.check("kk_number", KkNumber::parse(&request.kk_number));
            let desil = problems.check("desil", Desil::parse(request.desil));
            let (Some(kk_number), Some(desil), true) = (kk_number, desil, problems.is_empty())
            else {
                return Err(problems.into_status());
            };
            let idempotency = idempotent(
                "welfare.AssessHousehold",
                &request.idempotency_key,
                &request,
            );
            self.office
                .assess_household(kk_number, desil, idempotency, causality)
                .await
                .map(Response::new)
                .map_err(status)
        }
        .await
    }

    async fn apply_for_programme(
        &self,
        request: Request<pb::ApplyForProgrammeRequest>,
    ) -> Result<Response<pb::ApplyForProgrammeResponse>, Status> {
        let causality = causality(&request);
        let call = CallContext::of(&request);
        let request = request.into_inner();
        async {
            let mut problems = FieldProblems::default();
            problems.check_idempotency_key(&request.idempotency_key);
            let nik = problems.check("nik", Nik::parse(&request.nik));
            let programme = problems.check(
                "programme",
                Programme::from_proto(request.programme())
                    .ok_or("is required: PKH, BPNT or PBI_JK"),
            );
            let (Some(nik), Some(programme), true) = (nik, programme, problems.is_empty()) else {
                return Err(problems.into_status());
            };
            self.audit.record(&call, DataSubject::Nik(nik.as_str()));
            let idempotency = idempotent(
                "welfare.ApplyForProgramme",
                &request.idempotency_key,
                &request,
            );
            self.office
                .apply(nik, programme, idempotency, causality)
                .await
                .map(Response::new)
                .map_err(status)
        }
        .await
    }

    async fn list_benefits(
        &self,
        request: Request<pb::ListBenefitsRequest>,
    ) -> Result<Response<pb::ListBenefitsResponse>, Status> {
        let call = CallContext::of(&request);
        let request = request.into_inner();
        async {
            let mut problems = FieldProblems::default();
            let Some(nik) = problems.check("nik", Nik::parse(&request.nik)) else {
                return Err(problems.into_status());
            };
            self.audit.record(&call, DataSubject::Nik(nik.as_str()));
            let benefits = self.office.benefits(&nik).await.map_err(status)?;
            Ok(Response::new(pb::ListBenefitsResponse {
                benefits: benefits
                    .into_iter()
                    .map(|benefit| pb::Benefit {
                        benefit_ref: benefit.benefit_ref,
                        programme: benefit.programme.to_proto().into(),
                        status: benefit.status.to_proto().into(),
                        reason: benefit.reason,
                    })
                    .collect(),
            }))
        }
        .await
    }
}

/// Domain errors as gRPC statuses.
fn status(error: WelfareError) -> Status {
    match &error {
        WelfareError::HouseholdExists | WelfareError::AlreadyReceiving(_) => {
            Status::already_exists(error.to_string())
        }
        WelfareError::HouseholdNotFound => Status::not_found(error.to_string()),
        WelfareError::NotInRegister { .. }
        | WelfareError::Deceased { .. }
        | WelfareError::AlreadyMember { .. }
        | WelfareError::NotAMember
        | WelfareError::NotAssessed
        | WelfareError::Idempotency(_) => Status::failed_precondition(error.to_string()),
        WelfareError::IdentityUnavailable(_) => {
            tracing::warn!(message = "Identity service unavailable.", %error);
            Status::unavailable(error.to_string())
        }
        WelfareError::Db(db) => database_status(db),
        WelfareError::Event(_) => internal_status(&error),
    }
}
