//! Applications signing in: the token endpoint (OAuth2 client credentials, RFC 6749 §4.4) and
//! the check of every request's bearer token (RFC 6750), the gateway's own or the deployment's
//! identity provider's, against the registry of applications and their rate limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use base64::Engine as _;
use http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA, RETRY_AFTER, WWW_AUTHENTICATE,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest as _, Sha256};

use crate::applications::{Applications, Client, ClientTable};
use crate::providers::IdentityProvider;
use crate::rate::RateLimiter;
use crate::tokens::{TokenIssuer, claimed, unix_now};

/// The realm named in `WWW-Authenticate`.
const REALM: &str = "govbus";

/// How applications sign in and how fast they may call.
#[derive(Debug)]
pub struct SignIn {
    applications: Applications,
    clients: ClientTable,
    issuer: TokenIssuer,
    providers: Vec<IdentityProvider>,
    limiter: RateLimiter,
    verified: VerifiedTokens,
}

/// The most tokens kept as verified; past it, the expired go, then all.
const MAX_VERIFIED_TOKENS: usize = 10_000;

/// Tokens whose signature, issuer and audience were checked, by their SHA-256: the application
/// each names, and until when it holds (its expiry plus its issuer's leeway).
#[derive(Debug, Default)]
struct VerifiedTokens(Mutex<HashMap<[u8; 32], (String, u64)>>);

impl VerifiedTokens {
    fn get(&self, digest: &[u8; 32], now: u64) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(digest)
            .filter(|(_, until)| *until >= now)
            .map(|(application, _)| application.clone())
    }

    fn insert(&self, digest: [u8; 32], application: String, until: u64, now: u64) {
        let mut verified = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if verified.len() >= MAX_VERIFIED_TOKENS {
            verified.retain(|_, (_, held)| *held >= now);
            if verified.len() >= MAX_VERIFIED_TOKENS {
                verified.clear();
            }
        }
        verified.insert(digest, (application, until));
    }
}

/// Why a request is not let through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No bearer token at all.
    NoToken,
    /// A token that is not valid (expired, forged, for another audience, from an issuer not
    /// trusted, malformed).
    InvalidToken(String),
    /// A valid token of an application that is not registered or is revoked.
    NotRegistered(String),
    /// Over its rate limit; try again after the wait.
    RateLimited {
        /// The application.
        application: Arc<str>,
        /// How long until its next request is let through.
        wait: Duration,
    },
}

impl Refusal {
    /// The label it is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoToken => "no_token",
            Self::InvalidToken(_) => "invalid_token",
            Self::NotRegistered(_) => "not_registered",
            Self::RateLimited { .. } => "rate_limited",
        }
    }

    /// The answer: 401 with a `WWW-Authenticate` challenge, or 429 with `Retry-After`.
    pub fn into_response(self) -> Response {
        let (status, code, message, challenge, retry) = match &self {
            Self::NoToken => (
                StatusCode::UNAUTHORIZED,
                tonic::Code::Unauthenticated,
                "sign in: send `Authorization: Bearer <token>` with a token from POST /oauth2/token or from the identity provider".to_owned(),
                format!("Bearer realm=\"{REALM}\""),
                None,
            ),
            Self::InvalidToken(problem) => (
                StatusCode::UNAUTHORIZED,
                tonic::Code::Unauthenticated,
                format!("the token is not valid: {problem}"),
                format!(
                    "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
                    quoted(problem)
                ),
                None,
            ),
            Self::NotRegistered(application) => (
                StatusCode::UNAUTHORIZED,
                tonic::Code::Unauthenticated,
                format!("{application} is not a registered application, or it was revoked"),
                format!(
                    "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"not registered or revoked\""
                ),
                None,
            ),
            Self::RateLimited { application, wait } => (
                StatusCode::TOO_MANY_REQUESTS,
                tonic::Code::ResourceExhausted,
                format!("{application} is over its rate limit; retry after the Retry-After seconds"),
                String::new(),
                Some(wait.as_secs_f64().ceil().max(1.0)),
            ),
        };
        let mut response = crate::errors::error(status, code, message);
        if !challenge.is_empty()
            && let Ok(value) = HeaderValue::from_str(&challenge)
        {
            response.headers_mut().insert(WWW_AUTHENTICATE, value);
        }
        if let Some(seconds) = retry
            && let Ok(value) = HeaderValue::from_str(&format!("{seconds}"))
        {
            response.headers_mut().insert(RETRY_AFTER, value);
        }
        response
    }
}

/// `text` fit to stand between the quotes of a challenge's parameter.
fn quoted(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii() && !c.is_ascii_control() && *c != '"' && *c != '\\')
        .collect()
}

