//! `govbus demo`: the identity, welfare and licensing services on a private nats-server and
//! SQLite files, driven over gRPC through the integration that matters: a death recorded once
//! stops welfare payments and flags licences.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use govbus_bus::{Bus, BusOptions};
use govbus_harness::NatsServer;
use govbus_kit::RelaySettings;
use govbus_licensing::Deadlines;
use govbus_proto::evaluation::v1 as evaluation;
use govbus_proto::evaluation::v1::evaluation_service_client::EvaluationServiceClient;
use govbus_proto::identity::v1 as identity;
use govbus_proto::identity::v1::identity_service_client::IdentityServiceClient;
use govbus_proto::licensing::v1 as licensing;
use govbus_proto::licensing::v1::licensing_service_client::LicensingServiceClient;
use govbus_proto::welfare::v1 as welfare;
use govbus_proto::welfare::v1::welfare_service_client::WelfareServiceClient;
use tonic::transport::Channel;

/// Kota Malang's five kecamatan, with one kelurahan each.
const KECAMATAN: [(&str, &str, &str); 5] = [
    ("01", "Blimbing", "35.73.01.1001"),
    ("02", "Klojen", "35.73.02.1001"),
    ("03", "Kedungkandang", "35.73.03.1001"),
    ("04", "Sukun", "35.73.04.1001"),
    ("05", "Lowokwaru", "35.73.05.1001"),
];

#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    /// Use this NATS server (JetStream, 2.10 or later) instead of starting a private one.
    #[arg(long, env = "GOVBUS_NATS_URL")]
    nats_url: Option<String>,
    /// Keep the services' SQLite databases in this folder (default: a temporary folder).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Households to register (two citizens each).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=2000))]
    households: u32,
}

struct Services {
    identity: govbus_identity::Application,
    welfare: govbus_welfare::Application,
    licensing: govbus_licensing::Application,
    evaluation: govbus_evaluation::Application,
}

#[derive(Debug, Default)]
struct Tally {
    calls: u32,
    granted: u32,
    refused: u32,
    licences: u32,
    deaths: u32,
}

pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let (_server, nats_url) = match args.nats_url {
        Some(url) => (None, url),
        None => {
            let server = tokio::task::spawn_blocking(NatsServer::start)
                .await?
                .context(
                    "starting a private nats-server (run scripts/install-nats-server first)",
                )?;
            let url = server.client_url();
            println!("nats-server   {url} (JetStream, temporary store)");
            (Some(server), url)
        }
    };
    let temporary = tempfile::Builder::new().prefix("govbus-demo-").tempdir()?;
    let data_dir = args.data_dir.unwrap_or_else(|| temporary.path().to_owned());
    let services = Box::pin(start_services(&nats_url, &data_dir)).await?;
    println!("identity      http://{}", services.identity.address());
    println!("welfare       http://{}", services.welfare.address());
    println!("licensing     http://{}", services.licensing.address());
    println!("evaluation    http://{}", services.evaluation.address());
    println!("databases     {}", data_dir.display());
    println!();

    let mut outcome = drive(&services, &nats_url, args.households).await;
    if outcome.is_ok() {
        outcome = evaluate(&services).await;
    }
    services.evaluation.stop().await;
    services.licensing.stop().await;
    services.welfare.stop().await;
    services.identity.stop().await;
    outcome
}

