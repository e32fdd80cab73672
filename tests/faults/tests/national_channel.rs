//! Fault 11: the national complaints channel (SP4N-LAPOR) fails one delivery in three and answers
//! slowly, and the complaints service is killed (SIGKILL) while it forwards a burst of accepted
//! complaints, then started again. Afterwards every complaint is forwarded, each with the
//! tracking number the channel gave its first successful delivery: deliveries repeated after the
//! crash carried the same idempotency key, one `ComplaintForwarded` per complaint, no dead
//! letters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use govbus_faults::{RECOVERY_LIMIT, wait_healthy};
use govbus_harness::NatsCluster;
use govbus_harness::service::{ServiceProcess, free_port, workspace_binary};
use govbus_proto::complaints::v1 as pb;
use govbus_proto::complaints::v1::complaints_service_client::ComplaintsServiceClient;
use govbus_proto::identity::v1::identity_service_client::IdentityServiceClient;
use tonic::transport::Channel;

const COMPLAINTS: u64 = 60;

/// The stand-in channel: idempotent by key, as the integration requires of it.
#[derive(Debug, Default)]
struct Ledger {
    attempts: u64,
    taken: BTreeMap<String, String>,
}

async fn take(State(ledger): State<Arc<Mutex<Ledger>>>, headers: HeaderMap) -> impl IntoResponse {
    let key = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let mut ledger = ledger.lock().expect("lock");
    ledger.attempts += 1;
    if ledger.attempts % 3 == 0 {
        return (StatusCode::BAD_GATEWAY, String::new()).into_response();
    }
    let next = format!("LAPOR-{}", ledger.taken.len() + 1);
    let tracking = ledger.taken.entry(key).or_insert(next).clone();
    (
        StatusCode::CREATED,
        format!(r#"{{"tracking_ref":"{tracking}"}}"#),
    )
        .into_response()
}

fn channel(address: &str) -> anyhow::Result<Channel> {
    Ok(
        tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(10))
            .connect_lazy(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_forwarding_to_a_failing_channel_forwards_each_complaint_once()
-> anyhow::Result<()> {
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let router = axum::Router::new()
        .route("/complaints", axum::routing::post(take))
        .with_state(ledger.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let national_url = format!("http://{}/complaints", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let dir = tempfile::tempdir()?;
    let nats = NatsCluster::start(1)?;
    let nats_url = nats.client_urls();
    let identity_address = format!("127.0.0.1:{}", free_port()?);
    let complaints_address = format!("127.0.0.1:{}", free_port()?);
    let identity_db = format!("sqlite://{}", dir.path().join("identity.db").display());
    let complaints_db = format!("sqlite://{}", dir.path().join("complaints.db").display());
    let identity_url = format!("http://{identity_address}");
    let identity = ServiceProcess::start(
        &workspace_binary("govbus-identity", "govbus-identity")?,
        "identity",
        &[
            ("GOVBUS_NATS_URL", &nats_url),
            ("GOVBUS_IDENTITY_DATABASE_URL", &identity_db),
            ("GOVBUS_IDENTITY_LISTEN", &identity_address),
            ("GOVBUS_LOG", "warn"),
        ],
        dir.path(),
    )?;
    let mut complaints = ServiceProcess::start(
        &workspace_binary("govbus-complaints", "govbus-complaints")?,
        "complaints",
        &[
            ("GOVBUS_NATS_URL", &nats_url),
            ("GOVBUS_IDENTITY_URL", &identity_url),
            ("GOVBUS_COMPLAINTS_DATABASE_URL", &complaints_db),
            ("GOVBUS_COMPLAINTS_LISTEN", &complaints_address),
            ("GOVBUS_COMPLAINTS_NATIONAL_CHANNEL_URL", &national_url),
            ("GOVBUS_COMPLAINTS_NATIONAL_CHANNEL_RETRY", "100ms"),
            ("GOVBUS_LOG", "warn"),
        ],
        dir.path(),
    )?;
    wait_healthy(&identity_address, &identity).await?;
    wait_healthy(&complaints_address, &complaints).await?;

    let mut register = IdentityServiceClient::new(channel(&identity_address)?);
    let mut client = ComplaintsServiceClient::new(channel(&complaints_address)?);
    let mut filed = Vec::new();
    for index in 0..COMPLAINTS {
        let citizen = govbus_bench::calls::registration(index)?;
        register.register_citizen(citizen.clone()).await?;
        let complaint = client
            .file_complaint(pb::FileComplaintRequest {
                idempotency_key: format!("file-{index}"),
                complainant_nik: citizen.nik.clone(),
                agency_code: "dlh".to_owned(),
                category: pb::Category::Environment.into(),
                text: format!("Sampah di TPS nomor {index} tidak diangkut seminggu."),
                channel: pb::Channel::Web.into(),
                benefit_ref: String::new(),
                application_ref: String::new(),
            })
            .await?
            .into_inner()
            .complaint
            .ok_or_else(|| anyhow::anyhow!("no complaint"))?;
        client
            .verify_complaint(pb::VerifyComplaintRequest {
                idempotency_key: format!("verify-{index}"),
                complaint_ref: complaint.complaint_ref.clone(),
                decision: Some(pb::verify_complaint_request::Decision::Accept(
                    pb::Acceptance {
                        class: pb::ComplaintClass::TidakBerkadarPengawasan.into(),
                        agency_code: String::new(),
                    },
                )),
            })
            .await?;
        filed.push(complaint.complaint_ref);
    }

    // Killed while the deliveries are under way, and started again.
    complaints.kill()?;
    let attempts_at_crash = ledger.lock().expect("lock").attempts;
    complaints.restart()?;
    let started_after_restart = Instant::now();
    wait_healthy(&complaints_address, &complaints).await?;

    let started = Instant::now();
    let mut forwarded = BTreeMap::new();
    while forwarded.len() < filed.len() {
        anyhow::ensure!(
            started.elapsed() < RECOVERY_LIMIT,
            "{} of {} forwarded after {RECOVERY_LIMIT:?}:\n{}",
            forwarded.len(),
            filed.len(),
            complaints.log()
        );
        for complaint_ref in &filed {
            if forwarded.contains_key(complaint_ref) {
                continue;
            }
            let complaint = client
                .get_complaint(pb::GetComplaintRequest {
                    complaint_ref: complaint_ref.clone(),
                })
                .await?
                .into_inner()
                .complaint
                .ok_or_else(|| anyhow::anyhow!("no complaint"))?;
            if !complaint.national_ref.is_empty() {
                forwarded.insert(complaint_ref.clone(), complaint.national_ref);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all_forwarded = started_after_restart.elapsed();

    {
        let ledger = ledger.lock().expect("lock");
        assert_eq!(ledger.taken.len(), filed.len(), "each complaint taken once");
        for (complaint_ref, national_ref) in &forwarded {
            assert_eq!(
                ledger.taken.get(complaint_ref),
                Some(national_ref),
                "the tracking number of the first successful delivery"
            );
        }
        assert!(
            ledger.attempts > filed.len() as u64,
            "failures were retried ({} attempts, {attempts_at_crash} before the crash)",
            ledger.attempts
        );
    }

    // One ComplaintForwarded per complaint in the stream; no dead letters.
    let bus = async_nats::connect(&nats_url).await?;
    let jetstream = async_nats::jetstream::new(bus);
    let started = Instant::now();
    loop {
        let mut stream = jetstream.get_stream("GOVBUS_COMPLAINTS").await?;
        let last = stream.info().await?.state.last_sequence;
        let mut events = BTreeMap::new();
        for sequence in 1..=last {
            let Ok(message) = stream.get_raw_message(sequence).await else {
                continue;
            };
            if message
                .headers
                .get("ce-type")
                .is_some_and(|value| value.as_str() == "complaints.complaint.forwarded.v1")
            {
                let subject = message
                    .headers
                    .get("ce-subject")
                    .map(|value| value.as_str().to_owned())
                    .unwrap_or_default();
                *events.entry(subject).or_insert(0) += 1;
            }
        }
        if events.len() == filed.len() {
            assert!(
                events.values().all(|count| *count == 1),
                "a complaint forwarded twice: {events:?}"
            );
            break;
        }
        anyhow::ensure!(
            started.elapsed() < RECOVERY_LIMIT,
            "{} ComplaintForwarded events of {}",
            events.len(),
            filed.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Ok(mut dead) = jetstream.get_stream("GOVBUS_DEADLETTER").await {
        assert_eq!(dead.info().await?.state.messages, 0, "no dead letters");
    }
    let ledger = ledger.lock().expect("lock");
    eprintln!(
        "fault 11: {} complaints forwarded, {} delivery attempts ({attempts_at_crash} before the \
         crash, one in three refused with 502), all forwarded {:.1} s after the restart",
        filed.len(),
        ledger.attempts,
        all_forwarded.as_secs_f64()
    );
    drop(ledger);
    server.abort();
    Ok(())
}
