//! `govbus-identity`: runs the identity service.
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
//! - `GOVBUS_IDENTITY_DATABASE_URL`: `sqlite://…` (default `sqlite://.govbus/identity.db`) or
//!   `postgres://…`;
//! - `GOVBUS_IDENTITY_LISTEN`: the gRPC address (default `127.0.0.1:50051`).

use anyhow::Context as _;
use govbus_identity::{Application, IdentityConfig};

/// mimalloc: see the workspace's `Cargo.toml`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = govbus_kit::telemetry::Telemetry::install(
        &govbus_kit::telemetry::TelemetrySettings::from_env("identity"),
    )?;
    let listen =
        std::env::var("GOVBUS_IDENTITY_LISTEN").unwrap_or_else(|_| "127.0.0.1:50051".to_owned());
    let config = IdentityConfig {
        database_url: std::env::var("GOVBUS_IDENTITY_DATABASE_URL")
            .unwrap_or_else(|_| "sqlite://.govbus/identity.db".to_owned()),
        listen: listen.parse().with_context(|| {
            format!("GOVBUS_IDENTITY_LISTEN={listen:?} is not an address like 127.0.0.1:50051")
        })?,
        bus: govbus_kit::bus_env::bus_options_from_env("identity")?,
        storage: govbus_storage::StorageSettings::default(),
        tls: govbus_kit::tls::ServiceTls::from_env("identity")?,
        access: govbus_kit::access::AccessPolicy::from_env()?,
        audit_subject_key: govbus_kit::audit::SubjectKey::from_env()?,
        call_report_interval: std::time::Duration::from_secs(60),
    };
    let app = Application::build(config)
        .await
        .context("starting the identity service")?;
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    app.stop().await;
    telemetry.shutdown();
    Ok(())
}
