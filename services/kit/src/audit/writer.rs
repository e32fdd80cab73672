//! Appending entries: the handle services record with, and the task that chains, signs and
//! appends them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use govbus_bus::{Bus, DeliveryObserver, HandledDelivery};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::AuditError;
use super::entry::{Block, Entry, EntryKind, GENESIS};
use super::signing::BlockSigner;
use super::subject::{DataSubject, SubjectKey};
use super::timestamp::Tsa;

/// The most entries in one block: a block stays far below the server's payload limit.
const MAX_BLOCK_ENTRIES: usize = 256;
/// How long a block waits for more entries after its first: an entry is stored this much later
/// at most, and a busy service signs a few blocks a second instead of hundreds.
const BLOCK_WINDOW: Duration = Duration::from_millis(50);
/// How long entries still queued at shutdown are retried before they are reported lost.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Records processings of personal data into the service's chain of the processing log.
///
/// Recording never blocks and never fails: entries are queued and appended in order by the
/// [`ProcessingLogWriter`] task, which retries until JetStream stores them.
#[derive(Debug, Clone)]
pub struct ProcessingLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writer: String,
    key: SubjectKey,
    queue: mpsc::UnboundedSender<Pending>,
    queued: Arc<AtomicU64>,
}

/// An entry before it has its place in the chain. What the call path records is shared or
/// kept raw (the keyed hash as bytes, the trace id as a number); the chain's task writes it out.
#[derive(Debug)]
struct Pending {
    at: OffsetDateTime,
    kind: EntryKind,
    requester: Arc<str>,
    via: Option<Arc<str>>,
    action: Arc<str>,
    purpose: Arc<str>,
    subject: [u8; 32],
    trace_id: Option<opentelemetry::trace::TraceId>,
}

/// What one processing was, for [`ProcessingLog::record`].
#[derive(Debug, Clone, Copy)]
pub struct Processing<'a> {
    /// A call or a delivery.
    pub kind: EntryKind,
    /// Who asked.
    pub requester: &'a Arc<str>,
    /// The intermediary the request came through, if any.
    pub via: Option<&'a Arc<str>>,
    /// The method, or the event type and consumer.
    pub action: &'a Arc<str>,
    /// Why.
    pub purpose: &'a Arc<str>,
    /// The person.
    pub subject: DataSubject<'a>,
    /// The W3C trace id, if any.
    pub trace_id: Option<opentelemetry::trace::TraceId>,
}

impl ProcessingLog {
    /// Provisions the processing-log stream if needed, reads the head of the signer's chain and
    /// starts appending.
    pub async fn start(
        bus: &Bus,
        signer: BlockSigner,
        key: SubjectKey,
        timestamps: Option<Tsa>,
    ) -> Result<(Self, ProcessingLogWriter), AuditError> {
        let topology = bus.topology();
        let stream_name = topology.audit_stream();
        let subject = topology.audit_subject(signer.writer());
        let stream = ensure_stream(
            bus.jetstream(),
            &stream_name,
            topology.audit_subjects(),
            bus.stream_settings().replicas,
        )
        .await?;
        let head = read_head(&stream, &subject).await?;
        let (queue, receiver) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let writer = signer.writer().to_owned();
        let chain = Chain {
            jetstream: bus.jetstream().clone(),
            stream,
            subject,
            signer,
            timestamps,
            stamps_paused_until: None,
            next_seq: head.next_seq,
            prev: head.prev,
            last_stream_seq: head.stream_seq,
            queued: queued.clone(),
            pending_gauge: metrics::gauge!("govbus_audit_pending", "service" => writer.clone()),
        };
        tracing::info!(
            message = "Processing log open.",
            writer = %writer,
            next_entry = chain.next_seq,
        );
        let task = tokio::spawn(chain.run(receiver, stop.clone()));
        Ok((
            Self {
                inner: Arc::new(Inner {
                    writer,
                    key,
                    queue,
                    queued,
                }),
            },
            ProcessingLogWriter { stop, task },
        ))
    }

    /// The service whose chain this is.
    pub fn writer(&self) -> &str {
        &self.inner.writer
    }

    /// Entries recorded but not yet stored on the stream.
    pub fn pending(&self) -> u64 {
        self.inner.queued.load(Ordering::Relaxed)
    }

