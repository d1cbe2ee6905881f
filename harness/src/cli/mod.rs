//! The `harness` CLI's subcommands: `up`/`down` ([`up`]), `lint` ([`lint`]), `image`
//! ([`image`]), and `up|down|status|dump` of the cluster targets ([`cluster`]).

pub mod cluster;
pub(crate) mod image;
pub(crate) mod lint;
pub(crate) mod up;

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
    Up(crate::cli::up::UpArgs),
    /// Take an environment down.
    Down(crate::cli::up::DownArgs),
    /// Check the manifests' wiring offline (names, ports, selectors, annotations).
    Lint(crate::cli::lint::LintArgs),
    /// Build the service image (static binary, FROM scratch, content tag) and print its name.
    Image(crate::cli::image::ImageArgs),
    /// kind|existing: the suite's clusters and the state of Istio and the app.
    Status(crate::cli::cluster::ClusterArgs),
    /// kind|existing: diagnostics (events, describe, logs, istioctl analyze, config dump) to
    /// E2E_ARTIFACTS.
    Dump(crate::cli::cluster::ClusterArgs),
}

/// `harness …`: parses the command line and runs the subcommand.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Up(args) => crate::cli::up::run_up(&args),
        Command::Down(args) => crate::cli::up::run_down(&args),
        Command::Lint(args) => crate::cli::lint::run(&args),
        Command::Image(args) => crate::cli::image::run(&args),
        Command::Status(args) => {
            crate::cli::cluster::cli_main(crate::cli::cluster::CliCommand::Status, &args)
        }
        Command::Dump(args) => {
            crate::cli::cluster::cli_main(crate::cli::cluster::CliCommand::Dump, &args)
        }
    }
}

/// How every subcommand ends: success, or the error chain on stderr and exit 1.
pub(crate) fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `work` on the harness's runtime and reports how it ended.
pub(crate) fn block_on(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    report(crate::exec::runtime().and_then(|runtime| runtime.block_on(work)))
}
