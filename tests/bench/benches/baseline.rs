//! `cargo bench -p govbus-bench [-- --quick] [--only publish,consume,calls,gateway,webhooks,commit,e2e,memory]
//! [--postgres] [--sync-always] [--json FILE]`: every govbus path beside its raw baseline, in one
//! run, with the ratios.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Parser;
use govbus_bench::calls::{CallBench, CallSettings};
use govbus_bench::commit::{self, CommitSettings};
use govbus_bench::consume::{self, ConsumeSettings};
use govbus_bench::e2e::{self, EndToEndSettings};
use govbus_bench::gateway;
use govbus_bench::memory::{self, MemorySettings};
use govbus_bench::publish::{self, PublishSettings};
use govbus_bench::webhooks::{self, WebhookBenchSettings};
use govbus_bench::{Comparison, Run};
use govbus_harness::NatsServer;
use govbus_kit::telemetry::{Telemetry, TelemetrySettings};

#[derive(Debug, Parser)]
struct Args {
    /// Smaller runs (a minute or two), for a quick look.
    #[arg(long)]
    quick: bool,
    /// Only these scenarios: publish, consume, calls, gateway, webhooks, commit, e2e, memory.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Run the commit and end-to-end scenarios' databases on PostgreSQL
    /// (`GOVBUS_TEST_POSTGRES_URL`, which `scripts/bench --postgres` sets).
    #[arg(long)]
    postgres: bool,
    /// Run nats-server as a single server ships (`sync_interval: always`: every acknowledged
    /// message synced to disk) rather than with NATS's default two-minute sync.
    #[arg(long)]
    sync_always: bool,
    /// Install no telemetry (no spans, logs or metrics), to measure what telemetry costs.
    #[arg(long)]
    without_telemetry: bool,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
    /// Test runners list a bench target's tests (`--list --format terse [--ignored]`): it has
    /// none, so `cargo nextest run --all-targets` runs nothing here.
    #[arg(long, hide = true)]
    list: bool,
    #[arg(long, hide = true)]
    format: Option<String>,
    #[arg(long, hide = true)]
    ignored: bool,
}

