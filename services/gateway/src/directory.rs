//! The directory: who is on the bus and what they offer, in the shape of the GovStack
//! Information Mediator's directory services (`listClients`, `listMethods`, `allowedMethods`,
//! `getOpenAPI`), so that a client written against that specification reads it unchanged; the
//! event types with their schemas, producers and consumers; and the catalogue of both as a
//! Katalog Layanan Interoperabilitas Data (Permenkominfo 1/2023: name, description, address,
//! attributes, output of each service).
//!
//! Members are the instance's agencies (perangkat daerah). A service on the bus is an
//! application of the agency it belongs to, addressed `INSTANCE/CLASS/AGENCY/SERVICE`
//! (`ID-3573/GOV/dispendukcapil/identity`); an agency's registered application `dinkes.simpus`
//! is `ID-3573/GOV/dinkes/simpus`. Each REST service is one gRPC service of the contracts, coded
//! by its package (`identity`) and versioned by it (`v1`).

use std::fmt;

use govbus_bus::{ServiceContract, Topology};
use govbus_civil::agencies::Agencies;
use govbus_kit::declaration::ServiceDeclaration;
use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Value as Json, json};

use crate::applications::Registered;
use crate::routes::{BodyMapping, Route, Routes};
use crate::schema;

/// Why a directory cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the directory: {0}")]
pub struct DirectoryError(String);

/// How the instance names itself and its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The instance's identifier (`ID-3573`).
    pub id: String,
    /// The class of its members (`GOV`).
    pub member_class: String,
    /// The agency that runs the bus: the member of the services no other agency owns, and of
    /// callers that are neither a service nor an agency's application (the console, the
    /// gateway).
    pub operator: String,
}

/// A service on the bus, as the directory lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// Its name on the bus (`identity`): its application code.
    pub name: String,
    /// What it does.
    pub summary: String,
    /// The agency it belongs to.
    pub agency: String,
    /// Its gRPC services, by full name.
    pub grpc_services: Vec<String>,
}

impl Provider {
    /// The service `declaration` declares, belonging to `agency`.
    pub fn declared(declaration: &ServiceDeclaration, agency: &str) -> Self {
        Self {
            name: declaration.name.to_owned(),
            summary: declaration.summary.to_owned(),
            agency: agency.to_owned(),
            grpc_services: declaration
                .grpc_services
                .iter()
                .map(|service| (*service).to_owned())
                .collect(),
        }
    }
}

/// An event type on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTypeEntry {
    /// Its CloudEvents type (`identity.citizen.registered`).
    pub event_type: String,
    /// The protobuf message of its data.
    pub message: String,
    /// The service that publishes it.
    pub producer: String,
    /// The NATS subject it is published on.
    pub subject: String,
    /// The services that consume it.
    pub consumers: Vec<String>,
}

/// Who called, as the gateway authenticated them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// An application, by its token.
    Application(String),
    /// The holder of a client certificate from the deployment's CA.
    Certificate(String),
}

impl Principal {
    /// Its name in the access policy.
    pub fn name(&self) -> &str {
        match self {
            Self::Application(name) | Self::Certificate(name) => name,
        }
    }
}

/// Whether `part` can be one part of a GovStack identifier: 1 to 64 letters, digits, `-`, `_`
/// or `.`.
pub fn is_identifier_part(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 64
        && part
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte))
}

/// A GovStack identifier, `INSTANCE/CLASS/MEMBER[/APPLICATION]`, as the `X-GovStack-Client`
/// header and the directory's paths carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientId {
    /// The instance.
    pub instance: String,
    /// The member's class.
    pub member_class: String,
    /// The member (an agency's code).
    pub member_code: String,
    /// The application, unless the identifier names a member.
    pub application_code: Option<String>,
}

impl ClientId {
    /// Reads `INSTANCE/CLASS/MEMBER/APPLICATION` (or `INSTANCE/CLASS/MEMBER`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.trim().split('/').collect();
        match parts.as_slice() {
            [instance, class, member, rest @ ..]
                if rest.len() <= 1 && parts.iter().all(|part| is_identifier_part(part)) =>
            {
                Ok(Self {
                    instance: (*instance).to_owned(),
                    member_class: (*class).to_owned(),
                    member_code: (*member).to_owned(),
                    application_code: rest.first().map(|code| (*code).to_owned()),
                })
            }
            _ => Err(format!(
                "{:?} is not INSTANCE/CLASS/MEMBER/APPLICATION (letters, digits, '-', '_', '.')",
                text.chars().take(100).collect::<String>()
            )),
        }
    }

    fn id_object(&self, object_type: &str) -> Json {
        let mut id = json!({
            "objectType": object_type,
            "instanceId": self.instance,
            "memberClass": self.member_class,
            "memberCode": self.member_code,
        });
        if let Some(code) = &self.application_code {
            id["applicationCode"] = Json::String(code.clone());
        }
        id
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            self.instance, self.member_class, self.member_code
        )?;
        if let Some(code) = &self.application_code {
            write!(f, "/{code}")?;
        }
        Ok(())
    }
}

