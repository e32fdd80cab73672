//! The bus's HTTP face: every gRPC method of the services as REST/JSON, from the
//! `google.api.http` binding its contract declares, transcoded over the contracts' descriptors
//! (gRPC-JSON transcoding: path and query parameters, body mapping, proto3 JSON names, enums as
//! strings), each call made to the service over gRPC like any caller's. Errors carry the gRPC
//! code mapped to its HTTP status and every field violation.
//!
//! Personal data travels in bodies, never in URLs (which proxies and access logs keep): the
//! contracts bind every RPC that takes a NIK or a KK number to a `POST` with a body.
//!
//! Every call is an application's: it signs in with an OAuth2 client of the gateway's
//! (`POST /oauth2/token`, client credentials) or a token of the deployment's identity provider,
//! sends it as a bearer token, and is let through only within its rate limit and to the methods
//! the access policy grants it, by the same grants as services. The services hear of the
//! application in the call's metadata, which they believe only from the gateway's certificate,
//! and record it with the gateway in their processing logs.
//!
//! # Layout
//!
//! - [`database`]: the gateway's own database and its migrations.
//! - [`applications`]: the registry of applications, their hashed secrets, their revocation.
//! - [`tokens`]: the gateway's own access tokens and their signing key.
//! - [`providers`]: tokens of the deployment's identity provider, through its published keys.
//! - [`signin`]: the token endpoint, and each request's token checked.
//! - [`rate`]: rate limits per application.
//! - [`serve`]: HTTPS (or plain HTTP on loopback) with the callers' client certificates.
//! - [`routes`]: the bindings read from the descriptors, their path templates, matching.
//! - [`transcode`]: an HTTP request into the RPC's message, its answer into JSON.
//! - [`call`]: calling an RPC with a message known only by its descriptor.
//! - [`errors`]: gRPC statuses as HTTP statuses and JSON error bodies.
//! - [`schema`]: JSON Schemas of the contracts' messages in their JSON form.
//! - [`openapi`]: OpenAPI 3.1 documents of the routes, from the same descriptors.
//! - [`directory`]: who is on the bus and what they offer, as GovStack identifiers; the event
//!   types; the Katalog Layanan Interoperabilitas Data.
//! - [`callers`]: who calls the directory and publish/subscribe: a token or a client
//!   certificate, and the `X-GovStack-Client` header that must name them.
//! - [`metaservices`]: the directory over HTTP: `GET /listClients`,
//!   `/r1/{instance}/{class}/{member}/{application}/listMethods`, `…/allowedMethods`,
//!   `…/getOpenAPI` as the GovStack Information Mediator specifies them,
//!   `/directory/event-types` and `/directory/catalogue` (`?format=csv`).
//! - [`pubsub`]: publish/subscribe over HTTP as the GovStack Information Mediator specifies it:
//!   rooms, their event types, publishing into JetStream.
//! - [`usage`]: the calls through the gateway and the link's use, counted and reported as the
//!   gateway's own events.
//! - [`splp`]: the link to the national SPLP: the documents published to its API manager, its
//!   services called at `/splp/<api>/…` with the instance's client-credentials token.
//! - [`Gateway`]: the HTTP handler over them; `GET /openapi.json` (every route) and
//!   `GET /openapi/<service>.json` (one service's, e.g. `identity`) serve the documents,
//!   `GET /.well-known/jwks.json` the keys that verify the gateway's tokens.

pub mod applications;
pub mod call;
pub mod callers;
pub mod database;
pub mod directory;
pub mod errors;
pub mod metaservices;
pub mod openapi;
pub mod providers;
pub mod pubsub;
pub mod rate;
pub mod routes;
pub mod schema;
pub mod serve;
pub mod signin;
pub mod splp;
pub mod tokens;
pub mod transcode;
pub mod usage;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use govbus_kit::access::{APPLICATION_METADATA, AccessPolicy};
use govbus_kit::in_process::ServiceChannel;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderValue, StatusCode};
use prost_reflect::DescriptorPool;
use tonic::Code;

