//! OpenAPI 3.1 documents of the REST routes, generated from the same descriptors the gateway
//! transcodes with: paths and parameters from the bindings, JSON Schemas of the messages in their
//! proto3 JSON form, the proto comments as descriptions, personal fields marked
//! (`x-govbus-personal: true`), and the error body every route may answer.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{
    DescriptorPool, EnumDescriptor, FieldDescriptor, Kind, MessageDescriptor, Value,
};
use serde_json::{Map, Value as Json, json};

use crate::routes::{BodyMapping, Route, Routes};
use crate::transcode::IDEMPOTENCY_FIELD;

/// The name of the error body's schema.
const ERROR_SCHEMA: &str = "govbus.gateway.Error";

/// What a document says of itself.
#[derive(Debug, Clone)]
pub struct DocumentInfo {
    /// Its title.
    pub title: String,
    /// The API's version.
    pub version: String,
    /// What it is.
    pub description: String,
}

/// The proto comments of a pool, by file and source path.
struct Comments(BTreeMap<(String, Vec<i32>), String>);

impl Comments {
    fn of(pool: &DescriptorPool) -> Self {
        let mut comments = BTreeMap::new();
        for file in pool.files() {
            let Some(info) = &file.file_descriptor_proto().source_code_info else {
                continue;
            };
            for location in &info.location {
                if let Some(text) = &location.leading_comments {
                    let text = text
                        .lines()
                        .map(str::trim)
                        .collect::<Vec<_>>()
                        .join("\n")
                        .trim()
                        .to_owned();
                    if !text.is_empty() {
                        comments.insert((file.name().to_owned(), location.path.clone()), text);
                    }
                }
            }
        }
        Self(comments)
    }

    fn get(&self, file: &str, path: &[i32]) -> Option<&str> {
        self.0
            .get(&(file.to_owned(), path.to_vec()))
            .map(String::as_str)
    }
}

/// The OpenAPI document of `routes` (all of a gateway's, or one service's).
pub fn document<'a>(
    pool: &DescriptorPool,
    routes: impl IntoIterator<Item = &'a Route>,
    info: &DocumentInfo,
) -> Json {
    let comments = Comments::of(pool);
    let personal = pool.get_extension_by_name("govbus.bus.v1.personal");
    let mut schemas = Schemas {
        comments: &comments,
        personal,
        done: BTreeMap::new(),
        wanted: BTreeSet::new(),
    };
    let mut paths: BTreeMap<String, Map<String, Json>> = BTreeMap::new();
    let mut tags = BTreeMap::new();
    for route in routes {
        let service = route.method.parent_service();
        let file = service.parent_file();
        tags.entry(service.name().to_owned()).or_insert_with(|| {
            comments
                .get(file.name(), service.path())
                .unwrap_or_default()
                .to_owned()
        });
        let operation = operation(route, &comments, &mut schemas);
        paths
            .entry(route.template.as_str().to_owned())
            .or_default()
            .insert(route.verb.as_str().to_lowercase(), operation);
    }
    while let Some(name) = schemas.wanted.pop_first() {
        if schemas.done.contains_key(&name) {
            continue;
        }
        if let Some(message) = pool.get_message_by_name(&name) {
            let schema = schemas.message(&message);
            schemas.done.insert(name, schema);
        }
    }
    let mut components: Map<String, Json> = schemas.done.into_iter().collect();
    components.insert(ERROR_SCHEMA.to_owned(), error_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": info.title,
            "version": info.version,
            "description": info.description,
        },
        "tags": tags
            .into_iter()
            .map(|(name, description)| json!({"name": name, "description": description}))
            .collect::<Vec<_>>(),
        "paths": paths,
        "components": {"schemas": components},
    })
}

