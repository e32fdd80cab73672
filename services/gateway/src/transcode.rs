//! gRPC-JSON transcoding: an HTTP request (path captures, query, body, `Idempotency-Key`) into
//! the RPC's request message, and its response message into proto3 JSON.
//!
//! The JSON is prost-reflect's proto3 JSON mapping (lowerCamelCase names, proto names accepted
//! too, enums as their names, 64-bit integers as strings, well-known types as specified); the
//! gateway writes no codec of its own. Unknown fields are refused.

use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage,
    SerializeOptions, Value,
};

use crate::routes::{BodyMapping, Captures, Route};

/// The request field an `Idempotency-Key` header fills.
pub const IDEMPOTENCY_FIELD: &str = "idempotency_key";

/// Why a request cannot be made into the RPC's message: a 400 with the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct TranscodeError {
    /// The field (or `body`, or a query parameter) at fault.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl TranscodeError {
    fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// What the HTTP request carried.
#[derive(Debug, Default)]
pub struct HttpRequest<'a> {
    /// The fields the path captured.
    pub captures: Captures,
    /// The query string, undecoded, without `?`.
    pub query: &'a str,
    /// The body.
    pub body: &'a [u8],
    /// The `Idempotency-Key` header.
    pub idempotency_key: Option<&'a str>,
}

/// The RPC's request message for `request` on `route`.
pub fn request_message(
    route: &Route,
    request: &HttpRequest<'_>,
) -> Result<DynamicMessage, TranscodeError> {
    let input = route.method.input();
    let mut message = match &route.body {
        BodyMapping::Whole => from_json(&input, request.body, "body")?,
        BodyMapping::Field(name) => {
            let mut message = DynamicMessage::new(input.clone());
            if !request.body.is_empty() {
                let field = input
                    .get_field_by_name(name)
                    .ok_or_else(|| TranscodeError::new(name.as_str(), "no such field"))?;
                let value: serde_json::Value = serde_json::from_slice(request.body)
                    .map_err(|error| TranscodeError::new("body", format!("not JSON: {error}")))?;
                let wrapped = serde_json::json!({ field.json_name(): value });
                let bytes = serde_json::to_vec(&wrapped)
                    .map_err(|error| TranscodeError::new("body", error.to_string()))?;
                let parsed = from_json(&input, &bytes, "body")?;
                message.set_field(&field, parsed.get_field(&field).into_owned());
            }
            message
        }
        BodyMapping::None => {
            if !request.body.is_empty() {
                return Err(TranscodeError::new(
                    "body",
                    "this route takes no body; its fields go in the path and the query",
                ));
            }
            DynamicMessage::new(input.clone())
        }
    };
    let in_path: Vec<&[String]> = route.template.variables().collect();
    for (path, text) in &request.captures {
        set_scalar(&mut message, path, text, true)?;
    }
    if route.body != BodyMapping::Whole {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(request.query)
            .map_err(|error| TranscodeError::new("query", error.to_string()))?;
        for (name, text) in pairs {
            let path: Vec<String> = name.split('.').map(str::to_owned).collect();
            let top = resolve_name(&input, &path[0]).map(|field| field.name().to_owned());
            if in_path.iter().any(|bound| bound.first() == top.as_ref()) {
                return Err(TranscodeError::new(name, "is given by the path"));
            }
            if let BodyMapping::Field(body) = &route.body
                && top.as_deref() == Some(body.as_str())
            {
                return Err(TranscodeError::new(name, "is given by the body"));
            }
            set_scalar(&mut message, &path, &text, false)?;
        }
    } else if !request.query.is_empty() {
        return Err(TranscodeError::new(
            "query",
            "this route takes its fields from the body; the query must be empty",
        ));
    }
    if let Some(key) = request.idempotency_key
        && let Some(field) = input.get_field_by_name(IDEMPOTENCY_FIELD)
    {
        let given = message.get_field(&field);
        match given.as_str() {
            Some("") | None => message.set_field(&field, Value::String(key.to_owned())),
            Some(same) if same == key => {}
            Some(_) => {
                return Err(TranscodeError::new(
                    IDEMPOTENCY_FIELD,
                    "differs from the Idempotency-Key header",
                ));
            }
        }
    }
    Ok(message)
}

