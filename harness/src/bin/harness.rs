//! `harness`: the suite's environments and checks, for people at a terminal.
//!
//! Each subcommand's arguments and logic live in the library; this file only names them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "harness", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Lint(harness::lint::cli::LintArgs),
    /// Bring a cluster environment up (kind: cluster, Istio, image, app) and leave it running.
    Up(harness::kind::ClusterArgs),
    /// Delete what `up` created (never an E2E_CLUSTER cluster, never Istio on `existing`).
    Down(harness::kind::ClusterArgs),
    /// Show the suite's clusters and the state of Istio and the app.
    Status(harness::kind::ClusterArgs),
    /// Write diagnostics (events, describe, logs, istioctl analyze, config dump) to E2E_ARTIFACTS.
    Dump(harness::kind::ClusterArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Lint(args) => harness::lint::cli::run(&args),
        Command::Up(args) => harness::kind::cli_main(harness::kind::CliCommand::Up, &args),
        Command::Down(args) => harness::kind::cli_main(harness::kind::CliCommand::Down, &args),
        Command::Status(args) => harness::kind::cli_main(harness::kind::CliCommand::Status, &args),
        Command::Dump(args) => harness::kind::cli_main(harness::kind::CliCommand::Dump, &args),
    }
}
