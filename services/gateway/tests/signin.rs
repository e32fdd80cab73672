//! Applications signing in: tokens from the gateway's token endpoint for the right secret
//! only, calls let through only with a valid token of a registered application that the policy
//! grants the method, within its rate limit; revocation and rotation. A real identity service
//! on SQLite and a real nats-server behind the gateway.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use govbus_gateway::applications::{ApplicationName, RateLimit, SignsInWith};
use govbus_harness::{NatsServer, TestDatabase};
use prost_reflect::DescriptorPool;

mod support;

use support::{APPLICATION, Access, AccessOptions, send};

const IDENTITY: &str = "govbus.identity.v1.IdentityService";
const VERIFY: &str = "/identity/v1/citizens:verify";
const A_NIK: &str = r#"{"nik": "3573025708900002"}"#;

struct Stand {
    access: Access,
    base: String,
    _server: tokio::task::JoinHandle<()>,
    identity: govbus_identity::Application,
    _nats: NatsServer,
    _db: TestDatabase,
}

impl Stand {
    async fn start(options: AccessOptions) -> Self {
        let nats = tokio::task::spawn_blocking(NatsServer::start)
            .await
            .expect("joined")
            .expect("nats-server");
        let (identity, channel, db) = support::plain_identity(&nats).await;
        let pool = DescriptorPool::decode(govbus_proto::FILE_DESCRIPTOR_SET).expect("pool");
        let access = Access::start(options).await;
        let gateway = access.gateway(&pool, BTreeMap::from([(IDENTITY.to_owned(), channel)]));
        let (base, server) = support::serve(gateway).await;
        Self {
            access,
            base,
            _server: server,
            identity,
            _nats: nats,
            _db: db,
        }
    }

    async fn verify(&self, token: &str) -> support::Answer {
        let authorization = format!("Bearer {token}");
        send(
            "POST",
            &format!("{}{VERIFY}", self.base),
            &[
                ("authorization", &authorization),
                ("content-type", "application/json"),
            ],
            A_NIK,
        )
        .await
    }

    async fn token_request(&self, headers: &[(&str, &str)], form: &str) -> support::Answer {
        let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        send("POST", &format!("{}/oauth2/token", self.base), &all, form).await
    }

    async fn stop(self) {
        self.identity.stop().await;
    }
}

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

