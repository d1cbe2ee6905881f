//! Installing Istio with istioctl and the project's overlay (`istioctl install` waits for the
//! components' readiness itself; the harness then waits for istiod and the gateway in
//! `k8s::rollout::wait_control_plane`, because the injection webhook acts only on pods created
//! after it answers).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::paths;
use crate::exec::cmd::{Cmd, Runner};
use crate::tools::preflight::{Tool, Tools};

/// istioctl's own bound on waiting for what it installed.
pub(crate) const READINESS_TIMEOUT: &str = "5m";

pub(crate) fn install_overlay() -> PathBuf {
    paths::manifests_dir().join("istio-install.yaml")
}

/// Where the kube-facing tools point: always explicit, so neither the user's current context
/// nor their kubeconfig decides which cluster is changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct KubeTarget {
    /// None: the default kubeconfig (`existing` target).
    pub kubeconfig: Option<PathBuf>,
    pub context: String,
}

impl KubeTarget {
    /// `--kubeconfig F --context C`, understood by kubectl and istioctl alike.
    pub(crate) fn flags(&self) -> Vec<String> {
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
pub(crate) fn install_command(tools: &Tools, target: &KubeTarget, overlay: &Path) -> Cmd {
    tools
        .cmd(Tool::Istioctl)
        .args(["install", "-y", "-f"])
        .arg(overlay)
        .args(["--readiness-timeout", READINESS_TIMEOUT])
        .args(target.flags())
        // istioctl's readiness wait plus image pulls on a cold node.
        .timeout(Duration::from_secs(7 * 60))
}

pub(crate) async fn install(
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
}