/// mimalloc: see the workspace's `Cargo.toml`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.list {
        return Ok(());
    }
    // Spans and metrics are recorded as in a running service (spans into the in-memory trace
    // store), unless the run is to show what they cost.
    let _telemetry = if args.without_telemetry {
        None
    } else {
        Some(Telemetry::install(&TelemetrySettings {
            log_filter: "warn".to_owned(),
            ..TelemetrySettings::default()
        })?)
    };
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|only| only == name);
    let nats = || {
        if args.sync_always {
            NatsServer::start_durable()
        } else {
            NatsServer::start()
        }
    };
    let scale = if args.quick { 10 } else { 1 };
    let mut results = Vec::new();

    if wanted("publish") {
        let server = nats()?;
        let dir = tempfile::tempdir()?;
        let settings = PublishSettings {
            events: 200_000 / scale,
            payload: 256,
            in_flight: 256,
        };
        results.push(publish::compare(&server.client_url(), dir.path(), settings).await?);
        print(results.last());
    }
    if wanted("consume") {
        let server = nats()?;
        let dir = tempfile::tempdir()?;
        let settings = ConsumeSettings {
            events: 200_000 / scale,
            payload: 256,
        };
        results.push(consume::compare(&server.client_url(), dir.path(), settings).await?);
        print(results.last());
    }
    if wanted("calls") {
        let server = nats()?;
        let dir = tempfile::tempdir()?;
        let mut bench = CallBench::new(dir.path())?;
        let settings = CallSettings {
            calls: 64_000 / scale,
            in_flight: 64,
        };
        for citizens in [10_000, 1_000_000 / scale] {
            bench.grow_to(citizens).await?;
            results.push(bench.compare(&server.client_url(), settings).await?);
            print(results.last());
        }
    }

    if wanted("gateway") {
        let server = nats()?;
        let dir = tempfile::tempdir()?;
        let mut bench = CallBench::new(dir.path())?;
        bench.grow_to(100_000 / scale).await?;
        let settings = CallSettings {
            calls: 64_000 / scale,
            in_flight: 64,
        };
        for comparison in
            gateway::compare(&bench, &server.client_url(), settings, dir.path()).await?
        {
            results.push(comparison);
            print(results.last());
        }
    }

    if wanted("webhooks") {
        let server = nats()?;
        let dir = tempfile::tempdir()?;
        let settings = WebhookBenchSettings {
            events: 4_000 / scale,
            latency_events: 400 / scale,
        };
        results.push(webhooks::compare(&server.client_url(), dir.path(), settings).await?);
        print(results.last());
    }

    let mut commits = None;
    if wanted("commit") {
        let server = nats()?;
        let dir = tempfile::tempdir()?;
        let settings = CommitSettings {
            commands: 50_000 / scale,
            postgres: args.postgres,
        };
        let runs = commit::run(&server.client_url(), dir.path(), settings).await?;
        for run in &runs {
            eprintln!(
                "commit, {}, {}: {:.0} commands/s{}, {:.1} per commit, {}",
                run.durability,
                run.run.label,
                run.run.rate(),
                cpu(&run.run),
                run.per_commit,
                latency(&run.run)
            );
        }
        commits = Some(runs);
    }

    let mut end_to_end = None;
    if wanted("e2e") {
        let server = nats()?;
        let dir = tempfile::tempdir()?;
        let calls = CallBench::new(dir.path())?;
        let settings = EndToEndSettings {
            peak_commands: 60_000 / scale,
            paced_commands: 30_000 / scale,
            in_flight: 64,
            postgres: args.postgres,
        };
        let run = e2e::run(&server.client_url(), dir.path(), &calls, settings).await?;
        eprintln!(
            "end to end: peak {:.0} events/s{} ({:.1} commands per identity commit, {:.1} \
             batches and {:.1} events per mirror commit); {}: {} (answers: {}); peak RSS {:.0} MiB",
            run.peak.rate(),
            cpu(&run.peak),
            run.identity_commands_per_commit,
            run.mirror_batches_per_commit,
            run.mirror_events_per_commit,
            run.paced.label,
            latency(&run.paced),
            run.paced_answers
                .map_or_else(String::new, |answers| format!(
                    "p50 {:.2} ms, p99 {:.2} ms",
                    answers.p50_ms, answers.p99_ms
                )),
            run.peak_rss_mib.unwrap_or(0.0)
        );
        end_to_end = Some(run);
    }

    let mut memory_under_load = None;
    if wanted("memory") {
        let server = nats()?;
        let dir = tempfile::tempdir()?;
        let settings = MemorySettings {
            registrations: 40_000 / scale,
            in_flight: 64,
        };
        let run = memory::run(&server.client_url(), dir.path(), settings).await?;
        eprintln!(
            "memory: {} commands at {:.0}/s, {} events; peak RSS {}",
            run.commands.operations,
            run.commands.rate(),
            run.events,
            memory_table(&run)
        );
        memory_under_load = Some(run);
    }

    let floor = end_to_end
        .as_ref()
        .and_then(|_| floor(&results, commits.as_deref()));
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "\n{}", table(&results))?;
    if let Some(run) = &end_to_end {
        writeln!(
            stdout,
            "| end to end | peak {:.0} events/s{}; {}: {} | goal ≥ {:.0}/s, p99 ≤ {:.0} ms: {} |",
            run.peak.rate(),
            cpu(&run.peak),
            run.paced.label,
            latency(&run.paced),
            e2e::GOAL_RATE,
            e2e::GOAL_P99_MS,
            if run.meets_goals() { "met" } else { "missed" },
        )?;
        if let Some(floor) = &floor {
            let parts = floor
                .parts
                .iter()
                .map(|(name, micros)| format!("{name} {micros:.0} µs"))
                .collect::<Vec<_>>()
                .join(" + ");
            writeln!(
                stdout,
                "| end to end, the raw parts' floor | {parts} = {:.0} µs of processor time per event: at most {:.0} events/s on these processors; govbus reaches {:.2} of it |",
                floor.cpu_micros_per_event,
                floor.rate,
                run.peak.rate() / floor.rate,
            )?;
        }
    }
    if let Some(run) = &memory_under_load {
        writeln!(
            stdout,
            "| memory, each service its own process | {} |",
            memory_table(run)
        )?;
    }
    for run in commits.iter().flatten() {
        writeln!(
            stdout,
            "| commit, {}, {} | {:.0} commands/s{}, {:.1} per commit, {} | {} |",
            run.durability,
            run.run.label,
            run.run.rate(),
            cpu(&run.run),
            run.per_commit,
            latency(&run.run),
            run.raw.as_ref().map_or_else(String::new, |raw| format!(
                "{}: {:.0} commands/s{} ({:.2} of it)",
                raw.label,
                raw.rate(),
                cpu(raw),
                run.run.rate() / raw.rate().max(f64::MIN_POSITIVE)
            )),
        )?;
    }
    if let Some(path) = args.json {
        let document = serde_json::json!({
            "commits": commits,
            "comparisons": results,
            "end_to_end": end_to_end,
            "end_to_end_floor": floor,
            "memory": memory_under_load,
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&document)?)?;
    }
    Ok(())
}

