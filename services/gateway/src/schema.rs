//! JSON Schemas of the contracts' messages in their proto3 JSON form (the form the gateway reads
//! and writes, and the form events take over HTTP): 64-bit integers as strings, enums by name,
//! the well-known types as their JSON, the proto comments as descriptions, personal fields
//! marked (`x-govbus-personal: true`).

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::ReflectMessage as _;
use prost_reflect::{
    DescriptorPool, EnumDescriptor, ExtensionDescriptor, FieldDescriptor, Kind, MessageDescriptor,
    Value,
};
use serde_json::{Map, Value as Json, json};

/// The dialect of [`of_message`]'s documents.
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// The JSON Schema (2020-12) of `message`, standing alone: the messages it holds under `$defs`.
pub fn of_message(pool: &DescriptorPool, message: &MessageDescriptor) -> Json {
    let comments = Comments::of(pool);
    let mut schemas = Schemas::new(pool, &comments, "#/$defs/");
    let mut root = schemas.message(message);
    let defs = schemas.finish(pool);
    if let Json::Object(object) = &mut root {
        object.insert("$schema".to_owned(), Json::String(DIALECT.to_owned()));
        object.insert(
            "title".to_owned(),
            Json::String(message.full_name().to_owned()),
        );
        if !defs.is_empty() {
            object.insert("$defs".to_owned(), Json::Object(defs.into_iter().collect()));
        }
    }
    root
}

/// The JSON paths (`citizen.nik`, `members[].name`) of `message`'s personal fields, nested
/// messages included.
pub fn personal_paths(pool: &DescriptorPool, message: &MessageDescriptor) -> Vec<String> {
    let personal = personal_extension(pool);
    let mut paths = Vec::new();
    collect_personal(personal.as_ref(), message, "", &mut Vec::new(), &mut paths);
    paths
}

fn collect_personal(
    personal: Option<&ExtensionDescriptor>,
    message: &MessageDescriptor,
    prefix: &str,
    seen: &mut Vec<String>,
    paths: &mut Vec<String>,
) {
    // A message that holds itself is walked once.
    if seen.iter().any(|name| name == message.full_name()) {
        return;
    }
    seen.push(message.full_name().to_owned());
    for field in message.fields() {
        let list = if field.is_list() || field.is_map() {
            "[]"
        } else {
            ""
        };
        let path = format!("{prefix}{}{list}", field.json_name());
        if is_personal(personal, &field) {
            paths.push(path);
            continue;
        }
        let inner = match field.kind() {
            Kind::Message(inner) if field.is_map() => match inner.map_entry_value_field().kind() {
                Kind::Message(value) => Some(value),
                _ => None,
            },
            Kind::Message(inner) => Some(inner),
            _ => None,
        };
        if let Some(inner) = inner
            && well_known(inner.full_name()).is_none()
        {
            collect_personal(personal, &inner, &format!("{path}."), seen, paths);
        }
    }
    seen.pop();
}

/// Clears `message`'s personal fields, in nested messages too: what a subscriber whose grant
/// names no purpose gets.
pub fn strip_personal(pool: &DescriptorPool, message: &mut prost_reflect::DynamicMessage) {
    let personal = personal_extension(pool);
    strip(personal.as_ref(), message, 0);
}

