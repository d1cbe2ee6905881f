//! Installing Istio with istioctl and the project's overlay, then waiting until istiod (whose
//! readiness includes the sidecar injector) and the ingress gateway are available: the
//! injection webhook acts only on pods created after it answers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

use crate::config::paths;
use crate::exec::cmd::{Cmd, Runner};
use crate::k8s::apply::{Attempt, wait_for};
use crate::tools::preflight::{Tool, Tools};

pub const ISTIO_NAMESPACE: &str = "istio-system";
pub const ISTIOD: &str = "istiod";
pub const INGRESS_GATEWAY: &str = "istio-ingressgateway";
/// istioctl's own bound on waiting for what it installed.
pub const READINESS_TIMEOUT: &str = "5m";

pub fn install_overlay() -> PathBuf {
    paths::manifests_dir().join("istio-install.yaml")
}

/// Where the kube-facing tools point: always explicit, so neither the user's current context
/// nor their kubeconfig decides which cluster is changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeTarget {
    /// None: the default kubeconfig (`existing` target).
    pub kubeconfig: Option<PathBuf>,
    pub context: String,
}

impl KubeTarget {
    /// `--kubeconfig F --context C`, understood by kubectl and istioctl alike.
    pub fn flags(&self) -> Vec<String> {
        let mut flags = Vec::new();
        if let Some(file) = &self.kubeconfig {
            flags.push("--kubeconfig".to_string());
            flags.push(file.display().to_string());
        }
        flags.push("--context".to_string());
        flags.push(self.context.clone());
        flags
    }
}

/// `istioctl install -y -f <overlay> --readiness-timeout 5m` against `target`.
pub fn install_command(tools: &Tools, target: &KubeTarget, overlay: &Path) -> Cmd {
    tools
        .cmd(Tool::Istioctl)
        .args(["install", "-y", "-f"])
        .arg(overlay)
        .args(["--readiness-timeout", READINESS_TIMEOUT])
        .args(target.flags())
        // istioctl's readiness wait plus image pulls on a cold node.
        .timeout(Duration::from_secs(7 * 60))
}

pub async fn install(
    runner: &Runner,
    tools: &Tools,
    target: &KubeTarget,
    version: &str,
) -> Result<()> {
    let overlay = install_overlay();
    runner
        .run(&install_command(tools, target, &overlay))
        .await
        .with_context(|| {
            format!(
                "installing Istio {version} with {} into context {}",
                overlay.display(),
                target.context
            )
        })?;
    Ok(())
}

/// A Deployment is available: its current generation observed and `Available=True`.
pub fn deployment_available(deployment: &Deployment) -> Attempt<()> {
    let name = deployment.metadata.name.as_deref().unwrap_or("<unnamed>");
    let generation = deployment.metadata.generation.unwrap_or(0);
    let status = deployment.status.clone().unwrap_or_default();
    if status.observed_generation.unwrap_or(0) < generation {
        return Attempt::NotYet(format!(
            "Deployment {name}: generation {generation} not observed yet"
        ));
    }
    let available = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Available");
    match available {
        Some(c) if c.status == "True" => Attempt::Done(()),
        Some(c) => Attempt::NotYet(format!(
            "Deployment {name}: Available={} ({}), {}/{} replicas available",
            c.status,
            c.message.as_deref().unwrap_or("no message"),
            status.available_replicas.unwrap_or(0),
            status.replicas.unwrap_or(0)
        )),
        None => Attempt::NotYet(format!("Deployment {name}: no Available condition yet")),
    }
}

/// Waits until `namespace/name` is available.
pub async fn wait_available(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    wait_for(
        &format!("Deployment {namespace}/{name} to be Available"),
        timeout,
        Duration::from_secs(2),
        || async {
            Ok(match api.get_opt(name).await {
                Ok(Some(d)) => deployment_available(&d),
                Ok(None) => Attempt::NotYet(format!("Deployment {namespace}/{name} not found")),
                Err(err) => Attempt::NotYet(format!("API error: {err}")),
            })
        },
    )
    .await
}

/// istiod, then the ingress gateway, both within one `timeout`.
pub async fn wait_control_plane(client: &kube::Client, timeout: Duration) -> Result<()> {
    let started = std::time::Instant::now();
    wait_available(client, ISTIO_NAMESPACE, ISTIOD, timeout).await?;
    // The gateway usually becomes available with istiod: a short floor, not a second full wait.
    let left = timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_secs(15));
    wait_available(client, ISTIO_NAMESPACE, INGRESS_GATEWAY, left).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::preflight::ToolSearch;

    #[test]
    fn install_targets_the_context_explicitly_with_a_readiness_timeout() {
        let tools = Tools::resolve(&ToolSearch::with_path(""), "1.31.1");
        let target = KubeTarget {
            kubeconfig: Some(PathBuf::from("/s/k.kubeconfig")),
            context: "kind-istio-fft-e2e-1-abcd".into(),
        };
        let cmd = install_command(&tools, &target, Path::new("/m/istio-install.yaml"));
        assert_eq!(
            cmd.to_string(),
            "istioctl install -y -f /m/istio-install.yaml --readiness-timeout 5m \
             --kubeconfig /s/k.kubeconfig --context kind-istio-fft-e2e-1-abcd"
        );
    }

    #[test]
    fn availability_needs_the_condition_and_the_current_generation() {
        let mut d: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "istiod", "generation": 2},
            "status": {"observedGeneration": 2, "replicas": 1, "availableReplicas": 1,
                "conditions": [{"type": "Available", "status": "True"}]}
        }))
        .unwrap();
        assert!(matches!(deployment_available(&d), Attempt::Done(())));
        d.metadata.generation = Some(3);
        assert!(matches!(deployment_available(&d), Attempt::NotYet(_)));
        d.metadata.generation = Some(2);
        d.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "False".into();
        let Attempt::NotYet(state) = deployment_available(&d) else {
            panic!("a False condition is not available")
        };
        assert!(state.contains("Available=False"), "{state}");
    }
}
