//! The gateway's own access tokens: short-lived JWTs (RFC 9068 access-token profile), signed
//! ES256 with a key the gateway keeps in its data folder, published as a JWK set.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use sha2::{Digest as _, Sha256};

/// Why the gateway cannot issue tokens.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read or written.
    #[error("the token signing key {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no usable P-256 key.
    #[error("the token signing key {0} is not a PKCS#8 P-256 private key")]
    Invalid(String),
    /// The system has no randomness to make a key.
    #[error("no system randomness to make a token signing key")]
    Randomness,
}

/// What a token of the gateway's says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AccessClaims {
    /// The gateway that issued it.
    pub iss: String,
    /// The application it was issued to.
    pub sub: String,
    /// The gateway's audience name.
    pub aud: String,
    /// The application again, as RFC 9068 names it.
    pub client_id: String,
    /// Issued at (seconds since 1970).
    pub iat: u64,
    /// Expires at.
    pub exp: u64,
    /// Its own id.
    pub jti: String,
}

/// A token as the token endpoint answers it.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The JWT.
    pub access_token: String,
    /// Its lifetime in seconds.
    pub expires_in: u64,
}

/// Issues and checks the gateway's own tokens.
#[derive(Clone)]
pub struct TokenIssuer {
    issuer: String,
    audience: String,
    lifetime: Duration,
    key_id: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    jwk: serde_json::Value,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenIssuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("lifetime", &self.lifetime)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl TokenIssuer {
    /// Signs with the key in `path`, made there (readable by its owner only) if missing.
    pub fn load_or_create(
        path: &Path,
        issuer: &str,
        audience: &str,
        lifetime: Duration,
    ) -> Result<Self, KeyError> {
        let file_error = |source| KeyError::File {
            path: path.display().to_string(),
            source,
        };
        let pkcs8 = match std::fs::read(path) {
            Ok(pkcs8) => pkcs8,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let pkcs8 = Self::generate_key()?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(file_error)?;
                }
                write_private(path, &pkcs8).map_err(file_error)?;
                pkcs8
            }
            Err(error) => return Err(file_error(error)),
        };
        Self::from_pkcs8(&pkcs8, issuer, audience, lifetime)
            .map_err(|_| KeyError::Invalid(path.display().to_string()))
    }

    /// A new P-256 private key, PKCS#8 DER.
    pub fn generate_key() -> Result<Vec<u8>, KeyError> {
        let random = ring::rand::SystemRandom::new();
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random)
            .map(|document| document.as_ref().to_vec())
            .map_err(|_| KeyError::Randomness)
    }

    /// Signs with `pkcs8` (a P-256 private key).
    pub fn from_pkcs8(
        pkcs8: &[u8],
        issuer: &str,
        audience: &str,
        lifetime: Duration,
    ) -> Result<Self, KeyError> {
        let random = ring::rand::SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &random)
            .map_err(|_| KeyError::Invalid("(in memory)".to_owned()))?;
        // An uncompressed point: 0x04, x, y.
        let point = pair.public_key().as_ref();
        if point.len() != 65 {
            return Err(KeyError::Invalid("(in memory)".to_owned()));
        }
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let x = b64.encode(&point[1..33]);
        let y = b64.encode(&point[33..]);
        // RFC 7638: the thumbprint of the required members in lexicographic order.
        let thumbprint = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let key_id = b64.encode(Sha256::digest(thumbprint.as_bytes()));
        let decoding = DecodingKey::from_ec_components(&x, &y)
            .map_err(|_| KeyError::Invalid("(in memory)".to_owned()))?;
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": x, "y": y,
            "kid": key_id, "use": "sig", "alg": "ES256",
        });
        Ok(Self {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            lifetime,
            key_id,
            encoding: EncodingKey::from_ec_der(pkcs8),
            decoding,
            jwk,
        })
    }

    /// The `iss` of its tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The key set that verifies its tokens (`/.well-known/jwks.json`).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": [self.jwk] })
    }

    /// A token for `client`, valid for the issuer's lifetime from now.
    pub fn issue(&self, client: &str) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        let now = unix_now();
        let lifetime = self.lifetime.as_secs().max(1);
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: client.to_owned(),
            aud: self.audience.clone(),
            client_id: client.to_owned(),
            iat: now,
            exp: now + lifetime,
            jti: uuid::Uuid::now_v7().to_string(),
        };
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("at+jwt".to_owned());
        header.kid = Some(self.key_id.clone());
        let access_token = jsonwebtoken::encode(&header, &claims, &self.encoding)?;
        Ok(IssuedToken {
            access_token,
            expires_in: lifetime,
        })
    }

    /// The application a token of this issuer was issued to, if it is valid now: signed with
    /// its key, for its audience, not expired. Its clock is the gateway's own, so there is no
    /// leeway.
    pub fn verify(&self, token: &str) -> Result<String, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.leeway = 0;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<AccessClaims>(token, &self.decoding, &validation)?;
        Ok(data.claims.client_id)
    }
}

/// Seconds since 1970.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Writes `bytes` to a new file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    options.open(path)?.write_all(bytes)
}

/// What a JWT's payload claims, read without checking anything: who is to check it, and (once
/// checked) until when it holds.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Claimed {
    pub(crate) iss: Option<String>,
    pub(crate) exp: Option<u64>,
}

/// The claims of `token`'s payload, unchecked.
pub(crate) fn claimed(token: &str) -> Option<Claimed> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(name: &str, lifetime: Duration) -> TokenIssuer {
        let key = TokenIssuer::generate_key().expect("key");
        TokenIssuer::from_pkcs8(&key, name, "govbus", lifetime).expect("issuer")
    }

    #[test]
    fn a_token_is_accepted_by_its_issuer_only() {
        let ours = issuer("https://gateway.test", Duration::from_secs(300));
        let token = ours.issue("disnaker-pmptsp.sicantik").expect("issued");
        assert_eq!(token.expires_in, 300);
        assert_eq!(
            ours.verify(&token.access_token).expect("valid"),
            "disnaker-pmptsp.sicantik"
        );
        assert_eq!(
            claimed(&token.access_token)
                .and_then(|claims| claims.iss)
                .as_deref(),
            Some("https://gateway.test")
        );
        // Same issuer name, another key: a forgery.
        let other = issuer("https://gateway.test", Duration::from_secs(300));
        assert!(other.verify(&token.access_token).is_err());
        let mut tampered = token.access_token.clone();
        tampered.push('x');
        assert!(ours.verify(&tampered).is_err());
    }

    #[test]
    fn a_key_survives_a_restart_and_is_private() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("keys").join("token-signing.p8");
        let first = TokenIssuer::load_or_create(&path, "i", "govbus", Duration::from_secs(60))
            .expect("made");
        let token = first.issue("a.b-app").expect("issued");
        let again = TokenIssuer::load_or_create(&path, "i", "govbus", Duration::from_secs(60))
            .expect("read");
        assert_eq!(again.verify(&token.access_token).expect("valid"), "a.b-app");
        assert_eq!(first.jwks(), again.jwks());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
