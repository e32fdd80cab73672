//! Tokens issued by the deployment's identity provider (Keycloak, INApas, …): checked against
//! the provider's published keys (its JWK set, found through its OpenID discovery document),
//! its issuer, the gateway's audience and their expiry.
//!
//! The keys are fetched when first needed, again every [`KEYS_MAX_AGE`], and again when a token
//! names a key the gateway has not seen (the provider rotated its keys), at most once per
//! [`REFETCH_AT_MOST_EVERY`] so that made-up key ids cannot make the gateway hammer the provider.

use std::sync::Arc;
use std::time::{Duration, Instant};

use govbus_kit::outbound::{DeliveryError, HttpTarget, HttpTargetSettings, TargetError};
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use tokio::sync::Mutex;

/// The longest a fetched key set is used without fetching it again.
pub const KEYS_MAX_AGE: Duration = Duration::from_secs(600);

/// The shortest time between two fetches of a provider's keys.
pub const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(10);

/// How the gateway trusts one identity provider.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSettings {
    /// The provider's issuer URL, exactly as its tokens' `iss` say; its discovery document is
    /// at `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    /// The `aud` its tokens for the gateway carry.
    pub audience: String,
    /// The claim naming the application: `client_id` (RFC 9068), else `azp`.
    #[serde(default)]
    pub client_claim: Option<String>,
    /// Clock difference tolerated on `exp` and `nbf`, seconds (default 30).
    #[serde(default)]
    pub leeway_seconds: Option<u64>,
    /// PEM certificates of authorities trusted for its HTTPS besides the system's.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
}

/// Why a provider's token is refused.
#[derive(Debug, thiserror::Error)]
pub enum ProviderRefusal {
    /// Its keys cannot be had.
    #[error("the identity provider's keys cannot be fetched: {0}")]
    Keys(String),
    /// It names a key the provider does not publish.
    #[error("the token is signed with a key the identity provider does not publish")]
    UnknownKey,
    /// It does not validate.
    #[error("{0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// It names no application.
    #[error("the token names no client in {0}")]
    NoClient(String),
}

/// One trusted identity provider and the keys last fetched from it.
#[derive(Debug)]
pub struct IdentityProvider {
    settings: ProviderSettings,
    extra_roots_pem: Option<Vec<u8>>,
    keys: Mutex<Keys>,
}

#[derive(Debug, Default)]
struct Keys {
    set: Option<Arc<JwkSet>>,
    fetched: Option<Instant>,
}

#[derive(serde::Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

const TIMEOUT: Duration = Duration::from_secs(5);