/// A service's REST code and version: `govbus.identity.v1.IdentityService` is `identity`,
/// `v1`.
pub fn service_code(grpc_service: &str) -> (&str, &str) {
    let mut parts = grpc_service.split('.');
    let _ = parts.next();
    let code = parts.next().unwrap_or(grpc_service);
    let version = parts.next().unwrap_or_default();
    (code, version)
}

/// An event type with what the catalogue says of it.
#[derive(Debug, Clone)]
struct CataloguedEvent {
    entry: EventTypeEntry,
    description: String,
    schema: Json,
    personal: Vec<String>,
}

/// What the directory knows: the instance, its agencies, the services and the events.
#[derive(Debug, Clone)]
pub struct Directory {
    instance: Instance,
    agencies: Agencies,
    providers: Vec<Provider>,
    events: Vec<CataloguedEvent>,
}

impl Directory {
    /// The directory of `providers` and `events` (their messages in `pool`) among `agencies`.
    pub fn new(
        instance: Instance,
        agencies: Agencies,
        providers: Vec<Provider>,
        events: Vec<EventTypeEntry>,
        pool: &DescriptorPool,
    ) -> Result<Self, DirectoryError> {
        for (what, value) in [
            ("id", &instance.id),
            ("member_class", &instance.member_class),
        ] {
            if !is_identifier_part(value) {
                return Err(DirectoryError(format!(
                    "the instance's {what} {value:?} is not letters, digits, '-', '_' or '.'"
                )));
            }
        }
        let known = |agency: &str, whose: &str| {
            if agencies.get(agency).is_some() {
                Ok(())
            } else {
                Err(DirectoryError(format!(
                    "{whose} belongs to {agency:?}, which is not one of the instance's agencies"
                )))
            }
        };
        known(&instance.operator, "the bus")?;
        for provider in &providers {
            known(&provider.agency, &provider.name)?;
        }
        let comments = schema::Comments::of(pool);
        let mut catalogued = Vec::new();
        for entry in events {
            let message = pool.get_message_by_name(&entry.message).ok_or_else(|| {
                DirectoryError(format!(
                    "the event {} names the message {}, which the contracts lack",
                    entry.event_type, entry.message
                ))
            })?;
            catalogued.push(CataloguedEvent {
                description: comments
                    .get(message.parent_file().name(), message.path())
                    .unwrap_or_default()
                    .to_owned(),
                schema: schema::of_message(pool, &message),
                personal: schema::personal_paths(pool, &message),
                entry,
            });
        }
        Ok(Self {
            instance,
            agencies,
            providers,
            events: catalogued,
        })
    }

    /// The instance.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// The services on the bus.
    pub fn providers(&self) -> &[Provider] {
        &self.providers
    }

    /// The identifier of the caller named `name` in the access policy: an agency's
    /// application (`dinkes.simpus`), a service, or another holder of a certificate.
    pub fn client_id_of(&self, name: &str) -> ClientId {
        let (member, application) = if govbus_kit::access::is_application_name(name) {
            name.split_once('.')
                .map_or((name, name), |(agency, app)| (agency, app))
        } else {
            let owner = self
                .providers
                .iter()
                .find(|provider| provider.name == name)
                .map_or(self.instance.operator.as_str(), |provider| {
                    provider.agency.as_str()
                });
            (owner, name)
        };
        ClientId {
            instance: self.instance.id.clone(),
            member_class: self.instance.member_class.clone(),
            member_code: member.to_owned(),
            application_code: Some(application.to_owned()),
        }
    }

    /// Whether `id` is of this instance, and why not.
    pub fn check_instance(&self, instance: &str) -> Result<(), String> {
        if instance == self.instance.id {
            Ok(())
        } else {
            Err(format!(
                "this is the instance {}; no federation with {instance:?} is configured",
                self.instance.id
            ))
        }
    }

    /// The service at `id`, if `id` names one.
    pub fn provider_at(&self, id: &ClientId) -> Option<&Provider> {
        if id.instance != self.instance.id || id.member_class != self.instance.member_class {
            return None;
        }
        let code = id.application_code.as_deref()?;
        self.providers
            .iter()
            .find(|provider| provider.agency == id.member_code && provider.name == code)
    }

