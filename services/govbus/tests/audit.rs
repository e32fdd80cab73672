//! The processing log of a running stack: after a demo run and one scripted life (registration,
//! a household, a benefit, a licence, a death), `govbus audit subject` lists exactly that
//! person's processings, and `govbus audit verify` finds the log intact, every block stamped by
//! a real time-stamping authority and its token checked.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use govbus_kit::tls::{CertificatePaths, ServiceTls};
use govbus_proto::identity::v1 as identity;
use govbus_proto::identity::v1::identity_service_client::IdentityServiceClient;
use govbus_proto::licensing::v1 as licensing;
use govbus_proto::licensing::v1::licensing_service_client::LicensingServiceClient;
use govbus_proto::welfare::v1 as welfare;
use govbus_proto::welfare::v1::welfare_service_client::WelfareServiceClient;
use serde_json::{Value, json};
use support::{Running, config, eventually, install_telemetry, run_demo, start_with};

fn channel(running: &Running, service: &str) -> tonic::transport::Channel {
    let endpoint = running
        .stack
        .endpoints()
        .services
        .iter()
        .find(|endpoint| endpoint.name == service)
        .expect("service")
        .clone();
    let dir = running
        .stack
        .endpoints()
        .certificates_dir
        .clone()
        .expect("TLS on");
    let operator = ServiceTls::from_files("operator", &CertificatePaths::in_dir(&dir, "operator"))
        .expect("operator certificate");
    govbus::endpoints::grpc_channel(&endpoint, Some(&operator)).expect("channel")
}

async fn history(running: &Running, nik: &str) -> Value {
    running
        .client
        .post_json::<Value>("/api/audit/subject", &json!({ "nik": nik }))
        .await
        .expect("history")
}

/// (writer, kind, requester, action) → how often.
fn tally(history: &Value) -> BTreeMap<(String, String, String, String), usize> {
    let mut counts = BTreeMap::new();
    for entry in history["entries"].as_array().expect("entries") {
        let key = ["writer", "kind", "requester", "action"]
            .map(|field| entry[field].as_str().unwrap_or_default().to_owned());
        *counts
            .entry((
                key[0].clone(),
                key[1].clone(),
                key[2].clone(),
                key[3].clone(),
            ))
            .or_insert(0) += 1;
    }
    counts
}

