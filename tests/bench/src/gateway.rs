//! REST through the gateway against the same call over gRPC: identity's `VerifyCitizen` as an
//! application sends it (`POST /identity/v1/citizens:verify`, a bearer token, JSON) through the
//! gateway (token check, rate limit, access policy, transcoding, the gRPC call over mutual TLS
//! with the gateway's certificate, or in process when the gateway runs beside the service as
//! under `govbus up`), beside the same call made directly over gRPC, to one identity service,
//! with one request in flight (the latency the gateway adds) and 64.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use govbus_gateway::Gateway;
use govbus_gateway::applications::{
    ApplicationName, Applications, ClientTable, RateLimit, SignsInWith,
};
use govbus_gateway::directory::{Directory, Instance, Provider};
use govbus_gateway::rate::RateLimiter;
use govbus_gateway::signin::SignIn;
use govbus_gateway::tokens::TokenIssuer;
use govbus_kit::access::{AccessPolicy, Grants};
use govbus_kit::in_process::ServiceChannel;
use http_body_util::{BodyExt as _, Full};
use tokio_util::sync::CancellationToken;

use crate::calls::{CallBench, CallSettings, channel, drive, nik, spread, verify};
use crate::measure::{Comparison, Run};

/// The goal with 64 in flight: REST through the gateway at 70 % of the direct gRPC rate.
pub const GOAL: f64 = 0.7;

/// The goal with one in flight: the gateway adds at most this much to the median call.
pub const GOAL_ADDED_P50_MS: f64 = 0.3;

/// The application the benchmark calls as.
const APPLICATION: &str = "diskominfo.bench";

const IDENTITY_SERVICE: &str = "govbus.identity.v1.IdentityService";

/// Where the gateway runs and how an application reaches it, for the REST paths measured.
#[derive(Debug, Clone, Copy)]
struct Placement {
    /// In the services' process, as under `govbus up` (it calls identity in process), or in
    /// a process of its own (it calls identity over mutual TLS).
    in_process: bool,
    /// The application calls it over HTTPS (as beyond loopback), or plain HTTP on loopback.
    https: bool,
}

impl Placement {
    const ALL: [Self; 4] = [
        Self {
            in_process: true,
            https: true,
        },
        Self {
            in_process: true,
            https: false,
        },
        Self {
            in_process: false,
            https: true,
        },
        Self {
            in_process: false,
            https: false,
        },
    ];

    fn label(self) -> String {
        format!(
            "REST over {}: token, rate limit, policy, transcoding, {}",
            self.protocol(),
            if self.in_process {
                "identity in process"
            } else {
                "gRPC over mutual TLS"
            }
        )
    }

    fn name(self) -> String {
        format!(
            "{} over {}",
            if self.in_process {
                "gateway in the services' process (govbus up)"
            } else {
                "gateway in a process of its own"
            },
            self.protocol()
        )
    }

    fn protocol(self) -> &'static str {
        if self.https { "HTTPS" } else { "HTTP" }
    }
}

/// A client of the gateway: HTTP/1.1 keep-alive, over TLS trusting the deployment's CA or
/// plain.
type RestClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

fn rest_client(ca_pem: &[u8], https: bool, in_flight: usize) -> anyhow::Result<RestClient> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(certificate?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config);
    let connector = if https {
        connector.https_only()
    } else {
        connector.https_or_http()
    };
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_max_idle_per_host(in_flight)
            .build(connector.enable_http1().build()),
    )
}

