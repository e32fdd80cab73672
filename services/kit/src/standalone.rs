//! A service binary run on its own, outside `govbus up`: its [`ServiceEnvironment`] read from
//! the process's environment over its declaration, so that the binary and the stack read the
//! same settings with the same parser and the same checks.
//!
//! For a service `name` (upper-cased `NAME`, `-` as `_`):
//! - `GOVBUS_NAME_DATABASE_URL` (default `sqlite://.govbus/<name>.db`) and `GOVBUS_NAME_LISTEN`
//!   (default `127.0.0.1:<its default port>`);
//! - `GOVBUS_NAME_<KEY>` for each of its declared settings (default: the declared default);
//! - `GOVBUS_<CALLED>_URL` for each service it calls (required);
//! - the bus ([`crate::bus_env`]), `GOVBUS_TLS_DIR`, `GOVBUS_ACCESS_POLICY`,
//!   `GOVBUS_AUDIT_SUBJECT_KEY`, `GOVBUS_AUDIT_TSA_URL` (and `GOVBUS_AUDIT_TSA_ROOTS`) and
//!   `GOVBUS_AGENCIES` (the instance's agencies' list; unset: Kota Malang's), as for every
//!   service binary (`docs/operating.md`).
//!
//! A variable that starts with `GOVBUS_NAME_` but names no setting is refused, so that a
//! misspelt or retired setting is not silently ignored (`GOVBUS_NAME_URL`, which callers of the
//! service read, is let be).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use govbus_civil::agencies::Agencies;

use crate::declaration::{Section, ServiceDeclaration, ServiceEnvironment};

/// Why a standalone service's environment cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    /// A variable holds a value its setting cannot take.
    #[error("{variable}={value:?}: {problem}")]
    Invalid {
        /// The variable.
        variable: String,
        /// Its value.
        value: String,
        /// What is wrong.
        problem: String,
    },
    /// A variable of the service's prefix that names no setting.
    #[error("{0} names no setting of this service (known: {1})")]
    Unknown(String, String),
    /// A required variable is missing.
    #[error("{0} is not set")]
    Missing(String),
    /// The settings, each valid, do not hold together.
    #[error("{0}")]
    Settings(String),
    /// The bus, TLS, policy or subject key cannot be read.
    #[error("{0}")]
    Environment(Box<dyn std::error::Error + Send + Sync>),
}

