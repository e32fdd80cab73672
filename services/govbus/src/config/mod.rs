//! The stack's configuration: typed, layered and validated before anything starts.
//!
//! Layers, each overriding the one before: built-in defaults, a TOML file (`--config`, or
//! `govbus.toml` in the working folder when present), `GOVBUS_*` environment variables, then
//! command-line flags. Every key has one environment variable: the key's path in capitals with
//! `_` for `.`, e.g. `identity.listen` ↔ `GOVBUS_IDENTITY_LISTEN`. An error names the bad key
//! and the layer that set it.
//!
//! Each service has a section of its own, named after it: `listen`, `database_url` and the
//! settings its declaration lists ([`crate::services`]).

mod layers;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use govbus_civil::agencies::{Agencies, AgenciesFileError};
use govbus_kit::declaration::{Section, ServiceDeclaration};
use govbus_kit::telemetry::LogFormat;
use serde::{Deserialize, Serialize};

pub use layers::{ConfigError, Layers, Origin, keys_table};

/// The whole stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackConfig {
    /// Where the databases, the embedded NATS store and logs live.
    pub data_dir: PathBuf,
    /// How long a graceful shutdown may take before what remains is stopped.
    #[serde(with = "govbus_kit::duration")]
    pub shutdown_timeout: Duration,
    /// The NATS server.
    pub nats: NatsConfig,
    /// What every service's database keeps, and for how long.
    #[serde(default)]
    pub storage: StorageConfig,
    /// The web console (and the operators' HTTP API and `/metrics`).
    pub console: ConsoleConfig,
    /// The REST gateway for applications.
    pub gateway: GatewayConfig,
    /// How the directory names the instance and its members.
    pub instance: InstanceConfig,
    /// Logs, traces and metrics.
    pub telemetry: TelemetryConfig,
    /// Mutual TLS between the services.
    pub tls: TlsConfig,
    /// The processing log's trusted time.
    #[serde(default)]
    pub audit: AuditConfig,
    /// Each declared service's section, in the order of [`crate::services::SERVICES`]. In a
    /// file, each is a table named after its service.
    #[serde(skip)]
    pub services: Vec<ServiceSection>,
}

/// A service's section: its address, its database and its own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSection {
    /// The service.
    pub name: &'static str,
    /// Where its gRPC API listens.
    pub listen: SocketAddr,
    /// `sqlite://…` or `postgres://…`. Unset: `sqlite://<data_dir>/<service>.db`.
    pub database_url: Option<String>,
    /// The agency it belongs to in the directory. Unset: `instance.operator`.
    pub agency: Option<String>,
    /// The settings its declaration lists, defaults filled in.
    pub settings: Section,
}

impl ServiceSection {
    /// The section of `declaration` with its defaults.
    pub fn defaults_of(declaration: &ServiceDeclaration) -> Self {
        Self {
            name: declaration.name,
            listen: SocketAddr::from(([127, 0, 0, 1], declaration.default_port)),
            database_url: None,
            agency: crate::services::seeded_agency(declaration.name).map(str::to_owned),
            settings: declaration
                .settings
                .iter()
                .filter_map(|setting| {
                    // Defaults are checked by the services' list's test.
                    let value = setting.default_value().ok()?;
                    Some((setting.key.to_owned(), value))
                })
                .collect(),
        }
    }

    /// As a TOML table, as a file would hold it.
    pub fn to_table(&self) -> toml::Table {
        let mut table = self.settings.clone();
        table.insert(
            "listen".to_owned(),
            toml::Value::String(self.listen.to_string()),
        );
        if let Some(url) = &self.database_url {
            table.insert("database_url".to_owned(), toml::Value::String(url.clone()));
        }
        if let Some(agency) = &self.agency {
            table.insert("agency".to_owned(), toml::Value::String(agency.clone()));
        }
        table
    }
}

