//! OpenAPI 3.1 documents of the REST routes, generated from the same descriptors the gateway
//! transcodes with: paths and parameters from the bindings, JSON Schemas of the messages in their
//! proto3 JSON form, the proto comments as descriptions, personal fields marked
//! (`x-govbus-personal: true`), and the error body every route may answer.

use std::collections::BTreeMap;

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value as Json, json};

use crate::routes::{BodyMapping, Route, Routes};
use crate::schema::{Comments, Schemas};
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

/// The OpenAPI document of `routes` (all of a gateway's, or one service's).
pub fn document<'a>(
    pool: &DescriptorPool,
    routes: impl IntoIterator<Item = &'a Route>,
    info: &DocumentInfo,
) -> Json {
    let comments = Comments::of(pool);
    let mut schemas = Schemas::new(pool, &comments, "#/components/schemas/");
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
    let mut components: Map<String, Json> = schemas.finish(pool).into_iter().collect();
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
