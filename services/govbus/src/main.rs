//! The `govbus` command.

// A command-line program talks to its user on standard output.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use govbus::api::{DEAD_LETTER_SERVICE, EventFilter};
use govbus::cli::{self, CliError, ClientError, ConsoleClient, Output};
use govbus::config::{Layers, Origin};
use govbus::{Observability, ServiceEndpoint, Stack};
use govbus_kit::telemetry::{Telemetry, TelemetrySettings};

/// govbus: the event-driven integration bus for local-government services.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the whole stack: NATS (embedded unless --nats-url), every service and the web
    /// console. Ctrl-C or SIGTERM stops it in order.
    Up(UpArgs),
    /// Drives a realistic workload through a running stack over gRPC and prints a summary.
    Demo(DemoArgs),
    /// Lists the services of a running stack and their health (exit 3 if one is unhealthy).
    Services(Remote),
    /// Lists streams and consumers with pending messages and lag.
    Streams(Remote),
    /// Prints recent events, then new ones as they are published (personal fields masked).
    Tail(TailArgs),
    /// Lists, shows and replays dead letters.
    #[command(subcommand)]
    Deadletters(DeadLetterCommand),
    /// Lists recent traces.
    Traces(TracesArgs),
    /// Manages service certificates for mutual TLS.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Shows one trace as a tree with timings.
    Trace(TraceArgs),
    /// Verifies the processing log, or lists one person's processing history.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Prints what the stack is configured from: every key, or the access policy it ships.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Registers agencies' applications with the REST gateway, lists, revokes them and
    /// replaces their secrets (on the gateway's registry, running stack or not).
    #[command(subcommand)]
    Applications(ApplicationsCommand),
    /// Makes a new part of the workspace.
    #[command(subcommand)]
    New(NewCommand),
}