/// A token request's form (RFC 6749 §4.4.2, with §2.3.1's client credentials in the body).
#[derive(Debug, serde::Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    // Accepted and ignored: what an application may call is the access policy's, not a scope's.
    #[serde(default, rename = "scope")]
    _scope: Option<String>,
}

impl SignIn {
    /// Signs applications of `applications` in with tokens of `issuer` or of `providers`, and
    /// limits them with `limiter`.
    pub fn new(
        applications: Applications,
        clients: ClientTable,
        issuer: TokenIssuer,
        providers: Vec<IdentityProvider>,
        limiter: RateLimiter,
    ) -> Self {
        Self {
            applications,
            clients,
            issuer,
            providers,
            limiter,
            verified: VerifiedTokens::default(),
        }
    }

    /// Whether `name` is a registered application, not revoked (as the registry was last read).
    pub fn is_active(&self, name: &str) -> bool {
        self.clients.active(name).is_some()
    }

    /// The registry of applications.
    pub fn applications(&self) -> &Applications {
        &self.applications
    }

    /// The gateway's token issuer.
    pub fn issuer(&self) -> &TokenIssuer {
        &self.issuer
    }

    /// The registered application a request's bearer token names, within its rate limit.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Client>, Refusal> {
        let token = bearer_token(headers)?;
        // An application sends one token for minutes: its signature is checked once, and the
        // registry (revocation) and the rate limit on every request.
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = unix_now();
        let application = match self.verified.get(&digest, now) {
            Some(application) => application,
            None => {
                let claims = claimed(token).unwrap_or_default();
                let (application, leeway) = self.verify(token, claims.iss).await?;
                if let Some(expires) = claims.exp {
                    self.verified
                        .insert(digest, application.clone(), expires + leeway, now);
                }
                application
            }
        };
        let client = self
            .clients
            .active(&application)
            .ok_or(Refusal::NotRegistered(application))?;
        self.limiter
            .take(&client.name, client.rate)
            .map_err(|wait| Refusal::RateLimited {
                application: Arc::clone(&client.name),
                wait,
            })?;
        Ok(client)
    }

    /// The application `token` (which claims to be `issuer`'s) names, if it is valid now, and
    /// the leeway its expiry has.
    async fn verify(&self, token: &str, issuer: Option<String>) -> Result<(String, u64), Refusal> {
        match issuer {
            Some(issuer) if issuer == self.issuer.issuer() => self
                .issuer
                .verify(token)
                .map(|application| (application, 0))
                .map_err(|error| Refusal::InvalidToken(error.to_string())),
            Some(issuer) => {
                let provider = self
                    .providers
                    .iter()
                    .find(|provider| provider.issuer() == issuer)
                    .ok_or_else(|| {
                        Refusal::InvalidToken(format!(
                            "the issuer {} is not trusted",
                            quoted(&issuer)
                        ))
                    })?;
                provider
                    .verify(token)
                    .await
                    .map(|application| (application, provider.leeway_seconds()))
                    .map_err(|error| Refusal::InvalidToken(error.to_string()))
            }
            None => Err(Refusal::InvalidToken("not a JWT with an issuer".to_owned())),
        }
    }

    /// The token endpoint: `POST /oauth2/token`, `grant_type=client_credentials`, the client
    /// authenticated by HTTP Basic or by `client_id` and `client_secret` in the form.
    pub async fn token(&self, headers: &HeaderMap, body: &[u8]) -> Response {
        let media = headers
            .get(CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .map(str::trim)
            .unwrap_or_default();
        if !media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the body must be a form (Content-Type: application/x-www-form-urlencoded)",
            );
        }
        let form: TokenForm = match serde_urlencoded::from_bytes(body) {
            Ok(form) => form,
            Err(error) => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    &error.to_string(),
                );
            }
        };
        match form.grant_type.as_deref() {
            Some("client_credentials") => {}
            Some(_) => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    "only client_credentials is granted here",
                );
            }
            None => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "grant_type is missing",
                );
            }
        }
        let basic = match basic_credentials(headers) {
            Ok(basic) => basic,
            Err(problem) => return invalid_client(problem, true),
        };
        let in_form = form.client_id.zip(form.client_secret);
        let (client_id, secret, by_basic) = match (basic, in_form) {
            (Some(_), Some(_)) => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "authenticate the client one way: HTTP Basic or the form, not both",
                );
            }
            (Some((id, secret)), None) => (id, secret, true),
            (None, Some((id, secret))) => (id, secret, false),
            (None, None) => return invalid_client("no client credentials", true),
        };
        let client = match self.applications.check_secret(&client_id, &secret).await {
            Ok(Some(client)) => client,
            Ok(None) => {
                let named = if govbus_kit::access::is_application_name(&client_id) {
                    client_id.as_str()
                } else {
                    "(not an application name)"
                };
                tracing::warn!(
                    message = "Token refused: client authentication failed.",
                    client = named
                );
                count_refusal("invalid_client", None);
                return invalid_client("client authentication failed", by_basic);
            }
            Err(error) => {
                tracing::error!(message = "Cannot read the application registry.", %error);
                return oauth_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the registry of applications cannot be read",
                );
            }
        };
        if let Err(wait) = self.limiter.take(&client.name, client.rate) {
            count_refusal("rate_limited", Some(&client.name));
            return Refusal::RateLimited {
                application: Arc::clone(&client.name),
                wait,
            }
            .into_response();
        }
        match self.issuer.issue(&client.name) {
            Ok(issued) => {
                tracing::info!(message = "Token issued.", client = &*client.name);
                let body = serde_json::json!({
                    "access_token": issued.access_token,
                    "token_type": "Bearer",
                    "expires_in": issued.expires_in,
                });
                no_store(StatusCode::OK, body)
            }
            Err(error) => {
                tracing::error!(message = "Cannot sign a token.", %error);
                oauth_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "the token could not be signed",
                )
            }
        }
    }
}

