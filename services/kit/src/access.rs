//! Who may call which gRPC method: an access policy, enforced on every call, reloadable.
//!
//! The policy is a TOML file of grants:
//!
//! ```toml
//! [[grant]]
//! callers = ["welfare", "licensing"]
//! methods = ["govbus.identity.v1.IdentityService/VerifyCitizen"]
//! purpose = "Check an applicant is a living resident before granting a benefit or licence"
//!
//! [[grant]]
//! callers = ["operator"]
//! methods = ["govbus.identity.v1.IdentityService/*"]
//! ```
//!
//! A grant's `purpose` is what the processing log records for the calls it lets through
//! (UU 27/2022 asks for the purpose of every processing of personal data).
//!
//! A grant may also (or instead) give `events`: the event types a caller may subscribe to over
//! the gateway, by CloudEvents type (`identity.citizen.deceased.v1`, an application's
//! `dinkes.simpus.newBirth`) or every type under a prefix (`identity.*`, `dinkes.simpus.*`). Its purpose is what lets personal fields reach the subscriber: a grant
//! without one delivers the events with their personal fields left out.
//!
//! A caller is the service named in its client certificate (see [`crate::tls`]), or an
//! application of an agency (`<agency>.<application>`, e.g. `disnaker-pmptsp.sicantik`) calling through
//! the gateway: the gateway names it in [`APPLICATION_METADATA`], which is believed only from
//! the certificate named [`GATEWAY`] and refused from any other. A method is
//! `package.Service/Method`, or `package.Service/*` for all of a service's methods. Anything
//! not granted is refused with `PermissionDenied` and logged. Health checks and reflection are
//! open to every caller holding a certificate. [`AccessPolicy::watch`] reloads the file when it
//! changes; a file that does not parse is reported and the policy in force stays.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tower::{Layer, Service};

/// The call metadata in which the gateway names the application it calls for.
pub const APPLICATION_METADATA: &str = "govbus-application";

/// The certificate name of the gateway, the one caller whose [`APPLICATION_METADATA`] is
/// believed.
pub const GATEWAY: &str = "gateway";

/// Whether `name` is an application's name: `<agency>.<application>`, each part lowercase
/// letters, digits and `-`, starting with a letter, at most 64 bytes in all. Services'
/// names have no dot, so the two never collide in the policy.
pub fn is_application_name(name: &str) -> bool {
    let part = |part: &str| {
        part.len() >= 2
            && part.starts_with(|c: char| c.is_ascii_lowercase())
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    name.len() <= 64
        && name
            .split_once('.')
            .is_some_and(|(agency, application)| part(agency) && part(application))
}

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
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    purpose: Option<String>,
}

/// The grants in force: for each caller, the methods (or `Service/*`) it may call, each with the
/// purpose its grant states.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants(BTreeMap<String, CallerGrants>);

/// One caller's grants: by method (`package.Service/Method`) and by whole service
/// (`package.Service`, from `package.Service/*`), each with its purpose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct CallerGrants {
    methods: BTreeMap<String, Option<Arc<str>>>,
    services: BTreeMap<String, Option<Arc<str>>>,
    /// Event types, and every type under a prefix (`identity` from `identity.*`).
    events: BTreeMap<String, Option<Arc<str>>>,
    event_prefixes: BTreeMap<String, Option<Arc<str>>>,
}

