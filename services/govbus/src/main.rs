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
    /// Runs the identity, welfare, licensing and evaluation services on a private nats-server and SQLite
    /// files, registers households, decides PKH applications and licences over gRPC, records a
    /// death and shows welfare and licensing react to it through the bus; then records SPBE
    /// assessments and prints what the bus evidences.
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
