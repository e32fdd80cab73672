//! The console's HTTP API of a running stack, as the commands use it.
//!
//! Plain HTTP/1.1 over hyper (already under tonic and axum): the console listens on a loopback
//! or operators' address; put a TLS-terminating proxy in front to reach it across networks.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use http_body_util::{BodyExt as _, BodyStream, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{
    DeadLetterList, DeadLetterView, ErrorBody, EventFilter, EventView, Overview, Page,
    RecordedSpan, Replayed, StreamView, SubjectHistory, SubjectRequest, TraceQuery, TraceSummary,
    Verified, VerifyRequest, paths,
};

/// Why a call to the console failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The console's URL is not one this client speaks.
    #[error("the console URL {0:?} must start with http://")]
    Url(String),
    /// Nothing answers at the URL.
    #[error("no govbus stack answers at {base}; start one with `govbus up` or pass --console-url")]
    Unreachable {
        /// The console's URL.
        base: String,
        /// Why.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The console took too long.
    #[error("{base} did not answer within {timeout:?}")]
    Timeout {
        /// The console's URL.
        base: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// The answer broke off.
    #[error("reading the answer: {0}")]
    Read(#[source] hyper::Error),
    /// The console refused, with its reason.
    #[error("{message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The console's reason.
        message: String,
    },
    /// The answer is not the document this client expects (another govbus version?).
    #[error("the answer is not the expected JSON: {0}")]
    Decode(#[source] serde_json::Error),
    /// The request could not be encoded.
    #[error("encoding the request: {0}")]
    Encode(String),
}

impl ClientError {
    /// The HTTP status the console refused with, if it did.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

type ClientResult<T> = Result<T, ClientError>;

/// A client of a running stack's console API.
#[derive(Debug, Clone)]
pub struct ConsoleClient {
    http: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl ConsoleClient {
    /// A client of the console at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> ClientResult<Self> {
        let base = base.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            return Err(ClientError::Url(base));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(3)));
        connector.set_nodelay(true);
        Ok(Self {
            http: Client::builder(TokioExecutor::new()).build(connector),
            base,
        })
    }

    /// The console's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The stack at a glance.
    pub async fn overview(&self) -> ClientResult<Overview> {
        self.get(paths::OVERVIEW).await
    }

    /// Streams and their consumers.
    pub async fn streams(&self) -> ClientResult<Vec<StreamView>> {
        self.get(paths::STREAMS).await
    }

    /// Recent events, newest first.
    pub async fn events(&self, filter: &EventFilter) -> ClientResult<Vec<EventView>> {
        self.get(&with_query(paths::EVENTS, filter)?).await
    }

    /// New events as they are published, until the stack stops.
    pub async fn live_events(
        &self,
        filter: &EventFilter,
    ) -> ClientResult<impl Stream<Item = ClientResult<EventView>> + use<>> {
        let body = self
            .stream(&with_query(paths::LIVE_EVENTS, filter)?)
            .await?;
        Ok(server_sent_data(body).map(|data| {
            data.and_then(|data| serde_json::from_str(&data).map_err(ClientError::Decode))
        }))
    }

    /// A page of dead letters, with the count of all.
    pub async fn dead_letters(&self, page: &Page) -> ClientResult<DeadLetterList> {
        self.get(&with_query(paths::DEAD_LETTERS, page)?).await
    }

    /// One dead letter.
    pub async fn dead_letter(&self, sequence: u64) -> ClientResult<DeadLetterView> {
        self.get(&paths::with(paths::DEAD_LETTER, &sequence.to_string()))
            .await
    }

    /// Hands one dead letter back to its consumer.
    pub async fn replay(&self, sequence: u64) -> ClientResult<Replayed> {
        self.post(&paths::with(paths::REPLAY, &sequence.to_string()))
            .await
    }

    /// Hands every dead letter back to its consumer.
    pub async fn replay_all(&self) -> ClientResult<Replayed> {
        self.post(paths::REPLAY_ALL).await
    }

    /// Recent traces.
    pub async fn traces(&self, query: &TraceQuery) -> ClientResult<Vec<TraceSummary>> {
        self.get(&with_query(paths::TRACES, query)?).await
    }

    /// One trace's spans.
    pub async fn trace(&self, trace_id: &str) -> ClientResult<Vec<RecordedSpan>> {
        let id =
            percent_encoding::utf8_percent_encode(trace_id, percent_encoding::NON_ALPHANUMERIC)
                .to_string();
        self.get(&paths::with(paths::TRACE, &id)).await
    }

    /// Verifies the processing log.
    pub async fn verify_log(&self, request: &VerifyRequest) -> ClientResult<Verified> {
        self.post_json(paths::AUDIT_VERIFY, request).await
    }

    /// One person's processing history.
    pub async fn subject_history(&self, request: &SubjectRequest) -> ClientResult<SubjectHistory> {
        self.post_json(paths::AUDIT_SUBJECT, request).await
    }

    /// GETs `path` and decodes the JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> ClientResult<T> {
        self.call(
            http::Method::GET,
            path,
            Bytes::new(),
            Duration::from_secs(30),
        )
        .await
    }

    /// GETs `path` as text (e.g. `/metrics`).
    pub async fn get_text(&self, path: &str) -> ClientResult<String> {
        let response = self.send(http::Method::GET, path, Bytes::new()).await?;
        let status = response.status().as_u16();
        let body = read_body(response).await?;
        if !(200..300).contains(&status) {
            return Err(refusal(status, &body));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// POSTs to `path` and decodes the JSON answer.
    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> ClientResult<T> {
        self.call(
            http::Method::POST,
            path,
            Bytes::new(),
            Duration::from_secs(60),
        )
        .await
    }

    /// POSTs `body` as JSON to `path` and decodes the JSON answer.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> ClientResult<T> {
        let body =
            serde_json::to_vec(body).map_err(|error| ClientError::Encode(error.to_string()))?;
        self.call(
            http::Method::POST,
            path,
            Bytes::from(body),
            Duration::from_secs(120),
        )
        .await
    }

    /// GETs `path` and returns its body as it arrives (for server-sent events).
    async fn stream(
        &self,
        path: &str,
    ) -> ClientResult<impl Stream<Item = ClientResult<Bytes>> + Unpin + use<>> {
        let response = self.send(http::Method::GET, path, Bytes::new()).await?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body = read_body(response).await?;
            return Err(refusal(status, &body));
        }
        Ok(BodyStream::new(response.into_body()).filter_map(|frame| {
            futures_util::future::ready(match frame {
                Ok(frame) => frame.into_data().ok().map(Ok),
                Err(error) => Some(Err(ClientError::Read(error))),
            })
        }))
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> ClientResult<T> {
        let exchange = async {
            let response = self.send(method, path, body).await?;
            let status = response.status().as_u16();
            Ok::<_, ClientError>((status, read_body(response).await?))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                base: self.base.clone(),
                timeout,
            })??;
        if !(200..300).contains(&status) {
            return Err(refusal(status, &body));
        }
        serde_json::from_slice(&body).map_err(ClientError::Decode)
    }

    async fn send(
        &self,
        method: http::Method,
        path: &str,
        body: Bytes,
    ) -> ClientResult<http::Response<hyper::body::Incoming>> {
        let mut request = http::Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base))
            .header(http::header::ACCEPT, "application/json, text/event-stream");
        if !body.is_empty() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        if method != http::Method::GET {
            request = request.header(crate::api::CSRF_HEADER, "1");
        }
        let request = request
            .body(Full::new(body))
            .map_err(|error| ClientError::Encode(error.to_string()))?;
        self.http
            .request(request)
            .await
            .map_err(|source| ClientError::Unreachable {
                base: self.base.clone(),
                source,
            })
    }
}

