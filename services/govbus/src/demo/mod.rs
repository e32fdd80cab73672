//! `govbus demo`: a realistic workload driven over gRPC through a running stack.
//!
//! Citizens of Kota Malang's five kecamatan are registered in households, the households
//! assessed and their members applying for PKH, BPNT and PBI-JK; businesses apply for licences
//! at every risk level; some citizens move and some die, which the bus carries to welfare and
//! licensing; residents complain (about their benefit, about a street light), and the complaints
//! are verified, routed, answered, closed or reopened; finally Kota Malang's SPBE assessments are
//! recorded. Every run uses fresh NIKs and
//! idempotency keys, so runs add up.

pub mod people;

use std::time::{Duration, Instant};

use govbus_proto::complaints::v1 as complaints;
use govbus_proto::complaints::v1::complaints_service_client::ComplaintsServiceClient;
use govbus_proto::evaluation::v1 as evaluation;
use govbus_proto::evaluation::v1::evaluation_service_client::EvaluationServiceClient;
use govbus_proto::identity::v1 as identity;
use govbus_proto::identity::v1::identity_service_client::IdentityServiceClient;
use govbus_proto::licensing::v1 as licensing;
use govbus_proto::licensing::v1::licensing_service_client::LicensingServiceClient;
use govbus_proto::welfare::v1 as welfare;
use govbus_proto::welfare::v1::welfare_service_client::WelfareServiceClient;
use indicatif::{ProgressBar, ProgressStyle};
use tonic::transport::Channel;

use crate::endpoints::{ChannelError, ServiceEndpoint, grpc_channel};
use people::Person;

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The stack lacks a service the workload calls.
    #[error("the stack has no {0} service")]
    MissingService(&'static str),
    /// No channel could be made to a service.
    #[error("{service}: {source}")]
    Channel {
        /// The service.
        service: &'static str,
        /// Why.
        #[source]
        source: ChannelError,
    },
    /// The count of published events could not be read.
    #[error("counting the events published: {0}")]
    Events(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What the demo does.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Households to register (two citizens each).
    pub households: u32,
    /// Where numbering starts; runs with different seeds do not collide.
    pub seed: u64,
    /// Show a progress bar on standard error.
    pub progress: bool,
    /// The operator's certificate when the services speak mutual TLS.
    pub tls: Option<govbus_kit::tls::ServiceTls>,
}

/// What the demo did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// gRPC calls made.
    pub calls: u64,
    /// Calls refused or failed (a refusal by the rules, such as a desil above a programme's
    /// limit, is an answer, not a failure).
    pub failures: u64,
    /// Failure messages (at most 10), for the operator.
    pub failure_examples: Vec<String>,
    /// Citizens registered.
    pub citizens: u64,
    /// Benefits granted.
    pub benefits_granted: u64,
    /// Applications refused by the programme rules.
    pub benefits_refused: u64,
    /// Licence applications.
    pub licence_applications: u64,
    /// Relocations recorded.
    pub relocations: u64,
    /// Deaths recorded.
    pub deaths: u64,
    /// Benefits suspended by welfare after those deaths (read back at the end).
    pub benefits_suspended: u64,
    /// Complaints filed.
    pub complaints_filed: u64,
    /// Complaints the agencies answered.
    pub complaints_answered: u64,
    /// Events the services published during the run.
    pub events: u64,
    /// The SPBE index of the latest year.
    pub spbe_index: String,
    /// Its predicate.
    pub spbe_predicate: String,
    /// How long the run took.
    pub seconds: f64,
}

struct Clients {
    identity: IdentityServiceClient<Channel>,
    welfare: WelfareServiceClient<Channel>,
    licensing: LicensingServiceClient<Channel>,
    evaluation: EvaluationServiceClient<Channel>,
    complaints: ComplaintsServiceClient<Channel>,
}

