//! A service as a stack knows it before starting it: its name, its contract on the bus, its gRPC
//! services, the services it calls, its configuration section, the grants it ships and its
//! start. Each service crate declares itself once, as a [`ServiceDeclaration`] constant; the
//! `govbus` stack, its configuration, NATS users, certificates and access policy are built from
//! the list of declarations.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use govbus_bus::{AdapterError, BusOptions, ServiceContract};
use govbus_civil::agencies::Agencies;
use govbus_storage::StorageSettings;
use serde::de::DeserializeOwned;

use crate::StartError;
use crate::access::AccessPolicy;
use crate::audit::SubjectKey;
use crate::tls::ServiceTls;

/// A service's configuration section, as TOML holds it.
pub type Section = toml::Table;

/// A service's start, as a stack runs it.
pub type Starting =
    Pin<Box<dyn Future<Output = Result<Box<dyn RunningService>, StartError>> + Send>>;

/// Everything a stack knows of a service before it starts it.
#[derive(Clone, Copy)]
pub struct ServiceDeclaration {
    /// Its name: on the bus, in certificates, in the access policy, as its configuration section.
    pub name: &'static str,
    /// One line for people: what it does.
    pub summary: &'static str,
    /// The gRPC services it serves, by full name (`govbus.identity.v1.IdentityService`).
    pub grpc_services: &'static [&'static str],
    /// The services whose gRPC APIs it calls: started before it, stopped after it.
    pub calls: &'static [&'static str],
    /// Its gRPC port in a stack on one machine, unless configured otherwise.
    pub default_port: u16,
    /// Its configuration beyond `listen` and `database_url`.
    pub settings: &'static [Setting],
    /// Checks a configured section of [`Self::settings`], naming the key at fault.
    pub check_settings: fn(&Section) -> Result<(), SettingProblem>,
    /// The access policy's grants it ships: who may call its methods and why (`[[grant]]`
    /// tables of the policy file's format).
    pub grants: &'static str,
    /// What it publishes and consumes (for NATS permissions), from the same declaration its
    /// start uses.
    pub contract: ContractSource,
    /// Starts it.
    pub start: fn(ServiceEnvironment) -> Starting,
}

impl fmt::Debug for ServiceDeclaration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceDeclaration")
            .field("name", &self.name)
            .field("grpc_services", &self.grpc_services)
            .field("calls", &self.calls)
            .field("default_port", &self.default_port)
            .finish_non_exhaustive()
    }
}

/// How a service's contract on the bus is read without starting it.
#[derive(Debug, Clone, Copy)]
pub enum ContractSource {
    /// The same whatever else runs in the stack.
    Fixed(fn() -> Result<ServiceContract, AdapterError>),
    /// Made from the other services of the stack (evaluation consumes every other service's
    /// events).
    AmongOthers(fn(&[&'static str]) -> Result<ServiceContract, AdapterError>),
}

impl ContractSource {
    /// The contract among `others`.
    pub fn among(&self, others: &[&'static str]) -> Result<ServiceContract, AdapterError> {
        match self {
            Self::Fixed(contract) => contract(),
            Self::AmongOthers(contract) => contract(others),
        }
    }
}

/// A key of a service's configuration section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The key inside the service's section, e.g. `verification_deadline`.
    pub key: &'static str,
    /// What it holds.
    pub kind: SettingKind,
    /// Its default, written as in an environment variable (`10d`, `true`, `5`).
    pub default: &'static str,
    /// One sentence for operators.
    pub doc: &'static str,
}

/// What a setting holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingKind {
    /// Text.
    Text,
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Bool,
    /// A duration with its unit ([`crate::duration`]).
    Duration,
}

impl Setting {
    /// The value `text` (from an environment variable or a flag) stands for.
    pub fn parse(&self, text: &str) -> Result<toml::Value, String> {
        parse_value(self.kind, text)
    }

    /// Its default value.
    pub fn default_value(&self) -> Result<toml::Value, String> {
        self.parse(self.default)
    }
}

/// The value `text` (from an environment variable or a flag) stands for, as a `kind`.
pub fn parse_value(kind: SettingKind, text: &str) -> Result<toml::Value, String> {
    match kind {
        SettingKind::Text => Ok(toml::Value::String(text.to_owned())),
        SettingKind::Duration => {
            crate::duration::parse(text).map(|_| toml::Value::String(text.trim().to_owned()))
        }
        SettingKind::Integer => text
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| format!("{text:?} is not a whole number")),
        SettingKind::Bool => match text.trim() {
            "true" | "1" | "yes" | "on" => Ok(toml::Value::Boolean(true)),
            "false" | "0" | "no" | "off" => Ok(toml::Value::Boolean(false)),
            _ => Err(format!("{text:?} is not true or false")),
        },
    }
}

/// A configured setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct SettingProblem {
    /// The key inside the service's section.
    pub key: String,
    /// What is wrong.
    pub problem: String,
}