async fn start_services(nats_url: &str, data_dir: &Path) -> anyhow::Result<Services> {
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    let database = |name: &str| format!("sqlite://{}/{name}.db", data_dir.display());
    let bus = |name: &str| BusOptions::new(nats_url).client_name(name);
    let identity = govbus_identity::Application::build(govbus_identity::IdentityConfig {
        database_url: database("identity"),
        listen: any_port,
        bus: bus("identity"),
        relay: RelaySettings::default(),
        call_report_interval: std::time::Duration::from_millis(200),
    })
    .await
    .context("starting identity")?;
    let identity_url = format!("http://{}", identity.address());
    let welfare = govbus_welfare::Application::build(govbus_welfare::WelfareConfig {
        database_url: database("welfare"),
        listen: any_port,
        identity_url: identity_url.clone(),
        bus: bus("welfare"),
        relay: RelaySettings::default(),
    })
    .await
    .context("starting welfare")?;
    let licensing = govbus_licensing::Application::build(govbus_licensing::LicensingConfig {
        database_url: database("licensing"),
        listen: any_port,
        identity_url,
        bus: bus("licensing"),
        relay: RelaySettings::default(),
        // Short enough to watch a deemed approval happen during the demo.
        deadlines: Deadlines {
            verification: Duration::from_secs(3600),
            approval: Duration::from_secs(2),
        },
        deadline_check_interval: Duration::from_millis(200),
    })
    .await
    .context("starting licensing")?;
    let evaluation = govbus_evaluation::Application::build(govbus_evaluation::EvaluationConfig {
        database_url: database("evaluation"),
        listen: any_port,
        bus: bus("evaluation"),
        relay: RelaySettings::default(),
        evidence_services: govbus_evaluation::EvaluationConfig::default_evidence_services(),
        instruments_dir: None,
    })
    .await
    .context("starting evaluation")?;
    Ok(Services {
        identity,
        welfare,
        licensing,
        evaluation,
    })
}

/// A valid NIK of Kota Malang for citizen `n`, with the birth date it encodes.
fn citizen(n: u32) -> (String, String, identity::Sex, &'static str) {
    let (kecamatan, _, kelurahan) = KECAMATAN[(n % 5) as usize];
    let day = 1 + n % 28;
    let month = 1 + (n / 28) % 12;
    let year = 1950 + n % 55;
    let female = n.is_multiple_of(2);
    let sex = if female {
        identity::Sex::Female
    } else {
        identity::Sex::Male
    };
    let encoded_day = if female { day + 40 } else { day };
    let nik = format!(
        "3573{kecamatan}{encoded_day:02}{month:02}{:02}{:04}",
        year % 100,
        n + 1
    );
    (nik, format!("{year}-{month:02}-{day:02}"), sex, kelurahan)
}

/// A made-up name for citizen `n`.
fn name(n: u32) -> String {
    const GIVEN: [&str; 10] = [
        "Siti", "Budi", "Dewi", "Agus", "Rina", "Joko", "Sri", "Eko", "Nur", "Hadi",
    ];
    const FAMILY: [&str; 10] = [
        "Rahayu",
        "Santoso",
        "Wijaya",
        "Lestari",
        "Hidayat",
        "Kusuma",
        "Pratama",
        "Saputra",
        "Wulandari",
        "Nugroho",
    ];
    format!(
        "{} {}",
        GIVEN[(n % 10) as usize],
        FAMILY[((n / 10) % 10) as usize]
    )
}

fn kk_number(household: u32) -> String {
    format!("357302010120{:04}", household + 1)
}

