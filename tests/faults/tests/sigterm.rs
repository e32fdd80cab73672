//! Every service binary stops in order on SIGTERM, as systemd and Kubernetes stop it: it exits
//! with status 0 after saying so, and its data is there for the next start.

use govbus_faults::wait_healthy;
use govbus_harness::NatsCluster;
use govbus_harness::service::{ServiceProcess, free_port, workspace_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_binary_stops_in_order_on_sigterm() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let nats = NatsCluster::start(1)?;
    let nats_url = nats.client_urls();
    let identity_address = format!("127.0.0.1:{}", free_port()?);
    let identity_url = format!("http://{identity_address}");
    let mut running = Vec::new();
    // In the stack's order: identity first, evaluation (which reads the others' streams) last.
    for service in [
        "identity",
        "welfare",
        "licensing",
        "complaints",
        "evaluation",
    ] {
        let upper = service.to_uppercase();
        let address = if service == "identity" {
            identity_address.clone()
        } else {
            format!("127.0.0.1:{}", free_port()?)
        };
        let database = format!(
            "sqlite://{}",
            dir.path().join(format!("{service}.db")).display()
        );
        let (database_key, listen_key) = (
            format!("GOVBUS_{upper}_DATABASE_URL"),
            format!("GOVBUS_{upper}_LISTEN"),
        );
        let mut env = vec![
            ("GOVBUS_NATS_URL", nats_url.as_str()),
            (database_key.as_str(), database.as_str()),
            (listen_key.as_str(), address.as_str()),
            ("GOVBUS_LOG", "info"),
        ];
        if service != "identity" {
            env.push(("GOVBUS_IDENTITY_URL", identity_url.as_str()));
        }
        let binary = format!("govbus-{service}");
        let process = ServiceProcess::start(
            &workspace_binary(&binary, &binary)?,
            service,
            &env,
            dir.path(),
        )?;
        wait_healthy(&address, &process).await?;
        running.push((service, process));
    }
    // Stopped in reverse, each by SIGTERM.
    while let Some((service, mut process)) = running.pop() {
        let status = process.terminate()?;
        assert!(
            status.success(),
            "{service} exited with {status} on SIGTERM:\n{}",
            process.log()
        );
        assert!(
            process.log().to_lowercase().contains("stop"),
            "{service} said nothing of stopping:\n{}",
            process.log()
        );
    }
    Ok(())
}
