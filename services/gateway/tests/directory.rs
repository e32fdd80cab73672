//! The directory over HTTPS, as the GovStack Information Mediator specifies it: each answer
//! checked against the specification's own response schema by an independent validator,
//! `allowedMethods` differing per caller, callers authenticated by a token or by a client
//! certificate from the deployment's CA and never by the header alone; the event types with
//! schemas their events satisfy; the Katalog Layanan export.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use govbus_gateway::applications::{ApplicationName, SignsInWith};
use govbus_kit::development_ca::generate_development_certificates;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use prost_reflect::{
    DescriptorPool, DynamicMessage, Kind, MapKey, MessageDescriptor, SerializeOptions, Value,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

mod support;

const DIRECTORY: &str = "GovStack_IM_Directory_Services_API";
const IDENTITY: &str = "govbus.identity.v1.IdentityService";
const SIMPUS: &str = "dinkes.simpus";

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A gateway over HTTPS on a free port, with the deployment's certificates and applications.
struct Served {
    base: String,
    certificates: tempfile::TempDir,
    access: support::Access,
    pool: DescriptorPool,
    gateway: govbus_gateway::Gateway,
    stop: CancellationToken,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The test's policy: the test client may verify citizens, welfare may call all of identity,
/// dinkes.simpus nothing.
fn policy() -> String {
    format!(
        "[[grant]]\ncallers = [\"{}\"]\nmethods = [\"{IDENTITY}/VerifyCitizen\"]\npurpose = \"Testing the directory\"\n\n\
         [[grant]]\ncallers = [\"welfare\"]\nmethods = [\"{IDENTITY}/*\"]\npurpose = \"Testing the directory\"\n",
        support::APPLICATION
    )
}

async fn served() -> Served {
    let certificates = tempfile::tempdir().expect("temp dir");
    generate_development_certificates(certificates.path(), &["gateway", "welfare"])
        .expect("certificates");
    let read = |name: &str| std::fs::read(certificates.path().join(name)).expect("file");
    let tls = govbus_gateway::serve::https_config(
        &read("gateway.pem"),
        &read("gateway-key.pem"),
        &read("ca.pem"),
        None,
    )
    .expect("HTTPS configuration");
    let access = support::Access::start(support::AccessOptions::new(policy())).await;
    for (name, revoked) in [(SIMPUS, false), ("dinkes.lama", true)] {
        let name = ApplicationName::parse(name).expect("name");
        access
            .applications
            .register(&name, "Dinkes' application", None, SignsInWith::Secret)
            .await
            .expect("registered");
        if revoked {
            access.applications.revoke(&name).await.expect("revoked");
        }
    }
    let pool = DescriptorPool::decode(govbus_proto::FILE_DESCRIPTOR_SET).expect("pool");
    // The directory calls no service: channels that are never used.
    let channels = support::SERVICES
        .iter()
        .flat_map(|declaration| declaration.grpc_services.iter())
        .map(|service| {
            let channel =
                tonic::transport::Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
            ((*service).to_owned(), channel)
        })
        .collect::<BTreeMap<_, _>>();
    let gateway = access.gateway(&pool, channels);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let base = format!(
        "https://127.0.0.1:{}",
        listener.local_addr().expect("address").port()
    );
    let stop = CancellationToken::new();
    tokio::spawn(govbus_gateway::serve::serve(
        listener,
        gateway.clone().router(),
        Some(tls),
        stop.clone(),
    ));
    // Let the applications' table see the registrations.
    tokio::time::sleep(govbus_gateway::applications::REFRESH_INTERVAL * 2).await;
    Served {
        base,
        certificates,
        access,
        pool,
        gateway,
        stop,
    }
}

impl Served {
    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.certificates.path().join(name)).expect("file")
    }

    /// A client trusting the deployment's CA, presenting `certificate`'s client certificate.
    fn client(&self, certificate: Option<&str>) -> HttpsClient {
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(&self.read("ca.pem")) {
            roots.add(der.expect("CA")).expect("added");
        }
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
        let config = match certificate {
            Some(name) => {
                let chain = CertificateDer::pem_slice_iter(&self.read(&format!("{name}.pem")))
                    .collect::<Result<Vec<_>, _>>()
                    .expect("chain");
                let key = PrivateKeyDer::from_pem_slice(&self.read(&format!("{name}-key.pem")))
                    .expect("key");
                builder.with_client_auth_cert(chain, key).expect("identity")
            }
            None => builder.with_no_client_auth(),
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(config)
            .https_only()
            .enable_http1()
            .build();
        Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector)
    }

    /// `GET path` with `headers`: the status, the headers, the body.
    async fn get(
        &self,
        client: &HttpsClient,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, http::HeaderMap, Vec<u8>) {
        let mut request = http::Request::get(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = client
            .request(request.body(Full::new(Bytes::new())).expect("request"))
            .await
            .expect("answered");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        (status, headers, body)
    }

    /// `GET path` as the application `name`, by a token, naming itself in the header.
    async fn get_as_application(&self, name: &str, path: &str) -> (u16, Json) {
        let token = format!("Bearer {}", self.access.token(name));
        let client = format!("{}/GOV/{}", support::INSTANCE, name.replacen('.', "/", 1));
        let (status, _, body) = self
            .get(
                &self.client(None),
                path,
                &[("authorization", &token), ("x-govstack-client", &client)],
            )
            .await;
        (status, serde_json::from_slice(&body).unwrap_or(Json::Null))
    }
}

fn identity_path(operation: &str) -> String {
    format!(
        "/r1/{}/GOV/dispendukcapil/identity/{operation}",
        support::INSTANCE
    )
}

fn valid(schema: &str, answer: &Json) {
    let problems =
        support::against_component(&support::govstack_document(DIRECTORY), schema, answer);
    assert!(problems.is_empty(), "{schema}: {problems:?}\n{answer}");
}

fn endpoints(answer: &Json) -> Vec<(String, String)> {
    answer["member"]
        .as_array()
        .expect("services")
        .iter()
        .flat_map(|service| {
            service["endpointList"]["member"]
                .as_array()
                .expect("endpoints")
                .iter()
                .map(|endpoint| {
                    (
                        endpoint["method"].as_str().expect("method").to_owned(),
                        endpoint["path"].as_str().expect("path").to_owned(),
                    )
                })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_four_operations_answer_as_the_specification_defines() {
    let served = served().await;

    let (status, clients) = served
        .get_as_application(support::APPLICATION, "/listClients")
        .await;
    assert_eq!(status, 200, "{clients}");
    valid("restClientDetailsListType", &clients);
    let members = clients["member"].as_array().expect("members");
    let find = |member: &str, application: Option<&str>| {
        members.iter().find(|entry| {
            entry["id"]["memberCode"] == member
                && entry["id"]["applicationCode"].as_str() == application
        })
    };
    let dukcapil = find("dispendukcapil", None).expect("the agency");
    assert_eq!(dukcapil["id"]["objectType"], "MEMBER");
    assert_eq!(dukcapil["name"], "Dinas Kependudukan dan Pencatatan Sipil");
    assert_eq!(dukcapil["id"]["instanceId"], support::INSTANCE);
    assert_eq!(
        find("dispendukcapil", Some("identity")).expect("the service")["id"]["objectType"],
        "APPLICATION"
    );
    assert!(find("dinkes", Some("simpus")).is_some(), "{clients}");
    assert!(
        find("diskominfo", Some("test-client")).is_some(),
        "{clients}"
    );
    assert!(
        find("dinkes", Some("lama")).is_none(),
        "a revoked application is not listed"
    );
    let (status, _) = served
        .get_as_application(support::APPLICATION, "/listClients?instanceId=EE")
        .await;
    assert_eq!(status, 404, "no federation with another instance");

    let (status, methods) = served
        .get_as_application(support::APPLICATION, &identity_path("listMethods"))
        .await;
    assert_eq!(status, 200, "{methods}");
    valid("restServiceDetailsListType", &methods);
    let service = &methods["member"][0];
    assert_eq!(service["serviceCode"], "identity");
    assert_eq!(service["serviceVersion"], "v1");
    assert_eq!(service["objectType"], "SERVICE");
    let mut served_routes: Vec<(String, String)> = served
        .gateway
        .routes()
        .iter()
        .filter(|route| route.method.parent_service().full_name() == IDENTITY)
        .map(|route| {
            (
                route.verb.as_str().to_owned(),
                route.template.as_str().to_owned(),
            )
        })
        .collect();
    served_routes.sort();
    let mut listed = endpoints(&methods);
    listed.sort();
    assert_eq!(
        listed, served_routes,
        "every route of identity, and no other"
    );
    let (status, _) = served
        .get_as_application(
            support::APPLICATION,
            &format!("{}?serviceId=welfare", identity_path("listMethods")),
        )
        .await;
    assert_eq!(status, 404, "identity offers no service welfare");
    let (status, nobody) = served
        .get_as_application(
            support::APPLICATION,
            &format!("/r1/{}/GOV/dinkes/nobody/listMethods", support::INSTANCE),
        )
        .await;
    assert_eq!(status, 404, "{nobody}");
    let (status, application) = served
        .get_as_application(
            support::APPLICATION,
            &format!("/r1/{}/GOV/dinkes/simpus/listMethods", support::INSTANCE),
        )
        .await;
    assert_eq!(status, 200, "an application offers nothing: {application}");
    valid("restServiceDetailsListType", &application);
    assert!(endpoints(&application).is_empty());

    let (status, document) = served
        .get_as_application(
            support::APPLICATION,
            &format!("{}?serviceCode=identity", identity_path("getOpenAPI")),
        )
        .await;
    assert_eq!(status, 200, "{document}");
    let expected: Json =
        serde_json::from_slice(served.gateway.openapi(Some("identity")).expect("document"))
            .expect("JSON");
    assert_eq!(document, expected, "the service's own OpenAPI document");
    let token = format!("Bearer {}", served.access.token(support::APPLICATION));
    let caller = format!("{}/GOV/diskominfo/test-client", support::INSTANCE);
    let (status, headers, body) = served
        .get(
            &served.client(None),
            &format!("{}?serviceCode=identity", identity_path("getOpenAPI")),
            &[
                ("authorization", &token),
                ("x-govstack-client", &caller),
                ("accept", "text/yaml"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("text")
            .starts_with("text/yaml")
    );
    let as_yaml: Json = serde_json::from_slice(&body).expect("JSON, which is YAML 1.2");
    assert_eq!(as_yaml, expected);
    for (query, expected_status) in [("", 400), ("?serviceCode=welfare", 404)] {
        let (status, answer) = served
            .get_as_application(
                support::APPLICATION,
                &format!("{}{query}", identity_path("getOpenAPI")),
            )
            .await;
        assert_eq!(status, expected_status, "{query}: {answer}");
        assert!(
            answer["error"]["message"].as_str().is_some(),
            "a reason: {answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_methods_are_those_the_policy_grants_the_caller() {
    let served = served().await;
    let path = identity_path("allowedMethods");

    let (status, granted_one) = served.get_as_application(support::APPLICATION, &path).await;
    assert_eq!(status, 200, "{granted_one}");
    valid("restServiceDetailsListType", &granted_one);
    let verify = served
        .gateway
        .routes()
        .iter()
        .find(|route| route.method.full_name() == format!("{IDENTITY}.VerifyCitizen"))
        .map(|route| {
            (
                route.verb.as_str().to_owned(),
                route.template.as_str().to_owned(),
            )
        })
        .expect("VerifyCitizen's route");
    assert_eq!(endpoints(&granted_one), vec![verify]);

    let (status, none) = served.get_as_application(SIMPUS, &path).await;
    assert_eq!(status, 200, "{none}");
    valid("restServiceDetailsListType", &none);
    assert!(endpoints(&none).is_empty(), "{none}");

    // Welfare, by its certificate, may call all of identity.
    let welfare = format!("{}/GOV/dinsos-p3ap2kb/welfare", support::INSTANCE);
    let (status, _, body) = served
        .get(
            &served.client(Some("welfare")),
            &path,
            &[("x-govstack-client", &welfare)],
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let all: Json = serde_json::from_slice(&body).expect("JSON");
    valid("restServiceDetailsListType", &all);
    let (_, listed) = served
        .get_as_application(support::APPLICATION, &identity_path("listMethods"))
        .await;
    assert_eq!(endpoints(&all), endpoints(&listed));
    assert!(endpoints(&all).len() > 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_alone_proves_nothing() {
    let served = served().await;
    let path = identity_path("listMethods");
    let welfare = format!("{}/GOV/dinsos-p3ap2kb/welfare", support::INSTANCE);
    let anonymous = served.client(None);

    // Named, not authenticated.
    let (status, headers, _) = served
        .get(&anonymous, &path, &[("x-govstack-client", &welfare)])
        .await;
    assert_eq!(status, 401);
    assert!(headers.contains_key("www-authenticate"));
    let (status, _, _) = served.get(&anonymous, "/listClients", &[]).await;
    assert_eq!(status, 401);

    // Authenticated as one caller, naming another.
    let token = format!("Bearer {}", served.access.token(support::APPLICATION));
    let (status, _, body) = served
        .get(
            &anonymous,
            &path,
            &[("authorization", &token), ("x-govstack-client", &welfare)],
        )
        .await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = served
        .get(
            &served.client(Some("welfare")),
            &path,
            &[(
                "x-govstack-client",
                &format!("{}/GOV/diskominfo/test-client", support::INSTANCE),
            )],
        )
        .await;
    assert_eq!(
        status, 403,
        "a certificate does not lend its holder another name"
    );

    // The header is required here, and must be an identifier.
    let (status, _, _) = served
        .get(&anonymous, &path, &[("authorization", &token)])
        .await;
    assert_eq!(status, 400);
    let (status, _, _) = served
        .get(
            &anonymous,
            &path,
            &[
                ("authorization", &token),
                ("x-govstack-client", "test-client"),
            ],
        )
        .await;
    assert_eq!(status, 400);

    // The older name of the header is accepted.
    let caller = format!("{}/GOV/diskominfo/test-client", support::INSTANCE);
    let (status, _, _) = served
        .get(
            &anonymous,
            &path,
            &[
                ("authorization", &token),
                ("information-mediator-client", &caller),
            ],
        )
        .await;
    assert_eq!(status, 200);

    // A revoked application's token is refused.
    let revoked = format!("Bearer {}", served.access.token("dinkes.lama"));
    let (status, _, _) = served
        .get(&anonymous, "/listClients", &[("authorization", &revoked)])
        .await;
    assert_eq!(status, 401);
}

/// `message` with every field set (one field of each oneof, nested messages three deep).
fn filled(message: &MessageDescriptor, depth: usize) -> DynamicMessage {
    let mut dynamic = DynamicMessage::new(message.clone());
    match message.full_name() {
        "google.protobuf.Timestamp" => {
            dynamic.set_field_by_name("seconds", Value::I64(1_767_225_600));
            return dynamic;
        }
        "google.protobuf.Duration" => {
            dynamic.set_field_by_name("seconds", Value::I64(90));
            return dynamic;
        }
        name if name.starts_with("google.protobuf.") => return dynamic,
        _ => {}
    }
    for field in message.fields() {
        if let Some(oneof) = field.containing_oneof()
            && oneof.fields().next().map(|first| first.number()) != Some(field.number())
        {
            continue;
        }
        let value = if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                continue;
            };
            let key = match entry.map_entry_key_field().kind() {
                Kind::String => MapKey::String("kunci".to_owned()),
                Kind::Bool => MapKey::Bool(true),
                Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(3),
                Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(3),
                Kind::Uint32 | Kind::Fixed32 => MapKey::U32(3),
                _ => MapKey::U64(3),
            };
            match single(&entry.map_entry_value_field().kind(), depth) {
                Some(value) => Value::Map([(key, value)].into_iter().collect()),
                None => continue,
            }
        } else if field.is_list() {
            match single(&field.kind(), depth) {
                Some(value) => Value::List(vec![value]),
                None => continue,
            }
        } else {
            match single(&field.kind(), depth) {
                Some(value) => value,
                None => continue,
            }
        };
        dynamic.set_field(&field, value);
    }
    dynamic
}

fn single(kind: &Kind, depth: usize) -> Option<Value> {
    Some(match kind {
        Kind::String => Value::String("contoh".to_owned()),
        Kind::Bool => Value::Bool(true),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(-7),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(-7_000_000_000),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(7),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(7_000_000_000),
        Kind::Float => Value::F32(1.5),
        Kind::Double => Value::F64(2.5),
        Kind::Bytes => Value::Bytes(Bytes::from_static(b"\x00\x01")),
        Kind::Enum(enumeration) => Value::EnumNumber(enumeration.values().last()?.number()),
        Kind::Message(inner) if depth < 3 => Value::Message(filled(inner, depth + 1)),
        Kind::Message(_) => return None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_type_has_a_schema_its_events_satisfy() {
    let served = served().await;
    let (status, listed) = served
        .get_as_application(support::APPLICATION, "/directory/event-types")
        .await;
    assert_eq!(status, 200, "{listed}");
    let events = listed["eventTypes"].as_array().expect("event types");
    let declared: usize = support::SERVICES
        .iter()
        .map(|declaration| {
            declaration
                .contract
                .among(&[])
                .map(|contract| contract.publishes.len())
                .unwrap_or_default()
        })
        .sum();
    assert_eq!(
        events.len(),
        declared,
        "every event type the services publish"
    );
    let deceased = events
        .iter()
        .find(|event| event["eventType"] == "identity.citizen.deceased.v1")
        .expect("identity's deaths");
    assert_eq!(
        deceased["producer"],
        format!("{}/GOV/dispendukcapil/identity", support::INSTANCE)
    );
    assert!(
        deceased["consumers"]
            .as_array()
            .expect("consumers")
            .contains(&Json::from(format!(
                "{}/GOV/dinsos-p3ap2kb/welfare",
                support::INSTANCE
            ))),
        "{deceased}"
    );
    assert_eq!(deceased["subject"], "govbus.identity.citizen.deceased.v1");
    let options = SerializeOptions::new();
    let mut samples = Vec::new();
    for event in events {
        let message = served
            .pool
            .get_message_by_name(event["dataschema"].as_str().expect("message"))
            .expect("in the contracts");
        let sample = filled(&message, 0)
            .serialize_with_options(serde_json::value::Serializer, &options)
            .expect("JSON");
        // The check can fail: a field the schema does not know is refused.
        let mut wrong = sample.clone();
        wrong["notAField"] = Json::from(1);
        samples.push((&event["schema"], sample, wrong));
    }
    let pairs: Vec<(&Json, &Json)> = samples
        .iter()
        .flat_map(|(schema, sample, wrong)| [(*schema, sample), (*schema, wrong)])
        .collect();
    let problems = support::against_json_schemas(&pairs);
    for (index, (event, found)) in events.iter().zip(problems.chunks(2)).enumerate() {
        assert!(
            found[0].is_empty(),
            "{}: {:?}\n{}",
            event["eventType"],
            found[0],
            samples[index].1
        );
        assert!(
            !found[1].is_empty(),
            "{} took a stray field",
            event["eventType"]
        );
    }
    let registered = events
        .iter()
        .find(|event| event["eventType"] == "identity.citizen.registered.v1")
        .expect("registrations");
    assert_eq!(
        registered["personalFields"],
        serde_json::json!(["citizenRef"]),
        "the pseudonym is marked personal: {registered}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_lists_every_operation_and_event_type() {
    let served = served().await;
    let (status, catalogue) = served
        .get_as_application(support::APPLICATION, "/directory/catalogue")
        .await;
    assert_eq!(status, 200, "{catalogue}");
    let entries = catalogue["entries"].as_array().expect("entries");
    let (_, events) = served
        .get_as_application(support::APPLICATION, "/directory/event-types")
        .await;
    let event_count = events["eventTypes"].as_array().expect("events").len();
    assert_eq!(
        entries.len(),
        served.gateway.routes().iter().count() + event_count
    );
    for entry in entries {
        for field in ["nama", "deskripsi", "jenis", "penyedia", "alamat"] {
            assert!(
                entry[field].as_str().is_some_and(|text| !text.is_empty()),
                "{field} of {entry}"
            );
        }
        assert!(entry["atribut"].is_array() && entry["output"].is_array());
    }
    let verify = entries
        .iter()
        .find(|entry| entry["nama"] == "identity.VerifyCitizen")
        .expect("VerifyCitizen");
    assert_eq!(
        verify["penyedia"],
        "Dinas Kependudukan dan Pencatatan Sipil"
    );
    assert!(
        verify["alamat"]
            .as_str()
            .is_some_and(|address| address.starts_with("POST https://gateway.test/")),
        "{verify}"
    );
    let nik = verify["atribut"]
        .as_array()
        .expect("attributes")
        .iter()
        .find(|attribute| attribute["nama"] == "nik")
        .expect("the NIK");
    assert_eq!(nik["data_pribadi"], true, "the NIK is personal data");

    let token = format!("Bearer {}", served.access.token(support::APPLICATION));
    let (status, headers, body) = served
        .get(
            &served.client(None),
            "/directory/catalogue?format=csv",
            &[("authorization", &token)],
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("text")
            .starts_with("text/csv")
    );
    let csv = String::from_utf8(body).expect("UTF-8");
    let mut lines = csv.split("\r\n").filter(|line| !line.is_empty());
    assert_eq!(
        lines.next(),
        Some("nama,deskripsi,jenis,penyedia,alamat,atribut,output")
    );
    assert!(csv.contains("identity.VerifyCitizen,"), "{csv}");
    assert!(csv.contains("nik:string (data pribadi)"), "{csv}");
}
