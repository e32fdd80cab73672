//! A real headless Chromium for browser tests, through its WebDriver (`chromedriver`).
//!
//! Both come from Debian's `chromium` and `chromium-driver` packages (`scripts/install-browser`
//! installs them). The driver listens on a port the kernel picks; Chromium runs headless with
//! its own empty profile and no background networking, and both are killed on drop.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;

use crate::HarnessError;

/// A running `chromedriver`.
#[derive(Debug)]
pub struct ChromeDriver {
    child: Child,
    port: u16,
    profile: TempDir,
    chromium: PathBuf,
}

impl ChromeDriver {
    /// Starts `chromedriver` (`GOVBUS_CHROMEDRIVER`, else `chromedriver` on `PATH`) for the
    /// Chromium at `GOVBUS_CHROMIUM`, else `/usr/bin/chromium`.
    pub fn start() -> Result<Self, HarnessError> {
        let driver = std::env::var_os("GOVBUS_CHROMEDRIVER")
            .map(PathBuf::from)
            .or_else(|| find_on_path("chromedriver"))
            .ok_or_else(|| HarnessError::Browser(
                "chromedriver not found; run scripts/install-browser (Debian packages chromium and chromium-driver) or set GOVBUS_CHROMEDRIVER".to_owned(),
            ))?;
        let chromium = std::env::var_os("GOVBUS_CHROMIUM")
            .map(PathBuf::from)
            .or_else(|| find_on_path("chromium"))
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
        if !chromium.is_file() {
            return Err(HarnessError::Browser(format!(
                "{} not found; run scripts/install-browser or set GOVBUS_CHROMIUM",
                chromium.display()
            )));
        }
        let profile = tempfile::Builder::new()
            .prefix("govbus-chromium-")
            .tempdir()
            .map_err(HarnessError::io("creating the browser profile folder"))?;
        let mut child = Command::new(&driver)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(HarnessError::io("running chromedriver"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| HarnessError::Browser("chromedriver has no output".to_owned()))?;
        // "ChromeDriver was started successfully on port 33263."
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .split("on port ")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches('.').trim().parse::<u16>().ok())
                    .filter(|_| line.contains("started successfully"))
                {
                    let _ = sender.send(port);
                }
            }
        });
        let port = match receiver.recv_timeout(Duration::from_secs(20)) {
            Ok(port) => port,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HarnessError::Browser(
                    "chromedriver did not report its port within 20 s".to_owned(),
                ));
            }
        };
        Ok(Self {
            child,
            port,
            profile,
            chromium,
        })
    }

    /// The WebDriver URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The W3C capabilities for a headless Chromium of `width`×`height` pixels.
    pub fn capabilities(
        &self,
        width: u32,
        height: u32,
    ) -> serde_json::Map<String, serde_json::Value> {
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--hide-scrollbars".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", self.profile.path().display()),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            serde_json::json!({ "binary": self.chromium, "args": args }),
        );
        capabilities
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
