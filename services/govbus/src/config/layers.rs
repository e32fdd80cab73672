//! Merging the layers and reporting which key, set where, is wrong.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use govbus_kit::declaration::{ServiceDeclaration, SettingKind, parse_value};
use govbus_kit::duration;

use super::{ServiceSection, StackConfig};
use crate::services::{SERVICES, declared};

/// The stack's own configuration keys; each service's come from its declaration
/// ([`service_keys`]). A test checks them against [`StackConfig`].
const STACK_KEYS: &[(&str, SettingKind, &str)] = &[
    ("data_dir", SettingKind::Text, "databases, NATS store, logs"),
    (
        "shutdown_timeout",
        SettingKind::Text,
        "how long a graceful stop may take",
    ),
    (
        "nats.url",
        SettingKind::Text,
        "an existing NATS server (comma-separated for a cluster); unset = embedded",
    ),
    (
        "nats.listen",
        SettingKind::Text,
        "the embedded server's client address (port 0 = any free port, printed at start)",
    ),
    (
        "nats.server_binary",
        SettingKind::Text,
        "the `nats-server` to run",
    ),
    (
        "nats.stream_replicas",
        SettingKind::Integer,
        "copies of each stream the services create; 3 or 5 with `nats.url` naming a cluster's \
         members",
    ),
    (
        "storage.keep_processed_events",
        SettingKind::Text,
        "processed event ids kept (at least 366d, how long streams keep events)",
    ),
    (
        "storage.keep_idempotency_keys",
        SettingKind::Text,
        "idempotency keys and their responses kept",
    ),
    (
        "storage.keep_published_events",
        SettingKind::Text,
        "published outbox rows kept",
    ),
    ("console.enabled", SettingKind::Bool, "serve the console"),
    (
        "console.listen",
        SettingKind::Text,
        "console, HTTP API and `/metrics`",
    ),
    (
        "gateway.enabled",
        SettingKind::Bool,
        "serve the REST gateway",
    ),
    (
        "gateway.listen",
        SettingKind::Text,
        "the REST gateway for applications",
    ),
    (
        "gateway.database_url",
        SettingKind::Text,
        "the registry of applications; unset = `sqlite://<data_dir>/gateway.db`",
    ),
    (
        "gateway.issuer",
        SettingKind::Text,
        "the `iss` of its tokens, the URL applications use; unset = `https://<gateway.listen>`",
    ),
    (
        "gateway.tls_certificate",
        SettingKind::Text,
        "its HTTPS certificate chain (PEM); unset = plain HTTP, on a loopback address only",
    ),
    (
        "gateway.tls_key",
        SettingKind::Text,
        "the key of `gateway.tls_certificate` (PEM)",
    ),
    (
        "gateway.token_lifetime",
        SettingKind::Text,
        "how long the tokens it issues are valid",
    ),
    (
        "gateway.report_interval",
        SettingKind::Text,
        "how often it reports the calls it made for applications and the SPLP link's use, as events",
    ),
    (
        "gateway.rate_limit",
        SettingKind::Integer,
        "requests per second per application (per gateway replica), unless registered otherwise",
    ),
    (
        "gateway.rate_burst",
        SettingKind::Integer,
        "requests per application at once after a quiet spell",
    ),
    (
        "gateway.identity_provider.issuer",
        SettingKind::Text,
        "the identity provider whose tokens applications may present (its `iss`); unset = none",
    ),
    (
        "gateway.identity_provider.audience",
        SettingKind::Text,
        "the `aud` its tokens for the gateway carry",
    ),
    (
        "gateway.identity_provider.client_claim",
        SettingKind::Text,
        "the claim naming the application; unset = `client_id`, else `azp`",
    ),
    (
        "gateway.identity_provider.leeway_seconds",
        SettingKind::Integer,
        "clock difference tolerated on its tokens' expiry; unset = 30",
    ),
    (
        "gateway.identity_provider.ca_file",
        SettingKind::Text,
        "PEM authorities trusted for its HTTPS besides the system's",
    ),
    (
        "gateway.splp.token_url",
        SettingKind::Text,
        "the national SPLP's OAuth2 token endpoint; unset = no SPLP link",
    ),
    (
        "gateway.splp.client_id",
        SettingKind::Text,
        "the instance's client id at SPLP",
    ),
    (
        "gateway.splp.client_secret_file",
        SettingKind::Text,
        "a file holding its client secret",
    ),
    (
        "gateway.splp.publisher_url",
        SettingKind::Text,
        "where the services' OpenAPI documents are published (`PUT …/apis/<name>`); unset = none",
    ),
    (
        "gateway.splp.gateway_url",
        SettingKind::Text,
        "SPLP's API gateway, where the services it offers are called; unset = none",
    ),
    (
        "gateway.splp.apis",
        SettingKind::Text,
        "services offered through SPLP that members may call at `/splp/<name>/…`: `name=/path`, comma-separated",
    ),
    (
        "gateway.splp.ca_file",
        SettingKind::Text,
        "PEM authorities trusted for SPLP's HTTPS besides the system's",
    ),
    (
        "instance.id",
        SettingKind::Text,
        "the instance's identifier in the directory (`INSTANCE/CLASS/MEMBER/APPLICATION`)",
    ),
    (
        "instance.member_class",
        SettingKind::Text,
        "the class of the instance's members, its agencies",
    ),
    (
        "instance.operator",
        SettingKind::Text,
        "the agency that runs the bus (an agency code)",
    ),
    (
        "instance.agencies",
        SettingKind::Text,
        "the instance's agencies, a `code,kind,name` CSV file; unset = Kota Malang's, shipped",
    ),
    (
        "telemetry.log",
        SettingKind::Text,
        "log filter (`RUST_LOG` syntax); `GOVBUS_LOG` works too",
    ),
    (
        "telemetry.log_format",
        SettingKind::Text,
        "`text` or `json`",
    ),
    (
        "telemetry.otlp_endpoint",
        SettingKind::Text,
        "OTLP/gRPC endpoint for traces",
    ),
    (
        "telemetry.keep_traces",
        SettingKind::Integer,
        "recent traces kept in memory for the console",
    ),
    (
        "tls.enabled",
        SettingKind::Bool,
        "every gRPC hop over mutual TLS",
    ),
    (
        "tls.dir",
        SettingKind::Text,
        "certificates (`ca.pem`, `<name>.pem`, `<name>-key.pem`); unset = `<data_dir>/certs`",
    ),
    (
        "tls.policy",
        SettingKind::Text,
        "who may call which gRPC method; unset = `<data_dir>/access-policy.toml`",
    ),
    (
        "audit.tsa_url",
        SettingKind::Text,
        "the RFC 3161 time-stamping authority that stamps every processing-log block; unset = none",
    ),
    (
        "audit.tsa_roots",
        SettingKind::Text,
        "certificate authorities (PEM) for an HTTPS `audit.tsa_url`, besides the system's",
    ),
    (
        "audit.tsa_certificate",
        SettingKind::Text,
        "the TSA's certificate or CA (PEM) whose tokens `govbus audit verify` believes",
    ),
];

