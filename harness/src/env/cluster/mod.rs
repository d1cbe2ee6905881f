//! The cluster targets, composed from the phases: `kind` (an ephemeral kind cluster with Istio
//! installed by istioctl) and `existing` (the current kube context, Istio already there, the
//! image from `E2E_IMAGE`). Both implement [`Environment`]; the `harness` CLI's
//! `up|down|status|dump --target kind|existing` are the `cli_*` functions here.
//!
//! Network calls to the cluster (the Kubernetes API, the ingress probe) go through
//! [`ClusterApi`] and the image build through [`Backend`], so the command phases (kind,
//! istioctl, docker) and their cleanup can be exercised with fake tools and no cluster.
//!
//! Dry run: only read-only queries run (tool lookup and versions, `kind get clusters`, reading
//! the kubeconfig's current context); every other step and command is printed in order and
//! nothing is created, deleted, built or written.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::Value;

use crate::checks::kubernetes::{self, MeshMerging};
use crate::config::knobs::{Keep, Knobs};
use crate::config::paths;
use crate::config::versions::Versions;
use crate::env::timings::Timings;
use crate::env::{BoxFuture, Environment, KubeCheck, KubeCheckOutcome};
use crate::exec::cleanup::{self, CleanupTicket};
use crate::exec::cmd::Runner;
use crate::k8s::apply::{self, AppPods, Applied};
use crate::k8s::diagnose::{self, DiagnoseTarget};
use crate::k8s::gateway;
use crate::manifest::{self, Resource};
use crate::tools::istioctl::{self, INGRESS_GATEWAY, ISTIO_NAMESPACE, ISTIOD, KubeTarget};
use crate::tools::kind::{self, CLI_CLUSTER_NAME, ClusterHandle, OwnerMarker, StateDir};
use crate::tools::preflight::{self, Missing, Needs, Tool, ToolSearch, Tools};

/// The image name a dry run plans with (the content tag is known only after the build).
pub const PLANNED_IMAGE: &str = "fft-service:CONTENT-TAG";

/// Calls to a running cluster.
pub trait ClusterApi: Send + Sync {
    /// istiod and the ingress gateway Deployments are Available.
    fn wait_control_plane(&self, timeout: Duration) -> BoxFuture<'_, Result<()>>;
    /// The tag of istiod's image (`1.31.1`), if istiod exists.
    fn installed_istio_version(&self) -> BoxFuture<'_, Result<Option<String>>>;
    fn apply(&self, documents: Vec<Value>) -> BoxFuture<'_, Result<Vec<Applied>>>;
    fn wait_rollout(
        &self,
        namespace: String,
        name: String,
        app: AppPods,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<()>>;
    fn wait_for_route(&self, ingress: SocketAddr, timeout: Duration) -> BoxFuture<'_, Result<()>>;
    /// A loopback address forwarded to the gateway pod (for clusters without a port mapping).
    fn forward_gateway(&self) -> BoxFuture<'_, Result<SocketAddr>>;
    fn delete_created(&self, applied: Vec<Applied>) -> BoxFuture<'_, Result<()>>;
    /// The article's `status.hostIP` + `http2` nodePort.
    fn article_endpoint(&self) -> BoxFuture<'_, Result<(String, u16)>>;
    /// The live gateway Service's `http2` nodePort.
    fn gateway_node_port(&self) -> BoxFuture<'_, Result<u16>>;
    /// The client behind this, for the Kubernetes checks (none for stand-ins).
    fn client(&self) -> Option<kube::Client>;
}

/// What brings the cluster and the image into being.
pub trait Backend: Send + Sync {
    /// Builds the service image and returns its content-tagged name.
    fn build_image<'a>(&'a self, runner: &'a Runner) -> BoxFuture<'a, Result<String>>;
    /// Connects to the cluster of `kubeconfig` (YAML; `None`: the default kubeconfig) at
    /// `context`.
    fn connect(
        &self,
        kubeconfig: Option<String>,
        context: String,
    ) -> BoxFuture<'_, Result<Arc<dyn ClusterApi>>>;
}

/// The real thing: testcontainers image build, kube-rs client.
pub struct LiveBackend;

impl Backend for LiveBackend {
    fn build_image<'a>(&'a self, runner: &'a Runner) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move { build_service_image(runner).await })
    }

    fn connect(
        &self,
        kubeconfig: Option<String>,
        context: String,
    ) -> BoxFuture<'_, Result<Arc<dyn ClusterApi>>> {
        Box::pin(async move {
            let client = live_client(kubeconfig, &context).await?;
            Ok(Arc::new(LiveApi {
                client,
                forward: Mutex::new(None),
            }) as Arc<dyn ClusterApi>)
        })
    }
}

/// The service image: the static binary, then the image from service/Dockerfile through
/// testcontainers, tagged by content.
async fn build_service_image(runner: &Runner) -> Result<String> {
    let built = crate::tools::image::build_image(runner)
        .await
        .context("building the service image")?;
    Ok(built.reference)
}

async fn live_client(kubeconfig: Option<String>, context: &str) -> Result<kube::Client> {
    let kubeconfig = match kubeconfig {
        Some(yaml) => Kubeconfig::from_yaml(&yaml).context("parsing the cluster's kubeconfig")?,
        None => Kubeconfig::read().context("reading the default kubeconfig")?,
    };
    let options = KubeConfigOptions {
        context: Some(context.to_string()),
        ..KubeConfigOptions::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .with_context(|| format!("loading kube context {context}"))?;
    kubernetes::client_from_config(config)
        .with_context(|| format!("building a client for context {context}"))
}

struct LiveApi {
    client: kube::Client,
    forward: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for LiveApi {
    fn drop(&mut self) {
        if let Some(task) = self.forward.lock().ok().and_then(|mut f| f.take()) {
            task.abort();
        }
    }
}

impl ClusterApi for LiveApi {
    fn wait_control_plane(&self, timeout: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(istioctl::wait_control_plane(&self.client, timeout))
    }

    fn installed_istio_version(&self) -> BoxFuture<'_, Result<Option<String>>> {
        Box::pin(async move {
            let api: Api<Deployment> = Api::namespaced(self.client.clone(), ISTIO_NAMESPACE);
            let istiod = api
                .get_opt(ISTIOD)
                .await
                .context("reading Deployment istiod")?;
            Ok(istiod.and_then(|d| {
                let image = d.spec?.template.spec?.containers.first()?.image.clone()?;
                image.rsplit_once(':').map(|(_, tag)| tag.to_string())
            }))
        })
    }

    fn apply(&self, documents: Vec<Value>) -> BoxFuture<'_, Result<Vec<Applied>>> {
        Box::pin(async move { apply::apply(&self.client, &documents).await })
    }

    fn wait_rollout(
        &self,
        namespace: String,
        name: String,
        app: AppPods,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            apply::wait_rollout(&self.client, &namespace, &name, &app, timeout).await
        })
    }

    fn wait_for_route(&self, ingress: SocketAddr, timeout: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(gateway::wait_for_route(ingress, timeout))
    }

    fn forward_gateway(&self) -> BoxFuture<'_, Result<SocketAddr>> {
        Box::pin(async move {
            let (address, task) = gateway::forward_gateway(&self.client).await?;
            if let Ok(mut slot) = self.forward.lock()
                && let Some(old) = slot.replace(task)
            {
                old.abort();
            }
            Ok(address)
        })
    }

    fn delete_created(&self, applied: Vec<Applied>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { apply::delete_created(&self.client, &applied).await })
    }

    fn article_endpoint(&self) -> BoxFuture<'_, Result<(String, u16)>> {
        Box::pin(gateway::live_article_endpoint(&self.client))
    }

    fn gateway_node_port(&self) -> BoxFuture<'_, Result<u16>> {
        Box::pin(gateway::live_gateway_node_port(&self.client))
    }

    fn client(&self) -> Option<kube::Client> {
        Some(self.client.clone())
    }
}

