//! What the layers around a gRPC server learn about a call and leave in its request's
//! extensions for the layers and handlers after them: the method it was routed to and the
//! purpose of the grant that admitted it, and whom the call is for ([`Caller`]; the certificate
//! itself is in [`crate::peer`]).

use std::sync::Arc;

/// The method a request was routed to (`package.Service/Method`); put in the request's
/// extensions by the telemetry layer, or by [`crate::access::AccessLayer`] where there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalledMethod(pub Arc<str>);

/// The purpose the access policy's grant states for a call; put in the request's extensions
/// by [`crate::access::AccessLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantedPurpose(pub Arc<str>);

/// Whom a call is for, as [`crate::access::AccessLayer`] established it: the service its
/// client certificate names, or the application the gateway called for (named in
/// [`crate::access::APPLICATION_METADATA`], believed only from the gateway's certificate),
/// with the gateway as the intermediary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller the access policy judged.
    pub name: Arc<str>,
    /// The intermediary it came through, if any.
    pub via: Option<Arc<str>>,
}

impl Caller {
    /// The caller of `request`, if it came over mutual TLS.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&Self> {
        request.extensions().get::<Self>()
    }
}
