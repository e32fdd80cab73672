//! Delivering to systems outside govbus over HTTP: the national complaints channel today, any
//! outbound integration tomorrow.
//!
//! An [`HttpTarget`] posts JSON to one configured endpoint, over HTTPS with the system's
//! certificate authorities (plus any the deployment adds), with a bearer token when the target
//! wants one, an `Idempotency-Key` header so that the target can recognise a delivery it already
//! took, and a time limit per attempt. It does not retry by itself: it tells its caller whether a
//! failure is worth retrying ([`DeliveryError::retry`], honouring the target's `Retry-After`),
//! and the caller — normally a bus consumer of the events to deliver — retries with its back-off
//! and dead-letters what keeps failing, where operators see the reason and can replay it
//! ([`DeliveryError::into_handle_error`]).
//!
//! Plain `http://` is accepted only for loopback addresses (a relay on the same host, tests):
//! what is delivered is often personal data.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use govbus_bus::HandleError;
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::pem::PemObject as _;

/// The most of a target's answer that is read.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Where and how to deliver.
#[derive(Clone)]
pub struct HttpTarget {
    name: &'static str,
    uri: Uri,
    authorization: Option<HeaderValue>,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl std::fmt::Debug for HttpTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpTarget")
            .field("name", &self.name)
            .field("uri", &self.uri)
            .field("authorization", &self.authorization.as_ref().map(|_| "…"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What an [`HttpTarget`] is made from.
#[derive(Debug, Clone)]
pub struct HttpTargetSettings {
    /// A short name for logs and metrics, e.g. `sp4n-lapor`.
    pub name: &'static str,
    /// The endpoint JSON is posted to.
    pub url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub bearer_token: Option<String>,
    /// PEM certificates of authorities trusted besides the system's (a private PKI).
    pub extra_roots_pem: Option<Vec<u8>>,
    /// The longest an attempt may take, answer included.
    pub timeout: Duration,
}

/// Why an [`HttpTarget`] cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The URL does not parse or has no host.
    #[error("the URL {url:?} is not an absolute http(s) URL: {problem}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// `http://` to a host beyond loopback.
    #[error(
        "the URL {0:?} is plain http to a host beyond loopback; use https (what is delivered is personal data)"
    )]
    PlainHttp(String),
    /// The token cannot be a header value.
    #[error("the bearer token holds characters a header cannot carry")]
    Token,
    /// The certificate authorities could not be read.
    #[error("the certificate authorities: {0}")]
    Roots(String),
}

/// Whether a failed delivery is worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Later: the target is down, overloaded or slow; after this delay if it said so.
    Later(Option<Duration>),
    /// Never: the target refused the delivery itself (it would refuse it again).
    Never,
}

/// A failed delivery.
#[derive(Debug, thiserror::Error)]
#[error("delivering to {target}: {problem}")]
pub struct DeliveryError {
    target: &'static str,
    problem: String,
    retry: Retry,
}

impl DeliveryError {
    fn later(target: &'static str, problem: impl Into<String>, after: Option<Duration>) -> Self {
        Self {
            target,
            problem: problem.into(),
            retry: Retry::Later(after),
        }
    }

    /// A delivery the target answered in a way the caller cannot use (it would answer the same
    /// again), e.g. a success without the reference the caller needs.
    pub fn refused(target: &'static str, problem: impl Into<String>) -> Self {
        Self {
            target,
            problem: problem.into(),
            retry: Retry::Never,
        }
    }

    /// Whether to try again.
    pub fn retry(&self) -> Retry {
        self.retry
    }

    /// As a bus handler's failure: redelivered after the back-off (or the target's
    /// `Retry-After`), or dead-lettered at once with the reason.
    pub fn into_handle_error(self) -> HandleError {
        match self.retry {
            Retry::Later(Some(delay)) => HandleError::transient_after(self, delay),
            Retry::Later(None) => HandleError::transient(self),
            Retry::Never => HandleError::permanent(self),
        }
    }
}

/// A successful delivery's answer.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// Its status (2xx).
    pub status: StatusCode,
    /// Its body (at most 64 KiB).
    pub body: Bytes,
}

