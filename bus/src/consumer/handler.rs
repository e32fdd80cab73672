//! Type erasure: a typed `async fn(E, EventMeta)` behind one object-safe trait.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;

use bytes::Bytes;

use super::delivery::{EventMeta, HandleError};
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

    /// The same handler taking several messages at once, if it does.
    fn as_batch(&self) -> Option<&dyn ErasedBatchHandler> {
        None
    }
}

/// A handler that takes several messages of one type at once ([`crate::Consumer::on_batch`]).
pub(crate) trait ErasedBatchHandler: Send + Sync {
    /// The most messages one call takes.
    fn limit(&self) -> usize;

    /// Handles `items` together.
    fn handle_batch(&self, items: Vec<(Bytes, EventMeta)>) -> BatchFuture;
}

/// What a batch handler did with the messages it was given, by their index in the batch.
#[derive(Debug)]
pub(crate) struct BatchResult {
    /// Messages whose payload did not decode (not given to the handler).
    pub(crate) undecodable: Vec<(usize, String)>,
    /// Messages given to the handler, with their data subjects.
    pub(crate) handled: Vec<(usize, Option<String>)>,
    /// The handler's verdict on all of `handled` together.
    pub(crate) outcome: Result<(), HandleError>,
}

impl Default for BatchResult {
    fn default() -> Self {
        Self {
            undecodable: Vec::new(),
            handled: Vec::new(),
            outcome: Ok(()),
        }
    }
}

pub(crate) type BatchFuture = Pin<Box<dyn Future<Output = BatchResult> + Send>>;

/// A handler of batches of one event type.
pub(crate) struct TypedBatchHandler<E, F> {
    handler: F,
    limit: usize,
    event: PhantomData<fn(E)>,
}

impl<E, F> TypedBatchHandler<E, F> {
    pub(crate) fn new(limit: usize, handler: F) -> Self {
        Self {
            handler,
            limit: limit.max(1),
            event: PhantomData,
        }
    }
}

impl<E, F, Fut> ErasedHandler for TypedBatchHandler<E, F>
where
    E: Event,
    F: Fn(Vec<(E, EventMeta)>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandleError>> + Send + 'static,
{
    fn handle(&self, payload: Bytes, meta: EventMeta) -> HandlerFuture {
        let batch = ErasedBatchHandler::handle_batch(self, vec![(payload, meta)]);
        Box::pin(async move {
            let result = batch.await;
            if let Some((_, reason)) = result.undecodable.into_iter().next() {
                return Err(HandlerFailure::Undecodable(reason));
            }
            result.outcome.map_err(HandlerFailure::Handler)?;
            Ok(result
                .handled
                .into_iter()
                .next()
                .and_then(|(_, subject)| subject))
        })
    }

    fn as_batch(&self) -> Option<&dyn ErasedBatchHandler> {
        Some(self)
    }
}

impl<E, F, Fut> ErasedBatchHandler for TypedBatchHandler<E, F>
where
    E: Event,
    F: Fn(Vec<(E, EventMeta)>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandleError>> + Send + 'static,
{
    fn limit(&self) -> usize {
        self.limit
    }

    fn handle_batch(&self, items: Vec<(Bytes, EventMeta)>) -> BatchFuture {
        let mut result = BatchResult::default();
        let mut events = Vec::with_capacity(items.len());
        for (index, (payload, meta)) in items.into_iter().enumerate() {
            match E::decode(payload) {
                Ok(event) => {
                    result
                        .handled
                        .push((index, event.data_subject().map(String::from)));
                    events.push((event, meta));
                }
                Err(error) => result.undecodable.push((
                    index,
                    format!("payload is not a valid {}: {error}", E::full_name()),
                )),
            }
        }
        if events.is_empty() {
            return Box::pin(async move { result });
        }
        let future = (self.handler)(events);
        Box::pin(async move {
            result.outcome = future.await;
            result
        })
    }
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