/// Why a standalone service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Logs and traces could not be set up.
    #[error("telemetry: {0}")]
    Telemetry(#[from] crate::telemetry::TelemetryError),
    /// The environment names a setting wrongly.
    #[error(transparent)]
    Environment(#[from] StandaloneError),
    /// The service did not start.
    #[error("starting the {service} service: {source}")]
    Start {
        /// The service.
        service: &'static str,
        /// Why.
        #[source]
        source: crate::StartError,
    },
    /// The stop signals cannot be waited for.
    #[error("waiting for Ctrl-C or SIGTERM: {0}")]
    Signal(#[source] std::io::Error),
}

/// Runs `declaration`'s service on its own until Ctrl-C or SIGTERM, then stops it in order:
/// a service binary's whole `main`.
pub async fn serve(declaration: &ServiceDeclaration) -> Result<(), ServeError> {
    let telemetry = crate::telemetry::Telemetry::install(
        &crate::telemetry::TelemetrySettings::from_env(declaration.name),
    )?;
    let environment = environment(declaration)?;
    let service = (declaration.start)(environment)
        .await
        .map_err(|source| ServeError::Start {
            service: declaration.name,
            source,
        })?;
    let signal = crate::runtime::stop_signal().await;
    if let Ok(signal) = &signal {
        tracing::info!(message = "Stopping.", signal);
    }
    service.stop().await;
    telemetry.shutdown();
    signal.map(|_| ()).map_err(ServeError::Signal)
}

/// The environment variable of `service`'s `key`.
pub fn variable(service: &str, key: &str) -> String {
    format!(
        "GOVBUS_{}_{}",
        service.to_uppercase().replace('-', "_"),
        key.to_uppercase()
    )
}

/// `declaration`'s environment from the process's environment variables.
pub fn environment(
    declaration: &ServiceDeclaration,
) -> Result<ServiceEnvironment, StandaloneError> {
    environment_from(declaration, std::env::vars().collect())
}

fn environment_from(
    declaration: &ServiceDeclaration,
    vars: BTreeMap<String, String>,
) -> Result<ServiceEnvironment, StandaloneError> {
    let name = declaration.name;
    let prefix = variable(name, "");
    // `GOVBUS_<NAME>_URL` is how the services that call this one find it: often set in the same
    // shell, and not this service's concern.
    let own = [
        variable(name, "database_url"),
        variable(name, "listen"),
        variable(name, "url"),
    ];
    let mut settings = Section::new();
    for setting in declaration.settings {
        let key = variable(name, setting.key);
        let text = vars.get(&key).map_or(setting.default, String::as_str);
        let value = setting
            .parse(text)
            .map_err(|problem| StandaloneError::Invalid {
                variable: key.clone(),
                value: text.to_owned(),
                problem,
            })?;
        settings.insert(setting.key.to_owned(), value);
    }
    for variable in vars.keys().filter(|variable| variable.starts_with(&prefix)) {
        let known = own.contains(variable)
            || declaration
                .settings
                .iter()
                .any(|setting| self::variable(name, setting.key) == *variable);
        if !known {
            let mut names: Vec<String> = own.to_vec();
            names.extend(
                declaration
                    .settings
                    .iter()
                    .map(|s| self::variable(name, s.key)),
            );
            return Err(StandaloneError::Unknown(variable.clone(), names.join(", ")));
        }
    }
    (declaration.check_settings)(&settings)
        .map_err(|problem| StandaloneError::Settings(format!("{prefix}{problem}")))?;
    let listen_text = vars
        .get(&own[1])
        .cloned()
        .unwrap_or_else(|| format!("127.0.0.1:{}", declaration.default_port));
    let listen: SocketAddr = listen_text.parse().map_err(|_| StandaloneError::Invalid {
        variable: own[1].clone(),
        value: listen_text.clone(),
        problem: format!(
            "is not an address like 127.0.0.1:{}",
            declaration.default_port
        ),
    })?;
    let mut peers = BTreeMap::new();
    for called in declaration.calls {
        let key = variable(called, "url");
        let url = vars.get(&key).ok_or(StandaloneError::Missing(key))?;
        peers.insert(*called, url.clone());
    }
    let boxed =
        |error: Box<dyn std::error::Error + Send + Sync>| StandaloneError::Environment(error);
    Ok(ServiceEnvironment {
        database_url: vars
            .get(&own[0])
            .cloned()
            .unwrap_or_else(|| format!("sqlite://.govbus/{name}.db")),
        listen,
        bus: crate::bus_env::bus_options_from(name, |variable| vars.get(variable).cloned())
            .map_err(|e| boxed(e.into()))?,
        storage: govbus_storage::StorageSettings::default(),
        tls: crate::tls::ServiceTls::from_env(name).map_err(|e| boxed(e.into()))?,
        access: crate::access::AccessPolicy::from_env().map_err(|e| boxed(e.into()))?,
        audit_subject_key: crate::audit::SubjectKey::from_env().map_err(|e| boxed(e.into()))?,
        audit_timestamps: crate::audit::Tsa::from_env().map_err(|e| boxed(e.into()))?,
        peers,
        others: Vec::new(),
        agencies: Arc::new(
            Agencies::configured(vars.get("GOVBUS_AGENCIES").map(std::path::Path::new))
                .map_err(|e| boxed(e.into()))?,
        ),
        members: BTreeMap::new(),
        settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::declaration::{ContractSource, Setting, SettingKind, SettingProblem, Starting};

    fn contract() -> Result<govbus_bus::ServiceContract, govbus_bus::AdapterError> {
        govbus_bus::ServiceAdapter::new("parcel").contract()
    }

    fn check(section: &Section) -> Result<(), SettingProblem> {
        match section.get("days").and_then(toml::Value::as_integer) {
            Some(days) if days > 0 => Ok(()),
            _ => Err(SettingProblem::new("days", "must be positive")),
        }
    }

    fn start(_: ServiceEnvironment) -> Starting {
        Box::pin(async { Err(crate::StartError::Tls("never started".to_owned())) })
    }

    const PARCEL: ServiceDeclaration = ServiceDeclaration {
        name: "parcel",
        summary: "test",
        grpc_services: &[],
        calls: &["identity"],
        default_port: 50099,
        settings: &[Setting {
            key: "days",
            kind: SettingKind::Integer,
            default: "3",
            doc: "days",
        }],
        check_settings: check,
        grants: "",
        contract: ContractSource::Fixed(contract),
        start,
    };

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut vars: BTreeMap<String, String> = pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
            .collect();
        vars.insert(
            "GOVBUS_NATS_URL".to_owned(),
            "nats://127.0.0.1:1".to_owned(),
        );
        vars
    }

    #[test]
    fn settings_come_from_their_variables_or_their_defaults() {
        let environment = environment_from(
            &PARCEL,
            vars(&[
                ("GOVBUS_IDENTITY_URL", "http://127.0.0.1:1"),
                ("GOVBUS_PARCEL_DAYS", "5"),
            ]),
        )
        .expect("read");
        assert_eq!(environment.settings["days"].as_integer(), Some(5));
        assert_eq!(environment.listen.port(), 50099);
        assert_eq!(environment.peers["identity"], "http://127.0.0.1:1");
        assert_eq!(environment.database_url, "sqlite://.govbus/parcel.db");
    }

    #[test]
    fn unknown_invalid_and_missing_variables_are_refused() {
        let identity = ("GOVBUS_IDENTITY_URL", "http://127.0.0.1:1");
        let own_url = ("GOVBUS_PARCEL_URL", "http://127.0.0.1:2");
        assert!(environment_from(&PARCEL, vars(&[identity, own_url])).is_ok());
        let unknown = environment_from(&PARCEL, vars(&[identity, ("GOVBUS_PARCEL_DAIS", "5")]));
        assert!(
            matches!(unknown, Err(StandaloneError::Unknown(..))),
            "{unknown:?}"
        );
        let invalid = environment_from(&PARCEL, vars(&[identity, ("GOVBUS_PARCEL_DAYS", "x")]));
        assert!(
            matches!(invalid, Err(StandaloneError::Invalid { .. })),
            "{invalid:?}"
        );
        let unchecked = environment_from(&PARCEL, vars(&[identity, ("GOVBUS_PARCEL_DAYS", "0")]));
        assert!(
            matches!(unchecked, Err(StandaloneError::Settings(_))),
            "{unchecked:?}"
        );
        let missing = environment_from(&PARCEL, vars(&[]));
        assert!(
            matches!(missing, Err(StandaloneError::Missing(_))),
            "{missing:?}"
        );
    }
}
