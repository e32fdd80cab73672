//! The `govbus` command.

// A command-line program talks to its user on standard output.
#![allow(clippy::print_stdout)]

mod demo;

use clap::{Parser, Subcommand};

/// govbus: the event-driven integration bus for local-government services.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a short demonstration: identity publishes citizen events, welfare reacts to deaths,
    /// and a malformed message lands in the dead-letter stream with its reason.
    Demo(demo::DemoArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GOVBUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Demo(args) => demo::run(args).await,
    }
}