    /// Records one processing.
    pub fn record(&self, processing: Processing<'_>) {
        let pending = Pending {
            at: OffsetDateTime::now_utc(),
            kind: processing.kind,
            requester: Arc::clone(processing.requester),
            via: processing.via.map(Arc::clone),
            action: Arc::clone(processing.action),
            purpose: Arc::clone(processing.purpose),
            subject: self.inner.key.digest_bytes(processing.subject),
            trace_id: processing.trace_id,
        };
        self.inner.queued.fetch_add(1, Ordering::Relaxed);
        if self.inner.queue.send(pending).is_err() {
            self.inner.queued.fetch_sub(1, Ordering::Relaxed);
            // Only after shutdown: the service is no longer processing anything.
            tracing::error!(
                message = "Processing-log entry recorded after the log was closed; not written.",
                writer = %self.inner.writer,
                action = &**processing.action,
            );
        }
    }
}

impl DeliveryObserver for ProcessingLog {
    fn handled(&self, delivery: &HandledDelivery<'_>) {
        self.record(Processing {
            kind: EntryKind::Delivery,
            requester: &Arc::from(delivery.publisher),
            via: None,
            action: &Arc::from(format!("{} via {}", delivery.event_type, delivery.consumer)),
            purpose: &Arc::from(delivery.purpose),
            subject: DataSubject::Citizen(delivery.data_subject),
            trace_id: delivery
                .trace_id
                .and_then(|hex| opentelemetry::trace::TraceId::from_hex(hex).ok()),
        });
    }
}

/// The task appending a [`ProcessingLog`]'s entries.
#[derive(Debug)]
pub struct ProcessingLogWriter {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl ProcessingLogWriter {
    /// Appends what is queued (retrying for a while if JetStream is unreachable) and stops.
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Err(error) = self.task.await {
            tracing::error!(message = "Processing-log task failed.", %error);
        }
    }
}

async fn ensure_stream(
    jetstream: &jetstream::Context,
    name: &str,
    subjects: String,
    replicas: usize,
) -> Result<jetstream::stream::Stream, AuditError> {
    let config = stream::Config {
        name: name.to_owned(),
        description: Some(
            "govbus processing log: one signed hash chain of entries per service".to_owned(),
        ),
        subjects: vec![subjects],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        num_replicas: replicas,
        // Entries are evidence: kept until an operator archives the stream deliberately.
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        ..Default::default()
    };
    govbus_bus::provision::existing_or_created(jetstream, config)
        .await
        .map_err(|error| AuditError::Stream(error.to_string()))
}

/// Where a chain stands on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    next_seq: u64,
    prev: String,
    stream_seq: u64,
}

async fn read_head(stream: &jetstream::stream::Stream, subject: &str) -> Result<Head, AuditError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(message) => {
            let last = serde_json::from_slice::<Block>(&message.payload)
                .ok()
                .and_then(|block| block.entries.last().cloned());
            match last {
                Some(entry) => Ok(Head {
                    next_seq: entry.seq + 1,
                    prev: entry.hash,
                    stream_seq: message.sequence,
                }),
                None => Err(AuditError::Invalid(format!(
                    "the last block on {subject} (stream sequence {}) is unreadable; \
                     run `govbus audit verify` and repair the log before starting",
                    message.sequence
                ))),
            }
        }
        Err(error)
            if error.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
        {
            Ok(Head {
                next_seq: 1,
                prev: GENESIS.to_owned(),
                stream_seq: 0,
            })
        }
        Err(error) => Err(AuditError::Stream(format!("reading {subject}: {error}"))),
    }
}

/// How long a block waits for its timestamp at most (each attempt, all attempts together).
const STAMP_TIMEOUT: Duration = Duration::from_secs(2);

/// After the authority failed a block, how long later blocks go unstamped before it is asked
/// again: an authority that is down must not slow every block by [`STAMP_TIMEOUT`].
const STAMP_PAUSE: Duration = Duration::from_secs(60);