impl Grants {
    /// Parses a policy document.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: PolicyFile = toml::from_str(text).map_err(|error| error.to_string())?;
        let mut grants: BTreeMap<String, CallerGrants> = BTreeMap::new();
        for (index, grant) in file.grant.iter().enumerate() {
            if grant.callers.is_empty() || (grant.methods.is_empty() && grant.events.is_empty()) {
                return Err(format!(
                    "grant {}: needs callers, and methods or events",
                    index + 1
                ));
            }
            for event in &grant.events {
                let valid = match event.strip_suffix(".*") {
                    Some(prefix) => prefix.split('.').all(is_name),
                    None => event.split('.').count() >= 2 && event.split('.').all(is_name),
                };
                if !valid {
                    return Err(format!(
                        "grant {}: {event:?} is not an event type (service.aggregate.happened.v1) or a prefix with .*",
                        index + 1
                    ));
                }
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
            if grant
                .purpose
                .as_deref()
                .is_some_and(|purpose| purpose.trim().is_empty() || purpose.len() > 500)
            {
                return Err(format!(
                    "grant {}: a purpose is a sentence of at most 500 bytes",
                    index + 1
                ));
            }
            let purpose: Option<Arc<str>> = grant.purpose.as_deref().map(Arc::from);
            for caller in &grant.callers {
                let granted = grants.entry(caller.clone()).or_default();
                for event in &grant.events {
                    match event.strip_suffix(".*") {
                        Some(prefix) => granted
                            .event_prefixes
                            .insert(prefix.to_owned(), purpose.clone()),
                        None => granted.events.insert(event.clone(), purpose.clone()),
                    };
                }
                for method in &grant.methods {
                    match method.strip_suffix("/*") {
                        Some(service) => {
                            granted.services.insert(service.to_owned(), purpose.clone())
                        }
                        None => granted.methods.insert(method.clone(), purpose.clone()),
                    };
                }
            }
        }
        Ok(Self(grants))
    }

    /// Whether `caller` may call `path` (`/package.Service/Method`).
    pub fn allows(&self, caller: &str, path: &str) -> bool {
        self.grant(caller, path).is_some()
    }

    /// `Some` if `caller` may call `path`, with the purpose its grant states (the grant naming
    /// the method itself before a `Service/*` one).
    pub fn grant(&self, caller: &str, path: &str) -> Option<Option<Arc<str>>> {
        let method = path.trim_start_matches('/');
        let (service, _) = method.split_once('/')?;
        if is_open(service) {
            return Some(None);
        }
        let granted = self.0.get(caller)?;
        granted
            .methods
            .get(method)
            .or_else(|| granted.services.get(service))
            .cloned()
    }
}

impl Grants {
    /// `Some` if `caller` may subscribe to `event_type`, with the purpose its grant states
    /// (the grant naming the type itself first, then the longest prefix).
    pub fn event_grant(&self, caller: &str, event_type: &str) -> Option<Option<Arc<str>>> {
        let granted = self.0.get(caller)?;
        if let Some(purpose) = granted.events.get(event_type) {
            return Some(purpose.clone());
        }
        event_type
            .rmatch_indices('.')
            .find_map(|(at, _)| granted.event_prefixes.get(&event_type[..at]))
            .cloned()
    }
}

