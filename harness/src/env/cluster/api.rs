//! The cluster targets' calls to a running cluster ([`ClusterApi`]) and what brings the cluster
//! and the image into being ([`Backend`]): live (kube-rs, testcontainers), dry run (each call a
//! printed step), or a test's stand-in, so that the command phases (kind, istioctl, docker) and
//! their cleanup can be exercised with fake tools and no cluster.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::Value;

use crate::config::names::{ISTIO_NAMESPACE, ISTIOD};
use crate::env::{BoxFuture, Disruption, DisruptionReport};
use crate::exec::cmd::Runner;
use crate::k8s::apply::{self, Applied};
use crate::k8s::disrupt::{self, DisruptTarget};
use crate::k8s::gateway;
use crate::k8s::mesh::{self, GatewayTarget, Mesh, MeshQuery};
use crate::k8s::rollout::{self, AppPods};

/// The image name a dry run plans with (the content tag is known only after the build).
pub const PLANNED_IMAGE: &str = "fft-service:CONTENT-TAG";

/// Calls to a running cluster.
pub trait ClusterApi: Send + Sync {
    /// istiod and the ingress gateway Deployments are Available.
    fn wait_control_plane(&self, timeout: Duration) -> BoxFuture<'_, Result<()>>;
    /// The tag of istiod's image (`1.31.1`), if istiod exists.
    fn installed_istio_version(&self) -> BoxFuture<'_, Result<Option<String>>>;
    fn apply(&self, documents: Vec<Value>) -> BoxFuture<'_, Result<Vec<Applied>>>;
    /// The uid of each document's object, if it exists now.
    fn present_uids(&self, documents: Vec<Value>) -> BoxFuture<'_, Result<Vec<Option<String>>>>;
    fn wait_rollout(
        &self,
        namespace: String,
        name: String,
        app: AppPods,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<()>>;
    fn wait_for_route(&self, ingress: SocketAddr, timeout: Duration) -> BoxFuture<'_, Result<()>>;
    /// Finds istiod, the injector for the app's namespace and the ingress gateway (the
    /// `existing` target: Istio installed by someone else, in any supported way).
    fn discover_mesh(&self, query: MeshQuery, timeout: Duration) -> BoxFuture<'_, Result<Mesh>>;
    /// A loopback address forwarded to a pod of `gateway` (for clusters without a port mapping).
    fn forward_gateway(&self, gateway: GatewayTarget) -> BoxFuture<'_, Result<SocketAddr>>;
    fn delete_created(&self, applied: Vec<Applied>) -> BoxFuture<'_, Result<()>>;
    /// Disrupts the app's pods and waits until its Deployment is whole again.
    fn disrupt(
        &self,
        target: DisruptTarget,
        disruption: Disruption,
    ) -> BoxFuture<'_, Result<DisruptionReport>>;
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
pub(crate) struct LiveBackend;

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
            let client = crate::k8s::client::live_client(kubeconfig, &context).await?;
            Ok(live_api(client))
        })
    }
}

/// The live calls over `client` (a test's client of a fake API server, for one).
pub fn live_api(client: kube::Client) -> Arc<dyn ClusterApi> {
    Arc::new(LiveApi {
        client,
        forward: Mutex::new(None),
    })
}

/// The service image: the static binary, then the image from service/Dockerfile through
/// testcontainers, tagged by content.
async fn build_service_image(runner: &Runner) -> Result<String> {
    let built = crate::tools::image::build_image(runner)
        .await
        .context("building the service image")?;
    Ok(built.reference)
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
        Box::pin(rollout::wait_control_plane(&self.client, timeout))
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

    fn present_uids(&self, documents: Vec<Value>) -> BoxFuture<'_, Result<Vec<Option<String>>>> {
        Box::pin(async move { apply::present_uids(&self.client, &documents).await })
    }

    fn wait_rollout(
        &self,
        namespace: String,
        name: String,
        app: AppPods,
        timeout: Duration,
    ) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            rollout::wait_rollout(&self.client, &namespace, &name, &app, timeout).await
        })
    }

    fn wait_for_route(&self, ingress: SocketAddr, timeout: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(gateway::wait_for_route(ingress, timeout))
    }

    fn discover_mesh(&self, query: MeshQuery, timeout: Duration) -> BoxFuture<'_, Result<Mesh>> {
        Box::pin(async move { mesh::discover(&self.client, &query, timeout).await })
    }

    fn forward_gateway(&self, target: GatewayTarget) -> BoxFuture<'_, Result<SocketAddr>> {
        Box::pin(async move {
            let (address, task) = gateway::forward_gateway(&self.client, &target).await?;
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

    fn disrupt(
        &self,
        target: DisruptTarget,
        disruption: Disruption,
    ) -> BoxFuture<'_, Result<DisruptionReport>> {
        Box::pin(async move { disrupt::disrupt(&self.client, &target, disruption).await })
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
    fn present_uids(&self, documents: Vec<Value>) -> BoxFuture<'_, Result<Vec<Option<String>>>> {
        Box::pin(async move { Ok(vec![None; documents.len()]) })
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
    fn discover_mesh(&self, query: MeshQuery, _: Duration) -> BoxFuture<'_, Result<Mesh>> {
        // A plan cannot know the cluster: istioctl's layout stands in for it.
        Box::pin(async move {
            Ok(Mesh {
                istiod: Vec::new(),
                gateway: GatewayTarget::istioctl_default(),
                namespace_labels: query.namespace_labels,
                existing_namespace_labels: None,
            })
        })
    }
    fn forward_gateway(&self, _: GatewayTarget) -> BoxFuture<'_, Result<SocketAddr>> {
        Box::pin(async { Ok(SocketAddr::from(([127, 0, 0, 1], 0))) })
    }
    fn delete_created(&self, _: Vec<Applied>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn disrupt(&self, _: DisruptTarget, _: Disruption) -> BoxFuture<'_, Result<DisruptionReport>> {
        Box::pin(async {
            Ok(DisruptionReport {
                stopped: Vec::new(),
                started: Vec::new(),
            })
        })
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