/// A service's own key: every service has these two.
const LISTEN: &str = "listen";
/// See [`LISTEN`].
const DATABASE_URL: &str = "database_url";
/// See [`LISTEN`].
const AGENCY: &str = "agency";

/// Every key of `declaration`'s section, with its kind and meaning.
fn service_keys(declaration: &ServiceDeclaration) -> Vec<(String, SettingKind, String)> {
    let name = declaration.name;
    let mut keys = vec![
        (
            format!("{name}.{LISTEN}"),
            SettingKind::Text,
            format!("{name}'s gRPC address"),
        ),
        (
            format!("{name}.{DATABASE_URL}"),
            SettingKind::Text,
            format!("`sqlite://…` or `postgres://…`; unset = `sqlite://<data_dir>/{name}.db`"),
        ),
        (
            format!("{name}.{AGENCY}"),
            SettingKind::Text,
            format!(
                "the agency {name} belongs to in the directory; unset = {}",
                crate::services::seeded_agency(name).unwrap_or("`instance.operator`")
            ),
        ),
    ];
    for setting in declaration.settings {
        let kind = match setting.kind {
            // Durations are read as text and checked with the section.
            SettingKind::Duration => SettingKind::Text,
            other => other,
        };
        let doc = setting.doc.split_whitespace().collect::<Vec<_>>().join(" ");
        keys.push((format!("{name}.{}", setting.key), kind, doc));
    }
    keys
}

/// Every configuration key with its kind and meaning, the stack's first.
fn all_keys() -> Vec<(String, SettingKind, String)> {
    STACK_KEYS
        .iter()
        .map(|(key, kind, doc)| ((*key).to_owned(), *kind, (*doc).to_owned()))
        .chain(
            SERVICES
                .iter()
                .flat_map(|declaration| service_keys(declaration)),
        )
        .collect()
}

/// Every key as a Markdown table: its environment variable, its default and its meaning
/// (`govbus config keys`).
pub fn keys_table() -> String {
    let defaults = Layers::defaults();
    let mut leaves = Vec::new();
    flatten("", &defaults.table, &mut leaves);
    let default_of = |key: &str| {
        leaves.iter().find(|(leaf, _)| leaf == key).map_or_else(
            || "unset".to_owned(),
            |(_, value)| match value {
                toml::Value::String(text) if text.is_empty() => "unset".to_owned(),
                toml::Value::String(text) => format!("`{text}`"),
                toml::Value::Integer(number) => format!("`{number}`"),
                toml::Value::Boolean(yes) => format!("`{yes}`"),
                other => format!("`{other:?}`"),
            },
        )
    };
    let mut table =
        String::from("| Key | Environment variable | Default | Meaning |\n|---|---|---|---|\n");
    for (key, _, doc) in all_keys() {
        table.push_str(&format!(
            "| `{key}` | `{}` | {} | {doc} |\n",
            env_name(&key),
            default_of(&key)
        ));
    }
    table
}

/// Shorter environment names kept for what every govbus binary reads.
const ALIASES: &[(&str, &str)] = &[("GOVBUS_LOG", "telemetry.log")];

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// A configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("the default"),
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Env(name) => write!(f, "environment variable {name}"),
            Self::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    key: Option<String>,
    origin: Option<Origin>,
    problem: String,
}

