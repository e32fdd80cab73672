//! Type erasure: a typed `async fn(E, EventMeta)` behind one object-safe trait.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use bytes::Bytes;

use super::{EventMeta, HandleError};
use crate::event::Event;

/// Resolves to the event's data subject (see [`Event::data_subject`]) once it was handled.
pub(crate) type HandlerFuture =
    Pin<Box<dyn Future<Output = Result<Option<String>, HandlerFailure>> + Send>>;

/// Why handling failed: the payload did not decode, or the handler said so.
#[derive(Debug)]
pub(crate) enum HandlerFailure {
    Undecodable(String),
    Handler(HandleError),
}

pub(crate) trait ErasedHandler: Send + Sync {
    fn handle(&self, payload: Bytes, meta: EventMeta) -> HandlerFuture;
}

pub(crate) struct TypedHandler<E, F> {
    handler: F,
    // fn(E) keeps the handler Send + Sync whatever E is.
    event: PhantomData<fn(E)>,
}

impl<E, F> TypedHandler<E, F> {
    pub(crate) fn new(handler: F) -> Self {
        Self {
            handler,
            event: PhantomData,
        }
    }
}

impl<E, F, Fut> ErasedHandler for TypedHandler<E, F>
where
    E: Event,
    F: Fn(E, EventMeta) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandleError>> + Send + 'static,
{
    fn handle(&self, payload: Bytes, meta: EventMeta) -> HandlerFuture {
        match E::decode(payload) {
            Ok(event) => {
                let data_subject = event.data_subject().map(String::from);
                let future = (self.handler)(event, meta);
                Box::pin(async move {
                    future.await.map_err(HandlerFailure::Handler)?;
                    Ok(data_subject)
                })
            }
            Err(error) => {
                let reason = format!("payload is not a valid {}: {error}", E::full_name());
                Box::pin(async move { Err(HandlerFailure::Undecodable(reason)) })
            }
        }
    }
}

/// A handler of raw payloads (every event of a service).
pub(crate) struct RawHandler<F> {
    handler: F,
}

impl<F> RawHandler<F> {
    pub(crate) fn new(handler: F) -> Self {
        Self { handler }
    }
}

impl<F, Fut> ErasedHandler for RawHandler<F>
where
    F: Fn(Bytes, EventMeta) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandleError>> + Send + 'static,
{
    fn handle(&self, payload: Bytes, meta: EventMeta) -> HandlerFuture {
        let future = (self.handler)(payload, meta);
        Box::pin(async move {
            future.await.map_err(HandlerFailure::Handler)?;
            // A raw handler does not decode the event, so it names no data subject.
            Ok(None)
        })
    }
}
