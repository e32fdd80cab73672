//! The operators' HTTP API of a running stack, as the commands use it.
//!
//! Plain HTTP/1.1 over hyper (already under tonic and axum): the console listens on a loopback
//! or operators' address; put a TLS-terminating proxy in front to reach it across networks.

use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use http_body_util::{BodyExt as _, BodyStream, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

/// A client of a running stack's console API.
#[derive(Debug, Clone)]
pub struct ConsoleClient {
    http: Client<HttpConnector, Full<Bytes>>,
    base: String,
}

/// An API error, with its status, for the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiFailure {
    /// The HTTP status.
    pub status: u16,
    /// The console's message.
    pub message: String,
}

impl ConsoleClient {
    /// A client of the console at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") {
            bail!("the console URL {base:?} must start with http://");
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

    /// GETs `path` and decodes the JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(http::Method::GET, path, Duration::from_secs(30))
            .await
    }

    /// GETs `path` as text (e.g. `/metrics`).
    pub async fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let response = self.send(http::Method::GET, path).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        if !(200..300).contains(&status) {
            return Err(failure(status, &body).into());
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// POSTs to `path` and decodes the JSON answer.
    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(http::Method::POST, path, Duration::from_secs(60))
            .await
    }

    /// POSTs `body` as JSON to `path` and decodes the JSON answer.
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<T> {
        let body = Bytes::from(serde_json::to_vec(body)?);
        self.call_with(http::Method::POST, path, body, Duration::from_secs(120))
            .await
    }

    /// GETs `path` and returns its body as it arrives (for server-sent events).
    pub async fn stream(
        &self,
        path: &str,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<Bytes>> + use<>> {
        let response = self.send(http::Method::GET, path).await?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            return Err(failure(status, &body).into());
        }
        Ok(
            BodyStream::new(response.into_body()).filter_map(|frame| async move {
                match frame {
                    Ok(frame) => frame.into_data().ok().map(Ok),
                    Err(error) => Some(Err(anyhow::Error::new(error))),
                }
            }),
        )
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        self.call_with(method, path, Bytes::new(), timeout).await
    }

    async fn call_with<T: DeserializeOwned>(
        &self,
        method: http::Method,
        path: &str,
        body: Bytes,
        timeout: Duration,
    ) -> anyhow::Result<T> {
        let exchange = async {
            let response = self.send_with(method, path, body).await?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .context("reading the answer")?
                .to_bytes();
            anyhow::Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, exchange)
            .await
            .with_context(|| format!("{} did not answer within {timeout:?}", self.base))??;
        if !(200..300).contains(&status) {
            return Err(failure(status, &body).into());
        }
        serde_json::from_slice(&body).context("the answer is not the expected JSON")
    }

    async fn send(
        &self,
        method: http::Method,
        path: &str,
    ) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        self.send_with(method, path, Bytes::new()).await
    }

    async fn send_with(
        &self,
        method: http::Method,
        path: &str,
        body: Bytes,
    ) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(http::header::ACCEPT, "application/json, text/event-stream");
        if !body.is_empty() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(body))
            .context("building the request")?;
        self.http.request(request).await.with_context(|| {
            format!(
                "no govbus stack answers at {}; start one with `govbus up` or pass --console-url",
                self.base
            )
        })
    }
}

fn failure(status: u16, body: &[u8]) -> ApiFailure {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| value["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    ApiFailure { status, message }
}
