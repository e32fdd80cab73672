//! The link to SPLP against a stand-in for its API manager and gateway, served by the test on a
//! free port, that checks every call it gets: the client-credentials grant with the instance's
//! id and secret, a token it issued on every other call, OpenAPI 3.1 documents naming the
//! gateway, and nothing of the caller's own credentials passed on.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine as _;
use govbus_gateway::splp::{Publication, Splp, SplpSettings, spawn_publishing};
use prost_reflect::DescriptorPool;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const CLIENT_ID: &str = "ID-3573";
/// Characters a Basic header must form-encode.
const CLIENT_SECRET: &str = "s3cret:with/odd+chars";

/// What the stand-in saw and decides.
#[derive(Default)]
struct StandIn {
    issued: Vec<String>,
    /// Tokens it no longer takes (revoked before they expired).
    revoked: Vec<String>,
    published: BTreeMap<String, Value>,
    calls: Vec<Value>,
    refusals: Vec<String>,
}

type Shared = Arc<Mutex<StandIn>>;

fn refuse(state: &Shared, why: String) -> axum::response::Response {
    state.lock().expect("lock").refusals.push(why.clone());
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": "invalid_token", "why": why})),
    )
        .into_response()
}

/// The bearer token of `headers`, if the stand-in issued it and has not revoked it.
fn bearer(state: &Shared, headers: &HeaderMap) -> Result<String, String> {
    let token = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or("no bearer token")?
        .to_owned();
    let seen = state.lock().expect("lock");
    if !seen.issued.contains(&token) {
        return Err(format!("a token it never issued: {token}"));
    }
    if seen.revoked.contains(&token) {
        return Err("a revoked token".to_owned());
    }
    Ok(token)
}

async fn token(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{CLIENT_ID}:s3cret%3Awith%2Fodd%2Bchars"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return refuse(&state, "the client's credentials are wrong".to_owned());
    }
    if body != "grant_type=client_credentials" {
        return refuse(&state, format!("not the client credentials grant: {body}"));
    }
    let mut seen = state.lock().expect("lock");
    let token = format!("splp-token-{}", seen.issued.len() + 1);
    seen.issued.push(token.clone());
    axum::Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600}))
        .into_response()
}

async fn publish(
    State(state): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    axum::Json(description): axum::Json<Value>,
) -> axum::response::Response {
    if let Err(why) = bearer(&state, &headers) {
        return refuse(&state, why);
    }
    let definition = &description["definition"];
    let valid = definition["openapi"]
        .as_str()
        .is_some_and(|v| v.starts_with("3.1"))
        && definition["paths"]
            .as_object()
            .is_some_and(|paths| !paths.is_empty())
        && description["endpoint"]
            .as_str()
            .is_some_and(|e| e.starts_with("http"));
    if !valid {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "not an OpenAPI 3.1 description",
        )
            .into_response();
    }
    state
        .lock()
        .expect("lock")
        .published
        .insert(name, description);
    StatusCode::CREATED.into_response()
}

async fn offered(
    State(state): State<Shared>,
    Path(rest): Path<String>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    if let Err(why) = bearer(&state, &headers) {
        return refuse(&state, why);
    }
    let call = json!({
        "method": method.as_str(),
        "path": rest,
        "query": uri.query(),
        "body": body,
        "requestId": headers.get("x-request-id").and_then(|v| v.to_str().ok()),
        "contentType": headers.get("content-type").and_then(|v| v.to_str().ok()),
    });
    state.lock().expect("lock").calls.push(call.clone());
    (StatusCode::OK, axum::Json(json!({"answered": call}))).into_response()
}

/// The stand-in on a free port: its base URL and what it sees.
async fn stand_in() -> (String, Shared) {
    let state = Shared::default();
    let app = axum::Router::new()
        .route("/oauth2/token", axum::routing::post(token))
        .route("/publisher/apis/{name}", axum::routing::put(publish))
        .route(
            "/gateway/dukcapil/nik/v1/{*rest}",
            axum::routing::any(offered),
        )
        .with_state(Arc::clone(&state));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, state)
}

fn settings(base: &str, secret_file: &std::path::Path) -> SplpSettings {
    SplpSettings {
        token_url: format!("{base}/oauth2/token"),
        client_id: CLIENT_ID.to_owned(),
        client_secret_file: secret_file.to_owned(),
        publisher_url: Some(format!("{base}/publisher")),
        gateway_url: Some(format!("{base}/gateway")),
        apis: Some("dukcapil-nik=/dukcapil/nik/v1".to_owned()),
        ca_file: None,
    }
}

