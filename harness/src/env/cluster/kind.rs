//! The `kind` target: preflight → reap clusters of killed runs → build the image → create (or
//! reuse) the cluster → connect → load the image → install Istio → apply the app and wait for it
//! → check the gateway's path and probe the route. Teardown deletes the cluster it created
//! (never an `E2E_CLUSTER` one), or keeps it and says how to reach it.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Backend, ClusterApi, ClusterChoice, Preflight, Running, Settings};
use crate::config::names::{INGRESS_GATEWAY, ISTIO_NAMESPACE, ISTIOD};
use crate::env::timings::Timings;
use crate::env::{BoxFuture, Environment};
use crate::exec::cleanup::{self, CleanupTicket};
use crate::exec::cmd::Runner;
use crate::k8s::diagnose::DiagnoseTarget;
use crate::k8s::gateway;
use crate::manifest::kind_config::KindConfig;
use crate::tools::istioctl::{self, KubeTarget};
use crate::tools::kind::{self, ClusterHandle, OwnerMarker};

/// A kind cluster with Istio and the app, ready for the scenarios.
pub struct KindEnvironment {
    running: Running,
    cluster: ClusterHandle,
    /// Deletes (or keeps) the cluster if the process is interrupted before `teardown`.
    abort_cleanup: Option<CleanupTicket>,
    torn_down: bool,
}

/// What exists while the target comes up, for the cleanup of a failed start.
#[derive(Default)]
struct Partial {
    cluster: Option<ClusterHandle>,
    kube: Option<KubeTarget>,
    app_namespace: Option<String>,
    abort_cleanup: Option<CleanupTicket>,
}

impl KindEnvironment {
    /// Brings the target up, recording each phase in `times`. On failure, collects diagnostics,
    /// deletes (or keeps, per `E2E_KEEP`) what it created, and returns the first error.
    pub async fn up_with(
        runner: Runner,
        settings: Settings,
        backend: &dyn Backend,
        times: &mut Timings,
    ) -> Result<Self> {
        Self::up_checked(runner, settings, backend, Preflight::Run, times).await
    }

    /// [`Self::up_with`], its preflight already run or not.
    pub(crate) async fn up_checked(
        runner: Runner,
        settings: Settings,
        backend: &dyn Backend,
        preflight: Preflight,
        times: &mut Timings,
    ) -> Result<Self> {
        let mut partial = Partial::default();
        match bring_up(&runner, &settings, backend, preflight, times, &mut partial).await {
            Ok((running, cluster)) => Ok(KindEnvironment {
                running,
                cluster,
                abort_cleanup: partial.abort_cleanup,
                torn_down: false,
            }),
            Err(err) => {
                let reached = partial.kube.as_ref().map(|kube| {
                    super::diagnose_target(
                        &settings,
                        kube,
                        partial.cluster.as_ref().map(|c| c.name.clone()),
                        partial.app_namespace.as_deref(),
                    )
                });
                let keep = settings.keep.keeps(true);
                let ticket = partial.abort_cleanup.take();
                let undo = async {
                    match partial.cluster.take() {
                        Some(handle) => delete_or_keep(&runner, &settings, handle, keep).await,
                        None => Ok(()),
                    }
                };
                super::after_failed_start(&runner, &settings, reached, undo, ticket).await;
                Err(err)
            }
        }
    }

    pub(crate) fn api(&self) -> &dyn ClusterApi {
        self.running.api.as_ref()
    }

    /// `harness up`: the cluster stays; the interruption cleanup is no longer wanted.
    pub(crate) fn keep_running(mut self) -> ClusterHandle {
        if let Some(ticket) = self.abort_cleanup.take() {
            cleanup::unregister(ticket);
        }
        self.torn_down = true;
        self.cluster.clone()
    }

    async fn teardown_now(&mut self, keep: bool) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let undo = delete_or_keep(
            &self.running.runner,
            &self.running.settings,
            self.cluster.clone(),
            keep,
        );
        super::bounded_teardown(undo, &mut self.abort_cleanup).await
    }

    fn diagnose(&self) -> DiagnoseTarget {
        super::diagnose_target(
            &self.running.settings,
            &self.running.kube,
            Some(self.cluster.name.clone()),
            Some(&self.running.app.namespace),
        )
    }
}

