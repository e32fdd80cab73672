//! The publish/subscribe API's routes, at the paths of the GovStack Information Mediator's
//! PubSub specification: `…/api/v1/eventType` (a room's types), `…/pub/v1/{eventType}`
//! (publishing, a publication's status, withdrawing it), `…/api/v1/subs` (the caller's
//! subscriptions), `…/pull/v1/{eventType}` (the next event, and confirming it). Every caller is
//! authenticated and names itself in `X-GovStack-Client` ([`crate::callers`]).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use http::request::Parts;
use http::{HeaderMap, StatusCode};
use serde_json::{Value as Json, json};
use tonic::Code;

use govbus_kit::access::AccessPolicy;
use prost_reflect::DescriptorPool;

use super::items::Items;
use super::subscriptions::{Delivery, Subscription, Topic};
use super::{PubSub, PubSubError};
use crate::callers::{Party, Refused, caller, party_at};
use crate::directory::{ClientId, Directory, Principal, Provider};
use crate::errors::{ErrorBody, FieldViolation, error, failure, json_value};
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
    policy: AccessPolicy,
    items: Items,
}

impl PubSubRoutes {
    /// Over `pubsub` (`None`: the gateway has no bus, and answers 503), for the callers
    /// `sign_in` lets in, in the rooms of `directory`, subscribing to what `policy` grants them;
    /// services' events read with the contracts in `pool`; personal data handed out recorded
    /// in `log`.
    pub fn new(
        pubsub: Option<PubSub>,
        directory: Arc<Directory>,
        sign_in: Arc<SignIn>,
        policy: AccessPolicy,
        pool: DescriptorPool,
        log: Option<govbus_kit::audit::ProcessingLog>,
    ) -> Self {
        let items = Items::new(pool, Arc::clone(&directory), policy.clone(), log);
        Self {
            inner: Arc::new(Inner {
                pubsub,
                directory,
                sign_in,
                policy,
                items,
            }),
        }
    }
}

