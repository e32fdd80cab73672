//! Finding a `nats-server` binary of version 2.10 or later.
//!
//! Debian ships nats-server 2.9, which lacks features govbus relies on (multiple filter subjects
//! per consumer, among others), so the first `nats-server` on `PATH` is not good enough: every
//! candidate's version is checked. The search order is
//!
//! 1. `GOVBUS_NATS_SERVER`, if set (an error if that binary is unusable);
//! 2. the copy `scripts/install-nats-server` installs under the govbus tools folder
//!    (`$GOVBUS_TOOLS_DIR`, by default `$HOME/.cache/govbus`);
//! 3. every `nats-server` on `PATH`, in order.

use std::env;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::NatsdError;

/// The oldest nats-server release govbus supports.
pub const MINIMUM_VERSION: Version = Version {
    major: 2,
    minor: 10,
    patch: 0,
};

/// A nats-server release number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    /// Major release.
    pub major: u32,
    /// Minor release.
    pub minor: u32,
    /// Patch release.
    pub patch: u32,
}

impl Version {
    /// Reads the output of `nats-server --version`, e.g. `nats-server: v2.15.1`.
    pub fn parse_version_output(output: &str) -> Option<Self> {
        let number = output.trim().rsplit(['v', ' ']).next()?;
        let mut parts = number.split(['.', '-']).map(str::parse::<u32>);
        Some(Self {
            major: parts.next()?.ok()?,
            minor: parts.next()?.ok()?,
            patch: parts.next().and_then(Result::ok).unwrap_or(0),
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A usable `nats-server` executable and its version.
#[derive(Debug, Clone)]
pub struct NatsServerBinary {
    /// Path to the executable.
    pub path: PathBuf,
    /// Its reported version.
    pub version: Version,
}

/// Finds a `nats-server` of [`MINIMUM_VERSION`] or later (see the module docs for the order).
///
/// The answer is computed once per process.
pub fn find_nats_server() -> Result<NatsServerBinary, NatsdError> {
    static FOUND: OnceLock<Result<NatsServerBinary, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| search().map_err(|error| error.to_string()))
        .clone()
        .map_err(|searched| NatsdError::NatsServerNotFound { searched })
}

fn search() -> Result<NatsServerBinary, NatsdError> {
    if let Some(path) = env::var_os("GOVBUS_NATS_SERVER") {
        let path = PathBuf::from(path);
        return probe(&path).map_err(|reason| NatsdError::UnusableBinary { path, reason });
    }
    let mut searched = Vec::new();
    let candidates = tools_dir_candidate().into_iter().chain(path_candidates());
    for candidate in candidates {
        match probe(&candidate) {
            Ok(found) => return Ok(found),
            Err(reason) => searched.push(format!("{}: {reason}", candidate.display())),
        }
    }
    if searched.is_empty() {
        searched.push("no nats-server on PATH".to_owned());
    }
    Err(NatsdError::NatsServerNotFound {
        searched: searched.join("; "),
    })
}

/// Where `scripts/install-nats-server` puts its copy.
pub fn tools_dir() -> Option<PathBuf> {
    env::var_os("GOVBUS_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|home| Path::new(&home).join(".cache/govbus")))
}

fn tools_dir_candidate() -> Option<PathBuf> {
    let candidate = tools_dir()?.join("nats-server/bin/nats-server");
    candidate.is_file().then_some(candidate)
}

fn path_candidates() -> Vec<PathBuf> {
    let Some(path) = env::var_os("PATH") else {
        return Vec::new();
    };
    env::split_paths(&path)
        .map(|dir| dir.join("nats-server"))
        .filter(|candidate| candidate.is_file())
        .collect()
}

pub(crate) fn probe(path: &Path) -> Result<NatsServerBinary, String> {
    let output = Command::new(path)
        .arg("--version")
        .output()
        .map_err(|error| format!("cannot run it: {error}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = Version::parse_version_output(&text)
        .ok_or_else(|| format!("unexpected --version output {text:?}"))?;
    if version < MINIMUM_VERSION {
        return Err(format!("version {version} is older than {MINIMUM_VERSION}"));
    }
    Ok(NatsServerBinary {
        path: path.to_owned(),
        version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_release_versions() {
        let version = Version::parse_version_output("nats-server: v2.15.1\n");
        assert_eq!(
            version,
            Some(Version {
                major: 2,
                minor: 15,
                patch: 1
            })
        );
    }

    #[test]
    fn debian_version_is_too_old() {
        let version = Version::parse_version_output("nats-server: v2.9.10").expect("parses");
        assert!(version < MINIMUM_VERSION);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Version::parse_version_output("hello"), None);
    }
}
