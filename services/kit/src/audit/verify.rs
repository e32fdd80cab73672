//! Reading the processing log back: verifying every chain, and one person's history.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures_util::StreamExt as _;
use govbus_bus::Topology;
use serde::{Deserialize, Serialize};

use super::AuditError;
use super::entry::{Block, Entry, GENESIS};
use super::signing::{SignatureProblem, TrustAnchors};

/// How long reading waits for the next stored block before giving up.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One message of the processing-log stream.
#[derive(Debug, Clone)]
pub struct StoredBlock {
    /// Its stream sequence.
    pub stream_sequence: u64,
    /// The subject it was stored on (`<prefix>.audit.<writer>`).
    pub nats_subject: String,
    /// The block, or why it could not be read.
    pub block: Result<Block, String>,
}

/// Where a writer's chain ends: keep these to prove later that nothing was cut off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// The writing service.
    pub writer: String,
    /// Its last entry's sequence number.
    pub seq: u64,
    /// Its last entry's hash.
    pub hash: String,
}

/// What kind of damage verification found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// An entry's fields, or a block's entries, are not what was signed.
    Altered,
    /// Entries are missing from a chain, or the chain ends before a head seen earlier.
    Removed,
    /// Entries are stored out of their chain's order, or twice.
    Reordered,
    /// A block is not signed by the writer's certificate from the deployment's CA.
    Forged,
    /// A stored message is not a block.
    Unreadable,
    /// A block's timestamp token is not valid for it, not from the trusted authority, or out
    /// of time order (earlier than the chain's previous stamp, or before its own entries).
    Timestamp,
}

/// One finding of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// What kind.
    pub kind: ProblemKind,
    /// Whose chain.
    pub writer: String,
    /// The stream message concerned, if one is.
    pub stream_sequence: Option<u64>,
    /// The entry concerned, if one is.
    pub entry: Option<u64>,
    /// What exactly.
    pub detail: String,
}

/// One writer's chain as verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriterSummary {
    /// The writing service.
    pub writer: String,
    /// Its blocks.
    pub blocks: u64,
    /// Its entries.
    pub entries: u64,
    /// Blocks whose timestamp token was checked and holds.
    #[serde(default)]
    pub timestamped: u64,
    /// Blocks without a timestamp token (no authority configured, or none answered).
    #[serde(default)]
    pub untimestamped: u64,
    /// Blocks with a token that was not checked (no authority's certificate configured).
    #[serde(default)]
    pub timestamps_unchecked: u64,
    /// Where its chain ends.
    pub head: Head,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Blocks read.
    pub blocks: u64,
    /// Entries read.
    pub entries: u64,
    /// Each writer's chain.
    pub writers: Vec<WriterSummary>,
    /// Everything wrong; empty for an intact log.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether no problem was found.
    pub fn intact(&self) -> bool {
        self.problems.is_empty()
    }

    /// The chain heads, to keep for a later verification.
    pub fn heads(&self) -> Vec<Head> {
        self.writers
            .iter()
            .map(|writer| writer.head.clone())
            .collect()
    }
}

