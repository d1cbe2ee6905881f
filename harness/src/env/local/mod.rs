//! The `local` target: a real Envoy configured from the manifests' Gateway and VirtualService,
//! in front of the Deployment's replicas of the service, all on loopback.
//!
//! A fast, faithful stand-in for Istio's ingress gateway routing (docs/facts.md lists the
//! translation rules and their sources in Istio), not a second Istio: what the translation does not handle is an error.
//! Every process is a child of the harness and dies with it, even on SIGKILL.

pub(crate) mod bootstrap;
pub(crate) mod process;
pub(crate) mod replicas;
pub(crate) mod translate;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::config::paths;
use crate::env::timings::Timings;
use crate::env::{BoxFuture, Environment, KubeCheck, KubeCheckOutcome};
use crate::exec::cmd::Runner;
use crate::exec::probe::{self, ProbeRequest};
use crate::exec::wait::{GiveUp, Retry};
use crate::manifest;

use crate::tools::envoy::{self, EnvoyBinary};
use process::{ProcessSpec, STOP_GRACE, Supervisor};
use replicas::Replica;
use translate::GatewayPlan;

/// How long Envoy may take to start and bind its listener.
const ENVOY_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the routes may take to answer after Envoy is up.
const ROUTES_READY_TIMEOUT: Duration = Duration::from_secs(20);
const ENVOY_LOG: &str = "envoy";

/// How to bring the local target up.
#[derive(Clone, Debug)]
pub(crate) struct LocalOptions {
    /// The manifest with the Gateway, VirtualService, Service and Deployment.
    pub manifest: PathBuf,
    /// The gateway's port on 127.0.0.1; `None` picks a free one.
    pub port: Option<u16>,
    /// `E2E_OFFLINE`: never install Envoy.
    pub offline: bool,
    /// Where the run's files go when the bring-up fails (`E2E_ARTIFACTS`).
    pub artifacts: Option<PathBuf>,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            manifest: paths::app_manifest(),
            port: None,
            offline: false,
            artifacts: None,
        }
    }
}

/// Envoy and the replicas, running.
pub(crate) struct LocalEnvironment {
    supervisor: Supervisor,
    envoy: EnvoyBinary,
    plan: GatewayPlan,
    ingress: SocketAddr,
    admin: SocketAddr,
    replicas: Vec<Replica>,
    run_dir: PathBuf,
    torn_down: bool,
}

/// The folder for one run's bootstrap and logs. Folders of runs whose process is gone (killed,
/// or kept after a failure and already copied to the artifacts) are removed first.
fn new_run_dir() -> PathBuf {
    let parent = paths::project_root().join("target").join("local-gateway");
    if let Ok(entries) = std::fs::read_dir(&parent) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("run-") else {
                continue;
            };
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    parent.join(format!("run-{}", std::process::id()))
}

impl LocalEnvironment {
    /// Translates the manifests, starts the replicas and Envoy, and waits until the gateway
    /// routes. Each phase's time goes into `times`.
    pub(crate) async fn start(
        options: &LocalOptions,
        runner: &Runner,
        times: &mut Timings,
    ) -> Result<Self> {
        let documents = manifest::load_file(&options.manifest)
            .with_context(|| format!("loading {}", options.manifest.display()))?;
        let plan = translate::plan(&documents).with_context(|| {
            format!(
                "translating {} into the local gateway's configuration",
                options.manifest.display()
            )
        })?;
        let envoy = times
            .time(
                "find envoy",
                envoy::find_or_install(runner, options.offline),
            )
            .await?;
        let service = times
            .time("build fft-service", replicas::service_binary(runner))
            .await?;

        let run_dir = new_run_dir();
        let _ = std::fs::remove_dir_all(&run_dir);
        let supervisor = Supervisor::new(&run_dir)?;
        eprintln!("local gateway files and logs: {}", run_dir.display());

        let started = start_processes(
            &supervisor,
            &envoy,
            &service,
            &plan,
            options,
            &run_dir,
            times,
        )
        .await;
        let (all_replicas, ingress, admin) = match started {
            Ok(started) => started,
            Err(err) => {
                if let Some(artifacts) = &options.artifacts {
                    save_run_files(&run_dir, &artifacts.join("local"));
                }
                return Err(err);
            }
        };
        Ok(LocalEnvironment {
            supervisor,
            envoy,
            plan,
            ingress,
            admin,
            replicas: all_replicas,
            run_dir,
            torn_down: false,
        })
    }

    pub(crate) fn admin(&self) -> SocketAddr {
        self.admin
    }
}