/// The end-to-end floor from the raw baselines of this run, where every one of them ran.
fn floor(results: &[Comparison], commits: Option<&[commit::CommitRun]>) -> Option<e2e::Floor> {
    let baseline = |prefix: &str| {
        results
            .iter()
            .find(|comparison| comparison.name.starts_with(prefix))
            .map(|comparison| &comparison.baseline)
    };
    let commit = commits?
        .iter()
        .find(|run| run.durability == commit::SQLITE_FULL && run.in_flight > 1)?
        .raw
        .as_ref()?;
    e2e::Floor::from_parts(
        &[
            ("bare tonic call", baseline("VerifyCitizen")?),
            ("raw publish", baseline("publish")?),
            ("raw pull and ack", baseline("consume")?),
            ("rusqlite commit", commit),
        ],
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
    )
}

/// A run's processor time per operation and the machine's load, for the tables.
fn cpu(run: &Run) -> String {
    match (run.cpu_micros_per_operation(), run.cpu) {
        (Some(micros), Some(cpu)) => format!(
            " ({micros:.0} µs of processor time each, {:.2} cores busy, {:.0} % stolen)",
            cpu.busy_cores,
            cpu.steal_share * 100.0
        ),
        _ => String::new(),
    }
}

fn print(comparison: Option<&Comparison>) {
    if let Some(comparison) = comparison {
        eprintln!(
            "{}: govbus {:.0}/s{}, baseline {:.0}/s{}, ratio {:.2} (goal {:.2})",
            comparison.name,
            comparison.govbus.rate(),
            cpu(&comparison.govbus),
            comparison.baseline.rate(),
            cpu(&comparison.baseline),
            comparison.ratio,
            comparison.goal
        );
        for step in &comparison.steps {
            eprintln!(
                "  reference, {}: {:.0}/s{} ({:.2} of the baseline)",
                step.label,
                step.rate(),
                cpu(step),
                step.rate() / comparison.baseline.rate().max(f64::MIN_POSITIVE)
            );
        }
    }
}

fn memory_table(run: &memory::MemoryUnderLoad) -> String {
    run.services
        .iter()
        .map(|service| format!("{} {:.0} MiB", service.service, service.peak_rss_mib))
        .collect::<Vec<_>>()
        .join(", ")
}

fn latency(run: &Run) -> String {
    run.latency.map_or_else(String::new, |latency| {
        format!("p50 {:.2} ms, p99 {:.2} ms", latency.p50_ms, latency.p99_ms)
    })
}

fn table(results: &[Comparison]) -> String {
    let mut out =
        String::from("| scenario | govbus | baseline | ratio | goal |\n|---|---|---|---|---|\n");
    for comparison in results {
        out.push_str(&format!(
            "| {} | {:.0}/s {}{} | {:.0}/s {}{} | {:.2} | {:.2} {} |\n",
            comparison.name,
            comparison.govbus.rate(),
            latency(&comparison.govbus),
            cpu(&comparison.govbus),
            comparison.baseline.rate(),
            latency(&comparison.baseline),
            cpu(&comparison.baseline),
            comparison.ratio,
            comparison.goal,
            if comparison.meets_goal() {
                "met"
            } else {
                "missed"
            },
        ));
    }
    out
}