fn operation(route: &Route, comments: &Comments, schemas: &mut Schemas<'_>) -> Json {
    let method = &route.method;
    let service = method.parent_service();
    let file = service.parent_file();
    let input = method.input();
    let description = comments
        .get(file.name(), method.path())
        .unwrap_or_default()
        .to_owned();
    let summary = description
        .split(['.', '\n'])
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let mut parameters = Vec::new();
    let in_path: Vec<String> = route
        .template
        .variables()
        .map(|path| path.join("."))
        .collect();
    for path in route.template.variables() {
        let field = nested_field(&input, path);
        parameters.push(json!({
            "name": path.join("."),
            "in": "path",
            "required": true,
            "schema": field.as_ref().map(|field| schemas.scalar(field)).unwrap_or_else(|| json!({"type": "string"})),
            "description": field.as_ref().map(|field| schemas.description(field)).unwrap_or_default(),
        }));
    }
    if route.body != BodyMapping::Whole {
        for field in input.fields() {
            let body_field =
                matches!(&route.body, BodyMapping::Field(name) if name == field.name());
            if body_field
                || in_path.iter().any(|path| path == field.name())
                || field.is_map()
                || matches!(field.kind(), Kind::Message(_))
            {
                continue;
            }
            let schema = if field.is_list() {
                json!({"type": "array", "items": schemas.scalar(&field)})
            } else {
                schemas.scalar(&field)
            };
            parameters.push(json!({
                "name": field.json_name(),
                "in": "query",
                "required": false,
                "schema": schema,
                "description": schemas.description(&field),
            }));
        }
    }
    if input.get_field_by_name(IDEMPOTENCY_FIELD).is_some() {
        parameters.push(json!({
            "name": "Idempotency-Key",
            "in": "header",
            "required": false,
            "schema": {"type": "string", "maxLength": 200},
            "description": "A retry with the same key answers as the first time, without acting again (the same as the body's idempotencyKey).",
        }));
    }
    let mut operation = json!({
        "operationId": format!("{}_{}", service.name(), method.name()),
        "tags": [service.name()],
        "summary": summary,
        "description": description,
        "parameters": parameters,
        "responses": {
            "200": {
                "description": "The answer.",
                "content": {"application/json": {"schema": response_schema(route, schemas)}},
            },
            "default": {
                "description": "An error: the gRPC status as its HTTP status, with every invalid field.",
                "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{ERROR_SCHEMA}")}}},
            },
        },
    });
    let body_schema = match &route.body {
        BodyMapping::None => None,
        BodyMapping::Whole => Some(schemas.reference(&input)),
        BodyMapping::Field(name) => input
            .get_field_by_name(name)
            .map(|field| schemas.field(&field)),
    };
    if let Some(schema) = body_schema {
        operation["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": schema}},
        });
    }
    operation
}

fn response_schema(route: &Route, schemas: &mut Schemas<'_>) -> Json {
    let output = route.method.output();
    match &route.response_body {
        None => schemas.reference(&output),
        Some(name) => output
            .get_field_by_name(name)
            .map(|field| schemas.field(&field))
            .unwrap_or_else(|| json!({})),
    }
}

fn nested_field(message: &MessageDescriptor, path: &[String]) -> Option<FieldDescriptor> {
    let (first, rest) = path.split_first()?;
    let field = message.get_field_by_name(first)?;
    if rest.is_empty() {
        return Some(field);
    }
    match field.kind() {
        Kind::Message(inner) => nested_field(&inner, rest),
        _ => None,
    }
}

/// The schemas made so far, and those still to make.
struct Schemas<'a> {
    comments: &'a Comments,
    personal: Option<prost_reflect::ExtensionDescriptor>,
    done: BTreeMap<String, Json>,
    wanted: BTreeSet<String>,
}

