//! Who may call which gRPC method: an access policy, enforced on every call, reloadable.
//!
//! The policy is a TOML file of grants:
//!
//! ```toml
//! [[grant]]
//! callers = ["welfare", "licensing"]
//! methods = ["govbus.identity.v1.IdentityService/VerifyCitizen"]
//!
//! [[grant]]
//! callers = ["operator"]
//! methods = ["govbus.identity.v1.IdentityService/*"]
//! ```
//!
//! A caller is the service named in its client certificate (see [`crate::tls`]); a method is
//! `package.Service/Method`, or `package.Service/*` for all of a service's methods. Anything
//! not granted is refused with `PermissionDenied` and logged. Health checks and reflection are
//! open to every caller holding a certificate. [`AccessPolicy::watch`] reloads the file when it
//! changes; a file that does not parse is reported and the policy in force stays.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file cannot be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid policy.
    #[error("{path}: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    grant: Vec<Grant>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Grant {
    callers: Vec<String>,
    methods: Vec<String>,
}

/// The grants in force: for each caller, the methods (or `Service/*`) it may call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants(BTreeMap<String, BTreeSet<String>>);

impl Grants {
    /// Parses a policy document.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|error| error.to_string())?;
        let mut grants: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (index, grant) in file.grant.iter().enumerate() {
            if grant.callers.is_empty() || grant.methods.is_empty() {
                return Err(format!("grant {}: needs callers and methods", index + 1));
            }
            for method in &grant.methods {
                let valid = method
                    .split_once('/')
                    .is_some_and(|(service, name)| service.contains('.') && !name.is_empty());
                if !valid {
                    return Err(format!(
                        "grant {}: {method:?} is not package.Service/Method or package.Service/*",
                        index + 1
                    ));
                }
            }
            for caller in &grant.callers {
                grants
                    .entry(caller.clone())
                    .or_default()
                    .extend(grant.methods.iter().cloned());
            }
        }
        Ok(Self(grants))
    }

    /// Whether `caller` may call `path` (`/package.Service/Method`).
    pub fn allows(&self, caller: &str, path: &str) -> bool {
        let method = path.trim_start_matches('/');
        let Some((service, _)) = method.split_once('/') else {
            return false;
        };
        if is_open(service) {
            return true;
        }
        self.0.get(caller).is_some_and(|granted| {
            granted.contains(method) || granted.contains(&format!("{service}/*"))
        })
    }
}

/// Infrastructure every authenticated caller may use.
fn is_open(service: &str) -> bool {
    service.starts_with("grpc.health.") || service.starts_with("grpc.reflection.")
}

/// The policy in force, shared by every server of a process and replaced on reload.
#[derive(Debug, Clone)]
pub struct AccessPolicy {
    grants: Arc<RwLock<Grants>>,
    path: Option<PathBuf>,
}

impl AccessPolicy {
    /// A fixed policy.
    pub fn new(grants: Grants) -> Self {
        Self {
            grants: Arc::new(RwLock::new(grants)),
            path: None,
        }
    }

    /// The policy in `path`.
    pub fn from_file(path: &Path) -> Result<Self, PolicyError> {
        let grants = read(path)?;
        Ok(Self {
            grants: Arc::new(RwLock::new(grants)),
            path: Some(path.to_owned()),
        })
    }

    /// The policy in the file `GOVBUS_ACCESS_POLICY`, if that is set.
    pub fn from_env() -> Result<Option<Self>, PolicyError> {
        match std::env::var_os("GOVBUS_ACCESS_POLICY") {
            Some(path) => Self::from_file(Path::new(&path)).map(Some),
            None => Ok(None),
        }
    }

    /// Whether `caller` may call `path`.
    pub fn allows(&self, caller: &str, path: &str) -> bool {
        self.grants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .allows(caller, path)
    }

    /// Rereads the file (if the policy came from one); on error the policy in force stays.
    pub fn reload(&self) -> Result<(), PolicyError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let grants = read(path)?;
        *self.grants.write().unwrap_or_else(PoisonError::into_inner) = grants;
        tracing::info!(message = "Access policy reloaded.", path = %path.display());
        Ok(())
    }

    /// Checks the file every `interval` and reloads it when its modification time changes,
    /// until `stop`.
    pub fn watch(
        &self,
        interval: Duration,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let policy = self.clone();
        tokio::spawn(async move {
            let Some(path) = policy.path.clone() else {
                return;
            };
            let modified = |path: &Path| -> Option<SystemTime> {
                std::fs::metadata(path)
                    .and_then(|meta| meta.modified())
                    .ok()
            };
            let mut seen = modified(&path);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
                let now = modified(&path);
                if now != seen {
                    seen = now;
                    if let Err(error) = policy.reload() {
                        tracing::error!(
                            message = "Access policy not reloaded; the previous one stays in force.",
                            %error,
                        );
                    }
                }
            }
        })
    }
}

