//! Connecting to NATS: servers, per-service credentials, TLS, and the bus-wide settings.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;

use crate::dead_letter::DeadLetters;
use crate::error::{Error, error_kind};
use crate::provision::StreamSettings;
use crate::publish::{Publisher, RetryPolicy};
use crate::topology::Topology;

error_kind! {
    /// Why connecting failed.
    ConnectErrorKind {
        /// The options are inconsistent or a name is invalid.
        InvalidOptions => "invalid bus options",
        /// A credentials file could not be read.
        Credentials => "cannot read NATS credentials",
        /// The server could not be reached or refused the connection.
        Unreachable => "cannot connect to NATS",
    }
}

/// A failed connection attempt.
pub type ConnectError = Error<ConnectErrorKind>;

/// How a service proves who it is to the NATS server.
#[derive(Clone, Default)]
pub enum Credentials {
    /// No authentication (a local development server).
    #[default]
    None,
    /// A user name and password from the server configuration.
    UserPassword {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// A shared token.
    Token(String),
    /// An NKey seed (`SU…`); the server knows the public key.
    NkeySeed(String),
    /// A `.creds` file with a user JWT and its NKey seed.
    CredentialsFile(PathBuf),
}

impl std::fmt::Debug for Credentials {
    // Secrets stay out of logs and panics.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::UserPassword { user, .. } => write!(f, "UserPassword {{ user: {user:?}, .. }}"),
            Self::Token(_) => f.write_str("Token(..)"),
            Self::NkeySeed(_) => f.write_str("NkeySeed(..)"),
            Self::CredentialsFile(path) => write!(f, "CredentialsFile({path:?})"),
        }
    }
}

/// TLS settings for the NATS connection.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// Refuse to connect without TLS.
    pub required: bool,
    /// PEM file with the CA certificates that sign the server's certificate.
    pub root_certificates: Option<PathBuf>,
    /// PEM certificate and key this client presents (mutual TLS).
    pub client_certificate: Option<(PathBuf, PathBuf)>,
}

/// Everything needed to connect a service to the bus.
///
/// ```no_run
/// use std::time::Duration;
/// use govbus_bus::{Bus, BusOptions, RetryPolicy};
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::connect(
///     BusOptions::new("nats://127.0.0.1:4222")
///         .client_name("welfare")
///         .credentials_file("/etc/govbus/welfare.creds")
///         .root_certificates("/etc/govbus/ca.pem")
///         .client_certificate("/etc/govbus/welfare.pem", "/etc/govbus/welfare-key.pem")
///         .publish_retry(RetryPolicy::default().give_up_after(Some(Duration::from_secs(30)))),
/// )
/// .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BusOptions {
    servers: Vec<String>,
    client_name: Option<String>,
    inbox_prefix: Option<String>,
    prefix: String,
    credentials: Credentials,
    tls: TlsSettings,
    connection_timeout: Duration,
    request_timeout: Duration,
    publish_retry: RetryPolicy,
    max_ack_inflight: usize,
    stream_settings: StreamSettings,
    wait_for_server: bool,
}

impl BusOptions {
    /// Options for the server(s) at `servers`: one URL, or several separated by commas.
    pub fn new(servers: impl AsRef<str>) -> Self {
        Self {
            servers: servers
                .as_ref()
                .split(',')
                .map(|url| url.trim().to_owned())
                .filter(|url| !url.is_empty())
                .collect(),
            client_name: None,
            inbox_prefix: None,
            prefix: Topology::default().prefix().to_owned(),
            credentials: Credentials::None,
            tls: TlsSettings::default(),
            connection_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            publish_retry: RetryPolicy::default(),
            max_ack_inflight: 4096,
            stream_settings: StreamSettings::default(),
            wait_for_server: false,
        }
    }

