//! The applications registered to use the gateway: their names, their OAuth2 client secrets
//! (stored hashed), their rate limits, and their revocation.
//!
//! An application is named `<agency>.<application>` (`disnaker-pmptsp.sicantik`): the agency's code and
//! the application's own name. That name is its OAuth2 `client_id` and its caller name in the
//! access policy, where services' names (which have no dot) cannot be mistaken for it.
//!
//! A secret is 32 random bytes, shown once when it is made. Only its SHA-256 is stored: a
//! secret that random cannot be guessed from its hash, so a slow password hash would add cost
//! to every token request and nothing against an attacker. When a secret is replaced, the
//! previous one may stay valid for a while, so that an application's instances can be moved
//! to the new one without an outage.
//!
//! Every change is one statement (no read before the write), so concurrent changes from
//! several operators or gateway replicas cannot interleave into a state nobody asked for.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use base64::Engine as _;
use govbus_storage::time::{micros_of, now_micros, rfc3339};
use govbus_storage::{Database, DbError, Migration};
use ring::rand::SecureRandom as _;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

/// The registry's table (migration 1 of the gateway's database, [`crate::database`]).
pub const MIGRATION: Migration = Migration {
    version: 1,
    description: "registered applications",
    sqlite: TABLES,
    postgres: TABLES,
};

const TABLES: &str = "
    CREATE TABLE gateway_applications (
        name TEXT PRIMARY KEY,
        agency TEXT NOT NULL,
        description TEXT NOT NULL,
        secret_hash TEXT,
        previous_secret_hash TEXT,
        previous_valid_until BIGINT,
        rate_per_second BIGINT,
        burst BIGINT,
        registered_at BIGINT NOT NULL,
        changed_at BIGINT NOT NULL,
        revoked_at BIGINT
    )
";

/// What is wrong with a request to the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The name is not `<agency>.<application>`.
    #[error(
        "{0:?} is not an application name: <agency>.<application>, each part at least two lowercase letters, digits or '-', starting with a letter, 64 bytes at most"
    )]
    InvalidName(String),
    /// The description is empty or too long.
    #[error("the description is a sentence of 1 to 500 bytes")]
    InvalidDescription,
    /// A rate limit of zero.
    #[error("a rate limit and its burst are at least 1")]
    InvalidRate,
    /// The name is taken.
    #[error("an application named {0} is registered already")]
    Exists(String),
    /// No such application, or it is revoked.
    #[error("no application named {0} is registered (or it is revoked)")]
    Unknown(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
}

/// An application's name: `<agency>.<application>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ApplicationName(String);

impl ApplicationName {
    /// `name`, if it is an application's name.
    pub fn parse(name: &str) -> Result<Self, RegistryError> {
        let name = name.trim();
        if govbus_kit::access::is_application_name(name) {
            Ok(Self(name.to_owned()))
        } else {
            Err(RegistryError::InvalidName(name.to_owned()))
        }
    }

    /// The agency's code: what comes before the dot.
    pub fn agency(&self) -> &str {
        self.0.split_once('.').map_or("", |(agency, _)| agency)
    }

    /// As text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ApplicationName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client secret, as shown once to whoever registered the application.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(…)")
    }
}