/// Reads every message of the processing-log stream, in stream order.
pub async fn read_log(
    jetstream: &jetstream::Context,
    topology: &Topology,
) -> Result<Vec<StoredBlock>, AuditError> {
    let name = topology.audit_stream();
    let mut stream = match jetstream.get_stream(&name).await {
        Ok(stream) => stream,
        Err(error) if is_stream_not_found(&error) => return Ok(Vec::new()),
        Err(error) => return Err(AuditError::Stream(format!("{name}: {error}"))),
    };
    let state = stream
        .info()
        .await
        .map_err(|error| AuditError::Stream(format!("{name}: {error}")))?
        .state
        .clone();
    if state.messages == 0 {
        return Ok(Vec::new());
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|error| AuditError::Stream(format!("reading {name}: {error}")))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|error| AuditError::Stream(format!("reading {name}: {error}")))?;
    let writer_prefix = format!("{}.audit.", topology.prefix());
    let mut blocks = Vec::new();
    loop {
        let next = tokio::time::timeout(READ_TIMEOUT, messages.next())
            .await
            .map_err(|_| AuditError::Stream(format!("reading {name}: timed out")))?;
        let Some(message) = next else { break };
        let message =
            message.map_err(|error| AuditError::Stream(format!("reading {name}: {error}")))?;
        let sequence = message
            .info()
            .map_err(|error| AuditError::Stream(format!("reading {name}: {error}")))?
            .stream_sequence;
        let subject = message.subject.to_string();
        let block = serde_json::from_slice::<Block>(&message.payload)
            .map_err(|error| format!("not a processing-log block: {error}"));
        debug_assert!(subject.starts_with(&writer_prefix));
        blocks.push(StoredBlock {
            stream_sequence: sequence,
            nats_subject: subject,
            block,
        });
        if sequence >= state.last_sequence {
            break;
        }
    }
    Ok(blocks)
}