fn row(
    writer: &str,
    kind: &str,
    requester: &str,
    action: &str,
) -> (String, String, String, String) {
    (
        writer.to_owned(),
        kind.to_owned(),
        requester.to_owned(),
        action.to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persons_processing_history_is_complete_and_the_log_verifies() {
    let telemetry = install_telemetry();
    let data = tempfile::tempdir().expect("temp dir");
    // Every block stamped by a real time-stamping authority, whose tokens verification checks.
    let authority = govbus_harness::TimestampAuthority::start().expect("the TSA starts");
    let mut stack = config(data.path());
    stack.audit.tsa_url = Some(authority.url());
    stack.audit.tsa_certificate = Some(authority.ca_path());
    let running = start_with(stack, &telemetry).await;
    let summary = run_demo(&running, 12, 5).await;
    assert_eq!(summary.failures, 0, "{:?}", summary.failure_examples);

    // One life, scripted, by the front office (the operator's certificate).
    let (members, kk) = govbus::demo::people::household(9_999, 0);
    let person = &members[0];
    let mut identity_client = IdentityServiceClient::new(channel(&running, "identity"));
    let mut welfare_client = WelfareServiceClient::new(channel(&running, "welfare"));
    let mut licensing_client = LicensingServiceClient::new(channel(&running, "licensing"));
    identity_client
        .register_citizen(identity::RegisterCitizenRequest {
            idempotency_key: "audit-citizen".to_owned(),
            nik: person.nik.clone(),
            kk_number: kk.clone(),
            full_name: person.name.clone(),
            birth_place: "Malang".to_owned(),
            birth_date: person.birth_date.clone(),
            sex: person.sex.into(),
            address: Some(identity::Address {
                street: "Jl. Ijen 1".to_owned(),
                kelurahan_code: person.kelurahan.clone(),
            }),
        })
        .await
        .expect("registered");
    welfare_client
        .register_household(welfare::RegisterHouseholdRequest {
            idempotency_key: "audit-household".to_owned(),
            kk_number: kk.clone(),
            kelurahan_code: person.kelurahan.clone(),
            member_niks: vec![person.nik.clone()],
        })
        .await
        .expect("household registered");
    welfare_client
        .assess_household(welfare::AssessHouseholdRequest {
            idempotency_key: "audit-assess".to_owned(),
            kk_number: kk.clone(),
            desil: 1,
        })
        .await
        .expect("assessed");
    welfare_client
        .apply_for_programme(welfare::ApplyForProgrammeRequest {
            idempotency_key: "audit-pkh".to_owned(),
            nik: person.nik.clone(),
            programme: welfare::Programme::Pkh.into(),
        })
        .await
        .expect("applied");
    licensing_client
        .apply_for_licence(licensing::ApplyForLicenceRequest {
            idempotency_key: "audit-licence".to_owned(),
            applicant_nik: person.nik.clone(),
            business_name: "Warung Ijen".to_owned(),
            kbli_code: "56101".to_owned(),
            kelurahan_code: person.kelurahan.clone(),
            risk_level: licensing::RiskLevel::Rendah.into(),
        })
        .await
        .expect("licence applied for");
    identity_client
        .record_death(identity::RecordDeathRequest {
            idempotency_key: "audit-death".to_owned(),
            nik: person.nik.clone(),
            date_of_death: "2025-01-02".to_owned(),
        })
        .await
        .expect("death recorded");

    let verify = "govbus.identity.v1.IdentityService/VerifyCitizen";
    let expected: BTreeMap<_, usize> = [
        (
            row(
                "identity",
                "call",
                "operator",
                "govbus.identity.v1.IdentityService/RegisterCitizen",
            ),
            1,
        ),
        (
            row(
                "welfare",
                "call",
                "operator",
                "govbus.welfare.v1.WelfareService/RegisterHousehold",
            ),
            1,
        ),
        // Welfare verifies the member when registering the household and again on applying.
        (row("identity", "call", "welfare", verify), 2),
        (
            row(
                "welfare",
                "call",
                "operator",
                "govbus.welfare.v1.WelfareService/ApplyForProgramme",
            ),
            1,
        ),
        (
            row(
                "licensing",
                "call",
                "operator",
                "govbus.licensing.v1.LicensingService/ApplyForLicence",
            ),
            1,
        ),
        (row("identity", "call", "licensing", verify), 1),
        (
            row(
                "identity",
                "call",
                "operator",
                "govbus.identity.v1.IdentityService/RecordDeath",
            ),
            1,
        ),
        (
            row(
                "welfare",
                "delivery",
                "identity",
                "identity.citizen.deceased.v1 via welfare-identity",
            ),
            1,
        ),
        (
            row(
                "licensing",
                "delivery",
                "identity",
                "identity.citizen.deceased.v1 via licensing-identity",
            ),
            1,
        ),
        // The console's own lookup of the NIK for this very request is recorded too.
        (row("identity", "call", "console", verify), 1),
    ]
    .into_iter()
    .collect();
    let nik = person.nik.clone();
    let answered = eventually("the person's whole history", async || {
        let answered = history(&running, &nik).await;
        let found = tally(&answered);
        // Each request adds the console's lookup: count those separately.
        let lookups = found
            .get(&row("identity", "call", "console", verify))
            .copied()
            .unwrap_or(0);
        let mut without_lookups = found.clone();
        without_lookups.insert(row("identity", "call", "console", verify), 1);
        (lookups >= 1 && without_lookups == expected).then_some(answered)
    })
    .await;
    assert_eq!(answered["registered"], true);
    assert_eq!(answered["log_intact"], true);
    let entries = answered["entries"].as_array().expect("entries");
    for entry in entries {
        assert_eq!(
            entry["trace_id"].as_str().map(str::len),
            Some(32),
            "{entry}"
        );
        let purpose = entry["purpose"].as_str().unwrap_or_default();
        assert!(!purpose.is_empty() && !purpose.starts_with('('), "{entry}");
        assert!(!entry.to_string().contains(&nik), "no NIK in the answer");
    }
    assert!(
        entries
            .windows(2)
            .all(|pair| pair[0]["at"].as_str() <= pair[1]["at"].as_str()),
        "oldest first"
    );

    // Another demo citizen's history holds none of these entries, and an unknown NIK has none.
    let (others, _) = govbus::demo::people::household(5, 0);
    let other = history(&running, &others[0].nik).await;
    let other_entries = other["entries"].as_array().expect("entries");
    assert!(!other_entries.is_empty());
    assert!(
        other_entries
            .iter()
            .all(|entry| !entries.iter().any(|mine| mine["hash"] == entry["hash"]))
    );
    let unknown = history(&running, "3573010101010999").await;
    assert_eq!(unknown["registered"], false);
    let unknown_calls: Vec<&Value> = unknown["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|entry| entry["requester"] != "console")
        .collect();
    assert!(unknown_calls.is_empty(), "{unknown_calls:?}");

    // The operators' commands.
    let heads = data.path().join("heads.json");
    let verified = Command::new(env!("CARGO_BIN_EXE_govbus"))
        .args([
            "audit",
            "verify",
            "--json",
            "--console-url",
            &running.console,
        ])
        .arg("--save-heads")
        .arg(&heads)
        .output()
        .expect("govbus runs");
    assert_eq!(verified.status.code(), Some(0), "{verified:?}");
    let report: Value = serde_json::from_slice(&verified.stdout).expect("json");
    assert_eq!(report["intact"], true);
    let writers: Vec<&str> = report["writers"]
        .as_array()
        .expect("writers")
        .iter()
        .filter_map(|writer| writer["writer"].as_str())
        .collect();
    assert_eq!(writers, ["complaints", "identity", "licensing", "welfare"]);
    for writer in report["writers"].as_array().expect("writers") {
        assert!(writer["timestamped"].as_u64() > Some(0), "{writer}");
        assert_eq!(writer["untimestamped"], 0, "{writer}");
        assert_eq!(writer["timestamps_unchecked"], 0, "{writer}");
    }
    let again = Command::new(env!("CARGO_BIN_EXE_govbus"))
        .args([
            "audit",
            "verify",
            "--console-url",
            &running.console,
            "--heads",
        ])
        .arg(&heads)
        .output()
        .expect("govbus runs");
    assert_eq!(again.status.code(), Some(0), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stdout).contains("Intact"));

    let listed = Command::new(env!("CARGO_BIN_EXE_govbus"))
        .args(["audit", "subject", &nik, "--console-url", &running.console])
        .output()
        .expect("govbus runs");
    assert_eq!(listed.status.code(), Some(0), "{listed:?}");
    let table = String::from_utf8_lossy(&listed.stdout);
    for expected in ["RecordDeath", "welfare-identity", "verified intact"] {
        assert!(table.contains(expected), "{expected} missing from\n{table}");
    }
    let refused = Command::new(env!("CARGO_BIN_EXE_govbus"))
        .args([
            "audit",
            "subject",
            "12345",
            "--console-url",
            &running.console,
        ])
        .output()
        .expect("govbus runs");
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("nik"));

    running.stack.stop().await;
}
