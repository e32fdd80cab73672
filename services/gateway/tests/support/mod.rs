//! What the gateway's tests share: the sign-in of applications on a real SQLite registry, with
//! an access policy, and the gateway served on a free port.

// Each test file uses its own part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use govbus_civil::agencies::Agencies;
use govbus_gateway::Gateway;
use govbus_gateway::applications::{
    ApplicationName, Applications, ClientSecret, ClientTable, RateLimit, SignsInWith,
};
use govbus_gateway::directory::{Directory, Instance, Provider, event_types};
use govbus_gateway::providers::IdentityProvider;
use govbus_gateway::rate::RateLimiter;
use govbus_gateway::signin::SignIn;
use govbus_gateway::tokens::TokenIssuer;
use govbus_harness::TestDatabase;
use govbus_kit::access::{AccessPolicy, Grants};
use govbus_kit::declaration::ServiceDeclaration;
use prost_reflect::DescriptorPool;
use tokio_util::sync::CancellationToken;

/// The application the tests call as, granted every method of every service.
pub(crate) const APPLICATION: &str = "diskominfo.test-client";

/// A policy granting [`APPLICATION`] every method of `services`.
pub(crate) fn every_method_of(services: &[&str]) -> String {
    let methods: Vec<String> = services
        .iter()
        .map(|service| format!("\"{service}/*\""))
        .collect();
    format!(
        "[[grant]]\ncallers = [\"{APPLICATION}\"]\nmethods = [{}]\npurpose = \"Testing the gateway\"\n",
        methods.join(", ")
    )
}

/// The services of the stack, as declared.
pub(crate) const SERVICES: [&ServiceDeclaration; 5] = [
    &govbus_identity::DECLARATION,
    &govbus_welfare::DECLARATION,
    &govbus_licensing::DECLARATION,
    &govbus_evaluation::DECLARATION,
    &govbus_complaints::DECLARATION,
];

/// The instance the tests' directories are of.
pub(crate) const INSTANCE: &str = "ID-3573";

/// The agency each service belongs to in the tests' directory.
pub(crate) fn agency_of(service: &str) -> &'static str {
    match service {
        "identity" => "dispendukcapil",
        "welfare" => "dinsos-p3ap2kb",
        "licensing" => "disnaker-pmptsp",
        _ => "diskominfo",
    }
}

/// The directory of every service and the events they publish.
pub(crate) fn directory(pool: &DescriptorPool) -> Directory {
    let names: Vec<&'static str> = SERVICES.iter().map(|service| service.name).collect();
    let providers = SERVICES
        .iter()
        .map(|declaration| Provider::declared(declaration, agency_of(declaration.name)))
        .collect();
    let contracts: Vec<_> = SERVICES
        .iter()
        .map(|declaration| {
            let others: Vec<&'static str> = names
                .iter()
                .copied()
                .filter(|name| *name != declaration.name)
                .collect();
            declaration.contract.among(&others).expect("contract")
        })
        .collect();
    Directory::new(
        Instance {
            id: INSTANCE.to_owned(),
            member_class: "GOV".to_owned(),
            operator: "diskominfo".to_owned(),
        },
        Agencies::shipped().expect("agencies").clone(),
        providers,
        event_types(&contracts, &govbus_bus::Topology::default()),
        pool,
    )
    .expect("directory")
}

/// Options of [`Access::start`].
pub(crate) struct AccessOptions {
    pub(crate) policy: String,
    pub(crate) issuer: String,
    pub(crate) lifetime: Duration,
    pub(crate) rate: RateLimit,
    pub(crate) providers: Vec<IdentityProvider>,
    pub(crate) backend: govbus_harness::TestBackend,
}

impl AccessOptions {
    pub(crate) fn new(policy: String) -> Self {
        Self {
            policy,
            issuer: "https://gateway.test".to_owned(),
            lifetime: Duration::from_secs(300),
            rate: RateLimit::new(10_000, 10_000).expect("limit"),
            providers: Vec::new(),
            backend: govbus_harness::TestBackend::Sqlite,
        }
    }
}