impl Clients {
    async fn connect(
        services: &[ServiceEndpoint],
        tls: Option<&govbus_kit::tls::ServiceTls>,
    ) -> Result<Self, DemoError> {
        let channel = |service: &'static str| {
            let endpoint = services
                .iter()
                .find(|endpoint| endpoint.name == service)
                .ok_or(DemoError::MissingService(service))?;
            grpc_channel(endpoint, tls).map_err(|source| DemoError::Channel { service, source })
        };
        Ok(Self {
            identity: IdentityServiceClient::new(channel("identity")?),
            welfare: WelfareServiceClient::new(channel("welfare")?),
            licensing: LicensingServiceClient::new(channel("licensing")?),
            evaluation: EvaluationServiceClient::new(channel("evaluation")?),
            complaints: ComplaintsServiceClient::new(channel("complaints")?),
        })
    }
}

/// Counts calls and failures as the workload goes.
struct Tally {
    summary: Summary,
    bar: ProgressBar,
}

impl Tally {
    fn call<T>(
        &mut self,
        what: &str,
        result: Result<tonic::Response<T>, tonic::Status>,
    ) -> Option<T> {
        self.summary.calls += 1;
        match result {
            Ok(response) => Some(response.into_inner()),
            Err(status) => {
                self.summary.failures += 1;
                if self.summary.failure_examples.len() < 10 {
                    self.summary.failure_examples.push(format!(
                        "{what}: {:?}: {}",
                        status.code(),
                        status.message()
                    ));
                }
                None
            }
        }
    }
}

/// Runs the workload against `services`; `events_published` reads the services' stream totals.
pub async fn run<F, Fut, E>(
    services: &[ServiceEndpoint],
    workload: &Workload,
    events_published: F,
) -> Result<Summary, DemoError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<u64, E>>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let events_published = || async {
        events_published()
            .await
            .map_err(|error| DemoError::Events(error.into()))
    };
    let started = Instant::now();
    let events_before = events_published().await?;
    let mut clients = Clients::connect(services, workload.tls.as_ref()).await?;
    let steps = u64::from(workload.households) + 3;
    let bar = if workload.progress {
        ProgressBar::new(steps)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:<28} [{bar:40}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut tally = Tally {
        summary: Summary::default(),
        bar,
    };
    let mut holders: Vec<(Person, String)> = Vec::new();
    let mut applicants: Vec<Person> = Vec::new();
    let mut complaints_filed: Vec<String> = Vec::new();
    tally.bar.set_message("households");
    for household in 0..workload.households {
        let (members, kk) = people::household(workload.seed, household);
        Box::pin(one_household(
            &mut clients,
            &mut tally,
            workload,
            household,
            &members,
            &kk,
            &mut holders,
            &mut applicants,
            &mut complaints_filed,
        ))
        .await;
        tally.bar.inc(1);
    }

    tally.bar.set_message("moves and deaths");
    // One citizen in ten moves to another kecamatan; one benefit holder in eight dies.
    for (index, (person, _)) in holders.iter().enumerate() {
        if index % 10 == 3 {
            let moved = tally.call(
                "RecordRelocation",
                clients
                    .identity
                    .record_relocation(identity::RecordRelocationRequest {
                        idempotency_key: format!("demo-{}-move-{index}", workload.seed),
                        nik: person.nik.clone(),
                        new_address: Some(identity::Address {
                            street: format!("Jl. Baru {index}"),
                            kelurahan_code: people::other_kelurahan(&person.kelurahan).to_owned(),
                        }),
                    })
                    .await,
            );
            tally.summary.relocations += u64::from(moved.is_some());
        }
    }
    let mut deceased = Vec::new();
    for (index, (person, benefit_ref)) in holders.iter().enumerate() {
        if index % 8 == 0 {
            let recorded = tally.call(
                "RecordDeath",
                clients
                    .identity
                    .record_death(identity::RecordDeathRequest {
                        idempotency_key: format!("demo-{}-death-{index}", workload.seed),
                        nik: person.nik.clone(),
                        date_of_death: "2024-11-28".to_owned(),
                    })
                    .await,
            );
            if recorded.is_some() {
                tally.summary.deaths += 1;
                deceased.push((person.clone(), benefit_ref.clone()));
            }
        }
    }
    tally.bar.inc(1);

    tally.bar.set_message("complaints");
    Box::pin(handle_complaints(
        &mut clients,
        &mut tally,
        workload.seed,
        &complaints_filed,
    ))
    .await;
    tally.bar.inc(1);

    tally.bar.set_message("SPBE assessment");
    Box::pin(assess_spbe(&mut clients, &mut tally, workload.seed)).await;
    tally.bar.inc(1);

    tally.bar.set_message("waiting for the reactions");
    // The bus carries each death to welfare; the benefit is suspended there.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut suspended = 0;
        for (person, benefit_ref) in &deceased {
            if let Ok(response) = clients
                .welfare
                .list_benefits(welfare::ListBenefitsRequest {
                    nik: person.nik.clone(),
                })
                .await
            {
                suspended += response
                    .into_inner()
                    .benefits
                    .iter()
                    .filter(|benefit| {
                        &benefit.benefit_ref == benefit_ref
                            && benefit.status() == welfare::BenefitStatus::Suspended
                    })
                    .count() as u64;
            }
        }
        tally.summary.benefits_suspended = suspended;
        if suspended as usize == deceased.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tally.bar.finish_and_clear();
    tally.summary.events = events_published().await?.saturating_sub(events_before);
    tally.summary.seconds = started.elapsed().as_secs_f64();
    Ok(tally.summary)
}

