//! The embedded nats-server of `govbus up`: one process, its JetStream store and log in the data
//! folder, stopped gracefully so JetStream flushes its store.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;

use crate::binary::probe;
use crate::readiness::wait_until_ready;
use crate::{JetStreamSync, NatsdError, find_nats_server, nats_server_config};

/// How long a starting server may take to report healthy (JetStream recovers its store first,
/// which takes longer with more data).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where and how the embedded server runs.
#[derive(Debug, Clone)]
pub struct EmbeddedNatsSettings {
    /// A specific binary; `None` searches as [`find_nats_server`] does.
    pub binary: Option<PathBuf>,
    /// Its folder: configuration, JetStream store (`jetstream/`), log (`nats-server.log`).
    pub dir: PathBuf,
    /// Client address; port 0 takes a free port.
    pub listen: SocketAddr,
    /// Extra configuration appended to the shared settings (accounts, users, TLS).
    pub extra_config: Option<String>,
    /// How JetStream makes acknowledged messages durable.
    pub sync: JetStreamSync,
}

/// A running embedded server; killed if dropped without [`stop`](Self::stop).
#[derive(Debug)]
pub struct EmbeddedNats {
    child: Option<Child>,
    client_url: String,
    monitor_port: u16,
    log: PathBuf,
    version: String,
}

impl EmbeddedNats {
    /// Starts the server and waits until `/healthz` reports JetStream ready. Blocking.
    pub fn start(settings: &EmbeddedNatsSettings) -> Result<Self, NatsdError> {
        let binary = match &settings.binary {
            Some(path) => probe(path).map_err(|reason| NatsdError::UnusableBinary {
                path: path.clone(),
                reason,
            })?,
            None => find_nats_server()?,
        };
        let io = |context: &str| {
            let context = context.to_owned();
            move |source| NatsdError::Io { context, source }
        };
        fs::create_dir_all(&settings.dir).map_err(io("creating the NATS folder"))?;
        let config_path = settings.dir.join("nats-server.conf");
        let mut config = nats_server_config(settings.sync);
        if let Some(extra) = &settings.extra_config {
            config.push_str("\n# Added by govbus up.\n");
            config.push_str(extra);
        }
        fs::write(&config_path, config).map_err(io("writing nats-server.conf"))?;
        let ports_dir = settings.dir.join("run");
        // A stale ports file from a previous run would announce the old process as ready.
        let _ = fs::remove_dir_all(&ports_dir);
        fs::create_dir_all(&ports_dir).map_err(io("creating the ports folder"))?;
        let log = settings.dir.join("nats-server.log");
        let child = Command::new(&binary.path)
            .arg("--config")
            .arg(&config_path)
            .args(["--addr", &settings.listen.ip().to_string()])
            .args(["--port", &port_argument(settings.listen.port())])
            // Monitoring on a free loopback port: readiness and the console read it.
            .args(["--http_port", "-1"])
            .arg("--jetstream")
            .arg("--store_dir")
            .arg(settings.dir.join("jetstream"))
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io(&format!("running {}", binary.path.display())))?;
        let mut server = Self {
            child: Some(child),
            client_url: String::new(),
            monitor_port: 0,
            log,
            version: binary.version.to_string(),
        };
        let ready = match server.child.as_mut() {
            Some(child) => wait_until_ready(child, &ports_dir, READY_TIMEOUT).map_err(|reason| {
                if reason.starts_with("the process exited") && settings.listen.port() != 0 {
                    format!(
                        "{reason} (is {} already in use? set nats.listen to another address)",
                        settings.listen
                    )
                } else {
                    reason
                }
            }),
            None => Err("the process is gone".to_owned()),
        };
        match ready {
            Ok((client, monitor)) => {
                server.client_url = format!("nats://{}:{client}", client_host(settings.listen));
                server.monitor_port = monitor;
                Ok(server)
            }
            Err(reason) => {
                server.kill();
                Err(NatsdError::StartFailed {
                    reason,
                    log: server.log.display().to_string(),
                    tail: tail(&server.log, 20),
                })
            }
        }
    }

    /// `nats://host:port` for clients.
    pub fn client_url(&self) -> &str {
        &self.client_url
    }

    /// The client port.
    pub fn client_port(&self) -> Option<u16> {
        self.client_url.rsplit(':').next()?.parse().ok()
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The monitoring port (`/varz`, `/jsz`, `/healthz`) on the loopback address.
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
    }

    /// The server's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The server's version, e.g. `2.15.1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Asks the server to stop (SIGTERM: it closes clients and flushes JetStream), waits up to
    /// `timeout`, then kills it. Blocking.
    pub fn stop(mut self, timeout: Duration) -> Result<(), NatsdError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
        if signal::kill(pid, Signal::SIGTERM).is_err() {
            // Already gone.
            let _ = child.wait();
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return Ok(()),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(NatsdError::StartFailed {
                        reason: format!("did not stop within {timeout:?}; killed"),
                        log: self.log.display().to_string(),
                        tail: tail(&self.log, 20),
                    });
                }
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for EmbeddedNats {
    fn drop(&mut self) {
        self.kill();
    }
}

fn port_argument(port: u16) -> String {
    if port == 0 {
        "-1".to_owned()
    } else {
        port.to_string()
    }
}

/// The host clients dial: the listen address, or loopback when it listens everywhere.
fn client_host(listen: SocketAddr) -> String {
    match listen.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_dial_loopback_when_the_server_listens_everywhere() {
        assert_eq!(
            client_host("0.0.0.0:4222".parse().expect("address")),
            "127.0.0.1"
        );
        assert_eq!(
            client_host("10.1.2.3:4222".parse().expect("address")),
            "10.1.2.3"
        );
        assert_eq!(client_host("[::1]:4222".parse().expect("address")), "[::1]");
    }

    #[test]
    fn a_free_port_is_asked_for_with_minus_one() {
        assert_eq!(port_argument(0), "-1");
        assert_eq!(port_argument(14222), "14222");
    }
}
