//! The `existing` target: preflight → connect to the current kube context → check that Istio is
//! there → apply the app (recording what was created, so that an interrupted run and `harness
//! down` delete exactly that) and wait for it → port-forward a loopback port to the gateway and
//! probe the route. Teardown deletes only what the suite created.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::{Backend, ClusterApi, Preflight, Running, Settings};
use crate::config::names::{INGRESS_GATEWAY, ISTIO_NAMESPACE, ISTIOD};
use crate::env::timings::Timings;
use crate::env::{
    BoxFuture, Disruption, DisruptionReport, Environment, KubeCheck, KubeCheckOutcome,
};
use crate::exec::cleanup::{self, CleanupTicket};
use crate::exec::cmd::Runner;
use crate::k8s::apply::Applied;
use crate::tools::istioctl::KubeTarget;
use crate::tools::kind::StateDir;
use crate::tools::preflight::Tool;

/// The current kube context with the app applied, ready for the scenarios.
pub(crate) struct ExistingEnvironment {
    running: Running,
    applied: Vec<Applied>,
    abort_cleanup: Option<CleanupTicket>,
    torn_down: bool,
}

/// What exists while the target comes up, for the cleanup of a failed start.
#[derive(Default)]
struct Partial {
    kube: Option<KubeTarget>,
    api: Option<std::sync::Arc<dyn ClusterApi>>,
    app_namespace: Option<String>,
    applied: Vec<Applied>,
    abort_cleanup: Option<CleanupTicket>,
}

impl ExistingEnvironment {
    /// Brings the target up, recording each phase in `times`. On failure, collects diagnostics,
    /// deletes (or keeps, per `E2E_KEEP`) what it created, and returns the first error.
    pub(crate) async fn up_with(
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
            Ok(running) => Ok(ExistingEnvironment {
                running,
                applied: partial.applied,
                abort_cleanup: partial.abort_cleanup,
                torn_down: false,
            }),
            Err(err) => {
                let reached = partial.kube.as_ref().map(|kube| {
                    super::diagnose_target(&settings, kube, None, partial.app_namespace.as_deref())
                });
                let keep = settings.keep.keeps(true);
                let ticket = partial.abort_cleanup.take();
                let undo = delete_created(
                    &runner,
                    &settings,
                    partial.api.as_deref(),
                    partial.kube.as_ref(),
                    std::mem::take(&mut partial.applied),
                    keep,
                );
                super::after_failed_start(&runner, &settings, reached, undo, ticket).await;
                Err(err)
            }
        }
    }

    /// `harness up`: the app stays applied; the interruption cleanup is no longer wanted.
    pub(crate) fn keep_running(mut self) {
        if let Some(ticket) = self.abort_cleanup.take() {
            cleanup::unregister(ticket);
        }
        self.torn_down = true;
    }

    async fn teardown_now(&mut self, keep: bool) -> Result<()> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let undo = delete_created(
            &self.running.runner,
            &self.running.settings,
            Some(self.running.api.as_ref()),
            Some(&self.running.kube),
            std::mem::take(&mut self.applied),
            keep,
        );
        super::bounded_teardown(undo, &mut self.abort_cleanup).await
    }
}

async fn bring_up(
    runner: &Runner,
    settings: &Settings,
    backend: &dyn Backend,
    preflight: Preflight,
    times: &mut Timings,
    partial: &mut Partial,
) -> Result<Running> {
    if preflight == Preflight::Run {
        times
            .time("preflight", super::preflight(runner, settings, preflight))
            .await?;
    }
    let image = settings.image.clone().context(
        "E2E_TARGET=existing deploys the image named by E2E_IMAGE (one the cluster can pull, \
         tagged by content, never :latest): set E2E_IMAGE",
    )?;
    let context = settings
        .existing_context
        .clone()
        .context("the existing target needs a kube context")?;
    let kube = KubeTarget {
        kubeconfig: None,
        context,
    };
    partial.kube = Some(kube.clone());
    let api = times
        .time("connect", super::connect(runner, backend, None, &kube))
        .await?;
    partial.api = Some(api.clone());
    times
        .time("istio", async {
            runner.step(format!(
                "check that Deployments {ISTIO_NAMESPACE}/{ISTIOD} and {ISTIO_NAMESPACE}/{INGRESS_GATEWAY} are Available"
            ));
            api.wait_control_plane(Duration::from_secs(30)).await.context(
                "E2E_TARGET=existing expects Istio already installed in the current context \
                 (install it with `istioctl install -f manifests/istio-install.yaml`, or use \
                 E2E_TARGET=kind)",
            )
        })
        .await?;
    let app = times
        .time("deploy", async {
            let (app, prepared) = super::prepare_app(runner, settings, &image)?;
            partial.app_namespace = Some(app.namespace.clone());
            partial.applied = super::apply_app(api.as_ref(), prepared).await?;
            if !runner.is_dry_run() {
                partial.abort_cleanup = record_applied(settings, &kube, &partial.applied)?;
            }
            super::wait_for_app(runner, settings, api.as_ref(), &app).await?;
            anyhow::Ok(app)
        })
        .await?;
    let ingress = times
        .time("ingress", async {
            runner.step(format!(
                "port-forward a loopback port to the ingress gateway pod's {}",
                crate::config::names::GATEWAY_TARGET_PORT
            ));
            let address = api.forward_gateway().await?;
            super::probe_route(runner, settings, api.as_ref(), address).await?;
            anyhow::Ok(address)
        })
        .await?;
    Ok(Running {
        runner: runner.clone(),
        settings: settings.clone(),
        kube,
        api,
        app,
        image,
        ingress,
    })
}