/// The processing log's trusted time: an RFC 3161 time-stamping authority (TSA) stamps every
/// block, and `govbus audit verify` checks the tokens against its certificate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The TSA's URL (`application/timestamp-query` over HTTP or HTTPS). Unset: blocks carry
    /// the services' clocks only, and verification says they are untimestamped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsa_url: Option<String>,
    /// Certificate authorities (PEM) for an HTTPS `tsa_url` besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsa_roots: Option<PathBuf>,
    /// The TSA's certificate or its CA (PEM), whose tokens verification believes. Unset:
    /// tokens are reported as not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tsa_certificate: Option<PathBuf>,
}

impl AuditConfig {
    /// The TSA client, when one is configured.
    pub fn tsa(&self) -> Result<Option<govbus_kit::audit::Tsa>, String> {
        let Some(url) = &self.tsa_url else {
            return Ok(None);
        };
        let roots = match &self.tsa_roots {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|error| format!("audit.tsa_roots {}: {error}", path.display()))?,
            ),
            None => None,
        };
        govbus_kit::audit::Tsa::new(url, roots)
            .map(Some)
            .map_err(|error| format!("audit.tsa_url: {error}"))
    }

    /// The TSA certificates verification believes, when configured.
    pub fn tsa_trust(&self) -> Result<Option<govbus_kit::audit::TsaTrust>, String> {
        let Some(path) = &self.tsa_certificate else {
            return Ok(None);
        };
        let pem = std::fs::read(path)
            .map_err(|error| format!("audit.tsa_certificate {}: {error}", path.display()))?;
        govbus_kit::audit::TsaTrust::from_pem(&pem)
            .map(Some)
            .map_err(|error| format!("audit.tsa_certificate {}: {error}", path.display()))
    }
}

/// Mutual TLS between the services (and for the console's and operators' gRPC calls).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Every gRPC hop over mutual TLS. Turn off only for debugging with plain-text tools.
    pub enabled: bool,
    /// The certificates (`ca.pem`, `<name>.pem`, `<name>-key.pem`). Unset: `<data_dir>/certs`,
    /// where a development CA and certificates are made at the first start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// The access policy (who may call which method). Unset: `<data_dir>/access-policy.toml`,
    /// written from the shipped policy at the first start. Reloaded when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PathBuf>,
}

/// NATS: an embedded server, or an existing one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// An existing server (JetStream on, 2.10 or later), e.g. `nats://10.0.0.5:4222`; several
    /// separated by commas. Unset: govbus starts its own in `data_dir/nats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Where the embedded server listens; port 0 takes a free port.
    pub listen: SocketAddr,
    /// The `nats-server` program for the embedded server. Unset: `GOVBUS_NATS_SERVER`, the
    /// govbus tools folder (`scripts/install-nats-server`), then `PATH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_binary: Option<PathBuf>,
    /// Copies of each stream the services create: 1, or 3 or 5 on an existing cluster (`url`
    /// listing its members). The embedded server is a single server, so 1.
    #[serde(default = "one_replica")]
    pub stream_replicas: usize,
}

fn one_replica() -> usize {
    1
}

/// How long every service keeps what guards against repeats (see docs/operating.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Ids of processed events (the inbox): longer than the streams keep events (366 days),
    /// or a redelivered event may be applied again.
    #[serde(with = "govbus_kit::duration")]
    pub keep_processed_events: Duration,
    /// Idempotency keys and their stored responses: longer than any client retries.
    #[serde(with = "govbus_kit::duration")]
    pub keep_idempotency_keys: Duration,
    /// Outbox rows already published.
    #[serde(with = "govbus_kit::duration")]
    pub keep_published_events: Duration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        let retention = govbus_storage::RetentionSettings::default();
        Self {
            keep_processed_events: retention.inbox,
            keep_idempotency_keys: retention.idempotency_keys,
            keep_published_events: retention.published_outbox,
        }
    }
}

