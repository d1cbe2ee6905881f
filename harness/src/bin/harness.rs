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
    /// Bring an environment up (`local`: in the foreground until Ctrl-C).
    Up(harness::cli::up::UpArgs),
    /// Take an environment down.
    Down(harness::cli::up::DownArgs),
    /// Check the manifests' wiring offline (names, ports, selectors, annotations).
    Lint(harness::cli::lint::LintArgs),
    /// Build the service image (static binary, FROM scratch, content tag) and print its name.
    Image(harness::cli::image::ImageArgs),
    /// kind|existing: the suite's clusters and the state of Istio and the app.
    Status(harness::env::cluster::ClusterArgs),
    /// kind|existing: diagnostics (events, describe, logs, istioctl analyze, config dump) to
    /// E2E_ARTIFACTS.
    Dump(harness::env::cluster::ClusterArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Up(args) => harness::cli::up::run_up(&args),
        Command::Down(args) => harness::cli::up::run_down(&args),
        Command::Lint(args) => harness::cli::lint::run(&args),
        Command::Image(args) => harness::cli::image::run(&args),
        Command::Status(args) => {
            harness::env::cluster::cli_main(harness::env::cluster::CliCommand::Status, &args)
        }
        Command::Dump(args) => {
            harness::env::cluster::cli_main(harness::env::cluster::CliCommand::Dump, &args)
        }
    }
}
