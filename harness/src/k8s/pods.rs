//! The suite's Kubernetes checks: pure functions over Pods, Deployments and Services, tested on
//! fixtures that follow what Istio's injector really writes (docs/facts.md).

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde::Deserialize;

use crate::config::names::{APP_PORT, METRICS_PATH};

pub(crate) const SIDECAR_CONTAINER: &str = "istio-proxy";
pub(crate) const SIDECAR_STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
/// The pilot-agent's port that serves the merged metrics.
pub(crate) const MERGED_METRICS_PORT: u16 = 15020;
pub(crate) const MERGED_METRICS_PATH: &str = "/stats/prometheus";
/// Where the injector keeps the pod's original scrape annotations when it merges.
pub(crate) const ORIGINAL_ANNOTATIONS_ENV: &str = "ISTIO_PROMETHEUS_ANNOTATIONS";

/// Metric families only the app exports (Envoy's are `envoy_*`, Istio's `istio_*`), so finding
/// them on 15020 proves the agent fetched the app's own `/metrics`.
pub(crate) const APP_METRIC_FAMILIES: [&str; 3] = [
    "fft_http_requests",
    "fft_jobs_running",
    "fft_compute_duration_seconds",
];

/// Where the injector put the sidecar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SidecarPlace {
    /// `spec.initContainers` with `restartPolicy: Always` (Istio ≥ 1.27 on kubelet ≥ 1.33).
    Native,
    /// `spec.containers`.
    Classic,
}

fn pod_name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("<unnamed pod>")
}

fn annotations(pod: &Pod) -> BTreeMap<String, String> {
    pod.metadata.annotations.clone().unwrap_or_default()
}

/// The sidecar container of a pod, wherever it is.
pub(crate) fn sidecar_container(pod: &Pod) -> Option<(&Container, SidecarPlace)> {
    let spec = pod.spec.as_ref()?;
    if let Some(c) = spec.containers.iter().find(|c| c.name == SIDECAR_CONTAINER) {
        return Some((c, SidecarPlace::Classic));
    }
    spec.init_containers
        .as_ref()?
        .iter()
        .find(|c| c.name == SIDECAR_CONTAINER)
        .map(|c| (c, SidecarPlace::Native))
}

/// The pod is injected: the status annotation, and `istio-proxy` in `containers` or as a
/// native sidecar (an init container that restarts `Always`).
pub(crate) fn sidecar_injected(pod: &Pod) -> Result<SidecarPlace> {
    let name = pod_name(pod);
    let status = annotations(pod)
        .get(SIDECAR_STATUS_ANNOTATION)
        .cloned()
        .with_context(|| {
            format!(
                "pod {name} has no `{SIDECAR_STATUS_ANNOTATION}` annotation: it was not injected \
                 (created before istiod's webhook or before the namespace had \
                 istio-injection=enabled?)"
            )
        })?;
    serde_json::from_str::<serde_json::Value>(&status).with_context(|| {
        format!("pod {name}: `{SIDECAR_STATUS_ANNOTATION}` is not JSON: {status}")
    })?;
    let (container, place) = sidecar_container(pod).with_context(|| {
        format!("pod {name} is annotated as injected but has no `{SIDECAR_CONTAINER}` container in containers or initContainers")
    })?;
    if place == SidecarPlace::Native && container.restart_policy.as_deref() != Some("Always") {
        bail!(
            "pod {name}: `{SIDECAR_CONTAINER}` is an init container without `restartPolicy: \
             Always`, so it would exit before the app starts"
        );
    }
    Ok(place)
}

/// Whether the sidecar container reports ready (a native sidecar reports in
/// `initContainerStatuses`).
pub(crate) fn sidecar_ready(pod: &Pod) -> bool {
    let Some((_, place)) = sidecar_container(pod) else {
        return false;
    };
    let status = pod.status.as_ref();
    let statuses = match place {
        SidecarPlace::Classic => status.and_then(|s| s.container_statuses.as_ref()),
        SidecarPlace::Native => status.and_then(|s| s.init_container_statuses.as_ref()),
    };
    statuses
        .into_iter()
        .flatten()
        .any(|s| s.name == SIDECAR_CONTAINER && s.ready)
}

