//! Identity over mutual TLS: only holders of a certificate from the deployment's CA can call,
//! and the caller is who its certificate names, whatever it claims in metadata.

use std::time::{Duration, Instant};

use govbus_bus::BusOptions;
use govbus_civil::Nik;
use govbus_harness::{NatsServer, TestDatabase};
use govbus_identity::{Application, IdentityConfig};
use govbus_identity_client::{IdentityClient, Verified};
use govbus_kit::development_ca::generate_development_certificates;
use govbus_kit::in_process::ServiceChannel;
use govbus_kit::tls::{CertificatePaths, ServiceTls};
use govbus_proto::identity::v1 as identity;
use govbus_proto::identity::v1::identity_service_client::IdentityServiceClient;
use govbus_storage::StorageSettings;
use prost::Message as _;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

struct Secured {
    nats: NatsServer,
    _db: TestDatabase,
    app: Application,
    certificates: tempfile::TempDir,
}

impl Secured {
    async fn start() -> Self {
        let nats = tokio::task::spawn_blocking(NatsServer::start)
            .await
            .expect("joined")
            .expect("nats-server");
        let db = TestDatabase::sqlite().expect("database");
        let certificates = tempfile::tempdir().expect("temp dir");
        generate_development_certificates(
            certificates.path(),
            &["identity", "welfare", "licensing", "gateway"],
        )
        .expect("certificates");
        let app = Application::build(IdentityConfig {
            database_url: db.url().to_owned(),
            listen: "127.0.0.1:0".parse().expect("address"),
            bus: BusOptions::new(nats.client_url()).client_name("identity"),
            storage: StorageSettings::default(),
            call_report_interval: Duration::from_millis(200),
            tls: Some(tls(certificates.path(), "identity")),
            access: None,
            audit_subject_key: None,
            audit_timestamps: None,
        })
        .await
        .expect("identity starts with TLS");
        Self {
            nats,
            _db: db,
            app,
            certificates,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.app.port())
    }

    fn tls(&self, name: &str) -> ServiceTls {
        tls(self.certificates.path(), name)
    }
}

fn tls(dir: &std::path::Path, name: &str) -> ServiceTls {
    ServiceTls::from_files(name, &CertificatePaths::in_dir(dir, name)).expect("certificate files")
}

fn some_nik() -> Nik {
    Nik::parse("3573015001900001").expect("valid NIK")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_without_a_certificate_from_the_ca_is_refused() {
    let secured = Secured::start().await;

    // Trusts the CA but presents no certificate.
    let ca = std::fs::read(secured.certificates.path().join("ca.pem")).expect("ca");
    let anonymous = Endpoint::from_shared(secured.url())
        .expect("url")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca))
                .domain_name("identity"),
        )
        .expect("tls")
        .connect()
        .await;
    let refused = match anonymous {
        Err(_) => true,
        Ok(channel) => IdentityServiceClient::new(channel)
            .verify_citizen(identity::VerifyCitizenRequest {
                nik: some_nik().as_str().to_owned(),
                ..Default::default()
            })
            .await
            .is_err(),
    };
    assert!(refused, "a call without a client certificate must fail");

    // A certificate from another CA, naming a real service, is refused too.
    let rogue = tempfile::tempdir().expect("temp dir");
    generate_development_certificates(rogue.path(), &["welfare"]).expect("rogue certificates");
    let impostor = IdentityClient::new(
        &secured.url(),
        "welfare",
        Some(&tls(rogue.path(), "welfare")),
    )
    .expect("client");
    assert!(impostor.verify(&some_nik()).await.is_err());

    // Plain HTTP/2 is not served at all.
    let plain = IdentityClient::new(
        &format!("http://127.0.0.1:{}", secured.app.port()),
        "welfare",
        None,
    )
    .expect("client");
    assert!(plain.verify(&some_nik()).await.is_err());

    // The real certificate works.
    let welfare = IdentityClient::new(&secured.url(), "welfare", Some(&secured.tls("welfare")))
        .expect("client");
    assert_eq!(
        welfare.verify(&some_nik()).await.expect("answered"),
        Verified::Unknown
    );
    secured.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caller_is_who_its_certificate_names() {
    let secured = Secured::start().await;
    // Licensing's certificate, claiming to be welfare in the metadata.
    let liar = IdentityClient::new(&secured.url(), "welfare", Some(&secured.tls("licensing")))
        .expect("client");
    for _ in 0..3 {
        liar.verify(&some_nik()).await.expect("answered");
    }
    let counted = counted_calls(&secured).await;
    assert_eq!(counted, vec![("licensing".to_owned(), 3)]);
    secured.app.stop().await;
}

