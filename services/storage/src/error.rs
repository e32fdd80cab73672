//! Database errors: what kind of failure, what was being done, and the driver's words.
//!
//! The kind is what callers act on: retry on [`Unavailable`](DbErrorKind::Unavailable), tell
//! the client about a [`Duplicate`](DbErrorKind::Duplicate), log the rest as the service's own
//! fault. A [`Deadlock`](DbErrorKind::Deadlock) never reaches a command's caller: the writer runs
//! the command again in its next group.

use std::fmt;

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DbErrorKind {
    /// The URL or the options name no usable database.
    Config,
    /// The database is unreachable, busy or locked, or the connection broke: retrying may help.
    Unavailable,
    /// Concurrent transactions collided (PostgreSQL 40P01 or 40001): run again.
    Deadlock,
    /// A unique key is taken.
    Duplicate,
    /// A stored value cannot be read as the type asked for.
    Corrupt,
    /// The database is closed or its writer stopped.
    Closed,
    /// The statement is wrong or broke a rule other than a unique key: the service's own fault.
    Query,
}

impl DbErrorKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Config => "database configuration",
            Self::Unavailable => "database unavailable",
            Self::Deadlock => "concurrent transactions collided",
            Self::Duplicate => "duplicate key",
            Self::Corrupt => "stored value unreadable",
            Self::Closed => "database closed",
            Self::Query => "statement failed",
        }
    }
}

impl fmt::Display for DbErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// A database error. Cheap to clone: the writer keeps a copy of a failed statement's error to
/// answer a command that swallowed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbError {
    kind: DbErrorKind,
    context: &'static str,
    detail: String,
    code: Option<String>,
}

impl DbError {
    /// An error of `kind` while `context`, explained by `detail`.
    pub fn new(kind: DbErrorKind, context: &'static str, detail: impl Into<String>) -> Self {
        Self {
            kind,
            context,
            detail: detail.into(),
            code: None,
        }
    }

    /// A stored value that does not read back as what was written (`what` names it, never its
    /// content).
    pub fn corrupt(context: &'static str, what: impl fmt::Display) -> Self {
        Self::new(
            DbErrorKind::Corrupt,
            context,
            format!("stored {what} is invalid"),
        )
    }

    /// What went wrong, for matching.
    pub fn kind(&self) -> DbErrorKind {
        self.kind
    }

    /// The database's own error code (SQLite extended result code, PostgreSQL SQLSTATE).
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The same error, said to have happened while `context`.
    pub fn context(mut self, context: &'static str) -> Self {
        self.context = context;
        self
    }

    /// True when retrying may succeed: the database is busy, locked or unreachable, or the
    /// transaction collided with another.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            DbErrorKind::Unavailable | DbErrorKind::Deadlock | DbErrorKind::Closed
        )
    }

    /// True when a unique key is taken.
    pub fn is_unique_violation(&self) -> bool {
        self.kind == DbErrorKind::Duplicate
    }

    /// The same error, with the start of the statement it came from (statements hold
    /// placeholders, never values, so no personal data).
    pub(crate) fn with_statement(mut self, sql: &str) -> Self {
        let head: Vec<&str> = sql.split_whitespace().take(8).collect();
        self.detail = format!("{} [{} …]", self.detail, head.join(" "));
        self
    }

    pub(crate) fn closed(context: &'static str) -> Self {
        Self::new(
            DbErrorKind::Closed,
            context,
            "the database's writer has stopped",
        )
    }

    /// A rusqlite error.
    pub(crate) fn sqlite(context: &'static str, error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        let kind = match &error {
            rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory
                | ErrorCode::ReadOnly => DbErrorKind::Unavailable,
                ErrorCode::ConstraintViolation
                    if matches!(
                        failure.extended_code,
                        rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                            | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    ) =>
                {
                    DbErrorKind::Duplicate
                }
                _ => DbErrorKind::Query,
            },
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::Utf8Error(..) => DbErrorKind::Corrupt,
            _ => DbErrorKind::Query,
        };
        let code = match &error {
            rusqlite::Error::SqliteFailure(failure, _) => Some(failure.extended_code.to_string()),
            _ => None,
        };
        let mut converted = Self::new(kind, context, error.to_string());
        converted.code = code;
        converted
    }

    /// An sqlx (PostgreSQL) error.
    pub(crate) fn postgres(context: &'static str, error: sqlx::Error) -> Self {
        let (kind, code) = match &error {
            sqlx::Error::Database(database) => {
                let code = database.code().map(|code| code.into_owned());
                let kind = match code.as_deref() {
                    Some("23505") => DbErrorKind::Duplicate,
                    Some("40P01" | "40001") => DbErrorKind::Deadlock,
                    // Admin shutdown, crash shutdown, cannot connect now, lock not available,
                    // query cancelled (statement_timeout), too many connections.
                    Some("57P01" | "57P02" | "57P03" | "55P03" | "57014" | "53300") => {
                        DbErrorKind::Unavailable
                    }
                    Some(code) if code.starts_with("08") || code.starts_with("53") => {
                        DbErrorKind::Unavailable
                    }
                    _ => DbErrorKind::Query,
                };
                (kind, code)
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::BeginFailed => (DbErrorKind::Unavailable, None),
            sqlx::Error::Configuration(_) => (DbErrorKind::Config, None),
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::ColumnIndexOutOfBounds { .. } => (DbErrorKind::Corrupt, None),
            _ => (DbErrorKind::Query, None),
        };
        let mut converted = Self::new(kind, context, error.to_string());
        converted.code = code;
        converted
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} while {}: {}", self.kind, self.context, self.detail)
    }
}

impl std::error::Error for DbError {}
