//! The operators' commands against a running stack. They read the console's HTTP API, print
//! tables for people or JSON (`--json`) for scripts, and exit with a code scripts can test.

pub mod client;
mod render;

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use serde_json::Value;

pub use client::{ApiFailure, ConsoleClient};

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

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Tables.
    Human,
    /// JSON documents (one per line when streaming).
    Json,
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut stdout, value)?;
    writeln!(stdout)?;
    Ok(())
}

fn say(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{text}")?;
    Ok(())
}

/// The exit code for an error: 4 for a 404 from the API, 1 otherwise.
pub fn exit_code_of(error: &anyhow::Error) -> ExitCode {
    match error.downcast_ref::<ApiFailure>() {
        Some(failure) if failure.status == 404 => ExitCode::from(exit::NOT_FOUND),
        _ => ExitCode::from(exit::FAILED),
    }
}

/// `govbus services`: each service's health. Exit 3 if any is not serving.
pub async fn services(client: &ConsoleClient, output: Output) -> anyhow::Result<ExitCode> {
    let overview: Value = client.get("/api/overview").await?;
    let services = overview["services"].as_array().cloned().unwrap_or_default();
    let healthy = services.iter().all(|service| service["healthy"] == true);
    match output {
        Output::Json => print_json(&overview)?,
        Output::Human => say(&render::services(&overview))?,
    }
    Ok(ExitCode::from(if healthy {
        exit::OK
    } else {
        exit::UNHEALTHY
    }))
}

/// `govbus streams`: streams, consumers, pending and lag.
pub async fn streams(client: &ConsoleClient, output: Output) -> anyhow::Result<ExitCode> {
    let streams: Value = client.get("/api/streams").await?;
    match output {
        Output::Json => print_json(&streams)?,
        Output::Human => say(&render::streams(&streams))?,
    }
    Ok(ExitCode::from(exit::OK))
}

/// `govbus tail`: the last `history` events, then new ones as they are published, until
/// interrupted (or only the history with `follow == false`).
pub async fn tail(
    client: &ConsoleClient,
    output: Output,
    service: Option<&str>,
    event_type: Option<&str>,
    history: usize,
    follow: bool,
) -> anyhow::Result<ExitCode> {
    let mut query = Vec::new();
    if let Some(service) = service {
        query.push(format!("service={}", encode(service)));
    }
    if let Some(event_type) = event_type {
        query.push(format!("type={}", encode(event_type)));
    }
    let filter = query.join("&");
    let show = |event: &Value| -> anyhow::Result<()> {
        match output {
            Output::Json => say(&serde_json::to_string(event)?),
            Output::Human => say(&render::event_line(event)),
        }
    };
    if history > 0 {
        let recent: Vec<Value> = client
            .get(&format!("/api/events?limit={history}&{filter}"))
            .await?;
        for event in recent.iter().rev() {
            show(event)?;
        }
    }
    if !follow {
        return Ok(ExitCode::from(exit::OK));
    }
    let body = client.stream(&format!("/api/events/live?{filter}")).await?;
    let mut body = std::pin::pin!(body);
    let mut buffer = String::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("the event stream broke off")?;
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            for line in frame.lines() {
                if let Some(data) = line.strip_prefix("data:")
                    && let Ok(event) = serde_json::from_str::<Value>(data.trim_start())
                {
                    show(&event)?;
                }
            }
        }
    }
    bail!("the stack closed the event stream (it is stopping)")
}

/// `govbus deadletters list`.
pub async fn dead_letters(client: &ConsoleClient, output: Output) -> anyhow::Result<ExitCode> {
    let list: Value = client.get("/api/deadletters?limit=1000").await?;
    match output {
        Output::Json => print_json(&list)?,
        Output::Human => say(&render::dead_letters(&list))?,
    }
    Ok(ExitCode::from(exit::OK))
}

/// `govbus deadletters show <sequence>`.
pub async fn dead_letter(
    client: &ConsoleClient,
    output: Output,
    sequence: u64,
) -> anyhow::Result<ExitCode> {
    let letter: Value = client.get(&format!("/api/deadletters/{sequence}")).await?;
    match output {
        Output::Json => print_json(&letter)?,
        Output::Human => say(&render::dead_letter(&letter))?,
    }
    Ok(ExitCode::from(exit::OK))
}