    /// `listClients`: every agency as a member, each service and each active registered
    /// application as an application of its agency.
    pub fn clients(&self, applications: &[Registered]) -> Json {
        let mut members = Vec::new();
        for agency in self.agencies.iter() {
            let id = ClientId {
                instance: self.instance.id.clone(),
                member_class: self.instance.member_class.clone(),
                member_code: agency.code.clone(),
                application_code: None,
            };
            members.push(json!({"name": agency.name, "id": id.id_object("MEMBER")}));
        }
        for provider in &self.providers {
            let id = self.client_id_of(&provider.name);
            members.push(json!({"name": provider.summary, "id": id.id_object("APPLICATION")}));
        }
        for application in applications
            .iter()
            .filter(|application| application.revoked_at.is_none())
        {
            let id = self.client_id_of(&application.name);
            members.push(json!({
                "name": application.description,
                "id": id.id_object("APPLICATION"),
            }));
        }
        json!({"member": members})
    }

    /// `listMethods` (every route) or `allowedMethods` (the routes `allowed` keeps) of
    /// `provider`, of the one service `service_code` if named; `None` if it offers no such
    /// service.
    pub fn methods(
        &self,
        provider: &Provider,
        routes: &Routes,
        service_code: Option<&str>,
        allowed: impl Fn(&Route) -> bool,
    ) -> Option<Json> {
        let id = self.client_id_of(&provider.name);
        let mut services = Vec::new();
        for grpc_service in &provider.grpc_services {
            let (code, version) = self::service_code(grpc_service);
            if service_code.is_some_and(|wanted| wanted != code) {
                continue;
            }
            let endpoints: Vec<Json> = routes
                .iter()
                .filter(|route| route.method.parent_service().full_name() == grpc_service)
                .filter(|route| allowed(route))
                .map(
                    |route| json!({"method": route.verb.as_str(), "path": route.template.as_str()}),
                )
                .collect();
            services.push(json!({
                "objectType": "SERVICE",
                "serviceType": "REST",
                "instanceId": id.instance,
                "memberClass": id.member_class,
                "memberCode": id.member_code,
                "applicationCode": id.application_code,
                "serviceCode": code,
                "serviceVersion": version,
                "endpointList": {"member": endpoints},
            }));
        }
        if service_code.is_some() && services.is_empty() {
            return None;
        }
        Some(json!({"member": services}))
    }

    /// The document key (`identity`) of `provider`'s service `service_code`, if it offers it.
    pub fn document_of<'a>(&self, provider: &'a Provider, service_code: &str) -> Option<&'a str> {
        provider
            .grpc_services
            .iter()
            .map(|service| self::service_code(service).0)
            .find(|code| *code == service_code)
    }

    /// The event types `producer` publishes, with their schemas.
    pub fn published_by(&self, producer: &str) -> Vec<(&str, &Json)> {
        self.events
            .iter()
            .filter(|event| event.entry.producer == producer)
            .map(|event| (event.entry.event_type.as_str(), &event.schema))
            .collect()
    }

    /// The protobuf message of `event_type`'s data, if a service publishes it.
    pub fn event_message(&self, event_type: &str) -> Option<&str> {
        self.events
            .iter()
            .find(|event| event.entry.event_type == event_type)
            .map(|event| event.entry.message.as_str())
    }

    /// Every event type: its schema (JSON Schema of its data in proto3 JSON), its personal
    /// fields, the service that publishes it and those that consume it, each by its
    /// identifier.
    pub fn event_types(&self) -> Json {
        let events: Vec<Json> = self
            .events
            .iter()
            .map(|event| {
                json!({
                    "eventType": event.entry.event_type,
                    "description": event.description,
                    "subject": event.entry.subject,
                    "dataschema": event.entry.message,
                    "producer": self.client_id_of(&event.entry.producer).to_string(),
                    "consumers": event
                        .entry
                        .consumers
                        .iter()
                        .map(|consumer| self.client_id_of(consumer).to_string())
                        .collect::<Vec<_>>(),
                    "personalFields": event.personal,
                    "schema": event.schema,
                })
            })
            .collect();
        json!({"eventTypes": events})
    }

    /// The catalogue of every REST operation and event type as Katalog Layanan
    /// Interoperabilitas Data entries, the operations addressed at `base_url`.
    pub fn catalogue(&self, pool: &DescriptorPool, routes: &Routes, base_url: &str) -> Vec<Entry> {
        let comments = schema::Comments::of(pool);
        let mut entries = Vec::new();
        for provider in &self.providers {
            for route in routes.iter().filter(|route| {
                provider
                    .grpc_services
                    .iter()
                    .any(|service| route.method.parent_service().full_name() == service)
            }) {
                let method = &route.method;
                let description = comments
                    .get(method.parent_file().name(), method.path())
                    .unwrap_or_default()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ");
                let inputs = match &route.body {
                    BodyMapping::Field(name) => method
                        .input()
                        .get_field_by_name(name)
                        .and_then(|field| match field.kind() {
                            Kind::Message(message) => Some(message),
                            _ => None,
                        })
                        .unwrap_or_else(|| method.input()),
                    _ => method.input(),
                };
                entries.push(Entry {
                    name: format!("{}.{}", provider.name, method.name()),
                    description,
                    kind: "REST",
                    provider: self.agency_name(&provider.agency),
                    address: format!(
                        "{} {}{}",
                        route.verb,
                        base_url.trim_end_matches('/'),
                        route.template.as_str()
                    ),
                    attributes: attributes(pool, &inputs),
                    output: attributes(pool, &method.output()),
                });
            }
        }
        for event in &self.events {
            let Some(message) = pool.get_message_by_name(&event.entry.message) else {
                continue;
            };
            let producer = self
                .providers
                .iter()
                .find(|provider| provider.name == event.entry.producer)
                .map_or(self.instance.operator.as_str(), |provider| &provider.agency);
            entries.push(Entry {
                name: event.entry.event_type.clone(),
                description: event
                    .description
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" "),
                kind: "EVENT",
                provider: self.agency_name(producer),
                address: format!("nats:{}", event.entry.subject),
                attributes: Vec::new(),
                output: attributes(pool, &message),
            });
        }
        entries
    }

    fn agency_name(&self, code: &str) -> String {
        self.agencies
            .get(code)
            .map_or_else(|| code.to_owned(), |agency| agency.name.clone())
    }
}

