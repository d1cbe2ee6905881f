//! The cluster targets: [`KindEnvironment`] (an ephemeral kind cluster with Istio installed by
//! istioctl) and [`ExistingEnvironment`] (the current kube context, Istio already there, the
//! image from `E2E_IMAGE`). Each is a short list of named steps; the steps both share live here:
//! the preflight, connecting, applying the app and waiting for its rollout, probing the route,
//! the Kubernetes checks and the diagnostics.
//!
//! Calls to the cluster go through [`ClusterApi`] and the image build through [`Backend`]
//! ([`api`]), so the command phases and their cleanup can be exercised with fake tools.
//!
//! Dry run: only read-only queries run (tool lookup and versions, `kind get clusters`, reading
//! the kubeconfig's current context); every other step and command is printed in order and
//! nothing is created, deleted, built or written.

pub(crate) mod api;
pub mod existing;
pub(crate) mod kind;
pub(crate) mod settings;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::Value;

pub(crate) use api::LiveBackend;
pub use api::{Backend, ClusterApi, DryRunBackend, PLANNED_IMAGE, live_api};
pub use existing::ExistingEnvironment;
pub use kind::KindEnvironment;
pub(crate) use settings::{AppInfo, app_info};
pub use settings::{ClusterChoice, Mode, Settings, Timeouts};

use crate::env::timings::Timings;
use crate::env::{Disruption, DisruptionReport, Environment, KubeCheck, KubeCheckOutcome};
use crate::exec::cleanup;
use crate::exec::cmd::Runner;
use crate::k8s::apply::{self, Applied};
use crate::k8s::client;
use crate::k8s::diagnose::{self, DiagnoseTarget};
use crate::k8s::disrupt::DisruptTarget;
use crate::k8s::gateway;
use crate::k8s::pods::{self, MeshMerging};
use crate::k8s::rollout::AppPods;
use crate::manifest;
use crate::tools::istioctl::KubeTarget;
use crate::tools::preflight::{self, Needs, Report};

/// Whether the bring-up runs the target's preflight, or its caller already did (target
/// selection runs it to decide whether kind runs at all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Preflight {
    Run,
    Done,
}

/// The backend a runner works with: the dry-run one plans, the live one acts.
pub(crate) fn backend_for(runner: &Runner) -> &'static dyn Backend {
    if runner.is_dry_run() {
        &DryRunBackend
    } else {
        &LiveBackend
    }
}

/// Brings up the cluster target `settings.mode` names, with the backend for `runner`, recording
/// its phases in `times`.
pub(crate) async fn up(
    runner: Runner,
    settings: Settings,
    preflight: Preflight,
    times: &mut Timings,
) -> Result<Box<dyn Environment>> {
    let backend = backend_for(&runner);
    Ok(match settings.mode {
        Mode::Kind => Box::new(
            KindEnvironment::up_checked(runner, settings, backend, preflight, times).await?,
        ),
        Mode::Existing => Box::new(
            ExistingEnvironment::up_checked(runner, settings, backend, preflight, times).await?,
        ),
    })
}

/// What both cluster targets hold once the app answers through the gateway.
pub(crate) struct Running {
    pub(crate) runner: Runner,
    pub(crate) settings: Settings,
    pub(crate) kube: KubeTarget,
    pub(crate) api: Arc<dyn ClusterApi>,
    pub(crate) app: AppInfo,
    pub(crate) image: String,
    pub(crate) ingress: SocketAddr,
}

/// The one prerequisite check of a cluster target, printed: the tools and their versions, and
/// with `E2E_OFFLINE=1` kind's node image.
pub(crate) async fn check_prerequisites(runner: &Runner, settings: &Settings) -> Result<Report> {
    let needs = match settings.mode {
        Mode::Kind => Needs::Kind,
        Mode::Existing => Needs::Existing,
    };
    let mut report = preflight::check(runner, &settings.tools, &settings.versions, needs).await;
    if settings.offline && settings.mode == Mode::Kind {
        preflight::check_offline_kind(
            runner,
            &settings.tools,
            &settings.versions.kind_node_image,
            &mut report,
        )
        .await;
    }
    report.print();
    Ok(report)
}

/// The preflight phase of a bring-up: what is missing stops it (a dry run says so and goes on).
pub(crate) async fn preflight(runner: &Runner, settings: &Settings, when: Preflight) -> Result<()> {
    if when == Preflight::Done {
        return Ok(());
    }
    let report = check_prerequisites(runner, settings).await?;
    if report.missing.is_empty() {
        return Ok(());
    }
    let listed = preflight::describe_missing(&report.missing);
    if runner.is_dry_run() {
        println!("[dry-run] prerequisites missing (a real run stops here):\n{listed}");
        return Ok(());
    }
    bail!(
        "the {} target's prerequisites are missing:\n{listed}",
        settings.mode.as_str()
    )
}