/// The response message as proto3 JSON (the route's response field alone when it names one).
pub fn response_json(route: &Route, message: &DynamicMessage) -> Result<Vec<u8>, String> {
    let options = SerializeOptions::new()
        .stringify_64_bit_integers(true)
        .skip_default_fields(false);
    let mut out = Vec::new();
    let mut serializer = serde_json::Serializer::new(&mut out);
    match &route.response_body {
        None => message
            .serialize_with_options(&mut serializer, &options)
            .map_err(|error| error.to_string())?,
        Some(name) => {
            let whole = {
                let mut bytes = Vec::new();
                let mut whole = serde_json::Serializer::new(&mut bytes);
                message
                    .serialize_with_options(&mut whole, &options)
                    .map_err(|error| error.to_string())?;
                serde_json::from_slice::<serde_json::Value>(&bytes)
                    .map_err(|error| error.to_string())?
            };
            let json_name = message
                .descriptor()
                .get_field_by_name(name)
                .map(|field| field.json_name().to_owned())
                .unwrap_or_else(|| name.clone());
            serde::Serialize::serialize(
                whole.get(&json_name).unwrap_or(&serde_json::Value::Null),
                &mut serializer,
            )
            .map_err(|error| error.to_string())?;
        }
    }
    Ok(out)
}

fn from_json(
    descriptor: &MessageDescriptor,
    body: &[u8],
    field: &str,
) -> Result<DynamicMessage, TranscodeError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DynamicMessage::new(descriptor.clone()));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let message = DynamicMessage::deserialize_with_options(
        descriptor.clone(),
        &mut deserializer,
        &DeserializeOptions::new().deny_unknown_fields(true),
    )
    .map_err(|error| TranscodeError::new(field, error.to_string()))?;
    deserializer
        .end()
        .map_err(|error| TranscodeError::new(field, error.to_string()))?;
    Ok(message)
}

/// A field by its proto name or its JSON name.
fn resolve_name(descriptor: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    descriptor
        .get_field_by_name(name)
        .or_else(|| descriptor.get_field_by_json_name(name))
}

/// Sets the scalar at `path` (through nested messages) from its text; a repeated field takes
/// one more element (a query parameter may repeat).
fn set_scalar(
    message: &mut DynamicMessage,
    path: &[String],
    text: &str,
    from_path: bool,
) -> Result<(), TranscodeError> {
    let name = path.join(".");
    let Some((first, rest)) = path.split_first() else {
        return Err(TranscodeError::new(name, "an empty field name"));
    };
    let field = resolve_name(&message.descriptor(), first)
        .ok_or_else(|| TranscodeError::new(name.as_str(), "no such field"))?;
    if !rest.is_empty() {
        let Kind::Message(_) = field.kind() else {
            return Err(TranscodeError::new(name, "is not a message"));
        };
        if field.is_list() || field.is_map() {
            return Err(TranscodeError::new(
                name,
                "a repeated message cannot be set here",
            ));
        }
        let inner = message.get_field_mut(&field);
        let Value::Message(inner) = inner else {
            return Err(TranscodeError::new(name, "is not a message"));
        };
        return set_scalar(inner, rest, text, from_path);
    }
    if field.is_map() {
        return Err(TranscodeError::new(
            name,
            "a map cannot be set from the URL",
        ));
    }
    let value =
        scalar(&field, text).map_err(|problem| TranscodeError::new(name.as_str(), problem))?;
    if field.is_list() {
        if from_path {
            return Err(TranscodeError::new(
                name,
                "a repeated field cannot be in the path",
            ));
        }
        if let Value::List(values) = message.get_field_mut(&field) {
            values.push(value);
        }
    } else {
        message.set_field(&field, value);
    }
    Ok(())
}

fn scalar(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    let number = |what: &str| format!("must be {what}");
    Ok(match field.kind() {
        Kind::String => Value::String(text.to_owned()),
        Kind::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(number("true or false")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(text.parse().map_err(|_| number("a 32-bit integer"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(text.parse().map_err(|_| number("a 64-bit integer"))?)
        }
        Kind::Uint32 | Kind::Fixed32 => Value::U32(
            text.parse()
                .map_err(|_| number("an unsigned 32-bit integer"))?,
        ),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(
            text.parse()
                .map_err(|_| number("an unsigned 64-bit integer"))?,
        ),
        Kind::Float => Value::F32(text.parse().map_err(|_| number("a number"))?),
        Kind::Double => Value::F64(text.parse().map_err(|_| number("a number"))?),
        Kind::Enum(enumeration) => {
            let value = enumeration
                .get_value_by_name(text)
                .map(|value| value.number())
                .or_else(|| {
                    text.parse::<i32>()
                        .ok()
                        .filter(|n| enumeration.get_value(*n).is_some())
                });
            let Some(value) = value else {
                let names: Vec<String> = enumeration
                    .values()
                    .map(|value| value.name().to_owned())
                    .collect();
                return Err(format!("must be one of {}", names.join(", ")));
            };
            Value::EnumNumber(value)
        }
        Kind::Bytes => return Err("bytes cannot be set from the URL".to_owned()),
        Kind::Message(_) => return Err("a message cannot be set from the URL".to_owned()),
    })
}
