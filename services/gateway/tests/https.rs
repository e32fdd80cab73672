//! The gateway over HTTPS: its certificate checked by a client that trusts the deployment's CA,
//! plain HTTP on the same port refused, and a clean stop.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use govbus_kit::outbound::{HttpTarget, HttpTargetSettings};
use govbus_kit::tls::generate_development_certificates;
use http_body_util::Full;
use prost_reflect::DescriptorPool;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_serves_https_with_its_certificate() {
    let certificates = tempfile::tempdir().expect("temp dir");
    generate_development_certificates(certificates.path(), &["gateway"]).expect("certificates");
    let read = |name: &str| std::fs::read(certificates.path().join(name)).expect("file");
    let tls = govbus_gateway::serve::https_config(
        &read("gateway.pem"),
        &read("gateway-key.pem"),
        &read("ca.pem"),
    )
    .expect("HTTPS configuration");
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

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .expect("stops")
        .expect("joined");
}
