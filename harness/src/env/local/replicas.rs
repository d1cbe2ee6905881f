//! The service's replicas as local processes: built from the workspace, each on a free loopback
//! port, each named like a pod so `x-served-by` tells them apart.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::process::{ProcessSpec, Supervisor};
use super::translate::Upstream;
use crate::config::names::SERVICE_PACKAGE;
use crate::config::paths;
use crate::exec::cmd::{Cmd, Runner};
use crate::exec::probe::{self, ProbeRequest};
use crate::exec::wait::{GiveUp, Retry};

/// Set to use an already built `fft-service` instead of building it.
pub(crate) const SERVICE_BIN_VAR: &str = "FFT_SERVICE_BIN";
/// The line the service prints on stdout once bound (`listening on 127.0.0.1:40123`).
const LISTENING_PREFIX: &str = "listening on ";
/// How long a replica may take to bind and report ready.
pub(crate) const REPLICA_READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running replica.
#[derive(Clone, Debug)]
pub(crate) struct Replica {
    pub name: String,
    pub addr: SocketAddr,
}

/// The `fft-service` binary: `FFT_SERVICE_BIN`, else built with `cargo build -p fft-service`.
pub(crate) async fn service_binary(runner: &Runner) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(SERVICE_BIN_VAR).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!(
                "{SERVICE_BIN_VAR}={} is not a file: build it with `cargo build -p fft-service` \
                 or unset {SERVICE_BIN_VAR}",
                path.display()
            );
        }
        return Ok(path);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let build = Cmd::new(cargo)
        .args(["build", "-p", SERVICE_PACKAGE, "--bin", SERVICE_PACKAGE])
        .current_dir(paths::project_root())
        .timeout(Duration::from_secs(900));
    runner
        .run(&build)
        .await
        .context("building the fft-service binary for the local replicas")?;
    let binary = paths::cargo_target_dir()
        .join("debug")
        .join(SERVICE_PACKAGE);
    if !binary.is_file() {
        bail!(
            "cargo built fft-service but {} does not exist",
            binary.display()
        );
    }
    Ok(binary)
}

/// The pod-like name of replica `index` of a Deployment.
pub(crate) fn replica_name(deployment: &str, index: u32) -> String {
    format!("{deployment}-local-{index}")
}

/// How every local replica runs.
#[derive(Clone, Debug)]
pub(crate) struct ReplicaOptions {
    pub binary: PathBuf,
    /// The service's `--drain-delay`: how long a replica keeps serving after SIGTERM.
    pub drain_delay: Duration,
    /// The service's `--shutdown-grace`: how long it may then take to finish.
    pub shutdown_grace: Duration,
    /// The Envoy that runs each replica's sidecar.
    pub envoy: PathBuf,
    /// Where the sidecars' bootstraps and every log go.
    pub run_dir: PathBuf,
}

/// The names of an upstream's first replicas.
pub(crate) fn initial_names(upstream: &Upstream) -> Vec<String> {
    (0..upstream.replicas)
        .map(|index| replica_name(&upstream.deployment, index))
        .collect()
}

/// Starts one replica per name and waits until each is bound and ready.
pub(crate) async fn start(
    supervisor: &Supervisor,
    options: &ReplicaOptions,
    names: &[String],
) -> Result<Vec<Replica>> {
    let mut started = Vec::new();
    for name in names {
        let spec = ProcessSpec::new(name, &options.binary)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--replica-name")
            .arg(name)
            .arg("--drain-delay")
            .arg(humantime::format_duration(options.drain_delay).to_string())
            .arg("--shutdown-grace")
            .arg(humantime::format_duration(options.shutdown_grace).to_string())
            .env("RUST_LOG", "info");
        let info = supervisor.spawn(&spec)?;
        started.push(info);
    }
    let mut replicas = Vec::new();
    for info in started {
        let what = format!("replica {} to report its address", info.name);
        let line = Retry::within(REPLICA_READY_TIMEOUT)
            .run(&what, || async {
                if let Some(status) = supervisor.exit_status(&info.name) {
                    return Err(GiveUp(anyhow::anyhow!(
                        "{} exited with {status}; log:\n{}",
                        info.name,
                        log_tail(&info.log)
                    ))
                    .into());
                }
                find_log_line(&info.log, LISTENING_PREFIX)
                    .ok_or_else(|| anyhow::anyhow!("no `{LISTENING_PREFIX}` line yet"))
            })
            .await?;
        let addr: SocketAddr = line[LISTENING_PREFIX.len()..]
            .trim()
            .parse()
            .with_context(|| format!("{}: cannot read the address in {line:?}", info.name))?;
        replicas.push(Replica {
            name: info.name,
            addr,
        });
    }
    for replica in &replicas {
        wait_ready(replica).await?;
    }
    Ok(replicas)
}

/// Waits until the replica's `/readyz` answers 200.
async fn wait_ready(replica: &Replica) -> Result<()> {
    Retry::within(REPLICA_READY_TIMEOUT)
        .run(
            &format!(
                "{} at {} to answer GET /readyz with 200",
                replica.name, replica.addr
            ),
            || async {
                let response =
                    probe::send(replica.addr, &ProbeRequest::new("GET", "/readyz")).await?;
                if response.status == 200 {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!("status {}", response.status))
                }
            },
        )
        .await?;
    Ok(())
}

/// The first line of `log` that starts with `prefix`.
pub(crate) fn find_log_line(log: &Path, prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .find(|line| line.starts_with(prefix))
        .map(str::to_string)
}

#[cfg(test)]
/// Waits until `log` has a line starting with `prefix`.
pub(crate) async fn wait_for_log_line(
    log: &Path,
    prefix: &str,
    timeout: Duration,
) -> Result<String> {
    let line = Retry::within(timeout)
        .run(
            &format!("a line starting with {prefix:?} in {}", log.display()),
            || async { find_log_line(log, prefix).ok_or_else(|| anyhow::anyhow!("not yet")) },
        )
        .await?;
    Ok(line)
}

/// The last lines of a log, for an error message.
pub(crate) fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    crate::exec::cmd::tail(&text, 20)
}
