//! Who calls the directory and the publish/subscribe API: authenticated by a bearer token (an
//! application) or by a client certificate from the deployment's CA (the GovStack
//! specification's `mutualTLS`), and named by the `X-GovStack-Client` header (or its alias
//! `Information-Mediator-Client`), which must name the caller that authenticated: a header
//! alone proves nothing.

use axum::response::{IntoResponse, Response};
use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{HeaderMap, StatusCode};
use tonic::Code;

use crate::directory::{ClientId, Directory, Principal, Provider};
use crate::errors::error;
use crate::serve::ClientCertificate;
use crate::signin::{Refusal, SignIn, count_refusal, refused};

/// The header that names the caller.
pub const CLIENT_HEADER: &str = "x-govstack-client";

/// The same header's older name, accepted as an alias.
pub const CLIENT_HEADER_ALIAS: &str = "information-mediator-client";

/// What a step answers when the request goes no further (boxed: a response is large, and
/// most steps go on).
#[derive(Debug)]
pub(crate) struct Refused(Box<Response>);

impl From<Response> for Refused {
    fn from(response: Response) -> Self {
        Self(Box::new(response))
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// The caller, authenticated, and its identifier (checked against the header's when it sends
/// one, or when `header_required`).
pub(crate) async fn caller(
    sign_in: &SignIn,
    directory: &Directory,
    parts: &Parts,
    header_required: bool,
) -> Result<(Principal, ClientId), Refused> {
    caller_logged_as(sign_in, directory, parts, header_required, parts.uri.path()).await
}

/// [`caller`], a refusal logged under `logged_path` rather than the request's path (which, on
/// routes to systems outside govbus, may carry personal data).
pub(crate) async fn caller_logged_as(
    sign_in: &SignIn,
    directory: &Directory,
    parts: &Parts,
    header_required: bool,
    logged_path: &str,
) -> Result<(Principal, ClientId), Refused> {
    let principal = if parts.headers.contains_key(AUTHORIZATION) {
        match sign_in.authenticate(&parts.headers).await {
            Ok(client) => Principal::Application(client.name.to_string()),
            Err(refusal) => return Err(Refused::from(refused(refusal, logged_path))),
        }
    } else {
        match parts.extensions.get::<ClientCertificate>() {
            Some(ClientCertificate(Some(name))) => Principal::Certificate(name.to_string()),
            _ => return Err(Refused::from(refused(Refusal::NoToken, logged_path))),
        }
    };
    let id = directory.client_id_of(principal.name());
    match claimed(&parts.headers)? {
        Some(claimed) if claimed != id => {
            tracing::warn!(
                message = "Directory request refused: the client header names another caller.",
                caller = principal.name(),
                claimed = %claimed,
            );
            count_refusal("client_mismatch", None);
            Err(Refused::from(error(
                StatusCode::FORBIDDEN,
                Code::PermissionDenied,
                format!(
                    "the X-GovStack-Client header names {claimed}, but the caller authenticated as {id}"
                ),
            )))
        }
        None if header_required => Err(Refused::from(error(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            format!("the X-GovStack-Client header is required: the caller's identifier, here {id}"),
        ))),
        _ => Ok((principal, id)),
    }
}

/// The identifier the request's headers name, if they name one.
fn claimed(headers: &HeaderMap) -> Result<Option<ClientId>, Refused> {
    let mut named = None;
    for header in [CLIENT_HEADER, CLIENT_HEADER_ALIAS] {
        for value in headers.get_all(header) {
            let text = value.to_str().map_err(|_| {
                Refused::from(error(
                    StatusCode::BAD_REQUEST,
                    Code::InvalidArgument,
                    format!("the {header} header is not text"),
                ))
            })?;
            let id = ClientId::parse(text).map_err(|problem| {
                Refused::from(error(
                    StatusCode::BAD_REQUEST,
                    Code::InvalidArgument,
                    format!("the {header} header: {problem}"),
                ))
            })?;
            match &named {
                Some(earlier) if *earlier != id => {
                    return Err(Refused::from(error(
                        StatusCode::BAD_REQUEST,
                        Code::InvalidArgument,
                        "the client headers name two different callers",
                    )));
                }
                _ => named = Some(id),
            }
        }
    }
    Ok(named)
}

/// Who is at a path `/r1/{instance}/{class}/{member}/{application}/…`.
#[derive(Debug, Clone)]
pub(crate) enum Party {
    /// A service on the bus.
    Service(Provider),
    /// A registered application, not revoked (`<agency>.<application>`).
    Application(String),
}

/// The party `[instance, class, member, application]` names, or 404.
pub(crate) fn party_at(
    directory: &Directory,
    sign_in: &SignIn,
    [instance, class, member, application]: [&str; 4],
) -> Result<Party, Refused> {
    directory
        .check_instance(instance)
        .map_err(|problem| error(StatusCode::NOT_FOUND, Code::NotFound, problem))?;
    let id = ClientId {
        instance: instance.to_owned(),
        member_class: class.to_owned(),
        member_code: member.to_owned(),
        application_code: Some(application.to_owned()),
    };
    if let Some(provider) = directory.provider_at(&id) {
        return Ok(Party::Service(provider.clone()));
    }
    let name = format!("{member}.{application}");
    if class == directory.instance().member_class
        && govbus_kit::access::is_application_name(&name)
        && sign_in.is_active(&name)
    {
        return Ok(Party::Application(name));
    }
    Err(error(
        StatusCode::NOT_FOUND,
        Code::NotFound,
        format!("{id} is not on the bus; listClients lists who is"),
    )
    .into())
}
