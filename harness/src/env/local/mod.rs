//! The `local` target: a real Envoy configured from the manifests' Gateway and VirtualService,
//! in front of the Deployment's replicas of the service, all on loopback.
//!
//! A fast, faithful stand-in for Istio's ingress gateway routing (docs/facts.md lists the
//! translation rules and their sources in Istio), not a second Istio: what the translation does not handle is an error.
//! Every process is a child of the harness and dies with it, even on SIGKILL.

pub(crate) mod bootstrap;
pub(crate) mod endpoints;
pub(crate) mod fleet;
pub(crate) mod process;
pub(crate) mod proxy;
pub(crate) mod replicas;
pub(crate) mod sidecar;
pub(crate) mod translate;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::config::knobs::{self, Knobs};
use crate::config::paths;
use crate::env::timings::Timings;
use crate::env::{
    BoxFuture, Disruption, DisruptionReport, Environment, KubeCheck, KubeCheckOutcome,
};
use crate::exec::cmd::Runner;
use crate::exec::probe::{self, ProbeRequest};
use crate::exec::wait::Retry;
use crate::manifest;

use crate::tools::envoy::{self, EnvoyBinary};
use endpoints::EndpointFiles;
use fleet::Fleet;
use process::{STOP_GRACE, Supervisor};
use replicas::{Replica, ReplicaOptions};
use translate::GatewayPlan;

/// How long the routes may take to answer after Envoy is up.
const ROUTES_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// The gateway's process name: its log is `envoy.log`, its bootstrap `envoy-bootstrap.json`.
const GATEWAY_PROCESS: &str = "envoy";
/// Envoy's access log in the run folder: one JSON line per request.
const ACCESS_LOG: &str = "envoy-access.log";

/// How to bring the local target up.
#[derive(Clone, Debug)]
pub(crate) struct LocalOptions {
    /// The manifests (files or directories) with the Gateways, VirtualServices, Services and
    /// Deployments.
    pub manifests: Vec<PathBuf>,
    /// The gateway's port on 127.0.0.1; `None` picks a free one.
    pub port: Option<u16>,
    /// `E2E_OFFLINE`: never install Envoy.
    pub offline: bool,
    /// Where the run's files go when the bring-up fails (`E2E_ARTIFACTS`).
    pub artifacts: Option<PathBuf>,
    /// The replicas' `--drain-delay` (`E2E_LOCAL_DRAIN_DELAY`).
    pub drain_delay: Duration,
    /// How long after a replica's stop Envoy still routes to it (`E2E_LOCAL_PROPAGATION_LAG`).
    pub propagation_lag: Duration,
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            manifests: vec![paths::app_manifest()],
            port: None,
            offline: false,
            artifacts: None,
            drain_delay: knobs::DEFAULT_LOCAL_DRAIN_DELAY,
            propagation_lag: knobs::DEFAULT_LOCAL_PROPAGATION_LAG,
        }
    }
}

impl LocalOptions {
    /// The project's manifest on a free port, as the knobs say.
    pub(crate) fn from_knobs(knobs: &Knobs) -> Self {
        LocalOptions {
            offline: knobs.offline,
            artifacts: Some(knobs.artifacts.clone()),
            drain_delay: knobs.local_drain_delay,
            propagation_lag: knobs.local_propagation_lag,
            ..LocalOptions::default()
        }
    }
}

/// The replicas' `--shutdown-grace`: the service's default, said here because the fleet bounds
/// its wait for a stopped replica's exit with it.
const REPLICA_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Envoy and the replicas, running.
pub(crate) struct LocalEnvironment {
    supervisor: Supervisor,
    envoy: EnvoyBinary,
    plan: GatewayPlan,
    ingress: SocketAddr,
    admin: SocketAddr,
    fleet: tokio::sync::Mutex<Fleet>,
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
        let (documents, described) = load_manifests(&options.manifests)?;
        let plan = translate::plan(&documents).with_context(|| {
            format!("translating {described} into the local gateway's configuration")
        })?;
        for warning in &plan.warnings {
            eprintln!("warning: {warning}");
        }
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
        let (fleet, ingress, admin) = match started {
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
            fleet: tokio::sync::Mutex::new(fleet),
            run_dir,
            torn_down: false,
        })
    }

    pub(crate) fn admin(&self) -> SocketAddr {
        self.admin
    }

    fn example_host(&self) -> Option<String> {
        example_host(&self.plan)
    }
}