/// Dry run: the build is a printed step and the cluster calls do nothing (the orchestration
/// prints each one).
pub struct DryRunBackend;

struct DryRunApi;

impl Backend for DryRunBackend {
    fn build_image<'a>(&'a self, runner: &'a Runner) -> BoxFuture<'a, Result<String>> {
        // The image module plans its own commands in dry-run mode.
        Box::pin(async move {
            build_service_image(runner).await?;
            Ok(PLANNED_IMAGE.to_string())
        })
    }

    fn connect(&self, _: Option<String>, _: String) -> BoxFuture<'_, Result<Arc<dyn ClusterApi>>> {
        Box::pin(async { Ok(Arc::new(DryRunApi) as Arc<dyn ClusterApi>) })
    }
}

impl ClusterApi for DryRunApi {
    fn wait_control_plane(&self, _: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn installed_istio_version(&self) -> BoxFuture<'_, Result<Option<String>>> {
        Box::pin(async { Ok(None) })
    }
    fn apply(&self, _: Vec<Value>) -> BoxFuture<'_, Result<Vec<Applied>>> {
        Box::pin(async { Ok(Vec::new()) })
    }
    fn wait_rollout(
        &self,
        _: String,
        _: String,
        _: AppPods,
        _: Duration,
    ) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn wait_for_route(&self, _: SocketAddr, _: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn forward_gateway(&self) -> BoxFuture<'_, Result<SocketAddr>> {
        Box::pin(async { Ok(SocketAddr::from(([127, 0, 0, 1], 0))) })
    }
    fn delete_created(&self, _: Vec<Applied>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn article_endpoint(&self) -> BoxFuture<'_, Result<(String, u16)>> {
        Box::pin(async { bail!("a dry run has no cluster to ask") })
    }
    fn gateway_node_port(&self) -> BoxFuture<'_, Result<u16>> {
        Box::pin(async { bail!("a dry run has no cluster to ask") })
    }
    fn client(&self) -> Option<kube::Client> {
        None
    }
}

/// Which cluster target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Kind,
    Existing,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Kind => "kind",
            Mode::Existing => "existing",
        }
    }
}

/// How long each wait may take.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub control_plane: Duration,
    pub rollout: Duration,
    pub route: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            control_plane: Duration::from_secs(300),
            rollout: Duration::from_secs(180),
            route: Duration::from_secs(60),
        }
    }
}

/// How the cluster is named and whether it is the suite's to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterChoice {
    /// `istio-fft-e2e-<pid>-<random>` with an owner marker: reaped if this run is killed.
    Generated,
    /// `E2E_CLUSTER`: created if absent, reused if present, never deleted.
    Reuse(String),
    /// A fixed name without a marker (`harness up`): deleted only by `harness down`.
    Named(String),
}

/// Everything a cluster environment is brought up with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mode: Mode,
    pub keep: Keep,
    pub cluster: ClusterChoice,
    /// `E2E_IMAGE` (existing target): deployed as it is, nothing built.
    pub image: Option<String>,
    pub artifacts: PathBuf,
    pub state: StateDir,
    pub tools: Tools,
    pub versions: Versions,
    pub istio_version: String,
    pub kind_config: PathBuf,
    pub istio_overlay: PathBuf,
    pub app_manifest: PathBuf,
    pub timeouts: Timeouts,
    /// The existing target's context (the kubeconfig's current one).
    pub existing_context: Option<String>,
    /// `E2E_OFFLINE=1`: kind only with its node image already present.
    pub offline: bool,
}

impl Settings {
    /// From the `E2E_*` knobs, `versions.env` and the tools found in `.tools/bin` and on PATH.
    pub fn from_knobs(mode: Mode, knobs: &Knobs) -> Result<Self> {
        let versions = Versions::load()?;
        let istio_version = versions.istio_to_install();
        let tools = Tools::resolve(&ToolSearch::from_env(), &istio_version);
        let existing_context = match mode {
            Mode::Existing => Some(current_context()?),
            Mode::Kind => None,
        };
        Ok(Settings {
            mode,
            keep: knobs.keep,
            cluster: match &knobs.cluster {
                Some(name) => ClusterChoice::Reuse(name.clone()),
                None => ClusterChoice::Generated,
            },
            image: knobs.image.clone(),
            artifacts: knobs.artifacts.clone(),
            state: StateDir::new(kind::default_state_dir()),
            tools,
            versions,
            istio_version,
            kind_config: kind::KindConfig::default_path(),
            istio_overlay: istioctl::install_overlay(),
            app_manifest: paths::manifests_dir().join("app.yaml"),
            timeouts: Timeouts::default(),
            existing_context,
            offline: knobs.offline,
        })
    }
}

/// The kubeconfig's current context, named explicitly from then on so that switching contexts
/// during a run cannot redirect it.
pub fn current_context() -> Result<String> {
    let kubeconfig = Kubeconfig::read().context(
        "E2E_TARGET=existing reads the current kube context: no kubeconfig found (KUBECONFIG or ~/.kube/config)",
    )?;
    kubeconfig
        .current_context
        .filter(|c| !c.is_empty())
        .context("the kubeconfig has no current-context: `kubectl config use-context <name>`")
}

/// The app as the manifests describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppInfo {
    pub namespace: String,
    pub deployment: String,
    /// The container that runs our image.
    pub container: String,
}

/// Finds the Deployment that runs `fft-service` in the manifests.
pub fn app_info(documents: &[manifest::Document]) -> Result<AppInfo> {
    for document in documents {
        let Resource::Deployment(deployment) = &document.resource else {
            continue;
        };
        let container = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| {
                s.containers.iter().find(|c| {
                    c.image
                        .as_deref()
                        .is_some_and(|i| i.contains(apply::IMAGE_REPOSITORY))
                })
            });
        if let Some(container) = container {
            return Ok(AppInfo {
                namespace: document.namespace().unwrap_or("default").to_string(),
                deployment: document.name().to_string(),
                container: container.name.clone(),
            });
        }
    }
    bail!(
        "no Deployment in the manifests runs an `{}` image",
        apply::IMAGE_REPOSITORY
    )
}

