//! The OpenAPI documents: valid for an independent validator (PyPI `openapi-spec-validator`,
//! installed by `scripts/install-openapi-validator`), and matching the routes the gateway serves.

use std::collections::BTreeMap;
use std::process::Command;

use govbus_gateway::Gateway;
use govbus_gateway::routes::Matched;

mod support;
use prost_reflect::DescriptorPool;
use serde_json::Value;

async fn gateway() -> (DescriptorPool, Gateway, support::Access) {
    let pool = DescriptorPool::decode(govbus_proto::FILE_DESCRIPTOR_SET).expect("pool");
    // The documents need no service: channels that are never used.
    let channels: BTreeMap<String, tonic::transport::Channel> = pool
        .services()
        .filter(|service| service.full_name().starts_with("govbus."))
        .map(|service| {
            let channel =
                tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
            (service.full_name().to_owned(), channel)
        })
        .collect();
    let access = support::Access::start(support::AccessOptions::new(String::new())).await;
    let gateway = access.gateway(&pool, channels);
    (pool, gateway, access)
}

#[tokio::test]
async fn every_document_is_valid_openapi_3_1() {
    let (_, gateway, _access) = gateway().await;
    let validator = support::openapi_validator();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut documents = vec![(
        "all".to_owned(),
        gateway.openapi(None).expect("whole").to_vec(),
    )];
    for service in [
        "identity",
        "welfare",
        "licensing",
        "evaluation",
        "complaints",
    ] {
        documents.push((
            service.to_owned(),
            gateway.openapi(Some(service)).expect(service).to_vec(),
        ));
    }
    for (name, document) in documents {
        let parsed: Value = serde_json::from_slice(&document).expect("JSON");
        assert_eq!(parsed["openapi"], "3.1.0");
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, &document).expect("written");
        let checked = Command::new(&validator)
            .arg(&path)
            .output()
            .expect("the validator runs");
        assert!(
            checked.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
    }
    // The check can fail: a document with a broken reference is refused.
    let mut broken: Value =
        serde_json::from_slice(gateway.openapi(Some("identity")).expect("identity")).expect("JSON");
    broken["paths"]["/identity/v1/citizens"]["post"]["responses"]["200"]["content"]["application/json"]
        ["schema"]["$ref"] = Value::from(7);
    let path = dir.path().join("broken.json");
    std::fs::write(&path, broken.to_string()).expect("written");
    let refused = Command::new(&validator)
        .arg(&path)
        .output()
        .expect("the validator runs");
    assert!(!refused.status.success(), "a broken document passed");
}

#[tokio::test]
async fn the_documents_describe_exactly_the_served_routes() {
    let (_, gateway, _access) = gateway().await;
    let whole: Value = serde_json::from_slice(gateway.openapi(None).expect("whole")).expect("JSON");
    let paths = whole["paths"].as_object().expect("paths");
    let mut documented = 0;
    for (template, operations) in paths {
        for (verb, operation) in operations.as_object().expect("operations") {
            documented += 1;
            // Fill every path parameter with a value and find the route it reaches.
            let mut path = template.clone();
            for parameter in operation["parameters"].as_array().expect("parameters") {
                if parameter["in"] == "path" {
                    let name = parameter["name"].as_str().expect("name");
                    path = path.replace(&format!("{{{name}}}"), "2024");
                }
            }
            let method: http::Method = verb.to_uppercase().parse().expect("a method");
            match gateway.routes().find(&method, &path) {
                Matched::Route(route, _) => assert_eq!(
                    operation["operationId"],
                    format!(
                        "{}_{}",
                        route.method.parent_service().name(),
                        route.method.name()
                    )
                ),
                other => panic!("{verb} {path} is documented but reaches {other:?}"),
            }
        }
    }
    assert_eq!(documented, gateway.routes().iter().count());
    // Personal fields are marked; proto comments are descriptions.
    let schemas = &whole["components"]["schemas"];
    let nik = &schemas["govbus.identity.v1.RegisterCitizenRequest"]["properties"]["nik"];
    assert_eq!(nik["x-govbus-personal"], true, "{nik}");
    let text = &schemas["govbus.complaints.v1.FileComplaintRequest"]["properties"]["text"];
    assert!(
        text["description"]
            .as_str()
            .is_some_and(|d| d.contains("own words")),
        "{text}"
    );
    let verify = &whole["paths"]["/identity/v1/citizens:verify"]["post"];
    assert!(
        verify["description"]
            .as_str()
            .is_some_and(|d| d.contains("living citizen")),
        "{verify}"
    );
}