#[allow(clippy::too_many_arguments)]
async fn one_household(
    clients: &mut Clients,
    tally: &mut Tally,
    workload: &Workload,
    household: u32,
    members: &[Person],
    kk: &str,
    holders: &mut Vec<(Person, String)>,
    applicants: &mut Vec<Person>,
    complaints_filed: &mut Vec<String>,
) {
    let key = |what: &str| format!("demo-{}-{what}-{household}", workload.seed);
    let mut registered = Vec::new();
    for (index, person) in members.iter().enumerate() {
        let answer = tally.call(
            "RegisterCitizen",
            clients
                .identity
                .register_citizen(identity::RegisterCitizenRequest {
                    idempotency_key: key(&format!("citizen{index}")),
                    nik: person.nik.clone(),
                    kk_number: kk.to_owned(),
                    full_name: person.name.clone(),
                    birth_place: "Malang".to_owned(),
                    birth_date: person.birth_date.clone(),
                    sex: person.sex.into(),
                    address: Some(identity::Address {
                        street: format!("Jl. Merdeka {household}"),
                        kelurahan_code: person.kelurahan.clone(),
                    }),
                })
                .await,
        );
        if answer.is_some() {
            tally.summary.citizens += 1;
            registered.push(person.clone());
        }
    }
    let Some(head) = registered.first().cloned() else {
        return;
    };
    let household_registered = tally.call(
        "RegisterHousehold",
        clients
            .welfare
            .register_household(welfare::RegisterHouseholdRequest {
                idempotency_key: key("household"),
                kk_number: kk.to_owned(),
                kelurahan_code: head.kelurahan.clone(),
                member_niks: registered.iter().map(|person| person.nik.clone()).collect(),
            })
            .await,
    );
    if household_registered.is_none() {
        return;
    }
    tally.call(
        "AssessHousehold",
        clients
            .welfare
            .assess_household(welfare::AssessHouseholdRequest {
                idempotency_key: key("assess"),
                kk_number: kk.to_owned(),
                desil: 1 + (household * 7 + 3) % 10,
            })
            .await,
    );
    let programme = [
        welfare::Programme::Pkh,
        welfare::Programme::Bpnt,
        welfare::Programme::PbiJk,
    ][(household % 3) as usize];
    if let Some(decision) = tally.call(
        "ApplyForProgramme",
        clients
            .welfare
            .apply_for_programme(welfare::ApplyForProgrammeRequest {
                idempotency_key: key("programme"),
                nik: head.nik.clone(),
                programme: programme.into(),
            })
            .await,
    ) {
        if decision.status() == welfare::BenefitStatus::Active {
            tally.summary.benefits_granted += 1;
            // One holder in three complains about the benefit's payment.
            if household % 3 == 1 {
                let filed = tally.call(
                    "FileComplaint",
                    clients
                        .complaints
                        .file_complaint(complaints::FileComplaintRequest {
                            idempotency_key: key("complaint-benefit"),
                            complainant_nik: head.nik.clone(),
                            agency_code: "dinsos-p3ap2kb".to_owned(),
                            category: complaints::Category::SocialAssistance.into(),
                            text: "Bantuan bulan ini belum diterima di rekening keluarga kami."
                                .to_owned(),
                            channel: complaints::Channel::Counter.into(),
                            benefit_ref: decision.benefit_ref.clone(),
                            application_ref: String::new(),
                        })
                        .await,
                );
                complaints_filed.extend(
                    filed
                        .and_then(|filed| filed.complaint)
                        .map(|c| c.complaint_ref),
                );
            }
            holders.push((head.clone(), decision.benefit_ref));
        } else {
            tally.summary.benefits_refused += 1;
        }
    }
    // One household in four reports a street light out, by SMS.
    if household % 4 == 2 {
        let filed = tally.call(
            "FileComplaint",
            clients
                .complaints
                .file_complaint(complaints::FileComplaintRequest {
                    idempotency_key: key("complaint-light"),
                    complainant_nik: head.nik.clone(),
                    agency_code: "dpuprpkp".to_owned(),
                    category: complaints::Category::Infrastructure.into(),
                    text: format!("Lampu penerangan jalan di Jl. Merdeka {household} mati."),
                    channel: complaints::Channel::Sms.into(),
                    benefit_ref: String::new(),
                    application_ref: String::new(),
                })
                .await,
        );
        complaints_filed.extend(
            filed
                .and_then(|filed| filed.complaint)
                .map(|c| c.complaint_ref),
        );
    }
    if household.is_multiple_of(2) {
        let risk = [
            licensing::RiskLevel::Rendah,
            licensing::RiskLevel::MenengahRendah,
            licensing::RiskLevel::MenengahTinggi,
            licensing::RiskLevel::Tinggi,
        ][((household / 2) % 4) as usize];
        let applied = tally.call(
            "ApplyForLicence",
            clients
                .licensing
                .apply_for_licence(licensing::ApplyForLicenceRequest {
                    idempotency_key: key("licence"),
                    applicant_nik: head.nik.clone(),
                    business_name: format!("Usaha Mbois {household}"),
                    kbli_code: ["47111", "56101", "10792", "96012"][(household % 4) as usize]
                        .to_owned(),
                    kelurahan_code: head.kelurahan.clone(),
                    risk_level: risk.into(),
                })
                .await,
        );
        if applied.is_some() {
            tally.summary.licence_applications += 1;
            applicants.push(head);
        }
    }
}