/// `path?query`, or `path` alone when the query asks for nothing.
fn with_query(path: &str, query: &impl Serialize) -> ClientResult<String> {
    let query = serde_urlencoded::to_string(query)
        .map_err(|error| ClientError::Encode(error.to_string()))?;
    Ok(if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    })
}

async fn read_body(response: http::Response<hyper::body::Incoming>) -> ClientResult<Bytes> {
    Ok(response
        .into_body()
        .collect()
        .await
        .map_err(ClientError::Read)?
        .to_bytes())
}

fn refusal(status: u16, body: &[u8]) -> ClientError {
    let message = serde_json::from_slice::<ErrorBody>(body)
        .map(|body| body.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned());
    ClientError::Refused { status, message }
}

/// The `data` of each server-sent event in `body`, as the events complete (a frame may arrive
/// in pieces, split anywhere, even inside a character).
fn server_sent_data(
    body: impl Stream<Item = ClientResult<Bytes>> + Unpin,
) -> impl Stream<Item = ClientResult<String>> {
    futures_util::stream::unfold(
        (body, Vec::<u8>::new(), VecDeque::<String>::new()),
        |(mut body, mut buffer, mut ready)| async move {
            loop {
                if let Some(data) = ready.pop_front() {
                    return Some((Ok(data), (body, buffer, ready)));
                }
                match body.next().await? {
                    Err(error) => return Some((Err(error), (body, buffer, ready))),
                    Ok(chunk) => {
                        buffer.extend_from_slice(&chunk);
                        while let Some(end) = buffer.windows(2).position(|pair| pair == b"\n\n") {
                            let frame: Vec<u8> = buffer.drain(..end + 2).collect();
                            let frame = String::from_utf8_lossy(&frame);
                            let data: Vec<&str> = frame
                                .lines()
                                .filter_map(|line| line.strip_prefix("data:"))
                                .map(|data| data.strip_prefix(' ').unwrap_or(data))
                                .collect();
                            if !data.is_empty() {
                                ready.push_back(data.join("\n"));
                            }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_sent_events_survive_any_split() {
        let text = "event: event\ndata: {\"a\":\"é\"}\n\n: keep-alive\n\nevent: event\ndata: 2\n\n";
        let bytes = text.as_bytes();
        for cut in 1..bytes.len() {
            let chunks = vec![
                Ok(Bytes::copy_from_slice(&bytes[..cut])),
                Ok(Bytes::copy_from_slice(&bytes[cut..])),
            ];
            let data: Vec<String> = server_sent_data(futures_util::stream::iter(chunks))
                .map(|data| data.expect("data"))
                .collect()
                .await;
            assert_eq!(data, ["{\"a\":\"é\"}", "2"], "cut at {cut}");
        }
    }
}