impl ConfigError {
    fn of_key(key: &str, origin: Option<Origin>, problem: impl Into<String>) -> Self {
        Self {
            key: Some(key.to_owned()),
            origin,
            problem: problem.into(),
        }
    }

    fn general(origin: Option<Origin>, problem: impl Into<String>) -> Self {
        Self {
            key: None,
            origin,
            problem: problem.into(),
        }
    }

    /// The key at fault, e.g. `identity.listen`.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// Where the bad value came from.
    pub fn origin(&self) -> Option<&Origin> {
        self.origin.as_ref()
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid configuration: ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}")?;
            if let Some(origin) = &self.origin {
                write!(f, " (set by {origin})")?;
            }
            write!(f, ": {}", self.problem)
        } else {
            if let Some(origin) = &self.origin {
                write!(f, "{origin}: ")?;
            }
            f.write_str(&self.problem)
        }
    }
}

/// The configuration being assembled, layer by layer.
///
/// ```
/// use govbus::config::{Layers, Origin};
///
/// let config = Layers::defaults()
///     .set("identity.listen", "127.0.0.1:6001", Origin::Flag("--set".into()))?
///     .build()?;
/// assert_eq!(config.service("identity").map(|identity| identity.listen.port()), Some(6001));
///
/// let error = Layers::defaults()
///     .set("console.listen", "eight thousand", Origin::Env("GOVBUS_CONSOLE_LISTEN".into()))?
///     .build()
///     .unwrap_err();
/// assert_eq!(error.key(), Some("console.listen"));
/// # Ok::<(), govbus::config::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Layers {
    table: toml::Table,
    origins: BTreeMap<String, Origin>,
}

impl Layers {
    /// The built-in defaults.
    pub fn defaults() -> Self {
        let defaults = StackConfig::default();
        let mut table = toml::Table::try_from(&defaults).unwrap_or_default();
        for section in &defaults.services {
            table.insert(
                section.name.to_owned(),
                toml::Value::Table(section.to_table()),
            );
        }
        let mut origins = BTreeMap::new();
        for (key, _, _) in all_keys() {
            origins.insert(key, Origin::Default);
        }
        Self { table, origins }
    }

