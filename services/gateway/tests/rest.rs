//! Identity through REST: a real nats-server, a real identity service on SQLite, the gateway in
//! front of it, and plain HTTP/1.1 requests of the shapes the bindings declare.

use std::collections::BTreeMap;

use govbus_harness::{NatsServer, TestDatabase};
use prost_reflect::DescriptorPool;
use serde_json::{Value, json};

mod support;

struct TestGateway {
    _access: support::Access,
    authorization: String,
    _nats: NatsServer,
    _db: TestDatabase,
    identity: Option<govbus_identity::Application>,
    base: String,
    server: tokio::task::JoinHandle<()>,
}

impl TestGateway {
    async fn start() -> Self {
        let nats = NatsServer::start().expect("nats-server starts");
        let (identity, channel, db) = support::plain_identity(&nats).await;
        let pool = DescriptorPool::decode(govbus_proto::FILE_DESCRIPTOR_SET).expect("pool");
        let service = "govbus.identity.v1.IdentityService";
        let access =
            support::Access::start(support::AccessOptions::new(support::every_method_of(&[
                service,
            ])))
            .await;
        let gateway = access.gateway(&pool, BTreeMap::from([(service.to_owned(), channel)]));
        let (base, server) = support::serve(gateway).await;
        let authorization = format!("Bearer {}", access.token(support::APPLICATION));
        Self {
            _access: access,
            authorization,
            _nats: nats,
            _db: db,
            identity: Some(identity),
            base,
            server,
        }
    }

    /// Sends a request; returns the status and the JSON answer.
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value, http::HeaderMap) {
        let mut all = vec![("authorization", self.authorization.as_str())];
        if body.is_some() {
            all.push(("content-type", "application/json"));
        }
        all.extend_from_slice(headers);
        let body = body.map(|body| body.to_string()).unwrap_or_default();
        let answer = support::send(method, &format!("{}{path}", self.base), &all, &body).await;
        (answer.status, answer.json, answer.headers)
    }

    async fn stop(mut self) {
        self.server.abort();
        if let Some(identity) = self.identity.take() {
            identity.stop().await;
        }
    }
}

fn registration(nik: &str) -> Value {
    json!({
        "nik": nik,
        "kkNumber": "3573020101200001",
        "fullName": "Siti Rahayu",
        "birthPlace": "Malang",
        "birthDate": "1990-08-17",
        "sex": "SEX_FEMALE",
        "address": {"street": "Jl. Ijen 1", "kelurahanCode": "35.73.02.1001"}
    })
}

fn field_violations(answer: &Value) -> Vec<String> {
    answer["error"]["details"][0]["fieldViolations"]
        .as_array()
        .map(|violations| {
            violations
                .iter()
                .filter_map(|violation| violation["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_identity_method_works_through_rest() {
    let gateway = TestGateway::start().await;
    let nik = "3573025708900002";

    // A command with its idempotency key in the header: the retry answers as the first time.
    let key = [("idempotency-key", "rest-register-1")];
    let (status, registered, headers) = gateway
        .send(
            "POST",
            "/identity/v1/citizens",
            Some(registration(nik)),
            &key,
        )
        .await;
    assert_eq!(status, 200, "{registered}");
    assert_eq!(headers["content-type"], "application/json");
    let citizen_ref = registered["citizenRef"]
        .as_str()
        .expect("citizenRef")
        .to_owned();
    let (status, again, _) = gateway
        .send(
            "POST",
            "/identity/v1/citizens",
            Some(registration(nik)),
            &key,
        )
        .await;
    assert_eq!((status, &again), (200, &registered));
    // Without the key, the same citizen is a conflict.
    let (status, conflict, _) = gateway
        .send(
            "POST",
            "/identity/v1/citizens",
            Some(registration(nik)),
            &[],
        )
        .await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(conflict["error"]["status"], "ALREADY_EXISTS");

    let (status, verified, _) = gateway
        .send(
            "POST",
            "/identity/v1/citizens:verify",
            Some(json!({"nik": nik})),
            &[],
        )
        .await;
    assert_eq!(status, 200, "{verified}");
    assert_eq!(verified["citizenRef"], citizen_ref);
    assert_eq!(
        verified["result"], "VERIFICATION_RESULT_MATCH",
        "enums as names"
    );

    let (status, moved, _) = gateway
        .send(
            "POST",
            "/identity/v1/citizens:relocate",
            Some(json!({
                "nik": nik,
                "new_address": {"street": "Jl. Baru 2", "kelurahan_code": "35.73.05.1003"}
            })),
            &[("idempotency-key", "rest-move-1")],
        )
        .await;
    assert_eq!(status, 200, "proto field names are accepted too: {moved}");

    let (status, died, _) = gateway
        .send(
            "POST",
            "/identity/v1/citizens:recordDeath",
            Some(json!({"nik": nik, "dateOfDeath": "2026-11-30"})),
            &[("idempotency-key", "rest-death-1")],
        )
        .await;
    assert_eq!(status, 200, "{died}");
    let (status, twice, _) = gateway
        .send(
            "POST",
            "/identity/v1/citizens:recordDeath",
            Some(json!({"nik": nik, "dateOfDeath": "2026-11-30"})),
            &[],
        )
        .await;
    assert_eq!(
        status, 400,
        "already deceased is a failed precondition: {twice}"
    );
    assert_eq!(twice["error"]["status"], "FAILED_PRECONDITION");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_answered_with_the_reason_and_every_field() {
    let gateway = TestGateway::start().await;
    // The service's validation, with every field violation.
    let (status, answer, _) = gateway
        .send(
            "POST",
            "/identity/v1/citizens",
            Some(json!({"nik": "12", "birthDate": "tomorrow"})),
            &[],
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["status"], "INVALID_ARGUMENT");
    let fields = field_violations(&answer);
    for field in ["nik", "kk_number", "full_name", "birth_date"] {
        assert!(
            fields.iter().any(|found| found == field),
            "{field} in {fields:?}"
        );
    }
    // The gateway's own checks.
    let (status, unknown, _) = gateway
        .send(
            "POST",
            "/identity/v1/citizens:verify",
            Some(json!({"nik": "3573025708900002", "shoeSize": 42})),
            &[],
        )
        .await;
    assert_eq!(status, 400, "{unknown}");
    assert_eq!(field_violations(&unknown), ["body"]);
    let (status, clash, _) = gateway
        .send(
            "POST",
            "/identity/v1/citizens",
            Some(json!({"idempotencyKey": "one"})),
            &[("idempotency-key", "another")],
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(field_violations(&clash), ["idempotency_key"]);
    let (status, _, headers) = gateway
        .send("GET", "/identity/v1/citizens:verify", None, &[])
        .await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "POST");
    let (status, missing, _) = gateway.send("GET", "/identity/v2/nothing", None, &[]).await;
    assert_eq!(status, 404);
    assert_eq!(missing["error"]["status"], "NOT_FOUND");
    let plain = support::send(
        "POST",
        &format!("{}/identity/v1/citizens:verify", gateway.base),
        &[
            ("content-type", "text/plain"),
            ("authorization", &gateway.authorization),
            ("x-request-id", "plain-text"),
        ],
        "nik=1",
    )
    .await;
    assert_eq!(plain.status, 415);
    gateway.stop().await;
}
