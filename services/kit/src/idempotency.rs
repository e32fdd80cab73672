//! Idempotency keys: a command retried with the same client-supplied key returns the original
//! result instead of acting twice.
//!
//! The key is checked and the response stored in the same transaction as the command's state
//! change. Only a SHA-256 digest of the request is kept (requests carry personal data); a key
//! reused with a different request is refused.

use sha2::{Digest, Sha256};
use sqlx::AnyConnection;

use crate::db::{DbError, now_micros};

/// Why an idempotency key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// The key was used before for a different request.
    #[error("idempotency key {key:?} was already used for a different request")]
    KeyReused {
        /// The key.
        key: String,
    },
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A request and the key the client sent with it.
#[derive(Debug, Clone)]
pub struct IdempotentRequest<'a> {
    scope: &'a str,
    key: &'a str,
    request_hash: String,
}

impl<'a> IdempotentRequest<'a> {
    /// `scope` names the command (e.g. `identity.RegisterCitizen`), `key` is the client's key,
    /// `request` the encoded request.
    pub fn new(scope: &'a str, key: &'a str, request: &[u8]) -> Self {
        let digest = Sha256::digest(request);
        let request_hash = digest.iter().map(|byte| format!("{byte:02x}")).collect();
        Self {
            scope,
            key,
            request_hash,
        }
    }

    /// The response stored for this key, if the command already ran.
    pub async fn stored_response(
        &self,
        connection: &mut AnyConnection,
    ) -> Result<Option<Vec<u8>>, IdempotencyError> {
        let row: Option<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT request_hash, response FROM idempotency_keys
             WHERE scope = $1 AND idempotency_key = $2",
        )
        .bind(self.scope)
        .bind(self.key)
        .fetch_optional(connection)
        .await
        .map_err(DbError::sql("reading an idempotency key"))?;
        match row {
            None => Ok(None),
            Some((hash, response)) if hash == self.request_hash => Ok(Some(response)),
            Some(_) => Err(IdempotencyError::KeyReused {
                key: self.key.to_owned(),
            }),
        }
    }

    /// Stores the command's response under the key (in the command's transaction).
    pub async fn store_response(
        &self,
        connection: &mut AnyConnection,
        response: &[u8],
    ) -> Result<(), IdempotencyError> {
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, idempotency_key, request_hash, response, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(self.scope)
        .bind(self.key)
        .bind(&self.request_hash)
        .bind(response)
        .bind(now_micros())
        .execute(connection)
        .await
        .map_err(DbError::sql("storing an idempotency key"))?;
        Ok(())
    }
}