/// The `prometheus.io/*` annotations of a pod or template.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub(crate) struct ScrapeAnnotations {
    pub scrape: String,
    pub path: String,
    pub port: String,
}

impl ScrapeAnnotations {
    /// The article's: scrape the app's own 8080 `/metrics`.
    pub(crate) fn article() -> Self {
        ScrapeAnnotations {
            scrape: "true".into(),
            path: METRICS_PATH.into(),
            port: APP_PORT.to_string(),
        }
    }

    /// What the injector writes when it merges metrics.
    pub(crate) fn merged() -> Self {
        ScrapeAnnotations {
            scrape: "true".into(),
            path: MERGED_METRICS_PATH.into(),
            port: MERGED_METRICS_PORT.to_string(),
        }
    }

    fn from_map(map: &BTreeMap<String, String>) -> Option<Self> {
        Some(ScrapeAnnotations {
            scrape: map.get("prometheus.io/scrape")?.clone(),
            path: map.get("prometheus.io/path")?.clone(),
            port: map.get("prometheus.io/port")?.clone(),
        })
    }
}

/// The scrape annotations written on the Deployment's pod template.
fn template_annotations(deployment: &Deployment) -> Result<ScrapeAnnotations> {
    let name = deployment.metadata.name.as_deref().unwrap_or("<unnamed>");
    let template = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default();
    ScrapeAnnotations::from_map(&template).with_context(|| {
        format!("Deployment {name}: the pod template lacks prometheus.io/scrape, /path or /port")
    })
}

/// The Deployment's pod template keeps the article's annotations (the injector changes Pods,
/// never the template).
pub(crate) fn template_scrape_annotations(deployment: &Deployment) -> Result<ScrapeAnnotations> {
    let name = deployment.metadata.name.as_deref().unwrap_or("<unnamed>");
    let found = template_annotations(deployment)?;
    ensure!(
        found == ScrapeAnnotations::article(),
        "Deployment {name}: the pod template's scrape annotations are {found:?}, the article's are {:?}",
        ScrapeAnnotations::article()
    );
    Ok(found)
}

/// How a pod's scrape annotations look.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ScrapeState {
    /// Rewritten to the agent's 15020, the originals kept in the proxy's env.
    Merged,
    /// Merging off (mesh-wide or by annotation): the originals as written.
    Unmerged,
}

/// A pod carries either the merged annotations with `ISTIO_PROMETHEUS_ANNOTATIONS` holding
/// `original`, or `original` itself.
pub(crate) fn pod_scrape_annotations(
    pod: &Pod,
    original: &ScrapeAnnotations,
) -> Result<ScrapeState> {
    let name = pod_name(pod);
    let found = ScrapeAnnotations::from_map(&annotations(pod))
        .with_context(|| format!("pod {name} lacks prometheus.io/scrape, /path or /port"))?;
    let proxy_env = sidecar_container(pod).and_then(|(c, _)| {
        c.env
            .as_ref()?
            .iter()
            .find(|e| e.name == ORIGINAL_ANNOTATIONS_ENV)
            .and_then(|e| e.value.clone())
    });
    if found == ScrapeAnnotations::merged() {
        let env = proxy_env.with_context(|| {
            format!(
                "pod {name} has the merged annotations but `{SIDECAR_CONTAINER}` has no \
                 {ORIGINAL_ANNOTATIONS_ENV}: the agent would not know where the app's metrics are"
            )
        })?;
        let kept: ScrapeAnnotations = serde_json::from_str(&env).with_context(|| {
            format!("pod {name}: {ORIGINAL_ANNOTATIONS_ENV} is not the expected JSON: {env}")
        })?;
        ensure!(
            &kept == original,
            "pod {name}: {ORIGINAL_ANNOTATIONS_ENV} holds {kept:?}, the template had {original:?}"
        );
        return Ok(ScrapeState::Merged);
    }
    ensure!(
        &found == original,
        "pod {name}: scrape annotations are {found:?}: neither the merged ones ({:?}) nor the \
         template's ({original:?})",
        ScrapeAnnotations::merged()
    );
    ensure!(
        proxy_env.is_none(),
        "pod {name} keeps its original annotations yet its proxy has {ORIGINAL_ANNOTATIONS_ENV}"
    );
    Ok(ScrapeState::Unmerged)
}

