//! Creating and updating streams, idempotently, from code at start-up.

use std::time::Duration;

use async_nats::jetstream::context::{CreateStreamError, CreateStreamErrorKind};
use async_nats::jetstream::{self, stream};
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::error::{Error, error_kind};

/// How long provisioning keeps asking a server that answers too late. JetStream's own request
/// timeout is a few seconds; a server that syncs every write to a busy disk, or that is still
/// recovering its streams after a restart, can take longer than that for one request, and
/// start-up should wait for it rather than fail.
pub const PATIENCE: Duration = Duration::from_secs(90);

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
    let create_or_update = || {
        patiently(name, is_create_timeout, || {
            jetstream.create_or_update_stream(config.clone())
        })
    };
    let failed = |error: CreateStreamError| {
        ProvisionError::with_detail(ProvisionErrorKind::Stream, format!("{name}: {error}"))
    };
    match create_or_update().await {
        Ok(_) => Ok(()),
        // Patience is spent: asking once more would only wait as long again.
        Err(error) if is_create_timeout(&error) => Err(failed(error)),
        // A consumer of this stream may have created it between our update (not found) and our
        // create (services start concurrently); now it exists, the update applies our settings.
        Err(_) => create_or_update().await.map(drop).map_err(failed),
    }
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
    let created = patiently(&name, is_create_timeout, || {
        jetstream.get_or_create_stream(config.clone())
    });
    match created.await {
        Ok(stream) => Ok(stream),
        // Another process may have created it between our look and our create (services start
        // concurrently): use theirs.
        Err(error) => jetstream.get_stream(&name).await.map_err(|_| {
            ProvisionError::with_detail(ProvisionErrorKind::Stream, format!("{name}: {error}"))
        }),
    }
}

fn is_create_timeout(error: &CreateStreamError) -> bool {
    matches!(error.kind(), CreateStreamErrorKind::TimedOut)
}

/// Runs `request` again, with back-off, while it fails by timing out and [`PATIENCE`] lasts.
/// Every request it is used for is idempotent, so a late answer to an earlier try is harmless.
pub(crate) async fn patiently<T, E, F, Fut>(
    what: &str,
    timed_out: impl Fn(&E) -> bool,
    mut request: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let deadline = Instant::now() + PATIENCE;
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let mut attempt = 0;
    loop {
        match request().await {
            Err(error) if timed_out(&error) && Instant::now() < deadline => {
                tracing::warn!(
                    message = "JetStream answered too late; asking again.",
                    %what,
                    attempt,
                    %error,
                );
                tokio::time::sleep(backoff.delay(attempt)).await;
                attempt += 1;
            }
            outcome => return outcome,
        }
    }
}
