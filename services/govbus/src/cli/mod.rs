//! The operators' commands against a running stack. They read the console's HTTP API, print
//! tables for people or JSON (`--json`) for scripts, and exit with a code scripts can test.

pub mod applications;
pub mod client;
mod render;

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use futures_util::StreamExt as _;
use govbus_kit::audit::Head;
use serde::Serialize;

use crate::api::{EventFilter, Page, SubjectRequest, TraceQuery, VerifyRequest};
pub use client::{ClientError, ConsoleClient};

/// Exit codes, documented in `docs/operating.md`.
pub mod exit {
    /// Done.
    pub const OK: u8 = 0;
    /// Failed: the stack is unreachable, or it refused.
    pub const FAILED: u8 = 1;
    /// A service is not healthy.
    pub const UNHEALTHY: u8 = 3;
    /// What was asked for does not exist.
    pub const NOT_FOUND: u8 = 4;
    /// The processing log failed verification: entries were altered, removed or reordered.
    pub const TAMPERED: u8 = 5;
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The console could not be asked, or refused.
    #[error(transparent)]
    Console(#[from] ClientError),
    /// A heads file cannot be read.
    #[error("reading {path}: {source}")]
    ReadHeads {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A heads file does not hold heads.
    #[error("{path} is not a heads file: {source}")]
    NotHeads {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The heads file cannot be written.
    #[error("writing {path}: {source}")]
    WriteHeads {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A question needs a terminal to be answered on.
    #[error("{0} Refusing without a terminal to ask on; pass --yes to confirm")]
    NoTerminal(String),
    /// The stack ended the event stream.
    #[error("the stack closed the event stream (it is stopping)")]
    StreamClosed,
    /// Standard output or input failed.
    #[error("the terminal: {0}")]
    Terminal(#[from] std::io::Error),
    /// An answer could not be printed as JSON.
    #[error("printing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl CliError {
    /// The exit code: 4 when the console says what was asked for does not exist, 1 otherwise.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Console(error) if error.status() == Some(404) => ExitCode::from(exit::NOT_FOUND),
            _ => ExitCode::from(exit::FAILED),
        }
    }
}

type CliResult = Result<ExitCode, CliError>;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Tables.
    Human,
    /// JSON documents (one per line when streaming).
    Json,
}

impl Output {
    /// Prints `answer` as JSON, or as `render` turns it into text.
    fn print<T: Serialize>(
        self,
        answer: &T,
        render: impl FnOnce(&T) -> String,
    ) -> Result<(), CliError> {
        match self {
            Self::Json => {
                let mut stdout = std::io::stdout().lock();
                serde_json::to_writer_pretty(&mut stdout, answer)?;
                writeln!(stdout)?;
                Ok(())
            }
            Self::Human => say(&render(answer)),
        }
    }
}

fn say(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")?;
    Ok(())
}

/// `govbus services`: each service's health. Exit 3 if any is not serving.
pub async fn services(client: &ConsoleClient, output: Output) -> CliResult {
    let overview = client.overview().await?;
    output.print(&overview, render::services)?;
    let healthy = overview.services.iter().all(|service| service.healthy);
    Ok(ExitCode::from(if healthy {
        exit::OK
    } else {
        exit::UNHEALTHY
    }))
}

/// `govbus streams`: streams, consumers, pending and lag.
pub async fn streams(client: &ConsoleClient, output: Output) -> CliResult {
    output.print(&client.streams().await?, |streams| render::streams(streams))?;
    Ok(ExitCode::from(exit::OK))
}

/// `govbus tail`: the last `history` events, then new ones as they are published, until
/// interrupted (or only the history with `follow == false`).
pub async fn tail(
    client: &ConsoleClient,
    output: Output,
    filter: EventFilter,
    history: usize,
    follow: bool,
) -> CliResult {
    let show = |event: &crate::api::EventView| match output {
        Output::Json => say(&serde_json::to_string(event)?),
        Output::Human => say(&render::event_line(event)),
    };
    if history > 0 {
        let recent = client
            .events(&EventFilter {
                limit: Some(history),
                ..filter.clone()
            })
            .await?;
        for event in recent.iter().rev() {
            show(event)?;
        }
    }
    if !follow {
        return Ok(ExitCode::from(exit::OK));
    }
    let live = client.live_events(&filter).await?;
    let mut live = std::pin::pin!(live);
    while let Some(event) = live.next().await {
        show(&event?)?;
    }
    Err(CliError::StreamClosed)
}

/// `govbus deadletters list`.
pub async fn dead_letters(client: &ConsoleClient, output: Output) -> CliResult {
    let list = client
        .dead_letters(&Page {
            from: None,
            limit: Some(1_000),
        })
        .await?;
    output.print(&list, render::dead_letters)?;
    Ok(ExitCode::from(exit::OK))
}

/// `govbus deadletters show <sequence>`.
pub async fn dead_letter(client: &ConsoleClient, output: Output, sequence: u64) -> CliResult {
    output.print(&client.dead_letter(sequence).await?, render::dead_letter)?;
    Ok(ExitCode::from(exit::OK))
}

/// `govbus deadletters replay <sequence>|--all`, asking first unless `yes`.
pub async fn replay(
    client: &ConsoleClient,
    output: Output,
    sequence: Option<u64>,
    yes: bool,
) -> CliResult {
    let question = match sequence {
        Some(sequence) => {
            let letter = client.dead_letter(sequence).await?;
            format!(
                "Replay dead letter {sequence} ({}) to consumer {}?",
                letter
                    .event
                    .event_type
                    .as_deref()
                    .unwrap_or("unreadable event"),
                letter.consumer
            )
        }
        None => {
            let count = client
                .dead_letters(&Page {
                    from: None,
                    limit: Some(1),
                })
                .await?
                .count;
            if count == 0 {
                say("No dead letters.")?;
                return Ok(ExitCode::from(exit::OK));
            }
            format!("Replay all {count} dead letters to their consumers?")
        }
    };
    if !yes && !confirm(&question)? {
        say("Nothing replayed.")?;
        return Ok(ExitCode::from(exit::FAILED));
    }
    let replayed = match sequence {
        Some(sequence) => client.replay(sequence).await?,
        None => client.replay_all().await?,
    };
    output.print(&replayed, |replayed| {
        format!("Replayed {}.", replayed.replayed)
    })?;
    Ok(ExitCode::from(exit::OK))
}

fn confirm(question: &str) -> Result<bool, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::NoTerminal(question.to_owned()));
    }
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{question} [y/N] ")?;
    stdout.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "ya"))
}

