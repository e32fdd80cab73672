//! `govbus-evaluation`: runs the SPBE evaluation service.
//!
//! Configuration comes from the environment:
//! - `GOVBUS_LOG`, `GOVBUS_TELEMETRY_LOG_FORMAT`, `GOVBUS_TELEMETRY_OTLP_ENDPOINT`: logs and
//!   trace export (see `docs/operating.md`);
//! - `GOVBUS_TLS_DIR`: a folder of certificates (`ca.pem`, `<service>.pem`, `<service>-key.pem`,
//!   as `govbus certs init` writes them) for mutual TLS; unset serves plain HTTP/2;
//! - `GOVBUS_NATS_URL` (required): the NATS server(s), comma-separated; `GOVBUS_NATS_CREDENTIALS`,
//!   `GOVBUS_NATS_USER`/`GOVBUS_NATS_PASSWORD`, `GOVBUS_NATS_CA`, `GOVBUS_STREAM_REPLICAS` and the
//!   rest of the bus settings in `govbus_kit::bus_env` (see `docs/operating.md`);
//! - `GOVBUS_EVALUATION_DATABASE_URL`: default `sqlite://.govbus/evaluation.db`;
//! - `GOVBUS_EVALUATION_LISTEN`: the gRPC address (default `127.0.0.1:50054`);
//! - `GOVBUS_EVALUATION_SERVICES`: services whose events are evidence (default
//!   `identity,welfare,licensing`);
//! - `GOVBUS_EVALUATION_INSTRUMENTS_DIR`: a folder of further instrument files;
//! - `GOVBUS_AGENCIES`: the instance's agencies' list (unset: Kota Malang's, shipped) and
//!   `GOVBUS_EVALUATION_MEMBERS`: the agency of each service (`identity=dukcapil,…`), what SPBE
//!   indicator 18 counts.

use anyhow::Context as _;
use govbus_civil::agencies::Agencies;
use govbus_evaluation::{Application, EvaluationConfig, Membership};

/// mimalloc: see the workspace's `Cargo.toml`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The instance's agencies (`GOVBUS_AGENCIES`, a list file; unset: Kota Malang's) and whose
/// each service is (`GOVBUS_EVALUATION_MEMBERS`, e.g. `identity=dukcapil,welfare=dinsos`).
fn membership() -> anyhow::Result<Membership> {
    let agencies = Agencies::configured(
        std::env::var_os("GOVBUS_AGENCIES")
            .as_deref()
            .map(std::path::Path::new),
    )?;
    let mut members = std::collections::BTreeMap::new();
    for pair in std::env::var("GOVBUS_EVALUATION_MEMBERS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let Some((service, agency)) = pair.split_once('=') else {
            anyhow::bail!("GOVBUS_EVALUATION_MEMBERS: {pair:?} is not service=agency");
        };
        if agencies.get(agency.trim()).is_none() {
            anyhow::bail!(
                "GOVBUS_EVALUATION_MEMBERS: {agency:?} is not one of the instance's agencies"
            );
        }
        members.insert(service.trim().to_owned(), agency.trim().to_owned());
    }
    Ok(Membership {
        agencies: std::sync::Arc::new(agencies),
        members,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = govbus_kit::telemetry::Telemetry::install(
        &govbus_kit::telemetry::TelemetrySettings::from_env("evaluation"),
    )?;
    let listen =
        std::env::var("GOVBUS_EVALUATION_LISTEN").unwrap_or_else(|_| "127.0.0.1:50054".to_owned());
    let config = EvaluationConfig {
        database_url: std::env::var("GOVBUS_EVALUATION_DATABASE_URL")
            .unwrap_or_else(|_| "sqlite://.govbus/evaluation.db".to_owned()),
        listen: listen.parse().with_context(|| {
            format!("GOVBUS_EVALUATION_LISTEN={listen:?} is not an address like 127.0.0.1:50054")
        })?,
        bus: govbus_kit::bus_env::bus_options_from_env("evaluation")?,
        storage: govbus_storage::StorageSettings::default(),
        tls: govbus_kit::tls::ServiceTls::from_env("evaluation")?,
        access: govbus_kit::access::AccessPolicy::from_env()?,
        evidence_services: match std::env::var("GOVBUS_EVALUATION_SERVICES") {
            Ok(list) => list
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            Err(_) => EvaluationConfig::default_evidence_services(),
        },
        instruments_dir: std::env::var_os("GOVBUS_EVALUATION_INSTRUMENTS_DIR").map(Into::into),
        membership: membership()?,
    };
    let app = Application::build(config)
        .await
        .context("starting the evaluation service")?;
    govbus_kit::runtime::stop_signal()
        .await
        .context("waiting for Ctrl-C or SIGTERM")?;
    app.stop().await;
    telemetry.shutdown();
    Ok(())
}