/// The applications' registry and sign-in, and the policy.
pub(crate) struct Access {
    pub(crate) applications: Applications,
    pub(crate) sign_in: Arc<SignIn>,
    pub(crate) policy: AccessPolicy,
    pub(crate) secret: ClientSecret,
    _db: TestDatabase,
    stop: CancellationToken,
}

impl Access {
    /// A registry on a fresh database of `options.backend` with [`APPLICATION`] registered.
    pub(crate) async fn start(options: AccessOptions) -> Self {
        let db = TestDatabase::new(options.backend).await.expect("database");
        let applications = Applications::new(
            govbus_gateway::database::open(db.url())
                .await
                .expect("database"),
        );
        let secret = applications
            .register(
                &ApplicationName::parse(APPLICATION).expect("name"),
                "The gateway's tests",
                None,
                SignsInWith::Secret,
            )
            .await
            .expect("registered")
            .expect("a secret");
        let stop = CancellationToken::new();
        let clients = ClientTable::follow(applications.clone(), stop.clone())
            .await
            .expect("registry read");
        let key = TokenIssuer::generate_key().expect("key");
        let issuer = TokenIssuer::from_pkcs8(&key, &options.issuer, "govbus", options.lifetime)
            .expect("issuer");
        let sign_in = Arc::new(SignIn::new(
            applications.clone(),
            clients,
            issuer,
            options.providers,
            RateLimiter::new(options.rate),
        ));
        let policy = AccessPolicy::new(Grants::parse(&options.policy).expect("policy"));
        Self {
            applications,
            sign_in,
            policy,
            secret,
            _db: db,
            stop,
        }
    }

    /// A token for `application`, straight from the issuer.
    pub(crate) fn token(&self, application: &str) -> String {
        self.sign_in
            .issuer()
            .issue(application)
            .expect("issued")
            .access_token
    }

    /// The gateway over `channels` with this sign-in and policy, and the directory of every
    /// service.
    pub(crate) fn gateway(
        &self,
        pool: &DescriptorPool,
        channels: BTreeMap<String, tonic::transport::Channel>,
    ) -> Gateway {
        self.gateway_with(pool, channels, None)
    }

    /// [`Self::gateway`], linked to SPLP by `splp`.
    pub(crate) fn gateway_with_splp(
        &self,
        pool: &DescriptorPool,
        channels: BTreeMap<String, tonic::transport::Channel>,
        splp: Arc<govbus_gateway::splp::Splp>,
    ) -> Gateway {
        self.gateway_of(pool, channels, None, Some(splp))
    }

    /// [`Self::gateway`], with publish/subscribe over `pubsub`.
    pub(crate) fn gateway_with(
        &self,
        pool: &DescriptorPool,
        channels: BTreeMap<String, tonic::transport::Channel>,
        pubsub: Option<govbus_gateway::pubsub::PubSub>,
    ) -> Gateway {
        self.gateway_of(pool, channels, pubsub, None)
    }

    fn gateway_of(
        &self,
        pool: &DescriptorPool,
        channels: BTreeMap<String, tonic::transport::Channel>,
        pubsub: Option<govbus_gateway::pubsub::PubSub>,
        splp: Option<Arc<govbus_gateway::splp::Splp>>,
    ) -> Gateway {
        Gateway::new(
            pool,
            channels
                .into_iter()
                .map(|(service, channel)| (service, channel.into()))
                .collect(),
            Arc::clone(&self.sign_in),
            self.policy.clone(),
            directory(pool),
            govbus_gateway::Attachments {
                pubsub,
                splp,
                ..govbus_gateway::Attachments::default()
            },
        )
        .expect("gateway")
    }
}

impl Drop for Access {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Serves `gateway` on a free port; its base URL and the server's task.
pub(crate) async fn serve(gateway: Gateway) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(async move {
        axum::serve(listener, gateway.router())
            .await
            .expect("serves");
    });
    (base, server)
}

/// An answer: status, headers and the body as JSON (`Null` when it is not JSON).
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: http::HeaderMap,
    pub(crate) json: serde_json::Value,
}

