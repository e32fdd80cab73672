//! The link to SPLP (Sistem Penghubung Layanan Pemerintah), the national government service
//! bus: an API manager that publishes APIs described in OpenAPI and lets its subscribers call
//! them with OAuth2 client-credentials tokens (RFC 6749 §4.4).
//!
//! Two directions, both with the instance's own SPLP client (configured id and secret):
//! - **Publishing.** Each service's OpenAPI document is put to the API manager
//!   (`PUT <publisher_url>/apis/<name>`, the document inside a JSON description naming the
//!   gateway as the endpoint), at start and every [`REPUBLISH_EVERY`], retried with a doubling
//!   back-off while the manager refuses or cannot be reached.
//! - **Calling.** Members of the bus call a service offered through SPLP at
//!   `/splp/<api>/<path>` on the gateway: authenticated like every caller (a token or a client
//!   certificate), admitted only by a grant of `splp.<api>/<HTTP method>` (or `splp.<api>/*`) in
//!   the access policy, and forwarded to `<gateway_url><api path>/<path>` with the instance's
//!   SPLP token instead of their own credentials. The answer comes back as SPLP gave it.
//!
//! Tokens are fetched when needed and kept until shortly before they expire; an answer 401
//! drops the kept token and the call is made once more with a fresh one. Bodies are never
//! logged: what crosses the link is often personal data.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use govbus_kit::access::AccessPolicy;
use govbus_kit::outbound::{
    Answer, DeliveryError, HttpTarget, HttpTargetSettings, OutboundRequest, TargetError,
};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::callers::caller_logged_as;
use crate::directory::Directory;
use crate::errors::error;
use crate::serve::MAX_BODY_BYTES;
use crate::signin::{SignIn, count_refusal};
use crate::usage::Usage;

/// The link's name in the gateway's reports.
pub const LINK: &str = "splp";

/// How often the documents are put again, so that the manager holds the current ones and the
/// link is seen to work.
pub const REPUBLISH_EVERY: Duration = Duration::from_secs(6 * 60 * 60);

/// The longest wait between two attempts to publish.
const MOST_BACKOFF: Duration = Duration::from_secs(5 * 60);

/// A token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(30);

/// Headers of a caller's request passed on to SPLP; everything else (its credentials above
/// all) stays at the gateway.
const PASSED_HEADERS: &[&str] = &[
    "content-type",
    "accept",
    "x-request-id",
    "traceparent",
    "idempotency-key",
];

/// How the gateway reaches SPLP (`gateway.splp.*`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplpSettings {
    /// The API manager's OAuth2 token endpoint.
    pub token_url: String,
    /// The instance's client id at SPLP.
    pub client_id: String,
    /// A file holding its client secret (kept out of configuration files).
    pub client_secret_file: std::path::PathBuf,
    /// Where OpenAPI documents are published (`PUT <publisher_url>/apis/<name>`); unset
    /// publishes nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher_url: Option<String>,
    /// SPLP's API gateway, where the services it offers are called; unset calls none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_url: Option<String>,
    /// The services offered through SPLP that members may call: `name=/path` pairs, comma
    /// separated (`dukcapil-nik=/dukcapil/nik/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apis: Option<String>,
    /// PEM certificates of authorities trusted for its HTTPS besides the system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

/// Why the link cannot be made from its settings.
#[derive(Debug, thiserror::Error)]
pub enum SplpSettingsError {
    /// An endpoint is not one the gateway may call.
    #[error("{key}: {source}")]
    Endpoint {
        /// The setting.
        key: &'static str,
        /// Why.
        source: TargetError,
    },
    /// A file cannot be read.
    #[error("{key}: cannot read {}: {source}", .path.display())]
    File {
        /// The setting.
        key: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The list of offered services is not `name=/path` pairs.
    #[error("apis: {0}")]
    Apis(String),
    /// The client id or secret cannot be sent.
    #[error("{0}")]
    Credentials(&'static str),
}

impl SplpSettingsError {
    /// The setting (under `gateway.splp.`) the problem is with.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Endpoint { key, .. } | Self::File { key, .. } => key,
            Self::Apis(_) => "apis",
            Self::Credentials(_) => "client_id",
        }
    }
}