impl SettingProblem {
    /// `key`'s value has `problem`.
    pub fn new(key: &str, problem: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            problem: problem.into(),
        }
    }

    /// Refuses a zero `value` of the duration `key`.
    pub fn unless_positive(key: &str, value: std::time::Duration) -> Result<(), Self> {
        if value.is_zero() {
            Err(Self::new(key, "must be longer than zero"))
        } else {
            Ok(())
        }
    }
}

/// For a service whose section has only `listen` and `database_url`.
pub fn no_settings(_section: &Section) -> Result<(), SettingProblem> {
    Ok(())
}

/// Reads a service's section into its settings type, naming the key at fault.
pub fn read_settings<T: DeserializeOwned>(section: &Section) -> Result<T, SettingProblem> {
    serde_path_to_error::deserialize(toml::Value::Table(section.clone())).map_err(|error| {
        SettingProblem {
            key: error.path().to_string(),
            problem: error.into_inner().to_string(),
        }
    })
}

/// What a stack gives a service to start it.
#[derive(Debug, Clone)]
pub struct ServiceEnvironment {
    /// `sqlite://…` or `postgres://…`.
    pub database_url: String,
    /// Where its gRPC API listens; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Its bus connection.
    pub bus: BusOptions,
    /// The database, the outbox relay and retention.
    pub storage: StorageSettings,
    /// Its certificate and the CA it trusts; `None` serves plain HTTP/2 (development only).
    pub tls: Option<ServiceTls>,
    /// Who may call which method.
    pub access: Option<AccessPolicy>,
    /// The deployment's key for hashing people in the processing log.
    pub audit_subject_key: Option<SubjectKey>,
    /// The time-stamping authority that stamps each processing-log block.
    pub audit_timestamps: Option<crate::audit::Tsa>,
    /// The gRPC URL of each service it calls, started before it.
    pub peers: BTreeMap<&'static str, String>,
    /// The other services of the stack.
    pub others: Vec<&'static str>,
    /// The instance's agencies (perangkat daerah): the deployment's list, else Kota Malang's.
    pub agencies: Arc<Agencies>,
    /// The agency each service of the stack belongs to (its code); empty outside a stack.
    pub members: BTreeMap<&'static str, String>,
    /// Its configuration section beyond `listen` and `database_url`, defaults filled in and
    /// checked by [`ServiceDeclaration::check_settings`].
    pub settings: Section,
}

impl ServiceEnvironment {
    /// The URL of `service`, which the declaration says it calls.
    pub fn peer(&self, service: &str) -> Result<&str, StartError> {
        self.peers.get(service).map(String::as_str).ok_or_else(|| {
            StartError::Dependency(format!("no {service} service is running to call").into())
        })
    }

    /// Its settings, typed.
    pub fn settings<T: DeserializeOwned>(&self) -> Result<T, StartError> {
        read_settings(&self.settings).map_err(|problem| StartError::Data {
            what: "its settings",
            source: problem.into(),
        })
    }
}

/// A started service, as a stack holds it.
pub trait RunningService: Send + Sync + fmt::Debug {
    /// Where its gRPC API listens.
    fn address(&self) -> SocketAddr;

    /// Its gRPC services for `caller` in this process, without a network hop (see
    /// [`crate::in_process`]).
    fn in_process(&self, caller: &str) -> crate::in_process::InProcessChannel;