async fn bring_up(
    runner: &Runner,
    settings: &Settings,
    backend: &dyn Backend,
    preflight: Preflight,
    times: &mut Timings,
    partial: &mut Partial,
) -> Result<(Running, ClusterHandle)> {
    if preflight == Preflight::Run {
        times
            .time("preflight", super::preflight(runner, settings, preflight))
            .await?;
    }
    times.time("reap", reap(runner, settings)).await?;
    let image = times.time("image", backend.build_image(runner)).await?;
    let cluster = times
        .time("cluster", create_or_reuse(runner, settings, partial))
        .await?;
    let (kube, api) = times
        .time("connect", async {
            let kubeconfig = kind::write_kubeconfig(runner, &settings.tools, &cluster).await?;
            let kube = KubeTarget {
                kubeconfig: Some(cluster.kubeconfig.clone()),
                context: cluster.context(),
            };
            partial.kube = Some(kube.clone());
            let yaml = (!kubeconfig.is_empty()).then_some(kubeconfig);
            let api = super::connect(runner, backend, yaml, &kube)
                .await
                .with_context(|| format!("connecting to kind cluster {}", cluster.name))?;
            anyhow::Ok((kube, api))
        })
        .await?;
    times
        .time(
            "load",
            kind::load_image(
                runner,
                &settings.tools,
                &settings.state,
                &image,
                &cluster.name,
            ),
        )
        .await?;
    times
        .time(
            "istio",
            install_istio(runner, settings, api.as_ref(), &kube),
        )
        .await?;
    let app = times
        .time("deploy", async {
            let (app, prepared) = super::prepare_app(runner, settings, &image)?;
            partial.app_namespace = Some(app.namespace.clone());
            super::apply_app(api.as_ref(), prepared).await?;
            super::wait_for_app(runner, settings, api.as_ref(), &app).await?;
            anyhow::Ok(app)
        })
        .await?;
    let ingress = times
        .time("ingress", async {
            let address = gateway_address(runner, settings, api.as_ref(), &cluster).await?;
            super::probe_route(runner, settings, api.as_ref(), address).await?;
            anyhow::Ok(address)
        })
        .await?;
    let running = Running {
        runner: runner.clone(),
        settings: settings.clone(),
        kube,
        api,
        app,
        image,
        ingress,
    };
    Ok((running, cluster))
}

async fn reap(runner: &Runner, settings: &Settings) -> Result<()> {
    let spared = match &settings.cluster {
        ClusterChoice::Reuse(name) | ClusterChoice::Named(name) => Some(name.as_str()),
        ClusterChoice::Generated => None,
    };
    match kind::reap_stale(runner, &settings.tools, &settings.state, spared).await {
        Ok(reaped) => {
            if !reaped.is_empty() {
                eprintln!("reaped kind clusters of killed runs: {}", reaped.join(", "));
            }
            Ok(())
        }
        Err(err) if runner.is_dry_run() => {
            println!("[dry-run] cannot list kind clusters ({err:#}); the plan assumes none");
            Ok(())
        }
        Err(err) => Err(err).context("reaping kind clusters left by killed runs"),
    }
}

async fn listed_clusters(runner: &Runner, settings: &Settings) -> Result<Vec<String>> {
    match kind::list_clusters(runner, &settings.tools).await {
        Ok(list) => Ok(list),
        Err(err) if runner.is_dry_run() => {
            println!("[dry-run] cannot list kind clusters ({err:#}); the plan assumes none");
            Ok(Vec::new())
        }
        Err(err) => Err(err),
    }
}