/// The services offered through SPLP, by name: their path at SPLP's gateway.
pub fn parse_apis(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut apis = BTreeMap::new();
    for pair in text
        .split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
    {
        let Some((name, path)) = pair.split_once('=') else {
            return Err(format!("{pair:?} is not name=/path"));
        };
        let (name, path) = (name.trim(), path.trim().trim_end_matches('/'));
        let named = (2..=64).contains(&name.len())
            && name
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
        if !named {
            return Err(format!(
                "{name:?} is not a name (2 to 64 lowercase letters, digits or '-')"
            ));
        }
        if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
            return Err(format!("{name}: {path:?} is not a path starting with /"));
        }
        if apis.insert(name.to_owned(), path.to_owned()).is_some() {
            return Err(format!("{name} is named twice"));
        }
    }
    Ok(apis)
}

/// The link, made from its settings.
#[derive(Debug)]
pub struct Splp {
    tokens: ClientCredentials,
    publisher: Option<HttpTarget>,
    gateway: Option<HttpTarget>,
    apis: BTreeMap<String, String>,
}

/// A token of the instance's SPLP client, kept until shortly before it expires.
#[derive(Debug)]
struct ClientCredentials {
    endpoint: HttpTarget,
    authorization: HeaderValue,
    kept: Mutex<Option<(HeaderValue, Instant)>>,
}

/// The token endpoint's answer (RFC 6749 §5.1).
#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Why a call over the link failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// SPLP could not be reached or read, or did not answer in time.
    #[error(transparent)]
    Unreachable(#[from] DeliveryError),
    /// The token endpoint refused the instance's client, or answered something else.
    #[error("the SPLP token endpoint {0}")]
    Token(String),
    /// The API manager refused a document.
    #[error("the SPLP API manager answered {0}")]
    Refused(StatusCode),
}

