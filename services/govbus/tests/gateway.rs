//! An agency's application through the stack's REST gateway: registered, granted two methods
//! in the access policy, signed in at the token endpoint, it registers and verifies a citizen;
//! a method it was not granted is refused; the identity service's processing log names the
//! application as the requester and the gateway as the intermediary; the gateway reports the
//! application's calls and its SPLP link (to a stand-in API manager) on the bus, and the
//! evaluation service counts both for SPBE indicator 18.

mod support;

use base64::Engine as _;
use bytes::Bytes;
use govbus_gateway::applications::{ApplicationName, Applications, SignsInWith};
use http_body_util::{BodyExt as _, Full};
use serde_json::{Value, json};
use support::{eventually, install_telemetry, start_with};

const APPLICATION: &str = "disnaker-pmptsp.sicantik";

const SPLP_SECRET: &str = "splp-secret-of-the-instance";

/// A stand-in for SPLP's API manager: issues a token to the instance's client, takes each
/// document put with that token.
struct SplpStandIn {
    base: String,
    published: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

async fn splp_stand_in() -> SplpStandIn {
    use axum::extract::{Path, State};
    use axum::http::{HeaderMap, StatusCode};
    type Published = std::sync::Arc<std::sync::Mutex<Vec<String>>>;
    let published = Published::default();
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("ID-3573:{SPLP_SECRET}"))
    );
    let token = async move |headers: HeaderMap| {
        if headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(basic.as_str()) {
            (
                StatusCode::OK,
                r#"{"access_token":"splp-1","token_type":"Bearer","expires_in":600}"#,
            )
        } else {
            (StatusCode::UNAUTHORIZED, r#"{"error":"invalid_client"}"#)
        }
    };
    let publish = async |State(published): State<Published>,
                         Path(name): Path<String>,
                         headers: HeaderMap,
                         body: String| {
        let authorized =
            headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer splp-1");
        let described: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        if !authorized || described["definition"]["openapi"].as_str().is_none() {
            return StatusCode::UNAUTHORIZED;
        }
        published.lock().expect("lock").push(name);
        StatusCode::NO_CONTENT
    };
    let app = axum::Router::new()
        .route("/oauth2/token", axum::routing::post(token))
        .route("/publisher/apis/{name}", axum::routing::put(publish))
        .with_state(std::sync::Arc::clone(&published));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    SplpStandIn { base, published }
}