/// The direct gRPC call beside REST through the gateway placed in process and in a process of
/// its own, over HTTPS and plain HTTP, with one request in flight and with `settings.in_flight`.
pub async fn compare(
    calls: &CallBench,
    nats_url: &str,
    settings: CallSettings,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<Comparison>> {
    let identity = calls
        .identity_for(nats_url, "VerifyCitizen", &["bench", APPLICATION])
        .await?;
    let direct = channel(identity.address(), "identity", &calls.tls("bench")?).await?;
    let over_network = channel(identity.address(), "identity", &calls.tls("gateway")?).await?;
    let files = calls.certificate_paths("gateway");
    let ca_pem = std::fs::read(&files.ca)?;
    let https = govbus_gateway::serve::https_config(
        &std::fs::read(&files.certificate)?,
        &std::fs::read(&files.key)?,
        &ca_pem,
        files.crl.as_deref(),
    )?;
    let mut gateways = Vec::new();
    for placement in Placement::ALL {
        let channel: ServiceChannel = if placement.in_process {
            identity.in_process(govbus_kit::access::GATEWAY).into()
        } else {
            over_network.clone().into()
        };
        let dir = dir.join(format!(
            "gateway-{}-{}",
            placement.in_process,
            placement.protocol()
        ));
        let served = gateway(channel, &dir, placement.https.then(|| https.clone())).await?;
        gateways.push((placement, served));
    }
    let citizens = calls.citizens();
    let mut comparisons = Vec::new();
    for in_flight in [1, settings.in_flight] {
        let settings = CallSettings {
            calls: if in_flight == 1 {
                settings.calls / 8
            } else {
                settings.calls
            },
            in_flight,
        };
        let channel = direct.clone();
        let grpc = drive(settings, move |task, call| {
            verify(channel.clone(), spread(task, call, citizens))
        })
        .await?;
        let grpc = Run {
            label: "the same call over gRPC with mutual TLS, direct".to_owned(),
            ..grpc
        };
        for (placement, (base, token, _)) in &gateways {
            let client = rest_client(&ca_pem, placement.https, settings.in_flight)?;
            let rest = Run {
                label: placement.label(),
                ..rest(client, settings, base, token, citizens).await?
            };
            let name = format!(
                "VerifyCitizen as REST through the {} vs gRPC, {in_flight} in flight (calls/s)",
                placement.name()
            );
            // With one in flight the rate is the inverse of the latency: at most 0.3 ms added
            // to the direct median is a rate of at least median / (median + 0.3 ms) of the
            // direct one.
            let goal = match (in_flight, rest.latency, grpc.latency) {
                (1, Some(through), Some(direct)) => {
                    eprintln!(
                        "{}, one in flight: p50 {:.3} ms through the gateway, {:.3} ms direct: {:.3} ms added (goal at most {GOAL_ADDED_P50_MS} ms)",
                        placement.name(),
                        through.p50_ms,
                        direct.p50_ms,
                        through.p50_ms - direct.p50_ms
                    );
                    direct.p50_ms / (direct.p50_ms + GOAL_ADDED_P50_MS)
                }
                _ => GOAL,
            };
            comparisons.push(Comparison::new(name, rest, grpc.clone(), goal));
        }
    }
    for (_, (_, _, stop)) in gateways {
        stop.cancel();
    }
    identity.stop().await;
    Ok(comparisons)
}

/// `settings.calls` REST calls of `VerifyCitizen` by `client` to the gateway at `base` with
/// `token`.
async fn rest(
    client: RestClient,
    settings: CallSettings,
    base: &str,
    token: &str,
    citizens: u64,
) -> anyhow::Result<Run> {
    let client = Arc::new(client);
    let url: Arc<str> = Arc::from(format!("{base}/identity/v1/citizens:verify"));
    let authorization: Arc<str> = Arc::from(format!("Bearer {token}"));
    drive(settings, move |task, call| {
        let (client, url, authorization) = (
            Arc::clone(&client),
            Arc::clone(&url),
            Arc::clone(&authorization),
        );
        let index = spread(task, call, citizens);
        async move {
            let request = http::Request::post(&*url)
                .header("authorization", &*authorization)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(format!(
                    "{{\"nik\":\"{}\"}}",
                    nik(index)
                ))))?;
            let response = client.request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::ensure!(
                status.is_success(),
                "{status}: {}",
                String::from_utf8_lossy(&body)
            );
            Ok(())
        }
    })
    .await
}

/// A gateway served on a loopback port for a benchmark.
pub(crate) struct ServedGateway {
    /// Its base URL.
    pub(crate) base: String,
    /// A token of each registered application.
    pub(crate) tokens: BTreeMap<String, String>,
    /// The gateway, for its parts.
    pub(crate) gateway: Gateway,
    /// Its publish/subscribe on the bus, when it has one.
    pub(crate) pubsub: Option<govbus_gateway::pubsub::PubSub>,
    /// Stops it.
    pub(crate) stop: CancellationToken,
}