/// A kind or existing cluster with Istio and the app, ready for the scenarios.
pub struct ClusterEnvironment {
    runner: Runner,
    settings: Settings,
    cluster: Option<ClusterHandle>,
    kube_target: Option<KubeTarget>,
    api: Option<Arc<dyn ClusterApi>>,
    app: Option<AppInfo>,
    image: Option<String>,
    ingress: Option<SocketAddr>,
    applied: Vec<Applied>,
    timings: Timings,
    abort_cleanup: Option<CleanupTicket>,
    torn_down: bool,
}

/// The kind target.
pub type KindEnvironment = ClusterEnvironment;
/// The existing target.
pub type ExistingEnvironment = ClusterEnvironment;

impl ClusterEnvironment {
    /// Brings the environment up with the real backend, or the dry-run one for a dry runner.
    pub async fn up(runner: Runner, settings: Settings) -> Result<Self> {
        if runner.is_dry_run() {
            Self::up_with(runner, settings, &DryRunBackend).await
        } else {
            Self::up_with(runner, settings, &LiveBackend).await
        }
    }

    /// Brings the environment up. On failure, collects diagnostics, cleans up what was created
    /// (or keeps it, per `E2E_KEEP`), and returns the first error.
    pub async fn up_with(
        runner: Runner,
        settings: Settings,
        backend: &dyn Backend,
    ) -> Result<Self> {
        let mut env = ClusterEnvironment {
            runner,
            settings,
            cluster: None,
            kube_target: None,
            api: None,
            app: None,
            image: None,
            ingress: None,
            applied: Vec::new(),
            timings: Timings::default(),
            abort_cleanup: None,
            torn_down: false,
        };
        let result = match env.settings.mode {
            Mode::Kind => env.bring_up_kind(backend).await,
            Mode::Existing => env.bring_up_existing(backend).await,
        };
        match result {
            Ok(()) => {
                env.write_timings();
                Ok(env)
            }
            Err(err) => {
                if !env.runner.is_dry_run() && env.kube_target.is_some() {
                    let dir = env.settings.artifacts.clone();
                    env.collect(&dir).await;
                }
                let keep = env.settings.keep.keeps(true);
                if let Err(cleanup) = env.teardown_now(keep).await {
                    eprintln!("warning: cleaning up after the failed start: {cleanup:#}");
                }
                Err(err)
            }
        }
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    pub fn cluster(&self) -> Option<&ClusterHandle> {
        self.cluster.as_ref()
    }

    pub fn image(&self) -> Option<&str> {
        self.image.as_deref()
    }

    pub fn timings(&self) -> &Timings {
        &self.timings
    }

    pub fn api(&self) -> Option<Arc<dyn ClusterApi>> {
        self.api.clone()
    }

    fn preflight_needs(&self) -> Needs {
        match self.settings.mode {
            Mode::Kind => Needs::Kind,
            Mode::Existing => Needs::Existing,
        }
    }

    async fn preflight(&mut self) -> Result<()> {
        let mut report = preflight::check(
            &self.runner,
            &self.settings.tools,
            &self.settings.versions,
            self.preflight_needs(),
        )
        .await;
        if self.settings.offline && self.settings.mode == Mode::Kind {
            preflight::check_offline_kind(
                &self.runner,
                &self.settings.tools,
                &self.settings.versions.kind_node_image,
                &mut report,
            )
            .await;
        }
        report.print();
        if report.missing.is_empty() {
            return Ok(());
        }
        let listed = preflight::describe_missing(&report.missing);
        if self.runner.is_dry_run() {
            println!("[dry-run] prerequisites missing (a real run stops here):\n{listed}");
            return Ok(());
        }
        bail!(
            "the {} target's prerequisites are missing:\n{listed}",
            self.settings.mode.as_str()
        )
    }

    async fn bring_up_kind(&mut self, backend: &dyn Backend) -> Result<()> {
        let runner = self.runner.clone();
        let mut timings = std::mem::take(&mut self.timings);
        let result = async {
            timings.time("preflight", self.preflight()).await?;
            timings.time("reap", self.reap()).await?;
            let image = timings.time("image", backend.build_image(&runner)).await?;
            self.image = Some(image.clone());
            timings
                .time("cluster", self.create_or_reuse_cluster())
                .await?;
            timings.time("connect", self.connect_kind(backend)).await?;
            timings.time("load", self.load_image(&image)).await?;
            timings.time("istio", self.install_istio()).await?;
            timings.time("deploy", self.deploy(&image)).await?;
            timings.time("ingress", self.kind_ingress()).await
        }
        .await;
        self.timings = timings;
        result
    }

    async fn bring_up_existing(&mut self, backend: &dyn Backend) -> Result<()> {
        let mut timings = std::mem::take(&mut self.timings);
        let result = async {
            timings.time("preflight", self.preflight()).await?;
            let image = self.settings.image.clone().context(
                "E2E_TARGET=existing deploys the image named by E2E_IMAGE (one the cluster can \
                 pull, tagged by content, never :latest): set E2E_IMAGE",
            )?;
            self.image = Some(image.clone());
            timings
                .time("connect", self.connect_existing(backend))
                .await?;
            timings.time("istio", self.check_istio_present()).await?;
            timings.time("deploy", self.deploy(&image)).await?;
            timings.time("ingress", self.existing_ingress()).await
        }
        .await;
        self.timings = timings;
        result
    }

    async fn reap(&mut self) -> Result<()> {
        let spared = match &self.settings.cluster {
            ClusterChoice::Reuse(name) | ClusterChoice::Named(name) => Some(name.as_str()),
            ClusterChoice::Generated => None,
        };
        match kind::reap_stale(
            &self.runner,
            &self.settings.tools,
            &self.settings.state,
            spared,
        )
        .await
        {
            Ok(reaped) => {
                if !reaped.is_empty() {
                    eprintln!("reaped kind clusters of killed runs: {}", reaped.join(", "));
                }
                Ok(())
            }
            Err(err) if self.runner.is_dry_run() => {
                println!("[dry-run] cannot list kind clusters ({err:#}); the plan assumes none");
                Ok(())
            }
            Err(err) => Err(err).context("reaping kind clusters left by killed runs"),
        }
    }

    async fn existing_clusters(&self) -> Result<Vec<String>> {
        match kind::list_clusters(&self.runner, &self.settings.tools).await {
            Ok(list) => Ok(list),
            Err(err) if self.runner.is_dry_run() => {
                println!("[dry-run] cannot list kind clusters ({err:#}); the plan assumes none");
                Ok(Vec::new())
            }
            Err(err) => Err(err),
        }
    }

    async fn create_or_reuse_cluster(&mut self) -> Result<()> {
        let state = self.settings.state.clone();
        let (name, owned, marked) = match &self.settings.cluster {
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
        let exists = self.existing_clusters().await?.contains(&name);
        if exists && matches!(self.settings.cluster, ClusterChoice::Generated) {
            bail!("a kind cluster named {name} already exists: refusing to reuse a generated name");
        }
        if exists {
            self.runner.step(format!(
                "reuse kind cluster {name} (it exists; {})",
                if owned {
                    "`harness down` deletes it"
                } else {
                    "E2E_CLUSTER: never deleted"
                }
            ));
            self.cluster = Some(handle);
            return Ok(());
        }
        let config = kind::KindConfig::load(&self.settings.kind_config)?;
        kind::ensure_host_ports_free(&self.runner, &self.settings.tools, &config).await?;
        if marked && !self.runner.is_dry_run() {
            // Before `kind create`, so a run killed during the create is still reaped later.
            state.write_marker(&name, &OwnerMarker::for_this_process())?;
        }
        if owned && !self.runner.is_dry_run() {
            self.register_abort_cleanup(&handle);
        }
        // From here on a failed create may have left something: teardown checks the list.
        self.cluster = Some(handle.clone());
        kind::create(
            &self.runner,
            &self.settings.tools,
            &handle,
            &self.settings.kind_config,
        )
        .await
    }

    fn register_abort_cleanup(&mut self, handle: &ClusterHandle) {
        let keep = self.settings.keep.keeps(true);
        let kind = self.settings.tools.cmd(Tool::Kind);
        let state = self.settings.state.clone();
        let artifacts = self.settings.artifacts.clone();
        let handle = handle.clone();
        let label = if keep {
            format!("keep kind cluster {}", handle.name)
        } else {
            format!("delete kind cluster {}", handle.name)
        };
        let ticket = cleanup::register(label, move || {
            if keep {
                let _ = std::fs::remove_file(state.marker(&handle.name));
                eprintln!("{}", handle.reach_hint());
                return;
            }
            // The cluster's own logs first: once it is deleted nothing explains the run.
            let export = kind
                .clone()
                .args(["export", "logs"])
                .arg(artifacts.join("kind-logs"))
                .args(["--name", &handle.name]);
            if let Err(err) = cleanup::run_blocking(&export, Duration::from_secs(90)) {
                eprintln!("warning: diagnostics: {err:#}");
            }
            let delete = kind
                .clone()
                .args(["delete", "cluster", "--name", &handle.name, "--kubeconfig"])
                .arg(&handle.kubeconfig);
            match cleanup::run_blocking(&delete, Duration::from_secs(180)) {
                Ok(_) => state.forget(&handle.name),
                Err(err) => eprintln!(
                    "warning: {err:#}\n  delete it yourself: kind delete cluster --name {}",
                    handle.name
                ),
            }
        });
        self.abort_cleanup = Some(ticket);
    }

    async fn connect_kind(&mut self, backend: &dyn Backend) -> Result<()> {
        let handle = self.cluster.clone().context("no cluster to connect to")?;
        let kubeconfig =
            kind::write_kubeconfig(&self.runner, &self.settings.tools, &handle).await?;
        let target = KubeTarget {
            kubeconfig: Some(handle.kubeconfig.clone()),
            context: handle.context(),
        };
        self.runner.step(format!(
            "connect to the Kubernetes API of context {}",
            target.context
        ));
        self.kube_target = Some(target.clone());
        let yaml = (!kubeconfig.is_empty()).then_some(kubeconfig);
        self.api = Some(
            backend
                .connect(yaml, target.context.clone())
                .await
                .with_context(|| format!("connecting to kind cluster {}", handle.name))?,
        );
        Ok(())
    }

    async fn connect_existing(&mut self, backend: &dyn Backend) -> Result<()> {
        let context = self
            .settings
            .existing_context
            .clone()
            .context("the existing target needs a kube context")?;
        self.runner.step(format!(
            "connect to the Kubernetes API of the current context {context}"
        ));
        self.kube_target = Some(KubeTarget {
            kubeconfig: None,
            context: context.clone(),
        });
        self.api = Some(
            backend
                .connect(None, context.clone())
                .await
                .with_context(|| format!("connecting to context {context}"))?,
        );
        Ok(())
    }

    async fn load_image(&mut self, image: &str) -> Result<()> {
        let handle = self.cluster.clone().context("no cluster to load into")?;
        kind::load_image(
            &self.runner,
            &self.settings.tools,
            &self.settings.state,
            image,
            &handle.name,
        )
        .await
    }

    fn api_or_err(&self) -> Result<Arc<dyn ClusterApi>> {
        self.api.clone().context("not connected to a cluster")
    }

    async fn install_istio(&mut self) -> Result<()> {
        let api = self.api_or_err()?;
        let target = self.kube_target.clone().context("no kube target")?;
        let wanted = self.settings.istio_version.clone();
        let reused = matches!(
            self.settings.cluster,
            ClusterChoice::Reuse(_) | ClusterChoice::Named(_)
        );
        let installed = if reused {
            api.installed_istio_version().await.unwrap_or(None)
        } else {
            None
        };
        if installed.as_deref() == Some(wanted.as_str()) {
            self.runner.step(format!(
                "Istio {wanted} is already installed in the reused cluster: skip istioctl install"
            ));
        } else {
            istioctl::install(&self.runner, &self.settings.tools, &target, &wanted).await?;
        }
        self.runner.step(format!(
            "wait until Deployments {ISTIO_NAMESPACE}/{ISTIOD} and {ISTIO_NAMESPACE}/{INGRESS_GATEWAY} are Available"
        ));
        api.wait_control_plane(self.settings.timeouts.control_plane)
            .await
            .context("waiting for the Istio control plane")
    }

    async fn check_istio_present(&mut self) -> Result<()> {
        let api = self.api_or_err()?;
        self.runner.step(format!(
            "check that Deployments {ISTIO_NAMESPACE}/{ISTIOD} and {ISTIO_NAMESPACE}/{INGRESS_GATEWAY} are Available"
        ));
        api.wait_control_plane(Duration::from_secs(30)).await.context(
            "E2E_TARGET=existing expects Istio already installed in the current context \
             (install it with `istioctl install -f manifests/istio-install.yaml`, or use E2E_TARGET=kind)",
        )
    }

    async fn deploy(&mut self, image: &str) -> Result<()> {
        let api = self.api_or_err()?;
        let documents = manifest::load_file(&self.settings.app_manifest)?;
        let app = app_info(&documents)?;
        let prepared = apply::prepare(&documents, image)?;
        for document in &prepared {
            self.runner.step(format!(
                "server-side apply (field manager {}) {} {}{}",
                apply::FIELD_MANAGER,
                document["kind"].as_str().unwrap_or("?"),
                document
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(|n| format!("{n}/"))
                    .unwrap_or_default(),
                document
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("?"),
            ));
        }
        self.app = Some(app.clone());
        let applied = api.apply(prepared).await;
        // Record even a partial apply for teardown: the trait returns only on success, so a
        // failure leaves the namespace to the cluster's deletion (kind) or the error message.
        let applied = applied.context("applying the app's manifests")?;
        self.applied = applied;
        if self.settings.mode == Mode::Existing && !self.runner.is_dry_run() {
            self.record_existing_applied()?;
        }
        self.runner.step(format!(
            "wait until Deployment {}/{} has every replica available and every pod ready with its sidecar",
            app.namespace, app.deployment
        ));
        let pods = AppPods {
            container: app.container,
            image_preloaded: self.settings.mode == Mode::Kind,
        };
        api.wait_rollout(
            app.namespace,
            app.deployment,
            pods,
            self.settings.timeouts.rollout,
        )
        .await
    }

    fn applied_record(&self) -> Option<PathBuf> {
        let context = self.settings.existing_context.as_deref()?;
        Some(existing_applied_file(&self.settings.state, context))
    }

    /// The existing target remembers what it created, so `harness down` and an interrupted run
    /// delete exactly that.
    fn record_existing_applied(&mut self) -> Result<()> {
        let Some(file) = self.applied_record() else {
            return Ok(());
        };
        std::fs::create_dir_all(&self.settings.state.dir)?;
        std::fs::write(&file, serde_json::to_vec_pretty(&self.applied)?)
            .with_context(|| format!("writing {}", file.display()))?;
        let keep = self.settings.keep.keeps(true);
        let created: Vec<Applied> = self.applied.iter().filter(|a| a.created).cloned().collect();
        if keep || created.is_empty() {
            return Ok(());
        }
        let kubectl = self.settings.tools.cmd(Tool::Kubectl);
        let have_kubectl = self.settings.tools.path_of(Tool::Kubectl).is_some();
        let target = self.kube_target.clone().context("no kube target")?;
        let ticket = cleanup::register("delete what the suite applied", move || {
            for object in created.iter().rev() {
                let delete = kubectl
                    .clone()
                    .args(target.flags())
                    .args(kubectl_delete_args(object));
                if !have_kubectl {
                    eprintln!("kubectl not found; delete it yourself: {delete}");
                    continue;
                }
                if let Err(err) = cleanup::run_blocking(&delete, Duration::from_secs(60)) {
                    eprintln!("warning: {err:#}");
                }
            }
        });
        self.abort_cleanup = Some(ticket);
        Ok(())
    }

    async fn kind_ingress(&mut self) -> Result<()> {
        let api = self.api_or_err()?;
        let config = kind::KindConfig::load(&self.settings.kind_config)?;
        let overlay = &self.settings.istio_overlay;
        let node_port = gateway::gateway_node_port(overlay)?;
        let mut address = gateway::loopback_endpoint(&config, node_port)?;
        let node = kind::control_plane_container(
            &self.cluster.as_ref().context("no cluster to probe")?.name,
        );
        self.runner.step(format!(
            "check that the gateway Service's http2 nodePort is the containerPort {} maps, \
             and that node {node} publishes it there",
            config.path.display()
        ));
        let docker_port = |port: u16| {
            self.settings
                .tools
                .cmd(Tool::Docker)
                .arg("port")
                .arg(&node)
                .arg(format!("{port}/tcp"))
                .timeout(Duration::from_secs(20))
        };
        if self.runner.is_dry_run() {
            self.runner.run(&docker_port(node_port)).await?;
        } else {
            let live = api
                .gateway_node_port()
                .await
                .context("reading the gateway's http2 nodePort before probing")?;
            // `docker port` exits 1 when nothing is published: that is an answer, not a failure.
            let published = match self.runner.run(&docker_port(live)).await {
                Ok(output) => Ok(output.stdout),
                Err(err) => Err(format!("{err:#}")),
            };
            address = gateway::verify_gateway_path(
                &config,
                overlay,
                live,
                &node,
                published.as_deref().map_err(String::as_str),
            )?;
        }
        self.runner.step(format!(
            "probe http://{address}{} through the gateway until the app answers",
            gateway::ROUTED_PATH
        ));
        self.ingress = Some(address);
        api.wait_for_route(address, self.settings.timeouts.route)
            .await
    }

    async fn existing_ingress(&mut self) -> Result<()> {
        let api = self.api_or_err()?;
        self.runner.step(format!(
            "port-forward a loopback port to the ingress gateway pod's {}",
            gateway::GATEWAY_TARGET_PORT
        ));
        let address = api.forward_gateway().await?;
        self.runner.step(format!(
            "probe http://{address}{} through the gateway until the app answers",
            gateway::ROUTED_PATH
        ));
        self.ingress = Some(address);
        api.wait_for_route(address, self.settings.timeouts.route)
            .await
    }

    fn diagnose_target(&self) -> Option<DiagnoseTarget> {
        Some(DiagnoseTarget {
            tools: self.settings.tools.clone(),
            kube: self.kube_target.clone()?,
            kind_cluster: match self.settings.mode {
                Mode::Kind => self.cluster.as_ref().map(|c| c.name.clone()),
                Mode::Existing => None,
            },
            app_namespace: self
                .app
                .as_ref()
                .map(|a| a.namespace.clone())
                .unwrap_or_else(|| "wty-istio".into()),
        })
    }

    async fn collect(&self, dir: &Path) {
        match self.diagnose_target() {
            Some(target) => {
                diagnose::collect(&self.runner, &target, dir).await;
                self.write_timings();
            }
            None => eprintln!("no cluster was reached: no diagnostics to collect"),
        }
    }

    fn write_timings(&self) {
        if self.runner.is_dry_run() {
            return;
        }
        match self
            .timings
            .write_json(&self.settings.artifacts, self.settings.mode.as_str())
        {
            Ok(path) => eprintln!("timings written to {}", path.display()),
            Err(err) => eprintln!("warning: {err:#}"),
        }
    }

    /// The orderly teardown, idempotent and bounded.
    pub async fn teardown_now(&mut self, keep: bool) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(cleanup::TEARDOWN_TIMEOUT, self.teardown_inner(keep))
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "teardown did not finish within {:?}",
                    cleanup::TEARDOWN_TIMEOUT
                ))
            });
        if let Some(ticket) = self.abort_cleanup.take() {
            cleanup::unregister(ticket);
        }
        self.timings
            .record("teardown", started.elapsed(), result.is_ok());
        self.write_timings();
        result
    }

    async fn teardown_inner(&mut self, keep: bool) -> Result<()> {
        match self.settings.mode {
            Mode::Kind => self.teardown_kind(keep).await,
            Mode::Existing => self.teardown_existing(keep).await,
        }
    }

    async fn teardown_kind(&mut self, keep: bool) -> Result<()> {
        let Some(handle) = self.cluster.take() else {
            return Ok(());
        };
        let state = &self.settings.state;
        if !handle.owned {
            self.runner.step(format!(
                "keep kind cluster {} (E2E_CLUSTER: never deleted)",
                handle.name
            ));
            if !self.runner.is_dry_run() {
                eprintln!("{}", handle.reach_hint());
            }
            return Ok(());
        }
        if keep {
            self.runner
                .step(format!("keep kind cluster {} (E2E_KEEP)", handle.name));
            if !self.runner.is_dry_run() {
                // A kept cluster is no longer reapable: its owner will be gone.
                let _ = std::fs::remove_file(state.marker(&handle.name));
            }
            if !self.runner.is_dry_run() {
                eprintln!("{}", handle.reach_hint());
            }
            return Ok(());
        }
        // A failed `kind create` cleans up after itself; delete only what is really there.
        if !self.runner.is_dry_run() {
            let listed = kind::list_clusters(&self.runner, &self.settings.tools).await?;
            if !listed.contains(&handle.name) {
                eprintln!(
                    "kind cluster {} does not exist: nothing to delete",
                    handle.name
                );
                state.forget(&handle.name);
                return Ok(());
            }
        }
        kind::delete_verified(&self.runner, &self.settings.tools, &handle).await?;
        if !self.runner.is_dry_run() {
            state.forget(&handle.name);
        }
        Ok(())
    }

    async fn teardown_existing(&mut self, keep: bool) -> Result<()> {
        let applied = std::mem::take(&mut self.applied);
        if keep {
            if !applied.is_empty() {
                let context = self
                    .kube_target
                    .as_ref()
                    .map(|t| t.context.as_str())
                    .unwrap_or("?");
                eprintln!(
                    "kept what the suite applied in context {context}; remove it with: \
                     harness down --target existing"
                );
            }
            return Ok(());
        }
        let created: Vec<Applied> = applied.into_iter().filter(|a| a.created).collect();
        for object in created.iter().rev() {
            self.runner.step(format!("delete {}", object.describe()));
        }
        if let Some(api) = &self.api {
            api.delete_created(created).await?;
        }
        if let Some(file) = self.applied_record()
            && !self.runner.is_dry_run()
        {
            let _ = std::fs::remove_file(file);
        }
        Ok(())
    }

    /// kind: the suite installed Istio from the overlay, so the overlay says; existing: unknown.
    fn mesh_merging(&self) -> Result<MeshMerging> {
        match self.settings.mode {
            Mode::Kind => kubernetes::mesh_merging_from_overlay(&self.settings.istio_overlay),
            Mode::Existing => Ok(MeshMerging::Unknown),
        }
    }

    fn app_or_err(&self) -> Result<&AppInfo> {
        self.app.as_ref().context("the app was not deployed")
    }

    async fn run_kube_check(&self, check: KubeCheck) -> Result<KubeCheckOutcome> {
        let api = self.api_or_err()?;
        let Some(client) = api.client() else {
            return Ok(KubeCheckOutcome::NotApplicable {
                reason: "no Kubernetes API client in this run".into(),
            });
        };
        let app = self.app_or_err()?;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &app.namespace);
        let deployment = deployments
            .get(&app.deployment)
            .await
            .with_context(|| format!("reading Deployment {}/{}", app.namespace, app.deployment))?;
        let pods = kubernetes::deployment_pods(&client, &deployment).await?;
        if pods.is_empty() {
            bail!(
                "Deployment {}/{} has no pods",
                app.namespace,
                app.deployment
            );
        }
        let detail = match check {
            KubeCheck::SidecarsInjected => {
                let mut places = BTreeMap::new();
                for pod in &pods {
                    *places
                        .entry(format!("{:?}", kubernetes::sidecar_injected(pod)?))
                        .or_insert(0) += 1;
                }
                format!("{} pods injected: {places:?}", pods.len())
            }
            KubeCheck::ScrapeAnnotations => {
                kubernetes::template_scrape_annotations(&deployment)?;
                let verdict = kubernetes::scrape_verdict(&deployment, &pods, self.mesh_merging()?)?;
                format!(
                    "template keeps the article's annotations; all {} pods {:?} ({:?})",
                    verdict.pods, verdict.state, verdict.expectation
                )
            }
            KubeCheck::MergedMetricsServeAppMetrics => {
                let verdict = kubernetes::scrape_verdict(&deployment, &pods, self.mesh_merging()?)?;
                if let Some(reason) = verdict.unmerged_reason() {
                    return Ok(KubeCheckOutcome::NotApplicable { reason });
                }
                let mut checked = 0;
                for pod in &pods {
                    let name = pod.metadata.name.as_deref().unwrap_or("?");
                    let text = kubernetes::pod_http_get(
                        &client,
                        &app.namespace,
                        name,
                        kubernetes::MERGED_METRICS_PORT,
                        kubernetes::MERGED_METRICS_PATH,
                    )
                    .await?;
                    kubernetes::contains_app_metrics(&text)
                        .with_context(|| format!("pod {name} :15020/stats/prometheus"))?;
                    checked += 1;
                }
                format!(
                    "{checked} pods serve {:?} on :15020/stats/prometheus",
                    kubernetes::APP_METRIC_FAMILIES
                )
            }
            KubeCheck::PodsRunBuiltImage => {
                let image = self.image.as_deref().context("no image was deployed")?;
                for pod in &pods {
                    kubernetes::pod_runs_image(pod, &app.container, image)?;
                }
                format!("{} pods run {image}", pods.len())
            }
        };
        Ok(KubeCheckOutcome::Passed { detail })
    }

    async fn fetch_replica_metrics(&self) -> Result<BTreeMap<String, String>> {
        let api = self.api_or_err()?;
        let client = api
            .client()
            .context("no Kubernetes API client in this run")?;
        let app = self.app_or_err()?;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &app.namespace);
        let deployment = deployments.get(&app.deployment).await?;
        let mut metrics = BTreeMap::new();
        for pod in kubernetes::deployment_pods(&client, &deployment).await? {
            // REPLICA_NAME is the pod name, so this key is what `x-served-by` reports.
            let name = pod.metadata.name.clone().unwrap_or_default();
            let text =
                kubernetes::pod_http_get(&client, &app.namespace, &name, 8080, "/metrics").await?;
            metrics.insert(name, text);
        }
        Ok(metrics)
    }
}

