//! Who calls the directory and the publish/subscribe API: authenticated by a bearer token (an
//! application) or by a client certificate from the deployment's CA (the GovStack
//! specification's `mutualTLS`), and named by the `X-GovStack-Client` header (or its alias
//! `Information-Mediator-Client`), which must name the caller that authenticated: a header
//! alone proves nothing.

use axum::response::Response;
use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{HeaderMap, StatusCode};
use tonic::Code;

use crate::directory::{ClientId, Directory, Principal};
use crate::errors::error;
use crate::serve::ClientCertificate;
use crate::signin::{Refusal, SignIn, count_refusal, refused};

/// The header that names the caller.
pub const CLIENT_HEADER: &str = "x-govstack-client";

/// The same header's older name, accepted as an alias.
pub const CLIENT_HEADER_ALIAS: &str = "information-mediator-client";

/// What a step answers when the request goes no further (boxed: a response is large).
pub(crate) type Refused = Box<Response>;

/// The caller, authenticated, and its identifier (checked against the header's when it sends
/// one, or when `header_required`).
pub(crate) async fn caller(
    sign_in: &SignIn,
    directory: &Directory,
    parts: &Parts,
    header_required: bool,
) -> Result<(Principal, ClientId), Refused> {
    let principal = if parts.headers.contains_key(AUTHORIZATION) {
        match sign_in.authenticate(&parts.headers).await {
            Ok(client) => Principal::Application(client.name.to_string()),
            Err(refusal) => return Err(Box::new(refused(refusal, parts.uri.path()))),
        }
    } else {
        match parts.extensions.get::<ClientCertificate>() {
            Some(ClientCertificate(Some(name))) => Principal::Certificate(name.to_string()),
            _ => return Err(Box::new(refused(Refusal::NoToken, parts.uri.path()))),
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
            Err(Box::new(error(
                StatusCode::FORBIDDEN,
                Code::PermissionDenied,
                format!(
                    "the X-GovStack-Client header names {claimed}, but the caller authenticated as {id}"
                ),
            )))
        }
        None if header_required => Err(Box::new(error(
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
                Box::new(error(
                    StatusCode::BAD_REQUEST,
                    Code::InvalidArgument,
                    format!("the {header} header is not text"),
                ))
            })?;
            let id = ClientId::parse(text).map_err(|problem| {
                Box::new(error(
                    StatusCode::BAD_REQUEST,
                    Code::InvalidArgument,
                    format!("the {header} header: {problem}"),
                ))
            })?;
            match &named {
                Some(earlier) if *earlier != id => {
                    return Err(Box::new(error(
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