use crate::directory::Directory;
use crate::errors::{ErrorBody, FieldViolation, error, failure, json};
use crate::metaservices::Metaservices;
use crate::pubsub::PubSub;
use crate::pubsub::http::PubSubRoutes;
use crate::routes::{Matched, RouteError, Routes};
use crate::signin::{SignIn, count_refusal};
use crate::transcode::{HttpRequest, request_message, response_json};

/// The `aud` of the gateway's own tokens.
pub const AUDIENCE: &str = "govbus";

pub use serve::MAX_BODY_BYTES;

/// Metadata passed on to the service from the HTTP request's headers of the same name.
const PASSED_HEADERS: &[&str] = &["x-request-id", "traceparent", "tracestate"];

/// The REST routes of some services, each served by calling its service.
#[derive(Debug, Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    routes: Arc<Routes>,
    channels: BTreeMap<String, ServiceChannel>,
    sign_in: Arc<SignIn>,
    policy: AccessPolicy,
    /// The OpenAPI documents: every route's, and each service's by its short name.
    documents: Arc<BTreeMap<String, Vec<u8>>>,
    metaservices: Metaservices,
    pubsub: PubSubRoutes,
    splp: Option<splp::SplpRoutes>,
    usage: Option<usage::Usage>,
}

/// What a gateway may have beside its routes.
#[derive(Debug, Clone, Default)]
pub struct Attachments {
    /// Publishes applications' events (`None`: the publish/subscribe routes answer 503).
    pub pubsub: Option<PubSub>,
    /// The link to the national SPLP (`None`: `/splp/…` is not served).
    pub splp: Option<Arc<splp::Splp>>,
    /// Counts the calls through it and the link's use, for the bus (`None`: not counted).
    pub usage: Option<usage::Usage>,
    /// Its chain of the processing log: events about a person handed to subscribers with
    /// their personal fields (`None`: not recorded, as without TLS).
    pub processing_log: Option<govbus_kit::audit::ProcessingLog>,
}

/// The key of the document of every route.
const ALL: &str = "";

impl Gateway {
    /// Serves the services named in `channels` (full service name → a channel to it), with
    /// the routes their contracts in `pool` declare, to the applications `sign_in` lets in and
    /// `policy` grants the methods; `directory` says who is on the bus; `pubsub` publishes
    /// applications' events, `attachments` what it has beside its routes.
    pub fn new(
        pool: &DescriptorPool,
        channels: BTreeMap<String, ServiceChannel>,
        sign_in: Arc<SignIn>,
        policy: AccessPolicy,
        directory: Directory,
        attachments: Attachments,
    ) -> Result<Self, RouteError> {
        let Attachments {
            pubsub,
            splp,
            usage,
            processing_log,
        } = attachments;
        let names: Vec<&str> = channels.keys().map(String::as_str).collect();
        let routes = Routes::of_services(pool, &names)?;
        let version = env!("CARGO_PKG_VERSION").to_owned();
        let mut documents = BTreeMap::new();
        let all = openapi::of_routes(
            pool,
            &routes,
            &openapi::DocumentInfo {
                title: "govbus".to_owned(),
                version: version.clone(),
                description: "Every service on the bus, as REST/JSON.".to_owned(),
            },
        );
        documents.insert(
            ALL.to_owned(),
            serde_json::to_vec_pretty(&all).unwrap_or_default(),
        );
        for name in &names {
            let short = routes::short_name(name).to_owned();
            let document = openapi::document(
                pool,
                routes
                    .iter()
                    .filter(|route| route.method.parent_service().full_name() == *name),
                &openapi::DocumentInfo {
                    title: format!("govbus {short}"),
                    version: version.clone(),
                    description: format!("The {short} service as REST/JSON ({name})."),
                },
            );
            documents.insert(
                short,
                serde_json::to_vec_pretty(&document).unwrap_or_default(),
            );
        }
        let routes = Arc::new(routes);
        let documents = Arc::new(documents);
        let directory = Arc::new(directory);
        let pubsub = PubSubRoutes::new(
            pubsub,
            Arc::clone(&directory),
            Arc::clone(&sign_in),
            policy.clone(),
            pool.clone(),
            processing_log,
        );
        let splp = splp.map(|splp| {
            splp::SplpRoutes::new(
                splp,
                Arc::clone(&sign_in),
                Arc::clone(&directory),
                policy.clone(),
                usage.clone(),
            )
        });
        let metaservices = Metaservices::new(
            pool,
            directory,
            Arc::clone(&routes),
            Arc::clone(&documents),
            Arc::clone(&sign_in),
            policy.clone(),
        );
        Ok(Self {
            inner: Arc::new(Inner {
                routes,
                channels,
                sign_in,
                policy,
                documents,
                metaservices,
                pubsub,
                splp,
                usage,
            }),
        })
    }