#[derive(Debug, Subcommand)]
enum NewCommand {
    /// A complete, compiling service: its contracts, its crate with tests, its grants, and its
    /// line in the stack's list of services.
    Service {
        /// Its name: lowercase letters and digits, e.g. `parcel`.
        name: String,
        /// The workspace (default: the one the current folder is in).
        #[arg(long)]
        workspace: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ApplicationsCommand {
    /// Registers an application: prints its client id and, once, its client secret.
    Register {
        /// `<agency>.<application>`, e.g. `disnaker-pmptsp.sicantik`: the agency's code, then the
        /// application's own name.
        name: String,
        /// What it is and who runs it.
        #[arg(long)]
        description: String,
        /// It signs in with the identity provider's tokens only: no secret is made.
        #[arg(long)]
        identity_provider: bool,
        /// Its own rate limit, requests per second (default: `gateway.rate_limit`).
        #[arg(long, requires = "rate_burst")]
        rate_limit: Option<u32>,
        /// Its own burst, with --rate-limit.
        #[arg(long, requires = "rate_limit")]
        rate_burst: Option<u32>,
        #[command(flatten)]
        config: ConfigArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lists every registered application, revoked ones too.
    List {
        #[command(flatten)]
        config: ConfigArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revokes an application: its secrets and tokens are refused from now on.
    Revoke {
        /// Its name.
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Gives an application a new client secret.
    RotateSecret {
        /// Its name.
        name: String,
        /// How long the previous secret stays valid, so that the application's instances
        /// can move over (`0s` when it leaked).
        #[arg(long, default_value = "24h", value_parser = govbus_kit::duration::parse)]
        keep_previous: Duration,
        #[command(flatten)]
        config: ConfigArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Where a command that works on the stack's data finds its configuration.
#[derive(Debug, Args)]
struct ConfigArgs {
    /// A TOML configuration file (default: ./govbus.toml when present).
    #[arg(long, env = "GOVBUS_CONFIG")]
    config: Option<PathBuf>,
    /// The data folder.
    #[arg(long)]
    data_dir: Option<String>,
    /// Any configuration key, e.g. `--set gateway.database_url=postgres://…` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Every configuration key (the stack's, then each service's from its declaration) with its
    /// environment variable, default and meaning, as a Markdown table.
    Keys,
    /// The access policy govbus ships: the grants every service declares. Standalone service
    /// binaries read such a file from GOVBUS_ACCESS_POLICY.
    Policy,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Checks every chain of the processing log: altered, removed, reordered or forged entries
    /// (exit 5 if it is not intact).
    Verify {
        /// Heads saved by an earlier `--save-heads`: also proves no chain lost its end since.
        #[arg(long)]
        heads: Option<PathBuf>,
        /// Writes the chains' heads to this file, to check against later.
        #[arg(long)]
        save_heads: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Lists every recorded processing of one person's data (UU 27/2022 Pasal 32).
    Subject {
        /// The person's NIK (16 digits).
        nik: String,
        #[command(flatten)]
        remote: Remote,
    },
}

/// Where the running stack is, and how to print.
#[derive(Debug, Args)]
struct Remote {
    /// The stack's console.
    #[arg(
        long,
        env = "GOVBUS_CONSOLE_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    console_url: String,
    /// Print JSON for scripts.
    #[arg(long, global = true)]
    json: bool,
}

impl Remote {
    fn client(&self) -> Result<ConsoleClient, ClientError> {
        ConsoleClient::new(&self.console_url)
    }

    fn output(&self) -> Output {
        if self.json {
            Output::Json
        } else {
            Output::Human
        }
    }
}

#[derive(Debug, Args)]
struct UpArgs {
    /// A TOML configuration file (default: ./govbus.toml when present).
    #[arg(long, env = "GOVBUS_CONFIG")]
    config: Option<PathBuf>,
    /// The data folder (databases, NATS store, logs).
    #[arg(long)]
    data_dir: Option<String>,
    /// Use this NATS server instead of the embedded one.
    #[arg(long)]
    nats_url: Option<String>,
    /// Where the console listens.
    #[arg(long)]
    console_listen: Option<String>,
    /// Export traces over OTLP/gRPC to this endpoint.
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// Log filter, e.g. `info` or `debug,h2=warn`.
    #[arg(long)]
    log: Option<String>,
    /// Any configuration key, e.g. `--set identity.listen=127.0.0.1:6051` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    settings: Vec<String>,
    /// Every service and the embedded NATS server on a free port, whatever the configuration
    /// says (a second stack beside another; the console keeps its address).
    #[arg(long)]
    free_ports: bool,
}

#[derive(Debug, Args)]
struct DemoArgs {
    #[command(flatten)]
    remote: Remote,
    /// Households to register (two citizens each).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    households: u32,
    /// Numbering seed; by default the current time, so runs do not collide.
    #[arg(long)]
    seed: Option<u64>,
    /// The folder holding the operator's certificate (`operator.pem`, `operator-key.pem`) and
    /// the CA; by default the one the stack reports.
    #[arg(long)]
    certs_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct TailArgs {
    #[command(flatten)]
    remote: Remote,
    /// Only this service's events.
    #[arg(long)]
    service: Option<String>,
    /// Only this event type, e.g. `identity.citizen.deceased.v1`.
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Recent events to print first.
    #[arg(long, default_value_t = 20)]
    history: usize,
    /// Print the recent events and stop instead of following.
    #[arg(long)]
    no_follow: bool,
}

#[derive(Debug, Subcommand)]
enum DeadLetterCommand {
    /// Lists dead letters.
    List(Remote),
    /// Shows one dead letter with its decoded event.
    Show {
        /// Its sequence.
        sequence: u64,
        #[command(flatten)]
        remote: Remote,
    },
    /// Replays one dead letter (or all with --all) to the consumer that gave up on it.
    Replay {
        /// Its sequence.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        sequence: Option<u64>,
        /// Replay every dead letter.
        #[arg(long)]
        all: bool,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Creates a development CA and a certificate for each service and operator client
    /// (production installs certificates issued by its own CA instead).
    Init {
        /// Where to write them.
        #[arg(long, default_value = ".govbus/certs")]
        dir: PathBuf,
        /// The names to issue certificates for (default: every service, console, operator).
        #[arg(long, value_delimiter = ',')]
        names: Vec<String>,
    },
    /// Revokes the certificate of a service or client with the development CA: its serial goes
    /// on the CA's list (ca.crl), which every server reloads within 10 seconds and then refuses,
    /// also on connections already open; a new certificate is issued in its place (restart the
    /// part to use it). A deployment's own CA revokes with its own tools and puts its list at
    /// ca.crl.
    Revoke {
        /// The part whose certificate is revoked, e.g. `welfare`, `operator`.
        name: String,
        /// Why: key-compromise, superseded, cessation-of-operation or unspecified.
        #[arg(long, default_value = "key-compromise")]
        reason: String,
        /// The certificates' folder.
        #[arg(long, default_value = ".govbus/certs")]
        dir: PathBuf,
    },
}

#[derive(Debug, Args)]
struct TracesArgs {
    #[command(flatten)]
    remote: Remote,
    /// How many.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

#[derive(Debug, Args)]
struct TraceArgs {
    /// The trace id (32 hex digits).
    trace_id: String,
    #[command(flatten)]
    remote: Remote,
}

/// mimalloc: see the workspace's `Cargo.toml`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(cli::exit::FAILED);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            exit_code_of(&error)
        }
    }
}

/// The exit code of a failed command: the operators' commands say theirs (`docs/operating.md`).
fn exit_code_of(error: &anyhow::Error) -> ExitCode {
    match error.downcast_ref::<CliError>() {
        Some(error) => error.exit_code(),
        None => ExitCode::from(cli::exit::FAILED),
    }
}

/// The console client of `remote`, failing as a command does.
fn client_of(remote: &Remote) -> Result<ConsoleClient, CliError> {
    Ok(remote.client()?)
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Up(args) => Box::pin(up(args)).await,
        Command::Demo(args) => Box::pin(demo(args)).await,
        Command::Services(remote) => {
            Ok(cli::services(&client_of(&remote)?, remote.output()).await?)
        }
        Command::Streams(remote) => Ok(cli::streams(&client_of(&remote)?, remote.output()).await?),
        Command::Tail(args) => Ok(cli::tail(
            &client_of(&args.remote)?,
            args.remote.output(),
            EventFilter {
                service: args.service,
                event_type: args.event_type,
                limit: None,
            },
            args.history,
            !args.no_follow,
        )
        .await?),
        Command::Deadletters(DeadLetterCommand::List(remote)) => {
            Ok(cli::dead_letters(&client_of(&remote)?, remote.output()).await?)
        }
        Command::Deadletters(DeadLetterCommand::Show { sequence, remote }) => {
            Ok(cli::dead_letter(&client_of(&remote)?, remote.output(), sequence).await?)
        }
        Command::Deadletters(DeadLetterCommand::Replay {
            sequence,
            all: _,
            yes,
            remote,
        }) => Ok(cli::replay(&client_of(&remote)?, remote.output(), sequence, yes).await?),
        Command::Certs(CertsCommand::Init { dir, names }) => {
            let names: Vec<&str> = if names.is_empty() {
                govbus::stack::certificate_names()
            } else {
                names.iter().map(String::as_str).collect()
            };
            govbus_kit::development_ca::generate_development_certificates(&dir, &names)?;
            println!(
                "Wrote a development CA and certificates for {} to {}.",
                names.join(", "),
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs(CertsCommand::Revoke { name, reason, dir }) => {
            let Some(reason) = govbus_kit::development_ca::RevocationReason::parse(&reason) else {
                anyhow::bail!(
                    "--reason {reason}: not one of {}",
                    govbus_kit::development_ca::RevocationReason::NAMES.join(", ")
                );
            };
            if !dir.join(format!("{name}.pem")).is_file() {
                anyhow::bail!("{} holds no certificate of {name}", dir.display());
            }
            let revoked =
                govbus_kit::development_ca::revoke_development_certificate(&dir, &name, reason)?;
            println!(
                "Revoked the certificate of {name} (serial {}), kept in {}; servers refuse it within {} s. A new certificate of {name} is in {}: restart {name} (under govbus up, the stack) to use it.",
                revoked.serial,
                revoked.kept_at.display(),
                govbus_kit::revocation::RELOAD_INTERVAL.as_secs(),
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Traces(args) => {
            Ok(cli::traces(&client_of(&args.remote)?, args.remote.output(), args.limit).await?)
        }
        Command::Audit(AuditCommand::Verify {
            heads,
            save_heads,
            remote,
        }) => Ok(cli::audit_verify(
            &client_of(&remote)?,
            remote.output(),
            heads.as_deref(),
            save_heads.as_deref(),
        )
        .await?),
        Command::Audit(AuditCommand::Subject { nik, remote }) => {
            Ok(cli::audit_subject(&client_of(&remote)?, remote.output(), &nik).await?)
        }
        Command::New(NewCommand::Service { name, workspace }) => {
            let workspace = match workspace {
                Some(workspace) => workspace,
                None => govbus::scaffold::find_workspace(
                    &std::env::current_dir().context("reading the current folder")?,
                )?,
            };
            let made = govbus::scaffold::new_service(&workspace, &name)?;
            println!("{made}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Keys) => {
            print!("{}", govbus::config::keys_table());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Policy) => {
            print!("{}", govbus::stack::shipped_policy());
            Ok(ExitCode::SUCCESS)
        }
        Command::Applications(command) => applications(command).await,
        Command::Trace(args) => Ok(cli::trace(
            &client_of(&args.remote)?,
            args.remote.output(),
            &args.trace_id,
        )
        .await?),
    }
}

async fn applications(command: ApplicationsCommand) -> anyhow::Result<ExitCode> {
    use govbus::cli::applications as commands;
    let output = |json: bool| if json { Output::Json } else { Output::Human };
    let outcome = match command {
        ApplicationsCommand::Register {
            name,
            description,
            identity_provider,
            rate_limit,
            rate_burst,
            config,
            json,
        } => {
            let registration = commands::Registration {
                name,
                description,
                identity_provider,
                rate: rate_limit.zip(rate_burst),
            };
            commands::register(&stored_configuration(&config)?, registration, output(json)).await
        }
        ApplicationsCommand::List { config, json } => {
            commands::list(&stored_configuration(&config)?, output(json)).await
        }
        ApplicationsCommand::Revoke { name, config } => {
            commands::revoke(&stored_configuration(&config)?, &name).await
        }
        ApplicationsCommand::RotateSecret {
            name,
            keep_previous,
            config,
            json,
        } => {
            commands::rotate_secret(
                &stored_configuration(&config)?,
                &name,
                keep_previous,
                output(json),
            )
            .await
        }
    };
    match outcome {
        Ok(code) => Ok(code),
        Err(error) => {
            eprintln!("error: {error}");
            Ok(error.exit_code())
        }
    }
}

/// The configuration a command on the stack's data reads: file, environment, flags.
fn stored_configuration(args: &ConfigArgs) -> anyhow::Result<govbus::StackConfig> {
    let mut layers = config_file_layers(args.config.as_ref())?;
    if let Some(dir) = &args.data_dir {
        layers = layers.set("data_dir", dir, Origin::Flag("--data-dir".to_owned()))?;
    }
    for setting in &args.settings {
        let (key, value) = setting
            .split_once('=')
            .with_context(|| format!("--set {setting:?}: write KEY=VALUE"))?;
        layers = layers.set(key.trim(), value, Origin::Flag(format!("--set {key}")))?;
    }
    Ok(layers.build()?)
}

/// The defaults, the configuration file and the environment.
fn config_file_layers(file: Option<&PathBuf>) -> anyhow::Result<Layers> {
    let mut layers = Layers::defaults();
    match file {
        Some(path) => layers = layers.file(path)?,
        None => {
            let default = PathBuf::from("govbus.toml");
            if default.is_file() {
                layers = layers.file(&default)?;
            }
        }
    }
    Ok(layers.env(std::env::vars())?)
}

fn configuration(args: &UpArgs) -> anyhow::Result<govbus::StackConfig> {
    let mut layers = config_file_layers(args.config.as_ref())?;
    for (key, value, flag) in [
        ("data_dir", &args.data_dir, "--data-dir"),
        ("nats.url", &args.nats_url, "--nats-url"),
        ("console.listen", &args.console_listen, "--console-listen"),
        (
            "telemetry.otlp_endpoint",
            &args.otlp_endpoint,
            "--otlp-endpoint",
        ),
        ("telemetry.log", &args.log, "--log"),
    ] {
        if let Some(value) = value {
            layers = layers.set(key, value, Origin::Flag(flag.to_owned()))?;
        }
    }
    for setting in &args.settings {
        let (key, value) = setting
            .split_once('=')
            .with_context(|| format!("--set {setting:?}: write KEY=VALUE"))?;
        layers = layers.set(key.trim(), value, Origin::Flag(format!("--set {key}")))?;
    }
    let mut config = layers.build()?;
    if args.free_ports {
        let console = config.console.listen;
        config = config.on_free_ports();
        config.console.listen = console;
    }
    Ok(config)
}

async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let config = configuration(&args)?;
    let telemetry = Telemetry::install(&TelemetrySettings {
        service_name: "govbus".to_owned(),
        span_services: govbus::services::names()
            .into_iter()
            .map(str::to_owned)
            .collect(),
        log_filter: config.telemetry.log.clone(),
        log_format: config.telemetry.log_format,
        otlp_endpoint: config.telemetry.otlp_endpoint.clone(),
        keep_traces: config.telemetry.keep_traces,
    })?;
    let observability = Observability {
        traces: telemetry.traces().clone(),
        metrics: Some(telemetry.metrics().clone()),
    };
    let stack = Stack::start(config, observability).await?;
    if let Err(error) = stack.wait_until_healthy(Duration::from_secs(30)).await {
        stack.stop().await;
        telemetry.shutdown();
        return Err(error.into());
    }
    let endpoints = stack.endpoints();
    println!("govbus {} is up.", env!("CARGO_PKG_VERSION"));
    println!(
        "  nats        {} ({})",
        endpoints.nats_url,
        if endpoints.nats_embedded {
            "embedded"
        } else {
            "external"
        }
    );
    for service in &endpoints.services {
        println!("  {:<11} grpc://{}", service.name, service.address);
    }
    if let Some(gateway) = &endpoints.gateway_url {
        println!("  gateway     {gateway}/ (REST for applications; /openapi.json)");
    }
    if let Some(console) = endpoints.console {
        println!("  console     http://{console}/");
        println!("  metrics     http://{console}/metrics");
    }
    println!("  data        {}", endpoints.data_dir.display());
    println!("Ready. Press Ctrl-C to stop.");
    let signal = govbus_kit::runtime::stop_signal()
        .await
        .context("listening for Ctrl-C and SIGTERM")?;
    println!("Stopping ({signal})…");
    stack.stop().await;
    telemetry.shutdown();
    println!("Stopped.");
    Ok(ExitCode::SUCCESS)
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let client = args.remote.client()?;
    let overview = client.overview().await?;
    let services: Vec<ServiceEndpoint> = overview
        .services
        .iter()
        .map(|service| ServiceEndpoint::new(&service.name, service.address))
        .collect();
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.as_secs())
            .unwrap_or(0)
    });
    let tls = if overview.tls {
        let dir = args
            .certs_dir
            .clone()
            .or_else(|| overview.certificates_dir.as_deref().map(PathBuf::from))
            .context(
                "the stack speaks mutual TLS; pass --certs-dir with the operator's certificate",
            )?;
        Some(
            govbus_kit::tls::ServiceTls::from_files(
                govbus::stack::OPERATOR,
                &govbus_kit::tls::CertificatePaths::in_dir(&dir, govbus::stack::OPERATOR),
            )
            .context("reading the operator's certificate")?,
        )
    } else {
        None
    };
    let workload = govbus::demo::Workload {
        households: args.households,
        seed,
        progress: !args.remote.json,
        tls,
    };
    let events = || async {
        let streams = client.streams().await?;
        Ok::<u64, ClientError>(
            streams
                .iter()
                .filter(|stream| stream.service != DEAD_LETTER_SERVICE)
                .map(|stream| stream.last_sequence)
                .sum(),
        )
    };
    let summary = govbus::demo::run(&services, &workload, events).await?;
    if args.remote.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "Demo done in {:.1} s: {} gRPC calls, {} failed; {} events published.",
            summary.seconds, summary.calls, summary.failures, summary.events
        );
        println!(
            "  {} citizens registered; benefits granted {}, refused by the rules {}; {} licence applications.",
            summary.citizens,
            summary.benefits_granted,
            summary.benefits_refused,
            summary.licence_applications
        );
        println!(
            "  {} relocations; {} deaths, {} benefits suspended by welfare through the bus.",
            summary.relocations, summary.deaths, summary.benefits_suspended
        );
        println!(
            "  {} complaints filed, {} answered by the agencies.",
            summary.complaints_filed, summary.complaints_answered
        );
        println!(
            "  SPBE Kota Malang: index {} ({}).",
            summary.spbe_index, summary.spbe_predicate
        );
        for failure in &summary.failure_examples {
            println!("  failed: {failure}");
        }
    }
    Ok(ExitCode::from(if summary.failures == 0 {
        cli::exit::OK
    } else {
        cli::exit::FAILED
    }))
}