impl IdentityProvider {
    /// Trusts the provider `settings` describe (its URLs checked, nothing fetched yet).
    pub fn new(settings: ProviderSettings) -> Result<Self, TargetError> {
        HttpTarget::check_url(&discovery_url(&settings.issuer))?;
        let extra_roots_pem = match &settings.ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|error| TargetError::Roots(format!("{}: {error}", path.display())))?,
            ),
            None => None,
        };
        Ok(Self {
            settings,
            extra_roots_pem,
            keys: Mutex::new(Keys::default()),
        })
    }

    /// Its issuer.
    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// The clock difference tolerated on its tokens' expiry.
    pub fn leeway_seconds(&self) -> u64 {
        self.settings.leeway_seconds.unwrap_or(30)
    }

    /// The application `token` was issued to, if the provider signed it for the gateway and
    /// it is valid now.
    pub async fn verify(&self, token: &str) -> Result<String, ProviderRefusal> {
        let header = jsonwebtoken::decode_header(token)?;
        let jwk = match self.key(header.kid.as_deref(), false).await? {
            Some(jwk) => jwk,
            None => self
                .key(header.kid.as_deref(), true)
                .await?
                .ok_or(ProviderRefusal::UnknownKey)?,
        };
        let algorithm = algorithm_of(&jwk, header.alg)?;
        let key = DecodingKey::from_jwk(&jwk)?;
        let mut validation = Validation::new(algorithm);
        validation.leeway = self.leeway_seconds();
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)?;
        let claims: Vec<&str> = match &self.settings.client_claim {
            Some(claim) => vec![claim.as_str()],
            None => vec!["client_id", "azp"],
        };
        let mut tried = Vec::new();
        for claim in claims {
            if let Some(client) = data.claims.get(claim).and_then(|value| value.as_str()) {
                return Ok(client.to_owned());
            }
            tried.push(claim);
        }
        Err(ProviderRefusal::NoClient(tried.join(" or ")))
    }

    /// The key named `kid` (or the only signing key, for a token without one), from the keys
    /// in hand or, with `refetch` or when they are old, fetched anew.
    async fn key(&self, kid: Option<&str>, refetch: bool) -> Result<Option<Jwk>, ProviderRefusal> {
        let mut keys = self.keys.lock().await;
        let stale = keys
            .fetched
            .is_none_or(|fetched| fetched.elapsed() > KEYS_MAX_AGE);
        let may_refetch = keys
            .fetched
            .is_none_or(|fetched| fetched.elapsed() > REFETCH_AT_MOST_EVERY);
        if keys.set.is_none() || stale || (refetch && may_refetch) {
            match self.fetch().await {
                Ok(set) => {
                    keys.set = Some(Arc::new(set));
                    keys.fetched = Some(Instant::now());
                }
                Err(error) => {
                    tracing::warn!(
                        message = "Cannot fetch the identity provider's keys.",
                        issuer = %self.settings.issuer,
                        %error,
                    );
                    // Keys in hand stay usable until a fetch succeeds.
                    if keys.set.is_none() {
                        return Err(ProviderRefusal::Keys(error.to_string()));
                    }
                }
            }
        } else if refetch {
            return Ok(None);
        }
        let Some(set) = &keys.set else {
            return Ok(None);
        };
        Ok(match kid {
            Some(kid) => set.find(kid).cloned(),
            None if set.keys.len() == 1 => set.keys.first().cloned(),
            None => None,
        })
    }

    async fn fetch(&self) -> Result<JwkSet, DeliveryError> {
        let target = |url: String| {
            HttpTarget::new(HttpTargetSettings {
                name: "identity-provider",
                url,
                bearer_token: None,
                extra_roots_pem: self.extra_roots_pem.clone(),
                timeout: TIMEOUT,
            })
            .map_err(|error| DeliveryError::refused("identity-provider", error.to_string()))
        };
        let discovery: Discovery = target(discovery_url(&self.settings.issuer))?
            .get_json()
            .await?;
        if discovery.issuer != self.settings.issuer {
            return Err(DeliveryError::refused(
                "identity-provider",
                format!(
                    "its discovery document names the issuer {:?}, not {:?}",
                    discovery.issuer, self.settings.issuer
                ),
            ));
        }
        target(discovery.jwks_uri)?.get_json().await
    }
}

fn discovery_url(issuer: &str) -> String {
    format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    )
}

/// The algorithm a token may be checked with: the key's own, which must be asymmetric (a
/// shared-secret algorithm would let anyone holding the published key sign).
fn algorithm_of(jwk: &Jwk, claimed: Algorithm) -> Result<Algorithm, ProviderRefusal> {
    let of_key = jwk.common.key_algorithm.map(|algorithm| match algorithm {
        KeyAlgorithm::ES256 => Some(Algorithm::ES256),
        KeyAlgorithm::ES384 => Some(Algorithm::ES384),
        KeyAlgorithm::RS256 => Some(Algorithm::RS256),
        KeyAlgorithm::RS384 => Some(Algorithm::RS384),
        KeyAlgorithm::RS512 => Some(Algorithm::RS512),
        KeyAlgorithm::PS256 => Some(Algorithm::PS256),
        KeyAlgorithm::PS384 => Some(Algorithm::PS384),
        KeyAlgorithm::PS512 => Some(Algorithm::PS512),
        KeyAlgorithm::EdDSA => Some(Algorithm::EdDSA),
        _ => None,
    });
    let asymmetric = !matches!(
        claimed,
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
    );
    match of_key {
        Some(Some(algorithm)) if algorithm == claimed => Ok(algorithm),
        None if asymmetric => Ok(claimed),
        _ => Err(ProviderRefusal::Invalid(
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into(),
        )),
    }
}
