//! One `nats-server` process with JetStream, its own store and a dynamic port.

use std::fs::{self, File};
use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use govbus_natsd::readiness::wait_until_ready;

use govbus_natsd::{JetStreamSync, nats_server_config};

use crate::{HarnessError, end_process, find_nats_server, send_signal};

/// How long a server may take to become healthy (a restart replays its JetStream store).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `nats-server` with JetStream, killed on drop.
///
/// The first start lets the kernel pick the client port; [`restart`](Self::restart) reuses that
/// port and the same store, so connected clients reconnect to the same URL and find their
/// streams again.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    work_dir: TempDir,
    client_port: u16,
    monitor_port: u16,
    child: Option<Child>,
    starts: u32,
    cluster: Option<ClusterMembership>,
}

/// A server's place in a cluster: its name, its route port and its peers' route ports.
#[derive(Debug, Clone)]
pub(crate) struct ClusterMembership {
    pub(crate) cluster_name: String,
    pub(crate) server_name: String,
    pub(crate) route_port: u16,
    pub(crate) peer_route_ports: Vec<u16>,
}

impl NatsServer {
    /// Starts a server on a dynamic port with a fresh store and waits until JetStream is ready.
    ///
    /// It syncs JetStream's files at NATS's default interval rather than before every
    /// acknowledgement (tests kill processes, not machines: the page cache survives them);
    /// [`start_durable`](Self::start_durable) runs the shipped single-server setting.
    pub fn start() -> Result<Self, HarnessError> {
        Self::start_with_config("")
    }

    /// Like [`start`](Self::start), with the shipped single-server durability: every
    /// acknowledged message synced to disk first (`sync_interval: always`).
    pub fn start_durable() -> Result<Self, HarnessError> {
        let mut server = Self::prepare_with_sync("", None, JetStreamSync::Always)?;
        server.spawn()?;
        Ok(server)
    }

    /// Like [`start`](Self::start), with `extra` appended to the shared settings (users,
    /// permissions, TLS).
    pub fn start_with_config(extra: &str) -> Result<Self, HarnessError> {
        let mut server = Self::prepare(extra, None)?;
        server.spawn()?;
        Ok(server)
    }

    /// The server's monitoring port (`/varz`, `/jsz`, `/healthz`).
    pub fn monitor_port(&self) -> u16 {
        self.monitor_port
    }

    /// A server with its folder and configuration written, not started yet: a cluster starts
    /// all its members before waiting for any (JetStream is ready only once a quorum runs).
    pub(crate) fn prepare(
        extra: &str,
        cluster: Option<ClusterMembership>,
    ) -> Result<Self, HarnessError> {
        Self::prepare_with_sync(extra, cluster, JetStreamSync::Interval)
    }

    fn prepare_with_sync(
        extra: &str,
        cluster: Option<ClusterMembership>,
        sync: JetStreamSync,
    ) -> Result<Self, HarnessError> {
        let binary = find_nats_server()?.path;
        let work_dir = tempfile::Builder::new()
            .prefix("govbus-nats-")
            .tempdir()
            .map_err(HarnessError::io("creating the server's folder"))?;
        fs::create_dir_all(work_dir.path().join("store"))
            .map_err(HarnessError::io("creating the JetStream store folder"))?;
        fs::write(
            work_dir.path().join("nats-server.conf"),
            format!("{}\n{extra}", nats_server_config(sync)),
        )
        .map_err(HarnessError::io("writing nats-server.conf"))?;
        Ok(Self {
            binary,
            work_dir,
            client_port: 0,
            monitor_port: 0,
            child: None,
            starts: 0,
            cluster,
        })
    }

    /// The server's name in its cluster (`None` for a standalone server).
    pub fn server_name(&self) -> Option<&str> {
        self.cluster
            .as_ref()
            .map(|member| member.server_name.as_str())
    }

