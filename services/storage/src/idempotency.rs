//! Idempotency keys: a command retried with the same client-supplied key returns the original
//! result instead of acting twice.
//!
//! The key is claimed first, inside the command's transaction: the first request with a key
//! inserts it, runs, and stores its response beside it in the same commit. A later request with
//! the same key finds the key taken and returns the stored response without running. Requests
//! with one key at once are thereby put in order explicitly: on one of the writer's connections
//! they run one after the other; on two (the writer's connections on PostgreSQL, or replicas on
//! one PostgreSQL database) the later one's claim waits for the first one's transaction to end,
//! then reads its stored response.
//!
//! Only a SHA-256 digest of the request is kept (requests carry personal data); a key reused
//! with a different request is refused.

use sha2::{Digest, Sha256};

use crate::error::DbError;
use crate::sql::Sql;
use crate::time::now_micros;

/// Why an idempotency key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotentRequest {
    scope: &'static str,
    key: String,
    request_hash: String,
}

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new: this request runs, and its response is stored with it.
    Claimed,
    /// The key's request already ran: its stored response.
    Stored(Vec<u8>),
}

impl IdempotentRequest {
    /// `scope` names the command (e.g. `identity.RegisterCitizen`), `key` is the client's key,
    /// `request` the encoded request.
    pub fn new(scope: &'static str, key: impl Into<String>, request: &[u8]) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let digest = Sha256::digest(request);
        let mut request_hash = String::with_capacity(digest.len() * 2);
        for byte in digest {
            request_hash.push(char::from(HEX[usize::from(byte >> 4)]));
            request_hash.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
        Self {
            scope,
            key: key.into(),
            request_hash,
        }
    }

    /// The client's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The response stored for this key by a request that completed, if any (outside any
    /// transaction: a command that calls another service first checks this, so a retry does not
    /// repeat the call).
    pub async fn stored_response(
        &self,
        sql: &mut Sql<'_>,
    ) -> Result<Option<Vec<u8>>, IdempotencyError> {
        let row: Option<(String, Vec<u8>, i64)> = sql
            .query_opt(
                "SELECT request_hash, response, completed FROM idempotency_keys
                 WHERE scope = $1 AND idempotency_key = $2",
                &[self.scope.into(), self.key.as_str().into()],
            )
            .await?;
        match row {
            None => Ok(None),
            Some((hash, _, _)) if hash != self.request_hash => Err(IdempotencyError::KeyReused {
                key: self.key.clone(),
            }),
            Some((_, response, completed)) => Ok((completed != 0).then_some(response)),
        }
    }

    /// Claims the key inside a command's transaction (see the module docs).
    pub async fn claim(&self, sql: &mut Sql<'_>) -> Result<Claim, IdempotencyError> {
        let claimed = sql
            .execute(
                "INSERT INTO idempotency_keys
                     (scope, idempotency_key, request_hash, response, created_at, completed)
                 VALUES ($1, $2, $3, $4, $5, 0)
                 ON CONFLICT (scope, idempotency_key) DO NOTHING",
                &[
                    self.scope.into(),
                    self.key.as_str().into(),
                    self.request_hash.as_str().into(),
                    (&[] as &[u8]).into(),
                    now_micros().into(),
                ],
            )
            .await?;
        if claimed == 1 {
            return Ok(Claim::Claimed);
        }
        match self.stored_response(sql).await? {
            Some(response) => Ok(Claim::Stored(response)),
            // Claims and responses commit together, so a claimed key without its response is
            // only ever seen inside the transaction that claimed it.
            None => Err(IdempotencyError::Db(DbError::new(
                crate::error::DbErrorKind::Query,
                "reading an idempotency key",
                "the key is claimed but has no response",
            ))),
        }
    }

    /// Stores the command's response under the claimed key (in the command's transaction).
    pub async fn complete(&self, sql: &mut Sql<'_>, response: &[u8]) -> Result<(), DbError> {
        sql.execute(
            "UPDATE idempotency_keys SET response = $1, completed = 1
             WHERE scope = $2 AND idempotency_key = $3",
            &[response.into(), self.scope.into(), self.key.as_str().into()],
        )
        .await?;
        Ok(())
    }
}
