//! The gateway over HTTPS: its certificate checked by a client that trusts the deployment's CA,
//! plain HTTP on the same port refused, a revoked client certificate refused at the handshake and
//! on a connection already open, and a clean stop.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use govbus_kit::development_ca::generate_development_certificates;
use govbus_kit::outbound::{HttpTarget, HttpTargetSettings};
use http_body_util::Full;
use prost_reflect::DescriptorPool;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_https_with_its_certificate() {
    let certificates = tempfile::tempdir().expect("temp dir");
    generate_development_certificates(certificates.path(), &["gateway", "diskominfo"])
        .expect("certificates");
    let read = |name: &str| std::fs::read(certificates.path().join(name)).expect("file");
    let tls = govbus_gateway::serve::https_config(
        &read("gateway.pem"),
        &read("gateway-key.pem"),
        &read("ca.pem"),
        Some(&certificates.path().join("ca.crl")),
    )
    .expect("HTTPS configuration");
    let clients = tls.clients.clone();
    let access = support::Access::start(support::AccessOptions::new(String::new())).await;
    let pool = DescriptorPool::decode(govbus_proto::FILE_DESCRIPTOR_SET).expect("pool");
    let gateway = access.gateway(&pool, BTreeMap::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let address = listener.local_addr().expect("address");
    let stop = CancellationToken::new();
    let server = tokio::spawn(govbus_gateway::serve::serve(
        listener,
        gateway.router(),
        Some(tls),
        stop.clone(),
    ));

    // A client trusting the deployment's CA reads the key set over HTTPS.
    let keys: Value = HttpTarget::new(HttpTargetSettings {
        name: "test",
        url: format!("https://127.0.0.1:{}/.well-known/jwks.json", address.port()),
        bearer_token: None,
        extra_roots_pem: Some(read("ca.pem")),
        timeout: Duration::from_secs(5),
    })
    .expect("target")
    .get_json()
    .await
    .expect("answered over HTTPS");
    assert_eq!(keys["keys"][0]["alg"], "ES256", "{keys}");

    // One that does not trust it gets nothing.
    let untrusting = HttpTarget::new(HttpTargetSettings {
        name: "test",
        url: format!("https://127.0.0.1:{}/.well-known/jwks.json", address.port()),
        bearer_token: None,
        extra_roots_pem: None,
        timeout: Duration::from_secs(5),
    })
    .expect("target");
    assert!(untrusting.get_json::<Value>().await.is_err());

    // Plain HTTP on the HTTPS port is not answered.
    let plain = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let answer = plain
        .request(
            http::Request::get(format!("http://{address}/.well-known/jwks.json"))
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await;
    assert!(
        answer
            .as_ref()
            .map_or(true, |response| !response.status().is_success()),
        "{answer:?}"
    );

    // A client certificate from the CA is taken; revoked, it is refused at the next handshake,
    // and the connection it already has ends at its next request.
    let client = client_with_certificate(
        &read("ca.pem"),
        &read("diskominfo.pem"),
        &read("diskominfo-key.pem"),
    );
    let mut open = connect(&client, address).await;
    assert_eq!(get(&mut open).await.expect("answered"), 200);
    govbus_kit::development_ca::revoke_development_certificate(
        certificates.path(),
        "diskominfo",
        govbus_kit::development_ca::RevocationReason::KeyCompromise,
    )
    .expect("revoked");
    assert!(
        clients.reload().expect("the new list reads"),
        "the list changed"
    );
    assert!(
        get(&mut open).await.is_err(),
        "the open connection ends once its certificate is revoked"
    );
    let mut again = connect(&client, address).await;
    assert!(
        get(&mut again).await.is_err(),
        "a new connection with the revoked certificate is refused"
    );
    // The certificate issued in its place is taken.
    let renewed = client_with_certificate(
        &read("ca.pem"),
        &read("diskominfo.pem"),
        &read("diskominfo-key.pem"),
    );
    let mut renewed = connect(&renewed, address).await;
    assert_eq!(get(&mut renewed).await.expect("answered"), 200);

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("stops")
        .expect("joined");
}

fn client_with_certificate(
    ca_pem: &[u8],
    certificate_pem: &[u8],
    key_pem: &[u8],
) -> tokio_rustls::TlsConnector {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(certificate.expect("CA")).expect("root");
    }
    let chain = CertificateDer::pem_slice_iter(certificate_pem)
        .collect::<Result<Vec<_>, _>>()
        .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(key_pem).expect("key");
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .expect("client certificate");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

type Connection = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(client: &tokio_rustls::TlsConnector, address: std::net::SocketAddr) -> Connection {
    let tcp = tokio::net::TcpStream::connect(address)
        .await
        .expect("connected");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").expect("name");
    // Under TLS 1.3 a refused client certificate shows at the first read, not here.
    client.connect(name, tcp).await.expect("handshake sent")
}

/// One keep-alive GET of the key set on `connection`: its status, or why there was none.
async fn get(connection: &mut Connection) -> std::io::Result<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    connection
        .write_all(b"GET /.well-known/jwks.json HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await?;
    let mut answer = Vec::new();
    let mut buffer = [0_u8; 4096];
    loop {
        let read = connection.read(&mut buffer).await?;
        if read == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed without an answer",
            ));
        }
        answer.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|code| code.parse().ok())
                    .unwrap_or(0);
                return Ok(status);
            }
        }
    }
}