/// A request [`HttpTarget::send`] makes.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// Its method.
    pub method: Method,
    /// Appended to the target's URL path, with its query (`/apis/x?y=1`).
    pub path_and_query: String,
    /// Headers besides the target's own; an `Authorization` here replaces the target's.
    pub headers: Vec<(http::header::HeaderName, HeaderValue)>,
    /// Its body.
    pub body: Bytes,
    /// The most of the answer that is read.
    pub max_answer_bytes: usize,
}

/// What a target answered.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its `Retry-After`, read.
    pub retry_after: Option<Duration>,
    /// Its `Content-Type`.
    pub content_type: Option<HeaderValue>,
    /// Its body.
    pub body: Bytes,
}

impl HttpTarget {
    /// The endpoint `url` names, if a target may be made for it: absolute, https (plain http
    /// to loopback only). Configuration checks call this without making a target.
    pub fn check_url(url: &str) -> Result<Uri, TargetError> {
        let url_problem = |problem: &str| TargetError::Url {
            url: url.to_owned(),
            problem: problem.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|error: http::uri::InvalidUri| url_problem(&error.to_string()))?;
        let host = uri.host().ok_or_else(|| url_problem("it names no host"))?;
        match uri.scheme_str() {
            Some("https") => Ok(uri),
            Some("http") if is_loopback(host) => Ok(uri),
            Some("http") => Err(TargetError::PlainHttp(url.to_owned())),
            _ => Err(url_problem("the scheme must be https")),
        }
    }

    /// A target from its settings.
    pub fn new(settings: HttpTargetSettings) -> Result<Self, TargetError> {
        let uri = Self::check_url(&settings.url)?;
        Self::build(settings, uri)
    }

    /// A target whose answers are signed and whose requests carry no personal data (a
    /// time-stamping authority, which is often served over plain HTTP): plain `http://` is
    /// taken for any host.
    pub fn for_signed_answers(settings: HttpTargetSettings) -> Result<Self, TargetError> {
        let uri = match Self::check_url(&settings.url) {
            Err(TargetError::PlainHttp(url)) => {
                url.parse()
                    .map_err(|error: http::uri::InvalidUri| TargetError::Url {
                        url: url.clone(),
                        problem: error.to_string(),
                    })?
            }
            checked => checked?,
        };
        Self::build(settings, uri)
    }

    fn build(settings: HttpTargetSettings, uri: Uri) -> Result<Self, TargetError> {
        let authorization = settings
            .bearer_token
            .as_deref()
            .map(|token| {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                    .map_err(|_| TargetError::Token)?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        let tls = client_tls(
            settings.extra_roots_pem.as_deref(),
            uri.scheme_str() == Some("https"),
        )?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            name: settings.name,
            uri,
            authorization,
            timeout: settings.timeout,
            client,
        })
    }

    /// Its name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Posts `body` as JSON under `idempotency_key` (the same key for every attempt of one
    /// delivery), within the target's time limit.
    pub async fn post_json(
        &self,
        idempotency_key: &str,
        body: &impl serde::Serialize,
    ) -> Result<Delivered, DeliveryError> {
        let outcome = self.post(idempotency_key, body).await;
        let label = match &outcome {
            Ok(_) => "delivered",
            Err(error) if error.retry == Retry::Never => "refused",
            Err(_) => "failed",
        };
        metrics::counter!(
            "govbus_outbound_deliveries_total",
            "target" => self.name,
            "outcome" => label
        )
        .increment(1);
        outcome
    }

