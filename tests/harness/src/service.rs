//! govbus service binaries as real processes, for tests that crash and restart them.
//!
//! ```no_run
//! # fn main() -> Result<(), govbus_harness::HarnessError> {
//! use govbus_harness::service::{ServiceProcess, workspace_binary};
//!
//! let binary = workspace_binary("govbus-welfare", "govbus-welfare")?;
//! let logs = tempfile::tempdir().expect("temp dir");
//! let mut welfare = ServiceProcess::start(&binary, "welfare", &[("GOVBUS_NATS_URL", "nats://…")], logs.path())?;
//! welfare.kill()?; // as a crash would
//! welfare.restart()?;
//! # Ok(()) }
//! ```

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::Signal;

use crate::{HarnessError, end_process};

/// A service binary of this workspace, built into the same target folder as the running test
/// (built now with `cargo build`, `--release` from the release folder, if it is not there yet;
/// `scripts/bench` builds them first so that a benchmark never runs an old one).
pub fn workspace_binary(package: &str, bin: &str) -> Result<PathBuf, HarnessError> {
    let exe = std::env::current_exe().map_err(HarnessError::io("locating the test binary"))?;
    // <target>/<profile>/deps/<test> → <target>/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| HarnessError::Io {
            context: "locating the target folder",
            source: std::io::Error::other(format!("no target folder above {}", exe.display())),
        })?
        .to_owned();
    let binary = profile_dir.join(bin);
    if binary.is_file() {
        return Ok(binary);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // Benchmarks run from the release folder and measure release binaries.
    let profile: &[&str] = if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        &["--release"]
    } else {
        &[]
    };
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--package", package, "--bin", bin])
        .args(profile)
        .status()
        .map_err(HarnessError::io("running cargo build for a service binary"))?;
    if status.success() && binary.is_file() {
        Ok(binary)
    } else {
        Err(HarnessError::Io {
            context: "building a service binary",
            source: std::io::Error::other(format!(
                "{bin} is not in {} and `cargo build -p {package}` did not make it",
                profile_dir.display()
            )),
        })
    }
}

/// A port on 127.0.0.1 that was free a moment ago (for a service that needs its address before
/// it starts).
pub fn free_port() -> Result<u16, HarnessError> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).map_err(HarnessError::io("finding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(HarnessError::io("finding a free port"))?
        .port())
}

/// The peak resident memory (`VmHWM`), in KiB, of the process `pid` (or `"self"`).
pub fn peak_rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// One service process; killed when dropped.
#[derive(Debug)]
pub struct ServiceProcess {
    name: String,
    binary: PathBuf,
    env: Vec<(String, String)>,
    log_dir: PathBuf,
    starts: u32,
    child: Option<Child>,
}

impl ServiceProcess {
    /// Starts `binary` with `env` added to the test's environment; its output goes to
    /// `<log_dir>/<name>.<n>.log`.
    pub fn start(
        binary: &Path,
        name: &str,
        env: &[(&str, &str)],
        log_dir: &Path,
    ) -> Result<Self, HarnessError> {
        let mut process = Self {
            name: name.to_owned(),
            binary: binary.to_owned(),
            env: env
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect(),
            log_dir: log_dir.to_owned(),
            starts: 0,
            child: None,
        };
        process.spawn()?;
        Ok(process)
    }

    fn spawn(&mut self) -> Result<(), HarnessError> {
        self.starts += 1;
        let log = File::create(self.log_path(self.starts))
            .map_err(HarnessError::io("creating a service log"))?;
        let errors = log
            .try_clone()
            .map_err(HarnessError::io("creating a service log"))?;
        let child = Command::new(&self.binary)
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(errors)
            .spawn()
            .map_err(HarnessError::io("starting a service process"))?;
        self.child = Some(child);
        Ok(())
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.log_dir.join(format!("{}.{start}.log", self.name))
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// Kills it at once (SIGKILL), as a crash or a power cut would.
    pub fn kill(&mut self) -> Result<(), HarnessError> {
        self.signal(Signal::SIGKILL)
    }

    /// Stops it as an operator would (SIGINT, which the service binaries handle like Ctrl-C).
    pub fn stop(&mut self) -> Result<(), HarnessError> {
        self.signal(Signal::SIGINT)
    }

    /// Stops it as systemd or Kubernetes would (SIGTERM) and returns how it exited.
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus, HarnessError> {
        let Some(mut child) = self.child.take() else {
            return Err(HarnessError::Io {
                context: "terminating a service process",
                source: std::io::Error::other("it is not running"),
            });
        };
        let _ = crate::send_signal(&child, Signal::SIGTERM);
        child
            .wait()
            .map_err(HarnessError::io("waiting for a service process to exit"))
    }

    /// Starts it again with the same binary and environment.
    pub fn restart(&mut self) -> Result<(), HarnessError> {
        if self.child.is_some() {
            self.stop()?;
        }
        self.spawn()
    }

    /// Its peak resident memory so far (`VmHWM`), in KiB, while it runs.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        peak_rss_kib(&self.pid()?.to_string())
    }

    /// Everything it wrote, every start in order.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .filter_map(|start| std::fs::read_to_string(self.log_path(start)).ok())
            .collect::<Vec<_>>()
            .join("\n--- restarted ---\n")
    }

    fn signal(&mut self, signal: Signal) -> Result<(), HarnessError> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        end_process(child, &[signal], "waiting for a service process to exit")
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