async fn drive(services: &Services, nats_url: &str, households: u32) -> anyhow::Result<()> {
    let connect = |address: SocketAddr| async move {
        anyhow::Ok(
            Channel::from_shared(format!("http://{address}"))?
                .connect()
                .await?,
        )
    };
    let mut identity_client =
        IdentityServiceClient::new(connect(services.identity.address()).await?);
    let mut welfare_client = WelfareServiceClient::new(connect(services.welfare.address()).await?);
    let mut licensing_client =
        LicensingServiceClient::new(connect(services.licensing.address()).await?);
    let mut tally = Tally::default();
    let mut pkh_holders = Vec::new();
    let mut licences = Vec::new();

    for household in 0..households {
        let members = [household * 2, household * 2 + 1];
        let mut niks = Vec::new();
        for n in members {
            let (nik, birth_date, sex, kelurahan) = citizen(n);
            identity_client
                .register_citizen(identity::RegisterCitizenRequest {
                    idempotency_key: format!("demo-register-{n}"),
                    nik: nik.clone(),
                    kk_number: kk_number(household),
                    full_name: name(n),
                    birth_place: "Malang".to_owned(),
                    birth_date,
                    sex: sex.into(),
                    address: Some(identity::Address {
                        street: format!("Jl. Demo {n}"),
                        kelurahan_code: kelurahan.to_owned(),
                    }),
                })
                .await
                .context("RegisterCitizen")?;
            tally.calls += 1;
            niks.push(nik);
        }
        let (_, _, _, kelurahan) = citizen(members[0]);
        welfare_client
            .register_household(welfare::RegisterHouseholdRequest {
                idempotency_key: format!("demo-household-{household}"),
                kk_number: kk_number(household),
                kelurahan_code: kelurahan.to_owned(),
                member_niks: niks.clone(),
            })
            .await
            .context("RegisterHousehold")?;
        welfare_client
            .assess_household(welfare::AssessHouseholdRequest {
                idempotency_key: format!("demo-assess-{household}"),
                kk_number: kk_number(household),
                desil: 1 + household % 10,
            })
            .await
            .context("AssessHousehold")?;
        let decision = welfare_client
            .apply_for_programme(welfare::ApplyForProgrammeRequest {
                idempotency_key: format!("demo-pkh-{household}"),
                nik: niks[0].clone(),
                programme: welfare::Programme::Pkh.into(),
            })
            .await
            .context("ApplyForProgramme")?
            .into_inner();
        tally.calls += 3;
        if decision.status() == welfare::BenefitStatus::Active {
            tally.granted += 1;
            pkh_holders.push((niks[0].clone(), decision.benefit_ref));
        } else {
            tally.refused += 1;
        }
        let risk = [
            licensing::RiskLevel::Rendah,
            licensing::RiskLevel::MenengahRendah,
            licensing::RiskLevel::MenengahTinggi,
            licensing::RiskLevel::Tinggi,
        ][(household % 4) as usize];
        let application = licensing_client
            .apply_for_licence(licensing::ApplyForLicenceRequest {
                idempotency_key: format!("demo-licence-{household}"),
                applicant_nik: niks[0].clone(),
                business_name: format!("Usaha Demo {household}"),
                kbli_code: "47111".to_owned(),
                kelurahan_code: kelurahan.to_owned(),
                risk_level: risk.into(),
            })
            .await
            .context("ApplyForLicence")?
            .into_inner();
        tally.calls += 1;
        tally.licences += 1;
        licences.push((niks[0].clone(), application.application_ref));
    }
    println!(
        "Registered {} citizens in {households} households; PKH granted {}, refused {}; {} licence applications.",
        households * 2,
        tally.granted,
        tally.refused,
        tally.licences
    );

    // The integration that matters: a death recorded once at identity.
    let Some((deceased_nik, benefit_ref)) = pkh_holders.first().cloned() else {
        bail!("no household qualified for PKH; run with more households");
    };
    identity_client
        .record_death(identity::RecordDeathRequest {
            idempotency_key: "demo-death-1".to_owned(),
            nik: deceased_nik.clone(),
            date_of_death: "2024-11-28".to_owned(),
        })
        .await
        .context("RecordDeath")?;
    tally.calls += 1;
    tally.deaths += 1;
    println!(
        "identity   recorded a death (identity.citizen.deceased.v1 published through the outbox)"
    );

    let suspended = wait_for("welfare to suspend the benefit", async || {
        let benefits = welfare_client
            .list_benefits(welfare::ListBenefitsRequest {
                nik: deceased_nik.clone(),
            })
            .await?
            .into_inner()
            .benefits;
        Ok(benefits.into_iter().find(|b| {
            b.benefit_ref == benefit_ref && b.status() == welfare::BenefitStatus::Suspended
        }))
    })
    .await?;
    println!(
        "welfare    suspended PKH benefit {}: {}",
        suspended.benefit_ref, suspended.reason
    );
    let licence_ref = licences
        .iter()
        .find(|(nik, _)| *nik == deceased_nik)
        .map(|(_, reference)| reference.clone())
        .context("the deceased applied for a licence")?;
    let flagged = wait_for("licensing to flag the licence", async || {
        let application = licensing_client
            .get_application(licensing::GetApplicationRequest {
                application_ref: licence_ref.clone(),
            })
            .await?
            .into_inner();
        Ok(application.flagged_for_review.then_some(application))
    })
    .await?;
    println!(
        "licensing  flagged licence {} (NIB {}): {}",
        flagged.application_ref, flagged.nib, flagged.flag_reason
    );

    let summary = event_summary(nats_url).await?;
    println!(
        "\nSummary: {} gRPC calls, {} death, events per stream: {summary}.",
        tally.calls, tally.deaths
    );
    Ok(())
}