    /// Reads the JSON document at the target's endpoint (an identity provider's discovery
    /// document or key set, say), within the target's time limit.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, DeliveryError> {
        let name = self.name;
        let mut request = Request::builder()
            .method(Method::GET)
            .uri(self.uri.clone())
            .header(http::header::ACCEPT, "application/json");
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|error| DeliveryError::refused(name, error.to_string()))?;
        let (status, _, body) = self.exchange(request).await?;
        if !status.is_success() {
            return Err(DeliveryError::later(
                name,
                format!("it answered {status}{}", error_code(&body)),
                None,
            ));
        }
        serde_json::from_slice(&body).map_err(|error| {
            DeliveryError::later(
                name,
                format!("its answer is not the JSON expected: {error}"),
                None,
            )
        })
    }

    /// Sends `request` to a path under the target's URL, with `request.headers` besides the
    /// target's own authorization, and returns whatever the target answered, within the
    /// target's time limit: what a caller that interprets the answer itself (a proxy, an API
    /// manager's client) needs. Only a target that cannot be reached or read is an error.
    pub async fn send(&self, request: OutboundRequest) -> Result<Answer, DeliveryError> {
        let name = self.name;
        let uri = self.uri_at(&request.path_and_query)?;
        let mut builder = Request::builder().method(request.method).uri(uri);
        let mut authorized = false;
        for (header, value) in request.headers {
            authorized |= header == AUTHORIZATION;
            builder = builder.header(header, value);
        }
        if let (false, Some(authorization)) = (authorized, &self.authorization) {
            builder = builder.header(AUTHORIZATION, authorization.clone());
        }
        let outgoing = builder
            .body(Full::new(request.body))
            .map_err(|error| DeliveryError::refused(name, error.to_string()))?;
        self.exchange_up_to(outgoing, request.max_answer_bytes)
            .await
    }

    /// The target's URL with `path_and_query` appended to its path, the target's own query
    /// kept before the request's.
    fn uri_at(&self, path_and_query: &str) -> Result<Uri, DeliveryError> {
        let base = self.uri.path().trim_end_matches('/');
        let (path, query) = path_and_query
            .split_once('?')
            .map_or((path_and_query, None), |(path, query)| (path, Some(query)));
        let path = if path.starts_with('/') || path.is_empty() {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        let query = match (self.uri.query(), query) {
            (Some(own), Some(asked)) => format!("?{own}&{asked}"),
            (Some(only), None) | (None, Some(only)) => format!("?{only}"),
            (None, None) => String::new(),
        };
        let mut parts = self.uri.clone().into_parts();
        // The target's own root, `https://host/`, with nothing appended is `/`, not nothing.
        let joined = match format!("{base}{path}") {
            joined if joined.is_empty() => "/".to_owned(),
            joined => joined,
        };
        parts.path_and_query = Some(format!("{joined}{query}").parse().map_err(
            |error: http::uri::InvalidUri| {
                DeliveryError::refused(self.name, format!("not a path: {error}"))
            },
        )?);
        Uri::from_parts(parts)
            .map_err(|error| DeliveryError::refused(self.name, format!("not a URL: {error}")))
    }

    /// Sends `request` and reads the answer (at most [`MAX_ANSWER_BYTES`]), within the
    /// target's time limit: its status, its `Retry-After`, its body.
    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Option<Duration>, Bytes), DeliveryError> {
        let answer = self.exchange_up_to(request, MAX_ANSWER_BYTES).await?;
        Ok((answer.status, answer.retry_after, answer.body))
    }

    /// Sends `request` and reads at most `max_answer_bytes` of the answer, within the target's
    /// time limit.
    async fn exchange_up_to(
        &self,
        request: Request<Full<Bytes>>,
        max_answer_bytes: usize,
    ) -> Result<Answer, DeliveryError> {
        let name = self.name;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|error| {
                DeliveryError::later(name, format!("cannot reach it: {error}"), None)
            })?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|value| value.to_str().ok())
                .and_then(retry_after);
            let content_type = response.headers().get(CONTENT_TYPE).cloned();
            let body = Limited::new(response.into_body(), max_answer_bytes)
                .collect()
                .await
                .map_err(|error| {
                    DeliveryError::later(name, format!("cannot read its answer: {error}"), None)
                })?
                .to_bytes();
            Ok::<_, DeliveryError>(Answer {
                status,
                retry_after,
                content_type,
                body,
            })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                DeliveryError::later(
                    name,
                    format!("no answer within {} s", self.timeout.as_secs_f64()),
                    None,
                )
            })?
    }

    async fn post(
        &self,
        idempotency_key: &str,
        body: &impl serde::Serialize,
    ) -> Result<Delivered, DeliveryError> {
        let name = self.name;
        let json = serde_json::to_vec(body)
            .map_err(|error| DeliveryError::refused(name, format!("cannot encode: {error}")))?;
        let key = HeaderValue::from_str(idempotency_key).map_err(|_| {
            DeliveryError::refused(name, "the idempotency key cannot be a header value")
        })?;
        self.post_bytes(
            vec![(
                http::header::HeaderName::from_static("idempotency-key"),
                key,
            )],
            Bytes::from(json),
        )
        .await
    }

    /// Posts `body` (JSON) with `headers` besides the target's own, within its time limit:
    /// what a caller that signs its deliveries itself (a webhook) sends.
    pub async fn post_bytes(
        &self,
        headers: Vec<(http::header::HeaderName, HeaderValue)>,
        body: Bytes,
    ) -> Result<Delivered, DeliveryError> {
        let name = self.name;
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(CONTENT_TYPE, "application/json");
        for (header, value) in headers {
            request = request.header(header, value);
        }
        if let Some(authorization) = &self.authorization {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let request = request
            .body(Full::new(body))
            .map_err(|error| DeliveryError::refused(name, error.to_string()))?;
        let (status, retry_after, body) = self.exchange(request).await?;
        if status.is_success() {
            tracing::debug!(
                message = "Delivered.",
                target = name,
                status = status.as_u16()
            );
            return Ok(Delivered { status, body });
        }
        // The answer's text is not quoted: a target may echo what it was sent.
        let problem = format!("it answered {status}{}", error_code(&body));
        let retryable = status.is_server_error()
            || matches!(
                status,
                StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS
            )
            || status.as_u16() == 425;
        tracing::warn!(
            message = "Delivery failed.",
            target = name,
            status = status.as_u16(),
            retryable
        );
        if retryable {
            Err(DeliveryError::later(name, problem, retry_after))
        } else {
            Err(DeliveryError::refused(name, problem))
        }
    }
}