/// A host the gateway routes, when it does not take any (`*`): the first named one, a
/// wildcard's label filled in.
fn example_host(plan: &GatewayPlan) -> Option<String> {
    let domains: Vec<&String> = plan
        .virtual_hosts
        .iter()
        .flat_map(|vh| &vh.domains)
        .collect();
    if domains.iter().any(|d| d.as_str() == "*") {
        return None;
    }
    domains
        .iter()
        .find(|d| !d.starts_with('*'))
        .or(domains.first())
        .map(|d| d.replacen('*', "any", 1))
}

/// Every document of the manifest files and directories, and how to name them in errors.
fn load_manifests(paths: &[PathBuf]) -> Result<(Vec<manifest::Document>, String)> {
    let files = crate::lint::expand_paths(paths)?;
    let mut documents = Vec::new();
    for file in &files {
        documents.extend(
            manifest::load_file(file).with_context(|| format!("loading {}", file.display()))?,
        );
    }
    let described = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    Ok((documents, described))
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
) -> Result<(Fleet, SocketAddr, SocketAddr)> {
    let replica_options = ReplicaOptions {
        binary: service.to_path_buf(),
        drain_delay: options.drain_delay,
        shutdown_grace: REPLICA_SHUTDOWN_GRACE,
        envoy: envoy.path.clone(),
        run_dir: run_dir.to_path_buf(),
    };
    let fleet = times
        .time(
            "replicas ready",
            Fleet::start(
                supervisor,
                replica_options,
                options.propagation_lag,
                &plan.upstreams,
                &run_dir.join("eds"),
            ),
        )
        .await
        .with_context(|| format!("(replica logs in {})", run_dir.display()))?;

    let (ingress, admin) = times
        .time(
            "envoy start",
            start_envoy(
                supervisor,
                envoy,
                plan,
                fleet.endpoints(),
                options.port,
                run_dir,
            ),
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
    Ok((fleet, ingress, admin))
}

/// Copies a run's bootstrap and logs to `to` (a failure is a warning: it must not hide the
/// error being explained).
fn save_run_files(run_dir: &Path, to: &Path) {
    copy_folder(run_dir, to);
    eprintln!("local target files and logs saved in {}", to.display());
}

/// Copies a folder's files and, the same way, its folders (the endpoint files have their own).
fn copy_folder(from: &Path, to: &Path) {
    if let Err(err) = std::fs::create_dir_all(to) {
        eprintln!("warning: creating {}: {err}", to.display());
        return;
    }
    let entries = match std::fs::read_dir(from) {
        Ok(entries) => entries,
        Err(err) => {
            eprintln!("warning: reading {}: {err}", from.display());
            return;
        }
    };
    for entry in entries.flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_folder(&entry.path(), &target);
        } else if let Err(err) = std::fs::copy(entry.path(), &target) {
            eprintln!("warning: copying {}: {err}", entry.path().display());
        }
    }
}

/// Writes the gateway's bootstrap, starts its Envoy and returns the listener's and the admin's
/// addresses once Envoy reports itself live.
async fn start_envoy(
    supervisor: &Supervisor,
    envoy: &EnvoyBinary,
    plan: &GatewayPlan,
    endpoints: &EndpointFiles,
    port: Option<u16>,
    run_dir: &Path,
) -> Result<(SocketAddr, SocketAddr)> {
    let loopback = std::net::Ipv4Addr::LOCALHOST.into();
    let mut endpoint_files = BTreeMap::new();
    for upstream in &plan.upstreams {
        let file = endpoints
            .file(&upstream.cluster)
            .with_context(|| format!("no endpoint file for {}", upstream.cluster))?;
        endpoint_files.insert(upstream.cluster.clone(), file.to_path_buf());
    }
    let runtime = bootstrap::RuntimeAddresses {
        listener: SocketAddr::new(loopback, port.unwrap_or(0)),
        admin: SocketAddr::new(loopback, 0),
        endpoints_dir: endpoints.dir().to_path_buf(),
        endpoint_files,
        access_log: run_dir.join(ACCESS_LOG),
    };
    let config = bootstrap::bootstrap(plan, &runtime)?;
    let started = proxy::spawn(supervisor, &envoy.path, GATEWAY_PROCESS, &config, run_dir)?;
    started.ready(supervisor).await
}

/// How long the access log may take to show a request (its flush interval, with margin).
const ACCESS_LOG_FLUSH: Duration = Duration::from_secs(3);