    /// Adds a TOML file.
    pub fn file(mut self, path: &Path) -> Result<Self, ConfigError> {
        let origin = Origin::File(path.to_owned());
        let text = std::fs::read_to_string(path).map_err(|error| {
            ConfigError::general(Some(origin.clone()), format!("cannot read it: {error}"))
        })?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|error| ConfigError::general(Some(origin.clone()), error.to_string()))?;
        let mut leaves = Vec::new();
        flatten("", &table, &mut leaves);
        for (key, value) in leaves {
            if kind_of(&key).is_none() {
                return Err(ConfigError::of_key(
                    &key,
                    Some(origin),
                    format!("unknown key; known keys are {}", known_keys()),
                ));
            }
            insert(&mut self.table, &key, value);
            self.origins.insert(key, origin.clone());
        }
        Ok(self)
    }

    /// Adds every `GOVBUS_<KEY>` variable among `vars` (other variables are ignored).
    pub fn env(
        mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let keys = all_keys();
        let by_name: BTreeMap<String, &str> = keys
            .iter()
            .map(|(key, _, _)| (env_name(key), key.as_str()))
            .collect();
        let mut canonical = Vec::new();
        for (name, value) in vars {
            if let Some(key) = by_name.get(&name) {
                canonical.push((*key, name, value));
            } else if let Some((_, key)) = ALIASES.iter().find(|(alias, _)| *alias == name) {
                // Aliases first, so the canonical name wins when both are set.
                self = self.set(key, &value, Origin::Env(name.clone()))?;
            }
        }
        for (key, name, value) in canonical {
            self = self.set(key, &value, Origin::Env(name))?;
        }
        Ok(self)
    }

    /// Sets one key from text (an environment variable or a flag).
    pub fn set(mut self, key: &str, value: &str, origin: Origin) -> Result<Self, ConfigError> {
        let kind = kind_of(key).ok_or_else(|| {
            ConfigError::of_key(
                key,
                Some(origin.clone()),
                format!("unknown key; known keys are {}", known_keys()),
            )
        })?;
        let parsed = parse_value(kind, value)
            .map_err(|problem| ConfigError::of_key(key, Some(origin.clone()), problem))?;
        insert(&mut self.table, key, parsed);
        self.origins.insert(key.to_owned(), origin);
        Ok(self)
    }

    /// The typed, validated configuration.
    pub fn build(self) -> Result<StackConfig, ConfigError> {
        let mut stack = self.table.clone();
        let mut services = Vec::with_capacity(SERVICES.len());
        for declaration in SERVICES {
            let table = match stack.remove(declaration.name) {
                Some(toml::Value::Table(table)) => table,
                _ => toml::Table::new(),
            };
            services.push(self.section(declaration, table)?);
        }
        let mut config: StackConfig = serde_path_to_error::deserialize(toml::Value::Table(stack))
            .map_err(|error| {
            let key = error.path().to_string();
            let origin = self.origins.get(&key).cloned();
            ConfigError::of_key(&key, origin, error.into_inner().to_string())
        })?;
        config.services = services;
        self.validate(&config)?;
        Ok(config)
    }

    /// `declaration`'s section from its table (which holds only its keys: layers refuse others).
    fn section(
        &self,
        declaration: &ServiceDeclaration,
        mut table: toml::Table,
    ) -> Result<ServiceSection, ConfigError> {
        let key = |name: &str| format!("{}.{name}", declaration.name);
        let text = |value: toml::Value, name: &str| match value {
            toml::Value::String(text) => Ok(text),
            _ => Err(self.problem(&key(name), "must be text")),
        };
        let defaults = ServiceSection::defaults_of(declaration);
        let listen = match table.remove(LISTEN) {
            Some(value) => text(value, LISTEN)?
                .parse::<SocketAddr>()
                .map_err(|error| self.problem(&key(LISTEN), error.to_string()))?,
            None => defaults.listen,
        };
        let database_url = table
            .remove(DATABASE_URL)
            .map(|value| text(value, DATABASE_URL))
            .transpose()?;
        let agency = table
            .remove(AGENCY)
            .map(|value| text(value, AGENCY))
            .transpose()?
            .or(defaults.agency);
        let mut settings = defaults.settings;
        settings.extend(table);
        Ok(ServiceSection {
            name: declaration.name,
            listen,
            database_url,
            agency,
            settings,
        })
    }

    fn validate_gateway(&self, config: &StackConfig) -> Result<(), ConfigError> {
        let gateway = &config.gateway;
        if gateway.token_lifetime < Duration::from_secs(10)
            || gateway.token_lifetime > Duration::from_secs(3600)
        {
            return Err(self.problem(
                "gateway.token_lifetime",
                "must be between 10s and 1h: tokens are short-lived, revocation reaches them only when they expire elsewhere",
            ));
        }
        if gateway.report_interval.is_zero() {
            return Err(self.problem("gateway.report_interval", "must be longer than 0s"));
        }
        for (key, value) in [
            ("gateway.rate_limit", gateway.rate_limit),
            ("gateway.rate_burst", gateway.rate_burst),
        ] {
            if value == 0 {
                return Err(self.problem(key, "must be at least 1"));
            }
        }
        if let Some(url) = &gateway.database_url
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://"))
        {
            return Err(self.problem(
                "gateway.database_url",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        match (&gateway.tls_certificate, &gateway.tls_key) {
            (Some(_), Some(_)) => {}
            (Some(_), None) => {
                return Err(self.problem("gateway.tls_certificate", "needs gateway.tls_key too"));
            }
            (None, Some(_)) => {
                return Err(self.problem("gateway.tls_key", "needs gateway.tls_certificate too"));
            }
            (None, None) if gateway.enabled && !gateway.listen.ip().is_loopback() => {
                return Err(self.problem(
                    "gateway.listen",
                    format!(
                        "{} is beyond loopback, where tokens and personal data would cross the network in clear: set gateway.tls_certificate and gateway.tls_key",
                        gateway.listen
                    ),
                ));
            }
            (None, None) => {}
        }
        if let Some(issuer) = &gateway.issuer
            && !(issuer.starts_with("https://") || issuer.starts_with("http://"))
        {
            return Err(self.problem("gateway.issuer", "must be an http(s) URL"));
        }
        if let Some(splp) = &gateway.splp {
            let key = |name: &str| format!("gateway.splp.{name}");
            for (name, url) in [
                ("token_url", Some(&splp.token_url)),
                ("publisher_url", splp.publisher_url.as_ref()),
                ("gateway_url", splp.gateway_url.as_ref()),
            ] {
                if let Some(url) = url {
                    govbus_kit::outbound::HttpTarget::check_url(url)
                        .map_err(|error| self.problem(&key(name), error.to_string()))?;
                }
            }
            if splp.client_id.trim().is_empty() {
                return Err(
                    self.problem(&key("client_id"), "must name the instance's client at SPLP")
                );
            }
            if let Some(apis) = &splp.apis {
                govbus_gateway::splp::parse_apis(apis)
                    .map_err(|problem| self.problem(&key("apis"), problem))?;
            }
            if splp.apis.is_some() && splp.gateway_url.is_none() {
                return Err(self.problem(
                    &key("apis"),
                    "needs gateway.splp.gateway_url, where they are called",
                ));
            }
        }
        if let Some(provider) = &gateway.identity_provider {
            govbus_kit::outbound::HttpTarget::check_url(&provider.issuer).map_err(|error| {
                self.problem("gateway.identity_provider.issuer", error.to_string())
            })?;
            if provider.audience.trim().is_empty() {
                return Err(self.problem(
                    "gateway.identity_provider.audience",
                    "must name the audience its tokens for the gateway carry",
                ));
            }
        }
        Ok(())
    }

    fn validate_instance(&self, config: &StackConfig) -> Result<(), ConfigError> {
        let instance = &config.instance;
        for (key, value) in [
            ("instance.id", &instance.id),
            ("instance.member_class", &instance.member_class),
        ] {
            if !govbus_gateway::directory::is_identifier_part(value) {
                return Err(
                    self.problem(key, "must be letters, digits, '-', '_' or '.' (64 at most)")
                );
            }
        }
        let agencies = instance
            .agencies()
            .map_err(|error| self.problem("instance.agencies", error.to_string()))?;
        let unknown = |code: &str| {
            format!(
                "{code:?} is not one of the instance's agencies ({})",
                agencies
                    .iter()
                    .map(|agency| agency.code.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        if agencies.get(&instance.operator).is_none() {
            return Err(self.problem("instance.operator", unknown(&instance.operator)));
        }
        for section in &config.services {
            if let Some(agency) = &section.agency
                && agencies.get(agency).is_none()
            {
                return Err(self.problem(&format!("{}.{AGENCY}", section.name), unknown(agency)));
            }
        }
        Ok(())
    }

    fn problem(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError::of_key(key, self.origins.get(key).cloned(), problem)
    }

    fn validate(&self, config: &StackConfig) -> Result<(), ConfigError> {
        if config.data_dir.as_os_str().is_empty() {
            return Err(self.problem("data_dir", "must name a folder"));
        }
        if config.shutdown_timeout.is_zero() {
            return Err(self.problem("shutdown_timeout", "must be longer than zero"));
        }
        if let Some(url) = &config.nats.url {
            for server in url.split(',') {
                check_nats_url(server.trim())
                    .map_err(|problem| self.problem("nats.url", problem))?;
            }
        }
        match (config.nats.stream_replicas, &config.nats.url) {
            (1, _) | (3 | 5, Some(_)) => {}
            (3 | 5, None) => {
                return Err(self.problem(
                    "nats.stream_replicas",
                    "needs a cluster: set nats.url to its members (the embedded server is one \
                     server)",
                ));
            }
            _ => return Err(self.problem("nats.stream_replicas", "must be 1, 3 or 5")),
        }
        self.validate_instance(config)?;
        for (declaration, section) in SERVICES.iter().zip(&config.services) {
            (declaration.check_settings)(&section.settings).map_err(|problem| {
                self.problem(
                    &format!("{}.{}", declaration.name, problem.key),
                    problem.problem,
                )
            })?;
            if let Some(url) = &section.database_url
                && !(url.starts_with("sqlite:")
                    || url.starts_with("postgres://")
                    || url.starts_with("postgresql://"))
            {
                return Err(self.problem(
                    &format!("{}.{DATABASE_URL}", section.name),
                    "must start with sqlite:, postgres:// or postgresql://",
                ));
            }
        }
        let stream_age = govbus_bus::StreamSettings::default()
            .max_age
            .unwrap_or_default();
        if config.storage.keep_processed_events < stream_age {
            return Err(self.problem(
                "storage.keep_processed_events",
                format!(
                    "must be at least {}, as long as the streams keep events: a consumer reset to \
                     the start of its stream would otherwise apply events again",
                    duration::format(stream_age)
                ),
            ));
        }
        for (key, window) in [
            (
                "storage.keep_idempotency_keys",
                config.storage.keep_idempotency_keys,
            ),
            (
                "storage.keep_published_events",
                config.storage.keep_published_events,
            ),
        ] {
            if window.is_zero() {
                return Err(self.problem(key, "must be longer than zero"));
            }
        }
        if let Some(endpoint) = &config.telemetry.otlp_endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(self.problem(
                "telemetry.otlp_endpoint",
                "must be an http:// or https:// URL, e.g. http://127.0.0.1:4317",
            ));
        }
        self.validate_gateway(config)?;
        if !(1..=1_000_000).contains(&config.telemetry.keep_traces) {
            return Err(self.problem("telemetry.keep_traces", "must be between 1 and 1000000"));
        }
        tracing_subscriber::EnvFilter::try_new(&config.telemetry.log)
            .map_err(|error| self.problem("telemetry.log", error.to_string()))?;
        let mut listens: Vec<(String, SocketAddr)> = config
            .services
            .iter()
            .map(|section| (format!("{}.{LISTEN}", section.name), section.listen))
            .collect();
        if config.console.enabled {
            listens.push(("console.listen".to_owned(), config.console.listen));
        }
        if config.nats.url.is_none() {
            listens.push(("nats.listen".to_owned(), config.nats.listen));
        }
        if config.gateway.enabled {
            listens.push(("gateway.listen".to_owned(), config.gateway.listen));
        }
        let mut seen = HashSet::new();
        for (key, address) in &listens {
            if address.port() != 0 && !seen.insert(*address) {
                return Err(self.problem(
                    key,
                    format!("{address} is also used by another part of the stack"),
                ));
            }
        }
        Ok(())
    }
}

/// `identity.listen` → `GOVBUS_IDENTITY_LISTEN`.
pub(crate) fn env_name(key: &str) -> String {
    format!("GOVBUS_{}", key.replace('.', "_").to_ascii_uppercase())
}

fn kind_of(key: &str) -> Option<SettingKind> {
    if let Some((_, kind, _)) = STACK_KEYS.iter().find(|(known, _, _)| *known == key) {
        return Some(*kind);
    }
    let (service, _) = key.split_once('.')?;
    service_keys(declared(service)?)
        .into_iter()
        .find(|(known, _, _)| known == key)
        .map(|(_, kind, _)| kind)
}

fn known_keys() -> String {
    all_keys()
        .into_iter()
        .map(|(key, _, _)| key)
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_nats_url(server: &str) -> Result<(), String> {
    let rest = ["nats://", "tls://", "ws://", "wss://"]
        .iter()
        .find_map(|scheme| server.strip_prefix(scheme))
        .unwrap_or(server);
    let host_port = rest.rsplit('@').next().unwrap_or(rest);
    let valid = host_port.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port != 0)
    });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{server:?} is not a server address like nats://127.0.0.1:4222"
        ))
    }
}