impl StorageConfig {
    /// The services' storage settings with these windows.
    pub fn settings(&self) -> govbus_storage::StorageSettings {
        govbus_storage::StorageSettings {
            retention: govbus_storage::RetentionSettings {
                inbox: self.keep_processed_events,
                idempotency_keys: self.keep_idempotency_keys,
                published_outbox: self.keep_published_events,
                ..govbus_storage::RetentionSettings::default()
            },
            ..govbus_storage::StorageSettings::default()
        }
    }
}

/// The web console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console at all.
    pub enabled: bool,
    /// Where it listens. It can replay dead letters: keep it on a loopback or operators'
    /// network.
    pub listen: SocketAddr,
}

/// How the directory names the instance and its members (GovStack identifiers,
/// `INSTANCE/CLASS/MEMBER/APPLICATION`): the members are the instance's agencies, Kota Malang's
/// shipped list unless `agencies` names the deployment's own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    /// The instance's identifier. Default `ID-3573`: Indonesia and Kota Malang's region code.
    pub id: String,
    /// The class of its members. Default `GOV`.
    pub member_class: String,
    /// The agency that runs the bus: the member of services no other agency owns, and of the
    /// stack's own parts. Default `diskominfo`.
    pub operator: String,
    /// The instance's agencies (perangkat daerah), a CSV file of the shipped list's form
    /// (`code,kind,name`). Unset: Kota Malang's, shipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agencies: Option<PathBuf>,
}

impl InstanceConfig {
    /// The instance's agencies: the file `agencies` names, else the shipped list.
    pub fn agencies(&self) -> Result<Arc<Agencies>, AgenciesFileError> {
        Agencies::configured(self.agencies.as_deref()).map(Arc::new)
    }

    /// The agency each service of `config` belongs to, and the gateway (the operator's).
    pub fn members(&self, services: &[ServiceSection]) -> BTreeMap<&'static str, String> {
        services
            .iter()
            .map(|section| {
                (
                    section.name,
                    section
                        .agency
                        .clone()
                        .unwrap_or_else(|| self.operator.clone()),
                )
            })
            .chain([("gateway", self.operator.clone())])
            .collect()
    }

    /// The directory's instance.
    pub fn directory_instance(&self) -> govbus_gateway::directory::Instance {
        govbus_gateway::directory::Instance {
            id: self.id.clone(),
            member_class: self.member_class.clone(),
            operator: self.operator.clone(),
        }
    }
}

/// The REST gateway: every service's methods as REST/JSON, for registered applications.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Serve it at all (it needs `tls.enabled`: services believe the application it names
    /// only from its certificate).
    pub enabled: bool,
    /// Where it listens.
    pub listen: SocketAddr,
    /// `sqlite://…` or `postgres://…` for the registry of applications. Unset:
    /// `sqlite://<data_dir>/gateway.db`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// The `iss` of its tokens, the URL applications reach it at. Unset: `https://<listen>`
    /// (`http://` without TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Its HTTPS certificate chain (PEM), the one applications check. With `tls_key`; unset:
    /// plain HTTP, which only a loopback `listen` may serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_certificate: Option<PathBuf>,
    /// The key of `tls_certificate` (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// How long a token it issues is valid.
    #[serde(with = "govbus_kit::duration")]
    pub token_lifetime: Duration,
    /// How often it reports on the bus the calls it made for applications and the SPLP link's
    /// use.
    #[serde(with = "govbus_kit::duration")]
    pub report_interval: Duration,
    /// Requests per second an application may make (each gateway replica on its own), unless
    /// its registration says otherwise.
    pub rate_limit: u32,
    /// Requests an application may make at once after a quiet spell.
    pub rate_burst: u32,
    /// The deployment's identity provider, whose tokens applications may present instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_provider: Option<govbus_gateway::providers::ProviderSettings>,
    /// The link to the national SPLP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub splp: Option<govbus_gateway::splp::SplpSettings>,
}