fn identity_policy() -> String {
    support::every_method_of(&[IDENTITY])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_issued_for_the_right_secret_only() {
    let stand = Stand::start(AccessOptions::new(identity_policy())).await;
    let secret = stand.access.secret.expose().to_owned();

    // HTTP Basic, as RFC 6749 §2.3.1 prefers.
    let issued = stand
        .token_request(
            &[("authorization", &basic(APPLICATION, &secret))],
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(issued.status, 200, "{}", issued.json);
    assert_eq!(issued.json["token_type"], "Bearer");
    assert_eq!(issued.json["expires_in"], 300);
    assert_eq!(issued.headers["cache-control"], "no-store");
    let token = issued.json["access_token"].as_str().expect("token");
    assert_eq!(stand.verify(token).await.status, 200);

    // The credentials in the form instead.
    let form =
        format!("grant_type=client_credentials&client_id={APPLICATION}&client_secret={secret}");
    let issued = stand.token_request(&[], &form).await;
    assert_eq!(issued.status, 200, "{}", issued.json);

    // Both at once, a wrong secret, an unknown client, no credentials, another grant, no form.
    let both = stand
        .token_request(&[("authorization", &basic(APPLICATION, &secret))], &form)
        .await;
    assert_eq!(
        (both.status, both.json["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let wrong = stand
        .token_request(
            &[("authorization", &basic(APPLICATION, "gbs_not-the-secret"))],
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(
        (wrong.status, wrong.json["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert_eq!(wrong.headers["www-authenticate"], "Basic realm=\"govbus\"");
    let unknown = stand
        .token_request(
            &[("authorization", &basic("dinsos.unknown", &secret))],
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(unknown.status, 401);
    let none = stand
        .token_request(&[], "grant_type=client_credentials")
        .await;
    assert_eq!(
        (none.status, none.json["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let grant = stand
        .token_request(
            &[("authorization", &basic(APPLICATION, &secret))],
            "grant_type=password&username=a&password=b",
        )
        .await;
    assert_eq!(
        (grant.status, grant.json["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let json = send(
        "POST",
        &format!("{}/oauth2/token", stand.base),
        &[("content-type", "application/json")],
        r#"{"grant_type": "client_credentials"}"#,
    )
    .await;
    assert_eq!(json.status, 400);
    stand.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_needs_a_valid_token_of_a_registered_application_granted_the_method() {
    let stand = Stand::start(AccessOptions::new(identity_policy())).await;
    let url = format!("{}{VERIFY}", stand.base);

    // No token: 401 with the challenge, before anything about the route is said.
    let missing = send("POST", &url, &[("content-type", "application/json")], A_NIK).await;
    assert_eq!(missing.status, 401, "{}", missing.json);
    assert_eq!(
        missing.headers["www-authenticate"],
        "Bearer realm=\"govbus\""
    );
    assert_eq!(missing.json["error"]["status"], "UNAUTHENTICATED");
    let nowhere = send("GET", &format!("{}/nothing/here", stand.base), &[], "").await;
    assert_eq!(nowhere.status, 401);

    // Not a token; a token of the same issuer name signed with another key; another issuer.
    for token in [
        "not-a-jwt".to_owned(),
        Access::start(AccessOptions::new(identity_policy()))
            .await
            .token(APPLICATION),
        Access::start(AccessOptions {
            issuer: "https://another-gateway.test".to_owned(),
            ..AccessOptions::new(identity_policy())
        })
        .await
        .token(APPLICATION),
    ] {
        let refused = stand.verify(&token).await;
        assert_eq!(refused.status, 401, "{}", refused.json);
        let challenge = refused.headers["www-authenticate"].to_str().expect("text");
        assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    }

    // A valid token of an application the registry does not know.
    let stranger = stand.verify(&stand.access.token("dinsos.stranger")).await;
    assert_eq!(stranger.status, 401);
    assert!(
        stranger.json["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("not a registered application")),
        "{}",
        stranger.json
    );

    // A registered application the policy grants nothing: 403.
    let name = ApplicationName::parse("dinsos.siks").expect("name");
    stand
        .access
        .applications
        .register(
            &name,
            "Sistem Informasi Kesejahteraan Sosial",
            None,
            SignsInWith::Secret,
        )
        .await
        .expect("registered");
    let token = stand.access.token("dinsos.siks");
    let denied = loop {
        // The gateway rereads the registry every second.
        let answer = stand.verify(&token).await;
        if answer.status != 401 {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(denied.status, 403, "{}", denied.json);
    assert_eq!(denied.json["error"]["status"], "PERMISSION_DENIED");
    assert!(
        denied.json["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("dinsos.siks may not call")),
        "{}",
        denied.json
    );

    // Granted: through; revoked: refused at the token endpoint at once, and its token soon.
    let token = stand.access.token(APPLICATION);
    assert_eq!(stand.verify(&token).await.status, 200);
    let ours = ApplicationName::parse(APPLICATION).expect("name");
    stand
        .access
        .applications
        .revoke(&ours)
        .await
        .expect("revoked");
    let secret = stand.access.secret.expose().to_owned();
    let refused = stand
        .token_request(
            &[("authorization", &basic(APPLICATION, &secret))],
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(refused.status, 401);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = stand.verify(&token).await;
        if answer.status == 401 {
            break;
        }
        assert_eq!(answer.status, 200);
        assert!(
            Instant::now() < deadline,
            "a revoked application is still let through"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = stand.access.applications.list().await.expect("listed");
    assert!(
        listed
            .iter()
            .any(|app| app.name == APPLICATION && app.revoked_at.is_some())
    );
    stand.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refused() {
    let stand = Stand::start(AccessOptions {
        lifetime: Duration::from_secs(1),
        ..AccessOptions::new(identity_policy())
    })
    .await;
    let token = stand.access.token(APPLICATION);
    assert_eq!(stand.verify(&token).await.status, 200);
    // `exp` is a whole second: two seconds on, the token is past it however the clock fell.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let expired = stand.verify(&token).await;
    assert_eq!(expired.status, 401);
    let challenge = expired.headers["www-authenticate"].to_str().expect("text");
    assert!(challenge.contains("ExpiredSignature"), "{challenge}");
    stand.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_over_its_rate_limit_is_told_when_to_retry() {
    let stand = Stand::start(AccessOptions {
        rate: RateLimit::new(1, 2).expect("limit"),
        ..AccessOptions::new(identity_policy())
    })
    .await;
    let token = stand.access.token(APPLICATION);
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..6 {
        let answer = stand.verify(&token).await;
        if answer.status == 429 {
            retry_after = answer.headers.get("retry-after").cloned();
            assert_eq!(answer.json["error"]["status"], "RESOURCE_EXHAUSTED");
        }
        statuses.push(answer.status);
    }
    assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
    let seconds: u64 = retry_after
        .expect("Retry-After")
        .to_str()
        .expect("text")
        .parse()
        .expect("seconds");
    assert!(seconds >= 1);
    stand.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_replaces_the_old_one_after_its_grace() {
    let stand = Stand::start(AccessOptions::new(identity_policy())).await;
    let name = ApplicationName::parse(APPLICATION).expect("name");
    let old = stand.access.secret.expose().to_owned();
    let token_for = async |secret: &str| {
        stand
            .token_request(
                &[("authorization", &basic(APPLICATION, secret))],
                "grant_type=client_credentials",
            )
            .await
            .status
    };
    let kept = stand
        .access
        .applications
        .rotate_secret(&name, Duration::from_secs(3600))
        .await
        .expect("rotated");
    assert_eq!(token_for(kept.expose()).await, 200);
    assert_eq!(
        token_for(&old).await,
        200,
        "the previous secret is valid for its grace"
    );
    let listed = stand.access.applications.list().await.expect("listed");
    assert!(listed[0].previous_secret_valid_until.is_some());

    let replaced = stand
        .access
        .applications
        .rotate_secret(&name, Duration::ZERO)
        .await
        .expect("rotated");
    assert_eq!(token_for(replaced.expose()).await, 200);
    assert_eq!(token_for(kept.expose()).await, 401);
    assert_eq!(token_for(&old).await, 401);
    stand.stop().await;
}