/// Whether the mesh merges metrics, as far as the suite knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MeshMerging {
    /// Istio installed by the suite with an overlay that leaves `enablePrometheusMerge` on (its
    /// default since 1.7).
    On,
    /// The overlay turns it off.
    Off,
    /// Istio installed by someone else (`existing`): either is possible.
    Unknown,
}

/// What the install overlay says about `meshConfig.enablePrometheusMerge` (absent: on).
pub(crate) fn mesh_merging_from_overlay(overlay_file: &std::path::Path) -> Result<MeshMerging> {
    let overlay = crate::manifest::install::InstallOverlay::load(overlay_file)?;
    Ok(if overlay.prometheus_merge()? {
        MeshMerging::On
    } else {
        MeshMerging::Off
    })
}

/// What every app pod's scrape annotations must be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum MergeExpectation {
    Merged,
    /// With the reason merging does not apply.
    Unmerged(String),
    /// Either, as long as every pod agrees.
    Uniform,
}

/// The pod template's own opt-out, which wins over the mesh setting.
fn template_opt_out(deployment: &Deployment) -> Option<String> {
    let annotations = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref())?;
    ["prometheus.istio.io/merge-metrics", "prometheus.io/scrape"]
        .into_iter()
        .find(|key| annotations.get(*key).map(String::as_str) == Some("false"))
        .map(|key| format!("the pod template opts out with `{key}: \"false\"`"))
}

pub(crate) fn merge_expectation(deployment: &Deployment, mesh: MeshMerging) -> MergeExpectation {
    if let Some(why) = template_opt_out(deployment) {
        return MergeExpectation::Unmerged(why);
    }
    match mesh {
        MeshMerging::On => MergeExpectation::Merged,
        MeshMerging::Off => MergeExpectation::Unmerged(
            "the install overlay sets meshConfig.enablePrometheusMerge: false".into(),
        ),
        MeshMerging::Unknown => MergeExpectation::Uniform,
    }
}

/// The scrape annotations every app pod carries, checked against what the mesh and the template
/// call for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ScrapeVerdict {
    pub state: ScrapeState,
    pub expectation: MergeExpectation,
    pub pods: usize,
}

impl ScrapeVerdict {
    /// Why the merged endpoint is not there to check, when it is not.
    pub(crate) fn unmerged_reason(&self) -> Option<String> {
        if self.state == ScrapeState::Merged {
            return None;
        }
        Some(match &self.expectation {
            MergeExpectation::Unmerged(why) => format!(
                "metrics merging does not apply: {why}; Prometheus scrapes the app's 8080 \
                 /metrics directly"
            ),
            _ => "metrics merging is off in this mesh (every pod keeps its original scrape \
                  annotations): Prometheus scrapes the app's 8080 /metrics directly"
                .into(),
        })
    }
}