/// Logs and counts `refusal` of a request for `path`, and answers it.
pub(crate) fn refused(refusal: Refusal, path: &str) -> Response {
    let application = match &refusal {
        Refusal::RateLimited { application, .. } => Some(application),
        _ => None,
    };
    tracing::warn!(
        message = "Request refused: not signed in, or over its rate limit.",
        reason = refusal.reason(),
        application = application.map(|name| &**name),
        %path,
    );
    count_refusal(refusal.reason(), application);
    refusal.into_response()
}

/// Counts a refused request under `reason`, with the application when it is known (never a
/// name a caller merely claimed).
pub(crate) fn count_refusal(reason: &'static str, application: Option<&Arc<str>>) {
    let application = application.map_or_else(String::new, ToString::to_string);
    metrics::counter!(
        "govbus_gateway_refused_total",
        "reason" => reason,
        "application" => application,
    )
    .increment(1);
}

fn bearer_token(headers: &HeaderMap) -> Result<&str, Refusal> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(Refusal::NoToken);
    };
    let value = value
        .to_str()
        .map_err(|_| Refusal::InvalidToken("the Authorization header is not text".to_owned()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(Refusal::InvalidToken(
            "the Authorization header is not `Bearer <token>`".to_owned(),
        )),
    }
}

/// HTTP Basic client credentials (RFC 6749 §2.3.1: each part form-encoded), if sent.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, &'static str> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not text")?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Err("the Authorization header is not `Basic <credentials>`");
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err("the token endpoint takes `Authorization: Basic`");
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| "the Basic credentials are not base64")?;
    let text = String::from_utf8(decoded).map_err(|_| "the Basic credentials are not UTF-8")?;
    let (id, secret) = text
        .split_once(':')
        .ok_or("the Basic credentials are not `id:secret`")?;
    Ok(Some((form_decoded(id)?, form_decoded(secret)?)))
}

fn form_decoded(text: &str) -> Result<String, &'static str> {
    percent_encoding::percent_decode_str(&text.replace('+', " "))
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| "the Basic credentials are not UTF-8 once decoded")
}

fn invalid_client(description: &str, by_basic: bool) -> Response {
    let mut response = oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description);
    if by_basic {
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"govbus\""),
        );
    }
    response
}

/// An error of the token endpoint (RFC 6749 §5.2).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    no_store(
        status,
        serde_json::json!({ "error": error, "error_description": description }),
    )
}

/// A token endpoint answer, which no cache may keep (RFC 6749 §5.1).
fn no_store(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verified_token_holds_until_it_expires_and_the_table_stays_bounded() {
        let verified = VerifiedTokens::default();
        verified.insert([1; 32], "dinkes.simpus".to_owned(), 100, 50);
        assert_eq!(
            verified.get(&[1; 32], 100).as_deref(),
            Some("dinkes.simpus")
        );
        assert_eq!(verified.get(&[1; 32], 101), None, "expired");
        assert_eq!(verified.get(&[2; 32], 50), None, "another token");
        for n in 0..MAX_VERIFIED_TOKENS {
            let mut digest = [0; 32];
            digest[..8].copy_from_slice(&(n as u64).to_le_bytes());
            digest[31] = 9;
            verified.insert(digest, "dinkes.simpus".to_owned(), 1_000, 200);
        }
        let held = verified.0.lock().expect("table").len();
        assert!(held <= MAX_VERIFIED_TOKENS, "{held}");
        assert_eq!(
            verified.get(&[1; 32], 60),
            None,
            "the expired went first when the table was full"
        );
    }
}