/// The gateway in front of identity (`channel`), on a loopback port, with one application
/// signed in: its address and the application's token.
async fn gateway(
    channel: ServiceChannel,
    dir: &std::path::Path,
    https: Option<govbus_gateway::serve::HttpsConfig>,
) -> anyhow::Result<(String, String, CancellationToken)> {
    std::fs::create_dir_all(dir)?;
    let policy = format!(
        "[[grant]]\ncallers = [\"{APPLICATION}\"]\nmethods = [\"{IDENTITY_SERVICE}/VerifyCitizen\"]\npurpose = \"Benchmark\"\n"
    );
    let mut served = serve(
        dir,
        &[APPLICATION],
        &policy,
        BTreeMap::from([(IDENTITY_SERVICE.to_owned(), channel)]),
        None,
        https,
    )
    .await?;
    let token = served.tokens.remove(APPLICATION).unwrap_or_default();
    Ok((served.base, token, served.stop))
}

/// A gateway with `applications` registered under `policy`, in front of `channels`, publishing
/// and subscribing on `bus` when given, served on a loopback port.
pub(crate) async fn serve(
    dir: &std::path::Path,
    applications: &[&str],
    policy: &str,
    channels: BTreeMap<String, ServiceChannel>,
    bus: Option<govbus_bus::Bus>,
    https: Option<govbus_gateway::serve::HttpsConfig>,
) -> anyhow::Result<ServedGateway> {
    let db =
        govbus_gateway::database::open(&format!("sqlite://{}", dir.join("gateway.db").display()))
            .await?;
    let registry = Applications::new(db);
    for application in applications {
        registry
            .register(
                &ApplicationName::parse(application)?,
                "The benchmark",
                None,
                SignsInWith::Secret,
            )
            .await?;
    }
    let stop = CancellationToken::new();
    let clients = ClientTable::follow(registry.clone(), stop.clone()).await?;
    let issuer = TokenIssuer::from_pkcs8(
        &TokenIssuer::generate_key()?,
        "http://127.0.0.1",
        govbus_gateway::AUDIENCE,
        Duration::from_secs(3600),
    )?;
    let mut tokens = BTreeMap::new();
    for application in applications {
        tokens.insert(
            (*application).to_owned(),
            issuer.issue(application)?.access_token,
        );
    }
    let pubsub = match bus {
        Some(bus) => Some(govbus_gateway::pubsub::PubSub::start(bus, registry.db().clone()).await?),
        None => None,
    };
    let sign_in = Arc::new(SignIn::new(
        registry,
        clients,
        issuer,
        Vec::new(),
        RateLimiter::new(RateLimit::new(1_000_000, 1_000_000)?),
    ));
    let policy = AccessPolicy::new(Grants::parse(policy).map_err(anyhow::Error::msg)?);
    let pool = prost_reflect::DescriptorPool::decode(govbus_proto::FILE_DESCRIPTOR_SET)?;
    let directory = Directory::new(
        Instance {
            id: "ID-3573".to_owned(),
            member_class: "GOV".to_owned(),
            operator: "diskominfo".to_owned(),
        },
        govbus_civil::agencies::Agencies::shipped()?.clone(),
        vec![Provider::declared(
            &govbus_identity::DECLARATION,
            "dispendukcapil",
        )],
        Vec::new(),
        &pool,
    )?;
    let gateway = Gateway::new(
        &pool,
        channels,
        sign_in,
        policy,
        directory,
        govbus_gateway::Attachments {
            pubsub: pubsub.clone(),
            ..govbus_gateway::Attachments::default()
        },
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!(
        "{}://{}",
        if https.is_some() { "https" } else { "http" },
        listener.local_addr()?
    );
    tokio::spawn(govbus_gateway::serve::serve(
        listener,
        gateway.clone().router(),
        https,
        stop.clone(),
    ));
    // The registry's first read by the running table.
    tokio::time::sleep(govbus_gateway::applications::REFRESH_INTERVAL * 2).await;
    Ok(ServedGateway {
        base,
        tokens,
        gateway,
        pubsub,
        stop,
    })
}