async fn create_or_reuse(
    runner: &Runner,
    settings: &Settings,
    partial: &mut Partial,
) -> Result<ClusterHandle> {
    let state = &settings.state;
    let (name, owned, marked) = match &settings.cluster {
        ClusterChoice::Generated => (
            kind::new_cluster_name(std::process::id(), kind::random_suffix()),
            true,
            true,
        ),
        ClusterChoice::Reuse(name) => (name.clone(), false, false),
        ClusterChoice::Named(name) => (name.clone(), true, false),
    };
    let handle = ClusterHandle {
        kubeconfig: state.kubeconfig(&name),
        name: name.clone(),
        owned,
    };
    let exists = listed_clusters(runner, settings).await?.contains(&name);
    if exists && matches!(settings.cluster, ClusterChoice::Generated) {
        bail!("a kind cluster named {name} already exists: refusing to reuse a generated name");
    }
    if exists {
        runner.step(format!(
            "reuse kind cluster {name} (it exists; {})",
            if owned {
                "`harness down` deletes it"
            } else {
                "E2E_CLUSTER: never deleted"
            }
        ));
        partial.cluster = Some(handle.clone());
        return Ok(handle);
    }
    let config = KindConfig::load(&settings.kind_config)?;
    kind::ensure_host_ports_free(runner, &settings.tools, &config).await?;
    if marked && !runner.is_dry_run() {
        // Before `kind create`, so a run killed during the create is still reaped later.
        state.write_marker(&name, &OwnerMarker::for_this_process())?;
    }
    if owned && !runner.is_dry_run() {
        partial.abort_cleanup = Some(register_abort_cleanup(settings, &handle));
    }
    // From here on a failed create may have left something: teardown checks the list.
    partial.cluster = Some(handle.clone());
    kind::create(runner, &settings.tools, &handle, &settings.kind_config).await?;
    Ok(handle)
}

/// What an interruption does with the cluster: keep it (saying how to reach it), or export its
/// logs and delete it, each bounded.
fn register_abort_cleanup(settings: &Settings, handle: &ClusterHandle) -> CleanupTicket {
    let keep = settings.keep.keeps(true);
    let tools = settings.tools.clone();
    let state = settings.state.clone();
    let artifacts = settings.artifacts.clone();
    let handle = handle.clone();
    let label = if keep {
        format!("keep kind cluster {}", handle.name)
    } else {
        format!("delete kind cluster {}", handle.name)
    };
    cleanup::register(label, move || {
        if keep {
            let _ = std::fs::remove_file(state.marker(&handle.name));
            eprintln!("{}", handle.reach_hint());
            return;
        }
        // The cluster's own logs first: once it is deleted nothing explains the run.
        let export = kind::export_logs_cmd(&tools, &handle.name, &artifacts.join("kind-logs"));
        // Shorter than an orderly export: an interrupted run's time is short.
        if let Err(err) = cleanup::run_blocking(&export, Duration::from_secs(90)) {
            eprintln!("warning: diagnostics: {err:#}");
        }
        let delete = kind::delete_cmd(&tools, &handle);
        let deleted = cleanup::run_blocking(&delete, delete.time_limit());
        // As in the orderly teardown, the listing decides (kind can fail after deleting the
        // nodes); a cluster still listed stays marked, so a later run reaps it.
        let listing = kind::list_clusters_cmd(&tools);
        let gone = cleanup::run_blocking(&listing, listing.time_limit())
            .map(|stdout| !kind::cluster_names(&stdout).contains(&handle.name));
        match (deleted, gone) {
            (_, Ok(true)) => state.forget(&handle.name),
            (Err(err), _) | (Ok(_), Err(err)) => eprintln!(
                "warning: {err:#}\n  delete it yourself: kind delete cluster --name {}",
                handle.name
            ),
            (Ok(_), Ok(false)) => eprintln!(
                "warning: kind cluster {} is still listed after `kind delete cluster`; delete it \
                 yourself: kind delete cluster --name {}",
                handle.name, handle.name
            ),
        }
    })
}

async fn install_istio(
    runner: &Runner,
    settings: &Settings,
    api: &dyn ClusterApi,
    kube: &KubeTarget,
) -> Result<()> {
    let wanted = settings.istio_version.clone();
    let reused = matches!(
        settings.cluster,
        ClusterChoice::Reuse(_) | ClusterChoice::Named(_)
    );
    let installed = if reused {
        api.installed_istio_version().await.unwrap_or(None)
    } else {
        None
    };
    if installed.as_deref() == Some(wanted.as_str()) {
        runner.step(format!(
            "Istio {wanted} is already installed in the reused cluster: skip istioctl install"
        ));
    } else {
        istioctl::install(runner, &settings.tools, kube, &wanted).await?;
    }
    runner.step(format!(
        "wait until Deployments {ISTIO_NAMESPACE}/{ISTIOD} and {ISTIO_NAMESPACE}/{INGRESS_GATEWAY} are Available"
    ));
    api.wait_control_plane(settings.timeouts.control_plane)
        .await
        .context("waiting for the Istio control plane")
}