async fn wait_for<T>(
    what: &str,
    mut check: impl AsyncFnMut() -> Result<Option<T>, tonic::Status>,
) -> anyhow::Result<T> {
    for _ in 0..300 {
        if let Some(found) = check()
            .await
            .with_context(|| format!("waiting for {what}"))?
        {
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("timed out waiting for {what}")
}

async fn event_summary(nats_url: &str) -> anyhow::Result<String> {
    let bus = Bus::connect(BusOptions::new(nats_url).client_name("govbus-demo")).await?;
    let mut parts = Vec::new();
    for stream in [
        "GOVBUS_IDENTITY",
        "GOVBUS_WELFARE",
        "GOVBUS_LICENSING",
        "GOVBUS_DEADLETTER",
    ] {
        let messages = match bus.jetstream().get_stream(stream).await {
            Ok(mut stream) => stream
                .info()
                .await
                .map(|info| info.state.messages)
                .unwrap_or(0),
            Err(_) => 0,
        };
        parts.push(format!("{stream} {messages}"));
    }
    Ok(parts.join(", "))
}

/// Kota Malang's SPBE history (2.60 in 2022, 4.24 in 2024) against a 3.02 target, and what the
/// bus evidences for the service-connector indicator.
async fn evaluate(services: &Services) -> anyhow::Result<()> {
    let channel = Channel::from_shared(format!("http://{}", services.evaluation.address()))?
        .connect()
        .await?;
    let mut evaluation = EvaluationServiceClient::new(channel);
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
        evaluation
            .record_assessment(evaluation::RecordAssessmentRequest {
                idempotency_key: format!("demo-spbe-{year}"),
                instance_code: "35.73".to_owned(),
                instance_name: "Pemerintah Kota Malang".to_owned(),
                year,
                kind: evaluation::ScoreKind::Evaluator.into(),
                scores: levels,
            })
            .await
            .context("RecordAssessment")?;
    }
    evaluation
        .set_target(evaluation::SetTargetRequest {
            idempotency_key: "demo-target-2024".to_owned(),
            instance_code: "35.73".to_owned(),
            year: 2024,
            target: "3.02".to_owned(),
            source: "target set by Perwali (demo)".to_owned(),
        })
        .await
        .context("SetTarget")?;
    let history = evaluation
        .get_history(evaluation::GetHistoryRequest {
            instance_code: "35.73".to_owned(),
        })
        .await
        .context("GetHistory")?
        .into_inner();
    println!();
    for year in &history.years {
        let target = if year.target.is_empty() {
            String::new()
        } else {
            format!(", target {} (ratio {})", year.target, year.target_ratio)
        };
        let change = if year.change.is_empty() {
            String::new()
        } else {
            format!(" ({})", year.change)
        };
        println!(
            "SPBE {}  {} {} {}{change}{target}",
            history.instance_name, year.year, year.index, year.predicate
        );
    }
    let evidence = wait_for("the evidence to show the flows", async || {
        let evidence = evaluation
            .get_integration_evidence(evaluation::GetIntegrationEvidenceRequest {})
            .await?
            .into_inner();
        Ok((!evidence.flows.is_empty() && !evidence.calls.is_empty()).then_some(evidence))
    })
    .await?;
    if let Some(connector) = evidence.suggestions.iter().find(|s| s.indicator == 18) {
        let suggestion = connector.suggestion.clone().unwrap_or_default();
        println!(
            "Evidence for indicator 18 ({}): suggests level {} {}",
            connector.name, suggestion.level, suggestion.level_name
        );
        for fact in &suggestion.facts {
            println!("  - {fact}");
        }
    }
    Ok(())
}
