//! `govbus up`'s stack, started in-process on free ports with its own embedded nats-server and
//! data folder, driven by the demo workload, and inspected through the console API and the
//! `govbus` operator commands.

mod support;

use std::process::Command;

use govbus::Observability;
use govbus::Stack;
use serde_json::Value;
use support::{
    assert_no_nik, config, eventually, install_telemetry, plant_poison, registered, run_demo, start,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_through_the_stack_and_the_console_shows_it() {
    let telemetry = install_telemetry();
    let data = tempfile::tempdir().expect("temp dir");
    let running = start(data.path(), &telemetry).await;

    let summary = run_demo(&running, 24, 11).await;
    assert_eq!(summary.failures, 0, "{:?}", summary.failure_examples);
    assert_eq!(summary.citizens, 48);
    assert!(
        summary.deaths >= 1 && summary.relocations >= 1,
        "{summary:?}"
    );
    assert_eq!(summary.benefits_suspended, summary.deaths);
    assert!(summary.licence_applications >= 4);
    assert!(summary.events > 48, "{summary:?}");
    assert_eq!(summary.spbe_index, "4.24");
    assert_eq!(summary.spbe_predicate, "Memuaskan");

    let overview = running.get("/api/overview").await;
    let services = overview["services"].as_array().expect("services");
    assert_eq!(services.len(), govbus::services::SERVICES.len());
    assert!(
        summary.complaints_filed >= 4 && summary.complaints_answered >= 3,
        "{summary:?}"
    );
    assert!(
        services.iter().all(|service| service["healthy"] == true),
        "{overview}"
    );
    assert_eq!(overview["nats_embedded"], true);

    // Complaints, as operators see them: no complainant, no text.
    let complaints = running.get("/api/complaints?limit=500").await;
    let rows = complaints["complaints"].as_array().expect("complaints");
    assert_eq!(rows.len() as u64, summary.complaints_filed);
    let raw = complaints.to_string();
    assert!(
        !raw.contains("belum diterima") && !raw.contains("complainant"),
        "{raw}"
    );
    assert!(
        rows.iter().any(|row| row["status"] == "closed")
            && rows.iter().any(|row| row["status"] == "refused"),
        "{raw}"
    );
    let refused = running.get("/api/complaints?status=refused").await;
    assert!(
        refused["complaints"]
            .as_array()
            .expect("complaints")
            .iter()
            .all(|row| row["status"] == "refused")
    );

    let flow = running.get("/api/flow").await;
    let edges: Vec<(String, String)> = flow
        .as_array()
        .expect("edges")
        .iter()
        .map(|edge| {
            (
                edge["from"].as_str().unwrap_or("").to_owned(),
                edge["to"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for expected in [
        ("identity", "welfare"),
        ("identity", "licensing"),
        ("welfare", "evaluation"),
    ] {
        assert!(
            edges.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} missing from {edges:?}"
        );
    }

    // Events are decoded, personal references masked.
    let deaths = running
        .get("/api/events?service=identity&type=identity.citizen.deceased.v1&limit=100")
        .await;
    let deaths = deaths.as_array().expect("events");
    assert_eq!(deaths.len() as u64, summary.deaths);
    assert!(
        deaths
            .iter()
            .all(|event| event["data"]["citizenRef"] == "•••"),
        "{deaths:?}"
    );

    // One death is one trace: the call, the event, welfare's reaction, evaluation's update.
    let chain = eventually("a RecordDeath trace reaching evaluation", async || {
        let traces = running.get("/api/traces?limit=2000").await;
        traces
            .as_array()
            .expect("traces")
            .iter()
            .find(|trace| {
                trace["root"]
                    .as_str()
                    .is_some_and(|root| root.ends_with("/RecordDeath"))
                    && ["identity", "welfare", "licensing", "evaluation"]
                        .iter()
                        .all(|service| {
                            trace["services"]
                                .as_array()
                                .is_some_and(|list| list.contains(&Value::from(*service)))
                        })
            })
            .cloned()
    })
    .await;
    let trace_id = chain["trace_id"].as_str().expect("id").to_owned();
    let spans = running.get(&format!("/api/traces/{trace_id}")).await;
    let spans = spans.as_array().expect("spans");
    let names: Vec<&str> = spans
        .iter()
        .filter_map(|span| span["name"].as_str())
        .collect();
    assert!(
        names
            .iter()
            .any(|name| name.starts_with("create govbus.identity.citizen.deceased")),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|name| name.starts_with("process govbus.identity.citizen.deceased")),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|name| name.starts_with("process govbus.welfare.benefit.suspended")),
        "{names:?}"
    );
    for span in spans {
        assert_no_nik(&span.to_string(), "a span");
    }

    let metrics = running.text("/metrics").await;
    for series in [
        "govbus_grpc_server_requests_total",
        "govbus_grpc_server_duration_seconds_bucket",
        "govbus_events_published_total",
        "govbus_events_consumed_total",
        "govbus_consumer_lag",
        "govbus_outbox_pending",
        "govbus_dead_letters",
    ] {
        assert!(metrics.contains(series), "{series} missing from /metrics");
    }
    assert_no_nik(&metrics, "/metrics");

    let spbe = running.get("/api/spbe").await;
    let years = spbe["history"]["years"].as_array().expect("years");
    assert_eq!(years.len(), 2);
    assert!(
        spbe["assessment"]["finalIndex"]["domains"]
            .as_array()
            .is_some_and(|domains| domains.len() == 4),
        "{spbe}"
    );
    assert!(
        !spbe["evidence"]["flows"]
            .as_array()
            .expect("flows")
            .is_empty()
    );

    // The operator commands against the same stack.
    let govbus = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_govbus"))
            .args(args)
            .args(["--console-url", &running.console])
            .output()
            .expect("govbus runs")
    };
    let output = govbus(&["services", "--json"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(
        parsed["services"].as_array().map(Vec::len),
        Some(govbus::services::SERVICES.len())
    );

    let output = govbus(&["trace", &trace_id]);
    assert_eq!(output.status.code(), Some(0));
    let tree = String::from_utf8_lossy(&output.stdout);
    assert!(
        tree.contains("RecordDeath") && tree.contains("  process"),
        "{tree}"
    );

    let output = govbus(&["streams"]);
    assert_eq!(output.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&output.stdout).contains("GOVBUS_IDENTITY"));

    let output = govbus(&[
        "tail",
        "--no-follow",
        "--history",
        "5",
        "--json",
        "--service",
        "welfare",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let lines: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON event per line"))
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(lines.iter().all(|event| {
        event["source"]
            .as_str()
            .is_some_and(|source| source.contains("welfare"))
    }));
    assert_no_nik(&String::from_utf8_lossy(&output.stdout), "govbus tail");

    // Following: new events arrive on `tail` as they are published.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_govbus"))
        .args([
            "tail",
            "--json",
            "--history",
            "0",
            "--type",
            "identity.citizen.registered.v1",
        ])
        .args(["--console-url", &running.console])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("govbus tail runs");
    let stdout = follower.stdout.take().expect("stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    // The subscription is open once the console has answered; then new registrations follow.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    run_demo(&running, 1, 12).await;
    let first = tokio::task::spawn_blocking(move || {
        receiver.recv_timeout(std::time::Duration::from_secs(30))
    })
    .await
    .expect("joined")
    .expect("a followed event");
    let followed: Value = serde_json::from_str(&first).expect("JSON event");
    assert_eq!(followed["event_type"], "identity.citizen.registered.v1");
    assert_eq!(followed["data"]["citizenRef"], "•••");
    follower.kill().expect("stopped");
    let _ = follower.wait();

    let output = govbus(&["deadletters", "replay", "999999", "--yes"]);
    assert_eq!(
        output.status.code(),
        Some(4),
        "a missing dead letter is exit code 4"
    );
    let output = govbus(&["trace", "00000000000000000000000000000001"]);
    assert_eq!(output.status.code(), Some(4));

    running.stack.stop().await;
    telemetry.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_replayed_and_data_survives_a_restart() {
    let telemetry = install_telemetry();
    let data = tempfile::tempdir().expect("temp dir");
    let running = start(data.path(), &telemetry).await;
    run_demo(&running, 4, 5).await;

    // A poison message on identity's stream: a death event whose payload is not protobuf.
    plant_poison(&running, "poison-1").await;

    let letters = eventually("the poison message in the dead letters", async || {
        let letters = running.get("/api/deadletters").await;
        (letters["count"].as_u64() >= Some(2)).then_some(letters)
    })
    .await;
    let welfare_letter = letters["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|letter| {
            letter["consumer"]
                .as_str()
                .is_some_and(|name| name.starts_with("welfare"))
        })
        .expect("welfare gave up on it")
        .clone();
    assert!(
        welfare_letter["reason"]
            .as_str()
            .is_some_and(|reason| !reason.is_empty())
    );
    let sequence = welfare_letter["sequence"].as_u64().expect("sequence");
    let (status, replayed) = running
        .post(&format!("/api/deadletters/{sequence}/replay"))
        .await;
    assert_eq!(status, 200, "{replayed}");
    assert_eq!(replayed["replayed"], 1);
    // Still poison: welfare gives up again, as a new dead letter; the replayed one is gone.
    eventually(
        "the replayed message to be dead-lettered again",
        async || {
            let letters = running.get("/api/deadletters").await;
            let items = letters["items"].as_array().cloned().unwrap_or_default();
            let again = items.iter().any(|letter| {
                letter["consumer"] == welfare_letter["consumer"]
                    && letter["sequence"].as_u64() > Some(sequence)
            });
            let original_gone = items
                .iter()
                .all(|letter| letter["sequence"].as_u64() != Some(sequence));
            (again && original_gone).then_some(())
        },
    )
    .await;
    let (status, _) = running
        .post(&format!("/api/deadletters/{sequence}/replay"))
        .await;
    assert_eq!(status, 404);

    let registered_before = registered(&running).await;
    assert_eq!(registered_before, 8);
    running.stack.stop().await;

    // The data folder keeps everything: the same run again is answered from the stored
    // idempotency keys, with no second registration.
    let running = start(data.path(), &telemetry).await;
    let again = run_demo(&running, 4, 5).await;
    assert_eq!(again.failures, 0, "{:?}", again.failure_examples);
    assert_eq!(registered(&running).await, registered_before);
    let letters = running.get("/api/deadletters").await;
    assert!(
        letters["count"].as_u64() >= Some(2),
        "dead letters kept: {letters}"
    );
    let summary = run_demo(&running, 2, 6).await;
    assert_eq!(summary.failures, 0, "{:?}", summary.failure_examples);
    running.stack.stop().await;
    telemetry.shutdown();
}

#[test]
fn a_bad_setting_stops_up_with_the_key_named() {
    let output = Command::new(env!("CARGO_BIN_EXE_govbus"))
        .args(["up", "--set", "identity.listen=nowhere"])
        .env(
            "GOVBUS_DATA_DIR",
            std::env::temp_dir().join("govbus-never-started"),
        )
        .output()
        .expect("govbus runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("identity.listen") && stderr.contains("--set identity.listen"),
        "{stderr}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_govbus"))
        .args(["up"])
        .env("GOVBUS_TELEMETRY_KEEP_TRACES", "lots")
        .output()
        .expect("govbus runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("GOVBUS_TELEMETRY_KEEP_TRACES"));
}

#[test]
fn a_second_stack_on_the_same_data_folder_is_refused() {
    let data = tempfile::tempdir().expect("temp dir");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let observability = Observability {
            traces: govbus_kit::telemetry::TraceStore::new(10),
            metrics: None,
        };
        let first = Stack::start(config(data.path()), observability.clone())
            .await
            .expect("first starts");
        let second = Stack::start(config(data.path()), observability).await;
        let error = second.expect_err("refused").to_string();
        assert!(error.contains("another govbus stack"), "{error}");
        first.stop().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_nats_server_can_be_used_instead_of_the_embedded_one() {
    let server = tokio::task::spawn_blocking(govbus_harness::NatsServer::start)
        .await
        .expect("joined")
        .expect("nats-server");
    let data = tempfile::tempdir().expect("temp dir");
    let mut config = config(data.path());
    config.nats.url = Some(server.client_url());
    let stack = Stack::start(
        config,
        Observability {
            traces: govbus_kit::telemetry::TraceStore::new(10),
            metrics: None,
        },
    )
    .await
    .expect("starts on the given server");
    assert!(!stack.endpoints().nats_embedded);
    assert_eq!(stack.endpoints().nats_url, server.client_url());
    assert!(!data.path().join("nats").exists(), "no embedded store");
    stack.stop().await;
    let bus = govbus_bus::Bus::connect(govbus_bus::BusOptions::new(server.client_url()))
        .await
        .expect("bus");
    bus.jetstream()
        .get_stream("GOVBUS_IDENTITY")
        .await
        .expect("the stack provisioned its streams on the given server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_embedded_nats_server_is_restarted_and_the_stack_carries_on() {
    let telemetry = install_telemetry();
    let data = tempfile::tempdir().expect("temp dir");
    let running = start(data.path(), &telemetry).await;
    run_demo(&running, 2, 31).await;
    let pid = running.stack.embedded_nats_pid().expect("embedded server");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("killed");
    let restarted = eventually("the watchdog to restart nats-server", async || {
        running.stack.embedded_nats_pid().filter(|new| *new != pid)
    })
    .await;
    assert_ne!(restarted, pid);
    eventually("the console to reconnect", async || {
        let overview = running.client.get::<Value>("/api/overview").await.ok()?;
        (overview["nats_connected"] == true).then_some(())
    })
    .await;
    // Same port, same store: the services reconnect and the bus carries events as before.
    let summary = run_demo(&running, 4, 32).await;
    assert_eq!(summary.failures, 0, "{:?}", summary.failure_examples);
    assert_eq!(summary.benefits_suspended, summary.deaths);
    assert_eq!(
        registered(&running).await,
        12,
        "events from before the kill are kept"
    );
    running.stack.stop().await;
    telemetry.shutdown();
}

#[test]
fn certs_init_writes_a_ca_and_a_certificate_per_name_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = dir.path().join("certs");
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_govbus"))
            .args(["certs", "init", "--names", "identity,operator", "--dir"])
            .arg(&certs)
            .output()
            .expect("govbus runs")
    };
    let first = run();
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    for file in [
        "ca.pem",
        "ca-key.pem",
        "identity.pem",
        "identity-key.pem",
        "operator.pem",
        "operator-key.pem",
    ] {
        assert!(certs.join(file).is_file(), "{file}");
    }
    let pem = std::fs::read(certs.join("operator.pem")).expect("certificate");
    assert!(pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
    let second = run();
    assert_eq!(
        second.status.code(),
        Some(1),
        "existing certificates are not overwritten"
    );
    assert!(String::from_utf8_lossy(&second.stderr).contains("already holds certificates"));
}

#[test]
fn certs_revoke_lists_the_certificate_and_issues_a_new_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = dir.path().join("certs");
    let govbus = |arguments: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_govbus"))
            .args(arguments)
            .arg("--dir")
            .arg(&certs)
            .output()
            .expect("govbus runs")
    };
    let init = govbus(&["certs", "init", "--names", "identity,welfare"]);
    assert_eq!(init.status.code(), Some(0));
    let before = std::fs::read(certs.join("welfare.pem")).expect("certificate");
    let revoked = govbus(&["certs", "revoke", "welfare", "--reason", "superseded"]);
    let said = String::from_utf8_lossy(&revoked.stdout);
    assert_eq!(
        revoked.status.code(),
        Some(0),
        "{said}{}",
        String::from_utf8_lossy(&revoked.stderr)
    );
    assert!(said.contains("restart welfare"), "{said}");
    let after = std::fs::read(certs.join("welfare.pem")).expect("a new certificate");
    assert_ne!(before, after, "a new certificate in its place");
    assert!(
        std::fs::read(certs.join("ca.crl"))
            .expect("the list")
            .starts_with(b"-----BEGIN X509 CRL-----")
    );

    // Bad input: an unknown reason, a name without a certificate.
    for (arguments, expected) in [
        (
            &["certs", "revoke", "welfare", "--reason", "bored"][..],
            "not one of key-compromise",
        ),
        (
            &["certs", "revoke", "nobody"][..],
            "no certificate of nobody",
        ),
    ] {
        let refused = govbus(arguments);
        assert_ne!(refused.status.code(), Some(0));
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_speaks_mutual_tls_by_default() {
    let data = tempfile::tempdir().expect("temp dir");
    let observability = Observability {
        traces: govbus_kit::telemetry::TraceStore::new(10),
        metrics: None,
    };
    let stack = Stack::start(config(data.path()), observability)
        .await
        .expect("starts");
    stack
        .wait_until_healthy(std::time::Duration::from_secs(30))
        .await
        .expect("healthy over mutual TLS");
    let certificates = stack
        .endpoints()
        .certificates_dir
        .clone()
        .expect("TLS on by default");
    assert!(certificates.join("ca.pem").is_file());
    let identity = stack
        .endpoints()
        .services
        .iter()
        .find(|endpoint| endpoint.name == "identity")
        .expect("identity")
        .clone();
    let request = || govbus_proto::identity::v1::VerifyCitizenRequest {
        nik: "3573015001900001".to_owned(),
        ..Default::default()
    };
    // Plain HTTP/2 is not served.
    let plain = govbus::endpoints::grpc_channel(&identity, None).expect("channel");
    let refused =
        govbus_proto::identity::v1::identity_service_client::IdentityServiceClient::new(plain)
            .verify_citizen(request())
            .await;
    assert!(refused.is_err());
    // The operator's certificate is accepted.
    let operator = govbus_kit::tls::ServiceTls::from_files(
        "operator",
        &govbus_kit::tls::CertificatePaths::in_dir(&certificates, "operator"),
    )
    .expect("operator certificate");
    let secured = govbus::endpoints::grpc_channel(&identity, Some(&operator)).expect("channel");
    govbus_proto::identity::v1::identity_service_client::IdentityServiceClient::new(secured)
        .verify_citizen(request())
        .await
        .expect("answered over mutual TLS");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_policy_decides_who_calls_what_and_is_reloaded_when_edited() {
    let data = tempfile::tempdir().expect("temp dir");
    let observability = Observability {
        traces: govbus_kit::telemetry::TraceStore::new(10),
        metrics: None,
    };
    let stack = Stack::start(config(data.path()), observability)
        .await
        .expect("starts");
    let certificates = stack.endpoints().certificates_dir.clone().expect("TLS on");
    let identity = stack
        .endpoints()
        .services
        .iter()
        .find(|endpoint| endpoint.name == "identity")
        .expect("identity")
        .clone();
    let verify_as = |caller: &'static str| {
        let certificates = certificates.clone();
        let identity = identity.clone();
        async move {
            let tls = govbus_kit::tls::ServiceTls::from_files(
                caller,
                &govbus_kit::tls::CertificatePaths::in_dir(&certificates, caller),
            )
            .expect("certificate");
            let channel = govbus::endpoints::grpc_channel(&identity, Some(&tls)).expect("channel");
            govbus_proto::identity::v1::identity_service_client::IdentityServiceClient::new(channel)
                .verify_citizen(govbus_proto::identity::v1::VerifyCitizenRequest {
                    nik: "3573015001900001".to_owned(),
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|status| status.code())
        }
    };
    // Recording a death, as the console: refused before the request is even read.
    let death_as_console = || {
        let certificates = certificates.clone();
        let identity = identity.clone();
        async move {
            let tls = govbus_kit::tls::ServiceTls::from_files(
                "console",
                &govbus_kit::tls::CertificatePaths::in_dir(&certificates, "console"),
            )
            .expect("certificate");
            let channel = govbus::endpoints::grpc_channel(&identity, Some(&tls)).expect("channel");
            govbus_proto::identity::v1::identity_service_client::IdentityServiceClient::new(channel)
                .record_death(govbus_proto::identity::v1::RecordDeathRequest::default())
                .await
                .map(|_| ())
                .map_err(|status| status.code())
        }
    };
    assert_eq!(verify_as("welfare").await, Ok(()));
    assert_eq!(verify_as("licensing").await, Ok(()));
    // The console looks NIKs up only to answer a person's request for their history.
    assert_eq!(verify_as("console").await, Ok(()));
    assert_eq!(
        verify_as("evaluation").await,
        Err(tonic::Code::PermissionDenied)
    );
    assert_eq!(death_as_console().await, Err(tonic::Code::PermissionDenied));

    // An operator edits the policy in the data folder; it is reloaded without a restart.
    let policy = data.path().join("access-policy.toml");
    let mut text = std::fs::read_to_string(&policy).expect("the shipped policy was copied");
    text.push_str(
        "\n[[grant]]\ncallers = [\"evaluation\"]\nmethods = [\"govbus.identity.v1.IdentityService/VerifyCitizen\"]\n",
    );
    std::fs::write(&policy, text).expect("edited");
    eventually("the edited policy to be in force", async || {
        (verify_as("evaluation").await == Ok(())).then_some(())
    })
    .await;
    // A broken edit leaves the policy in force.
    std::fs::write(&policy, "[[grant]\n").expect("broken");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(verify_as("evaluation").await, Ok(()));
    assert_eq!(death_as_console().await, Err(tonic::Code::PermissionDenied));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_nats_server_admits_only_the_stacks_users_with_their_rights() {
    let data = tempfile::tempdir().expect("temp dir");
    let observability = Observability {
        traces: govbus_kit::telemetry::TraceStore::new(10),
        metrics: None,
    };
    let stack = Stack::start(config(data.path()), observability)
        .await
        .expect("starts");
    let anonymous =
        govbus_bus::Bus::connect(govbus_bus::BusOptions::new(&stack.endpoints().nats_url)).await;
    assert!(
        anonymous.is_err(),
        "a client without the stack's credentials got in"
    );

    let welfare = govbus_bus::Bus::connect(
        stack
            .bus_options("welfare")
            .request_timeout(std::time::Duration::from_secs(2))
            .publish_retry(
                govbus_bus::RetryPolicy::default()
                    .give_up_after(Some(std::time::Duration::from_secs(2))),
            ),
    )
    .await
    .expect("welfare's user connects");
    let forged = welfare
        .publisher("identity")
        .expect("a publisher object")
        .publish(&govbus_proto::identity::v1::CitizenDeceased {
            citizen_ref: "forged".to_owned(),
            date_of_death: "2024-11-28".to_owned(),
        })
        .await;
    assert!(
        forged.is_err(),
        "welfare's user published an identity event"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_refuses_what_another_site_makes_a_browser_send() {
    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full};
    let telemetry = install_telemetry();
    let data = tempfile::tempdir().expect("temp dir");
    let running = start(data.path(), &telemetry).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let own_origin = running.console.clone();
    let post = async |headers: &[(&str, &str)], body: &'static str| {
        let mut request =
            http::Request::post(format!("{}/api/deadletters/replay-all", running.console));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = client
            .request(request.body(Full::new(Bytes::from(body))).expect("request"))
            .await
            .expect("answered");
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    };
    /// Headers, body, and the reason the answer must give.
    type Refused<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let refused: [Refused<'_>; 4] = [
        // A hidden form on another site, as a browser sends it.
        (
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", "http://evil.example"),
                ("sec-fetch-site", "cross-site"),
            ],
            "go=1",
            "another site",
        ),
        // A script of another origin that managed to add the header.
        (
            &[("x-govbus-console", "1"), ("origin", "http://evil.example")],
            "",
            "not from the console",
        ),
        (
            &[("x-govbus-console", "1"), ("sec-fetch-site", "same-site")],
            "",
            "another site",
        ),
        // Anything without the console's header.
        (&[], "", "must carry the x-govbus-console header"),
    ];
    for (headers, body, reason) in refused {
        let (status, answer) = post(headers, body).await;
        assert_eq!(status, 403, "{headers:?}: {answer}");
        assert!(answer.contains(reason), "{headers:?}: {answer}");
    }
    // The console's own page, and the operators' commands (the client sends the header).
    let (status, answer) = post(
        &[
            ("x-govbus-console", "1"),
            ("origin", own_origin.as_str()),
            ("sec-fetch-site", "same-origin"),
        ],
        "",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = running.post("/api/deadletters/replay-all").await;
    assert_eq!(status, 200, "{answer}");
    running.stack.stop().await;
}