    /// Each service's OpenAPI document, by the service's short name (`identity`).
    pub fn service_documents(&self) -> Vec<(String, serde_json::Value)> {
        self.inner
            .documents
            .iter()
            .filter(|(name, _)| name.as_str() != ALL)
            .filter_map(|(name, document)| {
                Some((name.clone(), serde_json::from_slice(document).ok()?))
            })
            .collect()
    }

    /// How subscribers get their events: what the webhooks' deliveries post
    /// ([`pubsub::webhooks::spawn`]).
    pub fn subscribers_items(&self) -> pubsub::items::Items {
        self.inner.pubsub.items()
    }

    /// Its routes.
    pub fn routes(&self) -> &Routes {
        &self.inner.routes
    }

    /// The OpenAPI document of every route (`None`) or of one service (`identity`).
    pub fn openapi(&self, service: Option<&str>) -> Option<&[u8]> {
        self.inner
            .documents
            .get(service.unwrap_or(ALL))
            .map(Vec::as_slice)
    }

    /// An axum router answering every route, the OpenAPI documents, and 404 or 405 for the
    /// rest.
    pub fn router(self) -> axum::Router {
        let splp = self.inner.splp.clone().map(splp::router);
        let router = axum::Router::new()
            .route("/oauth2/token", axum::routing::post(token))
            .route("/.well-known/jwks.json", axum::routing::get(jwks))
            .route("/openapi.json", axum::routing::get(whole_document))
            .route("/openapi/{document}", axum::routing::get(service_document))
            .merge(metaservices::router(self.inner.metaservices.clone()))
            .merge(pubsub::http::router(self.inner.pubsub.clone()));
        let router = match splp {
            Some(splp) => router.merge(splp),
            None => router,
        };
        router.fallback(handle).with_state(self)
    }
}

async fn token(State(gateway): State<Gateway>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, 16 * 1024).await {
        Ok(body) => gateway.inner.sign_in.token(&parts.headers, &body).await,
        Err(_) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::InvalidArgument,
            "a token request is a small form",
        ),
    }
}

async fn jwks(State(gateway): State<Gateway>) -> Response {
    json(
        StatusCode::OK,
        gateway
            .inner
            .sign_in
            .issuer()
            .jwks()
            .to_string()
            .into_bytes(),
    )
}

async fn whole_document(State(gateway): State<Gateway>) -> Response {
    served_document(&gateway, None)
}

async fn service_document(
    State(gateway): State<Gateway>,
    axum::extract::Path(document): axum::extract::Path<String>,
) -> Response {
    match document.strip_suffix(".json") {
        Some(service) => served_document(&gateway, Some(service)),
        None => error(
            StatusCode::NOT_FOUND,
            Code::NotFound,
            "the documents are /openapi/<service>.json",
        ),
    }
}

fn served_document(gateway: &Gateway, service: Option<&str>) -> Response {
    match gateway.openapi(service) {
        Some(document) => json(StatusCode::OK, document.to_vec()),
        None => error(
            StatusCode::NOT_FOUND,
            Code::NotFound,
            format!("no service {} here", service.unwrap_or_default()),
        ),
    }
}

