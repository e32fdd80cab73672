//! The directory over HTTP: the GovStack Information Mediator's directory services at the
//! paths its specification gives them, and govbus's own event types and catalogue beside them.
//!
//! Every caller is authenticated ([`crate::callers`]); the `X-GovStack-Client` header is
//! required where the specification requires it (`listMethods`, `allowedMethods`,
//! `getOpenAPI`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use govbus_kit::access::AccessPolicy;
use http::header::{ACCEPT, CONTENT_DISPOSITION, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};
use prost_reflect::DescriptorPool;
use tonic::Code;

use crate::callers::{Party, Refused, caller, party_at};
use crate::directory::{Directory, Entry, Principal, Provider};
use crate::errors::{error, json, json_value};
use crate::routes::Routes;
use crate::signin::SignIn;

/// What the directory's routes answer from.
#[derive(Debug, Clone)]
pub struct Metaservices {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    directory: Arc<Directory>,
    routes: Arc<Routes>,
    documents: Arc<BTreeMap<String, Vec<u8>>>,
    sign_in: Arc<SignIn>,
    policy: AccessPolicy,
    /// The Katalog Layanan entries of the routes and the event types.
    catalogue: Vec<Entry>,
}

impl Metaservices {
    /// The directory of `routes` (their messages in `pool`), their OpenAPI `documents` by
    /// service code, to callers `sign_in` lets in, with what `policy` allows them.
    pub fn new(
        pool: &DescriptorPool,
        directory: Arc<Directory>,
        routes: Arc<Routes>,
        documents: Arc<BTreeMap<String, Vec<u8>>>,
        sign_in: Arc<SignIn>,
        policy: AccessPolicy,
    ) -> Self {
        let catalogue = directory.catalogue(pool, &routes, sign_in.issuer().issuer());
        Self {
            inner: Arc::new(Inner {
                directory,
                routes,
                documents,
                sign_in,
                policy,
                catalogue,
            }),
        }
    }
}

/// The directory's routes, for a router of any state.
pub(crate) fn router<S: Clone + Send + Sync + 'static>(state: Metaservices) -> axum::Router<S> {
    const PROVIDER: &str = "/r1/{instance}/{class}/{member}/{application}";
    axum::Router::new()
        .route("/listClients", get(list_clients))
        .route(&format!("{PROVIDER}/listMethods"), get(list_methods))
        .route(&format!("{PROVIDER}/allowedMethods"), get(allowed_methods))
        .route(&format!("{PROVIDER}/getOpenAPI"), get(get_openapi))
        .route("/directory/event-types", get(event_types))
        .route("/directory/catalogue", get(catalogue))
        .with_state(state)
}

/// The provider a directory path names.
#[derive(Debug, serde::Deserialize)]
struct ProviderPath {
    instance: String,
    class: String,
    member: String,
    application: String,
}

