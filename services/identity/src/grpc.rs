//! The `govbus.identity.v1.IdentityService` gRPC API: requests parsed into domain types, domain
//! errors mapped to statuses.

use govbus_kit::audit::{CallAudit, CallContext, DataSubject};
use govbus_kit::call_counts::CallCounter;
use govbus_kit::grpc::{FieldProblems, causality, database_status, idempotent, internal_status};
use govbus_proto::identity::v1 as pb;
use govbus_proto::identity::v1::identity_service_server::IdentityService;
use tonic::{Request, Response, Status};

use crate::domain::{Kelurahan, NewCitizen, Nik, PersonName, RegistrationInput, Sex};
use crate::registry::{Registry, RegistryError, Verification};
use govbus_civil::{past_date, text_line};
use govbus_identity_client::CALLER_METADATA;

/// The gRPC face of the [`Registry`].
#[derive(Debug, Clone)]
pub struct IdentityApi {
    registry: Registry,
    calls: DirectCalls,
    audit: CallAudit,
}

/// Direct calls counted per (caller, method); the gateway reports the calls that come through
/// it.
pub type DirectCalls = CallCounter<(std::sync::Arc<str>, &'static str)>;

impl IdentityApi {
    /// Serves `registry`, counting other services' calls in `calls` and recording each call
    /// about a person in the processing log.
    pub fn new(registry: Registry, calls: DirectCalls, audit: CallAudit) -> Self {
        Self {
            registry,
            calls,
            audit,
        }
    }
}

/// The calling service, when it names itself (a short lowercase name) and calls directly: the
/// gateway counts the calls it makes for applications itself.
fn caller<T>(request: &Request<T>) -> Option<std::sync::Arc<str>> {
    // Over mutual TLS the caller is who the access layer established from the certificate
    // (an application only through the gateway), whatever it claims.
    if let Some(established) = govbus_kit::call_facts::Caller::of(request) {
        return established
            .via
            .is_none()
            .then(|| std::sync::Arc::clone(&established.name));
    }
    if let Some(certified) = govbus_kit::peer::caller_of_request(request) {
        return Some(std::sync::Arc::clone(certified));
    }
    let name = request
        .metadata()
        .get(CALLER_METADATA)?
        .to_str()
        .ok()?
        .trim();
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    valid.then(|| std::sync::Arc::from(name))
}

#[tonic::async_trait]
impl IdentityService for IdentityApi {
    async fn register_citizen(
        &self,
        request: Request<pb::RegisterCitizenRequest>,
    ) -> Result<Response<pb::RegisterCitizenResponse>, Status> {
        let causality = causality(&request);
        let call = CallContext::of(&request);
        let request = request.into_inner();
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
            let mut problems = FieldProblems::default();
            problems.check_idempotency_key(&request.idempotency_key);
            let Some((citizen, warnings)) =
                NewCitizen::parse(input, &mut problems).filter(|_| problems.is_empty())
            else {
                return Err(problems.into_status());
            };
            self.audit.record(&call, DataSubject::Nik(&request.nik));
            for warning in &warnings {
                tracing::warn!(
                    message = "Citizen registered with a warning.",
                    warning = warning.message()
                );
            }
            let idempotency = idempotent(
                "identity.RegisterCitizen",
                &request.idempotency_key,
                &request,
            );
            let warnings = warnings.iter().map(|w| w.message().to_owned()).collect();
            self.registry
                .register(citizen, warnings, idempotency, causality)
                .await
                .map(Response::new)
                .map_err(status)
        }
        .await
    }

    async fn verify_citizen(
        &self,
        request: Request<pb::VerifyCitizenRequest>,
    ) -> Result<Response<pb::VerifyCitizenResponse>, Status> {
        if let Some(caller) = caller(&request) {
            self.calls.count((caller, "VerifyCitizen"));
        }
        let call = CallContext::of(&request);
        let request = request.into_inner();
        async {
            let mut problems = FieldProblems::default();
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
                return Err(problems.into_status());
            };
            self.audit.record(&call, DataSubject::Nik(nik.as_str()));
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
        .await
    }

    async fn record_relocation(
        &self,
        request: Request<pb::RecordRelocationRequest>,
    ) -> Result<Response<pb::RecordRelocationResponse>, Status> {
        let causality = causality(&request);
        let call = CallContext::of(&request);
        let request = request.into_inner();
        async {
            let mut problems = FieldProblems::default();
            problems.check_idempotency_key(&request.idempotency_key);
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
                return Err(problems.into_status());
            };
            self.audit.record(&call, DataSubject::Nik(nik.as_str()));
            let idempotency = idempotent(
                "identity.RecordRelocation",
                &request.idempotency_key,
                &request,
            );
            self.registry
                .relocate(nik, street.to_owned(), kelurahan, idempotency, causality)
                .await
                .map(Response::new)
                .map_err(status)
        }
        .await
    }

    async fn record_death(
        &self,
        request: Request<pb::RecordDeathRequest>,
    ) -> Result<Response<pb::RecordDeathResponse>, Status> {
        let causality = causality(&request);
        let call = CallContext::of(&request);
        let request = request.into_inner();
        async {
            let mut problems = FieldProblems::default();
            problems.check_idempotency_key(&request.idempotency_key);
            let nik = problems.check("nik", Nik::parse(&request.nik));
            let date = problems.check("date_of_death", past_date(&request.date_of_death));
            let (Some(nik), Some(date), true) = (nik, date, problems.is_empty()) else {
                return Err(problems.into_status());
            };
            self.audit.record(&call, DataSubject::Nik(nik.as_str()));
            let idempotency =
                idempotent("identity.RecordDeath", &request.idempotency_key, &request);
            self.registry
                .record_death(nik, date, idempotency, causality)
                .await
                .map(Response::new)
                .map_err(status)
        }
        .await
    }
}

fn sex(sex: pb::Sex) -> Option<Sex> {
    match sex {
        pb::Sex::Male => Some(Sex::Male),
        pb::Sex::Female => Some(Sex::Female),
        pb::Sex::Unspecified => None,
    }
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
        RegistryError::Db(db) => database_status(db),
        RegistryError::Event(_) => internal_status(&error),
    }
}
