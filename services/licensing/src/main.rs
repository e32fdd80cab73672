//! `govbus-licensing`: runs the licensing service.
//!
//! Configuration comes from the environment:
//! - `GOVBUS_LOG`, `GOVBUS_TELEMETRY_LOG_FORMAT`, `GOVBUS_TELEMETRY_OTLP_ENDPOINT`: logs and
//!   trace export (see `docs/operating.md`);
//! - `GOVBUS_TLS_DIR`: a folder of certificates (`ca.pem`, `<service>.pem`, `<service>-key.pem`,
//!   as `govbus certs init` writes them) for mutual TLS; unset serves plain HTTP/2;
//! - `GOVBUS_AUDIT_SUBJECT_KEY`: the file of the deployment's subject key (64 hex digits); with
//!   `GOVBUS_TLS_DIR`, every call and event delivery touching a person is entered in the
//!   processing log (see `docs/security.md`);
//! - `GOVBUS_ACCESS_POLICY`: the access-policy file (with `GOVBUS_TLS_DIR`);
//! - `GOVBUS_NATS_URL` (required): the NATS server(s), comma-separated; `GOVBUS_NATS_CREDENTIALS`,
//!   `GOVBUS_NATS_USER`/`GOVBUS_NATS_PASSWORD`, `GOVBUS_NATS_CA`, `GOVBUS_STREAM_REPLICAS` and the
//!   rest of the bus settings in `govbus_kit::bus_env` (see `docs/operating.md`);
//! - `GOVBUS_IDENTITY_URL` (required): the identity service, e.g. `http://127.0.0.1:50051`;
//! - `GOVBUS_LICENSING_DATABASE_URL`: default `sqlite://.govbus/licensing.db`;
//! - `GOVBUS_LICENSING_LISTEN`: the gRPC address (default `127.0.0.1:50053`);
//! - `GOVBUS_LICENSING_VERIFICATION_WORKING_DAYS`, `GOVBUS_LICENSING_APPROVAL_WORKING_DAYS`: service-level
//!   deadlines in government working days (default 5 and 10).

use std::time::Duration;

use anyhow::Context as _;
use govbus_licensing::{Application, Deadlines, LicensingConfig, Period};

/// mimalloc: see the workspace's `Cargo.toml`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = govbus_kit::telemetry::Telemetry::install(
        &govbus_kit::telemetry::TelemetrySettings::from_env("licensing"),
    )?;
    let required = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let days = |name: &str, default: u32| -> anyhow::Result<Period> {
        let value = match std::env::var(name) {
            Ok(text) => text
                .parse::<u32>()
                .ok()
                .filter(|days| (1..=365).contains(days))
                .with_context(|| format!("{name}={text:?} is not 1 to 365 working days"))?,
            Err(_) => default,
        };
        Ok(Period::WorkingDays(value))
    };
    let listen =
        std::env::var("GOVBUS_LICENSING_LISTEN").unwrap_or_else(|_| "127.0.0.1:50053".to_owned());
    let config = LicensingConfig {
        database_url: std::env::var("GOVBUS_LICENSING_DATABASE_URL")
            .unwrap_or_else(|_| "sqlite://.govbus/licensing.db".to_owned()),
        listen: listen.parse().with_context(|| {
            format!("GOVBUS_LICENSING_LISTEN={listen:?} is not an address like 127.0.0.1:50053")
        })?,
        identity_url: required("GOVBUS_IDENTITY_URL")?,
        bus: govbus_kit::bus_env::bus_options_from_env("licensing")?,
        storage: govbus_storage::StorageSettings::default(),
        tls: govbus_kit::tls::ServiceTls::from_env("licensing")?,
        access: govbus_kit::access::AccessPolicy::from_env()?,
        audit_subject_key: govbus_kit::audit::SubjectKey::from_env()?,
        deadlines: Deadlines {
            verification: days("GOVBUS_LICENSING_VERIFICATION_WORKING_DAYS", 5)?,
            approval: days("GOVBUS_LICENSING_APPROVAL_WORKING_DAYS", 10)?,
        },
        deadline_check_interval: Duration::from_secs(30),
        calendar: None,
    };
    let app = Application::build(config)
        .await
        .context("starting the licensing service")?;
    govbus_kit::runtime::stop_signal()
        .await
        .context("waiting for Ctrl-C or SIGTERM")?;
    app.stop().await;
    telemetry.shutdown();
    Ok(())
}