    /// The prefix of the connection's reply subjects (default `_INBOX`). A service with its own
    /// NATS user gets its own prefix (see [`crate::permissions`]), so no other user may
    /// subscribe to its replies and deliveries.
    pub fn inbox_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.inbox_prefix = Some(prefix.into());
        self
    }

    /// The name the connection shows in the server's monitoring (usually the service name).
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.client_name = Some(name.into());
        self
    }

    /// The subject prefix of this deployment (`govbus` by default).
    ///
    /// ```
    /// let options = govbus_bus::BusOptions::new("nats://127.0.0.1:4222").prefix("kota-malang");
    /// assert_eq!(options.topology()?.service_stream("identity"), "KOTA_MALANG_IDENTITY");
    /// # Ok::<(), govbus_bus::NameError>(())
    /// ```
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Authenticate with any [`Credentials`].
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Authenticate with a user name and password.
    pub fn user_password(self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials(Credentials::UserPassword {
            user: user.into(),
            password: password.into(),
        })
    }

    /// Authenticate with an NKey seed.
    pub fn nkey_seed(self, seed: impl Into<String>) -> Self {
        self.credentials(Credentials::NkeySeed(seed.into()))
    }

    /// Authenticate with a `.creds` file.
    pub fn credentials_file(self, path: impl Into<PathBuf>) -> Self {
        self.credentials(Credentials::CredentialsFile(path.into()))
    }

    /// Refuse to connect without TLS.
    pub fn require_tls(mut self, required: bool) -> Self {
        self.tls.required = required;
        self
    }

    /// Trust the CA certificates in this PEM file (implies TLS).
    pub fn root_certificates(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls.root_certificates = Some(path.into());
        self.tls.required = true;
        self
    }

    /// Present this certificate and key (mutual TLS; implies TLS).
    pub fn client_certificate(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls.client_certificate = Some((cert.into(), key.into()));
        self.tls.required = true;
        self
    }

    /// How long one connection attempt may take.
    pub fn connection_timeout(mut self, timeout: Duration) -> Self {
        self.connection_timeout = timeout;
        self
    }

    /// How long a JetStream API request or a publish acknowledgement may take.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How publishers retry until JetStream acknowledges an event.
    pub fn publish_retry(mut self, policy: RetryPolicy) -> Self {
        self.publish_retry = policy;
        self
    }

    /// How many publishes may await their acknowledgement at once (pipelining depth).
    pub fn max_ack_inflight(mut self, depth: usize) -> Self {
        self.max_ack_inflight = depth.max(1);
        self
    }

    /// Storage settings of the streams this service provisions.
    pub fn stream_settings(mut self, settings: StreamSettings) -> Self {
        self.stream_settings = settings;
        self
    }

    /// Copies of each stream this service creates (1, or 3 or 5 in a cluster); the other
    /// stream settings stay as they are.
    ///
    /// ```
    /// let options = govbus_bus::BusOptions::new("nats://10.0.0.1:4222,nats://10.0.0.2:4222")
    ///     .stream_replicas(3);
    /// assert_eq!(options.configured_stream_settings().replicas, 3);
    /// ```
    pub fn stream_replicas(mut self, replicas: usize) -> Self {
        self.stream_settings.replicas = replicas.max(1);
        self
    }

    /// The stream settings these options carry.
    pub fn configured_stream_settings(&self) -> &StreamSettings {
        &self.stream_settings
    }

    /// Keep trying to reach the server at start-up instead of failing at once.
    pub fn wait_for_server(mut self, wait: bool) -> Self {
        self.wait_for_server = wait;
        self
    }

    /// The naming scheme these options imply.
    pub fn topology(&self) -> Result<Topology, crate::NameError> {
        Topology::new(self.prefix.clone())
    }

    async fn nats_options(&self) -> Result<async_nats::ConnectOptions, ConnectError> {
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(self.connection_timeout)
            .request_timeout(Some(self.request_timeout))
            .max_reconnects(None)
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => {
                        tracing::info!(message = "Connected to NATS.")
                    }
                    async_nats::Event::Disconnected => {
                        tracing::warn!(message = "Disconnected from NATS; reconnecting.")
                    }
                    async_nats::Event::Closed => {
                        tracing::info!(message = "NATS connection closed.")
                    }
                    other => tracing::warn!(message = "NATS connection event.", event = %other),
                }
            });
        if let Some(name) = &self.client_name {
            options = options.name(name);
        }
        if let Some(prefix) = &self.inbox_prefix {
            options = options.custom_inbox_prefix(prefix);
        }
        if self.wait_for_server {
            options = options.retry_on_initial_connect();
        }
        options = match &self.credentials {
            Credentials::None => options,
            Credentials::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.clone())
            }
            Credentials::Token(token) => options.token(token.clone()),
            Credentials::NkeySeed(seed) => options.nkey(seed.clone()),
            Credentials::CredentialsFile(path) => {
                options.credentials_file(path).await.map_err(|error| {
                    ConnectError::with_detail(
                        ConnectErrorKind::Credentials,
                        format!("{}: {error}", path.display()),
                    )
                })?
            }
        };
        if self.tls.required {
            options = options.require_tls(true);
        }
        if let Some(path) = &self.tls.root_certificates {
            options = options.add_root_certificates(path.clone());
        }
        if let Some((cert, key)) = &self.tls.client_certificate {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(options)
    }
}

