//! A real OpenID provider for sign-in tests: the npm package `oidc-provider` (a certified
//! OpenID Connect implementation) run by Node.js with govbus's test configuration
//! (`tests/harness/oidc/provider.mjs`): confidential clients, the client credentials grant,
//! JWT access tokens for one audience, a signing key made at start. `scripts/install-oidc-provider`
//! installs it; the provider listens on a loopback port the kernel picks and is killed on drop.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;

use crate::HarnessError;

/// The provider's configuration, run by Node.js.
const PROVIDER_SCRIPT: &str = include_str!("../oidc/provider.mjs");

/// A client registered with the provider.
#[derive(Debug, Clone)]
pub struct OidcClient {
    /// Its `client_id`.
    pub id: String,
    /// Its `client_secret`.
    pub secret: String,
}

/// How long the provider may take to report its port; Node starts it in well under a second.
const STARTUP_WAIT: Duration = Duration::from_secs(30);

/// How many fresh processes are tried before the provider is declared broken.
const START_ATTEMPTS: usize = 3;

/// A running OpenID provider.
#[derive(Debug)]
pub struct OidcProvider {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl OidcProvider {
    /// Starts a provider with `clients`, issuing access tokens for `audience` valid for
    /// `ttl`. Its installation is `GOVBUS_OIDC_PROVIDER_DIR` (what the install script printed),
    /// else the script is run.
    pub fn start(
        clients: &[OidcClient],
        audience: &str,
        ttl: Duration,
    ) -> Result<Self, HarnessError> {
        let installed = installation()?;
        let dir = tempfile::Builder::new()
            .prefix("govbus-oidc-")
            .tempdir()
            .map_err(HarnessError::io("creating the provider's folder"))?;
        // The script finds the package through a node_modules beside it.
        std::fs::write(dir.path().join("provider.mjs"), PROVIDER_SCRIPT)
            .map_err(HarnessError::io("writing the provider's script"))?;
        std::os::unix::fs::symlink(
            installed.join("node_modules"),
            dir.path().join("node_modules"),
        )
        .map_err(HarnessError::io("linking the provider's packages"))?;
        let clients: Vec<serde_json::Value> = clients
            .iter()
            .map(|client| serde_json::json!({"client_id": client.id, "client_secret": client.secret}))
            .collect();
        let clients = serde_json::Value::from(clients).to_string();
        let mut failures = Vec::new();
        // A provider that neither reports its port nor fails has been seen, rarely, on a machine
        // busy with the whole suite: a fresh process is tried before the test is failed.
        for _ in 0..START_ATTEMPTS {
            match launch(&dir, &clients, audience, ttl)? {
                Ok((child, port)) => return Ok(Self { child, port, dir }),
                Err(failure) => failures.push(failure),
            }
        }
        Err(HarnessError::Oidc(format!(
            "the provider did not start in {START_ATTEMPTS} attempts:\n{}",
            failures.join("\n")
        )))
    }

    /// Its issuer URL (`http://127.0.0.1:<port>`).
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Its token endpoint.
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer())
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("provider.log")).unwrap_or_default()
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the provider once: its process and port, or what went wrong, with its log.
fn launch(
    dir: &TempDir,
    clients: &str,
    audience: &str,
    ttl: Duration,
) -> Result<Result<(Child, u16), String>, HarnessError> {
    let log_path = dir.path().join("provider.log");
    let log = std::fs::File::create(&log_path)
        .map_err(HarnessError::io("creating the provider's log"))?;
    let mut child = Command::new(std::env::var_os("GOVBUS_NODE").unwrap_or_else(|| "node".into()))
        .arg(dir.path().join("provider.mjs"))
        .current_dir(dir.path())
        .env("GOVBUS_OIDC_CLIENTS", clients)
        .env("GOVBUS_OIDC_AUDIENCE", audience)
        .env("GOVBUS_OIDC_TTL", ttl.as_secs().max(1).to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(HarnessError::io(
            "running node (Node.js) for the OpenID provider",
        ))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| HarnessError::Oidc("the provider has no output".to_owned()))?;
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(port) = line
                .strip_prefix("listening ")
                .and_then(|port| port.trim().parse::<u16>().ok())
            {
                let _ = sender.send(port);
            }
        }
    });
    let outcome = receiver.recv_timeout(STARTUP_WAIT);
    if let Ok(port) = outcome {
        return Ok(Ok((child, port)));
    }
    let how = match (outcome, child.try_wait()) {
        (_, Ok(Some(status))) => format!("it ended ({status}) without reporting its port"),
        (Err(mpsc::RecvTimeoutError::Disconnected), _) => {
            "it closed its output without reporting its port".to_owned()
        }
        _ => format!(
            "it did not report its port within {} s",
            STARTUP_WAIT.as_secs()
        ),
    };
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    Ok(Err(format!("{how}\n--- its log ---\n{log}")))
}

fn installation() -> Result<PathBuf, HarnessError> {
    if let Some(dir) = std::env::var_os("GOVBUS_OIDC_PROVIDER_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/install-oidc-provider");
    let output = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(HarnessError::io("running scripts/install-oidc-provider"))?;
    let dir = String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_owned();
    if !output.status.success() || dir.is_empty() {
        return Err(HarnessError::Oidc(
            "scripts/install-oidc-provider failed (it needs Node.js 20+ and the npm registry); see its messages above".to_owned(),
        ));
    }
    Ok(PathBuf::from(dir))
}