/// Starts the replicas, then Envoy in front of them, and waits until the gateway routes.
async fn start_processes(
    supervisor: &Supervisor,
    envoy: &EnvoyBinary,
    service: &Path,
    plan: &GatewayPlan,
    options: &LocalOptions,
    run_dir: &Path,
    times: &mut Timings,
) -> Result<(Vec<Replica>, SocketAddr, SocketAddr)> {
    let mut all_replicas = Vec::new();
    let mut endpoints = BTreeMap::new();
    let replicas_started = async {
        for upstream in &plan.upstreams {
            let started = replicas::start(supervisor, service, upstream)
                .await
                .with_context(|| {
                    format!(
                        "starting {} replicas of Deployment {}/{} (logs in {})",
                        upstream.replicas,
                        upstream.namespace,
                        upstream.deployment,
                        run_dir.display()
                    )
                })?;
            endpoints.insert(
                upstream.cluster.clone(),
                started.iter().map(|r| r.addr).collect::<Vec<_>>(),
            );
            all_replicas.extend(started);
        }
        anyhow::Ok(())
    };
    times.time("replicas ready", replicas_started).await?;

    let (ingress, admin) = times
        .time(
            "envoy start",
            start_envoy(supervisor, envoy, plan, endpoints, options.port, run_dir),
        )
        .await?;
    times
        .time(
            "gateway answering",
            probe::wait_until_gateway_answers(ingress, ROUTES_READY_TIMEOUT),
        )
        .await
        .with_context(|| {
            format!(
                "the local gateway's log: {}",
                run_dir.join("envoy.log").display()
            )
        })?;
    Ok((all_replicas, ingress, admin))
}

/// Copies a run's bootstrap and logs to `to` (a failure is a warning: it must not hide the
/// error being explained).
fn save_run_files(run_dir: &Path, to: &Path) {
    if let Err(err) = std::fs::create_dir_all(to) {
        eprintln!("warning: creating {}: {err}", to.display());
        return;
    }
    let entries = match std::fs::read_dir(run_dir) {
        Ok(entries) => entries,
        Err(err) => {
            eprintln!("warning: reading {}: {err}", run_dir.display());
            return;
        }
    };
    for entry in entries.flatten() {
        if let Err(err) = std::fs::copy(entry.path(), to.join(entry.file_name())) {
            eprintln!("warning: copying {}: {err}", entry.path().display());
        }
    }
    eprintln!("local target files and logs saved in {}", to.display());
}

