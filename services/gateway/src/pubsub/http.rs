//! The publish/subscribe API's routes, at the paths of the GovStack Information Mediator's
//! PubSub specification: `…/api/v1/eventType` (a room's types), `…/pub/v1/{eventType}`
//! (publishing, a publication's status, withdrawing it). Every caller is authenticated and names
//! itself in `X-GovStack-Client` ([`crate::callers`]).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use http::request::Parts;
use http::{HeaderMap, StatusCode};
use serde_json::{Value as Json, json};
use tonic::Code;

use super::{PubSub, PubSubError};
use crate::callers::{Refused, caller};
use crate::directory::{ClientId, Directory, Principal, Provider};
use crate::errors::{ErrorBody, FieldViolation, error, failure, json};
use crate::signin::SignIn;

/// The largest event taken.
const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// What the publish/subscribe routes answer from.
#[derive(Debug, Clone)]
pub struct PubSubRoutes {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pubsub: Option<PubSub>,
    directory: Arc<Directory>,
    sign_in: Arc<SignIn>,
}

impl PubSubRoutes {
    /// Over `pubsub` (`None`: the gateway has no bus, and answers 503), for the callers
    /// `sign_in` lets in, in the rooms of `directory`.
    pub fn new(pubsub: Option<PubSub>, directory: Arc<Directory>, sign_in: Arc<SignIn>) -> Self {
        Self {
            inner: Arc::new(Inner {
                pubsub,
                directory,
                sign_in,
            }),
        }
    }
}

/// The routes, for a router of any state.
pub(crate) fn router<S: Clone + Send + Sync + 'static>(state: PubSubRoutes) -> axum::Router<S> {
    const ROOM: &str = "/r1/{instance}/{class}/{member}/{application}";
    axum::Router::new()
        .route(
            &format!("{ROOM}/api/v1/eventType"),
            get(list_types).post(create_type),
        )
        .route(
            &format!("{ROOM}/api/v1/eventType/{{event_type}}"),
            get(get_type).delete(delete_type),
        )
        .route(&format!("{ROOM}/pub/v1/{{event_type}}"), post(publish))
        .route(
            &format!("{ROOM}/pub/v1/{{event_type}}/{{event_id}}"),
            get(publication).delete(withdraw),
        )
        .with_state(state)
}

#[derive(Debug, serde::Deserialize)]
struct RoomPath {
    instance: String,
    class: String,
    member: String,
    application: String,
}

#[derive(Debug, serde::Deserialize)]
struct TypePath {
    instance: String,
    class: String,
    member: String,
    application: String,
    event_type: String,
}

#[derive(Debug, serde::Deserialize)]
struct EventPath {
    instance: String,
    class: String,
    member: String,
    application: String,
    event_type: String,
    event_id: String,
}

/// A path that names a room.
trait InRoom {
    /// Its instance, class, member and application.
    fn room(&self) -> [&str; 4];
}

macro_rules! in_room {
    ($($path:ty),*) => {$(
        impl InRoom for $path {
            fn room(&self) -> [&str; 4] {
                [&self.instance, &self.class, &self.member, &self.application]
            }
        }
    )*};
}

in_room!(RoomPath, TypePath, EventPath);

/// A room: a service's (its contract's event types) or an application's (its own).
#[derive(Debug, Clone)]
enum Room {
    Service(Provider),
    Application(String),
}

/// The body of `createEventType`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct EventTypeBody {
    event_type: String,
    schema: Json,
}

/// The body of `publishEvent`, with `subject` (the aggregate the event is about, which orders
/// its deliveries; never personal data) as govbus's extension.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PublishBody {
    event_type: String,
    event: Json,
    #[serde(default)]
    subject: Option<String>,
}

impl PubSubRoutes {
    /// The caller, and the room at the path.
    async fn enter(&self, parts: &Parts, path: &impl InRoom) -> Result<(Principal, Room), Refused> {
        let [instance, class, member, application] = path.room();
        let (principal, _) =
            caller(&self.inner.sign_in, &self.inner.directory, parts, true).await?;
        let directory = &self.inner.directory;
        directory
            .check_instance(instance)
            .map_err(|problem| Box::new(error(StatusCode::NOT_FOUND, Code::NotFound, problem)))?;
        let id = ClientId {
            instance: instance.to_owned(),
            member_class: class.to_owned(),
            member_code: member.to_owned(),
            application_code: Some(application.to_owned()),
        };
        if let Some(provider) = directory.provider_at(&id) {
            return Ok((principal, Room::Service(provider.clone())));
        }
        let name = format!("{member}.{application}");
        if class == directory.instance().member_class
            && govbus_kit::access::is_application_name(&name)
            && self.inner.sign_in.is_active(&name)
        {
            return Ok((principal, Room::Application(name)));
        }
        Err(Box::new(error(
            StatusCode::NOT_FOUND,
            Code::NotFound,
            format!("{id} is not on the bus; listClients lists who is"),
        )))
    }