fn read(path: &Path) -> Result<Grants, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_owned(),
        source,
    })?;
    Grants::parse(&text).map_err(|problem| PolicyError::Invalid {
        path: path.to_owned(),
        problem,
    })
}

/// Enforces an [`AccessPolicy`] on a server whose connections are mutual TLS.
#[derive(Debug, Clone)]
pub struct AccessLayer {
    policy: Option<AccessPolicy>,
    service: &'static str,
}

impl AccessLayer {
    /// Enforces `policy` (none: every call passes, for servers without TLS) on the server of
    /// `service`.
    pub fn new(service: &'static str, policy: Option<AccessPolicy>) -> Self {
        Self { policy, service }
    }
}

impl<S> Layer<S> for AccessLayer {
    type Service = AccessControlled<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessControlled {
            inner,
            policy: self.policy.clone(),
            service: self.service,
        }
    }
}

/// The service [`AccessLayer`] wraps around a server.
#[derive(Debug, Clone)]
pub struct AccessControlled<S> {
    inner: S,
    policy: Option<AccessPolicy>,
    service: &'static str,
}

impl<S, B, R> Service<http::Request<B>> for AccessControlled<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>> + Send,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some(policy) = &self.policy {
            let caller = request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| crate::tls::caller_of(info.peer_certs().as_ref()));
            let path = request.uri().path();
            let allowed = caller
                .as_deref()
                .is_some_and(|caller| policy.allows(caller, path));
            if !allowed {
                let caller = caller.unwrap_or_else(|| "(no certificate)".to_owned());
                tracing::warn!(
                    message = "Call refused by the access policy.",
                    service = self.service,
                    %caller,
                    method = path,
                );
                metrics::counter!(
                    "govbus_grpc_server_denied_total",
                    "service" => self.service,
                    "caller" => caller.clone(),
                )
                .increment(1);
                let status = tonic::Status::permission_denied(format!(
                    "{caller} may not call {}",
                    path.trim_start_matches('/')
                ));
                return Box::pin(async move { Ok(status.into_http()) });
            }
        }
        Box::pin(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
        [[grant]]
        callers = ["welfare", "licensing"]
        methods = ["govbus.identity.v1.IdentityService/VerifyCitizen"]

        [[grant]]
        callers = ["operator"]
        methods = ["govbus.identity.v1.IdentityService/*"]
    "#;

    #[test]
    fn grants_allow_what_they_name_and_nothing_else() {
        let grants = Grants::parse(POLICY).expect("valid");
        let verify = "/govbus.identity.v1.IdentityService/VerifyCitizen";
        assert!(grants.allows("welfare", verify));
        assert!(grants.allows("licensing", verify));
        assert!(!grants.allows("evaluation", verify));
        assert!(!grants.allows(
            "welfare",
            "/govbus.identity.v1.IdentityService/RegisterCitizen"
        ));
        assert!(grants.allows(
            "operator",
            "/govbus.identity.v1.IdentityService/RecordDeath"
        ));
        assert!(!grants.allows("operator", "/govbus.welfare.v1.WelfareService/ListBenefits"));
        assert!(grants.allows("evaluation", "/grpc.health.v1.Health/Check"));
        assert!(!grants.allows("welfare", "garbage"));
    }

    #[test]
    fn a_bad_policy_is_refused_with_a_reason() {
        for (text, expected) in [
            (
                "[[grant]]\ncallers = [\"a\"]\nmethods = [\"VerifyCitizen\"]",
                "not package.Service",
            ),
            (
                "[[grant]]\ncallers = []\nmethods = [\"a.B/C\"]",
                "needs callers",
            ),
            ("[[grnt]]\ncallers = [\"a\"]", "unknown field"),
        ] {
            let error = Grants::parse(text).expect_err(text);
            assert!(error.contains(expected), "{error}");
        }
    }

    #[tokio::test]
    async fn a_changed_file_is_reloaded_and_a_broken_one_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("policy.toml");
        std::fs::write(&path, POLICY).expect("written");
        let policy = AccessPolicy::from_file(&path).expect("valid");
        let verify = "/govbus.identity.v1.IdentityService/VerifyCitizen";
        assert!(!policy.allows("evaluation", verify));
        std::fs::write(
            &path,
            format!(
                "{POLICY}\n[[grant]]\ncallers = [\"evaluation\"]\nmethods = [\"{}\"]\n",
                verify.trim_start_matches('/')
            ),
        )
        .expect("written");
        policy.reload().expect("reloaded");
        assert!(policy.allows("evaluation", verify));
        std::fs::write(&path, "not toml [").expect("written");
        assert!(policy.reload().is_err());
        assert!(
            policy.allows("evaluation", verify),
            "the previous policy stays"
        );
    }
}