fn flatten(prefix: &str, table: &toml::Table, leaves: &mut Vec<(String, toml::Value)>) {
    for (name, value) in table {
        let key = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            toml::Value::Table(inner) => flatten(&key, inner, leaves),
            other => leaves.push((key, other.clone())),
        }
    }
}

fn insert(table: &mut toml::Table, key: &str, value: toml::Value) {
    match key.split_once('.') {
        None => {
            table.insert(key.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = table
                .entry(head.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if !entry.is_table() {
                *entry = toml::Value::Table(toml::Table::new());
            }
            if let toml::Value::Table(inner) = entry {
                insert(inner, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn every_key_of_the_configuration_is_known() {
        let mut full = StackConfig::default();
        full.nats.url = Some("nats://127.0.0.1:4222".into());
        full.nats.server_binary = Some("/usr/bin/nats-server".into());
        for service in &mut full.services {
            service.database_url = Some("sqlite://x.db".into());
            service.agency = Some("diskominfo".into());
        }
        full.telemetry.otlp_endpoint = Some("http://127.0.0.1:4317".into());
        full.tls.dir = Some("/etc/govbus/certs".into());
        full.instance.agencies = Some("/etc/govbus/agencies.csv".into());
        full.tls.policy = Some("/etc/govbus/access-policy.toml".into());
        full.audit.tsa_url = Some("http://tsa.example.go.id/".into());
        full.audit.tsa_roots = Some("/etc/govbus/tsa-roots.pem".into());
        full.audit.tsa_certificate = Some("/etc/govbus/tsa.pem".into());
        full.gateway.database_url = Some("sqlite://gateway.db".into());
        full.gateway.issuer = Some("https://api.example.go.id".into());
        full.gateway.tls_certificate = Some("/etc/govbus/gateway.pem".into());
        full.gateway.tls_key = Some("/etc/govbus/gateway-key.pem".into());
        full.gateway.splp = Some(govbus_gateway::splp::SplpSettings {
            token_url: "https://splp.example.go.id/oauth2/token".into(),
            client_id: "ID-3573".into(),
            client_secret_file: "/etc/govbus/splp-secret".into(),
            publisher_url: Some("https://splp.example.go.id/publisher".into()),
            gateway_url: Some("https://splp.example.go.id/gateway".into()),
            apis: Some("dukcapil-nik=/dukcapil/nik/v1".into()),
            ca_file: Some("/etc/govbus/splp-ca.pem".into()),
        });
        full.gateway.identity_provider = Some(govbus_gateway::providers::ProviderSettings {
            issuer: "https://sso.example.go.id/realms/apps".into(),
            audience: "govbus".into(),
            client_claim: Some("azp".into()),
            leeway_seconds: Some(30),
            ca_file: Some("/etc/govbus/sso-ca.pem".into()),
        });
        let mut table = toml::Table::try_from(&full).expect("serialisable");
        for section in &full.services {
            table.insert(
                section.name.to_owned(),
                toml::Value::Table(section.to_table()),
            );
        }
        let mut leaves = Vec::new();
        flatten("", &table, &mut leaves);
        let mut serialised: Vec<String> = leaves.into_iter().map(|(key, _)| key).collect();
        serialised.sort();
        let mut known: Vec<String> = all_keys().into_iter().map(|(key, _, _)| key).collect();
        known.sort();
        assert_eq!(serialised, known);
    }

    #[test]
    fn the_key_table_lists_every_key_with_its_variable_and_default() {
        let table = keys_table();
        for (key, _, _) in all_keys() {
            assert!(
                table.contains(&format!("| `{key}` | `{}` |", env_name(&key))),
                "{key}"
            );
        }
        assert!(
            table.contains(
                "| `licensing.approval_working_days` | `GOVBUS_LICENSING_APPROVAL_WORKING_DAYS` | `10` |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| `identity.listen` | `GOVBUS_IDENTITY_LISTEN` | `127.0.0.1:50051` |"),
            "{table}"
        );
        assert!(
            table.contains("| `nats.url` | `GOVBUS_NATS_URL` | unset |"),
            "{table}"
        );
    }

    #[test]
    fn a_deployment_names_its_own_agencies() {
        let set = |layers: Layers, key: &str, value: &str| {
            layers
                .set(key, value, Origin::Flag("--set".into()))
                .expect("text")
        };
        let missing = set(
            Layers::defaults(),
            "instance.agencies",
            "/nonexistent/agencies.csv",
        )
        .build()
        .expect_err("no such file");
        assert_eq!(missing.key(), Some("instance.agencies"), "{missing}");

        let mut list = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(
            list,
            "# source: Perda Kabupaten Contoh Nomor 1 Tahun 2024\ncode,kind,name\n\
             diskominfo,dinas,Dinas Komunikasi dan Informatika\n\
             disdukcapil,dinas,Dinas Kependudukan dan Pencatatan Sipil"
        )
        .expect("write");
        let path = list.path().to_str().expect("utf-8 path");
        // Kota Malang's seeded agencies of the services are not in this list.
        let seeded = set(Layers::defaults(), "instance.agencies", path)
            .build()
            .expect_err("dispendukcapil is Kota Malang's");
        assert_eq!(seeded.key(), Some("identity.agency"), "{seeded}");
        assert!(seeded.to_string().contains("disdukcapil"), "{seeded}");
        let mut layers = set(Layers::defaults(), "instance.agencies", path);
        for (service, agency) in [
            ("identity", "disdukcapil"),
            ("welfare", "diskominfo"),
            ("licensing", "diskominfo"),
        ] {
            layers = set(layers, &format!("{service}.agency"), agency);
        }
        let config = layers
            .build()
            .expect("every service in an agency of the list");
        let agencies = config.instance.agencies().expect("read");
        assert_eq!(agencies.len(), 2);
        assert_eq!(
            config
                .instance
                .members(&config.services)
                .get("identity")
                .map(String::as_str),
            Some("disdukcapil")
        );
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(Layers::defaults().build(), Ok(StackConfig::default()));
    }

    #[test]
    fn later_layers_override_earlier_ones() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(
            file,
            "data_dir = \"/srv/govbus\"\n[identity]\nlisten = \"127.0.0.1:7001\"\n[welfare]\nlisten = \"127.0.0.1:7002\""
        )
        .expect("write");
        let config = Layers::defaults()
            .file(file.path())
            .expect("file")
            .env([
                (
                    "GOVBUS_WELFARE_LISTEN".to_owned(),
                    "127.0.0.1:8002".to_owned(),
                ),
                ("GOVBUS_TELEMETRY_KEEP_TRACES".to_owned(), "50".to_owned()),
                ("GOVBUS_CONSOLE_ENABLED".to_owned(), "false".to_owned()),
                ("UNRELATED".to_owned(), "x".to_owned()),
            ])
            .expect("env")
            .set(
                "welfare.listen",
                "127.0.0.1:9002",
                Origin::Flag("--set".into()),
            )
            .expect("flag")
            .build()
            .expect("valid");
        assert_eq!(config.data_dir, PathBuf::from("/srv/govbus"));
        let port = |service: &str| config.service(service).map(|section| section.listen.port());
        assert_eq!(port("identity"), Some(7001));
        assert_eq!(port("welfare"), Some(9002));
        assert_eq!(config.telemetry.keep_traces, 50);
        assert!(!config.console.enabled);
        assert_eq!(port("evaluation"), Some(50054));
    }

    #[test]
    fn govbus_log_sets_the_log_filter_unless_the_full_name_is_set() {
        let alias_only = Layers::defaults()
            .env([("GOVBUS_LOG".to_owned(), "debug".to_owned())])
            .expect("env")
            .build()
            .expect("valid");
        assert_eq!(alias_only.telemetry.log, "debug");
        let both = Layers::defaults()
            .env([
                ("GOVBUS_TELEMETRY_LOG".to_owned(), "warn".to_owned()),
                ("GOVBUS_LOG".to_owned(), "debug".to_owned()),
            ])
            .expect("env")
            .build()
            .expect("valid");
        assert_eq!(both.telemetry.log, "warn");
    }

    #[test]
    fn stream_replicas_need_a_cluster() {
        let replicated = |replicas: &str, url: Option<&str>| {
            let mut env = vec![(
                "GOVBUS_NATS_STREAM_REPLICAS".to_owned(),
                replicas.to_owned(),
            )];
            if let Some(url) = url {
                env.push(("GOVBUS_NATS_URL".to_owned(), url.to_owned()));
            }
            Layers::defaults().env(env).expect("env").build()
        };
        let cluster = "nats://10.0.0.1:4222,nats://10.0.0.2:4222,nats://10.0.0.3:4222";
        let config = replicated("3", Some(cluster)).expect("a cluster takes R3");
        assert_eq!(config.nats.stream_replicas, 3);
        let error = replicated("3", None).expect_err("the embedded server is one server");
        assert_eq!(error.key(), Some("nats.stream_replicas"));
        let error = replicated("2", Some(cluster)).expect_err("even replica counts");
        assert!(error.to_string().contains("1, 3 or 5"), "{error}");
        assert_eq!(
            Layers::defaults()
                .build()
                .expect("defaults")
                .nats
                .stream_replicas,
            1
        );
    }

    #[test]
    fn errors_name_the_key_and_where_it_was_set() {
        let error = Layers::defaults()
            .env([("GOVBUS_IDENTITY_LISTEN".to_owned(), "localhost".to_owned())])
            .expect("env")
            .build()
            .expect_err("not an address");
        assert_eq!(error.key(), Some("identity.listen"));
        assert_eq!(
            error.origin(),
            Some(&Origin::Env("GOVBUS_IDENTITY_LISTEN".into()))
        );
        assert!(
            error.to_string().contains("GOVBUS_IDENTITY_LISTEN"),
            "{error}"
        );

        let error = Layers::defaults()
            .env([("GOVBUS_TELEMETRY_KEEP_TRACES".to_owned(), "many".to_owned())])
            .expect_err("not a number");
        assert_eq!(error.key(), Some("telemetry.keep_traces"));

        let error = Layers::defaults()
            .set(
                "licensing.approval_working_days",
                "0",
                Origin::Flag("--set".into()),
            )
            .expect("a number")
            .build()
            .expect_err("no working days");
        assert_eq!(error.key(), Some("licensing.approval_working_days"));
        assert!(error.to_string().contains("1 to 365"), "{error}");

        let error = Layers::defaults()
            .set(
                "licensing.approval_working_days",
                "ten",
                Origin::Flag("--set".into()),
            )
            .expect_err("not a number");
        assert_eq!(error.key(), Some("licensing.approval_working_days"));
        assert!(error.to_string().contains("ten"), "{error}");
    }

    #[test]
    fn an_unknown_key_in_a_file_is_refused_by_name() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(file, "[identity]\nlisen = \"127.0.0.1:7001\"").expect("write");
        let error = Layers::defaults()
            .file(file.path())
            .expect_err("unknown key");
        assert_eq!(error.key(), Some("identity.lisen"));
        assert_eq!(error.origin(), Some(&Origin::File(file.path().to_owned())));
    }

    #[test]
    fn a_wrongly_typed_file_value_is_refused_by_name() {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        writeln!(file, "[telemetry]\nkeep_traces = \"lots\"").expect("write");
        let error = Layers::defaults()
            .file(file.path())
            .expect("parses")
            .build()
            .expect_err("wrong type");
        assert_eq!(error.key(), Some("telemetry.keep_traces"));
        assert_eq!(error.origin(), Some(&Origin::File(file.path().to_owned())));
    }

    #[test]
    fn clashing_addresses_and_bad_urls_are_refused() {
        let error = Layers::defaults()
            .set(
                "welfare.listen",
                "127.0.0.1:50051",
                Origin::Flag("--set".into()),
            )
            .expect("text")
            .build()
            .expect_err("clash");
        assert_eq!(error.key(), Some("welfare.listen"));
        for (key, value) in [
            ("nats.url", "nats://"),
            ("identity.database_url", "mysql://x"),
            ("telemetry.otlp_endpoint", "collector:4317"),
            ("telemetry.log", "info,=="),
            ("shutdown_timeout", "0s"),
            // Plain HTTP beyond loopback, half a TLS pair, tokens too long-lived.
            ("gateway.listen", "0.0.0.0:8480"),
            ("gateway.tls_key", "/etc/govbus/gateway-key.pem"),
            ("gateway.token_lifetime", "1d"),
            ("gateway.rate_limit", "0"),
            // The directory's names: not an identifier, not an agency of the instance.
            ("instance.id", "ID 3573"),
            ("instance.member_class", "GOV/X"),
            ("instance.operator", "kominfo"),
            ("identity.agency", "dukcapil"),
        ] {
            let error = Layers::defaults()
                .set(key, value, Origin::Flag("--set".into()))
                .expect("text")
                .build()
                .expect_err(key);
            assert_eq!(error.key(), Some(key), "{error}");
        }
        // An identity provider in clear beyond loopback; one without its audience.
        let error = Layers::defaults()
            .set(
                "gateway.identity_provider.issuer",
                "http://sso.example.go.id",
                Origin::Flag("--set".into()),
            )
            .and_then(|layers| {
                layers.set(
                    "gateway.identity_provider.audience",
                    "govbus",
                    Origin::Flag("--set".into()),
                )
            })
            .expect("text")
            .build()
            .expect_err("plain http");
        assert_eq!(
            error.key(),
            Some("gateway.identity_provider.issuer"),
            "{error}"
        );
        let error = Layers::defaults()
            .set(
                "gateway.identity_provider.issuer",
                "https://sso.example.go.id",
                Origin::Flag("--set".into()),
            )
            .expect("text")
            .build()
            .expect_err("no audience");
        assert!(error.to_string().contains("audience"), "{error}");
        // Beyond loopback with its certificate, it is fine.
        Layers::defaults()
            .set(
                "gateway.listen",
                "0.0.0.0:8480",
                Origin::Flag("--set".into()),
            )
            .and_then(|layers| {
                layers.set(
                    "gateway.tls_certificate",
                    "/etc/govbus/gateway.pem",
                    Origin::Flag("--set".into()),
                )
            })
            .and_then(|layers| {
                layers.set(
                    "gateway.tls_key",
                    "/etc/govbus/gateway-key.pem",
                    Origin::Flag("--set".into()),
                )
            })
            .expect("text")
            .build()
            .expect("valid");
    }
}
