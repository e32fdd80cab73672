//! The processing log: a tamper-evident record of every processing of a person's data.
//!
//! UU 27/2022 (PDP) asks a controller to record every processing activity (Pasal 31) and to tell
//! a person how their data was processed (Pasal 32). Each service appends an [`Entry`] for every
//! call it serves and every event delivery it handles that touches a person: who asked, which
//! method or event, for what purpose, which person (as a keyed hash, never the NIK or the
//! reference itself), when, and the trace id.
//!
//! Entries form one hash chain per service ("writer"): each holds its sequence number and the
//! hash of the previous entry, and its own hash covers both. A writer appends its entries in
//! [`Block`]s, signed with the key of its TLS certificate, on its own subject of the processing-log
//! stream (`<prefix>.audit.<service>`), each append conditional on the subject's last stream
//! sequence so two processes cannot fork a chain. The stream denies deletes and purges, and a
//! service may append to its own subject only. [`verify`] checks every chain: altered entries
//! (their hash or their block's signature no longer matches), removed ones (gaps in the
//! sequence), reordered ones, blocks not signed by the writer's certificate from the deployment's
//! CA, and, given heads seen by an earlier verification, truncation.
//!
//! # Layout
//!
//! - [`subject`]: [`SubjectKey`] and [`DataSubject`], the keyed hash of a person.
//! - [`entry`]: [`Entry`] and [`Block`], their hashes and what a block's signature covers.
//! - [`signing`]: [`BlockSigner`] (a service's certificate and key) and [`TrustAnchors`].
//! - [`timestamp`]: RFC 3161 timestamp tokens: asking a TSA ([`Tsa`]), checking a token ([`TsaTrust`]).
//! - [`writer`]: [`ProcessingLog`], the handle services record with, and its appending task.
//! - [`call`]: [`CallContext`] and [`CallAudit`], recording served gRPC calls.
//! - [`verify`]: reading the stream, [`verify`](verify::verify) and a person's [`history`].

pub mod call;
pub mod entry;
pub mod signing;
pub mod subject;
pub mod timestamp;
pub mod verify;
pub mod writer;

pub use call::{CallAudit, CallContext};
pub use entry::{Block, Entry, EntryKind};
pub use signing::{BlockSigner, SignatureProblem, TrustAnchors};
pub use subject::{DataSubject, SubjectKey};
pub use timestamp::{Stamp, TimestampError, Tsa, TsaTrust};
pub use verify::{
    Head, Problem, ProblemKind, Report, StoredBlock, WriterSummary, history, read_log, verify,
};
pub use writer::{Processing, ProcessingLog, ProcessingLogWriter};

/// Why the processing log could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A key or certificate file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A key, certificate or stored block is not usable.
    #[error("{0}")]
    Invalid(String),
    /// JetStream refused or failed.
    #[error("processing-log stream: {0}")]
    Stream(String),
}
