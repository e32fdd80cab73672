//! Publish/subscribe over HTTP as the GovStack Information Mediator's PubSub API specifies it,
//! on a real nats-server: an application registers its event types and publishes into its own
//! room only, each event checked against its schema and answered once JetStream stored it as a
//! CloudEvent on the application's own subject; services' rooms hold their contracts' types,
//! which HTTP cannot change; a retry with the same Idempotency-Key publishes once, also when
//! sent concurrently, on SQLite and PostgreSQL.

use std::collections::BTreeMap;

use govbus_bus::{Bus, BusOptions};
use govbus_gateway::applications::{ApplicationName, SignsInWith};
use std::sync::{Arc, Mutex};

use govbus_gateway::pubsub::PubSub;
use govbus_gateway::pubsub::webhooks::{self, WebhookSettings};
use govbus_harness::{NatsServer, TestBackend};
use serde_json::{Value as Json, json};

mod support;

const SIMPUS: &str = "dinkes.simpus";
const SIKS: &str = "dinsos-p3ap2kb.siks";
const ROOM: &str = "/r1/ID-3573/GOV/dinkes/simpus";
const IDENTITY_ROOM: &str = "/r1/ID-3573/GOV/dispendukcapil/identity";

struct Running {
    base: String,
    access: support::Access,
    bus: Bus,
    pubsub: PubSub,
    gateway: govbus_gateway::Gateway,
    _nats: NatsServer,
}

/// What the subscribers may read: siks an application's births, for a purpose, and identity's
/// events without one (their personal fields left out).
const POLICY: &str = r#"
[[grant]]
callers = ["dinsos-p3ap2kb.siks"]
events = ["dinkes.simpus.newBirth"]
purpose = "Add newborns to their household's welfare record"

[[grant]]
callers = ["dinsos-p3ap2kb.siks"]
events = ["identity.*"]
"#;

async fn running(backend: TestBackend) -> Running {
    let nats = NatsServer::start().expect("nats-server");
    let bus = Bus::connect(BusOptions::new(nats.client_url()).client_name("gateway"))
        .await
        .expect("bus");
    let mut options = support::AccessOptions::new(POLICY.to_owned());
    options.backend = backend;
    let access = support::Access::start(options).await;
    for name in [SIMPUS, SIKS] {
        access
            .applications
            .register(
                &ApplicationName::parse(name).expect("name"),
                "An agency's application",
                None,
                SignsInWith::Secret,
            )
            .await
            .expect("registered");
    }
    let pubsub = PubSub::start(bus.clone(), access.applications.db().clone())
        .await
        .expect("publish/subscribe");
    let pool =
        prost_reflect::DescriptorPool::decode(govbus_proto::FILE_DESCRIPTOR_SET).expect("pool");
    let gateway = access.gateway_with(&pool, BTreeMap::new(), Some(pubsub.clone()));
    let (base, _server) = support::serve(gateway.clone()).await;
    // Let the running gateway read the registrations.
    tokio::time::sleep(govbus_gateway::applications::REFRESH_INTERVAL * 2).await;
    Running {
        base,
        access,
        bus,
        pubsub,
        gateway,
        _nats: nats,
    }
}

impl Running {
    /// `method path` as `application`, naming itself; the status and the body.
    async fn call(
        &self,
        application: &str,
        method: &str,
        path: &str,
        body: Option<&Json>,
        extra: &[(&str, &str)],
    ) -> (u16, Json) {
        let token = format!("Bearer {}", self.access.token(application));
        let client = format!("ID-3573/GOV/{}", application.replacen('.', "/", 1));
        let mut headers = vec![
            ("authorization", token.as_str()),
            ("x-govstack-client", client.as_str()),
            ("content-type", "application/json"),
        ];
        headers.extend_from_slice(extra);
        let body = body.map(Json::to_string).unwrap_or_default();
        let answer = support::send(method, &format!("{}{path}", self.base), &headers, &body).await;
        (answer.status, answer.json)
    }

    /// Dinkes' application registers its births' type.
    async fn register_births(&self) {
        let (status, answer) = self
            .call(
                SIMPUS,
                "POST",
                &format!("{ROOM}/api/v1/eventType"),
                Some(&json!({"eventType": "newBirth", "schema": birth_schema()})),
                &[],
            )
            .await;
        assert_eq!(status, 200, "{answer}");
    }

