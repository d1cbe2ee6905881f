//! `harness up` and `harness down`: bring an environment up for a person at a terminal, and take
//! it down again.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Args;

use crate::cli::cluster::{self, CliCommand};
use crate::cli::report;
use crate::config::knobs::{Knobs, TargetChoice};
use crate::config::paths;
use crate::env::cluster::Mode;
use crate::env::local::{self, LocalOptions};
use crate::env::select;

fn parse_target(value: &str) -> Result<TargetChoice> {
    value.parse()
}

#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// auto, kind, local or existing.
    #[arg(long, env = "E2E_TARGET", default_value = "auto", value_parser = parse_target)]
    pub target: TargetChoice,
    /// local: the gateway's port on 127.0.0.1 (default: a free port).
    #[arg(long)]
    pub port: Option<u16>,
    /// local: the manifests (files, or directories of *.yaml/*.yml files) whose Gateways,
    /// VirtualServices, Services and Deployments configure the gateway; repeat it or list
    /// several after it [default: manifests/app.yaml].
    #[arg(long, num_args = 1..)]
    pub manifest: Vec<PathBuf>,
    /// kind|existing: print every step and command in order, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DownArgs {
    /// auto, kind, local or existing.
    #[arg(long, env = "E2E_TARGET", default_value = "auto", value_parser = parse_target)]
    pub target: TargetChoice,
    /// kind|existing: print every step and command in order, change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// The target an explicit choice names, or the one `auto` resolves to: the suite's own choice
/// (`env::select::choose`), its preflight printed.
fn resolve(choice: TargetChoice, knobs: &Knobs) -> Result<TargetChoice> {
    if choice != TargetChoice::Auto {
        return Ok(choice);
    }
    let chosen = crate::exec::runtime()?.block_on(select::choose(
        choice,
        knobs,
        &crate::exec::cmd::Runner::new(),
        &mut crate::env::timings::Timings::default(),
    ))?;
    Ok(match chosen {
        select::Chosen::Local => TargetChoice::Local,
        select::Chosen::Kind(_) => TargetChoice::Kind,
        select::Chosen::Existing(_) => TargetChoice::Existing,
    })
}

/// `harness up`: for `local`, serves in the foreground until SIGINT or SIGTERM.
pub(crate) fn run_up(args: &UpArgs) -> ExitCode {
    report(up(args))
}

fn up(args: &UpArgs) -> Result<()> {
    let knobs = Knobs::from_env()?;
    let target = resolve(args.target, &knobs)?;
    if target == TargetChoice::Local && args.dry_run {
        bail!(
            "--dry-run plans the kind and existing targets; the local target changes nothing \
             beyond its own processes, which stop with it: run it without --dry-run"
        );
    }
    if target != TargetChoice::Local && (args.port.is_some() || !args.manifest.is_empty()) {
        bail!(
            "--port and --manifest configure the local gateway; the {} target applies \
             manifests/app.yaml and is reached through the kind port mapping",
            target.as_str()
        );
    }
    match target {
        TargetChoice::Local => {
            let options = LocalOptions {
                manifests: if args.manifest.is_empty() {
                    vec![paths::app_manifest()]
                } else {
                    args.manifest.clone()
                },
                port: args.port,
                ..LocalOptions::from_knobs(&knobs)
            };
            crate::exec::runtime()?.block_on(local::run_foreground(&options))
        }
        TargetChoice::Kind => {
            crate::exec::runtime()?.block_on(cluster::cli(CliCommand::Up, Mode::Kind, args.dry_run))
        }
        TargetChoice::Existing => crate::exec::runtime()?.block_on(cluster::cli(
            CliCommand::Up,
            Mode::Existing,
            args.dry_run,
        )),
        TargetChoice::Auto => unreachable!("resolve never returns auto"),
    }
}

/// `harness down`: nothing to do for `local`, whose processes never outlive `harness up`.
pub(crate) fn run_down(args: &DownArgs) -> ExitCode {
    report(down(args))
}

fn down(args: &DownArgs) -> Result<()> {
    let target = resolve(args.target, &Knobs::from_env()?)?;
    match target {
        TargetChoice::Local => {
            eprintln!(
                "local: nothing to take down — every process of `harness up` stops with it \
                 (Ctrl-C or SIGTERM), and dies with it even when it is killed"
            );
            Ok(())
        }
        TargetChoice::Kind => crate::exec::runtime()?.block_on(cluster::cli(
            CliCommand::Down,
            Mode::Kind,
            args.dry_run,
        )),
        TargetChoice::Existing => crate::exec::runtime()?.block_on(cluster::cli(
            CliCommand::Down,
            Mode::Existing,
            args.dry_run,
        )),
        TargetChoice::Auto => unreachable!("resolve never returns auto"),
    }
}
