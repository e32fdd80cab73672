//! `govbus-{{name}}`: runs the {{name}} service on its own (`govbus up` runs it with the stack).
//!
//! Configuration comes from the environment, read over the service's declaration
//! (`govbus_kit::standalone`): `GOVBUS_{{NAME}}_DATABASE_URL` (default
//! `sqlite://.govbus/{{name}}.db`), `GOVBUS_{{NAME}}_LISTEN` (default `127.0.0.1:{{port}}`),
//! `GOVBUS_{{NAME}}_<KEY>` for each of its settings, `GOVBUS_<SERVICE>_URL` for each service it
//! calls, and, as for every service binary (see `docs/operating.md`), `GOVBUS_LOG`,
//! `GOVBUS_TELEMETRY_*`, `GOVBUS_TLS_DIR`, `GOVBUS_AUDIT_SUBJECT_KEY`, `GOVBUS_ACCESS_POLICY`,
//! `GOVBUS_NATS_URL` (required) and the bus settings of `govbus_kit::bus_env`. It stops in order
//! on Ctrl-C or SIGTERM.

/// mimalloc: see the workspace's `Cargo.toml`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    govbus_kit::standalone::serve(&govbus_{{name}}::DECLARATION).await?;
    Ok(())
}
