//! What the layers around a gRPC server learn about a call and leave in its request's
//! extensions for the layers and handlers after them: the method it was routed to and the
//! purpose of the grant that admitted it (the caller's certificate is in [`crate::peer`]).

use std::sync::Arc;

/// The method a request was routed to (`package.Service/Method`); put in the request's
/// extensions by the telemetry layer, or by [`crate::access::AccessLayer`] where there is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CalledMethod(pub Arc<str>);

/// The purpose the access policy's grant states for a call; put in the request's extensions
/// by [`crate::access::AccessLayer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantedPurpose(pub Arc<str>);
