//! The REST routes the contracts declare: each RPC's `google.api.http` binding (its additional
//! bindings too), read from the descriptors, with its path template.
//!
//! Templates follow the gRPC-JSON transcoding syntax: literal segments, variables `{field}` or
//! `{field.sub=pattern}` whose pattern is made of literals, `*` (one segment) and `**` (the
//! rest), and an optional `:verb` at the end.

use std::sync::Arc;

use http::Method;
use percent_encoding::percent_decode_str;
use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value};

/// The option every bound RPC carries.
const HTTP_OPTION: &str = "google.api.http";

/// Why the contracts' bindings cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the binding of {method}: {problem}")]
pub struct RouteError {
    method: String,
    problem: String,
}

/// Where the HTTP request body goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyMapping {
    /// No body: every field not in the path comes from the query.
    None,
    /// The whole body is the request message (fields not in the path).
    Whole,
    /// The body is this top-level field; the others come from the query.
    Field(String),
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: any one segment.
    One,
    /// `**`: the rest of the path (last only).
    Rest,
}

/// A part of a template: a segment, or a variable over segments.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Segment(Segment),
    Variable {
        field_path: Vec<String>,
        segments: Vec<Segment>,
    },
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
    verb: Option<String>,
}

/// A route: an HTTP method and template bound to an RPC.
#[derive(Debug, Clone)]
pub struct Route {
    /// The HTTP method.
    pub verb: Method,
    /// The path template.
    pub template: Template,
    /// The RPC.
    pub method: MethodDescriptor,
    /// Where the body goes.
    pub body: BodyMapping,
    /// The response field that is the body, if not the whole response.
    pub response_body: Option<String>,
    /// The service's short name and the method's, as the calls through the gateway are
    /// counted: made once here, not on every request.
    pub counted_as: (Arc<str>, Arc<str>),
}

/// A service's short name: `govbus.identity.v1.IdentityService` is `identity`.
pub fn short_name(service: &str) -> &str {
    service.split('.').nth(1).unwrap_or(service)
}

/// A field path and the value the request path gave it.
pub type Captures = Vec<(Vec<String>, String)>;

/// Every route of some services.
#[derive(Debug, Clone, Default)]
pub struct Routes {
    routes: Vec<Route>,
}

/// What a request path and method matched.
#[derive(Debug)]
pub enum Matched<'a> {
    /// A route, with the fields its path captured.
    Route(&'a Route, Captures),
    /// The path has routes, none for this method (405); their methods.
    OtherMethods(Vec<Method>),
    /// No route has this path (404).
    Nothing,
}

impl Routes {
    /// The routes of `services` (full names, e.g. `govbus.identity.v1.IdentityService`) in
    /// `pool`: every RPC must carry a binding.
    pub fn of_services(pool: &DescriptorPool, services: &[&str]) -> Result<Self, RouteError> {
        let extension = pool.get_extension_by_name(HTTP_OPTION);
        let mut routes = Vec::new();
        for name in services {
            let Some(service) = pool.get_service_by_name(name) else {
                return Err(RouteError {
                    method: (*name).to_owned(),
                    problem: "no such service in the contracts".to_owned(),
                });
            };
            for method in service.methods() {
                let error = |problem: String| RouteError {
                    method: method.full_name().to_owned(),
                    problem,
                };
                if method.is_client_streaming() || method.is_server_streaming() {
                    return Err(error("streaming RPCs have no REST binding here".to_owned()));
                }
                let options = method.options();
                let rule = extension
                    .as_ref()
                    .filter(|extension| options.has_extension(extension))
                    .map(|extension| options.get_extension(extension).into_owned());
                let Some(Value::Message(rule)) = rule else {
                    return Err(error(format!("it has no ({HTTP_OPTION}) option")));
                };
                routes.push(route(&method, &rule).map_err(&error)?);
                if let Some(Value::List(more)) = rule
                    .get_field_by_name("additional_bindings")
                    .map(|value| value.into_owned())
                {
                    for binding in more {
                        if let Value::Message(binding) = binding {
                            routes.push(route(&method, &binding).map_err(&error)?);
                        }
                    }
                }
            }
        }
        for (index, first) in routes.iter().enumerate() {
            if let Some(second) = routes[index + 1..]
                .iter()
                .find(|other| other.verb == first.verb && other.template == first.template)
            {
                return Err(RouteError {
                    method: second.method.full_name().to_owned(),
                    problem: format!(
                        "{} {} is bound to {} already",
                        first.verb,
                        first.template.text,
                        first.method.full_name()
                    ),
                });
            }
        }
        Ok(Self { routes })
    }

    /// Every route.
    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// The route `verb` and `path` (undecoded, without the query) match.
    pub fn find(&self, verb: &Method, path: &str) -> Matched<'_> {
        let mut methods = Vec::new();
        for route in &self.routes {
            if let Some(captures) = route.template.matches(path) {
                if route.verb == *verb {
                    return Matched::Route(route, captures);
                }
                methods.push(route.verb.clone());
            }
        }
        if methods.is_empty() {
            Matched::Nothing
        } else {
            Matched::OtherMethods(methods)
        }
    }
}