impl Splp {
    /// The link `settings` describe.
    pub fn new(settings: &SplpSettings) -> Result<Self, SplpSettingsError> {
        let extra_roots_pem = match &settings.ca_file {
            Some(path) => Some(
                std::fs::read(path).map_err(|source| SplpSettingsError::File {
                    key: "ca_file",
                    path: path.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        let secret = std::fs::read_to_string(&settings.client_secret_file).map_err(|source| {
            SplpSettingsError::File {
                key: "client_secret_file",
                path: settings.client_secret_file.clone(),
                source,
            }
        })?;
        let target = |key: &'static str, name: &'static str, url: &str| {
            HttpTarget::new(HttpTargetSettings {
                name,
                url: url.to_owned(),
                bearer_token: None,
                extra_roots_pem: extra_roots_pem.clone(),
                timeout: Duration::from_secs(30),
            })
            .map_err(|source| SplpSettingsError::Endpoint { key, source })
        };
        // client_secret_basic (RFC 6749 §2.3.1): both parts form-encoded, then base64.
        let basic = format!(
            "{}:{}",
            form_encoded(settings.client_id.trim()),
            form_encoded(secret.trim())
        );
        let mut authorization = HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(basic)
        ))
        .map_err(|_| SplpSettingsError::Credentials("the client id cannot be sent"))?;
        authorization.set_sensitive(true);
        Ok(Self {
            tokens: ClientCredentials {
                endpoint: target("token_url", "splp-token", &settings.token_url)?,
                authorization,
                kept: Mutex::new(None),
            },
            publisher: settings
                .publisher_url
                .as_deref()
                .map(|url| target("publisher_url", "splp-publisher", url))
                .transpose()?,
            gateway: settings
                .gateway_url
                .as_deref()
                .map(|url| target("gateway_url", "splp-gateway", url))
                .transpose()?,
            apis: settings
                .apis
                .as_deref()
                .map(parse_apis)
                .transpose()
                .map_err(SplpSettingsError::Apis)?
                .unwrap_or_default(),
        })
    }

    /// Whether it publishes documents.
    pub fn publishes(&self) -> bool {
        self.publisher.is_some()
    }

    /// Puts one document to the API manager: `name` (`<instance>-<service>`), described
    /// for the manager with the gateway at `endpoint` serving it.
    pub async fn publish(
        &self,
        name: &str,
        endpoint: &str,
        document: &serde_json::Value,
    ) -> Result<(), LinkError> {
        let Some(publisher) = &self.publisher else {
            return Ok(());
        };
        let description = serde_json::json!({
            "name": name,
            "version": document["info"]["version"],
            "description": document["info"]["description"],
            "endpoint": endpoint,
            "definition": document,
        });
        let body = Bytes::from(serde_json::to_vec(&description).unwrap_or_default());
        let answer = self
            .with_token(publisher, |token| OutboundRequest {
                method: Method::PUT,
                path_and_query: format!("/apis/{name}"),
                headers: vec![
                    (AUTHORIZATION, token),
                    (CONTENT_TYPE, HeaderValue::from_static("application/json")),
                ],
                body: body.clone(),
                max_answer_bytes: 64 * 1024,
            })
            .await?;
        if answer.status.is_success() {
            Ok(())
        } else {
            Err(LinkError::Refused(answer.status))
        }
    }

    /// Sends a request made by `request` with a token, and once more with a fresh token when
    /// SPLP answers 401 (the kept one was revoked or expired early).
    async fn with_token(
        &self,
        target: &HttpTarget,
        request: impl Fn(HeaderValue) -> OutboundRequest,
    ) -> Result<Answer, LinkError> {
        let token = self.tokens.token().await?;
        let answer = target.send(request(token.clone())).await?;
        if answer.status != StatusCode::UNAUTHORIZED {
            return Ok(answer);
        }
        self.tokens.forget(&token).await;
        let token = self.tokens.token().await?;
        Ok(target.send(request(token)).await?)
    }
}

impl ClientCredentials {
    /// A token, fetched if none is kept or it is about to expire.
    async fn token(&self) -> Result<HeaderValue, LinkError> {
        let mut kept = self.kept.lock().await;
        if let Some((token, until)) = kept.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let answer = self
            .endpoint
            .send(OutboundRequest {
                method: Method::POST,
                path_and_query: String::new(),
                headers: vec![
                    (AUTHORIZATION, self.authorization.clone()),
                    (
                        CONTENT_TYPE,
                        HeaderValue::from_static("application/x-www-form-urlencoded"),
                    ),
                    (ACCEPT, HeaderValue::from_static("application/json")),
                ],
                body: Bytes::from_static(b"grant_type=client_credentials"),
                max_answer_bytes: 64 * 1024,
            })
            .await?;
        if !answer.status.is_success() {
            return Err(LinkError::Token(format!("answered {}", answer.status)));
        }
        let issued: TokenAnswer = serde_json::from_slice(&answer.body)
            .map_err(|_| LinkError::Token("answered with no token".to_owned()))?;
        if issued
            .token_type
            .as_deref()
            .is_some_and(|kind| !kind.eq_ignore_ascii_case("bearer"))
        {
            return Err(LinkError::Token(
                "issued a token that is not a bearer token".to_owned(),
            ));
        }
        let mut token = HeaderValue::from_str(&format!("Bearer {}", issued.access_token))
            .map_err(|_| LinkError::Token("issued a token a header cannot carry".to_owned()))?;
        token.set_sensitive(true);
        let lifetime = Duration::from_secs(issued.expires_in.unwrap_or(60));
        let until = Instant::now() + lifetime.saturating_sub(RENEW_BEFORE).max(lifetime / 2);
        *kept = Some((token.clone(), until));
        Ok(token)
    }

    /// Drops `token` if it is the one kept.
    async fn forget(&self, token: &HeaderValue) {
        let mut kept = self.kept.lock().await;
        if kept.as_ref().is_some_and(|(kept, _)| kept == token) {
            *kept = None;
        }
    }
}

/// `application/x-www-form-urlencoded` of `text`, as RFC 6749 asks of the client id and
/// secret in a Basic header.
fn form_encoded(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// What a publication round did, for whoever watches the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// The documents put, by name.
    pub published: Vec<String>,
    /// The first failure of the round, if any.
    pub failure: Option<String>,
}

/// Publishes `documents` (name → OpenAPI document) with the gateway at `endpoint`, at once
/// and every [`REPUBLISH_EVERY`], telling `report` each round's outcome, until `stop`.
pub fn spawn_publishing(
    splp: Arc<Splp>,
    documents: Vec<(String, serde_json::Value)>,
    endpoint: String,
    report: impl Fn(Publication) + Send + 'static,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut backoff = Duration::from_secs(1);
        loop {
            let mut published = Vec::new();
            let mut failure = None;
            for (name, document) in &documents {
                // A hanging API manager does not hold up the gateway's stop.
                let outcome = tokio::select! {
                    () = stop.cancelled() => return,
                    outcome = splp.publish(name, &endpoint, document) => outcome,
                };
                match outcome {
                    Ok(()) => published.push(name.clone()),
                    Err(error) => {
                        failure = Some(format!("{name}: {error}"));
                        break;
                    }
                }
            }
            let wait = match &failure {
                None => {
                    tracing::info!(
                        message = "OpenAPI documents published to SPLP.",
                        documents = published.len()
                    );
                    backoff = Duration::from_secs(1);
                    REPUBLISH_EVERY
                }
                Some(failure) => {
                    tracing::warn!(
                        message = "Publishing to SPLP failed; will retry.",
                        %failure,
                        retry_in_seconds = backoff.as_secs()
                    );
                    let wait = backoff;
                    backoff = (backoff * 2).min(MOST_BACKOFF);
                    wait
                }
            };
            metrics::counter!(
                "govbus_splp_publications_total",
                "outcome" => if failure.is_none() { "published" } else { "failed" }
            )
            .increment(1);
            report(Publication { published, failure });
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    })
}

/// The `/splp/<api>/<path>` route's state.
#[derive(Debug, Clone)]
pub struct SplpRoutes {
    splp: Arc<Splp>,
    sign_in: Arc<SignIn>,
    directory: Arc<Directory>,
    policy: AccessPolicy,
    usage: Option<Usage>,
}

impl SplpRoutes {
    /// The route over `splp`, for callers `sign_in` and `directory` know, as `policy` grants,
    /// its outcomes counted in `usage`.
    pub fn new(
        splp: Arc<Splp>,
        sign_in: Arc<SignIn>,
        directory: Arc<Directory>,
        policy: AccessPolicy,
        usage: Option<Usage>,
    ) -> Self {
        Self {
            splp,
            sign_in,
            directory,
            policy,
            usage,
        }
    }
}

/// The routes to SPLP's services.
pub fn router<S: Clone + Send + Sync + 'static>(routes: SplpRoutes) -> axum::Router<S> {
    axum::Router::new()
        .route("/splp/{api}/{*path}", axum::routing::any(forward))
        .with_state(routes)
}