impl ClientSecret {
    /// A new random secret. `gbs_` marks it for secret scanners.
    fn generate() -> Result<Self, DbError> {
        let mut bytes = [0_u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| DbError::corrupt("making a client secret", "no system randomness"))?;
        Ok(Self(format!(
            "gbs_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        )))
    }

    /// The secret itself, to hand to the application's owner.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The stored form of a secret.
fn hash_of(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// How an application proves who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignsInWith {
    /// A client secret of the gateway's, for the gateway's token endpoint.
    Secret,
    /// Tokens of the deployment's identity provider only: no secret here.
    IdentityProvider,
}

/// How fast an application may call: `per_second` on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per second, sustained.
    pub per_second: u32,
    /// Requests at once after a quiet spell.
    pub burst: u32,
}

impl RateLimit {
    /// Checks both are at least 1.
    pub fn new(per_second: u32, burst: u32) -> Result<Self, RegistryError> {
        if per_second == 0 || burst == 0 {
            return Err(RegistryError::InvalidRate);
        }
        Ok(Self { per_second, burst })
    }
}

/// A registered application, as listed (never with its secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Registered {
    /// Its name and client id.
    pub name: String,
    /// Its agency's code.
    pub agency: String,
    /// What it is.
    pub description: String,
    /// Whether it has a client secret (otherwise it signs in through the identity provider).
    pub has_secret: bool,
    /// Its own rate limit, if it has one (otherwise the gateway's default).
    pub rate_per_second: Option<u32>,
    /// Its own burst, with `rate_per_second`.
    pub burst: Option<u32>,
    /// When it was registered (RFC 3339).
    pub registered_at: String,
    /// When it was last changed.
    pub changed_at: String,
    /// When it was revoked, if it was.
    pub revoked_at: Option<String>,
    /// Until when the secret it had before the current one is still accepted, if it is.
    pub previous_secret_valid_until: Option<String>,
}

/// The registry of applications in the gateway's database.
#[derive(Debug, Clone)]
pub struct Applications {
    db: Database,
}

type ApplicationRow = (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    i64,
    i64,
    Option<i64>,
);

const COLUMNS: &str = "name, agency, description, secret_hash, previous_secret_hash, \
    previous_valid_until, rate_per_second, burst, registered_at, changed_at, revoked_at";

impl Applications {
    /// The registry in `db` (the gateway's database, [`crate::database::open`]).
    pub fn new(db: Database) -> Self {
        Self { db }
    }

    /// Its database.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// Registers `name`. With [`SignsInWith::Secret`], returns its secret, which is not kept
    /// and cannot be shown again; an application that signs in through the identity provider
    /// gets none.
    pub async fn register(
        &self,
        name: &ApplicationName,
        description: &str,
        rate: Option<RateLimit>,
        signs_in_with: SignsInWith,
    ) -> Result<Option<ClientSecret>, RegistryError> {
        let description = description.trim().to_owned();
        if description.is_empty() || description.len() > 500 {
            return Err(RegistryError::InvalidDescription);
        }
        let secret = match signs_in_with {
            SignsInWith::Secret => Some(ClientSecret::generate()?),
            SignsInWith::IdentityProvider => None,
        };
        let hash = secret.as_ref().map(|secret| hash_of(secret.expose()));
        let key = name.clone();
        let inserted = self
            .db
            .write(async move |tx| {
                let now = now_micros();
                tx.execute(
                    "INSERT INTO gateway_applications (name, agency, description, secret_hash, \
                     rate_per_second, burst, registered_at, changed_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (name) DO NOTHING",
                    &[
                        key.as_str().into(),
                        key.agency().into(),
                        description.as_str().into(),
                        hash.as_deref().into(),
                        rate.map(|rate| i64::from(rate.per_second)).into(),
                        rate.map(|rate| i64::from(rate.burst)).into(),
                        now.into(),
                    ],
                )
                .await
            })
            .await?;
        if inserted == 1 {
            Ok(secret)
        } else {
            Err(RegistryError::Exists(name.to_string()))
        }
    }

    /// Gives `name` a new secret; the one it had stays valid for `keep_previous` (zero: not at
    /// all, e.g. when it leaked).
    pub async fn rotate_secret(
        &self,
        name: &ApplicationName,
        keep_previous: Duration,
    ) -> Result<ClientSecret, RegistryError> {
        let secret = ClientSecret::generate()?;
        let hash = hash_of(secret.expose());
        let keep = micros_of(keep_previous);
        let key = name.as_str().to_owned();
        let changed = self
            .db
            .write(async move |tx| {
                let now = now_micros();
                tx.execute(
                    "UPDATE gateway_applications SET \
                     previous_secret_hash = CASE WHEN $3 > 0 THEN secret_hash ELSE NULL END, \
                     previous_valid_until = CASE WHEN $3 > 0 THEN $4 + $3 ELSE NULL END, \
                     secret_hash = $2, changed_at = $4 \
                     WHERE name = $1 AND revoked_at IS NULL",
                    &[
                        key.as_str().into(),
                        hash.as_str().into(),
                        keep.into(),
                        now.into(),
                    ],
                )
                .await
            })
            .await?;
        if changed == 1 {
            Ok(secret)
        } else {
            Err(RegistryError::Unknown(name.to_string()))
        }
    }

    /// Revokes `name`: its secrets and the tokens it holds are refused from now on (by a
    /// running gateway within [`REFRESH_INTERVAL`]). A revoked name is not given out again.
    pub async fn revoke(&self, name: &ApplicationName) -> Result<(), RegistryError> {
        let key = name.as_str().to_owned();
        let changed = self
            .db
            .write(async move |tx| {
                let now = now_micros();
                tx.execute(
                    "UPDATE gateway_applications SET revoked_at = $2, changed_at = $2, \
                     previous_secret_hash = NULL, previous_valid_until = NULL \
                     WHERE name = $1 AND revoked_at IS NULL",
                    &[key.as_str().into(), now.into()],
                )
                .await
            })
            .await?;
        if changed == 1 {
            Ok(())
        } else {
            Err(RegistryError::Unknown(name.to_string()))
        }
    }

    /// Every application ever registered, by name.
    pub async fn list(&self) -> Result<Vec<Registered>, DbError> {
        let now = now_micros();
        Ok(self
            .rows()
            .await?
            .into_iter()
            .map(|row| {
                let (
                    name,
                    agency,
                    description,
                    secret,
                    previous,
                    until,
                    rate,
                    burst,
                    at,
                    changed,
                    revoked,
                ) = row;
                Registered {
                    name,
                    agency,
                    description,
                    has_secret: secret.is_some(),
                    rate_per_second: rate.and_then(|rate| u32::try_from(rate).ok()),
                    burst: burst.and_then(|burst| u32::try_from(burst).ok()),
                    registered_at: rfc3339(at),
                    changed_at: rfc3339(changed),
                    revoked_at: revoked.map(rfc3339),
                    previous_secret_valid_until: previous
                        .and(until)
                        .filter(|until| *until > now)
                        .map(rfc3339),
                }
            })
            .collect())
    }

    async fn rows(&self) -> Result<Vec<ApplicationRow>, DbError> {
        let mut sql = self.db.read().await?;
        sql.query_all(
            govbus_storage::statement::Statement::generated(format!(
                "SELECT {COLUMNS} FROM gateway_applications ORDER BY name"
            )),
            &[],
        )
        .await
    }

    /// Whether `secret` is `name`'s (current, or previous and still valid), read from the
    /// database itself: a secret just made or revoked counts at once.
    pub async fn check_secret(&self, name: &str, secret: &str) -> Result<Option<Client>, DbError> {
        let mut sql = self.db.read().await?;
        let row: Option<ApplicationRow> = sql
            .query_opt(
                govbus_storage::statement::Statement::generated(format!(
                    "SELECT {COLUMNS} FROM gateway_applications WHERE name = $1"
                )),
                &[name.into()],
            )
            .await?;
        let hash = hash_of(secret);
        Ok(row
            .map(|row| Client::of_row(row, now_micros()))
            .filter(|client| client.accepts(&hash))
            .map(|client| *client))
    }

    /// The registry as it is now, for [`ClientTable`].
    async fn snapshot(&self) -> Result<HashMap<String, Arc<Client>>, DbError> {
        let now = now_micros();
        Ok(self
            .rows()
            .await?
            .into_iter()
            .map(|row| {
                let client = Client::of_row(row, now);
                (client.name.to_string(), Arc::new(*client))
            })
            .collect())
    }
}

/// What the gateway knows of one application when it calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Its name.
    pub name: Arc<str>,
    /// Its own rate limit, if it has one.
    pub rate: Option<RateLimit>,
    /// Revoked: nothing it presents is accepted.
    pub revoked: bool,
    secret_hash: Option<String>,
    previous: Option<(String, i64)>,
    now: i64,
}

impl Client {
    fn of_row(row: ApplicationRow, now: i64) -> Box<Self> {
        let (name, _, _, secret_hash, previous, until, rate, burst, _, _, revoked) = row;
        let rate = match (rate, burst) {
            (Some(rate), Some(burst)) => u32::try_from(rate)
                .ok()
                .zip(u32::try_from(burst).ok())
                .and_then(|(rate, burst)| RateLimit::new(rate, burst).ok()),
            _ => None,
        };
        Box::new(Self {
            name: Arc::from(name),
            rate,
            revoked: revoked.is_some(),
            secret_hash,
            previous: previous.zip(until),
            now,
        })
    }