impl Environment for ClusterEnvironment {
    fn describe(&self) -> String {
        match self.settings.mode {
            Mode::Kind => format!(
                "kind: cluster {} ({}), Istio {}, image {}",
                self.cluster
                    .as_ref()
                    .map(|c| c.name.as_str())
                    .unwrap_or("?"),
                self.settings.versions.kind_node_image,
                self.settings.istio_version,
                self.image.as_deref().unwrap_or("?")
            ),
            Mode::Existing => format!(
                "existing: context {}, image {}",
                self.settings.existing_context.as_deref().unwrap_or("?"),
                self.image.as_deref().unwrap_or("?")
            ),
        }
    }

    fn ingress(&self) -> SocketAddr {
        self.ingress
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    fn replica_metrics(&self) -> BoxFuture<'_, Result<BTreeMap<String, String>>> {
        Box::pin(self.fetch_replica_metrics())
    }

    fn kube_check(&self, check: KubeCheck) -> BoxFuture<'_, Result<KubeCheckOutcome>> {
        Box::pin(self.run_kube_check(check))
    }

    fn collect_diagnostics<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, ()> {
        Box::pin(self.collect(dir))
    }

    fn teardown(&mut self, keep: bool) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.teardown_now(keep))
    }
}

/// `kubectl delete` arguments for one applied object (`Deployment.v1.apps/name -n ns`).
pub fn kubectl_delete_args(object: &Applied) -> Vec<String> {
    let resource = match object.api_version.rsplit_once('/') {
        Some((group, version)) => format!("{}.{version}.{group}/{}", object.kind, object.name),
        None => format!("{}/{}", object.kind, object.name),
    };
    let mut args = vec!["delete".to_string(), resource];
    if let Some(ns) = &object.namespace {
        args.extend(["-n".to_string(), ns.clone()]);
    }
    args.extend(["--ignore-not-found".to_string(), "--wait=false".to_string()]);
    args
}

