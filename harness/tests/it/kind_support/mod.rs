//! Fake kind/istioctl/docker/kubectl in a temporary directory, and a fake cluster API, for the
//! kind target's tests. Nothing here touches the test process's environment.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};
use harness::config::knobs::Keep;
use harness::config::paths;
use harness::config::versions::Versions;
use harness::env::cluster::{
    Backend, ClusterApi, ClusterChoice, KindEnvironment, Mode, Settings, Timeouts,
};
use harness::env::timings::Timings;
use harness::env::{BoxFuture, Disruption, DisruptionReport};
use harness::exec::cmd::Runner;
use harness::k8s::apply::Applied;
use harness::k8s::disrupt::DisruptTarget;
use harness::k8s::mesh::{GatewayTarget, Mesh, MeshQuery};
use harness::k8s::rollout::AppPods;
use harness::tools::kind::StateDir;
use harness::tools::preflight::{ToolSearch, Tools};
use serde_json::Value;
use tempfile::TempDir;

pub const BUILT_IMAGE: &str = "fft-service:3f2a9c01d4e5";

pub struct Fake {
    pub dir: TempDir,
    pub bin: PathBuf,
    pub log: PathBuf,
    pub kind_state: PathBuf,
}

impl Fake {
    /// All four fake tools, with `fail` injected.
    pub fn new(fail: &[&str]) -> Self {
        Self::with_tools(&["kind", "istioctl", "docker", "kubectl"], fail, &[])
    }

    pub fn with_tools(tools: &[&str], fail: &[&str], extra_env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake-tools");
        std::fs::copy(source.join("common.sh"), bin.join("common.sh")).unwrap();
        for tool in tools {
            std::fs::copy(source.join(tool), bin.join(tool)).unwrap();
        }
        let log = dir.path().join("calls.log");
        let kind_state = dir.path().join("kind-state");
        let mut env = format!(
            "FAKE_TOOLS_LOG={}\nFAKE_TOOLS_STATE={}\nFAKE_FAIL='{}'\n",
            log.display(),
            kind_state.display(),
            fail.join(" ")
        );
        for (key, value) in extra_env {
            env.push_str(&format!("{key}={value}\n"));
        }
        std::fs::write(bin.join("fake-tools.env"), env).unwrap();
        std::fs::create_dir_all(&kind_state).unwrap();
        std::fs::write(kind_state.join("clusters"), "").unwrap();
        Fake {
            dir,
            bin,
            log,
            kind_state,
        }
    }

    pub fn tools(&self) -> Tools {
        Tools::resolve(&ToolSearch::with_path(self.bin.as_os_str()), "1.31.1")
    }