    fn pubsub(&self) -> Result<&PubSub, Refused> {
        self.inner.pubsub.as_ref().ok_or_else(|| {
            Box::new(error(
                StatusCode::SERVICE_UNAVAILABLE,
                Code::Unavailable,
                "publish/subscribe needs the bus, and this gateway runs without it",
            ))
        })
    }
}

/// `application`'s room, entered by `principal`: refused unless it is that application.
fn own_room(principal: &Principal, application: &str, what: &str) -> Result<(), Refused> {
    if principal.name() == application {
        Ok(())
    } else {
        Err(Box::new(error(
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
            format!("only {application} {what} in its room"),
        )))
    }
}

/// The application whose room `room` is, if `principal` is that application; else the refusal
/// (`in_service_room` says why a service's room refuses it).
fn application_room(
    principal: &Principal,
    room: Room,
    what: &str,
    in_service_room: impl FnOnce(&Provider) -> Refused,
) -> Result<String, Refused> {
    match room {
        Room::Service(provider) => Err(in_service_room(&provider)),
        Room::Application(application) => {
            own_room(principal, &application, what)?;
            Ok(application)
        }
    }
}

fn contract_owned(provider: &Provider) -> Refused {
    Box::new(error(
        StatusCode::FORBIDDEN,
        Code::PermissionDenied,
        format!(
            "{}'s event types are its contract's (proto/govbus/{}/): they change there, with the service, not over HTTP",
            provider.name, provider.name
        ),
    ))
}

fn failed(problem: PubSubError) -> Response {
    let status = match &problem {
        PubSubError::InvalidName(_) | PubSubError::InvalidSchema(_) => StatusCode::BAD_REQUEST,
        PubSubError::Invalid { .. } => StatusCode::BAD_REQUEST,
        PubSubError::Exists(_) | PubSubError::KeyReused => StatusCode::CONFLICT,
        PubSubError::UnknownType(_) | PubSubError::UnknownPublication(_) => StatusCode::NOT_FOUND,
        PubSubError::Bus(_) => StatusCode::SERVICE_UNAVAILABLE,
        PubSubError::Db(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let code = match status {
        StatusCode::BAD_REQUEST => Code::InvalidArgument,
        StatusCode::CONFLICT => Code::AlreadyExists,
        StatusCode::NOT_FOUND => Code::NotFound,
        _ => Code::Unavailable,
    };
    if matches!(problem, PubSubError::Bus(_) | PubSubError::Db(_)) {
        tracing::error!(message = "Publish/subscribe failed.", %problem);
    }
    let violations = match &problem {
        PubSubError::Invalid { problems, .. } => problems
            .iter()
            .map(|(path, description)| FieldViolation {
                field: format!("event{path}"),
                description: description.clone(),
            })
            .collect(),
        _ => Vec::new(),
    };
    failure(
        status,
        ErrorBody::new(status, code, problem.to_string(), violations),
    )
}

fn body_of<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Refused> {
    if body.len() > MAX_EVENT_BYTES {
        return Err(Box::new(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::InvalidArgument,
            format!("the body is larger than {MAX_EVENT_BYTES} bytes"),
        )));
    }
    serde_json::from_slice(body).map_err(|problem| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            format!("the body: {problem}"),
        ))
    })
}

fn json_value(status: StatusCode, value: &Json) -> Response {
    json(status, serde_json::to_vec(value).unwrap_or_default())
}

fn no_content() -> Response {
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    response
}

async fn list_types(
    State(routes): State<PubSubRoutes>,
    Path(path): Path<RoomPath>,
    parts: Parts,
) -> Response {
    let answer = async {
        let (_, room) = routes.enter(&parts, &path).await?;
        let names: Vec<String> = match room {
            Room::Service(provider) => routes
                .inner
                .directory
                .published_by(&provider.name)
                .into_iter()
                .map(|(name, _)| name.to_owned())
                .collect(),
            Room::Application(application) => routes
                .pubsub()?
                .types_of(&application)
                .await
                .map_err(|problem| Box::new(failed(problem)))?
                .into_iter()
                .map(|registered| registered.event_type)
                .collect(),
        };
        Ok::<_, Refused>(if names.is_empty() {
            no_content()
        } else {
            json_value(StatusCode::OK, &json!(names))
        })
    };
    answer.await.unwrap_or_else(|refused: Refused| *refused)
}

async fn create_type(
    State(routes): State<PubSubRoutes>,
    Path(path): Path<RoomPath>,
    parts: Parts,
    body: Bytes,
) -> Response {
    let answer = async {
        let (principal, room) = routes.enter(&parts, &path).await?;
        let application =
            application_room(&principal, room, "registers event types", contract_owned)?;
        let body: EventTypeBody = body_of(&body)?;
        routes
            .pubsub()?
            .register_type(&application, &body.event_type, &body.schema)
            .await
            .map_err(|problem| Box::new(failed(problem)))?;
        tracing::info!(
            message = "Event type registered.",
            application = %application,
            event_type = %body.event_type,
        );
        Ok(json_value(
            StatusCode::OK,
            &json!({"eventType": body.event_type}),
        ))
    };
    answer.await.unwrap_or_else(|refused: Refused| *refused)
}