pub fn existing_applied_file(state: &StateDir, context: &str) -> PathBuf {
    let safe: String = context
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    state.dir.join(format!("existing-{safe}.applied.json"))
}

/// `E2E_TARGET=kind` without `E2E_REQUIRE`, and prerequisites are missing: the suite reports
/// itself skipped with these reasons.
#[derive(Debug, thiserror::Error)]
#[error(
    "the kind target is skipped: its prerequisites are missing (E2E_REQUIRE=1 fails instead):\n{reasons}"
)]
pub struct Skipped {
    pub reasons: String,
}

/// What target selection decides for `kind` given its prerequisites.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KindDecision {
    UseKind,
    /// `auto`: fall back to `local`, saying why.
    FallBackToLocal {
        reasons: String,
    },
    /// `E2E_TARGET=kind` without `E2E_REQUIRE`: skip, saying why.
    Skip {
        reasons: String,
    },
    /// `E2E_REQUIRE=1`: fail, listing what is missing.
    Fail {
        reasons: String,
    },
}

/// Pure decision for target selection (`auto` / `kind`, with or without `E2E_REQUIRE`).
pub fn decide_kind(explicit_kind: bool, require: bool, missing: &[Missing]) -> KindDecision {
    if missing.is_empty() {
        return KindDecision::UseKind;
    }
    let reasons = preflight::describe_missing(missing);
    match (explicit_kind, require) {
        (_, true) => KindDecision::Fail { reasons },
        (true, false) => KindDecision::Skip { reasons },
        (false, false) => KindDecision::FallBackToLocal { reasons },
    }
}

