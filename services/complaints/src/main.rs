//! `govbus-complaints`: runs the complaints service on its own (`govbus up` runs it with the
//! stack).
//!
//! Configuration comes from the environment, read over the service's declaration
//! (`govbus_kit::standalone`): `GOVBUS_COMPLAINTS_DATABASE_URL` (default
//! `sqlite://.govbus/complaints.db`), `GOVBUS_COMPLAINTS_LISTEN` (default `127.0.0.1:50055`),
//! `GOVBUS_IDENTITY_URL` (required), `GOVBUS_COMPLAINTS_<KEY>` for each setting `govbus config
//! keys` lists under `complaints.`, and, as for every service binary (see `docs/operating.md`),
//! `GOVBUS_LOG`, `GOVBUS_TELEMETRY_*`, `GOVBUS_TLS_DIR`, `GOVBUS_AUDIT_SUBJECT_KEY`,
//! `GOVBUS_ACCESS_POLICY`, `GOVBUS_NATS_URL` (required) and the bus settings of
//! `govbus_kit::bus_env`.

use anyhow::Context as _;
use govbus_complaints::DECLARATION;

/// mimalloc: see the workspace's `Cargo.toml`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let telemetry = govbus_kit::telemetry::Telemetry::install(
        &govbus_kit::telemetry::TelemetrySettings::from_env(DECLARATION.name),
    )?;
    let environment = govbus_kit::standalone::environment(&DECLARATION)?;
    let service = (DECLARATION.start)(environment)
        .await
        .context("starting the complaints service")?;
    govbus_kit::runtime::stop_signal()
        .await
        .context("waiting for Ctrl-C or SIGTERM")?;
    service.stop().await;
    telemetry.shutdown();
    Ok(())
}