    /// The URL clients connect to, e.g. `nats://127.0.0.1:41234`.
    pub fn client_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.client_port)
    }

    /// The client port.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    /// The JetStream store folder (kept across restarts).
    pub fn store_dir(&self) -> PathBuf {
        self.work_dir.path().join("store")
    }

    /// Whether the server process is currently running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Everything the server logged, across restarts.
    pub fn log(&self) -> String {
        let mut log = String::new();
        for start in 1..=self.starts {
            if let Ok(mut file) = File::open(self.log_path(start)) {
                log.push_str(&format!("--- start {start} ---\n"));
                let _ = file.read_to_string(&mut log);
            }
        }
        log
    }

    /// Stops the server gracefully (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) -> Result<(), HarnessError> {
        self.terminate(Signal::SIGTERM)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) -> Result<(), HarnessError> {
        self.terminate(Signal::SIGKILL)
    }

    /// Freezes the server (SIGSTOP): its connections stay open and the kernel keeps accepting
    /// what clients send, but nothing is read, stored or acknowledged until
    /// [`resume`](Self::resume).
    pub fn pause(&mut self) -> Result<(), HarnessError> {
        self.signal_running(Signal::SIGSTOP)
    }

    /// Lets a [`pause`](Self::pause)d server carry on (SIGCONT).
    pub fn resume(&mut self) -> Result<(), HarnessError> {
        self.signal_running(Signal::SIGCONT)
    }

    fn signal_running(&mut self, signal: Signal) -> Result<(), HarnessError> {
        let child = self.child.as_ref().ok_or_else(|| HarnessError::Io {
            context: "signalling nats-server",
            source: std::io::Error::other("the server is not running"),
        })?;
        send_signal(child, signal).map_err(HarnessError::io("signalling nats-server"))
    }

    /// Starts the server again on the same port and store after [`stop`](Self::stop) or
    /// [`kill`](Self::kill), and waits until it is healthy.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        if self.child.is_some() {
            self.stop()?;
        }
        self.spawn()
    }

    fn terminate(&mut self, signal: Signal) -> Result<(), HarnessError> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        // A paused server acts on nothing but SIGKILL until it is continued.
        end_process(
            child,
            &[signal, Signal::SIGCONT],
            "waiting for nats-server to exit",
        )
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.work_dir
            .path()
            .join(format!("nats-server.{start}.log"))
    }

    fn ports_dir(&self) -> PathBuf {
        self.work_dir.path().join("ports")
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        self.launch()?;
        self.await_ready()
    }

    /// Starts the process without waiting for it.
    pub(crate) fn launch(&mut self) -> Result<(), HarnessError> {
        self.starts += 1;
        let log_path = self.log_path(self.starts);
        let log = File::create(&log_path).map_err(HarnessError::io("creating the server log"))?;
        let log_err = log
            .try_clone()
            .map_err(HarnessError::io("creating the server log"))?;
        let ports_dir = self.ports_dir();
        // A stale ports file from the previous run would announce the old process as ready.
        let _ = fs::remove_dir_all(&ports_dir);
        fs::create_dir_all(&ports_dir).map_err(HarnessError::io("creating the ports folder"))?;

        let port = |port: u16| {
            if port == 0 {
                "-1".to_owned()
            } else {
                port.to_string()
            }
        };
        let mut command = Command::new(&self.binary);
        if let Some(member) = &self.cluster {
            let routes = member
                .peer_route_ports
                .iter()
                .map(|port| format!("nats://127.0.0.1:{port}"))
                .collect::<Vec<_>>()
                .join(",");
            command
                .args(["--name", &member.server_name])
                .args(["--cluster_name", &member.cluster_name])
                .args([
                    "--cluster",
                    &format!("nats://127.0.0.1:{}", member.route_port),
                ])
                .args(["--routes", &routes]);
        }
        let child = command
            .arg("--config")
            .arg(self.work_dir.path().join("nats-server.conf"))
            .args(["--addr", "127.0.0.1", "--port", &port(self.client_port)])
            .args(["--http_port", &port(self.monitor_port)])
            .arg("--jetstream")
            .arg("--store_dir")
            .arg(self.store_dir())
            .arg("--ports_file_dir")
            .arg(&ports_dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(HarnessError::io("spawning nats-server"))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the launched process is healthy and records its ports.
    pub(crate) fn await_ready(&mut self) -> Result<(), HarnessError> {
        let ports_dir = self.ports_dir();
        let Some(child) = self.child.as_mut() else {
            return Err(HarnessError::StartFailed {
                reason: "the process was not launched".to_owned(),
                log: self.log(),
            });
        };
        match wait_until_ready(child, &ports_dir, READY_TIMEOUT) {
            Ok((client_port, monitor_port)) => {
                self.client_port = client_port;
                self.monitor_port = monitor_port;
                Ok(())
            }
            Err(reason) => {
                let _ = self.kill();
                Err(HarnessError::StartFailed {
                    reason,
                    log: self.log(),
                })
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