async fn send(method: &str, url: &str, headers: &[(&str, String)], body: String) -> (u16, Value) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut request = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = client
        .request(request.body(Full::new(Bytes::from(body))).expect("request"))
        .await
        .expect("answered");
    let status = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_calls_through_the_gateway_and_the_log_names_it_and_the_gateway() {
    let telemetry = install_telemetry();
    let data = tempfile::tempdir().expect("temp dir");
    // The application's grant beside the shipped ones, in the policy file the stack reads.
    std::fs::write(
        data.path().join("access-policy.toml"),
        format!(
            "{}\n[[grant]]\ncallers = [\"{APPLICATION}\"]\nmethods = [\n  \"govbus.identity.v1.IdentityService/RegisterCitizen\",\n  \"govbus.identity.v1.IdentityService/VerifyCitizen\",\n  \"govbus.evaluation.v1.EvaluationService/GetIntegrationEvidence\",\n]\npurpose = \"Checking an applicant's identity for a business licence (DPMPTSP)\"\n\n[[grant]]\ncallers = [\"{APPLICATION}\"]\nevents = [\"identity.citizen.registered.v1\"]\npurpose = \"Opening a licence file for each newly registered applicant\"\n",
            govbus::stack::shipped_policy()
        ),
    )
    .expect("policy written");
    let mut config = support::config(data.path());
    let splp = splp_stand_in().await;
    let secret_file = data.path().join("splp-secret");
    std::fs::write(&secret_file, SPLP_SECRET).expect("secret written");
    config.gateway.report_interval = std::time::Duration::from_secs(1);
    config.gateway.splp = Some(govbus_gateway::splp::SplpSettings {
        token_url: format!("{}/oauth2/token", splp.base),
        client_id: "ID-3573".to_owned(),
        client_secret_file: secret_file,
        publisher_url: Some(format!("{}/publisher", splp.base)),
        gateway_url: None,
        apis: None,
        ca_file: None,
    });
    let applications = Applications::new(
        govbus_gateway::database::open(&config.gateway_database_url())
            .await
            .expect("the gateway's database"),
    );
    let secret = applications
        .register(
            &ApplicationName::parse(APPLICATION).expect("name"),
            "SiCantik, the licensing office's front desk",
            None,
            SignsInWith::Secret,
        )
        .await
        .expect("registered")
        .expect("a secret");
    applications.db().close().await;

    let running = start_with(config, &telemetry).await;
    let base = format!(
        "http://{}",
        running.stack.endpoints().gateway.expect("the gateway runs")
    );
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{APPLICATION}:{}", secret.expose()))
    );
    let (status, issued) = send(
        "POST",
        &format!("{base}/oauth2/token"),
        &[
            ("authorization", basic),
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
        ],
        "grant_type=client_credentials".to_owned(),
    )
    .await;
    assert_eq!(status, 200, "{issued}");
    let bearer = format!("Bearer {}", issued["access_token"].as_str().expect("token"));
    let headers = [
        ("authorization", bearer.clone()),
        ("content-type", "application/json".to_owned()),
    ];

    // A pull subscription to identity's registrations, granted with a purpose: the events come
    // with their personal fields, and each handing-out is in the gateway's processing log.
    let identity_room = format!("{base}/r1/ID-3573/GOV/dispendukcapil/identity");
    let named = [
        headers[0].clone(),
        headers[1].clone(),
        (
            "x-govstack-client",
            "ID-3573/GOV/disnaker-pmptsp/sicantik".to_owned(),
        ),
    ];
    let (status, subscription) = send(
        "POST",
        &format!("{identity_room}/api/v1/subs/identity.citizen.registered.v1"),
        &named,
        json!({"eventType": "identity.citizen.registered.v1", "delivery": "PULL"}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{subscription}");

    let (members, kk) = govbus::demo::people::household(9_998, 0);
    let person = &members[0];
    let (status, registered) = send(
        "POST",
        &format!("{base}/identity/v1/citizens"),
        &[
            headers[0].clone(),
            headers[1].clone(),
            ("idempotency-key", "gateway-stack-1".to_owned()),
        ],
        json!({
            "nik": person.nik, "kkNumber": kk, "fullName": person.name,
            "birthPlace": "Malang", "birthDate": person.birth_date, "sex": person.sex.as_str_name(),
            "address": {"street": "Jl. Ijen 1", "kelurahanCode": person.kelurahan},
        })
        .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{registered}");
    let (status, verified) = send(
        "POST",
        &format!("{base}/identity/v1/citizens:verify"),
        &headers,
        json!({ "nik": person.nik }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{verified}");
    assert_eq!(verified["result"], "VERIFICATION_RESULT_MATCH");

    // Not granted: refused by the gateway with the reason.
    let (status, refused) = send(
        "POST",
        &format!("{base}/identity/v1/citizens:recordDeath"),
        &headers,
        json!({ "nik": person.nik, "dateOfDeath": "2026-12-01", "idempotencyKey": "x-1" })
            .to_string(),
    )
    .await;
    assert_eq!(status, 403, "{refused}");

    let pulled = eventually("the registration for the subscriber", async || {
        let (status, item) = send(
            "GET",
            &format!("{identity_room}/pull/v1/identity.citizen.registered.v1"),
            &named,
            String::new(),
        )
        .await;
        (status == 200).then_some(item)
    })
    .await;
    assert!(
        pulled["event"]["citizenRef"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "personal fields for a purpose: {pulled}"
    );

    // The processing log: the application asked, through the gateway; and it was handed the
    // registration through the gateway.
    let handed = eventually("the gateway's handing-out in the log", async || {
        let history: Value = running
            .client
            .post_json("/api/audit/subject", &json!({ "nik": person.nik }))
            .await
            .ok()?;
        history["entries"]
            .as_array()?
            .iter()
            .find(|entry| entry["writer"] == "gateway")
            .cloned()
    })
    .await;
    assert_eq!(handed["requester"], APPLICATION, "{handed}");
    assert_eq!(handed["via"], "gateway", "{handed}");
    assert!(
        handed["action"]
            .as_str()
            .is_some_and(|action| action.starts_with("identity.citizen.registered.v1 by pull")),
        "{handed}"
    );
    let entries = eventually("the application's processings in the log", async || {
        let history: Value = running
            .client
            .post_json("/api/audit/subject", &json!({ "nik": person.nik }))
            .await
            .ok()?;
        let entries: Vec<Value> = history["entries"]
            .as_array()?
            .iter()
            .filter(|entry| entry["requester"] == APPLICATION && entry["writer"] == "identity")
            .cloned()
            .collect();
        (entries.len() >= 2).then_some(entries)
    })
    .await;
    for entry in &entries {
        assert_eq!(entry["writer"], "identity", "{entry}");
        assert_eq!(entry["via"], "gateway", "{entry}");
        assert!(
            entry["purpose"]
                .as_str()
                .is_some_and(|purpose| purpose.contains("business licence")),
            "{entry}"
        );
    }
    let verify = running
        .client
        .post_json::<Value>("/api/audit/verify", &json!({}))
        .await
        .expect("verified");
    assert_eq!(verify["intact"], true, "{verify}");

    // The gateway published the services' documents to SPLP, and reported that and the
    // application's calls on the bus; evaluation counts the application for its agency and the
    // link as working.
    let connector = eventually("the gateway's reports in the evidence", async || {
        let (status, evidence) = send(
            "GET",
            &format!("{base}/evaluation/v1/evidence"),
            &[headers[0].clone()],
            String::new(),
        )
        .await;
        assert_eq!(status, 200, "{evidence}");
        let called = evidence["calls"].as_array()?.iter().any(|call| {
            call["caller"] == APPLICATION
                && call["callee"] == "identity"
                && call["method"] == "VerifyCitizen"
        });
        let connector = evidence["suggestions"]
            .as_array()?
            .iter()
            .find(|suggestion| suggestion["indicator"] == 18)?["suggestion"]
            .clone();
        let linked = connector["facts"].as_array()?.iter().any(|fact| {
            fact.as_str().is_some_and(|fact| {
                fact.starts_with("SPLP (publish): ") && !fact.contains(" 0 succeeded")
            })
        });
        (called && linked).then_some(connector)
    })
    .await;
    let facts: Vec<&str> = connector["facts"]
        .as_array()
        .expect("facts")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        facts
            .iter()
            .any(|fact| fact.contains("disnaker-pmptsp (disnaker-pmptsp.sicantik")),
        "{facts:?}"
    );
    assert!(
        !facts
            .iter()
            .any(|fact| fact.starts_with("no link to the national SPLP")),
        "{facts:?}"
    );
    let published = splp.published.lock().expect("lock").clone();
    assert!(
        published.contains(&"id-3573-identity".to_owned()),
        "{published:?}"
    );

    // The directory names the application under its agency, and the methods granted to it.
    let caller = (
        "x-govstack-client",
        "ID-3573/GOV/disnaker-pmptsp/sicantik".to_owned(),
    );
    let (status, clients) = send(
        "GET",
        &format!("{base}/listClients"),
        &[("authorization", bearer.clone()), caller.clone()],
        String::new(),
    )
    .await;
    assert_eq!(status, 200, "{clients}");
    let listed = |member: &str, application: &str| {
        clients["member"].as_array().is_some_and(|members| {
            members.iter().any(|entry| {
                entry["id"]["memberCode"] == member && entry["id"]["applicationCode"] == application
            })
        })
    };
    assert!(listed("disnaker-pmptsp", "sicantik"), "{clients}");
    assert!(listed("dispendukcapil", "identity"), "{clients}");
    let (status, allowed) = send(
        "GET",
        &format!("{base}/r1/ID-3573/GOV/dispendukcapil/identity/allowedMethods"),
        &[("authorization", bearer.clone()), caller],
        String::new(),
    )
    .await;
    assert_eq!(status, 200, "{allowed}");
    let mut paths: Vec<&str> = allowed["member"][0]["endpointList"]["member"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|endpoint| endpoint["path"].as_str())
        .collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        ["/identity/v1/citizens", "/identity/v1/citizens:verify"],
        "{allowed}"
    );

    // It publishes an event of its own through the gateway's NATS user, and reads it back.
    let room = format!("{base}/r1/ID-3573/GOV/disnaker-pmptsp/sicantik");
    let named = [
        ("authorization", bearer.clone()),
        (
            "x-govstack-client",
            "ID-3573/GOV/disnaker-pmptsp/sicantik".to_owned(),
        ),
        ("content-type", "application/json".to_owned()),
    ];
    let (status, registered) = send(
        "POST",
        &format!("{room}/api/v1/eventType"),
        &named,
        json!({"eventType": "queueChanged", "schema": {"type": "object", "required": ["waiting"]}})
            .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{registered}");
    let (status, published) = send(
        "POST",
        &format!("{room}/pub/v1/queueChanged"),
        &named,
        json!({"eventType": "queueChanged", "event": {"waiting": 3}}).to_string(),
    )
    .await;
    assert_eq!(status, 201, "{published}");
    let id = published["id"].as_str().expect("an id");
    let (status, item) = send(
        "GET",
        &format!("{room}/pub/v1/queueChanged/{id}"),
        &named,
        String::new(),
    )
    .await;
    assert_eq!(status, 200, "{item}");
    assert_eq!(item["event"], json!({"waiting": 3}));
    running.stack.stop().await;
}

#[test]
fn an_application_is_registered_under_an_agency_of_the_instance() {
    let data = tempfile::tempdir().expect("temp dir");
    let govbus = |arguments: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_govbus"))
            .args(["applications"])
            .args(arguments)
            .arg("--data-dir")
            .arg(data.path())
            .output()
            .expect("govbus runs")
    };
    let refused = govbus(&["register", "dpmptsp.sicantik", "--description", "SiCantik"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("\"dpmptsp\" is not one of the instance's agencies")
            && said.contains("disnaker-pmptsp"),
        "{said}"
    );

    let registered = govbus(&[
        "register",
        APPLICATION,
        "--description",
        "SiCantik",
        "--json",
    ]);
    assert_eq!(registered.status.code(), Some(0), "{registered:?}");
    let answer: Value = serde_json::from_slice(&registered.stdout).expect("JSON");
    assert_eq!(answer["agency"], "disnaker-pmptsp");
    assert!(
        answer["client_secret"]
            .as_str()
            .is_some_and(|secret| secret.starts_with("gbs_"))
    );
    let listed = govbus(&["list", "--json"]);
    assert_eq!(listed.status.code(), Some(0), "{listed:?}");
    let list: Value = serde_json::from_slice(&listed.stdout).expect("JSON");
    assert!(
        list.as_array()
            .is_some_and(|applications| applications.iter().any(|application| {
                application["name"] == APPLICATION && application["revoked_at"].is_null()
            })),
        "{list}"
    );
}