/// `govbus traces`: recent traces.
pub async fn traces(client: &ConsoleClient, output: Output, limit: usize) -> CliResult {
    let traces = client.traces(&TraceQuery { limit: Some(limit) }).await?;
    output.print(&traces, |traces| render::traces(traces))?;
    Ok(ExitCode::from(exit::OK))
}

/// `govbus trace <id>`: one trace as a tree with timings.
pub async fn trace(client: &ConsoleClient, output: Output, trace_id: &str) -> CliResult {
    output.print(&client.trace(trace_id).await?, |spans| {
        render::trace_tree(spans)
    })?;
    Ok(ExitCode::from(exit::OK))
}

/// `govbus audit verify`: checks every chain of the processing log. With `heads` (the JSON a
/// previous `--save-heads` wrote), also that no chain lost its end since. Exit 5 if the log is
/// not intact.
pub async fn audit_verify(
    client: &ConsoleClient,
    output: Output,
    heads: Option<&Path>,
    save_heads: Option<&Path>,
) -> CliResult {
    let earlier: Vec<Head> = match heads {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| CliError::ReadHeads {
                path: path.to_owned(),
                source,
            })?;
            serde_json::from_str(&text).map_err(|source| CliError::NotHeads {
                path: path.to_owned(),
                source,
            })?
        }
        None => Vec::new(),
    };
    let verified = client.verify_log(&VerifyRequest { heads: earlier }).await?;
    if let Some(path) = save_heads {
        let heads: Vec<&Head> = verified
            .report
            .writers
            .iter()
            .map(|writer| &writer.head)
            .collect();
        std::fs::write(path, serde_json::to_vec_pretty(&heads)?).map_err(|source| {
            CliError::WriteHeads {
                path: path.to_owned(),
                source,
            }
        })?;
    }
    output.print(&verified, render::audit_report)?;
    Ok(ExitCode::from(if verified.intact {
        exit::OK
    } else {
        exit::TAMPERED
    }))
}

/// `govbus audit subject <NIK>`: every recorded processing of one person's data.
pub async fn audit_subject(client: &ConsoleClient, output: Output, nik: &str) -> CliResult {
    let history = client
        .subject_history(&SubjectRequest {
            nik: nik.to_owned(),
        })
        .await?;
    output.print(&history, render::audit_history)?;
    Ok(ExitCode::from(exit::OK))
}