fn route(method: &MethodDescriptor, rule: &DynamicMessage) -> Result<Route, String> {
    let text = |name: &str| {
        rule.get_field_by_name(name)
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let mut bound = None;
    for (name, verb) in [
        ("get", Method::GET),
        ("put", Method::PUT),
        ("post", Method::POST),
        ("delete", Method::DELETE),
        ("patch", Method::PATCH),
    ] {
        let pattern = text(name);
        if !pattern.is_empty() {
            bound = Some((verb, pattern));
        }
    }
    let (verb, pattern) = bound.ok_or("it binds no HTTP method (get, put, post, delete, patch)")?;
    let template = Template::parse(&pattern)?;
    let input = method.input();
    for part in &template.parts {
        if let Part::Variable { field_path, .. } = part {
            let mut message = input.clone();
            for (depth, name) in field_path.iter().enumerate() {
                let field = message
                    .get_field_by_name(name)
                    .ok_or_else(|| format!("the path names no field {}", field_path.join(".")))?;
                if field.is_list() || field.is_map() {
                    return Err(format!("the path field {name} is repeated"));
                }
                match field.kind() {
                    prost_reflect::Kind::Message(inner) if depth + 1 < field_path.len() => {
                        message = inner;
                    }
                    prost_reflect::Kind::Message(_) => {
                        return Err(format!("the path field {name} is a message"));
                    }
                    _ if depth + 1 < field_path.len() => {
                        return Err(format!("the path field {name} has no fields"));
                    }
                    _ => {}
                }
            }
        }
    }
    let body = match text("body").as_str() {
        "" => BodyMapping::None,
        "*" => BodyMapping::Whole,
        field => {
            if input.get_field_by_name(field).is_none() {
                return Err(format!("the body names no field {field}"));
            }
            BodyMapping::Field(field.to_owned())
        }
    };
    if verb == Method::GET && body != BodyMapping::None {
        return Err("a GET has no body".to_owned());
    }
    let response_body = match text("response_body") {
        field if field.is_empty() => None,
        field => {
            if method.output().get_field_by_name(&field).is_none() {
                return Err(format!("the response body names no field {field}"));
            }
            Some(field)
        }
    };
    Ok(Route {
        verb,
        template,
        counted_as: (
            Arc::from(short_name(method.parent_service().full_name())),
            Arc::from(method.name()),
        ),
        method: method.clone(),
        body,
        response_body,
    })
}

impl Template {
    /// Parses `/identity/v1/citizens/{nik}:verify` and the like.
    pub fn parse(text: &str) -> Result<Self, String> {
        let problem = |what: &str| format!("the path template {text:?} {what}");
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| problem("does not start with /"))?;
        // The verb follows the last `:` outside braces.
        let mut depth = 0;
        let mut verb_at = None;
        for (index, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ':' if depth == 0 => verb_at = Some(index),
                _ => {}
            }
        }
        let (path, verb) = match verb_at {
            Some(index) => (&rest[..index], Some(rest[index + 1..].to_owned())),
            None => (rest, None),
        };
        if verb.as_deref().is_some_and(str::is_empty) {
            return Err(problem("has an empty verb"));
        }
        let mut parts = Vec::new();
        let mut pieces = split_outside_braces(path).into_iter().peekable();
        while let Some(piece) = pieces.next() {
            let last = pieces.peek().is_none();
            if let Some(inner) = piece.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                let (field, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
                let field_path: Vec<String> = field.split('.').map(str::to_owned).collect();
                if field_path.iter().any(|name| !is_identifier(name)) {
                    return Err(problem("names a variable that is not a field path"));
                }
                let segments = pattern
                    .split('/')
                    .map(segment)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(&problem)?;
                if segments[..segments.len() - 1].contains(&Segment::Rest)
                    || (!last && segments.contains(&Segment::Rest))
                {
                    return Err(problem("has ** before its end"));
                }
                parts.push(Part::Variable {
                    field_path,
                    segments,
                });
            } else {
                let segment = segment(piece).map_err(&problem)?;
                if segment == Segment::Rest && !last {
                    return Err(problem("has ** before its end"));
                }
                parts.push(Part::Segment(segment));
            }
        }
        Ok(Self {
            text: text.to_owned(),
            parts,
            verb,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The field paths its variables capture.
    pub fn variables(&self) -> impl Iterator<Item = &[String]> {
        self.parts.iter().filter_map(|part| match part {
            Part::Variable { field_path, .. } => Some(field_path.as_slice()),
            Part::Segment(_) => None,
        })
    }

    /// The fields `path` gives, if it matches.
    pub fn matches(&self, path: &str) -> Option<Captures> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(verb) => rest.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => rest,
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let mut captures = Vec::new();
        let mut at = 0;
        for part in &self.parts {
            match part {
                Part::Segment(segment) => {
                    let taken = take(segment, &segments[at..])?;
                    at += taken;
                }
                Part::Variable {
                    field_path,
                    segments: pattern,
                } => {
                    let start = at;
                    for segment in pattern {
                        at += take(segment, &segments[at..])?;
                    }
                    let raw = segments[start..at].join("/");
                    // A single-segment variable decodes fully; a multi-segment one keeps %2F.
                    let value = if at - start == 1 {
                        percent_decode_str(&raw).decode_utf8().ok()?.into_owned()
                    } else {
                        raw.split('/')
                            .map(|piece| {
                                percent_decode_str(piece)
                                    .decode_utf8()
                                    .map(|decoded| decoded.replace('/', "%2F"))
                            })
                            .collect::<Result<Vec<_>, _>>()
                            .ok()?
                            .join("/")
                    };
                    captures.push((field_path.clone(), value));
                }
            }
        }
        (at == segments.len()).then_some(captures)
    }
}

/// How many of `segments` `segment` takes, if it matches.
fn take(segment: &Segment, segments: &[&str]) -> Option<usize> {
    match segment {
        Segment::Literal(literal) => (segments.first()? == literal).then_some(1),
        Segment::One => (!segments.first()?.is_empty()).then_some(1),
        Segment::Rest => Some(segments.len()),
    }
}

fn segment(text: &str) -> Result<Segment, &'static str> {
    match text {
        "" => Err("has an empty segment"),
        "*" => Ok(Segment::One),
        "**" => Ok(Segment::Rest),
        literal if literal.contains(['{', '}', '*', '=']) => Err("has a malformed segment"),
        literal => Ok(Segment::Literal(literal.to_owned())),
    }
}