/// Verification, routing and answers: one complaint in six is refused as unclear, the rest
/// accepted in turn as ringan, normatif or tidak berkadar pengawasan; street lights go to the
/// kecamatan; the agency answers; the resident closes, or reopens one in four.
async fn handle_complaints(clients: &mut Clients, tally: &mut Tally, seed: u64, filed: &[String]) {
    tally.summary.complaints_filed = filed.len() as u64;
    for (index, complaint_ref) in filed.iter().enumerate() {
        let key = |what: &str| format!("demo-{seed}-{what}-{complaint_ref}");
        let decision = if index % 6 == 5 {
            complaints::verify_complaint_request::Decision::Refuse(complaints::Refusal {
                ground: complaints::RefusalGround::Unclear.into(),
                reason: "Lokasi tidak disebutkan; mohon diajukan kembali dengan alamat.".to_owned(),
            })
        } else {
            complaints::verify_complaint_request::Decision::Accept(complaints::Acceptance {
                class: [
                    complaints::ComplaintClass::Ringan,
                    complaints::ComplaintClass::Normatif,
                    complaints::ComplaintClass::TidakBerkadarPengawasan,
                ][index % 3]
                    .into(),
                agency_code: String::new(),
            })
        };
        let Some(verified) = tally
            .call(
                "VerifyComplaint",
                clients
                    .complaints
                    .verify_complaint(complaints::VerifyComplaintRequest {
                        idempotency_key: key("verify"),
                        complaint_ref: complaint_ref.clone(),
                        decision: Some(decision),
                    })
                    .await,
            )
            .and_then(|verified| verified.complaint)
        else {
            continue;
        };
        if verified.status() != complaints::ComplaintStatus::WithAgency {
            continue;
        }
        let mut agency = verified.agency_code.clone();
        if agency == "dpuprpkp" {
            let routed = tally.call(
                "RouteComplaint",
                clients
                    .complaints
                    .route_complaint(complaints::RouteComplaintRequest {
                        idempotency_key: key("route"),
                        complaint_ref: complaint_ref.clone(),
                        agency_code: "kec-klojen".to_owned(),
                        reason: "Penerangan jalan lingkungan ditangani kecamatan".to_owned(),
                    })
                    .await,
            );
            if routed.is_some() {
                agency = "kec-klojen".to_owned();
            }
        }
        let answered = tally.call(
            "RespondToComplaint",
            clients
                .complaints
                .respond_to_complaint(complaints::RespondToComplaintRequest {
                    idempotency_key: key("respond"),
                    complaint_ref: complaint_ref.clone(),
                    agency_code: agency,
                    response: "Sudah kami tindak lanjuti; mohon dicek kembali.".to_owned(),
                })
                .await,
        );
        if answered.is_none() {
            continue;
        }
        tally.summary.complaints_answered += 1;
        if index % 4 == 3 {
            tally.call(
                "ReopenComplaint",
                clients
                    .complaints
                    .reopen_complaint(complaints::ReopenComplaintRequest {
                        idempotency_key: key("reopen"),
                        complaint_ref: complaint_ref.clone(),
                        reason: "Masih belum selesai.".to_owned(),
                    })
                    .await,
            );
        } else {
            tally.call(
                "CloseComplaint",
                clients
                    .complaints
                    .close_complaint(complaints::CloseComplaintRequest {
                        idempotency_key: key("close"),
                        complaint_ref: complaint_ref.clone(),
                    })
                    .await,
            );
        }
    }
}