/// Writes the bootstrap, starts Envoy and returns the listener's and the admin's addresses once
/// Envoy reports itself live.
async fn start_envoy(
    supervisor: &Supervisor,
    envoy: &EnvoyBinary,
    plan: &GatewayPlan,
    endpoints: BTreeMap<String, Vec<SocketAddr>>,
    port: Option<u16>,
    run_dir: &Path,
) -> Result<(SocketAddr, SocketAddr)> {
    let loopback = std::net::Ipv4Addr::LOCALHOST.into();
    let runtime = bootstrap::RuntimeAddresses {
        listener: SocketAddr::new(loopback, port.unwrap_or(0)),
        admin: SocketAddr::new(loopback, 0),
        endpoints,
        access_log: run_dir.join("envoy-access.log"),
    };
    let config = bootstrap::bootstrap(plan, &runtime)?;
    let config_path = run_dir.join("envoy-bootstrap.json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)
        .with_context(|| format!("writing {}", config_path.display()))?;
    let admin_file = run_dir.join("envoy-admin-address");
    let _ = std::fs::remove_file(&admin_file);
    let spec = envoy_command(&envoy.path, &config_path)
        .arg("--admin-address-path")
        .arg(&admin_file);
    let info = supervisor.spawn(&spec)?;

    let exited = || {
        supervisor.exit_status(ENVOY_LOG).map(|status| {
            anyhow::anyhow!(
                "Envoy exited with {status}; its log ({}):\n{}",
                info.log.display(),
                replicas::log_tail(&info.log)
            )
        })
    };
    let admin: SocketAddr = Retry::within(ENVOY_READY_TIMEOUT)
        .run("Envoy to write its admin address", || async {
            if let Some(err) = exited() {
                return Err(GiveUp(err).into());
            }
            let text = std::fs::read_to_string(&admin_file).unwrap_or_default();
            text.trim()
                .parse::<SocketAddr>()
                .map_err(|_| anyhow::anyhow!("no address in {} yet", admin_file.display()))
        })
        .await?;
    Retry::within(ENVOY_READY_TIMEOUT)
        .run("Envoy's admin /ready to answer LIVE", || async {
            if let Some(err) = exited() {
                return Err(GiveUp(err).into());
            }
            let response = probe::send(admin, &ProbeRequest::new("GET", "/ready")).await?;
            match (response.status, response.body_text().trim()) {
                (200, "LIVE") => Ok(()),
                (status, body) => Err(anyhow::anyhow!("status {status}, {body:?}")),
            }
        })
        .await?;
    let listeners = probe::send(admin, &ProbeRequest::new("GET", "/listeners?format=json"))
        .await
        .context("asking Envoy's admin for its listeners")?;
    let port = listener_port(&listeners.body)
        .with_context(|| format!("reading the listener port from {}", listeners.body_text()))?;
    Ok((SocketAddr::new(loopback, port), admin))
}

/// Envoy as the local gateway runs it: one worker (the machine is shared) and no hot restart,
/// whose shared memory would make two runs on one machine collide.
pub(crate) fn envoy_command(envoy: &Path, config: &Path) -> ProcessSpec {
    ProcessSpec::new(ENVOY_LOG, envoy)
        .arg("--config-path")
        .arg(config)
        .arg("--concurrency")
        .arg("1")
        .arg("--disable-hot-restart")
        .arg("--log-level")
        .arg("info")
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

async fn fetch_text(addr: SocketAddr, target: &str) -> Result<String> {
    let response = probe::send(addr, &ProbeRequest::new("GET", target)).await?;
    if response.status != 200 {
        bail!("GET {target} from {addr}: status {}", response.status);
    }
    Ok(response.body_text())
}

impl Environment for LocalEnvironment {
    fn describe(&self) -> String {
        let upstreams: Vec<String> = self
            .plan
            .upstreams
            .iter()
            .map(|u| {
                format!(
                    "{} replicas of {}/{}",
                    u.replicas, u.namespace, u.deployment
                )
            })
            .collect();
        format!(
            "local: Envoy {} on {} for Gateway {} (server port {}), {}",
            self.envoy.version,
            self.ingress,
            self.plan.gateway,
            self.plan.server_port,
            upstreams.join(", ")
        )
    }

    fn ingress(&self) -> SocketAddr {
        self.ingress
    }

    fn replica_metrics(&self) -> BoxFuture<'_, Result<BTreeMap<String, String>>> {
        Box::pin(async move {
            let mut all = BTreeMap::new();
            for replica in &self.replicas {
                let text = fetch_text(replica.addr, crate::config::names::METRICS_PATH)
                    .await
                    .with_context(|| format!("scraping {}", replica.name))?;
                all.insert(replica.name.clone(), text);
            }
            Ok(all)
        })
    }

    fn kube_check(&self, check: KubeCheck) -> BoxFuture<'_, Result<KubeCheckOutcome>> {
        Box::pin(async move {
            Ok(KubeCheckOutcome::NotApplicable {
                reason: format!(
                    "{} needs Kubernetes and Istio's injector; the local target runs plain \
                     processes",
                    check.name()
                ),
            })
        })
    }

    fn collect_diagnostics<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let dir = dir.join("local");
            if let Err(err) = std::fs::create_dir_all(&dir) {
                eprintln!("warning: creating {}: {err}", dir.display());
                return;
            }
            for (target, file) in [
                ("/config_dump?include_eds", "envoy-config-dump.json"),
                ("/clusters", "envoy-clusters.txt"),
                ("/stats", "envoy-stats.txt"),
            ] {
                match fetch_text(self.admin, target).await {
                    Ok(text) => {
                        if let Err(err) = std::fs::write(dir.join(file), text) {
                            eprintln!("warning: writing {file}: {err}");
                        }
                    }
                    Err(err) => eprintln!("warning: Envoy admin {target}: {err:#}"),
                }
            }
            save_run_files(&self.run_dir, &dir);
        })
    }

    fn teardown(&mut self, keep: bool) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if self.torn_down {
                return Ok(());
            }
            if keep {
                eprintln!(
                    "keep: local processes cannot outlive the harness (they die with it), so \
                     they stop now; their logs stay in {}",
                    self.run_dir.display()
                );
            }
            let killed = self.supervisor.stop_all(STOP_GRACE);
            if !killed.is_empty() {
                eprintln!("warning: {killed:?} ignored SIGTERM for {STOP_GRACE:?} and were killed");
            }
            self.torn_down = true;
            if !keep {
                let _ = std::fs::remove_dir_all(&self.run_dir);
            }
            Ok(())
        })
    }
}

/// `harness up --target local`: serves in the foreground until SIGINT or SIGTERM.
pub(crate) async fn run_foreground(options: &LocalOptions) -> Result<()> {
    // Watch the signals before anything starts, so that one arriving during start-up or right
    // after the export lines still stops every process through teardown.
    let mut signals = crate::exec::cleanup::TerminationSignals::listen()?;
    let runner = Runner::new();
    let mut times = Timings::default();
    let mut env = tokio::select! {
        started = LocalEnvironment::start(options, &runner, &mut times) => started?,
        // Dropping the half-started environment stops what it had started.
        signal = signals.recv() => bail!("{signal} received while starting; stopped"),
    };
    let ingress = env.ingress();
    eprintln!("{}", env.describe());
    // stdout may be a pipe whose reader has gone (`harness up | head -n 1`): serving goes on.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "export INGRESS_HOST={} INGRESS_PORT={}",
        ingress.ip(),
        ingress.port()
    );
    let _ = writeln!(
        stdout,
        "curl -s -X POST \"http://$INGRESS_HOST:$INGRESS_PORT/fft?numSamples=1024&freq=1\""
    );
    let _ = stdout.flush();
    drop(stdout);
    eprintln!(
        "Envoy admin: http://{} — serving until Ctrl-C or SIGTERM",
        env.admin()
    );
    let signal = signals.recv().await;
    eprintln!("{signal} received: stopping every process");
    env.teardown(false).await
}

#[cfg(test)]
mod tests;
