//! Which database engine a URL names.

use std::str::FromStr;

use crate::error::{DbError, DbErrorKind};

/// Which database engine is behind a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (the zero-set-up default).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl FromStr for Backend {
    type Err = DbError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(DbError::new(
                DbErrorKind::Config,
                "opening the database",
                format!("unsupported database URL {url:?}: use sqlite://<file> or postgres://…"),
            ))
        }
    }
}