#[tokio::test]
async fn documents_are_published_and_offered_services_called_with_the_instances_token() {
    let (base, seen) = stand_in().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let secret_file = dir.path().join("splp-secret");
    std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).expect("written");
    let splp = Arc::new(Splp::new(&settings(&base, &secret_file)).expect("link"));

    // The application may POST to the offered service, nothing else.
    let policy = format!(
        "[[grant]]\ncallers = [\"{}\"]\nmethods = [\"splp.dukcapil-nik/POST\"]\npurpose = \"Checking a resident's NIK with Dukcapil\"\n",
        support::APPLICATION
    );
    let access = support::Access::start(support::AccessOptions::new(policy)).await;
    let pool = DescriptorPool::decode(govbus_proto::FILE_DESCRIPTOR_SET).expect("pool");
    let channels = BTreeMap::from([(
        "govbus.identity.v1.IdentityService".to_owned(),
        tonic::transport::Channel::from_static("http://127.0.0.1:9").connect_lazy(),
    )]);
    let gateway = access.gateway_with_splp(&pool, channels, Arc::clone(&splp));
    let documents = gateway.service_documents();
    let (gateway_url, server) = support::serve(gateway).await;

    // Published: each service's document, with the gateway as its endpoint.
    let stop = CancellationToken::new();
    let (report, mut reports) = tokio::sync::mpsc::unbounded_channel::<Publication>();
    let publishing = spawn_publishing(
        Arc::clone(&splp),
        documents
            .into_iter()
            .map(|(service, document)| (format!("id-3573-{service}"), document))
            .collect(),
        gateway_url.clone(),
        move |publication| {
            let _ = report.send(publication);
        },
        stop.clone(),
    );
    let first = reports.recv().await.expect("a round");
    assert_eq!(first.failure, None);
    assert_eq!(first.published, ["id-3573-identity"]);
    {
        let seen = seen.lock().expect("lock");
        let identity = &seen.published["id-3573-identity"];
        assert_eq!(identity["endpoint"], gateway_url);
        assert!(
            identity["definition"]["paths"]
                .as_object()
                .expect("paths")
                .contains_key("/identity/v1/citizens:verify"),
            "{identity}"
        );
        assert_eq!(seen.issued.len(), 1, "{:?}", seen.refusals);
    }

    // Called through the gateway with the instance's token, never the application's.
    let app_token = access.token(support::APPLICATION);
    let answer = support::send(
        "POST",
        &format!("{gateway_url}/splp/dukcapil-nik/verify?strict=true"),
        &[
            ("authorization", &format!("Bearer {app_token}")),
            ("content-type", "application/json"),
            ("x-request-id", "req-1"),
        ],
        r#"{"nik":"3573025708900002"}"#,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.json);
    assert_eq!(
        answer.json["answered"],
        json!({
            "method": "POST", "path": "verify", "query": "strict=true",
            "body": r#"{"nik":"3573025708900002"}"#, "requestId": "req-1",
            "contentType": "application/json"
        })
    );
    assert_eq!(
        seen.lock().expect("lock").issued.len(),
        1,
        "the kept token is reused"
    );

    // As the application, with its own token.
    let bearer = format!("Bearer {app_token}");
    let as_application = async |method: &str, api: &str| {
        support::send(
            method,
            &format!("{gateway_url}/splp/{api}/verify"),
            &[("authorization", &bearer)],
            "{}",
        )
        .await
    };

    // SPLP revokes the kept token: the next call gets a fresh one and goes through.
    {
        let mut seen = seen.lock().expect("lock");
        let revoked = seen.issued[0].clone();
        seen.revoked.push(revoked);
    }
    let answer = as_application("POST", "dukcapil-nik").await;
    assert_eq!(answer.status, 200, "{}", answer.json);
    assert_eq!(seen.lock().expect("lock").issued.len(), 2);

    // Not granted GET; no such service; no token at all.
    let answer = as_application("GET", "dukcapil-nik").await;
    assert_eq!(answer.status, 403, "{}", answer.json);
    assert!(
        answer.json["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("splp.dukcapil-nik/GET")),
        "{}",
        answer.json
    );
    let answer = as_application("POST", "bpjs").await;
    assert_eq!(answer.status, 404, "{}", answer.json);
    // A path that would leave the offered service (to the API manager, say) is refused.
    for escaping in [
        "..%2F..%2F..%2Fpublisher%2Fapis%2Fid-3573-identity",
        "%2e%2e/%2e%2e/publisher",
        "verify%3Fadmin=1",
    ] {
        let answer = support::send(
            "POST",
            &format!("{gateway_url}/splp/dukcapil-nik/{escaping}"),
            &[("authorization", &bearer)],
            "{}",
        )
        .await;
        assert_eq!(answer.status, 400, "{escaping}: {}", answer.json);
    }
    let answer = as_application("POST", "bpjs").await;
    assert_eq!(answer.status, 404, "{}", answer.json);
    let answer = support::send(
        "POST",
        &format!("{gateway_url}/splp/dukcapil-nik/verify"),
        &[],
        "{}",
    )
    .await;
    assert_eq!(answer.status, 401, "{}", answer.json);
    assert_eq!(
        seen.lock().expect("lock").calls.len(),
        2,
        "refused calls never reach SPLP"
    );

    stop.cancel();
    publishing.await.expect("publishing stops");
    server.abort();
}

#[tokio::test]
async fn a_refused_client_is_reported_and_retried() {
    let (base, seen) = stand_in().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let secret_file = dir.path().join("splp-secret");
    std::fs::write(&secret_file, "not the secret").expect("written");
    let splp = Arc::new(Splp::new(&settings(&base, &secret_file)).expect("link"));
    let stop = CancellationToken::new();
    let (report, mut reports) = tokio::sync::mpsc::unbounded_channel::<Publication>();
    let publishing = spawn_publishing(
        splp,
        vec![(
            "id-3573-identity".to_owned(),
            json!({"openapi": "3.1.0", "info": {"version": "1"}, "paths": {"/x": {}}}),
        )],
        "http://127.0.0.1:1".to_owned(),
        move |publication| {
            let _ = report.send(publication);
        },
        stop.clone(),
    );
    for _ in 0..2 {
        let round = reports.recv().await.expect("a round");
        assert!(round.published.is_empty());
        let failure = round.failure.expect("failed");
        assert!(failure.contains("token endpoint answered 401"), "{failure}");
    }
    assert!(seen.lock().expect("lock").published.is_empty());
    stop.cancel();
    publishing.await.expect("publishing stops");
}