async fn handle(State(gateway): State<Gateway>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    // Signed in before anything else is said, even whether a route exists.
    let application = match gateway.inner.sign_in.authenticate(&parts.headers).await {
        Ok(client) => client,
        Err(refusal) => return signin::refused(refusal, &path),
    };
    let (route, captures) = match gateway.inner.routes.find(&parts.method, &path) {
        Matched::Route(route, captures) => (route, captures),
        Matched::OtherMethods(methods) => {
            let allowed: Vec<&str> = methods.iter().map(http::Method::as_str).collect();
            let mut response = error(
                StatusCode::METHOD_NOT_ALLOWED,
                Code::Unimplemented,
                format!(
                    "{} is not served on {path}; use {}",
                    parts.method,
                    allowed.join(", ")
                ),
            );
            if let Ok(allow) = HeaderValue::from_str(&allowed.join(", ")) {
                response.headers_mut().insert(ALLOW, allow);
            }
            return response;
        }
        Matched::Nothing => {
            return error(
                StatusCode::NOT_FOUND,
                Code::NotFound,
                format!("no route {path}; the OpenAPI documents list every route"),
            );
        }
    };
    let service = route.method.parent_service().full_name().to_owned();
    let method = format!("{service}/{}", route.method.name());
    if gateway
        .inner
        .policy
        .grant(&application.name, &method)
        .is_none()
    {
        tracing::warn!(
            message = "Call refused by the access policy.",
            application = &*application.name,
            %method,
        );
        count_refusal("no_grant", Some(&application.name));
        return error(
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
            format!("{} may not call {method}", application.name),
        );
    }
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                Code::InvalidArgument,
                format!("the body is larger than {MAX_BODY_BYTES} bytes, or was cut off"),
            );
        }
    };
    if !body.is_empty() {
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let media = content_type.split(';').next().unwrap_or_default().trim();
        if !media.eq_ignore_ascii_case("application/json") {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Code::InvalidArgument,
                "the body must be JSON (Content-Type: application/json)",
            );
        }
    }
    let http_request = HttpRequest {
        captures,
        query: &query,
        body: &body,
        idempotency_key: parts
            .headers
            .get("idempotency-key")
            .and_then(|value| value.to_str().ok()),
    };
    let message = match request_message(route, &http_request) {
        Ok(message) => message,
        Err(problem) => {
            let body = ErrorBody::new(
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                format!("invalid request: {problem}"),
                vec![FieldViolation {
                    field: problem.field,
                    description: problem.problem,
                }],
            );
            return failure(StatusCode::BAD_REQUEST, body);
        }
    };
    let Some(channel) = gateway.inner.channels.get(&service).cloned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            Code::Unavailable,
            format!("no channel to {service}"),
        );
    };
    let mut call = tonic::Request::new(message);
    if let Ok(name) = application.name.parse() {
        call.metadata_mut().insert(APPLICATION_METADATA, name);
    }
    for name in PASSED_HEADERS {
        if let Some(value) = parts.headers.get(*name)
            && let Ok(text) = value.to_str()
            && let Ok(value) = text.parse()
        {
            call.metadata_mut().insert(*name, value);
        }
    }
    if let Some(usage) = &gateway.inner.usage {
        let (service, method) = &route.counted_as;
        usage.call(&application.name, service, method);
    }
    match call::unary(channel, &route.method, call).await {
        Ok(answer) => match response_json(route, &answer) {
            Ok(body) => json(StatusCode::OK, body),
            Err(problem) => {
                tracing::error!(message = "Cannot write a response as JSON.", %problem);
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Code::Internal,
                    "the answer could not be written as JSON",
                )
            }
        },
        Err(status) => {
            let (http, body) = ErrorBody::of_status(&status);
            failure(http, body)
        }
    }
    .into_response()
}
