//! Every method of every service through REST, driven by the OpenAPI document the gateway serves:
//! the path, the method, where each parameter goes and whether there is a body come from the
//! document alone; the test supplies only the values. Every answer is checked against the
//! document's response schema (JSON Schema 2020-12, with the validator's own `jsonschema`), and
//! every operation of the document is called.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use govbus_bus::BusOptions;
use govbus_harness::{NatsServer, TestBackend, TestDatabase};
use govbus_storage::{RelaySettings, StorageSettings};
use prost_reflect::DescriptorPool;
use serde_json::{Value, json};

mod support;

fn storage() -> StorageSettings {
    StorageSettings {
        relay: RelaySettings {
            poll_interval: Duration::from_millis(100),
            ..RelaySettings::default()
        },
        ..StorageSettings::default()
    }
}

fn any_port() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

fn channel(address: std::net::SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .connect_lazy()
}

/// A REST client that knows the API only from its OpenAPI document.
struct DocumentClient {
    base: String,
    /// `Bearer <token>` of the test's application.
    authorization: String,
    /// operationId → (method, path template, the operation).
    operations: BTreeMap<String, (String, String, Value)>,
    called: BTreeSet<String>,
    /// (schema reference, answer) pairs to check against the document.
    answers: Vec<(String, Value)>,
}

impl DocumentClient {
    async fn new(base: String, token: &str) -> (Self, Value) {
        let mut this = Self {
            base,
            authorization: format!("Bearer {token}"),
            operations: BTreeMap::new(),
            called: BTreeSet::new(),
            answers: Vec::new(),
        };
        let (status, document) = this.raw("GET", "/openapi.json", None).await;
        assert_eq!(status, 200);
        for (template, operations) in document["paths"].as_object().expect("paths") {
            for (verb, operation) in operations.as_object().expect("operations") {
                let id = operation["operationId"]
                    .as_str()
                    .expect("operationId")
                    .to_owned();
                this.operations.insert(
                    id,
                    (verb.to_uppercase(), template.clone(), operation.clone()),
                );
            }
        }
        (this, document)
    }

    async fn raw(&self, method: &str, path_and_query: &str, body: Option<&Value>) -> (u16, Value) {
        let mut headers = vec![("authorization", self.authorization.as_str())];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let body = body.map(Value::to_string).unwrap_or_default();
        let answer = support::send(
            method,
            &format!("{}{path_and_query}", self.base),
            &headers,
            &body,
        )
        .await;
        (answer.status, answer.json)
    }