/// Connects to the Kubernetes API of `kube` (its kubeconfig given as YAML, or the default one).
pub(crate) async fn connect(
    runner: &Runner,
    backend: &dyn Backend,
    kubeconfig: Option<String>,
    kube: &KubeTarget,
) -> Result<Arc<dyn ClusterApi>> {
    runner.step(format!(
        "connect to the Kubernetes API of context {}",
        kube.context
    ));
    backend
        .connect(kubeconfig, kube.context.clone())
        .await
        .with_context(|| format!("connecting to context {}", kube.context))
}

/// The app's manifests, prepared with `image` and printed as the steps they are.
pub(crate) fn prepare_app(
    runner: &Runner,
    settings: &Settings,
    image: &str,
) -> Result<(AppInfo, Vec<Value>)> {
    let documents = manifest::load_file(&settings.app_manifest)?;
    let app = app_info(&documents)?;
    let prepared = apply::prepare(&documents, image)?;
    for document in &prepared {
        runner.step(format!(
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
    Ok((app, prepared))
}

/// Applies the prepared manifests; what was applied, each marked whether it was created.
pub(crate) async fn apply_app(api: &dyn ClusterApi, prepared: Vec<Value>) -> Result<Vec<Applied>> {
    api.apply(prepared)
        .await
        .context("applying the app's manifests")
}

/// Waits until every replica is available and every pod ready with its sidecar.
pub(crate) async fn wait_for_app(
    runner: &Runner,
    settings: &Settings,
    api: &dyn ClusterApi,
    app: &AppInfo,
) -> Result<()> {
    runner.step(format!(
        "wait until Deployment {}/{} has every replica available and every pod ready with its sidecar",
        app.namespace, app.deployment
    ));
    let pods = AppPods {
        container: app.container.clone(),
        image_preloaded: settings.mode == Mode::Kind,
    };
    api.wait_rollout(
        app.namespace.clone(),
        app.deployment.clone(),
        pods,
        settings.timeouts.rollout,
    )
    .await
}

/// Probes the gateway at `address` until the app answers.
pub(crate) async fn probe_route(
    runner: &Runner,
    settings: &Settings,
    api: &dyn ClusterApi,
    address: SocketAddr,
) -> Result<()> {
    runner.step(format!(
        "probe http://{address}{} through the gateway until the app answers",
        gateway::ROUTED_PATH
    ));
    api.wait_for_route(address, settings.timeouts.route).await
}

/// What `collect` needs to know of a cluster.
pub(crate) fn diagnose_target(
    settings: &Settings,
    kube: &KubeTarget,
    kind_cluster: Option<String>,
    app_namespace: Option<&str>,
) -> DiagnoseTarget {
    DiagnoseTarget {
        tools: settings.tools.clone(),
        kube: kube.clone(),
        kind_cluster,
        app_namespace: app_namespace
            .map(str::to_string)
            .unwrap_or_else(|| crate::config::names::APP_NAMESPACE.to_string()),
    }
}

/// After a failed start: diagnostics from whatever cluster was reached, then `undo` (which
/// deletes, or keeps per `E2E_KEEP`, what the start created); the interruption cleanup is then no
/// longer wanted. A failure of the cleanup is a warning: the start's own error is the one to
/// report.
pub(crate) async fn after_failed_start(
    runner: &Runner,
    settings: &Settings,
    reached: Option<DiagnoseTarget>,
    undo: impl std::future::Future<Output = Result<()>>,
    abort_cleanup: Option<cleanup::CleanupTicket>,
) {
    if !runner.is_dry_run() && reached.is_some() {
        collect(runner, reached, &settings.artifacts).await;
    }
    match undo.await {
        Ok(()) => {
            if let Some(ticket) = abort_cleanup {
                cleanup::unregister(ticket);
            }
        }
        // The interruption cleanup stays registered: the exit guard tries again with it.
        Err(err) => {
            eprintln!("warning: cleaning up after the failed start: {err:#}; trying again on exit")
        }
    }
}

/// The orderly teardown of a cluster target: `undo` (delete, or keep per `keep`), bounded by
/// [`cleanup::TEARDOWN_TIMEOUT`]. The interruption cleanup is unregistered only once `undo`
/// succeeded: after a failed delete the exit guard tries again.
pub(crate) async fn bounded_teardown(
    undo: impl std::future::Future<Output = Result<()>>,
    abort_cleanup: &mut Option<cleanup::CleanupTicket>,
) -> Result<()> {
    let result = tokio::time::timeout(cleanup::TEARDOWN_TIMEOUT, undo)
        .await
        .unwrap_or_else(|_| {
            Err(anyhow::anyhow!(
                "teardown did not finish within {:?}",
                cleanup::TEARDOWN_TIMEOUT
            ))
        });
    if result.is_ok()
        && let Some(ticket) = abort_cleanup.take()
    {
        cleanup::unregister(ticket);
    }
    result
}

/// Collects diagnostics, unless nothing can be reached.
pub(crate) async fn collect(runner: &Runner, target: Option<DiagnoseTarget>, dir: &Path) {
    match target {
        Some(target) => diagnose::collect(runner, &target, dir).await,
        None => eprintln!("no cluster was reached: no diagnostics to collect"),
    }
}

/// The `Environment` methods both cluster targets answer alike, from their [`Running`] state:
/// the gateway's address, each pod's metrics, the Kubernetes checks, the resilience
/// disruptions, the latency hops and the versions. Used inside each target's
/// `impl Environment`, whose own methods are the description, diagnostics and teardown.
macro_rules! environment_from_running {
    () => {
        fn ingress(&self) -> std::net::SocketAddr {
            self.running.ingress
        }

        fn replica_metrics(
            &self,
        ) -> crate::env::BoxFuture<'_, anyhow::Result<std::collections::BTreeMap<String, String>>> {
            Box::pin(self.running.replica_metrics())
        }

        fn kube_check(
            &self,
            check: crate::env::KubeCheck,
        ) -> crate::env::BoxFuture<'_, anyhow::Result<crate::env::KubeCheckOutcome>> {
            Box::pin(self.running.kube_check(check))
        }

        fn disrupt(
            &self,
            disruption: crate::env::Disruption,
        ) -> crate::env::BoxFuture<'_, anyhow::Result<crate::env::DisruptionReport>> {
            Box::pin(self.running.disrupt(disruption))
        }

        fn hop_notes(&self) -> Vec<String> {
            crate::env::cluster::Running::hop_notes()
        }

        fn versions(&self) -> std::collections::BTreeMap<String, String> {
            self.running.versions()
        }
    };
}
pub(crate) use environment_from_running;