    /// Whether the secret whose hash is `hash` is valid for this client now (never for an
    /// application without a secret). (Comparing
    /// digests in variable time tells an attacker nothing about the secret itself.)
    fn accepts(&self, hash: &str) -> bool {
        !self.revoked
            && (self.secret_hash.as_deref() == Some(hash)
                || self
                    .previous
                    .as_ref()
                    .is_some_and(|(previous, until)| previous == hash && *until > self.now))
    }
}

/// How often a running gateway rereads the registry: a revoked application is refused at the
/// latest this long after its revocation (plus the read itself).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// The registry as a running gateway last read it, reread every [`REFRESH_INTERVAL`].
#[derive(Debug, Clone)]
pub struct ClientTable {
    clients: Arc<RwLock<HashMap<String, Arc<Client>>>>,
}

impl ClientTable {
    /// Reads `applications` now, then keeps rereading it until `stop`.
    pub async fn follow(
        applications: Applications,
        stop: CancellationToken,
    ) -> Result<Self, DbError> {
        let table = Self {
            clients: Arc::new(RwLock::new(applications.snapshot().await?)),
        };
        let clients = Arc::clone(&table.clients);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(REFRESH_INTERVAL) => {}
                }
                match applications.snapshot().await {
                    Ok(snapshot) => {
                        if failing {
                            tracing::info!(message = "Application registry readable again.");
                            failing = false;
                        }
                        *clients.write().unwrap_or_else(PoisonError::into_inner) = snapshot;
                    }
                    Err(error) => {
                        // Revocations are not seen while this lasts: say so each time.
                        tracing::error!(
                            message = "Cannot reread the application registry; revocations since the last read are not yet in force.",
                            %error,
                        );
                        failing = true;
                    }
                }
            }
        });
        Ok(table)
    }

    /// The application named `name`, if it is registered and not revoked.
    pub fn active(&self, name: &str) -> Option<Arc<Client>> {
        self.clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .filter(|client| !client.revoked)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_agency_dot_application() {
        let name = ApplicationName::parse("disnaker-pmptsp.sicantik").expect("valid");
        assert_eq!(name.agency(), "disnaker-pmptsp");
        for bad in [
            "identity",
            "dpmptsp.",
            ".sicantik",
            "DPMPTSP.sicantik",
            "dpmptsp.si cantik",
            "a.b",
            "disnaker-pmptsp.sicantik.v2",
            "1dinas.app",
        ] {
            assert!(ApplicationName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secrets_are_random_and_stored_only_as_hashes() {
        let one = ClientSecret::generate().expect("secret");
        let two = ClientSecret::generate().expect("secret");
        assert_ne!(one, two);
        assert!(one.expose().starts_with("gbs_") && one.expose().len() == 47);
        assert!(!format!("{one:?}").contains(&one.expose()[4..]));
        assert_eq!(hash_of(one.expose()).len(), 64);
    }
}