/// Sends one HTTP/1.1 request.
pub(crate) async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    use http_body_util::BodyExt as _;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_owned(),
        )))
        .expect("request");
    let response = client.request(request).await.expect("answered");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        headers,
        json: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    }
}

/// The program `scripts/<script>` installs if need be (it prints its path last).
fn installed(script: &str) -> std::path::PathBuf {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../scripts")
        .join(script);
    let output = std::process::Command::new(&path)
        .output()
        .unwrap_or_else(|error| panic!("scripts/{script} runs: {error}"));
    assert!(
        output.status.success(),
        "scripts/{script}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    std::path::PathBuf::from(stdout.lines().last().expect("the program's path").trim())
}

/// The independent OpenAPI validator (PyPI `openapi-spec-validator`).
pub(crate) fn openapi_validator() -> std::path::PathBuf {
    installed("install-openapi-validator")
}

/// The PHP command line (Debian's `php-cli`): the documented PHP check of a webhook runs in it.
pub(crate) fn php() -> std::path::PathBuf {
    installed("install-php")
}

/// The GovStack Information Mediator document `name` (`GovStack_IM_Directory_Services_API`).
pub(crate) fn govstack_document(name: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("govstack-im")
        .join(format!("{name}.yaml"))
}

/// Runs `support/validate.py` with the validator's Python (its packages: `jsonschema`,
/// `openapi-schema-validator`): its exit code and what it printed.
fn validate(arguments: &[&std::ffi::OsStr], input: &serde_json::Value) -> (i32, String) {
    use std::io::Write as _;
    let validator = openapi_validator();
    let python = validator
        .parent()
        .expect("the validator's folder")
        .join("python");
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/validate.py");
    let mut child = std::process::Command::new(&python)
        .arg(&script)
        .args(arguments)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{} runs: {error}", python.display()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("written");
    let output = child.wait_with_output().expect("validated");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    match output.status.code() {
        Some(code @ (0 | 1)) => (code, stdout),
        _ => panic!(
            "validate.py failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// The problems of `answer` against the schema `schema` of the OpenAPI document `spec`.
pub(crate) fn against_component(
    spec: &std::path::Path,
    schema: &str,
    answer: &serde_json::Value,
) -> Vec<String> {
    let (_, printed) = validate(
        &[
            std::ffi::OsStr::new("component"),
            spec.as_os_str(),
            std::ffi::OsStr::new(schema),
        ],
        answer,
    );
    printed.lines().map(str::to_owned).collect()
}

/// For each (schema, instance): the problems of the schema as a JSON Schema (2020-12) and of
/// the instance against it.
pub(crate) fn against_json_schemas(
    pairs: &[(&serde_json::Value, &serde_json::Value)],
) -> Vec<Vec<String>> {
    let input: Vec<serde_json::Value> = pairs
        .iter()
        .map(|(schema, instance)| serde_json::json!({"schema": schema, "instance": instance}))
        .collect();
    let (_, printed) = validate(
        &[std::ffi::OsStr::new("json-schema")],
        &serde_json::Value::Array(input),
    );
    serde_json::from_str(&printed).expect("a list of problems")
}

/// An identity service on a fresh SQLite file and `nats`, without TLS or a policy, and a
/// channel to it (what the REST tests put behind the gateway); keep the database while it runs.
pub(crate) async fn plain_identity(
    nats: &govbus_harness::NatsServer,
) -> (
    govbus_identity::Application,
    tonic::transport::Channel,
    TestDatabase,
) {
    let db = TestDatabase::sqlite().expect("database");
    let identity = govbus_identity::Application::build(govbus_identity::IdentityConfig {
        database_url: db.url().to_owned(),
        listen: "127.0.0.1:0".parse().expect("address"),
        bus: govbus_bus::BusOptions::new(nats.client_url()).client_name("identity"),
        storage: govbus_storage::StorageSettings::default(),
        tls: None,
        access: None,
        audit_subject_key: None,
        audit_timestamps: None,
        call_report_interval: Duration::from_secs(60),
    })
    .await
    .expect("identity starts");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", identity.address()))
        .expect("endpoint")
        .connect_lazy();
    (identity, channel, db)
}
