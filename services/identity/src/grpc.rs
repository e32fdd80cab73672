//! The `govbus.identity.v1.IdentityService` gRPC API: requests parsed into domain types, domain
//! errors mapped to statuses.

use govbus_bus::Causality;
use govbus_kit::IdempotentRequest;
use govbus_kit::grpc::{Violation, invalid_argument};
use govbus_proto::identity::v1 as pb;
use govbus_proto::identity::v1::identity_service_server::IdentityService;
use prost::Message;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use uuid::Uuid;

use crate::domain::citizen::{FieldProblem, Problems};
use crate::domain::person::{past_date, text_line};
use crate::domain::{Kelurahan, NewCitizen, Nik, PersonName, RegistrationInput, Sex};
use crate::registry::{Registry, RegistryError, Verification};

/// Longest idempotency key accepted.
const MAX_IDEMPOTENCY_KEY: usize = 128;

/// The gRPC face of the [`Registry`].
#[derive(Debug, Clone)]
pub struct IdentityApi {
    registry: Registry,
}

impl IdentityApi {
    /// Serves `registry`.
    pub fn new(registry: Registry) -> Self {
        Self { registry }
    }
}

#[tonic::async_trait]
impl IdentityService for IdentityApi {
    async fn register_citizen(
        &self,
        request: Request<pb::RegisterCitizenRequest>,
    ) -> Result<Response<pb::RegisterCitizenResponse>, Status> {
        let causality = causality(&request);
        let request = request.into_inner();
        let span = tracing::info_span!("RegisterCitizen", rpc.method = "RegisterCitizen");
        async {
            let address = request.address.clone().unwrap_or_default();
            let input = RegistrationInput {
                nik: &request.nik,
                kk_number: &request.kk_number,
                full_name: &request.full_name,
                birth_place: &request.birth_place,
                birth_date: &request.birth_date,
                sex: sex(request.sex()),
                street: &address.street,
                kelurahan_code: &address.kelurahan_code,
            };
            let mut problems = Problems::default();
            check_idempotency_key(&request.idempotency_key, &mut problems);
            let (citizen, warnings) = match NewCitizen::parse(input) {
                Ok(parsed) if problems.is_empty() => parsed,
                Ok(_) => return Err(field_errors(problems.into_vec())),
                Err(mut field_problems) => {
                    field_problems.extend(problems.into_vec());
                    return Err(field_errors(field_problems));
                }
            };
            for warning in &warnings {
                tracing::warn!(
                    message = "Citizen registered with a warning.",
                    warning = warning.message()
                );
            }
            let encoded = request.encode_to_vec();
            let idempotency = idempotent(
                "identity.RegisterCitizen",
                &request.idempotency_key,
                &encoded,
            );
            let warnings = warnings.iter().map(|w| w.message().to_owned()).collect();
            self.registry
                .register(&citizen, warnings, idempotency, &causality)
                .await
                .map(Response::new)
                .map_err(status)
        }
        .instrument(span)
        .await
    }

    async fn verify_citizen(
        &self,
        request: Request<pb::VerifyCitizenRequest>,
    ) -> Result<Response<pb::VerifyCitizenResponse>, Status> {
        let request = request.into_inner();
        let span = tracing::info_span!("VerifyCitizen", rpc.method = "VerifyCitizen");
        async {
            let mut problems = Problems::default();
            let nik = problems.check("nik", Nik::parse(&request.nik));
            let full_name = if request.full_name.trim().is_empty() {
                None
            } else {
                problems.check("full_name", PersonName::parse(&request.full_name))
            };
            let birth_date = if request.birth_date.trim().is_empty() {
                None
            } else {
                problems.check("birth_date", past_date(&request.birth_date))
            };
            let Some(nik) = nik.filter(|_| problems.is_empty()) else {
                return Err(field_errors(problems.into_vec()));
            };
            let verification = self
                .registry
                .verify(&nik, full_name.as_ref(), birth_date)
                .await
                .map_err(status)?;
            let (result, citizen_ref) = match verification {
                Verification::Match { citizen_ref } => (pb::VerificationResult::Match, citizen_ref),
                Verification::Deceased { citizen_ref } => {
                    (pb::VerificationResult::Deceased, citizen_ref)
                }
                Verification::NoMatch => (pb::VerificationResult::NoMatch, String::new()),
            };
            Ok(Response::new(pb::VerifyCitizenResponse {
                result: result.into(),
                citizen_ref,
            }))
        }
        .instrument(span)
        .await
    }