    /// Every recorded invocation, with the fake bin directory stripped from paths.
    pub fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| l.replace(&format!("{}/", self.bin.display()), ""))
            .collect()
    }

    /// The name of the cluster the run created (from its `kind create cluster` call).
    pub fn created_cluster(&self) -> String {
        self.calls()
            .iter()
            .find_map(|c| {
                c.strip_prefix("kind create cluster --name ")
                    .map(|rest| rest.split_whitespace().next().unwrap().to_string())
            })
            .expect("a kind create call")
    }

    /// Asserts that the last call listed the clusters: a delete was verified by the listing.
    pub fn assert_ends_listing_clusters(&self) {
        let calls = self.calls();
        assert!(
            calls.last().is_some_and(|c| c == "kind get clusters"),
            "{calls:?}"
        );
    }

    /// Calls that change something (not version/info/get queries).
    pub fn changes(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| {
                !(c.contains(" version")
                    || c.starts_with("docker info")
                    || c.starts_with("docker ps")
                    || c.starts_with("docker port")
                    || c.starts_with("docker image inspect")
                    || c.contains(" get "))
            })
            .collect()
    }

    pub fn clusters(&self) -> Vec<String> {
        std::fs::read_to_string(self.kind_state.join("clusters"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub fn set_clusters(&self, names: &[&str]) {
        let mut text = names.join("\n");
        text.push('\n');
        std::fs::write(self.kind_state.join("clusters"), text).unwrap();
    }

    /// Makes the fake `docker ps --filter publish=PORT` list these running containers.
    pub fn publish(&self, port: u16, containers: &[&str]) {
        let mut text = containers.join("\n");
        text.push('\n');
        std::fs::write(self.kind_state.join(format!("publish-{port}")), text).unwrap();
    }

    /// Makes the fake `docker port NODE …` print `mapping`.
    pub fn set_docker_port(&self, node: &str, mapping: &str) {
        std::fs::write(
            self.kind_state.join(format!("port-{node}")),
            format!("{mapping}\n"),
        )
        .unwrap();
    }

    /// Makes the fake `docker image inspect` find these images.
    pub fn set_local_images(&self, images: &[&str]) {
        let mut text = images.join("\n");
        text.push('\n');
        std::fs::write(self.kind_state.join("images"), text).unwrap();
    }

    pub fn state_dir(&self) -> StateDir {
        StateDir::new(self.dir.path().join("state"))
    }

    pub fn artifacts(&self) -> PathBuf {
        self.dir.path().join("artifacts")
    }

    pub fn settings(&self, keep: Keep, cluster: ClusterChoice) -> Settings {
        let versions = Versions::load().unwrap();
        Settings {
            mode: Mode::Kind,
            keep,
            cluster,
            image: None,
            artifacts: self.artifacts(),
            state: self.state_dir(),
            tools: self.tools(),
            istio_version: versions.istio.clone(),
            versions,
            kind_config: paths::manifests_dir().join("kind-cluster.yaml"),
            istio_overlay: paths::manifests_dir().join("istio-install.yaml"),
            app_manifest: paths::manifests_dir().join("app.yaml"),
            timeouts: Timeouts {
                control_plane: Duration::from_secs(5),
                rollout: Duration::from_secs(5),
                route: Duration::from_secs(5),
            },
            existing_context: None,
            offline: false,
            mesh: Default::default(),
        }
    }
}

/// A build and a cluster API that record their calls and fail where told.
#[derive(Clone, Default)]
pub struct FakeBackend {
    pub fail: Option<&'static str>,
    pub calls: Arc<Mutex<Vec<String>>>,
    pub applied: Arc<Mutex<Vec<Value>>>,
    /// What the rollout wait was told about the app's pods.
    pub rollout_app: Arc<Mutex<Option<AppPods>>>,
    /// The live gateway Service's http2 nodePort (default: the overlay's 30001).
    pub gateway_node_port: Option<u16>,
}

impl FakeBackend {
    pub fn failing(step: &'static str) -> Self {
        FakeBackend {
            fail: Some(step),
            ..FakeBackend::default()
        }
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn call(&self, what: &str) -> Result<()> {
        self.calls.lock().unwrap().push(what.to_string());
        if self.fail == Some(what) {
            bail!("injected failure in {what}");
        }
        Ok(())
    }
}

impl Backend for FakeBackend {
    fn build_image<'a>(&'a self, _runner: &'a Runner) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            self.call("image")?;
            Ok(BUILT_IMAGE.to_string())
        })
    }

    fn connect(
        &self,
        kubeconfig: Option<String>,
        context: String,
    ) -> BoxFuture<'_, Result<Arc<dyn ClusterApi>>> {
        Box::pin(async move {
            self.call("connect")?;
            let yaml = kubeconfig.unwrap_or_default();
            // The kubeconfig comes from `kind get kubeconfig`, and the context is kind's.
            assert!(
                yaml.contains(&format!("name: {context}")),
                "context {context} not in kubeconfig:\n{yaml}"
            );
            Ok(Arc::new(self.clone()) as Arc<dyn ClusterApi>)
        })
    }
}

