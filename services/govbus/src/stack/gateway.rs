//! The REST gateway in the stack: the registry of applications in its own database, its token
//! signing key in the data folder, an in-process channel to every service (through the
//! service's own telemetry and access layers, as the gateway), the access policy in force, its
//! own NATS user for the applications' events, its listener.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use govbus_bus::{Bus, BusOptions, RunningAdapter};
use govbus_civil::agencies::Agencies;
use govbus_gateway::applications::{Applications, ClientTable, RateLimit};
use govbus_gateway::directory::{Directory, Provider};
use govbus_gateway::providers::IdentityProvider;
use govbus_gateway::pubsub::PubSub;
use govbus_gateway::rate::RateLimiter;
use govbus_gateway::signin::SignIn;
use govbus_gateway::splp::{Publication, Splp};
use govbus_gateway::tokens::TokenIssuer;
use govbus_gateway::usage::{Usage, UsageReporters};
use govbus_gateway::{Attachments, Gateway};
use govbus_kit::access::AccessPolicy;
use govbus_kit::audit::{ProcessingLog, ProcessingLogWriter, SubjectKey};
use govbus_kit::in_process::ServiceChannel;
use govbus_storage::Storage;
use prost_reflect::DescriptorPool;
use tokio_util::sync::CancellationToken;

use super::callers::GATEWAY;
use super::error::StackError;
use super::services::RunningServices;
use super::trust::Certificates;
use crate::config::StackConfig;
use crate::endpoints::ServiceEndpoint;
use crate::services::{SERVICES, others_than};

/// The directory of `services` (those running) and the events they publish.
fn directory(
    config: &StackConfig,
    services: &[ServiceEndpoint],
    pool: &DescriptorPool,
) -> Result<Directory, StackError> {
    let mut providers = Vec::new();
    let mut contracts = Vec::new();
    for endpoint in services {
        let Some(declaration) = SERVICES.iter().find(|d| d.name == endpoint.name) else {
            continue;
        };
        let agency = config
            .services
            .iter()
            .find(|section| section.name == declaration.name)
            .and_then(|section| section.agency.clone())
            .unwrap_or_else(|| config.instance.operator.clone());
        providers.push(Provider::declared(declaration, &agency));
        contracts.push(
            declaration
                .contract
                .among(&others_than(declaration.name))
                .map_err(|error| failed("the services' contracts")(&error))?,
        );
    }
    let agencies = config.instance.agencies()?;
    Directory::new(
        config.instance.directory_instance(),
        Agencies::clone(&agencies),
        providers,
        govbus_gateway::directory::event_types(&contracts, &govbus_bus::Topology::default()),
        pool,
    )
    .map_err(|error| failed("its directory")(&error))
}

/// The running gateway.
#[derive(Debug)]
pub(super) struct RunningGateway {
    address: SocketAddr,
    url: String,
    stop: CancellationToken,
    server: tokio::task::JoinHandle<()>,
    webhooks: tokio::task::JoinHandle<()>,
    publishing: Option<tokio::task::JoinHandle<()>>,
    reporters: UsageReporters,
    log_writer: Option<ProcessingLogWriter>,
    storage: Storage,
    adapter: RunningAdapter,
}

/// Makes sure the gateway's stream exists before the services start: evaluation reads it
/// (an empty stream when no gateway runs).
pub(super) async fn provision_stream(bus: BusOptions) -> Result<(), StackError> {
    let bus = Bus::connect(bus)
        .await
        .map_err(|error| failed("its connection to the bus")(&error))?;
    govbus_gateway::usage::adapter()
        .start(&bus)
        .await
        .map_err(|error| failed("its stream")(&error))?
        .shutdown()
        .await;
    Ok(())
}

/// Stops what the gateway's start began when a later step of it fails.
async fn undo(log_writer: Option<ProcessingLogWriter>, adapter: RunningAdapter) {
    if let Some(writer) = log_writer {
        writer.shutdown().await;
    }
    adapter.shutdown().await;
}

fn failed(what: &str) -> impl FnOnce(&dyn std::fmt::Display) -> StackError + '_ {
    move |error| StackError::Gateway(format!("{what}: {error}"))
}