/// Kota Malang's evaluator scores for 2022 (index 2.60) and 2024 (4.24), and the target.
async fn assess_spbe(clients: &mut Clients, tally: &mut Tally, seed: u64) {
    let scores = |base: u32, raised: &[u32]| -> Vec<evaluation::IndicatorScore> {
        (1..=47)
            .map(|indicator| evaluation::IndicatorScore {
                indicator,
                level: if raised.contains(&indicator) {
                    base + 1
                } else {
                    base
                },
                evidence_notes: String::new(),
            })
            .collect()
    };
    let years = [
        (
            2022,
            scores(2, &(11..=25).chain(32..=41).collect::<Vec<_>>()),
        ),
        (
            2024,
            scores(4, &(1..=12).chain(42..=43).collect::<Vec<_>>()),
        ),
    ];
    for (year, levels) in years {
        tally.call(
            "RecordAssessment",
            clients
                .evaluation
                .record_assessment(evaluation::RecordAssessmentRequest {
                    idempotency_key: format!("demo-{seed}-spbe-{year}"),
                    instance_code: "35.73".to_owned(),
                    instance_name: "Pemerintah Kota Malang".to_owned(),
                    year,
                    kind: evaluation::ScoreKind::Evaluator.into(),
                    scores: levels,
                })
                .await,
        );
    }
    tally.call(
        "SetTarget",
        clients
            .evaluation
            .set_target(evaluation::SetTargetRequest {
                idempotency_key: format!("demo-{seed}-target-2024"),
                instance_code: "35.73".to_owned(),
                year: 2024,
                target: "3.02".to_owned(),
                source: "RPJMD target (demo)".to_owned(),
            })
            .await,
    );
    if let Some(history) = tally.call(
        "GetHistory",
        clients
            .evaluation
            .get_history(evaluation::GetHistoryRequest {
                instance_code: "35.73".to_owned(),
            })
            .await,
    ) && let Some(latest) = history.years.iter().max_by_key(|year| year.year)
    {
        tally.summary.spbe_index = latest.index.clone();
        tally.summary.spbe_predicate = latest.predicate.clone();
    }
}