fn is_stream_not_found(error: &jetstream::context::GetStreamError) -> bool {
    matches!(
        error.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(ref inner)
            if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

#[derive(Default)]
struct Chain {
    blocks: u64,
    timestamped: u64,
    untimestamped: u64,
    timestamps_unchecked: u64,
    /// The latest stamp seen, seconds since the epoch.
    last_stamp: u64,
    /// Entries in stream order, with the stream sequence of their block.
    entries: Vec<(u64, Entry)>,
}

/// Checks every chain in `blocks` (as [`read_log`] returns them): signatures, hashes, order,
/// completeness and, for each of `earlier_heads`, that the chain still holds that entry.
pub fn verify(
    blocks: &[StoredBlock],
    topology: &Topology,
    trust: &TrustAnchors,
    earlier_heads: &[Head],
) -> Report {
    let writer_prefix = format!("{}.audit.", topology.prefix());
    let mut problems = Vec::new();
    let mut chains: BTreeMap<String, Chain> = BTreeMap::new();
    let mut entries_read = 0_u64;
    for stored in blocks {
        let writer = stored
            .nats_subject
            .strip_prefix(&writer_prefix)
            .unwrap_or(&stored.nats_subject)
            .to_owned();
        let problem = |kind, entry: Option<u64>, detail: String| Problem {
            kind,
            writer: writer.clone(),
            stream_sequence: Some(stored.stream_sequence),
            entry,
            detail,
        };
        let block = match &stored.block {
            Ok(block) => block,
            Err(reason) => {
                problems.push(problem(ProblemKind::Unreadable, None, reason.clone()));
                continue;
            }
        };
        if block.writer != writer {
            problems.push(problem(
                ProblemKind::Forged,
                None,
                format!("a block of {:?} stored on {writer:?}'s chain", block.writer),
            ));
            continue;
        }
        if block.entries.is_empty() {
            problems.push(problem(
                ProblemKind::Unreadable,
                None,
                "an empty block".to_owned(),
            ));
            continue;
        }
        match trust.check(block) {
            Ok(()) => {}
            Err(SignatureProblem::Mismatch(detail)) => {
                problems.push(problem(ProblemKind::Altered, None, detail));
            }
            Err(SignatureProblem::Untrusted(detail)) => {
                problems.push(problem(ProblemKind::Forged, None, detail));
            }
        }
        let chain = chains.entry(writer.clone()).or_default();
        chain.blocks += 1;
        if let Err(detail) = check_timestamp(block, trust, chain) {
            problems.push(problem(ProblemKind::Timestamp, None, detail));
        }
        for entry in &block.entries {
            entries_read += 1;
            if entry.writer != writer {
                problems.push(problem(
                    ProblemKind::Forged,
                    Some(entry.seq),
                    format!("an entry of {:?} in {writer:?}'s block", entry.writer),
                ));
            }
            if entry.computed_hash() != entry.hash {
                problems.push(problem(
                    ProblemKind::Altered,
                    Some(entry.seq),
                    format!("entry {}'s fields do not match its hash", entry.seq),
                ));
            }
            chain.entries.push((stored.stream_sequence, entry.clone()));
        }
    }
    let mut writers = Vec::new();
    for (writer, chain) in &chains {
        let problem = |kind, stream_sequence, entry, detail| Problem {
            kind,
            writer: writer.clone(),
            stream_sequence,
            entry,
            detail,
        };
        let mut by_seq: BTreeMap<u64, &Entry> = BTreeMap::new();
        let mut highest = 0_u64;
        for (stream_sequence, entry) in &chain.entries {
            if entry.seq <= highest {
                let detail = if by_seq.contains_key(&entry.seq) {
                    format!("entry {} is stored twice", entry.seq)
                } else {
                    format!("entry {} is stored after entry {highest}", entry.seq)
                };
                problems.push(problem(
                    ProblemKind::Reordered,
                    Some(*stream_sequence),
                    Some(entry.seq),
                    detail,
                ));
            }
            highest = highest.max(entry.seq);
            by_seq.entry(entry.seq).or_insert(entry);
        }
        let mut missing_from = None;
        for seq in 1..=highest.saturating_add(1) {
            let present = by_seq.contains_key(&seq) || seq > highest;
            match (present, missing_from) {
                (false, None) => missing_from = Some(seq),
                (true, Some(first)) => {
                    let detail = if first == seq - 1 {
                        format!("entry {first} is missing")
                    } else {
                        format!("entries {first}–{} are missing", seq - 1)
                    };
                    problems.push(problem(ProblemKind::Removed, None, Some(first), detail));
                    missing_from = None;
                }
                _ => {}
            }
        }
        for (seq, entry) in &by_seq {
            let expected = if *seq == 1 {
                Some(GENESIS)
            } else {
                by_seq
                    .get(&(seq - 1))
                    .map(|previous| previous.hash.as_str())
            };
            if expected.is_some_and(|expected| expected != entry.prev) {
                problems.push(problem(
                    ProblemKind::Altered,
                    None,
                    Some(*seq),
                    format!(
                        "entry {seq} does not link to entry {}",
                        seq.saturating_sub(1)
                    ),
                ));
            }
        }
        if let Some((seq, last)) = by_seq.last_key_value() {
            writers.push(WriterSummary {
                writer: writer.clone(),
                blocks: chain.blocks,
                entries: by_seq.len() as u64,
                timestamped: chain.timestamped,
                untimestamped: chain.untimestamped,
                timestamps_unchecked: chain.timestamps_unchecked,
                head: Head {
                    writer: writer.clone(),
                    seq: *seq,
                    hash: last.hash.clone(),
                },
            });
        }
        for earlier in earlier_heads.iter().filter(|head| &head.writer == writer) {
            match by_seq.get(&earlier.seq) {
                Some(entry) if entry.hash == earlier.hash => {}
                Some(_) => problems.push(problem(
                    ProblemKind::Altered,
                    None,
                    Some(earlier.seq),
                    format!(
                        "entry {} differs from the one an earlier verification saw",
                        earlier.seq
                    ),
                )),
                None if earlier.seq > highest => problems.push(problem(
                    ProblemKind::Removed,
                    None,
                    Some(earlier.seq),
                    format!(
                        "the chain ends at entry {highest}, but an earlier verification saw \
                         entry {}: the end was cut off",
                        earlier.seq
                    ),
                )),
                // Already reported as missing.
                None => {}
            }
        }
    }
    for earlier in earlier_heads {
        if !chains.contains_key(&earlier.writer) {
            problems.push(Problem {
                kind: ProblemKind::Removed,
                writer: earlier.writer.clone(),
                stream_sequence: None,
                entry: Some(earlier.seq),
                detail: format!(
                    "the whole chain is gone; an earlier verification saw {} entries",
                    earlier.seq
                ),
            });
        }
    }
    Report {
        blocks: blocks.len() as u64,
        entries: entries_read,
        writers,
        problems,
    }
}

/// How far an entry's own time may be after its block's stamp: the services' clocks and the
/// authority's differ a little.
const CLOCK_TOLERANCE_SECONDS: u64 = 300;

/// How long before its block's stamp an entry may have been written: entries wait for their
/// block while JetStream is unreachable, but a stamp a day after its entries says the block was
/// rewritten and stamped again.
const STAMP_DELAY_SECONDS: u64 = 24 * 3600;

fn rfc3339(seconds: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(i64::try_from(seconds).unwrap_or(i64::MAX))
        .map(govbus_bus::envelope::format_time)
        .unwrap_or_else(|_| seconds.to_string())
}

/// Counts `block`'s timestamp in `chain`; `Err` says what is wrong with it.
fn check_timestamp(block: &Block, trust: &TrustAnchors, chain: &mut Chain) -> Result<(), String> {
    use base64::Engine as _;
    if block.timestamp.is_empty() {
        chain.untimestamped += 1;
        // Once a chain has trusted time, a block without it is a gap in the evidence: written
        // while the authority was unreachable, or its token removed.
        if trust.tsa().is_some() && chain.last_stamp > 0 {
            let first = block.entries.first().map_or(0, |entry| entry.seq);
            return Err(format!(
                "the block from entry {first} has no timestamp, though earlier blocks of the chain \
                 have (written while the authority was unreachable, or its token removed)"
            ));
        }
        return Ok(());
    }
    let Some(tsa) = trust.tsa() else {
        chain.timestamps_unchecked += 1;
        return Ok(());
    };
    let token = base64::engine::general_purpose::STANDARD
        .decode(&block.timestamp)
        .map_err(|error| format!("the timestamp token is not base64: {error}"))?;
    let stamp = tsa
        .check(&token, &block.timestamped_bytes())
        .map_err(|error| error.to_string())?;
    let first = block.entries.first().map_or(0, |entry| entry.seq);
    if stamp.seconds < chain.last_stamp {
        return Err(format!(
            "the block from entry {first} is stamped at {}, before the chain's previous block ({})",
            rfc3339(stamp.seconds),
            rfc3339(chain.last_stamp),
        ));
    }
    chain.last_stamp = stamp.seconds;
    let written: Vec<u64> = block
        .entries
        .iter()
        .filter_map(|entry| {
            time::OffsetDateTime::parse(&entry.at, &time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map(|at| u64::try_from(at.unix_timestamp()).unwrap_or(0))
        .collect();
    if written.iter().max().copied().unwrap_or(0) > stamp.seconds + CLOCK_TOLERANCE_SECONDS {
        return Err(format!(
            "the block from entry {first} holds an entry dated after the authority stamped it"
        ));
    }
    if written
        .iter()
        .min()
        .is_some_and(|earliest| earliest + STAMP_DELAY_SECONDS < stamp.seconds)
    {
        return Err(format!(
            "the block from entry {first} was stamped more than a day after its entries were \
             written (rewritten and stamped again?)"
        ));
    }
    chain.timestamped += 1;
    Ok(())
}

/// The entries about any of `subjects` (keyed hashes), oldest first.
pub fn history(blocks: &[StoredBlock], subjects: &[String]) -> Vec<Entry> {
    let mut entries: Vec<Entry> = blocks
        .iter()
        .filter_map(|stored| stored.block.as_ref().ok())
        .flat_map(|block| block.entries.iter())
        .filter(|entry| subjects.iter().any(|subject| subject == &entry.subject))
        .cloned()
        .collect();
    entries.sort_by(|a, b| {
        (a.at.as_str(), a.writer.as_str(), a.seq).cmp(&(b.at.as_str(), b.writer.as_str(), b.seq))
    });
    entries
}