/// A connection to the bus: the NATS client, its JetStream context and the naming scheme.
///
/// Cheap to clone; clones share the connection.
#[derive(Debug, Clone)]
pub struct Bus {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    topology: Arc<Topology>,
    publish_retry: RetryPolicy,
    stream_settings: StreamSettings,
    max_ack_inflight: usize,
}

impl Bus {
    /// Connects with `options`.
    pub async fn connect(options: BusOptions) -> Result<Self, ConnectError> {
        let topology = options
            .topology()
            .map_err(|error| ConnectError::with_source(ConnectErrorKind::InvalidOptions, error))?;
        if options.servers.is_empty() {
            return Err(ConnectError::with_detail(
                ConnectErrorKind::InvalidOptions,
                "no NATS server URL given",
            ));
        }
        let servers = options
            .servers
            .iter()
            .map(|url| url.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| ConnectError::with_source(ConnectErrorKind::InvalidOptions, error))?;
        let client = options
            .nats_options()
            .await?
            .connect(servers)
            .await
            .map_err(|error| ConnectError::with_source(ConnectErrorKind::Unreachable, error))?;
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(options.request_timeout)
            .max_ack_inflight(options.max_ack_inflight)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(Self {
            client,
            jetstream,
            topology: Arc::new(topology),
            publish_retry: options.publish_retry,
            stream_settings: options.stream_settings,
            max_ack_inflight: options.max_ack_inflight,
        })
    }

    /// A publisher for the events of `service`.
    pub fn publisher(&self, service: &str) -> Result<Publisher, crate::NameError> {
        self.topology.check_service(service)?;
        Ok(Publisher::new(
            self.jetstream.clone(),
            Arc::clone(&self.topology),
            service,
            self.publish_retry.clone(),
            self.max_ack_inflight,
        ))
    }

    /// The dead-letter stream: list, inspect and replay.
    pub fn dead_letters(&self) -> DeadLetters {
        DeadLetters::new(self.jetstream.clone(), Arc::clone(&self.topology))
    }

    /// The naming scheme.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Storage settings for streams this connection provisions.
    pub fn stream_settings(&self) -> &StreamSettings {
        &self.stream_settings
    }

    /// The underlying NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The underlying JetStream context.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// Sends everything buffered (acknowledgements included) to the server.
    pub async fn flush(&self) {
        if let Err(error) = self.client.flush().await {
            tracing::warn!(message = "Flush to NATS failed.", %error);
        }
    }
}