/// Every pod's scrape state, which must match `merge_expectation` (and agree across pods).
pub(crate) fn scrape_verdict(
    deployment: &Deployment,
    pods: &[Pod],
    mesh: MeshMerging,
) -> Result<ScrapeVerdict> {
    let name = deployment.metadata.name.as_deref().unwrap_or("<unnamed>");
    ensure!(!pods.is_empty(), "Deployment {name} has no pods");
    let original = template_annotations(deployment)?;
    let expectation = merge_expectation(deployment, mesh);
    let mut merged = Vec::new();
    let mut unmerged = Vec::new();
    for pod in pods {
        match pod_scrape_annotations(pod, &original)? {
            ScrapeState::Merged => merged.push(pod_name(pod).to_string()),
            ScrapeState::Unmerged => unmerged.push(pod_name(pod).to_string()),
        }
    }
    let state = match &expectation {
        MergeExpectation::Merged => {
            ensure!(
                unmerged.is_empty(),
                "pods {unmerged:?} keep their original scrape annotations, but the Istio the \
                 suite installed merges metrics (meshConfig.enablePrometheusMerge is on by default \
                 and the install overlay leaves it on) and the pod template does not opt out: \
                 the injector should have rewritten them to :{MERGED_METRICS_PORT}\
                 {MERGED_METRICS_PATH} with the originals in {ORIGINAL_ANNOTATIONS_ENV}"
            );
            ScrapeState::Merged
        }
        MergeExpectation::Unmerged(why) => {
            ensure!(
                merged.is_empty(),
                "pods {merged:?} carry the merged scrape annotations although {why}"
            );
            ScrapeState::Unmerged
        }
        MergeExpectation::Uniform => {
            ensure!(
                merged.is_empty() || unmerged.is_empty(),
                "the pods disagree about metrics merging: {merged:?} merged, {unmerged:?} \
                 unmerged; pods of one template in one mesh are injected alike"
            );
            if merged.is_empty() {
                ScrapeState::Unmerged
            } else {
                ScrapeState::Merged
            }
        }
    };
    Ok(ScrapeVerdict {
        state,
        expectation,
        pods: pods.len(),
    })
}

/// The app container runs `image` (the tag is the content, so the tag proves the content).
pub(crate) fn pod_runs_image(pod: &Pod, app_container: &str, image: &str) -> Result<()> {
    let name = pod_name(pod);
    let spec = pod
        .spec
        .as_ref()
        .with_context(|| format!("pod {name} has no spec"))?;
    let container = spec
        .containers
        .iter()
        .find(|c| c.name == app_container)
        .with_context(|| format!("pod {name} has no container `{app_container}`"))?;
    let spec_image = container.image.as_deref().unwrap_or("");
    ensure!(
        spec_image == image,
        "pod {name}: container {app_container} runs `{spec_image}`, expected the image just built `{image}`"
    );
    // The runtime reports the image fully qualified (`docker.io/library/fft-service:tag`).
    if let Some(status) = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|all| all.iter().find(|s| s.name == app_container))
    {
        ensure!(
            status.image == image || status.image.ends_with(&format!("/{image}")),
            "pod {name}: the runtime reports image `{}`, expected `{image}`",
            status.image
        );
    }
    Ok(())
}

/// Every app family is present in `text`; the error lists the missing ones.
pub(crate) fn contains_app_metrics(text: &str) -> Result<()> {
    let families = crate::exec::prometheus_text::parse(text)
        .map_err(|err| anyhow::anyhow!("the scrape is not Prometheus text: {err}"))?
        .families();
    let missing: Vec<&str> = APP_METRIC_FAMILIES
        .iter()
        .copied()
        .filter(|f| !families.contains(*f))
        .collect();
    ensure!(
        missing.is_empty(),
        "the app's metric families {missing:?} are missing ({} families seen)",
        families.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_from_types_and_samples() {
        let text = "# HELP fft_http_requests x\n# TYPE fft_http_requests counter\n\
                    fft_http_requests_total{method=\"GET\"} 3\nenvoy_cluster_upstream_rq 1\n\
                    fft_compute_duration_seconds_bucket{le=\"0.001\"} 0\n";
        let families = crate::exec::prometheus_text::parse(text)
            .unwrap()
            .families();
        assert!(families.contains("fft_http_requests"));
        assert!(families.contains("fft_compute_duration_seconds"));
        assert!(families.contains("envoy_cluster_upstream_rq"));
        assert!(!families.contains("fft_jobs_running"));
        let err = contains_app_metrics(text).unwrap_err().to_string();
        assert!(err.contains("fft_jobs_running"), "{err}");
    }
}
