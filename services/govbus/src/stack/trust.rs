//! Who may talk to whom: the stack's certificates and its access policy.

use std::path::PathBuf;

use govbus_kit::access::AccessPolicy;
use govbus_kit::tls::{CertificatePaths, ServiceTls};

use super::callers::{CONSOLE, OPERATOR};
use super::error::StackError;
use crate::config::StackConfig;

/// The stack's certificate folder.
#[derive(Debug, Clone)]
pub struct Certificates {
    pub(super) dir: PathBuf,
}

impl Certificates {
    /// Opens `dir`, making a development CA and certificates there if it holds none.
    pub fn open(dir: PathBuf) -> Result<Self, StackError> {
        if !dir.join("ca.pem").is_file() {
            govbus_kit::tls::generate_development_certificates(
                &dir,
                &[
                    "identity",
                    "welfare",
                    "licensing",
                    "evaluation",
                    CONSOLE,
                    OPERATOR,
                ],
            )
            .map_err(|source| StackError::Certificates {
                dir: dir.clone(),
                source,
            })?;
            tracing::warn!(
                message = "Made a development CA and certificates; install certificates from your own CA for production.",
                dir = %dir.display(),
            );
        }
        Ok(Self { dir })
    }

    /// The certificate and key of `name`.
    pub fn identity(&self, name: &str) -> Result<ServiceTls, StackError> {
        ServiceTls::from_files(name, &CertificatePaths::in_dir(&self.dir, name)).map_err(|source| {
            StackError::Certificates {
                dir: self.dir.clone(),
                source,
            }
        })
    }
}

/// The policy file in force: the configured one, or the shipped policy copied into the data
/// folder at the first start so operators can edit it there.
pub(super) fn open_policy(config: &StackConfig) -> Result<AccessPolicy, StackError> {
    let path = match &config.tls.policy {
        Some(path) => path.clone(),
        None => {
            let path = config.data_dir.join("access-policy.toml");
            if !path.is_file() {
                std::fs::write(&path, SHIPPED_POLICY).map_err(|source| StackError::PolicyFile {
                    path: path.clone(),
                    source,
                })?;
            }
            path
        }
    };
    Ok(AccessPolicy::from_file(&path)?)
}

/// The access policy govbus ships (`deploy/access-policy.toml`).
pub const SHIPPED_POLICY: &str = include_str!("../../../../deploy/access-policy.toml");