    async fn stream_messages(&self) -> u64 {
        let mut stream = self
            .bus
            .jetstream()
            .get_stream("GOVBUS_APP")
            .await
            .expect("the applications' stream");
        stream.info().await.expect("info").state.messages
    }
}

fn birth_schema() -> Json {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "required": ["weight"],
        "properties": {
            "weight": {"type": "number", "minimum": 0},
            "place": {"type": "string"},
        },
        "additionalProperties": false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_registers_its_types_and_publishes_only_in_its_own_room() {
    let running = running(TestBackend::Sqlite).await;
    let types = format!("{ROOM}/api/v1/eventType");
    let registration = json!({"eventType": "newBirth", "schema": birth_schema()});

    let (status, answer) = running
        .call(SIMPUS, "POST", &types, Some(&registration), &[])
        .await;
    assert_eq!(status, 200, "{answer}");
    let (status, _) = running
        .call(SIMPUS, "POST", &types, Some(&registration), &[])
        .await;
    assert_eq!(status, 409, "registered once");
    let (status, answer) = running
        .call(SIKS, "POST", &types, Some(&registration), &[])
        .await;
    assert_eq!(status, 403, "another application's room: {answer}");
    let (status, answer) = running
        .call(
            SIMPUS,
            "POST",
            &format!("{IDENTITY_ROOM}/api/v1/eventType"),
            Some(&registration),
            &[],
        )
        .await;
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("contract")),
        "{answer}"
    );
    for bad in [
        json!({"eventType": "new.birth", "schema": birth_schema()}),
        json!({"eventType": "death", "schema": {"type": 12}}),
        json!({"eventType": "death", "schema": "a string"}),
    ] {
        let (status, answer) = running.call(SIMPUS, "POST", &types, Some(&bad), &[]).await;
        assert_eq!(status, 400, "{bad}: {answer}");
    }

    // The rooms list their types: the application's own, a service's from its contract.
    let (status, listed) = running.call(SIKS, "GET", &types, None, &[]).await;
    assert_eq!((status, listed), (200, json!(["newBirth"])));
    let (status, listed) = running
        .call(
            SIKS,
            "GET",
            &format!("{IDENTITY_ROOM}/api/v1/eventType"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        listed
            .as_array()
            .is_some_and(|types| types.contains(&json!("identity.citizen.deceased.v1"))),
        "{listed}"
    );
    let (status, described) = running
        .call(
            SIKS,
            "GET",
            &format!("{IDENTITY_ROOM}/api/v1/eventType/identity.citizen.deceased.v1"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        described["schema"]["title"],
        "govbus.identity.v1.CitizenDeceased"
    );
    let (status, _) = running
        .call(
            SIMPUS,
            "DELETE",
            &format!("{IDENTITY_ROOM}/api/v1/eventType/identity.citizen.deceased.v1"),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 403, "a service's types are its contract's");

    // Publishing: checked against the schema, stored on the application's own subject.
    let publish = format!("{ROOM}/pub/v1/newBirth");
    let event = json!({"weight": 3200, "place": "RSUD Kota Malang"});
    let before = running.stream_messages().await;
    let (status, published) = running
        .call(
            SIMPUS,
            "POST",
            &publish,
            Some(&json!({"eventType": "newBirth", "event": event, "subject": "birth-42"})),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{published}");
    let id = published["id"].as_str().expect("an id").to_owned();
    assert_eq!(running.stream_messages().await, before + 1);
    let stream = running
        .bus
        .jetstream()
        .get_stream("GOVBUS_APP")
        .await
        .expect("stream");
    let stored = stream
        .get_last_raw_message_by_subject("govbus.app.dinkes.simpus.newBirth")
        .await
        .expect("on the application's subject");
    let headers = stored.headers;
    let header = |name: &str| {
        headers
            .get(name)
            .map(|value| value.as_str().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(header("ce-id"), id);
    assert_eq!(header("ce-type"), "dinkes.simpus.newBirth");
    assert_eq!(header("ce-subject"), "birth-42");
    assert_eq!(header("ce-specversion"), "1.0");
    assert_eq!(header("content-type"), "application/json");
    assert_eq!(header("Nats-Msg-Id"), id);
    let data: Json = serde_json::from_slice(&stored.payload).expect("JSON data");
    assert_eq!(data, event);

    let status_path = format!("{publish}/{id}");
    let (status, item) = running.call(SIMPUS, "GET", &status_path, None, &[]).await;
    assert_eq!(status, 200, "{item}");
    assert_eq!(item["event"], event);
    assert_eq!(item["publisherId"]["applicationCode"], "simpus");
    let problems = support::against_component(
        &support::govstack_document("GovStack_IM_PubSub_API"),
        "EventItem",
        &item,
    );
    assert!(problems.is_empty(), "{problems:?}");
    let (status, _) = running.call(SIKS, "GET", &status_path, None, &[]).await;
    assert_eq!(status, 403, "a publication is its publisher's to read");

    // Refused publications, each with its reason.
    let (status, answer) = running
        .call(
            SIMPUS,
            "POST",
            &publish,
            Some(&json!({"eventType": "newBirth", "event": {"weight": "heavy", "colour": 1}})),
            &[],
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    let fields: Vec<&str> = answer["error"]["details"][0]["fieldViolations"]
        .as_array()
        .expect("violations")
        .iter()
        .filter_map(|violation| violation["field"].as_str())
        .collect();
    assert!(fields.contains(&"event/weight"), "{answer}");
    for (who, path, body, expected) in [
        (
            SIMPUS,
            format!("{ROOM}/pub/v1/death"),
            json!({"eventType": "death", "event": {}}),
            404,
        ),
        (
            SIMPUS,
            format!("{IDENTITY_ROOM}/pub/v1/identity.citizen.deceased.v1"),
            json!({"eventType": "identity.citizen.deceased.v1", "event": {"citizenRef": "x"}}),
            403,
        ),
        (
            SIKS,
            publish.clone(),
            json!({"eventType": "newBirth", "event": event}),
            403,
        ),
        (
            SIMPUS,
            publish.clone(),
            json!({"eventType": "otherType", "event": event}),
            400,
        ),
    ] {
        let (status, answer) = running.call(who, "POST", &path, Some(&body), &[]).await;
        assert_eq!(status, expected, "{path}: {answer}");
        assert!(answer["error"]["message"].is_string(), "a reason: {answer}");
    }
    assert_eq!(
        running.stream_messages().await,
        before + 1,
        "nothing refused was stored"
    );

    // Withdrawn: gone from the stream and from its status.
    let (status, _) = running
        .call(SIMPUS, "DELETE", &status_path, None, &[])
        .await;
    assert_eq!(status, 204);
    let (status, _) = running.call(SIMPUS, "GET", &status_path, None, &[]).await;
    assert_eq!(status, 404);
    assert_eq!(running.stream_messages().await, before);

    // Named but not authenticated; authenticated but not named.
    let anonymous = support::send(
        "GET",
        &format!("{}{types}", running.base),
        &[("x-govstack-client", "ID-3573/GOV/dinkes/simpus")],
        "",
    )
    .await;
    assert_eq!(anonymous.status, 401);
    let token = format!("Bearer {}", running.access.token(SIMPUS));
    let unnamed = support::send(
        "GET",
        &format!("{}{types}", running.base),
        &[("authorization", &token)],
        "",
    )
    .await;
    assert_eq!(unnamed.status, 400);
}

async fn a_retried_publication_is_stored_once(backend: TestBackend) {
    let running = running(backend).await;
    running.register_births().await;
    let before = running.stream_messages().await;
    let publish = format!("{ROOM}/pub/v1/newBirth");
    let body = json!({"eventType": "newBirth", "event": {"weight": 2900}});
    let key = [("idempotency-key", "kelahiran-2026-0001")];
    let attempts = (0..8).map(|_| running.call(SIMPUS, "POST", &publish, Some(&body), &key));
    let answers = futures_util::future::join_all(attempts).await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|(status, answer)| {
            assert_eq!(*status, 201, "{answer}");
            answer["id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one id for every retry: {ids:?}");
    let (status, _) = running
        .call(SIMPUS, "POST", &publish, Some(&body), &key)
        .await;
    assert_eq!(status, 201, "a later retry too");
    assert_eq!(running.stream_messages().await, before + 1, "stored once");
    let (status, answer) = running
        .call(
            SIMPUS,
            "POST",
            &publish,
            Some(&json!({"eventType": "newBirth", "event": {"weight": 1}})),
            &key,
        )
        .await;
    assert_eq!(status, 409, "the key of another publication: {answer}");
    assert_eq!(running.stream_messages().await, before + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_publication_is_stored_once_on_sqlite() {
    a_retried_publication_is_stored_once(TestBackend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_publication_is_stored_once_on_postgres() {
    a_retried_publication_is_stored_once(TestBackend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_subscriber_gets_each_event_until_it_confirms_it_once() {
    let running = running(TestBackend::Sqlite).await;
    running.register_births().await;
    let subs = format!("{ROOM}/api/v1/subs/newBirth");
    let pull = format!("{ROOM}/pull/v1/newBirth");
    let pulling = json!({"eventType": "newBirth", "delivery": "PULL", "options": {"TTL": 600}});

    let (status, item) = running.call(SIKS, "POST", &subs, Some(&pulling), &[]).await;
    assert_eq!(status, 200, "{item}");
    let problems = support::against_component(
        &support::govstack_document("GovStack_IM_PubSub_API"),
        "SubscriptionItem",
        &item,
    );
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(item["subscriberId"]["memberCode"], "dinsos-p3ap2kb");
    assert_eq!(item["options"]["TTL"], 600);
    let (status, _) = running.call(SIKS, "POST", &subs, Some(&pulling), &[]).await;
    assert_eq!(status, 409, "subscribed once");
    for (who, body, expected) in [
        (SIMPUS, pulling.clone(), 403),
        // A push subscription needs its webhook, at an https (or loopback) address.
        (
            SIKS,
            json!({"eventType": "newBirth", "delivery": "PUSH"}),
            400,
        ),
        (
            SIKS,
            json!({"eventType": "newBirth", "pushUrl": "http://example.go.id/hook"}),
            400,
        ),
        (
            SIKS,
            json!({"eventType": "newBirth", "delivery": "PULL", "options": {"TTL": 0}}),
            400,
        ),
    ] {
        let (status, answer) = running.call(who, "POST", &subs, Some(&body), &[]).await;
        assert_eq!(status, expected, "{body}: {answer}");
    }
    let (status, listed) = running
        .call(SIKS, "GET", &format!("{ROOM}/api/v1/subs"), None, &[])
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");

    // Nothing yet.
    let (status, _) = running.call(SIKS, "GET", &pull, None, &[]).await;
    assert_eq!(status, 404);
    for weight in [1, 2, 3] {
        let (status, answer) = running
            .call(
                SIMPUS,
                "POST",
                &format!("{ROOM}/pub/v1/newBirth"),
                Some(&json!({"eventType": "newBirth", "event": {"weight": weight}})),
                &[],
            )
            .await;
        assert_eq!(status, 201, "{answer}");
    }
    for weight in [1, 2, 3] {
        let (status, item) = running.call(SIKS, "GET", &pull, None, &[]).await;
        assert_eq!(status, 200, "{item}");
        assert_eq!(item["event"]["weight"], weight, "in the order published");
        let problems = support::against_component(
            &support::govstack_document("GovStack_IM_PubSub_API"),
            "EventItem",
            &item,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let id = item["id"].as_str().expect("id").to_owned();
        let (_, again) = running.call(SIKS, "GET", &pull, None, &[]).await;
        assert_eq!(
            again["id"],
            id.as_str(),
            "the same event until it is confirmed"
        );
        let confirm = format!("{pull}/{id}");
        let (status, _) = running.call(SIKS, "DELETE", &confirm, None, &[]).await;
        assert_eq!(status, 204);
        let (status, _) = running.call(SIKS, "DELETE", &confirm, None, &[]).await;
        assert_eq!(status, 404, "confirmed once");
    }
    let (status, _) = running.call(SIKS, "GET", &pull, None, &[]).await;
    assert_eq!(status, 404, "every event confirmed");

    // A service's events, granted without a purpose: their personal fields are left out.
    let identity = govbus_bus::ServiceAdapter::new("identity")
        .publishes::<govbus_proto::identity::v1::CitizenDeceased>()
        .start(&running.bus)
        .await
        .expect("identity's stream");
    let deceased = format!("{IDENTITY_ROOM}/api/v1/subs/identity.citizen.deceased.v1");
    let (status, answer) = running
        .call(
            SIKS,
            "POST",
            &deceased,
            Some(&json!({"delivery": "PULL"})),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    identity
        .publisher()
        .publish(&govbus_proto::identity::v1::CitizenDeceased {
            citizen_ref: "cit-1".to_owned(),
            date_of_death: "2026-11-30".to_owned(),
        })
        .await
        .expect("published");
    let identity_pull = format!("{IDENTITY_ROOM}/pull/v1/identity.citizen.deceased.v1");
    let (status, item) = running.call(SIKS, "GET", &identity_pull, None, &[]).await;
    assert_eq!(status, 200, "{item}");
    assert_eq!(item["event"]["dateOfDeath"], "2026-11-30");
    assert!(
        item["event"].get("citizenRef").is_none(),
        "a personal field without a purpose: {item}"
    );
    assert_eq!(
        item["publisherId"]["memberCode"], "dispendukcapil",
        "{item}"
    );
    let (status, _) = running.call(SIKS, "DELETE", &deceased, None, &[]).await;
    assert_eq!(status, 204);
    let (status, _) = running.call(SIKS, "GET", &identity_pull, None, &[]).await;
    assert_eq!(status, 404, "no subscription any more");
    identity.shutdown().await;
}

async fn concurrent_pulls_hand_out_one_event_and_it_is_confirmed_once(backend: TestBackend) {
    let running = running(backend).await;
    running.register_births().await;
    let (status, _) = running
        .call(
            SIKS,
            "POST",
            &format!("{ROOM}/api/v1/subs/newBirth"),
            Some(&json!({"delivery": "PULL"})),
            &[],
        )
        .await;
    assert_eq!(status, 200);
    for weight in [1, 2] {
        let (status, _) = running
            .call(
                SIMPUS,
                "POST",
                &format!("{ROOM}/pub/v1/newBirth"),
                Some(&json!({"eventType": "newBirth", "event": {"weight": weight}})),
                &[],
            )
            .await;
        assert_eq!(status, 201);
    }
    let pull = format!("{ROOM}/pull/v1/newBirth");
    let pulls = (0..8).map(|_| running.call(SIKS, "GET", &pull, None, &[]));
    let pulled = futures_util::future::join_all(pulls).await;
    let ids: std::collections::BTreeSet<String> = pulled
        .iter()
        .map(|(status, item)| {
            assert_eq!(*status, 200, "{item}");
            assert_eq!(item["event"]["weight"], 1, "{item}");
            item["id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one event in hand: {ids:?}");
    let id = ids.into_iter().next().expect("the id");
    let confirm = format!("{pull}/{id}");
    let confirms = (0..8).map(|_| running.call(SIKS, "DELETE", &confirm, None, &[]));
    let statuses: Vec<u16> = futures_util::future::join_all(confirms)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|status| **status == 204).count(),
        1,
        "confirmed once: {statuses:?}"
    );
    assert!(statuses.iter().all(|status| [204, 404].contains(status)));
    let (status, next) = running.call(SIKS, "GET", &pull, None, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        next["event"]["weight"], 2,
        "the next one, not the confirmed one again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_and_confirmations_on_sqlite() {
    concurrent_pulls_hand_out_one_event_and_it_is_confirmed_once(TestBackend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_and_confirmations_on_postgres() {
    concurrent_pulls_hand_out_one_event_and_it_is_confirmed_once(TestBackend::Postgres).await;
}

/// A webhook receiver: it checks every delivery's Standard Webhooks signature against the
/// secrets it was told, and fails as told.
#[derive(Default)]
struct Receiver {
    secrets: Vec<String>,
    fail_first: usize,
    always_fail: bool,
    /// Each request: the event id, its weight, whether it was answered 2xx, and which of the
    /// secrets its signatures verified with.
    requests: Vec<(String, Json, bool, Vec<usize>)>,
    /// The last request's id, timestamp and signature headers, and its body.
    last: Option<([String; 3], Vec<u8>)>,
}

/// The secrets of `secrets` one of `header`'s signatures verifies with, checked as a receiver
/// following the Standard Webhooks specification does.
fn verified_with(
    secrets: &[String],
    header: &str,
    id: &str,
    timestamp: &str,
    body: &[u8],
) -> Vec<usize> {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::STANDARD;
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    secrets
        .iter()
        .enumerate()
        .filter(|(_, secret)| {
            let key = engine
                .decode(secret.trim_start_matches("whsec_"))
                .expect("a base64 secret");
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
            header.split(' ').any(|signature| {
                signature
                    .strip_prefix("v1,")
                    .and_then(|tag| engine.decode(tag).ok())
                    .is_some_and(|tag| ring::hmac::verify(&key, &signed, &tag).is_ok())
            })
        })
        .map(|(index, _)| index)
        .collect()
}

async fn receiver(state: Arc<Mutex<Receiver>>) -> String {
    use axum::extract::State;
    let router = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State(state): State<Arc<Mutex<Receiver>>>,
                 headers: http::HeaderMap,
                 body: axum::body::Bytes| async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|value| value.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    let item: Json = serde_json::from_slice(&body).unwrap_or(Json::Null);
                    let mut state = state.lock().expect("receiver");
                    let verified = verified_with(
                        &state.secrets,
                        &header("webhook-signature"),
                        &header("webhook-id"),
                        &header("webhook-timestamp"),
                        &body,
                    );
                    let fail = state.always_fail || state.requests.len() < state.fail_first;
                    state.last = Some((
                        [
                            header("webhook-id"),
                            header("webhook-timestamp"),
                            header("webhook-signature"),
                        ],
                        body.to_vec(),
                    ));
                    state.requests.push((
                        header("webhook-id"),
                        item["event"]["weight"].clone(),
                        !fail,
                        verified,
                    ));
                    if fail {
                        http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        http::StatusCode::NO_CONTENT
                    }
                },
            ),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let url = format!("http://{}/hook", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serves");
    });
    url
}

/// Waits, boundedly, until `done` holds of the receiver.
async fn until(state: &Arc<Mutex<Receiver>>, what: &str, done: impl Fn(&Receiver) -> bool) {
    for _ in 0..400 {
        if done(&state.lock().expect("receiver")) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let state = state.lock().expect("receiver");
    panic!("{what} never happened; requests: {:?}", state.requests);
}

fn fast_retries() -> WebhookSettings {
    WebhookSettings {
        attempts: 3,
        first_retry: std::time::Duration::from_millis(100),
        longest_retry: std::time::Duration::from_millis(400),
        timeout: std::time::Duration::from_secs(5),
        scan_interval: std::time::Duration::from_millis(100),
    }
}

async fn push_subscription(running: &Running, url: &str) -> String {
    running.register_births().await;
    let (status, item) = running
        .call(
            SIKS,
            "POST",
            &format!("{ROOM}/api/v1/subs/newBirth"),
            Some(&json!({"eventType": "newBirth", "pushUrl": url})),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{item}");
    assert_eq!(item["delivery"], "PUSH");
    let secret = item["secret"].as_str().expect("the signing secret, once");
    assert!(secret.starts_with("whsec_"), "{secret}");
    let (_, again) = running
        .call(
            SIKS,
            "GET",
            &format!("{ROOM}/api/v1/subs/newBirth"),
            None,
            &[],
        )
        .await;
    assert!(
        again.get("secret").is_none(),
        "the secret is shown only once: {again}"
    );
    secret.to_owned()
}

async fn publish_weight(running: &Running, weight: i64) {
    let (status, answer) = running
        .call(
            SIMPUS,
            "POST",
            &format!("{ROOM}/pub/v1/newBirth"),
            Some(&json!({"eventType": "newBirth", "event": {"weight": weight}})),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_fails_then_recovers_gets_every_event_once_in_order_signed() {
    let running = running(TestBackend::Sqlite).await;
    let state = Arc::new(Mutex::new(Receiver {
        fail_first: 2,
        ..Receiver::default()
    }));
    let url = receiver(Arc::clone(&state)).await;
    let secret = push_subscription(&running, &url).await;
    state.lock().expect("receiver").secrets.push(secret);
    let stop = tokio_util::sync::CancellationToken::new();
    let deliveries = webhooks::spawn(
        running.pubsub.clone(),
        running.gateway.subscribers_items(),
        fast_retries(),
        stop.clone(),
    );
    for weight in [1, 2, 3] {
        publish_weight(&running, weight).await;
    }
    until(&state, "three deliveries", |receiver| {
        receiver.requests.iter().filter(|request| request.2).count() == 3
    })
    .await;
    {
        let receiver = state.lock().expect("receiver");
        let delivered: Vec<&Json> = receiver
            .requests
            .iter()
            .filter(|request| request.2)
            .map(|request| &request.1)
            .collect();
        assert_eq!(
            delivered,
            [&json!(1), &json!(2), &json!(3)],
            "in order, once each"
        );
        assert_eq!(receiver.requests.len(), 5, "two failures, then each once");
        assert!(
            receiver.requests.iter().all(|request| request.3 == [0]),
            "every delivery signed with the secret: {:?}",
            receiver.requests
        );
    }

    // The documented receivers' check agrees, and refuses a changed body.
    let (headers, body) = state
        .lock()
        .expect("receiver")
        .last
        .clone()
        .expect("a delivery");
    let secret = state.lock().expect("receiver").secrets[0].clone();
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/examples");
    let php = support::php();
    let check = |language: &str, body: &[u8]| {
        use std::io::Write as _;
        let mut command = match language {
            "Python" => {
                let mut command = std::process::Command::new("python3");
                command.arg(examples.join("verify_webhook.py"));
                command
            }
            _ => {
                // The example is a function for a handler to include; this calls it the same way.
                let mut command = std::process::Command::new(&php);
                command.arg("-r").arg(
                    "require $argv[1]; exit(verify_webhook($argv[2], $argv[3], $argv[4], $argv[5], \
                     file_get_contents('php://stdin')) ? 0 : 1);",
                );
                command.arg(examples.join("verify_webhook.php"));
                command
            }
        };
        let mut child = command
            .arg(&secret)
            .args(&headers)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("the check runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(body)
            .expect("written");
        child.wait().expect("checked").code()
    };
    let mut changed = body.clone();
    changed.extend_from_slice(b" ");
    for language in ["Python", "PHP"] {
        assert_eq!(
            check(language, &body),
            Some(0),
            "the {language} example accepts a genuine delivery"
        );
        assert_eq!(
            check(language, &changed),
            Some(1),
            "the {language} example refuses a changed one"
        );
    }

    // A rotated secret: deliveries carry both signatures while they overlap.
    let (status, rotated) = running
        .call(
            SIKS,
            "PATCH",
            &format!("{ROOM}/api/v1/subs/newBirth"),
            Some(&json!({"rotateSecret": true})),
            &[],
        )
        .await;
    assert_eq!(status, 201, "{rotated}");
    let new_secret = rotated["secret"].as_str().expect("a new secret").to_owned();
    state.lock().expect("receiver").secrets.push(new_secret);
    publish_weight(&running, 4).await;
    until(&state, "the fourth delivery", |receiver| {
        receiver.requests.iter().filter(|request| request.2).count() == 4
    })
    .await;
    let last = state
        .lock()
        .expect("receiver")
        .requests
        .last()
        .cloned()
        .expect("a request");
    assert_eq!(
        last.3,
        [0, 1],
        "signed with the old secret and the new: {last:?}"
    );
    stop.cancel();
    deliveries.await.expect("deliveries stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_always_fails_ends_in_a_dead_letter_that_is_replayed_to_it() {
    let running = running(TestBackend::Sqlite).await;
    let state = Arc::new(Mutex::new(Receiver {
        always_fail: true,
        ..Receiver::default()
    }));
    let url = receiver(Arc::clone(&state)).await;
    let secret = push_subscription(&running, &url).await;
    state.lock().expect("receiver").secrets.push(secret);
    let stop = tokio_util::sync::CancellationToken::new();
    let deliveries = webhooks::spawn(
        running.pubsub.clone(),
        running.gateway.subscribers_items(),
        fast_retries(),
        stop.clone(),
    );
    publish_weight(&running, 9).await;
    let dead_letters = running.bus.dead_letters();
    let mut letters = Vec::new();
    for _ in 0..400 {
        letters = dead_letters.list(1, 10).await.unwrap_or_default();
        if !letters.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let letter = letters.first().expect("a dead letter");
    assert_eq!(letter.service, "gateway");
    assert!(letter.consumer.starts_with("gw-"), "{}", letter.consumer);
    assert!(
        letter.reason.contains("500"),
        "the answer it got: {}",
        letter.reason
    );
    assert_eq!(letter.deliveries, 3);
    assert_eq!(
        state.lock().expect("receiver").requests.len(),
        3,
        "the retry budget, then no more"
    );

    // Replayed once the receiver works again: delivered, to this webhook.
    state.lock().expect("receiver").always_fail = false;
    dead_letters
        .replay(letter.sequence)
        .await
        .expect("replayed");
    until(&state, "the replayed delivery", |receiver| {
        receiver
            .requests
            .iter()
            .any(|request| request.2 && request.1 == json!(9))
    })
    .await;
    stop.cancel();
    deliveries.await.expect("deliveries stop");
}