/// One entry of the Katalog Layanan Interoperabilitas Data.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// Nama: `identity.VerifyCitizen`, or the event type.
    #[serde(rename = "nama")]
    pub name: String,
    /// Deskripsi: the contract's comment.
    #[serde(rename = "deskripsi")]
    pub description: String,
    /// `REST` (a request answered) or `EVENT` (published on the bus).
    #[serde(rename = "jenis")]
    pub kind: &'static str,
    /// Penyedia: the agency that offers it.
    #[serde(rename = "penyedia")]
    pub provider: String,
    /// Alamat: `POST https://…/v1/…`, or the event's subject.
    #[serde(rename = "alamat")]
    pub address: String,
    /// Atribut: what a request carries.
    #[serde(rename = "atribut")]
    pub attributes: Vec<Attribute>,
    /// Output: what it answers or publishes.
    #[serde(rename = "output")]
    pub output: Vec<Attribute>,
}

/// A field of a request or an answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attribute {
    /// Its JSON name, nested ones with their path (`citizen.nik`).
    #[serde(rename = "nama")]
    pub name: String,
    /// Its JSON type (`string`, `integer`, `boolean`, `number`, `object`, `array`, or an
    /// enumeration's values).
    #[serde(rename = "tipe")]
    pub kind: String,
    /// Personal data (UU 27/2022).
    #[serde(rename = "data_pribadi")]
    pub personal: bool,
}

