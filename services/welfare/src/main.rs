//! `govbus-welfare`: runs the welfare service on its own (`govbus up` runs it with the stack).
//!
//! Configuration comes from the environment, read over the service's declaration
//! (`govbus_kit::standalone`): `GOVBUS_WELFARE_DATABASE_URL` (default
//! `sqlite://.govbus/welfare.db`), `GOVBUS_WELFARE_LISTEN` (its default port on 127.0.0.1),
//! `GOVBUS_WELFARE_<KEY>` for each setting `govbus config keys` lists under `welfare.`,
//! `GOVBUS_<SERVICE>_URL` for each service it calls, and, as for every service binary (see
//! `docs/operating.md`), `GOVBUS_LOG`, `GOVBUS_TELEMETRY_*`, `GOVBUS_TLS_DIR`,
//! `GOVBUS_AUDIT_SUBJECT_KEY`, `GOVBUS_ACCESS_POLICY`, `GOVBUS_NATS_URL` (required) and the bus
//! settings of `govbus_kit::bus_env`. It stops in order on Ctrl-C or SIGTERM.

/// mimalloc: see the workspace's `Cargo.toml`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    govbus_kit::standalone::serve(&govbus_welfare::DECLARATION).await?;
    Ok(())
}
