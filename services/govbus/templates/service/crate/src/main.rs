//! `govbus-{{name}}`: runs the {{name}} service on its own (`govbus up` runs it with the stack).
//!
//! Configuration comes from the environment, as for every service binary (see
//! `docs/operating.md`): `GOVBUS_LOG`, `GOVBUS_TELEMETRY_*`, `GOVBUS_TLS_DIR`,
//! `GOVBUS_AUDIT_SUBJECT_KEY`, `GOVBUS_ACCESS_POLICY`, `GOVBUS_NATS_URL` (required) and the bus
//! settings of `govbus_kit::bus_env`;
//! - `GOVBUS_{{NAME}}_DATABASE_URL`: `sqlite://…` (default `sqlite://.govbus/{{name}}.db`) or
//!   `postgres://…`;
//! - `GOVBUS_{{NAME}}_LISTEN`: the gRPC address (default `127.0.0.1:{{port}}`).

use anyhow::Context as _;
use govbus_{{name}}::{Application, {{Name}}Config};

/// mimalloc: see the workspace's `Cargo.toml`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = govbus_kit::telemetry::Telemetry::install(
        &govbus_kit::telemetry::TelemetrySettings::from_env("{{name}}"),
    )?;
    let listen = std::env::var("GOVBUS_{{NAME}}_LISTEN")
        .unwrap_or_else(|_| "127.0.0.1:{{port}}".to_owned());
    let config = {{Name}}Config {
        database_url: std::env::var("GOVBUS_{{NAME}}_DATABASE_URL")
            .unwrap_or_else(|_| "sqlite://.govbus/{{name}}.db".to_owned()),
        listen: listen.parse().with_context(|| {
            format!("GOVBUS_{{NAME}}_LISTEN={listen:?} is not an address like 127.0.0.1:{{port}}")
        })?,
        bus: govbus_kit::bus_env::bus_options_from_env("{{name}}")?,
        storage: govbus_storage::StorageSettings::default(),
        tls: govbus_kit::tls::ServiceTls::from_env("{{name}}")?,
        access: govbus_kit::access::AccessPolicy::from_env()?,
        audit_subject_key: govbus_kit::audit::SubjectKey::from_env()?,
    };
    let app = Application::build(config)
        .await
        .context("starting the {{name}} service")?;
    govbus_kit::runtime::stop_signal()
        .await
        .context("waiting for Ctrl-C or SIGTERM")?;
    app.stop().await;
    telemetry.shutdown();
    Ok(())
}
