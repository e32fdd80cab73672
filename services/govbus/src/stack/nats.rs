//! The embedded nats-server, watched and restarted while the stack runs.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use govbus_natsd::{EmbeddedNats, EmbeddedNatsSettings};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::error::StackError;

/// The embedded nats-server with a watchdog that restarts it, on the same port and store, if
/// it exits while the stack runs; the services' connections reconnect by themselves.
#[derive(Debug)]
pub(super) struct SupervisedNats {
    server: Arc<Mutex<Option<EmbeddedNats>>>,
    pub(super) client_url: String,
    watchdog: JoinHandle<()>,
    stop_watching: CancellationToken,
}

impl SupervisedNats {
    pub(super) async fn start(settings: EmbeddedNatsSettings) -> Result<Self, StackError> {
        let first = settings.clone();
        let server = tokio::task::spawn_blocking(move || EmbeddedNats::start(&first)).await??;
        tracing::info!(
            message = "Embedded nats-server ready.",
            url = server.client_url(),
            version = server.version(),
        );
        let client_url = server.client_url().to_owned();
        // Restarts must come back where the clients look for the server.
        let mut restart = settings;
        if let Some(port) = server.client_port() {
            restart.listen.set_port(port);
        }
        let server = Arc::new(Mutex::new(Some(server)));
        let stop_watching = CancellationToken::new();
        let watchdog = tokio::spawn(watch(server.clone(), restart, stop_watching.clone()));
        Ok(Self {
            server,
            client_url,
            watchdog,
            stop_watching,
        })
    }

    pub(super) async fn stop(self, timeout: Duration) {
        self.stop_watching.cancel();
        let _ = self.watchdog.await;
        let server = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(server) = server else {
            return;
        };
        match tokio::task::spawn_blocking(move || server.stop(timeout)).await {
            Ok(Ok(())) => tracing::info!(message = "Embedded nats-server stopped."),
            Ok(Err(error)) => {
                tracing::error!(message = "Embedded nats-server did not stop cleanly.", %error);
            }
            Err(error) => {
                tracing::error!(message = "Embedded nats-server stop task failed.", %error);
            }
        }
    }

    pub(super) fn pid(&self) -> Option<u32> {
        self.server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(EmbeddedNats::pid)
    }
}

/// Checks every second that the embedded server runs, and restarts it when it does not.
async fn watch(
    server: Arc<Mutex<Option<EmbeddedNats>>>,
    settings: EmbeddedNatsSettings,
    stop: CancellationToken,
) {
    let mut failures: u32 = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let exited = server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            .is_some_and(|running| !running.is_running());
        if !exited {
            continue;
        }
        tracing::error!(
            message = "Embedded nats-server exited; restarting it.",
            log = %settings.dir.join("nats-server.log").display(),
        );
        let restart = settings.clone();
        match tokio::task::spawn_blocking(move || EmbeddedNats::start(&restart)).await {
            Ok(Ok(restarted)) => {
                tracing::info!(
                    message = "Embedded nats-server restarted.",
                    url = restarted.client_url(),
                );
                *server.lock().unwrap_or_else(PoisonError::into_inner) = Some(restarted);
                failures = 0;
            }
            Ok(Err(error)) => {
                failures = failures.saturating_add(1);
                tracing::error!(message = "Embedded nats-server did not restart.", %error, failures);
                // Back off so a server that cannot start does not spin.
                tokio::time::sleep(Duration::from_secs(u64::from(failures.min(30)))).await;
            }
            Err(error) => {
                tracing::error!(message = "Embedded nats-server restart task failed.", %error);
            }
        }
    }
}
