//! Who may talk to whom: the stack's certificates and its access policy.

use std::path::PathBuf;

use govbus_kit::access::AccessPolicy;
use govbus_kit::tls::{CertificatePaths, ServiceTls};

use super::callers::{CONSOLE, GATEWAY, OPERATOR};
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
        let failed = |source| StackError::Certificates {
            dir: dir.clone(),
            source,
        };
        if dir.join("ca.pem").is_file() {
            let issued = govbus_kit::development_ca::issue_missing_development_certificates(
                &dir,
                &certificate_names(),
            )
            .map_err(failed)?;
            if !issued.is_empty() {
                tracing::warn!(
                    message = "Issued development certificates to parts added since the CA was made.",
                    names = %issued.join(", "),
                    dir = %dir.display(),
                );
            }
        } else {
            govbus_kit::development_ca::generate_development_certificates(
                &dir,
                &certificate_names(),
            )
            .map_err(failed)?;
            tracing::warn!(
                message = "Made a development CA and certificates; install certificates from your own CA for production.",
                dir = %dir.display(),
            );
        }
        // The development CA's list of revoked certificates, made or kept current (servers
        // refuse what it lists; `govbus certs revoke`).
        govbus_kit::development_ca::publish_development_crl(&dir).map_err(failed)?;
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
                std::fs::write(&path, shipped_policy()).map_err(|source| {
                    StackError::PolicyFile {
                        path: path.clone(),
                        source,
                    }
                })?;
            }
            path
        }
    };
    Ok(AccessPolicy::from_file(&path)?)
}

/// Every name the stack issues a certificate to: each service, the console, operators' tools,
/// the gateway.
pub fn certificate_names() -> Vec<&'static str> {
    let mut names = crate::services::names();
    names.extend([CONSOLE, OPERATOR, GATEWAY]);
    names
}

/// What the shipped access policy says first: how to read it.
const POLICY_PREAMBLE: &str = "\
# Who may call which gRPC method of the govbus services, and why.
#
# Callers are the names in their client certificates (mutual TLS). Methods are
# \"package.Service/Method\", or \"package.Service/*\" for every method of a service. Whatever is not
# granted here is refused with PermissionDenied and logged. Health checks and reflection are open
# to every caller with a certificate. A grant's `purpose` is recorded in the processing log with
# every call it lets through that touches a person (UU 27/2022 Pasal 31). `govbus up` copies this
# file to <data_dir>/access-policy.toml at the first start and reloads that copy whenever it
# changes.
#
# Made from the grants each service declares (`services/<service>/grants.toml`); `govbus config
# policy` prints it.
";

/// The access policy govbus ships (`govbus config policy`): every declared service's grants,
/// under its name.
pub fn shipped_policy() -> String {
    let mut policy = POLICY_PREAMBLE.to_owned();
    for declaration in crate::services::SERVICES {
        policy.push_str(&format!(
            "\n# ── {}: {}\n\n{}",
            declaration.name,
            declaration.summary,
            declaration.grants.trim_start()
        ));
        if !policy.ends_with('\n') {
            policy.push('\n');
        }
    }
    policy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policy_is_every_declared_grant() {
        let policy = shipped_policy();
        let grants = govbus_kit::access::Grants::parse(&policy).expect("a valid policy");
        let granted = |caller: &str, method: &str| grants.allows(caller, method);
        assert!(granted(
            "welfare",
            "/govbus.identity.v1.IdentityService/VerifyCitizen"
        ));
        assert!(!granted(
            "welfare",
            "/govbus.identity.v1.IdentityService/RecordDeath"
        ));
        assert!(!granted(
            "evaluation",
            "/govbus.identity.v1.IdentityService/VerifyCitizen"
        ));
        for declaration in crate::services::SERVICES {
            assert!(
                policy.contains(declaration.grants.trim()),
                "{}",
                declaration.name
            );
        }
    }
}