fn split_outside_braces(path: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (index, c) in path.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            '/' if depth == 0 => {
                pieces.push(&path[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    pieces.push(&path[start..]);
    pieces
}

fn is_identifier(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capture(template: &str, path: &str) -> Option<Captures> {
        Template::parse(template).expect("parses").matches(path)
    }

    #[test]
    fn templates_match_literals_variables_and_verbs() {
        assert_eq!(
            capture(
                "/complaints/v1/complaints/{complaint_ref}:close",
                "/complaints/v1/complaints/abc:close"
            ),
            Some(vec![(vec!["complaint_ref".to_owned()], "abc".to_owned())])
        );
        assert_eq!(
            capture(
                "/complaints/v1/complaints/{complaint_ref}:close",
                "/complaints/v1/complaints/abc"
            ),
            None
        );
        assert_eq!(
            capture(
                "/identity/v1/citizens:verify",
                "/identity/v1/citizens:verify"
            ),
            Some(vec![])
        );
        assert_eq!(
            capture("/identity/v1/citizens:verify", "/identity/v1/citizens"),
            None
        );
        assert_eq!(
            capture("/v1/{name=shelves/*/books/*}", "/v1/shelves/s1/books/b%2F2"),
            Some(vec![(
                vec!["name".to_owned()],
                "shelves/s1/books/b%2F2".to_owned()
            )])
        );
        assert_eq!(
            capture("/v1/{a.b}/x", "/v1/caf%C3%A9/x"),
            Some(vec![(
                vec!["a".to_owned(), "b".to_owned()],
                "café".to_owned()
            )])
        );
        assert_eq!(capture("/v1/files/**", "/v1/files/a/b/c"), Some(vec![]));
        assert_eq!(capture("/v1/{id}", "/v1/"), None);
    }

    #[test]
    fn malformed_templates_are_refused() {
        for bad in [
            "v1/x", "/v1//x", "/v1/**/x", "/v1/{1a}", "/v1/x:", "/v1/a*b",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_rpc_of_every_service_has_a_route() {
        let pool = DescriptorPool::decode(govbus_proto::FILE_DESCRIPTOR_SET).expect("pool");
        let services: Vec<String> = pool
            .services()
            .filter(|service| service.full_name().starts_with("govbus."))
            .map(|service| service.full_name().to_owned())
            .collect();
        let names: Vec<&str> = services.iter().map(String::as_str).collect();
        let routes = Routes::of_services(&pool, &names).expect("every RPC is bound");
        let rpcs: usize = pool
            .services()
            .filter(|service| service.full_name().starts_with("govbus."))
            .map(|service| service.methods().count())
            .sum();
        assert_eq!(routes.iter().count(), rpcs);
        match routes.find(&Method::GET, "/licensing/v1/applications/0190") {
            Matched::Route(route, captures) => {
                assert_eq!(route.method.name(), "GetApplication");
                assert_eq!(captures[0].1, "0190");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            routes.find(&Method::DELETE, "/licensing/v1/applications/0190"),
            Matched::OtherMethods(_)
        ));
        assert!(matches!(
            routes.find(&Method::GET, "/nowhere"),
            Matched::Nothing
        ));
    }
}
