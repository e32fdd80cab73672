//! Applications signed in by the deployment's identity provider: a real, certified OpenID
//! provider (npm `oidc-provider`, started by the test) issues JWT access tokens by the client
//! credentials grant; the gateway checks them through the provider's published keys, its
//! issuer, the audience and the expiry, and lets through only registered applications.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use govbus_gateway::applications::{ApplicationName, SignsInWith};
use govbus_gateway::providers::{IdentityProvider, ProviderSettings};
use govbus_harness::{OidcClient, OidcProvider};
use prost_reflect::DescriptorPool;

mod support;

use support::{Access, AccessOptions, send};

const REGISTERED: &str = "dinsos.siks";
const UNREGISTERED: &str = "dinkes.simpus";
const SECRET: &str = "a-secret-the-provider-keeps";

fn start_provider(audience: &'static str, ttl: Duration) -> tokio::task::JoinHandle<OidcProvider> {
    tokio::task::spawn_blocking(move || {
        let clients = [REGISTERED, UNREGISTERED].map(|id| OidcClient {
            id: id.to_owned(),
            secret: SECRET.to_owned(),
        });
        OidcProvider::start(&clients, audience, ttl).expect("the OpenID provider starts")
    })
}

async fn token_of(provider: &OidcProvider, client: &str) -> String {
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{client}:{SECRET}"))
    );
    let answer = send(
        "POST",
        &provider.token_endpoint(),
        &[
            ("authorization", &basic),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(answer.status, 200, "{}\n{}", answer.json, provider.log());
    answer.json["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

fn trusting(provider: &OidcProvider, leeway_seconds: Option<u64>) -> IdentityProvider {
    IdentityProvider::new(ProviderSettings {
        issuer: provider.issuer(),
        audience: "govbus".to_owned(),
        client_claim: None,
        leeway_seconds,
        ca_file: None,
    })
    .expect("provider settings")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_the_identity_provider_are_checked_through_its_keys() {
    let trusted = start_provider("govbus", Duration::from_secs(300));
    let short_lived = start_provider("govbus", Duration::from_secs(1));
    let other_audience = start_provider("another-system", Duration::from_secs(300));
    let untrusted = start_provider("govbus", Duration::from_secs(300));
    let (trusted, short_lived, other_audience, untrusted) = (
        trusted.await.expect("joined"),
        short_lived.await.expect("joined"),
        other_audience.await.expect("joined"),
        untrusted.await.expect("joined"),
    );

    let service = "govbus.evaluation.v1.EvaluationService";
    let policy = format!(
        "[[grant]]\ncallers = [\"{REGISTERED}\"]\nmethods = [\"{service}/ListInstruments\"]\n"
    );
    let access = Access::start(AccessOptions {
        providers: vec![
            trusting(&trusted, None),
            trusting(&short_lived, Some(0)),
            trusting(&other_audience, None),
        ],
        ..AccessOptions::new(policy)
    })
    .await;
    access
        .applications
        .register(
            &ApplicationName::parse(REGISTERED).expect("name"),
            "Sistem Informasi Kesejahteraan Sosial",
            None,
            SignsInWith::IdentityProvider,
        )
        .await
        .expect("registered");
    // No evaluation service behind it: a call let through is answered 503, one refused 401.
    let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
    let pool = DescriptorPool::decode(govbus_proto::FILE_DESCRIPTOR_SET).expect("pool");
    let (base, _server) =
        support::serve(access.gateway(&pool, BTreeMap::from([(service.to_owned(), channel)])))
            .await;
    let call = async |token: &str| {
        let authorization = format!("Bearer {token}");
        send(
            "GET",
            &format!("{base}/evaluation/v1/instruments"),
            &[("authorization", &authorization)],
            "",
        )
        .await
    };
    // The registry is reread every second: a new application is let in within that.
    let token = token_of(&trusted, REGISTERED).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let through = loop {
        let answer = call(&token).await;
        if answer.status != 401 || std::time::Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        through.status != 401 && through.status != 403,
        "{} {}",
        through.status,
        through.json
    );

    let refusal = |answer: &support::Answer| {
        assert_eq!(answer.status, 401, "{}", answer.json);
        answer.headers["www-authenticate"]
            .to_str()
            .expect("text")
            .to_owned()
    };
    // A client the provider knows but the gateway's registry does not.
    let stranger = call(&token_of(&trusted, UNREGISTERED).await).await;
    assert!(refusal(&stranger).contains("not registered"));
    // Signed for another audience.
    let elsewhere = call(&token_of(&other_audience, REGISTERED).await).await;
    assert!(refusal(&elsewhere).contains("InvalidAudience"));
    // An issuer the gateway does not trust.
    let foreign = call(&token_of(&untrusted, REGISTERED).await).await;
    assert!(refusal(&foreign).contains("not trusted"));
    // Expired (no leeway for this provider).
    let expiring = token_of(&short_lived, REGISTERED).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let expired = call(&expiring).await;
    assert!(refusal(&expired).contains("ExpiredSignature"));
    // A token of the trusted provider with its signature cut off.
    let token = token_of(&trusted, REGISTERED).await;
    let forged = format!("{}.", token.rsplit_once('.').expect("three parts").0);
    refusal(&call(&forged).await);
}