/// The catalogue as CSV (RFC 4180), one row an entry, the attributes as `name:type` lists.
pub fn catalogue_csv(entries: &[Entry]) -> String {
    fn field(text: &str) -> String {
        if text.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text.to_owned()
        }
    }
    fn list(attributes: &[Attribute]) -> String {
        attributes
            .iter()
            .map(|attribute| {
                let personal = if attribute.personal {
                    " (data pribadi)"
                } else {
                    ""
                };
                format!("{}:{}{personal}", attribute.name, attribute.kind)
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
    let mut csv = String::from("nama,deskripsi,jenis,penyedia,alamat,atribut,output\r\n");
    for entry in entries {
        let row = [
            field(&entry.name),
            field(&entry.description),
            field(entry.kind),
            field(&entry.provider),
            field(&entry.address),
            field(&list(&entry.attributes)),
            field(&list(&entry.output)),
        ];
        csv.push_str(&row.join(","));
        csv.push_str("\r\n");
    }
    csv
}

/// The fields of `message`, nested messages flattened into paths (three levels deep).
fn attributes(pool: &DescriptorPool, message: &MessageDescriptor) -> Vec<Attribute> {
    let personal: Vec<String> = schema::personal_paths(pool, message);
    let mut attributes = Vec::new();
    flatten(message, "", 0, &personal, &mut attributes);
    attributes
}

fn flatten(
    message: &MessageDescriptor,
    prefix: &str,
    depth: usize,
    personal: &[String],
    into: &mut Vec<Attribute>,
) {
    for field in message.fields() {
        let list = if field.is_list() || field.is_map() {
            "[]"
        } else {
            ""
        };
        let path = format!("{prefix}{}{list}", field.json_name());
        let nested = match field.kind() {
            Kind::Message(inner)
                if !field.is_map() && depth < 3 && !is_well_known(inner.full_name()) =>
            {
                Some(inner)
            }
            _ => None,
        };
        match nested {
            Some(inner) => flatten(&inner, &format!("{path}."), depth + 1, personal, into),
            None => into.push(Attribute {
                kind: json_type(&field),
                personal: personal.contains(&path),
                name: path,
            }),
        }
    }
}

fn is_well_known(name: &str) -> bool {
    name.starts_with("google.protobuf.")
}

fn json_type(field: &FieldDescriptor) -> String {
    let single = match field.kind() {
        Kind::String | Kind::Bytes => "string".to_owned(),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 | Kind::Uint64 | Kind::Fixed64 => {
            "string (int64)".to_owned()
        }
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 | Kind::Uint32 | Kind::Fixed32 => {
            "integer".to_owned()
        }
        Kind::Bool => "boolean".to_owned(),
        Kind::Float | Kind::Double => "number".to_owned(),
        Kind::Enum(enumeration) => enumeration
            .values()
            .map(|value| value.name().to_owned())
            .collect::<Vec<_>>()
            .join("|"),
        Kind::Message(message) => match message.full_name() {
            "google.protobuf.Timestamp" => "string (date-time)".to_owned(),
            "google.protobuf.Duration" => "string (duration)".to_owned(),
            _ => "object".to_owned(),
        },
    };
    if field.is_map() {
        "object".to_owned()
    } else if field.is_list() {
        format!("array of {single}")
    } else {
        single
    }
}

/// The event types the services of `contracts` publish on `topology`, each with the services
/// that consume it.
pub fn event_types(contracts: &[ServiceContract], topology: &Topology) -> Vec<EventTypeEntry> {
    let mut entries = Vec::new();
    for producer in contracts {
        for event in &producer.publishes {
            let consumers = contracts
                .iter()
                .filter(|consumer| {
                    consumer.consumes.iter().any(|consumed| {
                        consumed.source_service == producer.service
                            && consumed
                                .event_types
                                .iter()
                                .any(|read| *read == "*" || *read == event.event_type)
                    })
                })
                .map(|consumer| consumer.service.clone())
                .collect();
            entries.push(EventTypeEntry {
                event_type: event.event_type.to_owned(),
                message: event.schema.clone(),
                producer: producer.service.clone(),
                subject: topology.event_subject(event.event_type),
                consumers,
            });
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_read_and_print_alike() {
        let id = ClientId::parse("ID-3573/GOV/dinkes/simpus").expect("valid");
        assert_eq!(id.member_code, "dinkes");
        assert_eq!(id.application_code.as_deref(), Some("simpus"));
        assert_eq!(id.to_string(), "ID-3573/GOV/dinkes/simpus");
        let member = ClientId::parse("ID-3573/GOV/dinkes").expect("a member");
        assert_eq!(member.application_code, None);
        for bad in [
            "",
            "ID-3573/GOV",
            "ID-3573/GOV/dinkes/simpus/extra",
            "ID-3573//dinkes/simpus",
            "ID 3573/GOV/dinkes/simpus",
        ] {
            assert!(ClientId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn service_codes_are_the_package_and_its_version() {
        assert_eq!(
            service_code("govbus.identity.v1.IdentityService"),
            ("identity", "v1")
        );
    }

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        let entries = vec![Entry {
            name: "a".to_owned(),
            description: "says \"hi\", twice".to_owned(),
            kind: "REST",
            provider: "Dinas".to_owned(),
            address: "POST /v1/a".to_owned(),
            attributes: vec![Attribute {
                name: "nik".to_owned(),
                kind: "string".to_owned(),
                personal: true,
            }],
            output: Vec::new(),
        }];
        let csv = catalogue_csv(&entries);
        assert!(csv.contains("\"says \"\"hi\"\", twice\""), "{csv}");
        assert!(csv.contains("nik:string (data pribadi)"), "{csv}");
    }
}