async fn get_type(
    State(routes): State<PubSubRoutes>,
    Path(path): Path<TypePath>,
    parts: Parts,
) -> Response {
    let answer = async {
        let (_, room) = routes.enter(&parts, &path).await?;
        let schema = match room {
            Room::Service(provider) => routes
                .inner
                .directory
                .published_by(&provider.name)
                .into_iter()
                .find(|(name, _)| *name == path.event_type)
                .map(|(_, schema)| schema.clone()),
            Room::Application(application) => routes
                .pubsub()?
                .type_of(&application, &path.event_type)
                .await
                .map_err(|problem| Box::new(failed(problem)))?
                .map(|registered| registered.schema),
        };
        Ok::<_, Refused>(match schema {
            Some(schema) => json_value(
                StatusCode::OK,
                &json!({"eventType": path.event_type, "schema": schema}),
            ),
            None => no_content(),
        })
    };
    answer.await.unwrap_or_else(|refused: Refused| *refused)
}

async fn delete_type(
    State(routes): State<PubSubRoutes>,
    Path(path): Path<TypePath>,
    parts: Parts,
) -> Response {
    let answer = async {
        let (principal, room) = routes.enter(&parts, &path).await?;
        let application =
            application_room(&principal, room, "deletes event types", contract_owned)?;
        routes
            .pubsub()?
            .delete_type(&application, &path.event_type)
            .await
            .map_err(|problem| Box::new(failed(problem)))?;
        Ok(no_content())
    };
    answer.await.unwrap_or_else(|refused: Refused| *refused)
}

async fn publish(
    State(routes): State<PubSubRoutes>,
    Path(path): Path<TypePath>,
    parts: Parts,
    body: Bytes,
) -> Response {
    let answer = async {
        let (principal, room) = routes.enter(&parts, &path).await?;
        let application = application_room(&principal, room, "publishes", |provider| {
            Box::new(error(
                StatusCode::FORBIDDEN,
                Code::PermissionDenied,
                format!(
                    "only {} publishes its events, from its outbox; an application publishes its own registered types in its own room",
                    provider.name
                ),
            ))
        })?;
        let body: PublishBody = body_of(&body)?;
        if body.event_type != path.event_type {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                format!(
                    "the body's eventType {:?} is not the path's {:?}",
                    body.event_type, path.event_type
                ),
            )));
        }
        let id = routes
            .pubsub()?
            .publish(
                &application,
                &path.event_type,
                &body.event,
                body.subject.as_deref(),
                idempotency_key(&parts.headers)?,
            )
            .await
            .map_err(|problem| Box::new(failed(problem)))?;
        Ok(json_value(StatusCode::CREATED, &json!({"id": id})))
    };
    answer.await.unwrap_or_else(|refused: Refused| *refused)
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, Refused> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(value) => match value.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= 200 => Ok(Some(key)),
            _ => Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                "the Idempotency-Key is 1 to 200 characters of text",
            ))),
        },
    }
}

async fn publication(
    State(routes): State<PubSubRoutes>,
    Path(path): Path<EventPath>,
    parts: Parts,
) -> Response {
    let answer = async {
        let (principal, room) = routes.enter(&parts, &path).await?;
        let application = application_room(&principal, room, "reads its publications", |_| {
            Box::new(error(
                StatusCode::NOT_FOUND,
                Code::NotFound,
                "a service's events are read by subscribing",
            ))
        })?;
        let publication = routes
            .pubsub()?
            .publication(&application, &path.event_type, &path.event_id)
            .await
            .map_err(|problem| Box::new(failed(problem)))?;
        let publisher = routes.inner.directory.client_id_of(&application);
        Ok(json_value(
            StatusCode::OK,
            &json!({
                "id": publication.id,
                "sequence": publication.sequence,
                "publisherId": {
                    "instanceId": publisher.instance,
                    "memberClass": publisher.member_class,
                    "memberCode": publisher.member_code,
                    "applicationCode": publisher.application_code,
                },
                "eventType": path.event_type,
                "event": publication.event,
            }),
        ))
    };
    answer.await.unwrap_or_else(|refused: Refused| *refused)
}

async fn withdraw(
    State(routes): State<PubSubRoutes>,
    Path(path): Path<EventPath>,
    parts: Parts,
) -> Response {
    let answer = async {
        let (principal, room) = routes.enter(&parts, &path).await?;
        let application = application_room(&principal, room, "withdraws its publications", |_| {
            Box::new(error(
                StatusCode::FORBIDDEN,
                Code::PermissionDenied,
                "a service's events are never withdrawn",
            ))
        })?;
        routes
            .pubsub()?
            .withdraw(&application, &path.event_type, &path.event_id)
            .await
            .map_err(|problem| Box::new(failed(problem)))?;
        Ok(no_content())
    };
    answer.await.unwrap_or_else(|refused: Refused| *refused)
}
