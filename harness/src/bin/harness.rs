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
    Up(harness::cli_up::UpArgs),
    /// Take an environment down.
    Down(harness::cli_up::DownArgs),
    /// Check the manifests' wiring offline (names, ports, selectors, annotations).
    Lint(harness::lint::cli::LintArgs),
    /// Build the service image (static binary, FROM scratch, content tag) and print its name.
    Image(harness::image::cli::ImageArgs),
    /// kind|existing: the suite's clusters and the state of Istio and the app.
    Status(harness::kind::ClusterArgs),
    /// kind|existing: diagnostics (events, describe, logs, istioctl analyze, config dump) to
    /// E2E_ARTIFACTS.
    Dump(harness::kind::ClusterArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Up(args) => harness::cli_up::run_up(&args),
        Command::Down(args) => harness::cli_up::run_down(&args),
        Command::Lint(args) => harness::lint::cli::run(&args),
        Command::Image(args) => harness::image::cli::run(&args),
        Command::Status(args) => harness::kind::cli_main(harness::kind::CliCommand::Status, &args),
        Command::Dump(args) => harness::kind::cli_main(harness::kind::CliCommand::Dump, &args),
    }
}