/// Logs, traces and metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Log filter, e.g. `info` or `warn,govbus_bus=debug`.
    pub log: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// An OTLP/gRPC endpoint (collector, Jaeger, Tempo), e.g. `http://127.0.0.1:4317`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// Recent traces kept in memory for the console and `govbus trace`.
    pub keep_traces: usize,
}

impl Default for StackConfig {
    fn default() -> Self {
        let loopback = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Self {
            data_dir: PathBuf::from(".govbus"),
            shutdown_timeout: Duration::from_secs(30),
            nats: NatsConfig {
                url: None,
                listen: loopback(0),
                server_binary: None,
                stream_replicas: 1,
            },
            storage: StorageConfig::default(),
            console: ConsoleConfig {
                enabled: true,
                listen: loopback(8080),
            },
            gateway: GatewayConfig {
                enabled: true,
                listen: loopback(8480),
                database_url: None,
                issuer: None,
                tls_certificate: None,
                tls_key: None,
                token_lifetime: Duration::from_secs(300),
                report_interval: Duration::from_secs(60),
                rate_limit: 50,
                rate_burst: 100,
                identity_provider: None,
                splp: None,
            },
            instance: InstanceConfig {
                id: "ID-3573".to_owned(),
                member_class: "GOV".to_owned(),
                operator: "diskominfo".to_owned(),
                agencies: None,
            },
            telemetry: TelemetryConfig {
                log: "info".to_owned(),
                log_format: LogFormat::Text,
                otlp_endpoint: None,
                keep_traces: 2_000,
            },
            tls: TlsConfig {
                enabled: true,
                dir: None,
                policy: None,
            },
            audit: AuditConfig::default(),
            services: crate::services::SERVICES
                .iter()
                .map(|declaration| ServiceSection::defaults_of(declaration))
                .collect(),
        }
    }
}

impl StackConfig {
    /// Every address on port 0, for tests and for running beside another stack.
    pub fn on_free_ports(mut self) -> Self {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        self.nats.listen = any;
        for service in &mut self.services {
            service.listen = any;
        }
        self.console.listen = any;
        self.gateway.listen = any;
        self
    }

    /// The certificate folder, when TLS is on.
    pub fn certificates_dir(&self) -> Option<PathBuf> {
        self.tls.enabled.then(|| {
            self.tls
                .dir
                .clone()
                .unwrap_or_else(|| self.data_dir.join("certs"))
        })
    }

    /// The URL applications reach the gateway at: `gateway.issuer`, or its listening address
    /// (`address`, once bound) under the scheme it serves.
    pub fn gateway_url(&self, address: SocketAddr) -> String {
        self.gateway.issuer.clone().unwrap_or_else(|| {
            let scheme = if self.gateway.tls_certificate.is_some() {
                "https"
            } else {
                "http"
            };
            format!("{scheme}://{address}")
        })
    }

    /// The gateway's database URL: the configured one or a SQLite file in the data folder.
    pub fn gateway_database_url(&self) -> String {
        self.gateway
            .database_url
            .clone()
            .unwrap_or_else(|| sqlite_url(&self.data_dir.join("gateway.db")))
    }

    /// The database URL of `service`: the configured one or a SQLite file in the data folder.
    pub fn database_url(&self, service: &str) -> String {
        self.service(service)
            .and_then(|section| section.database_url.clone())
            .unwrap_or_else(|| sqlite_url(&self.data_dir.join(format!("{service}.db"))))
    }

    /// The section of `service`.
    pub fn service(&self, service: &str) -> Option<&ServiceSection> {
        self.services.iter().find(|section| section.name == service)
    }

    /// The section of `service`, to change it.
    pub fn service_mut(&mut self, service: &str) -> Option<&mut ServiceSection> {
        self.services
            .iter_mut()
            .find(|section| section.name == service)
    }
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}
