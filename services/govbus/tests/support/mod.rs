//! What the stack's tests share: a stack on free ports with its own data folder, the demo
//! workload, waiting, and checks for personal data.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::path::Path;
use std::time::{Duration, Instant};

use govbus::cli::ConsoleClient;
use govbus::config::{Layers, Origin};
use govbus::demo::{Summary, Workload};
use govbus::{Observability, Stack, StackConfig};
use govbus_kit::telemetry::{Telemetry, TelemetrySettings};
use serde_json::Value;

pub(crate) struct Running {
    pub(crate) stack: Stack,
    pub(crate) console: String,
    pub(crate) client: ConsoleClient,
}

impl Running {
    pub(crate) async fn get(&self, path: &str) -> Value {
        self.client
            .get(path)
            .await
            .unwrap_or_else(|error| panic!("GET {path}: {error:#}"))
    }

    pub(crate) async fn text(&self, path: &str) -> String {
        self.client
            .get_text(path)
            .await
            .unwrap_or_else(|error| panic!("GET {path}: {error:#}"))
    }

    /// POSTs and returns the status (200 or the API error's) and the answer.
    pub(crate) async fn post(&self, path: &str) -> (u16, Value) {
        match self.client.post::<Value>(path).await {
            Ok(answer) => (200, answer),
            Err(govbus::cli::ClientError::Refused { status, message }) => {
                (status, Value::from(message))
            }
            Err(error) => panic!("POST {path}: {error:#}"),
        }
    }
}

pub(crate) fn config(data_dir: &Path) -> StackConfig {
    Layers::defaults()
        .set(
            "data_dir",
            &data_dir.display().to_string(),
            Origin::Flag("test".into()),
        )
        .expect("data_dir")
        .build()
        .expect("valid")
        .on_free_ports()
}

pub(crate) async fn start(data_dir: &Path, telemetry: &Telemetry) -> Running {
    start_with(config(data_dir), telemetry).await
}

/// [`start`] with `config` (made by [`config`], then changed).
pub(crate) async fn start_with(config: StackConfig, telemetry: &Telemetry) -> Running {
    let stack = Box::pin(Stack::start(
        config,
        Observability {
            traces: telemetry.traces().clone(),
            metrics: Some(telemetry.metrics().clone()),
        },
    ))
    .await
    .expect("the stack starts");
    stack
        .wait_until_healthy(Duration::from_secs(30))
        .await
        .expect("healthy");
    let console = format!("http://{}", stack.endpoints().console.expect("console on"));
    Running {
        stack,
        client: ConsoleClient::new(&console).expect("client"),
        console,
    }
}

pub(crate) fn install_telemetry() -> Telemetry {
    Telemetry::install(&TelemetrySettings {
        log_filter: "warn".to_owned(),
        ..TelemetrySettings::default()
    })
    .expect("telemetry installs once per test process")
}

pub(crate) async fn run_demo(running: &Running, households: u32, seed: u64) -> Summary {
    let streams_total = || async {
        let streams = running.get("/api/streams").await;
        Ok::<u64, std::convert::Infallible>(
            streams
                .as_array()
                .expect("list")
                .iter()
                .filter(|stream| stream["service"] != "deadletter")
                .filter_map(|stream| stream["last_sequence"].as_u64())
                .sum(),
        )
    };
    govbus::demo::run(
        &running.stack.endpoints().services,
        &Workload {
            households,
            seed,
            progress: false,
            tls: running
                .stack
                .endpoints()
                .certificates_dir
                .as_ref()
                .map(|dir| {
                    govbus_kit::tls::ServiceTls::from_files(
                        "operator",
                        &govbus_kit::tls::CertificatePaths::in_dir(dir, "operator"),
                    )
                    .expect("the operator's certificate")
                }),
        },
        streams_total,
    )
    .await
    .expect("the demo runs")
}

pub(crate) async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The NIKs the demo registered all start with Kota Malang's code; none may leave the stack in
/// an operator-facing answer.
pub(crate) fn assert_no_nik(text: &str, what: &str) {
    for run in text.split(|c: char| !c.is_ascii_digit()) {
        assert!(
            !(run.len() == 16 && run.starts_with("3573")),
            "{what} contains what looks like a NIK: {run}"
        );
    }
}

pub(crate) async fn registered(running: &Running) -> usize {
    running
        .get("/api/events?service=identity&type=identity.citizen.registered.v1&limit=1000")
        .await
        .as_array()
        .map_or(0, Vec::len)
}

/// Publishes on identity's stream a death event whose payload is not protobuf: every consumer
/// of it gives up and dead-letters it.
pub(crate) async fn plant_poison(running: &Running, id: &str) {
    // As a faulty identity would: only identity may publish on its stream.
    let bus = govbus_bus::Bus::connect(running.stack.bus_options("identity"))
        .await
        .expect("bus");
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-id", id),
        ("ce-source", "/govbus/identity"),
        ("ce-type", "identity.citizen.deceased.v1"),
        ("ce-time", "2026-11-28T00:00:00Z"),
        ("ce-dataschema", "govbus.identity.v1.CitizenDeceased"),
        ("content-type", "application/protobuf"),
        ("Nats-Msg-Id", id),
    ] {
        headers.insert(name, value);
    }
    bus.jetstream()
        .publish_with_headers(
            "govbus.identity.citizen.deceased.v1",
            headers,
            vec![0xff, 0xff, 0xff].into(),
        )
        .await
        .expect("published")
        .await
        .expect("stored");
}
