//! Starting one Envoy of the local target (the gateway, or a replica's sidecar) from a bootstrap,
//! and knowing when it listens: its admin address comes from `--admin-address-path`, its
//! readiness from the admin's `/ready`, its listener's port from `/listeners`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::process::{ChildInfo, ProcessSpec, Supervisor};
use super::replicas;
use crate::exec::probe::{self, ProbeRequest};
use crate::exec::wait::{GiveUp, Retry};

/// How long Envoy may take to start and bind its listener.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// An Envoy started but not yet known to listen.
pub(crate) struct Spawned {
    info: ChildInfo,
    admin_file: PathBuf,
}

/// Writes `<name>-bootstrap.json` under `run_dir` and starts Envoy on it as the child `name`.
pub(crate) fn spawn(
    supervisor: &Supervisor,
    envoy: &Path,
    name: &str,
    bootstrap: &Value,
    run_dir: &Path,
) -> Result<Spawned> {
    let config_path = run_dir.join(format!("{name}-bootstrap.json"));
    std::fs::write(&config_path, serde_json::to_vec_pretty(bootstrap)?)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let admin_file = run_dir.join(format!("{name}-admin-address"));
    let _ = std::fs::remove_file(&admin_file);
    let spec = envoy_command(name, envoy, &config_path)
        .arg("--admin-address-path")
        .arg(&admin_file);
    let info = supervisor.spawn(&spec)?;
    Ok(Spawned { info, admin_file })
}

impl Spawned {
    /// Waits until Envoy reports itself live; returns its listener's and its admin's addresses.
    pub(crate) async fn ready(self, supervisor: &Supervisor) -> Result<(SocketAddr, SocketAddr)> {
        let Spawned { info, admin_file } = self;
        let exited = || {
            supervisor.exit_status(&info.name).map(|status| {
                anyhow::anyhow!(
                    "Envoy exited with {status} (process {}); its log ({}):\n{}",
                    info.name,
                    info.log.display(),
                    replicas::log_tail(&info.log)
                )
            })
        };
        let admin: SocketAddr = Retry::within(READY_TIMEOUT)
            .run(
                &format!("Envoy {} to write its admin address", info.name),
                || async {
                    if let Some(err) = exited() {
                        return Err(GiveUp(err).into());
                    }
                    let text = std::fs::read_to_string(&admin_file).unwrap_or_default();
                    text.trim()
                        .parse::<SocketAddr>()
                        .map_err(|_| anyhow::anyhow!("no address in {} yet", admin_file.display()))
                },
            )
            .await?;
        Retry::within(READY_TIMEOUT)
            .run(
                &format!("Envoy {}'s admin /ready to answer LIVE", info.name),
                || async {
                    if let Some(err) = exited() {
                        return Err(GiveUp(err).into());
                    }
                    let response = probe::send(admin, &ProbeRequest::new("GET", "/ready")).await?;
                    match (response.status, response.body_text().trim()) {
                        (200, "LIVE") => Ok(()),
                        (status, body) => Err(anyhow::anyhow!("status {status}, {body:?}")),
                    }
                },
            )
            .await?;
        let listeners = probe::send(admin, &ProbeRequest::new("GET", "/listeners?format=json"))
            .await
            .context("asking Envoy's admin for its listeners")?;
        let port = listener_port(&listeners.body)
            .with_context(|| format!("reading the listener port from {}", listeners.body_text()))?;
        Ok((SocketAddr::new(admin.ip(), port), admin))
    }
}

/// Envoy as the local target runs it: one worker (the machine is shared) and no hot restart,
/// whose shared memory would make two Envoys on one machine collide.
pub(crate) fn envoy_command(name: &str, envoy: &Path, config: &Path) -> ProcessSpec {
    ProcessSpec::new(name, envoy)
        .arg("--config-path")
        .arg(config)
        .arg("--concurrency")
        .arg("1")
        .arg("--disable-hot-restart")
        .arg("--log-level")
        .arg("info")
        // The access log explains failed requests of a scenario that just ran: flushed within a
        // tenth of a second instead of Envoy's default ten.
        .arg("--file-flush-interval-msec")
        .arg("100")
}

fn listener_port(body: &[u8]) -> Result<u16> {
    let json: Value = serde_json::from_slice(body)?;
    let port = json
        .pointer("/listener_statuses/0/local_address/socket_address/port_value")
        .and_then(Value::as_u64)
        .context("no listener_statuses[0].local_address.socket_address.port_value")?;
    if port == 0 {
        bail!("the listener is not bound yet");
    }
    Ok(port as u16)
}