    async fn record_relocation(
        &self,
        request: Request<pb::RecordRelocationRequest>,
    ) -> Result<Response<pb::RecordRelocationResponse>, Status> {
        let causality = causality(&request);
        let request = request.into_inner();
        let span = tracing::info_span!("RecordRelocation", rpc.method = "RecordRelocation");
        async {
            let mut problems = Problems::default();
            check_idempotency_key(&request.idempotency_key, &mut problems);
            let address = request.new_address.clone().unwrap_or_default();
            let nik = problems.check("nik", Nik::parse(&request.nik));
            let street = problems.check("new_address.street", text_line(&address.street, 200));
            let kelurahan = problems.check(
                "new_address.kelurahan_code",
                Kelurahan::parse(&address.kelurahan_code),
            );
            let (Some(nik), Some(street), Some(kelurahan), true) =
                (nik, street, kelurahan, problems.is_empty())
            else {
                return Err(field_errors(problems.into_vec()));
            };
            let encoded = request.encode_to_vec();
            let idempotency = idempotent(
                "identity.RecordRelocation",
                &request.idempotency_key,
                &encoded,
            );
            self.registry
                .relocate(&nik, &street, &kelurahan, idempotency, &causality)
                .await
                .map(Response::new)
                .map_err(status)
        }
        .instrument(span)
        .await
    }

    async fn record_death(
        &self,
        request: Request<pb::RecordDeathRequest>,
    ) -> Result<Response<pb::RecordDeathResponse>, Status> {
        let causality = causality(&request);
        let request = request.into_inner();
        let span = tracing::info_span!("RecordDeath", rpc.method = "RecordDeath");
        async {
            let mut problems = Problems::default();
            check_idempotency_key(&request.idempotency_key, &mut problems);
            let nik = problems.check("nik", Nik::parse(&request.nik));
            let date = problems.check("date_of_death", past_date(&request.date_of_death));
            let (Some(nik), Some(date), true) = (nik, date, problems.is_empty()) else {
                return Err(field_errors(problems.into_vec()));
            };
            let encoded = request.encode_to_vec();
            let idempotency =
                idempotent("identity.RecordDeath", &request.idempotency_key, &encoded);
            self.registry
                .record_death(&nik, date, idempotency, &causality)
                .await
                .map(Response::new)
                .map_err(status)
        }
        .instrument(span)
        .await
    }
}

/// The request id a client sent (`x-request-id`), or a new one: it names the transaction the
/// command's events belong to.
fn causality<T>(request: &Request<T>) -> Causality {
    let request_id = request
        .metadata()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .map(str::to_owned)
        .unwrap_or_else(|| Uuid::now_v7().to_string());
    Causality::request(request_id)
}

fn sex(sex: pb::Sex) -> Option<Sex> {
    match sex {
        pb::Sex::Male => Some(Sex::Male),
        pb::Sex::Female => Some(Sex::Female),
        pb::Sex::Unspecified => None,
    }
}

fn check_idempotency_key(key: &str, problems: &mut Problems) {
    if key.len() > MAX_IDEMPOTENCY_KEY || key.chars().any(char::is_control) {
        problems.push(
            "idempotency_key",
            format!("must be at most {MAX_IDEMPOTENCY_KEY} bytes without control characters"),
        );
    }
}

fn idempotent<'a>(scope: &'a str, key: &'a str, request: &[u8]) -> Option<IdempotentRequest<'a>> {
    (!key.is_empty()).then(|| IdempotentRequest::new(scope, key, request))
}

fn field_errors(problems: Vec<FieldProblem>) -> Status {
    let violations: Vec<Violation> = problems
        .into_iter()
        .map(|(field, description)| Violation::new(field, description))
        .collect();
    invalid_argument(&violations)
}

/// Domain errors as gRPC statuses.
fn status(error: RegistryError) -> Status {
    match &error {
        RegistryError::AlreadyRegistered => Status::already_exists(error.to_string()),
        RegistryError::NotFound => Status::not_found(error.to_string()),
        RegistryError::Deceased
        | RegistryError::SameKelurahan(_)
        | RegistryError::DeathBeforeBirth
        | RegistryError::Idempotency(_) => Status::failed_precondition(error.to_string()),
        RegistryError::Db(db) if db.is_unique_violation() => Status::aborted(
            "a concurrent request changed the same citizen or used the same idempotency key; retry",
        ),
        RegistryError::Db(db) if db.is_transient() => {
            tracing::warn!(message = "Database busy.", error = %db);
            Status::unavailable("the register is busy; retry")
        }
        RegistryError::Db(_) | RegistryError::Event(_) => {
            tracing::error!(message = "Command failed.", %error);
            Status::internal("the register could not complete the request")
        }
    }
}