impl Schemas<'_> {
    fn reference(&mut self, message: &MessageDescriptor) -> Json {
        if let Some(known) = well_known(message.full_name()) {
            return known;
        }
        self.wanted.insert(message.full_name().to_owned());
        json!({"$ref": format!("#/components/schemas/{}", message.full_name())})
    }

    fn description(&self, field: &FieldDescriptor) -> String {
        self.comments
            .get(field.parent_file().name(), field.path())
            .unwrap_or_default()
            .to_owned()
    }

    fn is_personal(&self, field: &FieldDescriptor) -> bool {
        self.personal.as_ref().is_some_and(|personal| {
            let options = field.options();
            options.has_extension(personal)
                && matches!(options.get_extension(personal).as_ref(), Value::Bool(true))
        })
    }

    fn message(&mut self, message: &MessageDescriptor) -> Json {
        let mut properties = Map::new();
        for field in message.fields() {
            let mut schema = self.field(&field);
            if let Json::Object(object) = &mut schema {
                let description = self.description(&field);
                if !description.is_empty() {
                    object.insert("description".to_owned(), Json::String(description));
                }
                if self.is_personal(&field) {
                    object.insert("x-govbus-personal".to_owned(), Json::Bool(true));
                }
                if let Some(oneof) = field.containing_oneof() {
                    object.insert(
                        "x-govbus-oneof".to_owned(),
                        Json::String(oneof.name().to_owned()),
                    );
                }
            }
            properties.insert(field.json_name().to_owned(), schema);
        }
        let description = self
            .comments
            .get(message.parent_file().name(), message.path())
            .unwrap_or_default();
        json!({
            "type": "object",
            "description": description,
            "properties": properties,
            "additionalProperties": false,
        })
    }

    fn field(&mut self, field: &FieldDescriptor) -> Json {
        if field.is_map() {
            let Kind::Message(entry) = field.kind() else {
                return json!({"type": "object"});
            };
            let value = entry.map_entry_value_field();
            return json!({"type": "object", "additionalProperties": self.single(&value)});
        }
        if field.is_list() {
            return json!({"type": "array", "items": self.single(field)});
        }
        self.single(field)
    }

    fn single(&mut self, field: &FieldDescriptor) -> Json {
        match field.kind() {
            Kind::Message(message) => self.reference(&message),
            _ => self.scalar(field),
        }
    }

    fn scalar(&self, field: &FieldDescriptor) -> Json {
        match field.kind() {
            Kind::String => json!({"type": "string"}),
            Kind::Bool => json!({"type": "boolean"}),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Kind::Uint32 | Kind::Fixed32 => {
                json!({"type": "integer", "format": "int32", "minimum": 0})
            }
            // proto3 JSON writes 64-bit integers as strings and reads either.
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                json!({"type": ["string", "integer"], "format": "int64"})
            }
            Kind::Uint64 | Kind::Fixed64 => {
                json!({"type": ["string", "integer"], "format": "uint64"})
            }
            Kind::Float => json!({"type": "number", "format": "float"}),
            Kind::Double => json!({"type": "number", "format": "double"}),
            Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
            Kind::Enum(enumeration) => enum_schema(&enumeration),
            Kind::Message(_) => json!({"type": "object"}),
        }
    }
}

fn enum_schema(enumeration: &EnumDescriptor) -> Json {
    let names: Vec<String> = enumeration
        .values()
        .map(|value| value.name().to_owned())
        .collect();
    json!({"type": "string", "enum": names})
}

/// The JSON forms of the well-known types the contracts may use.
fn well_known(name: &str) -> Option<Json> {
    Some(match name {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"})
        }
        "google.protobuf.Empty" => json!({"type": "object", "additionalProperties": false}),
        "google.protobuf.Struct" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        _ => return None,
    })
}

fn error_schema() -> Json {
    json!({
        "type": "object",
        "description": "A failed call: the HTTP status, the gRPC code's name, the message, and a google.rpc.BadRequest with every invalid field.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "status", "message"],
                "properties": {
                    "code": {"type": "integer"},
                    "status": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "@type": {"type": "string"},
                                "fieldViolations": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "field": {"type": "string"},
                                            "description": {"type": "string"},
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    })
}

/// The document of every route, with the services' own comments as the description.
pub fn of_routes(pool: &DescriptorPool, routes: &Routes, info: &DocumentInfo) -> Json {
    document(pool, routes.iter(), info)
}
