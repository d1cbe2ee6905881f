//! What a cluster target is brought up with: the target, the cluster's name and ownership, the
//! tools, versions and manifests, the timeouts; and the app as the manifests describe it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kube::config::Kubeconfig;

use crate::config::knobs::{Keep, Knobs, MeshKnobs};
use crate::config::names::{IMAGE_REPOSITORY, is_service_image};
use crate::config::paths;
use crate::config::versions::Versions;
use crate::manifest::kind_config::KindConfig;
use crate::manifest::{self, Resource};
use crate::tools::istioctl;
use crate::tools::kind::{self, StateDir};
use crate::tools::preflight::{ToolSearch, Tools};

/// Which cluster target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Kind,
    Existing,
}

impl Mode {
    pub(crate) fn as_str(self) -> &'static str {
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
    /// Where the existing target finds the injector and the ingress gateway.
    pub mesh: MeshKnobs,
}

impl Settings {
    /// From the `E2E_*` knobs, `versions.env` and the tools found in `.tools/bin` and on PATH.
    pub(crate) fn from_knobs(mode: Mode, knobs: &Knobs) -> Result<Self> {
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
            kind_config: KindConfig::default_path(),
            istio_overlay: istioctl::install_overlay(),
            app_manifest: paths::app_manifest(),
            timeouts: Timeouts::default(),
            existing_context,
            offline: knobs.offline,
            mesh: knobs.mesh.clone(),
        })
    }
}

/// The kubeconfig's current context, named explicitly from then on so that switching contexts
/// during a run cannot redirect it.
pub(crate) fn current_context() -> Result<String> {
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
pub(crate) struct AppInfo {
    pub namespace: String,
    pub deployment: String,
    /// The container that runs our image.
    pub container: String,
}

/// Finds the Deployment that runs `fft-service` in the manifests.
pub(crate) fn app_info(documents: &[manifest::Document]) -> Result<AppInfo> {
    for document in documents {
        let Resource::Deployment(deployment) = &document.resource else {
            continue;
        };
        let container = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|s| {
                s.containers
                    .iter()
                    .find(|c| c.image.as_deref().is_some_and(is_service_image))
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
        IMAGE_REPOSITORY
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_info_comes_from_the_manifests() {
        let documents = manifest::load_file(&paths::app_manifest()).unwrap();
        assert_eq!(
            app_info(&documents).unwrap(),
            AppInfo {
                namespace: "wty-istio".into(),
                deployment: "wtyfft-deploy".into(),
                container: "wtyfft-container-name".into(),
            }
        );
    }
}