/// The access log lines of `ids` (keyed by id), in a few words each.
fn access_log_records(text: &str, ids: &[String]) -> BTreeMap<String, String> {
    let mut records = BTreeMap::new();
    for line in text.lines() {
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let Some(id) = entry["request_id"].as_str() else {
            continue;
        };
        if !ids.iter().any(|wanted| wanted == id) {
            continue;
        }
        let field = |name: &str| match &entry[name] {
            Value::String(text) => text.clone(),
            Value::Null => "-".to_string(),
            other => other.to_string(),
        };
        records.insert(
            id.to_string(),
            format!(
                "{} flags={} upstream={} attempts={} details={} {}",
                field("response_code"),
                field("response_flags"),
                field("upstream_host"),
                field("attempts"),
                field("response_code_details"),
                field("upstream_failure"),
            )
            .trim_end()
            .to_string(),
        );
    }
    records
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
        let mut upstreams: Vec<String> = self
            .plan
            .upstreams
            .iter()
            .map(|u| format!("{} replicas of {}", u.replicas, u.deployment_id()))
            .collect();
        upstreams.dedup();
        format!(
            "local: Envoy {} on {} for Gateway {} (server port {}), {} (each behind a sidecar Envoy)",
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
            let replicas: Vec<Replica> = self.fleet.lock().await.replicas().cloned().collect();
            let mut all = BTreeMap::new();
            for replica in &replicas {
                let text = fetch_text(replica.addr, crate::config::names::METRICS_PATH)
                    .await
                    .with_context(|| format!("scraping {}", replica.name))?;
                all.insert(replica.name.clone(), text);
            }
            Ok(all)
        })
    }

    fn disrupt(&self, disruption: Disruption) -> BoxFuture<'_, Result<DisruptionReport>> {
        Box::pin(async move {
            self.fleet
                .lock()
                .await
                .disrupt(&self.supervisor, self.admin, disruption)
                .await
        })
    }

    fn hop_notes(&self) -> Vec<String> {
        vec![
            crate::checks::latency::resolution_note(),
            "local: the sidecar is a plain Envoy in front of each replica on loopback (no mTLS, \
             no telemetry filters), so sidecar + network is less than in a mesh"
                .to_string(),
        ]
    }

    fn versions(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("envoy".to_string(), self.envoy.version.clone())])
    }

    fn gateway_records(
        &self,
        request_ids: &[String],
    ) -> BoxFuture<'_, Result<BTreeMap<String, String>>> {
        let ids = request_ids.to_vec();
        Box::pin(async move {
            let log = self.run_dir.join(ACCESS_LOG);
            let read =
                || access_log_records(&std::fs::read_to_string(&log).unwrap_or_default(), &ids);
            let all_found = Retry::within(ACCESS_LOG_FLUSH)
                .run(
                    &format!("{} requests in {}", ids.len(), log.display()),
                    || async {
                        let records = read();
                        if records.len() == ids.len() {
                            Ok(records)
                        } else {
                            Err(anyhow::anyhow!("{} of {} there", records.len(), ids.len()))
                        }
                    },
                )
                .await;
            // Whatever is there explains something even when a line is missing.
            Ok(all_found.unwrap_or_else(|_| read()))
        })
    }

    fn kube_check(&self, check: KubeCheck) -> BoxFuture<'_, Result<KubeCheckOutcome>> {
        Box::pin(async move {
            Ok(KubeCheckOutcome::NotApplicable {
                reason: kube_check_not_applicable(check),
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
                eprintln!(
                    "warning: {killed:?} did not stop within {STOP_GRACE:?} of SIGINT and were killed"
                );
            }
            self.torn_down = true;
            if !keep {
                let _ = std::fs::remove_dir_all(&self.run_dir);
            }
            Ok(())
        })
    }
}

/// Why a Kubernetes check does not apply to the local target (also what a nextest listing says).
pub(crate) fn kube_check_not_applicable(check: KubeCheck) -> String {
    format!(
        "{} needs Kubernetes and Istio's injector; the local target runs plain processes",
        check.name()
    )
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
    // The tutorial's Gateway takes any host; one that names its hosts needs one of them.
    let host_header = env
        .example_host()
        .map(|host| format!("-H 'Host: {host}' "))
        .unwrap_or_default();
    let _ = writeln!(
        stdout,
        "curl -s -X POST {host_header}\"http://$INGRESS_HOST:$INGRESS_PORT/fft?numSamples=1024&freq=1\""
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