/// A part of an event type: letters, digits, `-` and `_` (an application's types, such as
/// `newBirth`, may have capitals).
fn is_name(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_".contains(&byte))
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
        self.grant(caller, path).is_some()
    }

    /// `Some` if `caller` may call `path`, with the purpose its grant states.
    pub fn grant(&self, caller: &str, path: &str) -> Option<Option<Arc<str>>> {
        self.grants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .grant(caller, path)
    }

    /// `Some` if `caller` may subscribe to `event_type`, with the purpose its grant states.
    pub fn event_grant(&self, caller: &str, event_type: &str) -> Option<Option<Arc<str>>> {
        self.grants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .event_grant(caller, event_type)
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

/// A `PermissionDenied` answer with `reason`, logged and counted.
fn refusal<R: Default>(
    service: &'static str,
    caller: &str,
    method: &str,
    reason: String,
) -> http::Response<R> {
    tracing::warn!(
        message = "Call refused by the access policy.",
        service,
        %caller,
        %method,
        %reason,
    );
    metrics::counter!(
        "govbus_grpc_server_denied_total",
        "service" => service,
        "caller" => caller.to_owned(),
    )
    .increment(1);
    tonic::Status::permission_denied(reason).into_http()
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

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // Named by the telemetry layer outside this one, once per method.
        let method: Arc<str> = match request
            .extensions()
            .get::<crate::call_facts::CalledMethod>()
        {
            Some(method) => Arc::clone(&method.0),
            None => {
                let method: Arc<str> = Arc::from(request.uri().path().trim_start_matches('/'));
                request
                    .extensions_mut()
                    .insert(crate::call_facts::CalledMethod(Arc::clone(&method)));
                method
            }
        };
        // Read from the certificate once, when the connection was made (`crate::peer`).
        let certified = request
            .extensions()
            .get::<crate::peer::Peer>()
            .and_then(|peer| peer.caller().cloned());
        let caller = match (certified, request.headers().get(APPLICATION_METADATA)) {
            (None, _) => None,
            (Some(certified), None) => Some(crate::call_facts::Caller {
                name: certified,
                via: None,
            }),
            (Some(certified), Some(application)) => {
                let application = application
                    .to_str()
                    .ok()
                    .filter(|name| &*certified == GATEWAY && is_application_name(name));
                match application {
                    Some(application) => Some(crate::call_facts::Caller {
                        name: Arc::from(application),
                        via: Some(certified),
                    }),
                    None => {
                        let reason = if &*certified == GATEWAY {
                            format!("{APPLICATION_METADATA} does not name an application")
                        } else {
                            format!(
                                "{certified} may not call for an application; only the {GATEWAY} may"
                            )
                        };
                        let refused = refusal(self.service, &certified, &method, reason);
                        return Box::pin(async move { Ok(refused) });
                    }
                }
            }
        };
        if let Some(policy) = &self.policy {
            let grant = caller
                .as_ref()
                .and_then(|caller| policy.grant(&caller.name, &method));
            match grant {
                Some(Some(purpose)) => {
                    request
                        .extensions_mut()
                        .insert(crate::call_facts::GrantedPurpose(purpose));
                }
                Some(None) => {}
                None => {
                    let name = caller.as_ref().map_or_else(
                        || "(no certificate)".to_owned(),
                        |caller| caller.name.to_string(),
                    );
                    let reason = format!("{name} may not call {method}");
                    let refused = refusal(self.service, &name, &method, reason);
                    return Box::pin(async move { Ok(refused) });
                }
            }
        }
        if let Some(caller) = caller {
            request.extensions_mut().insert(caller);
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
    fn event_grants_name_types_or_a_whole_service_with_their_purpose() {
        let grants = Grants::parse(
            r#"
            [[grant]]
            callers = ["dinkes.simpus"]
            events = ["identity.citizen.deceased.v1"]
            purpose = "Close the deceased's health records"

            [[grant]]
            callers = ["bappeda.dashboard"]
            events = ["welfare.*", "dinkes.simpus.*"]
            "#,
        )
        .expect("valid");
        assert_eq!(
            grants.event_grant("dinkes.simpus", "identity.citizen.deceased.v1"),
            Some(Some(Arc::from("Close the deceased's health records")))
        );
        assert_eq!(
            grants.event_grant("dinkes.simpus", "identity.citizen.registered.v1"),
            None
        );
        assert_eq!(
            grants.event_grant("bappeda.dashboard", "welfare.benefit.granted.v1"),
            Some(None),
            "granted without a purpose: personal fields left out"
        );
        assert_eq!(
            grants.event_grant("bappeda.dashboard", "identity.citizen.deceased.v1"),
            None
        );
        assert_eq!(
            grants.event_grant("bappeda.dashboard", "dinkes.simpus.newBirth"),
            Some(None),
            "an application's types, under its prefix"
        );
        assert_eq!(
            grants.event_grant("bappeda.dashboard", "dinkes.other.x"),
            None
        );
        assert!(
            !grants.allows(
                "dinkes.simpus",
                "/govbus.identity.v1.IdentityService/VerifyCitizen"
            ),
            "an event grant grants no method"
        );
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
            ("[[grant]]\ncallers = [\"a\"]", "methods or events"),
            (
                "[[grant]]\ncallers = [\"a\"]\nevents = [\"identity citizen\"]",
                "not an event type",
            ),
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