impl Running {
    /// kind: the suite installed Istio from the overlay, so the overlay says; existing: unknown.
    fn mesh_merging(&self) -> Result<MeshMerging> {
        match self.settings.mode {
            Mode::Kind => pods::mesh_merging_from_overlay(&self.settings.istio_overlay),
            Mode::Existing => Ok(MeshMerging::Unknown),
        }
    }

    async fn deployment_and_pods(
        &self,
        client: &kube::Client,
    ) -> Result<(Deployment, Vec<k8s_openapi::api::core::v1::Pod>)> {
        let app = &self.app;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &app.namespace);
        let deployment = deployments
            .get(&app.deployment)
            .await
            .with_context(|| format!("reading Deployment {}/{}", app.namespace, app.deployment))?;
        let pods = client::deployment_pods(client, &deployment).await?;
        if pods.is_empty() {
            bail!(
                "Deployment {}/{} has no pods",
                app.namespace,
                app.deployment
            );
        }
        Ok((deployment, pods))
    }

    pub(crate) async fn kube_check(&self, check: KubeCheck) -> Result<KubeCheckOutcome> {
        let Some(client) = self.api.client() else {
            return Ok(KubeCheckOutcome::NotApplicable {
                reason: "no Kubernetes API client in this run".into(),
            });
        };
        let (deployment, pods) = self.deployment_and_pods(&client).await?;
        let detail = match check {
            KubeCheck::SidecarsInjected => {
                let mut places = BTreeMap::new();
                for pod in &pods {
                    *places
                        .entry(format!("{:?}", pods::sidecar_injected(pod)?))
                        .or_insert(0) += 1;
                }
                format!("{} pods injected: {places:?}", pods.len())
            }
            KubeCheck::ScrapeAnnotations => {
                pods::template_scrape_annotations(&deployment)?;
                let verdict = pods::scrape_verdict(&deployment, &pods, self.mesh_merging()?)?;
                format!(
                    "template keeps the article's annotations; all {} pods {:?} ({:?})",
                    verdict.pods, verdict.state, verdict.expectation
                )
            }
            KubeCheck::MergedMetricsServeAppMetrics => {
                let verdict = pods::scrape_verdict(&deployment, &pods, self.mesh_merging()?)?;
                if let Some(reason) = verdict.unmerged_reason() {
                    return Ok(KubeCheckOutcome::NotApplicable { reason });
                }
                for pod in &pods {
                    let name = pod.metadata.name.as_deref().unwrap_or("?");
                    let text = client::pod_http_get(
                        &client,
                        &self.app.namespace,
                        name,
                        pods::MERGED_METRICS_PORT,
                        pods::MERGED_METRICS_PATH,
                    )
                    .await?;
                    pods::contains_app_metrics(&text).with_context(|| {
                        format!(
                            "pod {name} :{}{}",
                            pods::MERGED_METRICS_PORT,
                            pods::MERGED_METRICS_PATH
                        )
                    })?;
                }
                format!(
                    "{} pods serve {:?} on :{}{}",
                    pods.len(),
                    pods::APP_METRIC_FAMILIES,
                    pods::MERGED_METRICS_PORT,
                    pods::MERGED_METRICS_PATH
                )
            }
            KubeCheck::PodsRunBuiltImage => {
                for pod in &pods {
                    pods::pod_runs_image(pod, &self.app.container, &self.image)?;
                }
                format!("{} pods run {}", pods.len(), self.image)
            }
        };
        Ok(KubeCheckOutcome::Passed { detail })
    }

    /// What a cluster target knows of its versions: on kind, what it installed (Istio, kind, the
    /// node image and so Kubernetes); an existing cluster's are its own, not known here.
    pub(crate) fn versions(&self) -> BTreeMap<String, String> {
        let mut versions = BTreeMap::new();
        if self.settings.mode == Mode::Kind {
            versions.insert("istio".to_string(), self.settings.istio_version.clone());
            let pins = &self.settings.versions;
            versions.insert("kind".into(), pins.kind.clone());
            versions.insert("node_image".into(), pins.kind_node_image.clone());
            // kindest/node:v1.36.4@sha256:… runs Kubernetes v1.36.4.
            if let Some(tag) = pins
                .kind_node_image
                .split('@')
                .next()
                .and_then(|image| image.rsplit_once(':'))
                .map(|(_, tag)| tag.to_string())
            {
                versions.insert("kubernetes".into(), tag);
            }
        }
        versions
    }

    /// The hops of the latency breakdown in a mesh.
    pub(crate) fn hop_notes() -> Vec<String> {
        vec![
            crate::checks::latency::resolution_note(),
            "sidecar + network is the gateway → pod hop (Istio mTLS over the cluster network) and \
             the pod's sidecar"
                .to_string(),
        ]
    }

    /// A disruption of the app's pods, announced as a step (so a dry run lists it) and bounded
    /// by the rollout timeout.
    pub(crate) async fn disrupt(&self, disruption: Disruption) -> Result<DisruptionReport> {
        let app = &self.app;
        self.runner.step(match disruption {
            Disruption::RollingRestart => format!(
                "rollout restart: set {} on Deployment {}/{}'s pod template, wait until every \
                 replica is new and ready and the old pods are gone",
                crate::k8s::disrupt::RESTARTED_AT,
                app.namespace,
                app.deployment
            ),
            Disruption::Kill => format!(
                "delete the first pod of Deployment {}/{} with gracePeriodSeconds=0, wait until \
                 it is gone and its replacement ready",
                app.namespace, app.deployment
            ),
            Disruption::Terminate => format!(
                "delete the first pod of Deployment {}/{} with its grace period, wait until it \
                 is gone and its replacement ready",
                app.namespace, app.deployment
            ),
        });
        let target = DisruptTarget {
            namespace: app.namespace.clone(),
            deployment: app.deployment.clone(),
            app: AppPods {
                container: app.container.clone(),
                image_preloaded: self.settings.mode == Mode::Kind,
            },
            timeout: self.settings.timeouts.rollout,
        };
        self.api.disrupt(target, disruption).await
    }

    /// Each pod's own `/metrics`, keyed by pod name (`REPLICA_NAME` is the pod name, so the key
    /// is what `x-served-by` reports).
    pub(crate) async fn replica_metrics(&self) -> Result<BTreeMap<String, String>> {
        let client = self
            .api
            .client()
            .context("no Kubernetes API client in this run")?;
        let (_, pods) = self.deployment_and_pods(&client).await?;
        let mut metrics = BTreeMap::new();
        for pod in pods {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let text = client::pod_http_get(
                &client,
                &self.app.namespace,
                &name,
                crate::config::names::APP_PORT,
                crate::config::names::METRICS_PATH,
            )
            .await?;
            metrics.insert(name, text);
        }
        Ok(metrics)
    }
}
