//! Calling a service of the same process without a network hop.
//!
//! Under `govbus up` the gateway and the services share one process. A call from the gateway
//! over loopback pays for HTTP/2 framing, TLS records and socket system calls on both sides,
//! which is about half of what a REST call costs there. An [`InProcessChannel`] hands the
//! call's HTTP request to the service's own tower stack instead: the same telemetry layer
//! (the server span, the metrics), the same access layer (the policy, the application named by
//! the gateway) and the same generated server, with the caller the code named when it made the
//! channel, as the certificate would have named it. Nothing outside the process can reach it.
//! Where the gateway runs in a process of its own, it calls over the network as before.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tonic::body::Body;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt as _};

use crate::peer::Peer;

/// How long a call may take, as over the network (the stack's channels' timeout).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A channel to a service of this process, for one caller (see the module's documentation).
#[derive(Clone)]
pub struct InProcessChannel {
    peer: Peer,
    service: BoxCloneSyncService<http::Request<Body>, http::Response<Body>, Infallible>,
}

impl std::fmt::Debug for InProcessChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InProcessChannel")
            .field("caller", &self.peer.caller())
            .finish_non_exhaustive()
    }
}

impl InProcessChannel {
    pub(crate) fn new<S>(caller: &str, service: S) -> Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        Self {
            peer: Peer::in_process(Arc::from(caller)),
            service: BoxCloneSyncService::new(service),
        }
    }
}

impl Service<http::Request<Body>> for InProcessChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call takes a clone of the stack, readied when it is made.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        request.extensions_mut().insert(self.peer.clone());
        let service = self.service.clone();
        Box::pin(async move {
            match tokio::time::timeout(CALL_TIMEOUT, service.oneshot(request)).await {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(never)) => match never {},
                // A status, so that the caller sees DEADLINE_EXCEEDED (a REST 504), not UNKNOWN.
                Err(_) => Err(BoxError::from(tonic::Status::deadline_exceeded(format!(
                    "the call took longer than {} s",
                    CALL_TIMEOUT.as_secs()
                )))),
            }
        })
    }
}

/// A channel to a service: over the network, or in this process when the service runs in it.
#[derive(Debug, Clone)]
pub enum ServiceChannel {
    /// Over the network (mutual TLS where configured).
    Network(tonic::transport::Channel),
    /// In this process.
    InProcess(InProcessChannel),
}

impl From<tonic::transport::Channel> for ServiceChannel {
    fn from(channel: tonic::transport::Channel) -> Self {
        Self::Network(channel)
    }
}

impl From<InProcessChannel> for ServiceChannel {
    fn from(channel: InProcessChannel) -> Self {
        Self::InProcess(channel)
    }
}

impl Service<http::Request<Body>> for ServiceChannel {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match self {
            Self::Network(channel) => channel.poll_ready(cx).map_err(BoxError::from),
            Self::InProcess(channel) => channel.poll_ready(cx),
        }
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        match self {
            Self::Network(channel) => {
                let call = channel.call(request);
                Box::pin(async move { call.await.map_err(BoxError::from) })
            }
            Self::InProcess(channel) => channel.call(request),
        }
    }
}