/// The loopback address that reaches the gateway: the kind port mapping of its pinned nodePort,
/// after checking that the live Service and the node's published port agree with the files.
async fn gateway_address(
    runner: &Runner,
    settings: &Settings,
    api: &dyn ClusterApi,
    cluster: &ClusterHandle,
) -> Result<SocketAddr> {
    let config = KindConfig::load(&settings.kind_config)?;
    let overlay = &settings.istio_overlay;
    let node_port = gateway::gateway_node_port(overlay)?;
    let address = gateway::loopback_endpoint(&config, node_port)?;
    let node = kind::control_plane_container(&cluster.name);
    runner.step(format!(
        "check that the gateway Service's http2 nodePort is the containerPort {} maps, \
         and that node {node} publishes it there",
        config.path.display()
    ));
    let docker_port = |port: u16| kind::published_port_cmd(&settings.tools, &node, port);
    if runner.is_dry_run() {
        runner.run(&docker_port(node_port)).await?;
        return Ok(address);
    }
    let live = api
        .gateway_node_port()
        .await
        .context("reading the gateway's http2 nodePort before probing")?;
    // `docker port` exits 1 when nothing is published: that is an answer, not a failure.
    let published = match runner.run(&docker_port(live)).await {
        Ok(output) => Ok(output.stdout),
        Err(err) => Err(format!("{err:#}")),
    };
    gateway::verify_gateway_path(
        &config,
        overlay,
        live,
        &node,
        published.as_deref().map_err(String::as_str),
    )
}

/// `harness down --target kind`: deletes the `harness up` cluster (never an `E2E_CLUSTER` one)
/// and verifies it is gone.
pub(crate) async fn down(runner: &Runner, settings: &Settings) -> Result<()> {
    let (name, owned) = match &settings.cluster {
        ClusterChoice::Reuse(name) => (name.clone(), false),
        ClusterChoice::Named(name) => (name.clone(), true),
        ClusterChoice::Generated => (kind::CLI_CLUSTER_NAME.to_string(), true),
    };
    let handle = ClusterHandle {
        kubeconfig: settings.state.kubeconfig(&name),
        name: name.clone(),
        owned,
    };
    delete_or_keep(runner, settings, handle, false).await?;
    if owned && !runner.is_dry_run() {
        println!("kind cluster {name} is gone");
    }
    Ok(())
}

/// Deletes the cluster if it is the suite's to delete and `keep` does not say otherwise; a kept
/// or `E2E_CLUSTER` cluster is printed with how to reach it.
async fn delete_or_keep(
    runner: &Runner,
    settings: &Settings,
    handle: ClusterHandle,
    keep: bool,
) -> Result<()> {
    let state = &settings.state;
    if !handle.owned {
        runner.step(format!(
            "keep kind cluster {} (E2E_CLUSTER: never deleted)",
            handle.name
        ));
        if !runner.is_dry_run() {
            eprintln!("{}", handle.reach_hint());
        }
        return Ok(());
    }
    if keep {
        runner.step(format!("keep kind cluster {} (E2E_KEEP)", handle.name));
        if !runner.is_dry_run() {
            // A kept cluster is no longer reapable: its owner will be gone.
            let _ = std::fs::remove_file(state.marker(&handle.name));
            eprintln!("{}", handle.reach_hint());
        }
        return Ok(());
    }
    // A failed `kind create` cleans up after itself; delete only what is really there.
    if !runner.is_dry_run() {
        let listed = kind::list_clusters(runner, &settings.tools).await?;
        if !listed.contains(&handle.name) {
            eprintln!(
                "kind cluster {} does not exist: nothing to delete",
                handle.name
            );
            state.forget(&handle.name);
            return Ok(());
        }
    }
    kind::delete_verified(runner, &settings.tools, &handle).await?;
    if !runner.is_dry_run() {
        state.forget(&handle.name);
    }
    Ok(())
}

impl Environment for KindEnvironment {
    fn describe(&self) -> String {
        format!(
            "kind: cluster {} ({}), Istio {}, image {}",
            self.cluster.name,
            self.running.settings.versions.kind_node_image,
            self.running.settings.istio_version,
            self.running.image
        )
    }

    super::environment_from_running!();

    fn collect_diagnostics<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, ()> {
        Box::pin(super::collect(
            &self.running.runner,
            Some(self.diagnose()),
            dir,
        ))
    }

    fn teardown(&mut self, keep: bool) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.teardown_now(keep))
    }
}