impl RunningGateway {
    /// Starts it in front of `services`, on the bus with `bus`.
    pub(super) async fn start(
        config: &StackConfig,
        certificates: &Certificates,
        policy: &AccessPolicy,
        services: &[ServiceEndpoint],
        running: &RunningServices,
        bus: BusOptions,
        subject_key: Option<&SubjectKey>,
    ) -> Result<Self, StackError> {
        let settings = &config.gateway;
        let tls = certificates.identity(GATEWAY)?;
        // The services run in this process: the gateway calls them through their own layers
        // (telemetry, the access policy) without a loopback hop, as the gateway.
        let mut channels = BTreeMap::new();
        for endpoint in services {
            let Some(declaration) = SERVICES.iter().find(|d| d.name == endpoint.name) else {
                continue;
            };
            let Some(channel) = running.in_process(declaration.name, GATEWAY) else {
                continue;
            };
            for service in declaration.grpc_services {
                channels.insert((*service).to_owned(), ServiceChannel::from(channel.clone()));
            }
        }
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .map_err(|error| failed(&format!("listening on {}", settings.listen))(&error))?;
        let address = listener
            .local_addr()
            .map_err(|error| failed("its address")(&error))?;
        let issuer = config.gateway_url(address);
        let https = match (&settings.tls_certificate, &settings.tls_key) {
            (Some(certificate), Some(key)) => {
                let read = |path: &std::path::PathBuf| {
                    std::fs::read(path).map_err(|error| {
                        StackError::Gateway(format!("reading {}: {error}", path.display()))
                    })
                };
                Some(
                    govbus_gateway::serve::https_config(
                        &read(certificate)?,
                        &read(key)?,
                        tls.ca_pem(),
                        tls.crl(),
                    )
                    .map_err(|error| failed("its HTTPS")(&error))?,
                )
            }
            _ => None,
        };
        let key = config.data_dir.join("gateway").join("token-signing.p8");
        let issuer = TokenIssuer::load_or_create(
            &key,
            &issuer,
            govbus_gateway::AUDIENCE,
            settings.token_lifetime,
        )
        .map_err(|error| failed("its token signing key")(&error))?;
        let providers = match &settings.identity_provider {
            Some(provider) => vec![
                IdentityProvider::new(provider.clone())
                    .map_err(|error| failed("the identity provider")(&error))?,
            ],
            None => Vec::new(),
        };
        // What only needs the configuration, before anything is opened or started.
        let timestamps = config.audit.tsa().map_err(StackError::Gateway)?;
        let splp = settings
            .splp
            .as_ref()
            .map(|splp| Splp::new(splp).map(Arc::new))
            .transpose()
            .map_err(|error| failed("its SPLP link")(&error))?;
        let limit = RateLimit::new(settings.rate_limit, settings.rate_burst)
            .map_err(|error| failed("its rate limit")(&error))?;
        let pool = DescriptorPool::decode(govbus_proto::FILE_DESCRIPTOR_SET)
            .map_err(|error| failed("the contracts' descriptors")(&error))?;
        let directory = directory(config, services, &pool)?;
        let signer = match subject_key {
            Some(key) => Some((
                govbus_kit::audit::BlockSigner::of_service(&tls)
                    .map_err(|error| failed("its processing-log key")(&error))?,
                key.clone(),
            )),
            None => None,
        };
        let applications = Applications::new(
            govbus_gateway::database::open(&config.gateway_database_url())
                .await
                .map_err(|error| failed("its database")(&error))?,
        );
        let stop = CancellationToken::new();
        // On a failure from here on, what was started is stopped and the database closed.
        let (registry, stopping) = (applications.clone(), stop.clone());
        let started = Box::pin(async move {
            let clients = ClientTable::follow(applications.clone(), stop.clone())
                .await
                .map_err(|error| failed("reading the registry of applications")(&error))?;
            let sign_in = Arc::new(SignIn::new(
                applications.clone(),
                clients,
                issuer,
                providers,
                RateLimiter::new(limit),
            ));
            let bus = Bus::connect(bus)
                .await
                .map_err(|error| failed("its connection to the bus")(&error))?;
            let adapter = govbus_gateway::usage::adapter()
                .start(&bus)
                .await
                .map_err(|error| failed("its stream")(&error))?;
            let usage = Usage::default();
            // Events about a person handed to subscribers with their personal fields are recorded
            // in the gateway's own chain of the processing log, signed with its certificate.
            let (processing_log, log_writer) = match signer {
                Some((signer, key)) => {
                    match ProcessingLog::start(&bus, signer, key, timestamps).await {
                        Ok((log, writer)) => (Some(log), Some(writer)),
                        Err(error) => {
                            adapter.shutdown().await;
                            return Err(failed("its processing log")(&error));
                        }
                    }
                }
                None => (None, None),
            };
            let pubsub = match PubSub::start(bus, applications.db().clone()).await {
                Ok(pubsub) => pubsub,
                Err(error) => {
                    undo(log_writer, adapter).await;
                    return Err(failed("publish/subscribe")(&error));
                }
            };
            let gateway = Gateway::new(
                &pool,
                channels,
                sign_in,
                policy.clone(),
                directory,
                Attachments {
                    pubsub: Some(pubsub.clone()),
                    splp: splp.clone(),
                    usage: Some(usage.clone()),
                    processing_log,
                },
            );
            let gateway = match gateway {
                Ok(gateway) => gateway,
                Err(error) => {
                    undo(log_writer, adapter).await;
                    return Err(failed("its routes")(&error));
                }
            };
            // Nothing fails from here on: the relay and the reporters start.
            let storage = Storage::start(
                applications.db().clone(),
                adapter.publisher().clone(),
                config.storage.settings(),
            );
            let reporters = usage.report(
                applications.db(),
                adapter.publisher(),
                settings.report_interval,
            );
            let publishing = splp.filter(|splp| splp.publishes()).map(|splp| {
                // `ID-3573` and `identity`: `id-3573-identity` at the API manager.
                let prefix = config.instance.id.to_lowercase();
                let documents = gateway
                    .service_documents()
                    .into_iter()
                    .map(|(service, document)| (format!("{prefix}-{service}"), document))
                    .collect();
                govbus_gateway::splp::spawn_publishing(
                    splp,
                    documents,
                    config.gateway_url(address),
                    move |publication: Publication| {
                        usage.link(
                            govbus_gateway::splp::LINK,
                            "publish",
                            publication.failure.is_none(),
                        );
                    },
                    stop.clone(),
                )
            });
            let webhooks = govbus_gateway::pubsub::webhooks::spawn(
                pubsub,
                gateway.subscribers_items(),
                govbus_gateway::pubsub::webhooks::WebhookSettings::default(),
                stop.clone(),
            );
            let server = tokio::spawn(govbus_gateway::serve::serve(
                listener,
                gateway.router(),
                https,
                stop.clone(),
            ));
            tracing::info!(message = "Gateway listening.", url = %config.gateway_url(address));
            Ok::<Self, StackError>(Self {
                address,
                url: config.gateway_url(address),
                stop,
                server,
                webhooks,
                publishing,
                reporters,
                log_writer,
                storage,
                adapter,
            })
        })
        .await;
        if started.is_err() {
            stopping.cancel();
            registry.db().close().await;
        }
        started
    }

    /// Where it listens.
    pub(super) fn address(&self) -> SocketAddr {
        self.address
    }

    /// The URL applications reach it at.
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// Stops taking requests, finishes those it has, closes the registry.
    pub(super) async fn stop(self) {
        self.stop.cancel();
        if let Err(error) = self.server.await {
            tracing::error!(message = "The gateway's server task failed.", %error);
        }
        if let Err(error) = self.webhooks.await {
            tracing::error!(message = "The gateway's webhook deliveries failed.", %error);
        }
        if let Some(publishing) = self.publishing
            && let Err(error) = publishing.await
        {
            tracing::error!(message = "The gateway's SPLP publishing failed.", %error);
        }
        // The last counts go into the outbox before the relay sends what it holds.
        self.reporters.stop().await;
        if let Some(writer) = self.log_writer {
            writer.shutdown().await;
        }
        self.storage.stop().await;
        self.adapter.shutdown().await;
    }
}