/// The calls identity reported counting, by caller: waits for its first report.
async fn counted_calls(secured: &Secured) -> Vec<(String, u64)> {
    let bus = govbus_bus::Bus::connect(BusOptions::new(secured.nats.client_url()))
        .await
        .expect("bus");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut callers = Vec::new();
        if let Ok(mut stream) = bus.jetstream().get_stream("GOVBUS_IDENTITY").await
            && let Ok(info) = stream.info().await
        {
            let last = info.state.last_sequence;
            for sequence in 1..=last {
                if let Ok(message) = stream.get_raw_message(sequence).await
                    && message.subject.as_str() == "govbus.identity.calls.counted.v1"
                    && let Ok(event) = identity::CallsCounted::decode(message.payload.as_ref())
                {
                    callers.push((event.caller, event.calls));
                }
            }
        }
        if !callers.is_empty() {
            return callers;
        }
        assert!(Instant::now() < deadline, "no call report published");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn verify_for(application: &str) -> tonic::Request<identity::VerifyCitizenRequest> {
    let mut request = tonic::Request::new(identity::VerifyCitizenRequest {
        nik: some_nik().as_str().to_owned(),
        ..Default::default()
    });
    request.metadata_mut().insert(
        govbus_kit::access::APPLICATION_METADATA,
        application.parse().expect("metadata"),
    );
    request
}

/// The gateway calling for an application is believed (the application is the caller the
/// policy judges); welfare naming an application, and the gateway naming something that is not
/// one, are refused.
async fn only_the_gateway_names_applications(
    mut gateway: IdentityServiceClient<ServiceChannel>,
    mut welfare: IdentityServiceClient<ServiceChannel>,
) {
    for _ in 0..2 {
        gateway
            .verify_citizen(verify_for("disnaker-pmptsp.sicantik"))
            .await
            .expect("answered");
    }
    let refused = welfare
        .verify_citizen(verify_for("disnaker-pmptsp.sicantik"))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused.message().contains("only the gateway"),
        "{}",
        refused.message()
    );
    let refused = gateway
        .verify_citizen(verify_for("welfare"))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_is_believed_only_from_the_gateway() {
    let secured = Secured::start().await;
    let client = async |certificate: &str| {
        let channel = Endpoint::from_shared(secured.url())
            .expect("url")
            .tls_config(secured.tls(certificate).client_config("identity"))
            .expect("tls")
            .connect()
            .await
            .expect("connected");
        IdentityServiceClient::new(ServiceChannel::from(channel))
    };
    only_the_gateway_names_applications(client("gateway").await, client("welfare").await).await;

    // Identity counts the calls made to it directly; the gateway reports those it made for
    // applications itself, so they are not counted twice.
    client("welfare")
        .await
        .verify_citizen(identity::VerifyCitizenRequest {
            nik: some_nik().as_str().to_owned(),
            ..Default::default()
        })
        .await
        .expect("answered");
    assert_eq!(
        counted_calls(&secured).await,
        vec![("welfare".to_owned(), 1)]
    );

    // The same in process (the gateway under `govbus up`): the caller is the one the code
    // named, through the same access layer.
    let in_process = |caller: &str| {
        IdentityServiceClient::new(ServiceChannel::from(secured.app.in_process(caller)))
    };
    only_the_gateway_names_applications(in_process("gateway"), in_process("welfare")).await;
    secured.app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_on_its_open_connection_and_at_the_handshake() {
    let secured = Secured::start().await;
    let revoked = secured.tls("welfare");
    let welfare = IdentityClient::new(&secured.url(), "welfare", Some(&revoked)).expect("client");
    welfare.verify(&some_nik()).await.expect("answered");

    govbus_kit::development_ca::revoke_development_certificate(
        secured.certificates.path(),
        "welfare",
        govbus_kit::development_ca::RevocationReason::KeyCompromise,
    )
    .expect("revoked");
    // Identity reads the list again within its reload interval; the open connection then ends.
    let deadline = Instant::now() + govbus_kit::revocation::RELOAD_INTERVAL * 3;
    while welfare.verify(&some_nik()).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still answered on the open connection"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let again = IdentityClient::new(&secured.url(), "welfare", Some(&revoked)).expect("client");
    assert!(
        again.verify(&some_nik()).await.is_err(),
        "a new connection with the revoked certificate is refused"
    );
    // The certificate issued in its place is taken.
    let renewed = IdentityClient::new(&secured.url(), "welfare", Some(&secured.tls("welfare")))
        .expect("client");
    renewed
        .verify(&some_nik())
        .await
        .expect("answered with the new certificate");
    secured.app.stop().await;
}