/// The path under an offered service's prefix that `raw` (the request's path after
/// `/splp/<api>/`, as sent) names, if it stays under it: every segment non-empty, neither `.`
/// nor `..`, and none that decodes to a `/`, `\`, `?`, `#`, `%` or a control character, so that
/// no encoding reaches another of SPLP's paths or its query. The segments are passed on as sent.
pub fn confined_path(raw: &str) -> Option<&str> {
    let safe = raw.split('/').all(|segment| {
        let Ok(decoded) = percent_encoding::percent_decode_str(segment).decode_utf8() else {
            return false;
        };
        !decoded.is_empty()
            && decoded != "."
            && decoded != ".."
            && !decoded
                .chars()
                .any(|c| matches!(c, '/' | '\\' | '?' | '#' | '%') || c.is_control())
    });
    safe.then_some(raw)
}

async fn forward(
    State(routes): State<SplpRoutes>,
    axum::extract::Path((api, _)): axum::extract::Path<(String, String)>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    // The raw path, not axum's decoded capture: what was sent is what is checked and passed on.
    let raw = parts
        .uri
        .path()
        .strip_prefix("/splp/")
        .and_then(|rest| rest.split_once('/'))
        .map_or("", |(_, rest)| rest);
    // Signed in before anything else is said; a refusal is logged without the path, which
    // may carry personal data.
    let logged = format!("/splp/{api}/…");
    let (principal, _) =
        match caller_logged_as(&routes.sign_in, &routes.directory, &parts, false, &logged).await {
            Ok(caller) => caller,
            Err(refused) => return refused.into_response(),
        };
    let name = principal.name();
    let (Some(gateway), Some(prefix)) = (&routes.splp.gateway, routes.splp.apis.get(&api)) else {
        return error(
            StatusCode::NOT_FOUND,
            Code::NotFound,
            format!("SPLP offers no service {api:?} here"),
        );
    };
    let method = format!("splp.{api}/{}", parts.method);
    if routes.policy.grant(name, &method).is_none() {
        tracing::warn!(message = "SPLP call refused by the access policy.", caller = name, %method);
        count_refusal("no_grant", None);
        return error(
            StatusCode::FORBIDDEN,
            Code::PermissionDenied,
            format!("{name} has no grant of {method}"),
        );
    }
    let Some(path) = confined_path(raw) else {
        return error(
            StatusCode::BAD_REQUEST,
            Code::InvalidArgument,
            "the path must stay under the service: no empty, '.' or '..' segments, no encoded '/', '\\', '?', '#' or '%'",
        );
    };
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::InvalidArgument,
            format!("a request body is at most {} bytes", MAX_BODY_BYTES),
        );
    };
    let path_and_query = match parts.uri.query() {
        Some(query) => format!("{prefix}/{path}?{query}"),
        None => format!("{prefix}/{path}"),
    };
    let headers: Vec<(HeaderName, HeaderValue)> = PASSED_HEADERS
        .iter()
        .filter_map(|header| {
            parts
                .headers
                .get(*header)
                .map(|value| (HeaderName::from_static(header), value.clone()))
        })
        .collect();
    let outcome = routes
        .splp
        .with_token(gateway, |token| {
            let mut headers = headers.clone();
            headers.push((AUTHORIZATION, token));
            OutboundRequest {
                method: parts.method.clone(),
                path_and_query: path_and_query.clone(),
                headers,
                body: body.clone(),
                max_answer_bytes: MAX_BODY_BYTES,
            }
        })
        .await;
    match outcome {
        Ok(answer) => {
            tracing::info!(
                message = "SPLP call.",
                caller = name,
                %method,
                status = answer.status.as_u16()
            );
            metrics::counter!("govbus_splp_calls_total", "api" => api, "outcome" => "answered")
                .increment(1);
            // SPLP answered: the link works, whatever the offered service made of the call (a
            // 5xx of one agency's service says nothing of the link), unless SPLP refused the
            // instance itself (401 or 403 after a fresh token).
            let link_failed = matches!(
                answer.status,
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            );
            if let Some(usage) = &routes.usage {
                usage.link(LINK, "call", !link_failed);
            }
            let mut response = (answer.status, answer.body).into_response();
            if let Some(content_type) = answer.content_type {
                response.headers_mut().insert(CONTENT_TYPE, content_type);
            }
            response
        }
        Err(failure) => {
            tracing::warn!(message = "SPLP call failed.", caller = name, %method, %failure);
            metrics::counter!("govbus_splp_calls_total", "api" => api, "outcome" => "failed")
                .increment(1);
            if let Some(usage) = &routes.usage {
                usage.link(LINK, "call", false);
            }
            error(
                StatusCode::BAD_GATEWAY,
                Code::Unavailable,
                failure.to_string(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_path_stays_under_its_service() {
        for fine in ["verify", "citizens/3573/status", "a%20b", "x:y@z", "v1.2"] {
            assert_eq!(confined_path(fine), Some(fine), "{fine}");
        }
        for escaping in [
            "",
            "a//b",
            "..",
            "../publisher/apis/x",
            "a/../../b",
            "%2e%2e/x",
            ".%2E/x",
            "a%2Fb",
            "a%5Cb",
            "a%3Fq=1",
            "a%23frag",
            "a%252Fb",
            "a%0Ab",
            "a%FF",
            "./a",
        ] {
            assert_eq!(confined_path(escaping), None, "{escaping}");
        }
    }

    #[test]
    fn the_offered_services_are_name_and_path_pairs() {
        let apis = parse_apis("dukcapil-nik=/dukcapil/nik/v1/, bpjs=/bpjs").expect("parsed");
        assert_eq!(apis["dukcapil-nik"], "/dukcapil/nik/v1");
        assert_eq!(apis["bpjs"], "/bpjs");
        for bad in [
            "x=/a",
            "Dukcapil=/a",
            "a-b=a",
            "a-b",
            "ab=/a,ab=/b",
            "ab=/a?x",
        ] {
            assert!(parse_apis(bad).is_err(), "{bad}");
        }
    }
}