/// `govbus deadletters replay <sequence>|--all`, asking first unless `yes`.
pub async fn replay(
    client: &ConsoleClient,
    output: Output,
    sequence: Option<u64>,
    yes: bool,
) -> anyhow::Result<ExitCode> {
    let question = match sequence {
        Some(sequence) => {
            let letter: Value = client.get(&format!("/api/deadletters/{sequence}")).await?;
            format!(
                "Replay dead letter {sequence} ({}) to consumer {}?",
                letter["event"]["event_type"]
                    .as_str()
                    .unwrap_or("unreadable event"),
                letter["consumer"].as_str().unwrap_or("?")
            )
        }
        None => {
            let list: Value = client.get("/api/deadletters?limit=1").await?;
            let count = list["count"].as_u64().unwrap_or(0);
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
    let path = match sequence {
        Some(sequence) => format!("/api/deadletters/{sequence}/replay"),
        None => "/api/deadletters/replay-all".to_owned(),
    };
    let replayed: Value = client.post(&path).await?;
    match output {
        Output::Json => print_json(&replayed)?,
        Output::Human => say(&format!("Replayed {}.", replayed["replayed"]))?,
    }
    Ok(ExitCode::from(exit::OK))
}

fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("{question} Refusing without a terminal to ask on; pass --yes to confirm");
    }
    let mut stdout = std::io::stdout().lock();
    write!(stdout, "{question} [y/N] ")?;
    stdout.flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "ya"))
}

/// `govbus traces`: recent traces.
pub async fn traces(
    client: &ConsoleClient,
    output: Output,
    limit: usize,
) -> anyhow::Result<ExitCode> {
    let traces: Value = client.get(&format!("/api/traces?limit={limit}")).await?;
    match output {
        Output::Json => print_json(&traces)?,
        Output::Human => say(&render::traces(&traces))?,
    }
    Ok(ExitCode::from(exit::OK))
}

/// `govbus trace <id>`: one trace as a tree with timings.
pub async fn trace(
    client: &ConsoleClient,
    output: Output,
    trace_id: &str,
) -> anyhow::Result<ExitCode> {
    let spans: Value = client
        .get(&format!("/api/traces/{}", encode(trace_id)))
        .await?;
    match output {
        Output::Json => print_json(&spans)?,
        Output::Human => say(&render::trace_tree(&spans))?,
    }
    Ok(ExitCode::from(exit::OK))
}

fn encode(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `govbus audit verify`: checks every chain of the processing log. With `heads` (the JSON a
/// previous `--save-heads` wrote), also that no chain lost its end since. Exit 5 if the log is
/// not intact.
pub async fn audit_verify(
    client: &ConsoleClient,
    output: Output,
    heads: Option<&std::path::Path>,
    save_heads: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let earlier: Value = match heads {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not a heads file", path.display()))?
        }
        None => Value::Array(Vec::new()),
    };
    let report: Value = client
        .post_json(
            "/api/audit/verify",
            &serde_json::json!({ "heads": earlier }),
        )
        .await?;
    let intact = report["intact"] == true;
    if let Some(path) = save_heads {
        let heads: Vec<Value> = report["writers"]
            .as_array()
            .map(|writers| {
                writers
                    .iter()
                    .map(|writer| writer["head"].clone())
                    .collect()
            })
            .unwrap_or_default();
        std::fs::write(path, serde_json::to_vec_pretty(&heads)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    match output {
        Output::Json => print_json(&report)?,
        Output::Human => say(&render::audit_report(&report))?,
    }
    Ok(ExitCode::from(if intact {
        exit::OK
    } else {
        exit::TAMPERED
    }))
}

/// `govbus audit subject <NIK>`: every recorded processing of one person's data.
pub async fn audit_subject(
    client: &ConsoleClient,
    output: Output,
    nik: &str,
) -> anyhow::Result<ExitCode> {
    let history: Value = client
        .post_json("/api/audit/subject", &serde_json::json!({ "nik": nik }))
        .await?;
    match output {
        Output::Json => print_json(&history)?,
        Output::Human => say(&render::audit_history(&history))?,
    }
    Ok(ExitCode::from(exit::OK))
}