    /// Calls `operation` with its path parameters from `values`, its query parameters from
    /// `values` too, and `body` when the document says it takes one.
    async fn call(&mut self, operation: &str, values: Value, body: Option<Value>) -> Value {
        let (method, template, spec) = self
            .operations
            .get(operation)
            .unwrap_or_else(|| panic!("the document has no operation {operation}"))
            .clone();
        let mut path = template.clone();
        let mut query = Vec::new();
        let mut used = BTreeSet::new();
        for parameter in spec["parameters"].as_array().expect("parameters") {
            let name = parameter["name"].as_str().expect("name");
            let Some(value) = values.get(name) else {
                assert_ne!(parameter["in"], "path", "{operation}: no value for {name}");
                continue;
            };
            let text = match value {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            used.insert(name.to_owned());
            match parameter["in"].as_str() {
                Some("path") => path = path.replace(&format!("{{{name}}}"), &text),
                Some("query") => query.push(format!("{name}={text}")),
                other => panic!("{operation}: {name} in {other:?}"),
            }
        }
        for name in values.as_object().expect("values").keys() {
            assert!(
                used.contains(name),
                "{operation}: the document has no parameter {name}"
            );
        }
        assert_eq!(
            body.is_some(),
            spec.get("requestBody").is_some(),
            "{operation}: the document says whether there is a body"
        );
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        let (status, answer) = self.raw(&method, &path, body.as_ref()).await;
        assert_eq!(status, 200, "{operation} {method} {path}: {answer}");
        let schema = spec["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .expect("a response schema")
            .to_owned();
        self.answers.push((schema, answer.clone()));
        self.called.insert(operation.to_owned());
        answer
    }
}

/// The validator's Python, beside its command.
fn validator_python() -> PathBuf {
    support::openapi_validator().with_file_name("python")
}

const CHECK_ANSWERS: &str = r#"
import json, sys
import jsonschema
document = json.load(open(sys.argv[1]))
failures = []
for reference, answer in json.load(open(sys.argv[2])):
    schema = {"$ref": reference, "components": document["components"]}
    try:
        jsonschema.Draft202012Validator(schema).validate(answer)
    except jsonschema.ValidationError as error:
        failures.append(f"{reference}: {error.message}")
print("\n".join(failures))
sys.exit(1 if failures else 0)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_of_every_service_through_rest_as_the_document_says() {
    let nats = NatsServer::start().expect("nats-server starts");
    let mut databases = Vec::new();
    for _ in 0..5 {
        databases.push(
            TestDatabase::new(TestBackend::Sqlite)
                .await
                .expect("database"),
        );
    }
    let bus = |name: &str| BusOptions::new(nats.client_url()).client_name(name);
    let identity = govbus_identity::Application::build(govbus_identity::IdentityConfig {
        database_url: databases[0].url().to_owned(),
        listen: any_port(),
        bus: bus("identity"),
        storage: storage(),
        tls: None,
        access: None,
        audit_subject_key: None,
        audit_timestamps: None,
        call_report_interval: Duration::from_secs(60),
    })
    .await
    .expect("identity");
    let identity_url = format!("http://{}", identity.address());
    let welfare = govbus_welfare::Application::build(govbus_welfare::WelfareConfig {
        database_url: databases[1].url().to_owned(),
        listen: any_port(),
        identity_url: identity_url.clone(),
        bus: bus("welfare"),
        storage: storage(),
        tls: None,
        access: None,
        audit_subject_key: None,
        audit_timestamps: None,
    })
    .await
    .expect("welfare");
    let licensing = govbus_licensing::Application::build(govbus_licensing::LicensingConfig {
        database_url: databases[2].url().to_owned(),
        listen: any_port(),
        identity_url: identity_url.clone(),
        bus: bus("licensing"),
        storage: storage(),
        tls: None,
        access: None,
        audit_subject_key: None,
        audit_timestamps: None,
        deadlines: govbus_licensing::Deadlines::default(),
        deadline_check_interval: Duration::from_secs(1),
        calendar: None,
        keep_rejected_details: Duration::from_secs(730 * 24 * 3600),
    })
    .await
    .expect("licensing");
    let complaints = Box::pin(govbus_complaints::Application::build(
        govbus_complaints::ComplaintsConfig {
            database_url: databases[3].url().to_owned(),
            listen: any_port(),
            identity_url,
            bus: bus("complaints"),
            storage: storage(),
            tls: None,
            access: None,
            audit_subject_key: None,
            audit_timestamps: None,
            agencies: None,
            deadlines: govbus_complaints::Deadlines::default(),
            deadline_check_interval: Duration::from_secs(1),
            calendar: None,
            national: None,
            keep_ended_texts: Duration::from_secs(730 * 24 * 3600),
        },
    ))
    .await
    .expect("complaints");
    let evaluation = govbus_evaluation::Application::build(govbus_evaluation::EvaluationConfig {
        database_url: databases[4].url().to_owned(),
        listen: any_port(),
        bus: bus("evaluation"),
        storage: storage(),
        tls: None,
        access: None,
        evidence_services: govbus_evaluation::EvaluationConfig::default_evidence_services(),
        instruments_dir: None,
        membership: govbus_evaluation::Membership::shipped(&[
            ("identity", "dispendukcapil"),
            ("welfare", "dinsos-p3ap2kb"),
            ("licensing", "disnaker-pmptsp"),
        ])
        .expect("the shipped agencies"),
    })
    .await
    .expect("evaluation");

    let pool = DescriptorPool::decode(govbus_proto::FILE_DESCRIPTOR_SET).expect("pool");
    let channels = BTreeMap::from([
        (
            "govbus.identity.v1.IdentityService".to_owned(),
            channel(identity.address()),
        ),
        (
            "govbus.welfare.v1.WelfareService".to_owned(),
            channel(welfare.address()),
        ),
        (
            "govbus.licensing.v1.LicensingService".to_owned(),
            channel(licensing.address()),
        ),
        (
            "govbus.complaints.v1.ComplaintsService".to_owned(),
            channel(complaints.address()),
        ),
        (
            "govbus.evaluation.v1.EvaluationService".to_owned(),
            channel(evaluation.address()),
        ),
    ]);
    let services: Vec<&str> = channels.keys().map(String::as_str).collect();
    let access = support::Access::start(support::AccessOptions::new(support::every_method_of(
        &services,
    )))
    .await;
    let (base, server) = support::serve(access.gateway(&pool, channels)).await;
    let token = access.token(support::APPLICATION);
    let (mut rest, document) = DocumentClient::new(base, &token).await;

    // identity
    let citizen = |nik: &str, kk: &str| {
        json!({
            "nik": nik, "kkNumber": kk, "fullName": "Warga Malang", "birthPlace": "Malang",
            "birthDate": "1990-08-17", "sex": "SEX_FEMALE",
            "address": {"street": "Jl. Ijen 1", "kelurahanCode": "35.73.02.1001"}
        })
    };
    let (head, moving, dying) = ("3573025708900002", "3573025708900003", "3573025708900004");
    for nik in [head, moving, dying] {
        rest.call(
            "IdentityService_RegisterCitizen",
            json!({}),
            Some(citizen(nik, "3573020101200001")),
        )
        .await;
    }
    rest.call(
        "IdentityService_VerifyCitizen",
        json!({}),
        Some(json!({"nik": head})),
    )
    .await;
    rest.call(
        "IdentityService_RecordRelocation",
        json!({}),
        Some(json!({"nik": moving, "newAddress": {"street": "Jl. Baru 2", "kelurahanCode": "35.73.05.1003"}})),
    )
    .await;
    rest.call(
        "IdentityService_RecordDeath",
        json!({}),
        Some(json!({"nik": dying, "dateOfDeath": "2026-11-30"})),
    )
    .await;

    // welfare
    rest.call(
        "WelfareService_RegisterHousehold",
        json!({}),
        Some(json!({"kkNumber": "3573020101200001", "kelurahanCode": "35.73.02.1001", "memberNiks": [head]})),
    )
    .await;
    rest.call(
        "WelfareService_AssessHousehold",
        json!({}),
        Some(json!({"kkNumber": "3573020101200001", "desil": 1})),
    )
    .await;
    let benefit = rest
        .call(
            "WelfareService_ApplyForProgramme",
            json!({}),
            Some(json!({"nik": head, "programme": "PROGRAMME_PKH"})),
        )
        .await;
    let benefits = rest
        .call(
            "WelfareService_ListBenefits",
            json!({}),
            Some(json!({"nik": head})),
        )
        .await;
    assert_eq!(benefits["benefits"][0]["benefitRef"], benefit["benefitRef"]);

    // licensing
    let application = rest
        .call(
            "LicensingService_ApplyForLicence",
            json!({}),
            Some(json!({
                "applicantNik": head, "businessName": "Warung Bu Siti", "kbliCode": "56103",
                "kelurahanCode": "35.73.02.1001", "riskLevel": "RISK_LEVEL_TINGGI"
            })),
        )
        .await;
    let application_ref = application["applicationRef"]
        .as_str()
        .expect("ref")
        .to_owned();
    rest.call(
        "LicensingService_GetApplication",
        json!({"application_ref": application_ref}),
        None,
    )
    .await;
    let decided = rest
        .call(
            "LicensingService_DecideApplication",
            json!({"application_ref": application_ref}),
            Some(json!({"approve": true})),
        )
        .await;
    assert_eq!(decided["status"], "APPLICATION_STATUS_APPROVED");

    // complaints
    let filed = rest
        .call(
            "ComplaintsService_FileComplaint",
            json!({}),
            Some(json!({
                "complainantNik": head, "agencyCode": "dinsos-p3ap2kb",
                "category": "CATEGORY_SOCIAL_ASSISTANCE", "channel": "CHANNEL_WEB",
                "text": "Bantuan bulan ini belum diterima.", "benefitRef": benefit["benefitRef"]
            })),
        )
        .await;
    let complaint_ref = filed["complaint"]["complaintRef"]
        .as_str()
        .expect("ref")
        .to_owned();
    let by_ref = json!({"complaint_ref": complaint_ref});
    let verified = rest
        .call(
            "ComplaintsService_VerifyComplaint",
            by_ref.clone(),
            Some(json!({"accept": {"class": "COMPLAINT_CLASS_NORMATIF"}})),
        )
        .await;
    assert_eq!(
        verified["complaint"]["status"],
        "COMPLAINT_STATUS_WITH_AGENCY"
    );
    rest.call(
        "ComplaintsService_RouteComplaint",
        by_ref.clone(),
        Some(json!({"agencyCode": "kec-klojen", "reason": "Ditangani kecamatan"})),
    )
    .await;
    let respond = json!({"agencyCode": "kec-klojen", "response": "Sudah ditindaklanjuti"});
    rest.call(
        "ComplaintsService_RespondToComplaint",
        by_ref.clone(),
        Some(respond.clone()),
    )
    .await;
    rest.call(
        "ComplaintsService_ReopenComplaint",
        by_ref.clone(),
        Some(json!({"reason": "Belum selesai"})),
    )
    .await;
    rest.call(
        "ComplaintsService_RespondToComplaint",
        by_ref.clone(),
        Some(respond),
    )
    .await;
    rest.call(
        "ComplaintsService_CloseComplaint",
        by_ref.clone(),
        Some(json!({})),
    )
    .await;
    rest.call("ComplaintsService_GetComplaint", by_ref, None)
        .await;
    let listed = rest
        .call(
            "ComplaintsService_ListComplaints",
            json!({"status": "COMPLAINT_STATUS_CLOSED", "pageSize": 10}),
            None,
        )
        .await;
    assert_eq!(listed["complaints"][0]["complaintRef"], complaint_ref);
    rest.call("ComplaintsService_ListAgencies", json!({}), None)
        .await;

    // evaluation
    rest.call("EvaluationService_ListInstruments", json!({}), None)
        .await;
    let scores: Vec<Value> = (1..=47)
        .map(|indicator| json!({"indicator": indicator, "level": 4}))
        .collect();
    rest.call(
        "EvaluationService_RecordAssessment",
        json!({"instance_code": "35.73"}),
        Some(json!({
            "instanceName": "Pemerintah Kota Malang", "year": 2024,
            "kind": "SCORE_KIND_EVALUATOR", "scores": scores
        })),
    )
    .await;
    let assessment = rest
        .call(
            "EvaluationService_GetAssessment",
            json!({"instance_code": "35.73", "year": 2024}),
            None,
        )
        .await;
    assert_eq!(assessment["year"], 2024, "{assessment}");
    rest.call(
        "EvaluationService_SetTarget",
        json!({"instance_code": "35.73"}),
        Some(json!({"year": 2024, "target": "3.02", "source": "RPJMD"})),
    )
    .await;
    rest.call(
        "EvaluationService_GetHistory",
        json!({"instance_code": "35.73"}),
        None,
    )
    .await;
    rest.call("EvaluationService_GetRanking", json!({"year": 2024}), None)
        .await;
    rest.call("EvaluationService_GetIntegrationEvidence", json!({}), None)
        .await;
    rest.call(
        "EvaluationService_RebuildEvidence",
        json!({}),
        Some(json!({})),
    )
    .await;
    let review = rest
        .call(
            "EvaluationService_RecordConnectorReview",
            json!({}),
            Some(json!({
                "kind": "CONNECTOR_REVIEW_KIND_REVIEW", "heldOn": "2026-01-05",
                "findings": "Every agency's application reaches identity through the bus."
            })),
        )
        .await;
    let reviews = rest
        .call("EvaluationService_ListConnectorReviews", json!({}), None)
        .await;
    assert_eq!(reviews["reviews"][0]["id"], review["id"], "{reviews}");

    let documented: BTreeSet<String> = rest.operations.keys().cloned().collect();
    assert_eq!(
        rest.called, documented,
        "every operation of the document was called"
    );

    // Every answer as the document describes it.
    let dir = tempfile::tempdir().expect("temp dir");
    let document_path = dir.path().join("openapi.json");
    std::fs::write(&document_path, document.to_string()).expect("written");
    let answers_path = dir.path().join("answers.json");
    std::fs::write(
        &answers_path,
        serde_json::to_string(&rest.answers).expect("json"),
    )
    .expect("written");
    let checked = Command::new(validator_python())
        .args(["-c", CHECK_ANSWERS])
        .arg(&document_path)
        .arg(&answers_path)
        .output()
        .expect("python runs");
    assert!(
        checked.status.success(),
        "answers that do not match the document:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    // The check can fail: an answer with a field the schema does not have is refused.
    let (reference, mut answer) = rest.answers[0].clone();
    answer["shoeSize"] = json!(42);
    std::fs::write(
        &answers_path,
        serde_json::to_string(&[(reference, answer)]).expect("json"),
    )
    .expect("written");
    let refused = Command::new(validator_python())
        .args(["-c", CHECK_ANSWERS])
        .arg(&document_path)
        .arg(&answers_path)
        .output()
        .expect("python runs");
    assert!(!refused.status.success(), "a wrong answer passed the check");

    server.abort();
    evaluation.stop().await;
    complaints.stop().await;
    licensing.stop().await;
    welfare.stop().await;
    identity.stop().await;
}