/// Remembers what the suite created, so `harness down` and an interrupted run delete exactly
/// that; returns the interruption cleanup, when there is something to delete.
fn record_applied(
    settings: &Settings,
    kube: &KubeTarget,
    applied: &[Applied],
) -> Result<Option<CleanupTicket>> {
    let file = applied_record(&settings.state, &kube.context);
    std::fs::create_dir_all(&settings.state.dir)?;
    std::fs::write(&file, serde_json::to_vec_pretty(applied)?)
        .with_context(|| format!("writing {}", file.display()))?;
    let created: Vec<Applied> = applied.iter().filter(|a| a.created).cloned().collect();
    if settings.keep.keeps(true) || created.is_empty() {
        return Ok(None);
    }
    let kubectl = settings.tools.cmd(Tool::Kubectl);
    let have_kubectl = settings.tools.path_of(Tool::Kubectl).is_some();
    let kube = kube.clone();
    Ok(Some(cleanup::register(
        "delete what the suite applied",
        move || {
            for object in created.iter().rev() {
                let delete = kubectl
                    .clone()
                    .args(kube.flags())
                    .args(kubectl_delete_args(object));
                if !have_kubectl {
                    eprintln!("kubectl not found; delete it yourself: {delete}");
                    continue;
                }
                if let Err(err) = cleanup::run_blocking(&delete, Duration::from_secs(60)) {
                    eprintln!("warning: {err:#}");
                }
            }
        },
    )))
}

/// Deletes what the suite created (newest first), unless `keep`; then forgets the record.
async fn delete_created(
    runner: &Runner,
    settings: &Settings,
    api: Option<&dyn ClusterApi>,
    kube: Option<&KubeTarget>,
    applied: Vec<Applied>,
    keep: bool,
) -> Result<()> {
    if keep {
        if !applied.is_empty() {
            let context = kube.map(|t| t.context.as_str()).unwrap_or("?");
            eprintln!(
                "kept what the suite applied in context {context}; remove it with: \
                 harness down --target existing"
            );
        }
        return Ok(());
    }
    let created: Vec<Applied> = applied.into_iter().filter(|a| a.created).collect();
    for object in created.iter().rev() {
        runner.step(format!("delete {}", object.describe()));
    }
    if let Some(api) = api {
        api.delete_created(created).await?;
    }
    if let Some(kube) = kube
        && !runner.is_dry_run()
    {
        let _ = std::fs::remove_file(applied_record(&settings.state, &kube.context));
    }
    Ok(())
}

/// `harness down --target existing`: deletes exactly what the suite recorded as created in the
/// current context, then forgets the record.
pub(crate) async fn down(
    runner: &Runner,
    settings: &Settings,
    backend: &dyn Backend,
) -> Result<()> {
    let context = settings
        .existing_context
        .clone()
        .context("no current kube context")?;
    let file = applied_record(&settings.state, &context);
    let Ok(text) = std::fs::read(&file) else {
        println!(
            "nothing recorded as applied by the suite in context {context}: nothing to delete"
        );
        return Ok(());
    };
    let applied: Vec<Applied> =
        serde_json::from_slice(&text).with_context(|| format!("reading {}", file.display()))?;
    let kube = KubeTarget {
        kubeconfig: None,
        context,
    };
    let api = if runner.is_dry_run() {
        None
    } else {
        Some(super::connect(runner, backend, None, &kube).await?)
    };
    delete_created(
        runner,
        settings,
        api.as_deref(),
        Some(&kube),
        applied,
        false,
    )
    .await
}

/// `kubectl delete` arguments for one applied object (`Deployment.v1.apps/name -n ns`).
pub(crate) fn kubectl_delete_args(object: &Applied) -> Vec<String> {
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

/// Where the existing target records what it applied in `context`.
pub(crate) fn applied_record(state: &StateDir, context: &str) -> PathBuf {
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

impl Environment for ExistingEnvironment {
    fn describe(&self) -> String {
        format!(
            "existing: context {}, image {}",
            self.running.kube.context, self.running.image
        )
    }

    fn ingress(&self) -> SocketAddr {
        self.running.ingress
    }

    fn replica_metrics(&self) -> BoxFuture<'_, Result<std::collections::BTreeMap<String, String>>> {
        Box::pin(self.running.replica_metrics())
    }

    fn kube_check(&self, check: KubeCheck) -> BoxFuture<'_, Result<KubeCheckOutcome>> {
        Box::pin(self.running.kube_check(check))
    }

    fn disrupt(&self, disruption: Disruption) -> BoxFuture<'_, Result<DisruptionReport>> {
        Box::pin(self.running.disrupt(disruption))
    }

    fn hop_notes(&self) -> Vec<String> {
        super::Running::hop_notes()
    }

    fn versions(&self) -> std::collections::BTreeMap<String, String> {
        self.running.versions()
    }

    fn collect_diagnostics<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, ()> {
        let target = super::diagnose_target(
            &self.running.settings,
            &self.running.kube,
            None,
            Some(&self.running.app.namespace),
        );
        Box::pin(super::collect(&self.running.runner, Some(target), dir))
    }

    fn teardown(&mut self, keep: bool) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.teardown_now(keep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