impl ClusterApi for FakeBackend {
    fn wait_control_plane(&self, _: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.call("control-plane") })
    }
    fn installed_istio_version(&self) -> BoxFuture<'_, Result<Option<String>>> {
        Box::pin(async move {
            self.call("istio-version")?;
            Ok(None)
        })
    }
    fn apply(&self, documents: Vec<Value>) -> BoxFuture<'_, Result<Vec<Applied>>> {
        Box::pin(async move {
            self.call("apply")?;
            let applied = documents
                .iter()
                .map(|d| Applied {
                    api_version: d["apiVersion"].as_str().unwrap().into(),
                    kind: d["kind"].as_str().unwrap().into(),
                    name: d["metadata"]["name"].as_str().unwrap().into(),
                    namespace: d["metadata"]["namespace"].as_str().map(Into::into),
                    created: true,
                    restore_labels: Default::default(),
                    uid: None,
                })
                .collect();
            *self.applied.lock().unwrap() = documents;
            Ok(applied)
        })
    }
    /// Nothing exists before the suite applies it (a fresh kind cluster).
    fn present_uids(&self, documents: Vec<Value>) -> BoxFuture<'_, Result<Vec<Option<String>>>> {
        Box::pin(async move { Ok(vec![None; documents.len()]) })
    }
    fn wait_rollout(
        &self,
        _: String,
        _: String,
        app: AppPods,
        _: Duration,
    ) -> BoxFuture<'_, Result<()>> {
        *self.rollout_app.lock().unwrap() = Some(app);
        Box::pin(async move { self.call("rollout") })
    }
    fn wait_for_route(&self, ingress: SocketAddr, _: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            assert!(ingress.ip().is_loopback());
            self.call("route")
        })
    }
    fn discover_mesh(&self, query: MeshQuery, _: Duration) -> BoxFuture<'_, Result<Mesh>> {
        Box::pin(async move {
            self.call("discover-mesh")?;
            Ok(Mesh {
                istiod: vec!["istio-system/istiod (default)".into()],
                gateway: GatewayTarget::istioctl_default(),
                namespace_labels: query.namespace_labels,
                existing_namespace_labels: None,
            })
        })
    }
    fn forward_gateway(&self, _: GatewayTarget) -> BoxFuture<'_, Result<SocketAddr>> {
        Box::pin(async move {
            self.call("forward")?;
            Ok(SocketAddr::from(([127, 0, 0, 1], 41234)))
        })
    }
    fn delete_created(&self, _: Vec<Applied>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move { self.call("delete-created") })
    }
    fn disrupt(&self, _: DisruptTarget, _: Disruption) -> BoxFuture<'_, Result<DisruptionReport>> {
        Box::pin(async move {
            self.call("disrupt")?;
            Ok(DisruptionReport {
                stopped: Vec::new(),
                started: Vec::new(),
            })
        })
    }
    fn article_endpoint(&self) -> BoxFuture<'_, Result<(String, u16)>> {
        Box::pin(async move {
            self.call("article-endpoint")?;
            Ok(("172.18.0.2".to_string(), 30001))
        })
    }
    fn gateway_node_port(&self) -> BoxFuture<'_, Result<u16>> {
        Box::pin(async move {
            self.call("gateway-node-port")?;
            Ok(self.gateway_node_port.unwrap_or(30001))
        })
    }
    fn client(&self) -> Option<kube::Client> {
        None
    }
}

/// The kind command lines in the call log, without their flags' values that vary per run.
pub fn kind_verbs(calls: &[String]) -> Vec<String> {
    calls
        .iter()
        .map(|c| c.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .collect()
}

/// Brings the kind target up against the fake tools and `backend`.
pub async fn up(settings: Settings, backend: &dyn Backend) -> anyhow::Result<KindEnvironment> {
    KindEnvironment::up_with(Runner::new(), settings, backend, &mut Timings::default()).await
}

/// The error of a bring-up that must fail (`why` says why it must).
pub async fn up_error(settings: Settings, backend: &dyn Backend, why: &str) -> String {
    match up(settings, backend).await {
        Ok(_) => panic!("{why}"),
        Err(err) => format!("{err:#}"),
    }
}