/// A timestamp token for `block` (base64), or empty, reported, when the authority does not
/// answer within [`STAMP_TIMEOUT`], while it is paused after a failure, or once the log is
/// stopping: the log goes on without trusted time rather than holding processings back, and
/// `audit verify` shows the block as untimestamped. (The chain links every block to the ones
/// before, so a later token also vouches for the blocks written before it.)
async fn stamp(
    tsa: &Tsa,
    paused_until: &mut Option<tokio::time::Instant>,
    block: &Block,
    stop: &CancellationToken,
) -> String {
    use base64::Engine as _;
    let now = tokio::time::Instant::now();
    let failure = if stop.is_cancelled() {
        "the log is stopping".to_owned()
    } else if paused_until.is_some_and(|until| now < until) {
        "the authority failed a moment ago".to_owned()
    } else {
        let data = block.timestamped_bytes();
        let asked = tokio::select! {
            stamped = tokio::time::timeout(STAMP_TIMEOUT, tsa.stamp(&data)) => stamped,
            () = stop.cancelled() => return String::new(),
        };
        match asked {
            Ok(Ok(token)) => {
                *paused_until = None;
                return base64::engine::general_purpose::STANDARD.encode(token);
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {} s", STAMP_TIMEOUT.as_secs()),
        }
    };
    if paused_until.is_none_or(|until| now >= until) {
        // Said once per pause, not for every block.
        tracing::error!(
            message = "Processing-log blocks stored without a timestamp: the time-stamping authority did not answer; asked again in a minute.",
            writer = %block.writer,
            %failure,
        );
        *paused_until = Some(now + STAMP_PAUSE);
    }
    metrics::counter!("govbus_audit_untimestamped_total", "service" => block.writer.clone())
        .increment(1);
    String::new()
}

/// The writer's end of its chain.
struct Chain {
    jetstream: jetstream::Context,
    stream: jetstream::stream::Stream,
    subject: String,
    signer: BlockSigner,
    timestamps: Option<Tsa>,
    stamps_paused_until: Option<tokio::time::Instant>,
    next_seq: u64,
    prev: String,
    last_stream_seq: u64,
    queued: Arc<AtomicU64>,
    pending_gauge: metrics::Gauge,
}

enum Append {
    Stored(u64),
    WrongLastSequence,
    Failed(String),
}

impl Chain {
    async fn run(
        mut self,
        mut receiver: mpsc::UnboundedReceiver<Pending>,
        stop: CancellationToken,
    ) {
        loop {
            let first = tokio::select! {
                biased;
                pending = receiver.recv() => match pending {
                    Some(pending) => pending,
                    None => break,
                },
                () = stop.cancelled() => break,
            };
            // A block gathers what arrives within a short while, so that a busy service signs
            // and appends a block per BLOCK_WINDOW rather than one per round trip.
            let mut batch = drain(first, &mut receiver);
            let window = tokio::time::sleep(BLOCK_WINDOW);
            tokio::pin!(window);
            while batch.len() < MAX_BLOCK_ENTRIES {
                tokio::select! {
                    biased;
                    pending = receiver.recv() => match pending {
                        Some(pending) => batch.push(pending),
                        None => break,
                    },
                    () = &mut window => break,
                    () = stop.cancelled() => break,
                }
            }
            self.append_until_stored(batch, &stop).await;
        }
        // Shutting down: whatever is still queued gets a bounded time to be stored.
        receiver.close();
        while let Ok(first) = receiver.try_recv() {
            let batch = drain(first, &mut receiver);
            self.append_until_stored(batch, &stop).await;
        }
    }

    /// Appends `batch` as one block, retrying until it is stored; once the log is stopping, for
    /// [`SHUTDOWN_GRACE`] at most (then the entries are reported lost).
    async fn append_until_stored(&mut self, batch: Vec<Pending>, stop: &CancellationToken) {
        let count = batch.len() as u64;
        let mut block = match self.block(batch) {
            Ok(block) => block,
            Err(error) => {
                self.lost(count, &error.to_string());
                return;
            }
        };
        if let Some(tsa) = &self.timestamps {
            block.timestamp = stamp(tsa, &mut self.stamps_paused_until, &block, stop).await;
        }
        let mut delay = Duration::from_millis(100);
        let mut deadline = None;
        loop {
            // Set here rather than on every record, which is on the callers' hot path; a
            // backlog (JetStream unreachable) shows on every retry.
            self.pending_gauge
                .set(self.queued.load(Ordering::Relaxed) as f64);
            match self.append(&block).await {
                Append::Stored(stream_seq) => {
                    self.stored(&block, stream_seq);
                    return;
                }
                Append::WrongLastSequence => match self.reconcile(&block).await {
                    Ok(true) => return,
                    Ok(false) => {}
                    Err(error) => tracing::warn!(
                        message = "Processing-log head not readable; retrying.",
                        %error,
                    ),
                },
                Append::Failed(error) => tracing::warn!(
                    message = "Processing-log block not stored; retrying.",
                    %error,
                    entries = count,
                ),
            }
            if stop.is_cancelled() {
                let now = tokio::time::Instant::now();
                let deadline = *deadline.get_or_insert(now + SHUTDOWN_GRACE);
                if now + delay > deadline {
                    self.lost(count, "JetStream did not store the block before shutdown");
                    return;
                }
                tokio::time::sleep(delay).await;
            } else {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => {}
                }
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Gives `batch` its places in the chain and signs it.
    fn block(&self, batch: Vec<Pending>) -> Result<Block, AuditError> {
        let mut prev = self.prev.clone();
        let mut entries = Vec::with_capacity(batch.len());
        for (offset, pending) in batch.into_iter().enumerate() {
            let mut entry = Entry {
                seq: self.next_seq + offset as u64,
                at: govbus_bus::envelope::format_time(pending.at),
                writer: self.signer.writer().to_owned(),
                kind: pending.kind,
                requester: pending.requester.to_string(),
                via: pending
                    .via
                    .as_deref()
                    .map(str::to_owned)
                    .unwrap_or_default(),
                action: pending.action.to_string(),
                purpose: pending.purpose.to_string(),
                subject: hex::encode(pending.subject),
                trace_id: pending
                    .trace_id
                    .map(|trace_id| trace_id.to_string())
                    .unwrap_or_default(),
                prev,
                hash: String::new(),
            };
            entry.hash = entry.computed_hash();
            prev = entry.hash.clone();
            entries.push(entry);
        }
        let mut block = Block {
            writer: self.signer.writer().to_owned(),
            entries,
            certificate: String::new(),
            signature_scheme: String::new(),
            signature: String::new(),
            timestamp: String::new(),
        };
        self.signer.sign(&mut block)?;
        Ok(block)
    }

    async fn append(&self, block: &Block) -> Append {
        let payload = match serde_json::to_vec(block) {
            Ok(payload) => payload,
            Err(error) => return Append::Failed(error.to_string()),
        };
        let first = block.entries.first().map_or(0, |entry| entry.seq);
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(format!("{}:{first}", block.writer))
            .expected_last_subject_sequence(self.last_stream_seq);
        let acknowledged = match self
            .jetstream
            .send_publish(self.subject.clone(), publish)
            .await
        {
            Ok(ack) => ack.await,
            Err(error) => return Append::Failed(error.to_string()),
        };
        match acknowledged {
            Ok(ack) => Append::Stored(ack.sequence),
            Err(error) if error.kind() == PublishErrorKind::WrongLastSequence => {
                Append::WrongLastSequence
            }
            Err(error) => Append::Failed(error.to_string()),
        }
    }

    /// After a refused conditional append: is `block` already stored (an ack was lost)? If the
    /// stream's head is another, someone else wrote to or removed from this chain.
    async fn reconcile(&mut self, block: &Block) -> Result<bool, AuditError> {
        let head = read_head(&self.stream, &self.subject).await?;
        let last = block.entries.last();
        if last.is_some_and(|last| head.next_seq == last.seq + 1 && head.prev == last.hash) {
            self.stored(block, head.stream_seq);
            return Ok(true);
        }
        tracing::error!(
            message = "The processing-log chain on the stream is not this writer's: entries were \
                       added or removed by someone else. Appending after them; `govbus audit \
                       verify` reports the break.",
            writer = %self.signer.writer(),
            expected_next_entry = self.next_seq,
            stream_next_entry = head.next_seq,
        );
        self.last_stream_seq = head.stream_seq;
        Ok(false)
    }

    fn stored(&mut self, block: &Block, stream_seq: u64) {
        let count = block.entries.len() as u64;
        if let Some(last) = block.entries.last() {
            self.next_seq = last.seq + 1;
            self.prev.clone_from(&last.hash);
        }
        self.last_stream_seq = stream_seq;
        let left = self
            .queued
            .fetch_sub(count, Ordering::Relaxed)
            .saturating_sub(count);
        let writer = self.signer.writer().to_owned();
        metrics::counter!("govbus_audit_entries_total", "service" => writer.clone())
            .increment(count);
        metrics::gauge!("govbus_audit_pending", "service" => writer).set(left as f64);
    }

    fn lost(&self, count: u64, why: &str) {
        self.queued.fetch_sub(count, Ordering::Relaxed);
        tracing::error!(
            message = "Processing-log entries not written.",
            writer = %self.signer.writer(),
            entries = count,
            reason = why,
        );
        metrics::counter!("govbus_audit_lost_total", "service" => self.signer.writer().to_owned())
            .increment(count);
    }
}

fn drain(first: Pending, receiver: &mut mpsc::UnboundedReceiver<Pending>) -> Vec<Pending> {
    let mut batch = vec![first];
    while batch.len() < MAX_BLOCK_ENTRIES {
        match receiver.try_recv() {
            Ok(pending) => batch.push(pending),
            Err(_) => break,
        }
    }
    batch
}