    /// Stops it in order: no new calls, consumers finish, unsent events stay in the outbox.
    fn stop(self: Box<Self>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// Makes `$service` (a type with `fn address(&self) -> SocketAddr`, `fn in_process(&self, &str)
/// -> InProcessChannel` and `async fn stop(self)`, as every service's `Application` has) a
/// [`RunningService`].
#[macro_export]
macro_rules! running_service {
    ($service:ty) => {
        impl $crate::declaration::RunningService for $service {
            fn address(&self) -> ::std::net::SocketAddr {
                <$service>::address(self)
            }

            fn in_process(&self, caller: &str) -> $crate::in_process::InProcessChannel {
                <$service>::in_process(self, caller)
            }

            fn stop(
                self: ::std::boxed::Box<Self>,
            ) -> ::std::pin::Pin<::std::boxed::Box<dyn ::std::future::Future<Output = ()> + Send>>
            {
                ::std::boxed::Box::pin(<$service>::stop(*self))
            }
        }
    };
}

/// `declarations` in an order where every service comes after those it calls and those whose
/// events it consumes (their streams exist before its consumers look for them; a service may
/// not create another's stream), in the declared order otherwise. Refused: a service that
/// calls one not declared, and services that depend on each other in a circle.
pub fn start_order<'a>(
    declarations: &[&'a ServiceDeclaration],
) -> Result<Vec<&'a ServiceDeclaration>, String> {
    let names: Vec<&'static str> = declarations
        .iter()
        .map(|declaration| declaration.name)
        .collect();
    let mut needs: Vec<(&'a ServiceDeclaration, Vec<&'static str>)> = Vec::new();
    for declaration in declarations {
        let mut before: Vec<&'static str> = Vec::new();
        for called in declaration.calls {
            if !names.contains(called) {
                return Err(format!(
                    "{} calls {called}, which is not among the declared services",
                    declaration.name
                ));
            }
            before.push(called);
        }
        let others: Vec<&'static str> = names
            .iter()
            .copied()
            .filter(|name| *name != declaration.name)
            .collect();
        let contract = declaration
            .contract
            .among(&others)
            .map_err(|error| format!("the contract of {}: {error}", declaration.name))?;
        for consumed in &contract.consumes {
            // Events of a publisher outside the stack come from a stream someone else keeps.
            if let Some(publisher) = others
                .iter()
                .find(|other| **other == consumed.source_service)
            {
                before.push(publisher);
            }
        }
        needs.push((declaration, before));
    }
    let mut ordered: Vec<&'a ServiceDeclaration> = Vec::with_capacity(needs.len());
    while !needs.is_empty() {
        let (ready, blocked): (Vec<_>, Vec<_>) = needs.into_iter().partition(|(_, before)| {
            before
                .iter()
                .all(|name| ordered.iter().any(|started| started.name == *name))
        });
        if ready.is_empty() {
            let names: Vec<&str> = blocked
                .iter()
                .map(|(declaration, _)| declaration.name)
                .collect();
            return Err(format!(
                "{} depend on each other in a circle (calls or consumed events)",
                names.join(", ")
            ));
        }
        ordered.extend(ready.into_iter().map(|(declaration, _)| declaration));
        needs = blocked;
    }
    Ok(ordered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared(name: &'static str, calls: &'static [&'static str]) -> ServiceDeclaration {
        ServiceDeclaration {
            name,
            summary: "",
            grpc_services: &[],
            calls,
            default_port: 0,
            settings: &[],
            check_settings: no_settings,
            grants: "",
            contract: ContractSource::AmongOthers(consumes_nothing),
            start: |_| unreachable!("not started here"),
        }
    }

    fn consumes_nothing(_: &[&'static str]) -> Result<ServiceContract, AdapterError> {
        Ok(ServiceContract {
            service: String::new(),
            publishes: Vec::new(),
            consumes: Vec::new(),
        })
    }

    /// Consumes the events of `a` and of a publisher outside the stack.
    fn consumes_from_a(_: &[&'static str]) -> Result<ServiceContract, AdapterError> {
        let consumed = |source: &str| govbus_bus::ConsumedEvents {
            consumer: format!("c-{source}"),
            source_service: source.to_owned(),
            event_types: vec!["x.happened.v1"],
        };
        Ok(ServiceContract {
            service: "c".to_owned(),
            publishes: Vec::new(),
            consumes: vec![consumed("a"), consumed("outside")],
        })
    }

    fn names(order: &[&ServiceDeclaration]) -> Vec<&'static str> {
        order.iter().map(|declaration| declaration.name).collect()
    }

    #[test]
    fn callees_and_publishers_start_first_in_declared_order_otherwise() {
        let (a, b, c) = (
            declared("a", &["b"]),
            declared("b", &[]),
            declared("c", &[]),
        );
        assert_eq!(
            names(&start_order(&[&a, &b, &c]).expect("ordered")),
            ["b", "c", "a"]
        );
        let consumer = ServiceDeclaration {
            contract: ContractSource::AmongOthers(consumes_from_a),
            ..declared("c", &[])
        };
        assert_eq!(
            names(&start_order(&[&consumer, &a, &b]).expect("ordered")),
            ["b", "a", "c"]
        );
    }

    #[test]
    fn circles_and_unknown_callees_are_refused() {
        let (a, b) = (declared("a", &["b"]), declared("b", &["a"]));
        let error = start_order(&[&a, &b]).expect_err("a circle");
        assert!(error.contains("a, b depend on each other"), "{error}");
        let lonely = declared("a", &["nobody"]);
        let error = start_order(&[&lonely]).expect_err("unknown");
        assert!(error.contains("calls nobody"), "{error}");
    }

    #[test]
    fn settings_parse_by_kind() {
        let setting = |kind, default| Setting {
            key: "k",
            kind,
            default,
            doc: "",
        };
        assert_eq!(
            setting(SettingKind::Duration, "10d").default_value(),
            Ok(toml::Value::String("10d".into()))
        );
        assert!(
            setting(SettingKind::Duration, "ten days")
                .default_value()
                .is_err()
        );
        assert_eq!(
            setting(SettingKind::Integer, "5").default_value(),
            Ok(toml::Value::Integer(5))
        );
        assert_eq!(
            setting(SettingKind::Bool, "on").default_value(),
            Ok(toml::Value::Boolean(true))
        );
    }
}