/// A JSON error answer's `code` or `error` (short identifiers, never its free text).
fn error_code(body: &[u8]) -> String {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) else {
        return String::new();
    };
    ["code", "error"]
        .iter()
        .filter_map(|key| fields.get(*key))
        .find_map(|value| match value {
            serde_json::Value::String(code)
                if code.len() <= 64
                    && code
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) =>
            {
                Some(format!(" ({code})"))
            }
            serde_json::Value::Number(code) => Some(format!(" ({code})")),
            _ => None,
        })
        .unwrap_or_default()
}

/// `Retry-After`: seconds, or an HTTP date.
fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let wait = at - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// TLS for delivering: the system's authorities and `extra_roots_pem`, ring's crypto; an
/// https target (`needs_roots`) needs at least one authority.
fn client_tls(
    extra_roots_pem: Option<&[u8]>,
    needs_roots: bool,
) -> Result<rustls::ClientConfig, TargetError> {
    let mut roots = rustls::RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    for certificate in system.certs {
        // An unreadable system certificate is skipped, as every TLS client does.
        let _ = roots.add(certificate);
    }
    if let Some(pem) = extra_roots_pem {
        let mut added = 0;
        for certificate in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
            let certificate = certificate.map_err(|error| TargetError::Roots(error.to_string()))?;
            roots
                .add(certificate)
                .map_err(|error| TargetError::Roots(error.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(TargetError::Roots(
                "the extra authorities' file holds no certificate".to_owned(),
            ));
        }
    }
    if needs_roots && roots.is_empty() {
        return Err(TargetError::Roots(
            "no certificate authority is known: the system has none and none was added".to_owned(),
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| TargetError::Roots(error.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(url: &str) -> HttpTargetSettings {
        HttpTargetSettings {
            name: "test",
            url: url.to_owned(),
            bearer_token: None,
            extra_roots_pem: None,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(HttpTarget::new(settings("http://127.0.0.1:9/x")).is_ok());
        assert!(HttpTarget::new(settings("http://[::1]:9/x")).is_ok());
        assert!(HttpTarget::new(settings("http://localhost:9/x")).is_ok());
        assert!(matches!(
            HttpTarget::new(settings("http://lapor.example/x")),
            Err(TargetError::PlainHttp(_))
        ));
        assert!(matches!(
            HttpTarget::new(settings("ftp://lapor.example/x")),
            Err(TargetError::Url { .. })
        ));
        assert!(matches!(
            HttpTarget::new(settings("/relative")),
            Err(TargetError::Url { .. })
        ));
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon"), None);
    }

    #[test]
    fn error_codes_are_quoted_only_when_they_are_identifiers() {
        assert_eq!(
            error_code(br#"{"code":"invalid_agency"}"#),
            " (invalid_agency)"
        );
        assert_eq!(
            error_code(br#"{"error":"the text says Budi lives at"}"#),
            ""
        );
        assert_eq!(error_code(b"not json"), "");
    }
}