impl PubSubRoutes {
    /// How its subscribers get their events (for the webhooks' deliveries).
    pub fn items(&self) -> Items {
        self.inner.items.clone()
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
        .route(&format!("{ROOM}/api/v1/subs"), get(list_subscriptions))
        .route(
            &format!("{ROOM}/api/v1/subs/{{event_type}}"),
            post(subscribe)
                .get(subscription)
                .patch(change_subscription)
                .delete(unsubscribe),
        )
        .route(&format!("{ROOM}/pull/v1/{{event_type}}"), get(pull))
        .route(
            &format!("{ROOM}/pull/v1/{{event_type}}/{{event_id}}"),
            axum::routing::delete(confirm),
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

/// A path that names an event type in a room.
trait OfType: InRoom {
    /// The type, as the room names it.
    fn event_type(&self) -> &str;
}

impl OfType for TypePath {
    fn event_type(&self) -> &str {
        &self.event_type
    }
}

impl OfType for EventPath {
    fn event_type(&self) -> &str {
        &self.event_type
    }
}

/// A room: a service's (its contract's event types) or an application's (its own).
type Room = Party;

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
        let (principal, _) =
            caller(&self.inner.sign_in, &self.inner.directory, parts, true).await?;
        let room = party_at(&self.inner.directory, &self.inner.sign_in, path.room())?;
        Ok((principal, room))
    }

    fn pubsub(&self) -> Result<&PubSub, Refused> {
        self.inner.pubsub.as_ref().ok_or_else(|| {
            Refused::from(error(
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
        Err(Refused::from(error(
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
    Refused::from(error(
        StatusCode::FORBIDDEN,
        Code::PermissionDenied,
        format!(
            "{}'s event types are its contract's (proto/govbus/{}/): they change there, with the service, not over HTTP",
            provider.name, provider.name
        ),
    ))
}

/// `problem` as an answer: its gRPC code, and that code's HTTP status.
fn failed(problem: PubSubError) -> Refused {
    let code = match &problem {
        PubSubError::InvalidName(_)
        | PubSubError::InvalidSchema(_)
        | PubSubError::Invalid { .. } => Code::InvalidArgument,
        PubSubError::Exists(_) | PubSubError::KeyReused => Code::AlreadyExists,
        PubSubError::UnknownType(_) | PubSubError::UnknownPublication(_) => Code::NotFound,
        PubSubError::Bus(_) | PubSubError::Db(_) => Code::Unavailable,
    };
    let status = crate::errors::http_status(code);
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
    .into()
}

fn body_of<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Refused> {
    if body.len() > MAX_EVENT_BYTES {
        return Err(Refused::from(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::InvalidArgument,
            format!("the body is larger than {MAX_EVENT_BYTES} bytes"),
        )));
    }
    serde_json::from_slice(body).map_err(|problem| {
        Refused::from(error(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            format!("the body: {problem}"),
        ))
    })
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
) -> Result<Response, Refused> {
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
            .map_err(failed)?
            .into_iter()
            .map(|registered| registered.event_type)
            .collect(),
    };
    Ok(if names.is_empty() {
        no_content()
    } else {
        json_value(StatusCode::OK, &json!(names))
    })
}

async fn create_type(
    State(routes): State<PubSubRoutes>,
    Path(path): Path<RoomPath>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, Refused> {
    let (principal, room) = routes.enter(&parts, &path).await?;
    let application = application_room(&principal, room, "registers event types", contract_owned)?;
    let body: EventTypeBody = body_of(&body)?;
    routes
        .pubsub()?
        .register_type(&application, &body.event_type, &body.schema)
        .await
        .map_err(failed)?;
    tracing::info!(
        message = "Event type registered.",
        application = %application,
        event_type = %body.event_type,
    );
    Ok(json_value(
        StatusCode::OK,
        &json!({"eventType": body.event_type}),
    ))
}

async fn get_type(
    State(routes): State<PubSubRoutes>,
    Path(path): Path<TypePath>,
    parts: Parts,
) -> Result<Response, Refused> {
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
            .map_err(failed)?
            .map(|registered| registered.schema),
    };
    Ok(match schema {
        Some(schema) => json_value(
            StatusCode::OK,
            &json!({"eventType": path.event_type, "schema": schema}),
        ),
        None => no_content(),
    })
}

async fn delete_type(
    State(routes): State<PubSubRoutes>,
    Path(path): Path<TypePath>,
    parts: Parts,
) -> Result<Response, Refused> {
    let (principal, room) = routes.enter(&parts, &path).await?;
    let application = application_room(&principal, room, "deletes event types", contract_owned)?;
    routes
        .pubsub()?
        .delete_type(&application, &path.event_type)
        .await
        .map_err(failed)?;
    Ok(no_content())
}

async fn publish(
    State(routes): State<PubSubRoutes>,
    Path(path): Path<TypePath>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, Refused> {
    let (principal, room) = routes.enter(&parts, &path).await?;
    let application = application_room(&principal, room, "publishes", |provider| {
        Refused::from(error(
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
        return Err(Refused::from(error(
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
        .map_err(failed)?;
    Ok(json_value(StatusCode::CREATED, &json!({"id": id})))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, Refused> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(value) => match value.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= 200 => Ok(Some(key)),
            _ => Err(Refused::from(error(
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
) -> Result<Response, Refused> {
    let (principal, room) = routes.enter(&parts, &path).await?;
    let application = application_room(&principal, room, "reads its publications", |_| {
        Refused::from(error(
            StatusCode::NOT_FOUND,
            Code::NotFound,
            "a service's events are read by subscribing",
        ))
    })?;
    let publication = routes
        .pubsub()?
        .publication(&application, &path.event_type, &path.event_id)
        .await
        .map_err(failed)?;
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
}

async fn withdraw(
    State(routes): State<PubSubRoutes>,
    Path(path): Path<EventPath>,
    parts: Parts,
) -> Result<Response, Refused> {
    let (principal, room) = routes.enter(&parts, &path).await?;
    let application = application_room(&principal, room, "withdraws its publications", |_| {
        Refused::from(error(
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
            "a service's events are never withdrawn",
        ))
    })?;
    routes
        .pubsub()?
        .withdraw(&application, &path.event_type, &path.event_id)
        .await
        .map_err(failed)?;
    Ok(no_content())
}

/// The body of `addSub` and `patchSub`: a `SubscriptionItem`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscriptionBody {
    #[serde(default)]
    event_type: Option<String>,
    #[serde(default)]
    subscriber_id: Option<SubscriberId>,
    #[serde(default)]
    delivery: Option<String>,
    #[serde(default)]
    options: Option<SubscriptionOptions>,
    /// govbus's extension: where a push subscription's events are posted.
    #[serde(default)]
    push_url: Option<String>,
    /// govbus's extension, in a `patchSub`: a new signing secret for a push subscription.
    #[serde(default)]
    rotate_secret: bool,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubscriberId {
    instance_id: Option<String>,
    member_class: Option<String>,
    member_code: Option<String>,
    application_code: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct SubscriptionOptions {
    #[serde(rename = "TTL", default)]
    ttl: Option<u64>,
    #[serde(rename = "FIFO", default)]
    _fifo: Option<bool>,
}

/// The default and the bounds of a subscription's `TTL`: how long an event handed out waits
/// for its confirmation before it is handed out again.
const DEFAULT_TTL_SECONDS: u64 = 3600;
const MAX_TTL_SECONDS: u64 = 86_400;

impl PubSubRoutes {
    /// What a subscription to `event_type` (as the room names it) in `room` is to, with the
    /// protobuf message of its data for a service's events.
    async fn topic(
        &self,
        room: &Room,
        event_type: &str,
    ) -> Result<(Topic, Option<String>), Refused> {
        let pubsub = self.pubsub()?;
        let topology = pubsub.topology();
        match room {
            Room::Service(provider) => {
                let published = self
                    .inner
                    .directory
                    .published_by(&provider.name)
                    .into_iter()
                    .any(|(name, _)| name == event_type);
                let message = self.inner.directory.event_message(event_type);
                match (published, message) {
                    (true, Some(message)) => Ok((
                        Topic {
                            room: provider.name.clone(),
                            event_type: event_type.to_owned(),
                            stream: topology.service_stream(&provider.name),
                            subject: topology.event_subject(event_type),
                        },
                        Some(message.to_owned()),
                    )),
                    _ => Err(failed(PubSubError::UnknownType(event_type.to_owned()))),
                }
            }
            Room::Application(application) => {
                pubsub
                    .type_of(application, event_type)
                    .await
                    .map_err(failed)?
                    .ok_or_else(|| failed(PubSubError::UnknownType(event_type.to_owned())))?;
                Ok((
                    Topic {
                        room: application.clone(),
                        event_type: format!("{application}.{event_type}"),
                        stream: topology.application_stream(),
                        subject: topology.application_subject(application, event_type),
                    },
                    None,
                ))
            }
        }
    }

    /// The purpose `principal`'s grant of `event_type` states, if it is granted at all.
    fn granted(
        &self,
        principal: &Principal,
        event_type: &str,
    ) -> Result<Option<Arc<str>>, Refused> {
        self.inner
            .policy
            .event_grant(principal.name(), event_type)
            .ok_or_else(|| {
                tracing::warn!(
                    message = "Subscription refused by the access policy.",
                    caller = principal.name(),
                    %event_type,
                );
                crate::signin::count_refusal("no_grant", None);
                Refused::from(error(
                    StatusCode::FORBIDDEN,
                    Code::PermissionDenied,
                    format!(
                        "{} is not granted the events {event_type}",
                        principal.name()
                    ),
                ))
            })
    }

    /// `principal`'s subscription to `event_type` in `room`, or 404.
    async fn own_subscription(
        &self,
        principal: &Principal,
        room: &Room,
        event_type: &str,
    ) -> Result<(Subscription, Option<String>), Refused> {
        let (topic, message) = self.topic(room, event_type).await?;
        let subscription = self
            .pubsub()?
            .subscription(principal.name(), &topic.event_type)
            .await
            .map_err(failed)?
            .ok_or_else(|| {
                Refused::from(error(
                    StatusCode::NOT_FOUND,
                    Code::NotFound,
                    format!(
                        "{} has no subscription to {}",
                        principal.name(),
                        topic.event_type
                    ),
                ))
            })?;
        Ok((subscription, message))
    }

    /// The caller, the room, and the caller's subscription to the path's type (or 404), with
    /// the protobuf message of a service's events.
    async fn subscribed(
        &self,
        parts: &Parts,
        path: &impl OfType,
    ) -> Result<(Principal, Subscription, Option<String>), Refused> {
        let (principal, room) = self.enter(parts, path).await?;
        let (subscription, message) = self
            .own_subscription(&principal, &room, path.event_type())
            .await?;
        Ok((principal, subscription, message))
    }

    fn item_of(&self, subscription: &Subscription) -> Json {
        let subscriber = self.inner.directory.client_id_of(&subscription.subscriber);
        let mut item = json!({
            "id": subscription.id,
            "subscriberId": {
                "instanceId": subscriber.instance,
                "memberClass": subscriber.member_class,
                "memberCode": subscriber.member_code,
                "applicationCode": subscriber.application_code,
            },
            "eventType": self.inner.items.room_type(subscription),
            "delivery": subscription.delivery,
            "options": {"TTL": subscription.ack_wait.as_secs(), "FIFO": true},
        });
        if let Some(url) = &subscription.push_url {
            item["pushUrl"] = Json::String(url.clone());
        }
        item
    }
}

fn ttl_of(body: &SubscriptionBody) -> Result<Duration, Refused> {
    let seconds = body
        .options
        .as_ref()
        .and_then(|options| options.ttl)
        .unwrap_or(DEFAULT_TTL_SECONDS);
    if (1..=MAX_TTL_SECONDS).contains(&seconds) {
        Ok(Duration::from_secs(seconds))
    } else {
        Err(Refused::from(error(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            format!("options.TTL is 1 to {MAX_TTL_SECONDS} seconds"),
        )))
    }
}

/// The delivery a subscription asks for: `PUSH` (the specification's default) needs the
/// webhook's `pushUrl`, https (or http to a loopback address).
fn delivery_of(body: &SubscriptionBody) -> Result<Delivery, Refused> {
    let invalid = |message: String| {
        Refused::from(error(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            message,
        ))
    };
    match (body.delivery.as_deref(), &body.push_url) {
        (Some("PULL"), None) => Ok(Delivery::Pull),
        (Some("PULL"), Some(_)) => Err(invalid(
            "a pull subscription has no pushUrl".to_owned(),
        )),
        (None | Some("PUSH"), Some(url)) => {
            govbus_kit::outbound::HttpTarget::check_url(url)
                .map_err(|problem| invalid(format!("pushUrl: {problem}")))?;
            Ok(Delivery::Push { url: url.clone() })
        }
        (None | Some("PUSH"), None) => Err(invalid(
            "a push subscription (the default delivery) needs pushUrl, its webhook; or ask for delivery PULL".to_owned(),
        )),
        (Some(other), _) => Err(invalid(format!("delivery {other:?} is not PUSH or PULL"))),
    }
}

async fn list_subscriptions(
    State(routes): State<PubSubRoutes>,
    Path(path): Path<RoomPath>,
    parts: Parts,
) -> Result<Response, Refused> {
    let (principal, room) = routes.enter(&parts, &path).await?;
    let room_name = match &room {
        Room::Service(provider) => provider.name.clone(),
        Room::Application(application) => application.clone(),
    };
    let subscriptions = routes
        .pubsub()?
        .subscriptions_of(principal.name(), &room_name)
        .await
        .map_err(failed)?;
    let items: Vec<Json> = subscriptions
        .iter()
        .map(|subscription| routes.item_of(subscription))
        .collect();
    Ok(json_value(StatusCode::OK, &Json::Array(items)))
}

async fn subscribe(
    State(routes): State<PubSubRoutes>,
    Path(path): Path<TypePath>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, Refused> {
    let (principal, room) = routes.enter(&parts, &path).await?;
    let body: SubscriptionBody = if body.is_empty() {
        SubscriptionBody::default()
    } else {
        body_of(&body)?
    };
    if body
        .event_type
        .as_deref()
        .is_some_and(|named| named != path.event_type)
    {
        return Err(Refused::from(error(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            "the body's eventType is not the path's",
        )));
    }
    if let Some(subscriber) = &body.subscriber_id {
        let caller = routes.inner.directory.client_id_of(principal.name());
        let named = ClientId {
            instance: subscriber.instance_id.clone().unwrap_or_default(),
            member_class: subscriber.member_class.clone().unwrap_or_default(),
            member_code: subscriber.member_code.clone().unwrap_or_default(),
            application_code: subscriber.application_code.clone(),
        };
        if named != caller {
            return Err(Refused::from(error(
                StatusCode::FORBIDDEN,
                Code::PermissionDenied,
                format!("a caller subscribes itself ({caller}), not {named}"),
            )));
        }
    }
    let delivery = delivery_of(&body)?;
    let ttl = ttl_of(&body)?;
    let (topic, _) = routes.topic(&room, &path.event_type).await?;
    routes.granted(&principal, &topic.event_type)?;
    let (subscription, secret) = routes
        .pubsub()?
        .subscribe(principal.name(), &topic, ttl, &delivery)
        .await
        .map_err(failed)?;
    tracing::info!(
        message = "Subscribed.",
        subscriber = principal.name(),
        event_type = %topic.event_type,
        delivery = %subscription.delivery,
    );
    let mut item = routes.item_of(&subscription);
    if let Some(secret) = secret {
        // Shown once: the gateway keeps it to sign, but never shows it again.
        item["secret"] = Json::String(secret);
    }
    Ok(json_value(StatusCode::OK, &item))
}

async fn subscription(
    State(routes): State<PubSubRoutes>,
    Path(path): Path<TypePath>,
    parts: Parts,
) -> Result<Response, Refused> {
    let (_, subscription, _) = routes.subscribed(&parts, &path).await?;
    Ok(json_value(StatusCode::OK, &routes.item_of(&subscription)))
}

async fn change_subscription(
    State(routes): State<PubSubRoutes>,
    Path(path): Path<TypePath>,
    parts: Parts,
    body: Bytes,
) -> Result<Response, Refused> {
    let (_, subscription, _) = routes.subscribed(&parts, &path).await?;
    let body: SubscriptionBody = body_of(&body)?;
    if body
        .delivery
        .as_deref()
        .is_some_and(|delivery| delivery != subscription.delivery)
        || body.push_url.is_some()
    {
        return Err(Refused::from(error(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            "a subscription's delivery and webhook stay as they are: subscribe anew to change them",
        )));
    }
    let pubsub = routes.pubsub()?;
    let mut changed = subscription.clone();
    if body
        .options
        .as_ref()
        .and_then(|options| options.ttl)
        .is_some()
    {
        changed = pubsub
            .change_ack_wait(&subscription, ttl_of(&body)?)
            .await
            .map_err(failed)?;
    }
    let mut item = routes.item_of(&changed);
    if body.rotate_secret {
        let secret = pubsub.rotate_secret(&subscription).await.map_err(|_| {
            Refused::from(error(
                StatusCode::BAD_REQUEST,
                Code::InvalidArgument,
                "only a push subscription has a signing secret",
            ))
        })?;
        item["secret"] = Json::String(secret);
    }
    Ok(json_value(StatusCode::CREATED, &item))
}

async fn unsubscribe(
    State(routes): State<PubSubRoutes>,
    Path(path): Path<TypePath>,
    parts: Parts,
) -> Result<Response, Refused> {
    let (_, subscription, _) = routes.subscribed(&parts, &path).await?;
    routes
        .pubsub()?
        .unsubscribe(&subscription)
        .await
        .map_err(failed)?;
    Ok(no_content())
}

async fn pull(
    State(routes): State<PubSubRoutes>,
    Path(path): Path<TypePath>,
    parts: Parts,
) -> Result<Response, Refused> {
    let (principal, subscription, _) = routes.subscribed(&parts, &path).await?;
    if subscription.delivery != "PULL" {
        return Err(Refused::from(error(
            StatusCode::CONFLICT,
            Code::FailedPrecondition,
            "a push subscription's events are posted to its webhook, not pulled",
        )));
    }
    // The grant is read again: a withdrawn grant stops the events at once.
    routes.granted(&principal, &subscription.event_type)?;
    let next = routes
        .pubsub()?
        .pull(&subscription, |subscription, id, sequence, payload| {
            let items = &routes.inner.items;
            let item = items.item(subscription, id, sequence, payload)?;
            // Handed out now (kept in hand, the same item again until confirmed).
            if item.is_some() {
                items.record_handed(subscription, payload);
            }
            Ok(item)
        })
        .await
        .map_err(failed)?;
    Ok(match next {
        Some(item) => json_value(StatusCode::OK, &item),
        None => error(StatusCode::NOT_FOUND, Code::NotFound, "no event available"),
    })
}

async fn confirm(
    State(routes): State<PubSubRoutes>,
    Path(path): Path<EventPath>,
    parts: Parts,
) -> Result<Response, Refused> {
    let (_, subscription, _) = routes.subscribed(&parts, &path).await?;
    routes
        .pubsub()?
        .confirm(&subscription, &path.event_id)
        .await
        .map_err(failed)?;
    Ok(no_content())
}