fn strip(
    personal: Option<&ExtensionDescriptor>,
    message: &mut prost_reflect::DynamicMessage,
    depth: usize,
) {
    // Contracts nest a few levels; a message holding itself is not followed forever.
    if depth > 16 {
        return;
    }
    for field in message.descriptor().fields() {
        if is_personal(personal, &field) {
            message.clear_field(&field);
            continue;
        }
        if !matches!(field.kind(), Kind::Message(_)) || !message.has_field(&field) {
            continue;
        }
        match message.get_field_mut(&field) {
            Value::Message(inner) => strip(personal, inner, depth + 1),
            Value::List(items) => {
                for item in items {
                    if let Value::Message(inner) = item {
                        strip(personal, inner, depth + 1);
                    }
                }
            }
            Value::Map(entries) => {
                for value in entries.values_mut() {
                    if let Value::Message(inner) = value {
                        strip(personal, inner, depth + 1);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The person `event` is about: the value of the field its contract names as the data subject
/// (`(govbus.bus.v1.event).data_subject_field`), when it names one and the field is set.
pub fn data_subject(
    pool: &DescriptorPool,
    event: &prost_reflect::DynamicMessage,
) -> Option<String> {
    let extension = pool.get_extension_by_name("govbus.bus.v1.event")?;
    let options = event.descriptor().options();
    if !options.has_extension(&extension) {
        return None;
    }
    let Value::Message(declared) = options.get_extension(&extension).into_owned() else {
        return None;
    };
    let Some(Value::String(field)) = declared
        .get_field_by_name("data_subject_field")
        .map(std::borrow::Cow::into_owned)
    else {
        return None;
    };
    match event.get_field_by_name(&field)?.into_owned() {
        Value::String(subject) if !subject.is_empty() => Some(subject),
        _ => None,
    }
}

fn personal_extension(pool: &DescriptorPool) -> Option<ExtensionDescriptor> {
    pool.get_extension_by_name("govbus.bus.v1.personal")
}

fn is_personal(personal: Option<&ExtensionDescriptor>, field: &FieldDescriptor) -> bool {
    personal.is_some_and(|personal| {
        let options = field.options();
        options.has_extension(personal)
            && matches!(options.get_extension(personal).as_ref(), Value::Bool(true))
    })
}

/// The proto comments of a pool, by file and source path.
pub(crate) struct Comments(BTreeMap<(String, Vec<i32>), String>);

impl Comments {
    pub(crate) fn of(pool: &DescriptorPool) -> Self {
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

    pub(crate) fn get(&self, file: &str, path: &[i32]) -> Option<&str> {
        self.0
            .get(&(file.to_owned(), path.to_vec()))
            .map(String::as_str)
    }
}

/// The schemas made so far, and those still to make.
pub(crate) struct Schemas<'a> {
    comments: &'a Comments,
    personal: Option<ExtensionDescriptor>,
    /// Where the references point: `#/components/schemas/` in OpenAPI, `#/$defs/` alone.
    prefix: &'static str,
    done: BTreeMap<String, Json>,
    wanted: BTreeSet<String>,
}

impl<'a> Schemas<'a> {
    /// None made yet; references to `prefix` + the message's full name.
    pub(crate) fn new(pool: &DescriptorPool, comments: &'a Comments, prefix: &'static str) -> Self {
        Self {
            comments,
            personal: personal_extension(pool),
            prefix,
            done: BTreeMap::new(),
            wanted: BTreeSet::new(),
        }
    }

    /// Makes every schema referenced so far, and those they reference, by full name.
    pub(crate) fn finish(mut self, pool: &DescriptorPool) -> BTreeMap<String, Json> {
        while let Some(name) = self.wanted.pop_first() {
            if self.done.contains_key(&name) {
                continue;
            }
            if let Some(message) = pool.get_message_by_name(&name) {
                let schema = self.message(&message);
                self.done.insert(name, schema);
            }
        }
        self.done
    }

    pub(crate) fn reference(&mut self, message: &MessageDescriptor) -> Json {
        if let Some(known) = well_known(message.full_name()) {
            return known;
        }
        self.wanted.insert(message.full_name().to_owned());
        json!({"$ref": format!("{}{}", self.prefix, message.full_name())})
    }

    pub(crate) fn description(&self, field: &FieldDescriptor) -> String {
        self.comments
            .get(field.parent_file().name(), field.path())
            .unwrap_or_default()
            .to_owned()
    }

    pub(crate) fn is_personal(&self, field: &FieldDescriptor) -> bool {
        is_personal(self.personal.as_ref(), field)
    }

    pub(crate) fn message(&mut self, message: &MessageDescriptor) -> Json {
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

    pub(crate) fn field(&mut self, field: &FieldDescriptor) -> Json {
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

    pub(crate) fn single(&mut self, field: &FieldDescriptor) -> Json {
        match field.kind() {
            Kind::Message(message) => self.reference(&message),
            _ => self.scalar(field),
        }
    }

    pub(crate) fn scalar(&self, field: &FieldDescriptor) -> Json {
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

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use prost_reflect::DynamicMessage;

    use super::*;

    fn decoded(pool: &DescriptorPool, name: &str, bytes: &[u8]) -> DynamicMessage {
        let descriptor = pool.get_message_by_name(name).expect("a contract message");
        DynamicMessage::decode(descriptor, bytes).expect("decoded")
    }

    #[test]
    fn the_data_subject_is_the_field_the_contract_names() {
        let pool = DescriptorPool::decode(govbus_proto::FILE_DESCRIPTOR_SET).expect("pool");
        let deceased = govbus_proto::identity::v1::CitizenDeceased {
            citizen_ref: "c-1".to_owned(),
            date_of_death: "2026-11-30".to_owned(),
        };
        let event = decoded(
            &pool,
            "govbus.identity.v1.CitizenDeceased",
            &deceased.encode_to_vec(),
        );
        assert_eq!(data_subject(&pool, &event).as_deref(), Some("c-1"));
        // Unset, or an event about no one.
        let event = decoded(&pool, "govbus.identity.v1.CitizenDeceased", &[]);
        assert_eq!(data_subject(&pool, &event), None);
        let counted = decoded(&pool, "govbus.gateway.v1.LinkChecked", &[]);
        assert_eq!(data_subject(&pool, &counted), None);
    }
}
