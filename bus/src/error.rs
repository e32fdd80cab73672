//! The error type shared by every bus operation: an [`Error`] with a [`kind`](Error::kind).
//!
//! Each operation has its own kind enum (for example [`PublishErrorKind`](crate::PublishErrorKind)),
//! so callers match on a small, stable set of cases while the message keeps the full detail.

use std::error::Error as StdError;
use std::fmt;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// An error of kind `K`, with an optional underlying cause.
pub struct Error<K> {
    kind: K,
    detail: Option<String>,
    source: Option<BoxError>,
}

impl<K: Copy> Error<K> {
    /// An error of `kind` with no further detail.
    pub fn new(kind: K) -> Self {
        Self {
            kind,
            detail: None,
            source: None,
        }
    }

    /// An error of `kind` explained by `detail`.
    pub fn with_detail(kind: K, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: Some(detail.into()),
            source: None,
        }
    }

    /// An error of `kind` caused by `source`.
    pub fn with_source(kind: K, source: impl Into<BoxError>) -> Self {
        Self {
            kind,
            detail: None,
            source: Some(source.into()),
        }
    }

    /// What went wrong, for matching.
    pub fn kind(&self) -> K {
        self.kind
    }

    /// The human-readable explanation, if one was given.
    pub fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }
}

impl<K: fmt::Display> fmt::Display for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl<K: fmt::Debug> fmt::Debug for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("detail", &self.detail)
            .field("source", &self.source)
            .finish()
    }
}

impl<K: fmt::Debug + fmt::Display> StdError for Error<K> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|source| source as &(dyn StdError + 'static))
    }
}

/// Declares an error-kind enum with its `Display` text.
macro_rules! error_kind {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(match self {
                    $(Self::$variant => $text,)+
                })
            }
        }
    };
}
pub(crate) use error_kind;
