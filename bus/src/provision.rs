//! Creating and updating streams, idempotently, from code at start-up.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::error::{Error, error_kind};

error_kind! {
    /// Why provisioning failed.
    ProvisionErrorKind {
        /// A stream could not be created, updated or read.
        Stream => "cannot provision stream",
        /// A durable consumer could not be created or updated.
        Consumer => "cannot provision consumer",
    }
}

/// A stream or consumer that could not be provisioned.
pub type ProvisionError = Error<ProvisionErrorKind>;

/// Storage settings for govbus streams. Streams are always file-backed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// Copies of each stream in a cluster (1, 3 or 5).
    pub replicas: usize,
    /// How long events are kept; `None` keeps them until `max_bytes` is reached.
    pub max_age: Option<Duration>,
    /// Window in which a re-published event id is stored only once.
    pub duplicate_window: Duration,
    /// Size limit of each stream in bytes; `None` for no limit.
    pub max_bytes: Option<i64>,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            // A year of history lets the evaluation service rebuild a full assessment year.
            max_age: Some(Duration::from_secs(366 * 24 * 60 * 60)),
            duplicate_window: Duration::from_secs(2 * 60),
            max_bytes: None,
        }
    }
}

impl StreamSettings {
    fn config(&self, name: &str, subjects: Vec<String>, description: &str) -> stream::Config {
        stream::Config {
            name: name.to_owned(),
            description: Some(description.to_owned()),
            subjects,
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            num_replicas: self.replicas,
            max_age: self.max_age.unwrap_or(Duration::ZERO),
            duplicate_window: self.duplicate_window,
            max_bytes: self.max_bytes.unwrap_or(-1),
            allow_direct: true,
            ..Default::default()
        }
    }
}

/// Creates the stream, or updates it to these settings if it exists.
pub async fn ensure_stream(
    jetstream: &jetstream::Context,
    settings: &StreamSettings,
    name: &str,
    subjects: Vec<String>,
    description: &str,
) -> Result<(), ProvisionError> {
    let config = settings.config(name, subjects, description);
    if jetstream
        .create_or_update_stream(config.clone())
        .await
        .is_ok()
    {
        return Ok(());
    }
    // A consumer of this stream may have created it between our update (not found) and our
    // create (services start concurrently); now it exists, the update applies our settings.
    jetstream
        .create_or_update_stream(config)
        .await
        .map_err(|error| {
            ProvisionError::with_detail(ProvisionErrorKind::Stream, format!("{name}: {error}"))
        })?;
    Ok(())
}

/// Returns the stream, creating it with these settings only if it does not exist yet.
///
/// Used for streams another service owns: its owner's settings win.
pub async fn existing_or_new_stream(
    jetstream: &jetstream::Context,
    settings: &StreamSettings,
    name: &str,
    subjects: Vec<String>,
    description: &str,
) -> Result<stream::Stream, ProvisionError> {
    existing_or_created(jetstream, settings.config(name, subjects, description)).await
}

/// Returns the stream named in `config`, creating it with `config` only if it does not exist.
/// Needs only the rights to read and create the stream, not to update it.
pub async fn existing_or_created(
    jetstream: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, ProvisionError> {
    let name = config.name.clone();
    match jetstream.get_or_create_stream(config).await {
        Ok(stream) => Ok(stream),
        // Another process may have created it between our look and our create (services start
        // concurrently): use theirs.
        Err(error) => jetstream.get_stream(&name).await.map_err(|_| {
            ProvisionError::with_detail(ProvisionErrorKind::Stream, format!("{name}: {error}"))
        }),
    }
}