/// `harness up|down|status|dump --target kind|existing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CliCommand {
    Up,
    Down,
    Status,
    Dump,
}

/// `--target kind|existing [--dry-run]`, shared by `harness up|down|status|dump`.
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterArgs {
    /// The cluster target: an ephemeral kind cluster, or the current kube context.
    #[arg(long, value_enum)]
    pub target: Mode,
    /// Print every step and command in order; run only read-only queries (tool versions,
    /// `kind get clusters`); create, delete, build and write nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// The `harness` binary's entry for `up|down|status|dump`: runs the command in its own runtime
/// and prints the error chain on failure.
pub fn cli_main(command: CliCommand, args: &ClusterArgs) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli(command, args.target, args.dry_run)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs one CLI command against a cluster target; the `harness` binary calls this.
pub async fn cli(command: CliCommand, mode: Mode, dry_run: bool) -> Result<()> {
    let knobs = Knobs::from_env()?;
    let runner = if dry_run {
        Runner::dry_run()
    } else {
        Runner::new()
    };
    let mut settings = Settings::from_knobs(mode, &knobs)?;
    if mode == Mode::Kind && knobs.cluster.is_none() {
        settings.cluster = ClusterChoice::Named(CLI_CLUSTER_NAME.to_string());
    }
    let _guard = cleanup::CleanupGuard;
    if !dry_run {
        cleanup::spawn_signal_cleanup()?;
    }
    match command {
        CliCommand::Up => cli_up(runner, settings).await,
        CliCommand::Down => cli_down(runner, settings).await,
        CliCommand::Status => cli_status(runner, settings).await,
        CliCommand::Dump => cli_dump(runner, settings).await,
    }
}

/// Brings the environment up and leaves it running; prints how to reach it.
pub async fn cli_up(runner: Runner, settings: Settings) -> Result<()> {
    cli_up_with(runner, settings, None).await
}

pub async fn cli_up_with(
    runner: Runner,
    settings: Settings,
    backend: Option<&dyn Backend>,
) -> Result<()> {
    let mode = settings.mode;
    let mut env = match backend {
        Some(backend) => ClusterEnvironment::up_with(runner.clone(), settings, backend).await?,
        None => ClusterEnvironment::up(runner.clone(), settings).await?,
    };
    println!("up: {}", env.describe());
    println!("ingress: http://{}", env.ingress());
    if mode == Mode::Kind {
        runner.step(
            "print the article's INGRESS_HOST (gateway pod status.hostIP) and INGRESS_PORT (http2 nodePort)",
        );
        if let Some(api) = env.api() {
            match api.article_endpoint().await {
                Ok((host, port)) => println!("{}", gateway::export_lines(&host, port)),
                Err(err) if runner.is_dry_run() => {
                    let _ = err;
                }
                Err(err) => eprintln!("warning: the article's endpoint: {err:#}"),
            }
        }
    } else {
        println!("(the port-forward ends with this command; the app stays applied)");
    }
    // `up` leaves the environment running: its interruption cleanup is no longer wanted.
    if let Some(ticket) = env.abort_cleanup.take() {
        cleanup::unregister(ticket);
    }
    if let Some(handle) = env.cluster() {
        if runner.is_dry_run() {
            println!("{}", handle.planned_reach_hint());
        } else {
            println!("{}", handle.reach_hint());
        }
    }
    env.torn_down = true;
    Ok(())
}

/// Deletes what `up` created: the `harness up` cluster (never `E2E_CLUSTER`), or for the
/// existing target what the suite recorded as created.
pub async fn cli_down(runner: Runner, settings: Settings) -> Result<()> {
    match settings.mode {
        Mode::Kind => {
            let name = match &settings.cluster {
                ClusterChoice::Reuse(name) => {
                    println!(
                        "E2E_CLUSTER={name} is never deleted by the harness; delete it yourself: \
                         kind delete cluster --name {name}"
                    );
                    return Ok(());
                }
                ClusterChoice::Named(name) => name.clone(),
                ClusterChoice::Generated => CLI_CLUSTER_NAME.to_string(),
            };
            let handle = ClusterHandle {
                kubeconfig: settings.state.kubeconfig(&name),
                name: name.clone(),
                owned: true,
            };
            let listed = match kind::list_clusters(&runner, &settings.tools).await {
                Ok(list) => list,
                Err(err) if runner.is_dry_run() => {
                    println!(
                        "[dry-run] cannot list kind clusters ({err:#}); planning the delete anyway"
                    );
                    vec![name.clone()]
                }
                Err(err) => return Err(err),
            };
            if !listed.contains(&name) {
                println!("kind cluster {name} does not exist: nothing to delete");
                return Ok(());
            }
            kind::delete_verified(&runner, &settings.tools, &handle).await?;
            if !runner.is_dry_run() {
                settings.state.forget(&name);
                println!("deleted kind cluster {name}");
            }
            Ok(())
        }
        Mode::Existing => {
            let context = settings
                .existing_context
                .clone()
                .context("no current kube context")?;
            let file = existing_applied_file(&settings.state, &context);
            let Ok(text) = std::fs::read(&file) else {
                println!(
                    "nothing recorded as applied by the suite in context {context}: nothing to delete"
                );
                return Ok(());
            };
            let applied: Vec<Applied> = serde_json::from_slice(&text)
                .with_context(|| format!("reading {}", file.display()))?;
            let created: Vec<Applied> = applied.into_iter().filter(|a| a.created).collect();
            for object in created.iter().rev() {
                runner.step(format!("delete {} in context {context}", object.describe()));
            }
            if runner.is_dry_run() {
                return Ok(());
            }
            let client = live_client(None, &context).await?;
            apply::delete_created(&client, &created).await?;
            let _ = std::fs::remove_file(&file);
            Ok(())
        }
    }
}

/// What exists: our kind clusters, and for the `harness up` cluster (or `E2E_CLUSTER`) or the
/// current context, the state of Istio and the app.
pub async fn cli_status(runner: Runner, settings: Settings) -> Result<()> {
    let context = match settings.mode {
        Mode::Kind => {
            let listed = kind::list_clusters(&runner, &settings.tools).await?;
            let ours: Vec<&String> = listed
                .iter()
                .filter(|c| c.starts_with(kind::CLUSTER_PREFIX) || c.as_str() == CLI_CLUSTER_NAME)
                .collect();
            println!("kind clusters of this suite: {ours:?}");
            let name = match &settings.cluster {
                ClusterChoice::Reuse(n) | ClusterChoice::Named(n) => n.clone(),
                ClusterChoice::Generated => CLI_CLUSTER_NAME.to_string(),
            };
            if !listed.contains(&name) {
                println!(
                    "kind cluster {name}: not running (`harness up --target kind` creates it)"
                );
                return Ok(());
            }
            let handle = ClusterHandle {
                kubeconfig: settings.state.kubeconfig(&name),
                name,
                owned: false,
            };
            let yaml = kind::write_kubeconfig(&runner, &settings.tools, &handle).await?;
            (Some(yaml), handle.context())
        }
        Mode::Existing => (
            None,
            settings
                .existing_context
                .clone()
                .context("no current kube context")?,
        ),
    };
    let (kubeconfig, context) = context;
    runner.step(format!(
        "read Istio and app Deployments in context {context}"
    ));
    if runner.is_dry_run() {
        return Ok(());
    }
    let client = live_client(kubeconfig, &context).await?;
    let documents = manifest::load_file(&settings.app_manifest)?;
    let app = app_info(&documents)?;
    for (namespace, name) in [
        (ISTIO_NAMESPACE, ISTIOD),
        (ISTIO_NAMESPACE, INGRESS_GATEWAY),
        (app.namespace.as_str(), app.deployment.as_str()),
    ] {
        let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        let state = match api.get_opt(name).await {
            Ok(Some(d)) => match istioctl::deployment_available(&d) {
                apply::Attempt::Done(()) => "Available".to_string(),
                apply::Attempt::NotYet(why) => why,
            },
            Ok(None) => "absent".to_string(),
            Err(err) => format!("unreadable: {err}"),
        };
        println!("Deployment {namespace}/{name}: {state}");
    }
    if settings.mode == Mode::Kind {
        match gateway::live_article_endpoint(&client).await {
            Ok((host, port)) => println!("{}", gateway::export_lines(&host, port)),
            Err(err) => println!("the article's endpoint: {err:#}"),
        }
    }
    Ok(())
}

/// Diagnostics of the `harness up` cluster (or `E2E_CLUSTER`) or the current context into
/// `E2E_ARTIFACTS`.
pub async fn cli_dump(runner: Runner, settings: Settings) -> Result<()> {
    let documents = manifest::load_file(&settings.app_manifest)?;
    let app = app_info(&documents)?;
    let (kube, kind_cluster) = match settings.mode {
        Mode::Kind => {
            let name = match &settings.cluster {
                ClusterChoice::Reuse(n) | ClusterChoice::Named(n) => n.clone(),
                ClusterChoice::Generated => CLI_CLUSTER_NAME.to_string(),
            };
            let handle = ClusterHandle {
                kubeconfig: settings.state.kubeconfig(&name),
                name: name.clone(),
                owned: false,
            };
            kind::write_kubeconfig(&runner, &settings.tools, &handle).await?;
            (
                KubeTarget {
                    kubeconfig: Some(handle.kubeconfig.clone()),
                    context: handle.context(),
                },
                Some(name),
            )
        }
        Mode::Existing => (
            KubeTarget {
                kubeconfig: None,
                context: settings
                    .existing_context
                    .clone()
                    .context("no current kube context")?,
            },
            None,
        ),
    };
    let target = DiagnoseTarget {
        tools: settings.tools.clone(),
        kube,
        kind_cluster,
        app_namespace: app.namespace,
    };
    diagnose::collect(&runner, &target, &settings.artifacts).await;
    println!("diagnostics in {}", settings.artifacts.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::preflight::Tool;

    fn missing() -> Vec<Missing> {
        vec![Missing {
            tool: Tool::Kind,
            problem: "not found in .tools/bin or on PATH".into(),
            fix: "scripts/install-tools.sh kind".into(),
        }]
    }

    #[test]
    fn selection_falls_back_skips_or_fails_with_the_reasons() {
        assert_eq!(decide_kind(true, true, &[]), KindDecision::UseKind);
        let KindDecision::FallBackToLocal { reasons } = decide_kind(false, false, &missing())
        else {
            panic!("auto falls back to local")
        };
        assert!(
            reasons.contains("scripts/install-tools.sh kind"),
            "{reasons}"
        );
        assert!(matches!(
            decide_kind(true, false, &missing()),
            KindDecision::Skip { .. }
        ));
        assert!(matches!(
            decide_kind(true, true, &missing()),
            KindDecision::Fail { .. }
        ));
        assert!(matches!(
            decide_kind(false, true, &missing()),
            KindDecision::Fail { .. }
        ));
    }

    #[test]
    fn app_info_comes_from_the_manifests() {
        let documents = manifest::load_file(&paths::manifests_dir().join("app.yaml")).unwrap();
        assert_eq!(
            app_info(&documents).unwrap(),
            AppInfo {
                namespace: "wty-istio".into(),
                deployment: "wtyfft-deploy".into(),
                container: "wtyfft-container-name".into(),
            }
        );
    }

    #[test]
    fn kubectl_delete_names_group_and_version() {
        let object = Applied {
            api_version: "networking.istio.io/v1alpha3".into(),
            kind: "VirtualService".into(),
            name: "wtyfft-vs".into(),
            namespace: Some("wty-istio".into()),
            created: true,
        };
        assert_eq!(
            kubectl_delete_args(&object).join(" "),
            "delete VirtualService.v1alpha3.networking.istio.io/wtyfft-vs -n wty-istio \
             --ignore-not-found --wait=false"
        );
    }
}