#[derive(Debug, Default, serde::Deserialize)]
struct ListClientsQuery {
    #[serde(rename = "instanceId")]
    instance_id: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct MethodsQuery {
    #[serde(rename = "serviceId")]
    service_id: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct OpenApiQuery {
    #[serde(rename = "serviceCode")]
    service_code: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct CatalogueQuery {
    format: Option<String>,
}

async fn list_clients(
    State(gateway): State<Metaservices>,
    query: QueryOf<ListClientsQuery>,
    parts: Parts,
) -> Response {
    let query = match admitted(&gateway, &parts, false, query).await {
        Ok((_, query)) => query,
        Err(refused) => return refused.into_response(),
    };
    let directory = &gateway.inner.directory;
    if let Some(instance) = &query.instance_id
        && let Err(problem) = directory.check_instance(instance)
    {
        return error(StatusCode::NOT_FOUND, Code::NotFound, problem);
    }
    match gateway.inner.sign_in.applications().list().await {
        Ok(applications) => json_value(StatusCode::OK, &directory.clients(&applications)),
        Err(problem) => {
            tracing::error!(message = "Cannot read the application registry.", %problem);
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
                "the registry of applications cannot be read",
            )
        }
    }
}

async fn list_methods(
    State(gateway): State<Metaservices>,
    Path(path): Path<ProviderPath>,
    query: QueryOf<MethodsQuery>,
    parts: Parts,
) -> Response {
    methods(gateway, path, query, parts, false).await
}

async fn allowed_methods(
    State(gateway): State<Metaservices>,
    Path(path): Path<ProviderPath>,
    query: QueryOf<MethodsQuery>,
    parts: Parts,
) -> Response {
    methods(gateway, path, query, parts, true).await
}

async fn methods(
    gateway: Metaservices,
    path: ProviderPath,
    query: QueryOf<MethodsQuery>,
    parts: Parts,
    only_allowed: bool,
) -> Response {
    let (principal, query) = match admitted(&gateway, &parts, true, query).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused.into_response(),
    };
    let provider = match provider(&gateway, &path) {
        Ok(Some(provider)) => provider,
        Ok(None) => return json_value(StatusCode::OK, &serde_json::json!({"member": []})),
        Err(response) => return response.into_response(),
    };
    let policy = &gateway.inner.policy;
    let answer = gateway.inner.directory.methods(
        &provider,
        &gateway.inner.routes,
        query.service_id.as_deref(),
        |route| {
            !only_allowed
                || policy
                    .grant(
                        principal.name(),
                        &format!(
                            "{}/{}",
                            route.method.parent_service().full_name(),
                            route.method.name()
                        ),
                    )
                    .is_some()
        },
    );
    match answer {
        Some(answer) => json_value(StatusCode::OK, &answer),
        None => error(
            StatusCode::NOT_FOUND,
            Code::NotFound,
            format!(
                "{} offers no service {}",
                gateway.inner.directory.client_id_of(&provider.name),
                query.service_id.unwrap_or_default()
            ),
        ),
    }
}

async fn get_openapi(
    State(gateway): State<Metaservices>,
    Path(path): Path<ProviderPath>,
    query: QueryOf<OpenApiQuery>,
    parts: Parts,
) -> Response {
    let query = match admitted(&gateway, &parts, true, query).await {
        Ok((_, query)) => query,
        Err(refused) => return refused.into_response(),
    };
    let Some(service_code) = query.service_code.filter(|code| !code.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            "serviceCode is required: the code of one of the provider's services (listMethods)",
        );
    };
    let provider = match provider(&gateway, &path) {
        Ok(Some(provider)) => provider,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                Code::NotFound,
                "an application offers no REST service on the bus",
            );
        }
        Err(response) => return response.into_response(),
    };
    let document = gateway
        .inner
        .directory
        .document_of(&provider, &service_code)
        .and_then(|key| gateway.inner.documents.get(key));
    let Some(document) = document else {
        return error(
            StatusCode::NOT_FOUND,
            Code::NotFound,
            format!("{} offers no service {service_code}", provider.name),
        );
    };
    let mut response = json(StatusCode::OK, document.clone());
    // JSON is YAML 1.2: a client that asks for YAML gets the same document, labelled so.
    if wants_yaml(&parts.headers) {
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/yaml; charset=utf-8"),
        );
    }
    response
}

fn wants_yaml(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(ACCEPT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let yaml = accept.contains("text/yaml") || accept.contains("application/yaml");
    yaml && !accept.contains("application/json")
}

/// The service at `path`: `Ok(None)` when the path names a registered application (which
/// offers nothing), a 404 when it names nobody.
fn provider(gateway: &Metaservices, path: &ProviderPath) -> Result<Option<Provider>, Refused> {
    let party = party_at(
        &gateway.inner.directory,
        &gateway.inner.sign_in,
        [&path.instance, &path.class, &path.member, &path.application],
    )?;
    Ok(match party {
        Party::Service(provider) => Some(provider),
        Party::Application(_) => None,
    })
}

async fn event_types(State(gateway): State<Metaservices>, parts: Parts) -> Response {
    if let Err(refused) = caller(
        &gateway.inner.sign_in,
        &gateway.inner.directory,
        &parts,
        false,
    )
    .await
    {
        return refused.into_response();
    }
    json_value(StatusCode::OK, &gateway.inner.directory.event_types())
}

async fn catalogue(
    State(gateway): State<Metaservices>,
    query: QueryOf<CatalogueQuery>,
    parts: Parts,
) -> Response {
    let query = match admitted(&gateway, &parts, false, query).await {
        Ok((_, query)) => query,
        Err(refused) => return refused.into_response(),
    };
    let entries = &gateway.inner.catalogue;
    match query.format.as_deref() {
        None | Some("json") => json_value(
            StatusCode::OK,
            &serde_json::json!({
                "instance": gateway.inner.directory.instance().id,
                "entries": entries,
            }),
        ),
        Some("csv") => {
            let mut response = json(
                StatusCode::OK,
                crate::directory::catalogue_csv(entries).into_bytes(),
            );
            let headers = response.headers_mut();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            headers.insert(
                CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"katalog-layanan.csv\""),
            );
            response
        }
        Some(other) => error(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            format!("format {other:?} is not json or csv"),
        ),
    }
}

type QueryOf<T> = Result<Query<T>, axum::extract::rejection::QueryRejection>;

/// The authenticated caller and the request's query, or the answer that refuses them.
async fn admitted<T>(
    gateway: &Metaservices,
    parts: &Parts,
    header_required: bool,
    query: QueryOf<T>,
) -> Result<(Principal, T), Refused> {
    let (principal, _) = caller(
        &gateway.inner.sign_in,
        &gateway.inner.directory,
        parts,
        header_required,
    )
    .await?;
    match query {
        Ok(Query(query)) => Ok((principal, query)),
        Err(rejection) => Err(Refused::from(error(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            format!("the query cannot be read: {rejection}"),
        ))),
    }
}
