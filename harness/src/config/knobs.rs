//! The `E2E_*` environment knobs, parsed once into types.
//!
//! A bad value is an error that names the variable and the accepted values: a typo such as
//! `E2E_TARGET=knd` must not quietly fall back to a default.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Result, bail};

use crate::config::paths;

/// Which environment the suite runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetChoice {
    /// `kind` when its prerequisites are present, else `local`, saying so.
    Auto,
    Kind,
    Local,
    Existing,
}

impl FromStr for TargetChoice {
    type Err = anyhow::Error;
    fn from_str(value: &str) -> Result<Self> {
        Ok(match value {
            "auto" => TargetChoice::Auto,
            "kind" => TargetChoice::Kind,
            "local" => TargetChoice::Local,
            "existing" => TargetChoice::Existing,
            other => bail!("unknown target `{other}`: expected auto, kind, local or existing"),
        })
    }
}

impl TargetChoice {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TargetChoice::Auto => "auto",
            TargetChoice::Kind => "kind",
            TargetChoice::Local => "local",
            TargetChoice::Existing => "existing",
        }
    }
}

/// What to keep after a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    Never,
    OnFailure,
    Always,
}

impl FromStr for Keep {
    type Err = anyhow::Error;
    fn from_str(value: &str) -> Result<Self> {
        Ok(match value {
            "never" => Keep::Never,
            "on-failure" => Keep::OnFailure,
            "always" => Keep::Always,
            other => bail!("unknown keep policy `{other}`: expected never, on-failure or always"),
        })
    }
}

impl Keep {
    /// Whether an environment is kept, given how the run ended.
    pub fn keeps(self, run_failed: bool) -> bool {
        match self {
            Keep::Never => false,
            Keep::OnFailure => run_failed,
            Keep::Always => true,
        }
    }
}

/// All `E2E_*` knobs (see README for each one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Knobs {
    /// `E2E_TARGET`, default `auto`.
    pub target: TargetChoice,
    /// `E2E_REQUIRE=1`: a missing prerequisite fails instead of skipping.
    pub require: bool,
    /// `E2E_KEEP`, default `on-failure`, or `never` when `CI` is set.
    pub keep: Keep,
    /// `E2E_CLUSTER`: reuse this kind cluster and never delete it.
    pub cluster: Option<String>,
    /// `E2E_ARTIFACTS`, default `target/e2e-artifacts`.
    pub artifacts: PathBuf,
    /// `E2E_OFFLINE=1`: never download anything.
    pub offline: bool,
    /// `E2E_IMAGE`: the image the `existing` target deploys.
    pub image: Option<String>,
    /// `E2E_DEADLINE`: the whole run's bound; past it the run collects diagnostics, tears down
    /// and fails by itself, before a CI job's own timeout kills it without either.
    pub deadline: std::time::Duration,
    /// `E2E_LOCAL_DRAIN_DELAY`: the local replicas' `--drain-delay`; `0s` shows what the delay
    /// prevents (the rolling restart then loses requests).
    pub local_drain_delay: std::time::Duration,
    /// `E2E_LOCAL_PROPAGATION_LAG`: on the local target, how long after a replica's SIGTERM
    /// Envoy still routes to it, as proxies learn of an endpoint removal late.
    pub local_propagation_lag: std::time::Duration,
    /// Where the `existing` target finds Istio's injector and ingress gateway.
    pub mesh: MeshKnobs,
}

/// How the `existing` target finds the mesh it runs on. Each has a default that fits
/// `istioctl install` and the Helm charts' documented releases; a knob is needed only when the
/// cluster differs, and a failed discovery names the one to set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshKnobs {
    /// `E2E_GATEWAY_NAMESPACE`: the ingress gateway's namespace (default: any namespace with one
    /// Service labelled with the selector).
    pub gateway_namespace: Option<String>,
    /// `E2E_GATEWAY_SELECTOR`: the gateway pods' labels, `key=value[,key=value]` (default
    /// `istio=ingressgateway`); the app's Gateway selects them by it.
    pub gateway_selector: String,
    /// `E2E_GATEWAY_SERVICE`: the gateway's Service (default: the one Service labelled with the
    /// selector).
    pub gateway_service: Option<String>,
    /// `E2E_ISTIO_REVISION`: the revision or tag to label the app's namespace with
    /// (`istio.io/rev`) when no injector honours `istio-injection=enabled` (default: the only
    /// one installed).
    pub istio_revision: Option<String>,
}

impl Default for MeshKnobs {
    fn default() -> Self {
        MeshKnobs {
            gateway_namespace: None,
            gateway_selector: crate::config::names::GATEWAY_SELECTOR.to_string(),
            gateway_service: None,
            istio_revision: None,
        }
    }
}

impl MeshKnobs {
    /// The selector as label pairs; an error names the knob.
    pub(crate) fn selector_labels(&self) -> Result<Vec<(String, String)>> {
        parse_selector(&self.gateway_selector)
    }
}

/// `key=value[,key=value]`: the only selector form a Gateway's `selector` map can express.
fn parse_selector(text: &str) -> Result<Vec<(String, String)>> {
    let mut labels = Vec::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() && !value.contains('=') => {
                labels.push((key.trim().to_string(), value.trim().to_string()));
            }
            _ => bail!(
                "E2E_GATEWAY_SELECTOR: `{text}` is not `key=value[,key=value]` (e.g. \
                 istio=ingressgateway): a Gateway selects its pods by equal labels only"
            ),
        }
    }
    if labels.is_empty() {
        bail!("E2E_GATEWAY_SELECTOR is empty: use e.g. istio=ingressgateway");
    }
    Ok(labels)
}

/// The local replicas' drain delay: twice the lag, so the lame duck outlasts it.
pub(crate) const DEFAULT_LOCAL_DRAIN_DELAY: std::time::Duration =
    std::time::Duration::from_millis(1000);
/// Long enough that requests reach a replica after its SIGTERM (Kubernetes' endpoint propagation
/// takes about a second on a small cluster), short enough for a fast suite.
pub(crate) const DEFAULT_LOCAL_PROPAGATION_LAG: std::time::Duration =
    std::time::Duration::from_millis(500);

/// Below the nightly job's 40 minutes, with room for diagnostics and teardown after it.
pub(crate) const DEFAULT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30 * 60);

impl Knobs {
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Parses the knobs from any lookup, so tests need not mutate the process environment.
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let non_empty = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let target = match non_empty("E2E_TARGET") {
            Some(value) => value
                .trim()
                .parse()
                .map_err(|err| anyhow::anyhow!("E2E_TARGET: {err}"))?,
            None => TargetChoice::Auto,
        };
        let keep = match non_empty("E2E_KEEP") {
            Some(value) => value
                .trim()
                .parse()
                .map_err(|err| anyhow::anyhow!("E2E_KEEP: {err}"))?,
            // CI machines are thrown away; a kept cluster there only wastes the runner.
            None if non_empty("CI").is_some() => Keep::Never,
            None => Keep::OnFailure,
        };
        Ok(Knobs {
            target,
            require: flag("E2E_REQUIRE", non_empty("E2E_REQUIRE"))?,
            keep,
            cluster: non_empty("E2E_CLUSTER"),
            artifacts: non_empty("E2E_ARTIFACTS")
                .map(PathBuf::from)
                .unwrap_or_else(paths::default_artifacts_dir),
            offline: flag("E2E_OFFLINE", non_empty("E2E_OFFLINE"))?,
            image: non_empty("E2E_IMAGE"),
            deadline: match duration("E2E_DEADLINE", non_empty("E2E_DEADLINE"), DEADLINE_EXAMPLES)?
            {
                Some(zero) if zero.is_zero() => {
                    bail!("E2E_DEADLINE: `0s` is no deadline: use e.g. {DEADLINE_EXAMPLES}")
                }
                Some(deadline) => deadline,
                None => DEFAULT_DEADLINE,
            },
            local_drain_delay: duration(
                "E2E_LOCAL_DRAIN_DELAY",
                non_empty("E2E_LOCAL_DRAIN_DELAY"),
                "1s, 500ms or 0s",
            )?
            .unwrap_or(DEFAULT_LOCAL_DRAIN_DELAY),
            local_propagation_lag: duration(
                "E2E_LOCAL_PROPAGATION_LAG",
                non_empty("E2E_LOCAL_PROPAGATION_LAG"),
                "500ms, 1s or 0s",
            )?
            .unwrap_or(DEFAULT_LOCAL_PROPAGATION_LAG),
            mesh: {
                let mesh = MeshKnobs {
                    gateway_namespace: non_empty("E2E_GATEWAY_NAMESPACE")
                        .map(|v| v.trim().to_string()),
                    gateway_selector: non_empty("E2E_GATEWAY_SELECTOR")
                        .map(|v| v.trim().to_string())
                        .unwrap_or_else(|| MeshKnobs::default().gateway_selector),
                    gateway_service: non_empty("E2E_GATEWAY_SERVICE").map(|v| v.trim().to_string()),
                    istio_revision: non_empty("E2E_ISTIO_REVISION").map(|v| v.trim().to_string()),
                };
                mesh.selector_labels()?;
                mesh
            },
        })
    }
}

const DEADLINE_EXAMPLES: &str = "30m, 1h or 90s";

/// A human duration (`30m`, `500ms`), or an error that names the variable and shows `examples`.
fn duration(
    name: &str,
    value: Option<String>,
    examples: &str,
) -> Result<Option<std::time::Duration>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let parsed = humantime::parse_duration(value.trim()).map_err(|_| {
        anyhow::anyhow!(
            "{name}: `{}` is not a duration: use e.g. {examples}",
            value.trim()
        )
    })?;
    Ok(Some(parsed))
}

fn flag(name: &str, value: Option<String>) -> Result<bool> {
    match value.as_deref().map(str::trim) {
        None | Some("0") | Some("false") | Some("no") => Ok(false),
        Some("1") | Some("true") | Some("yes") => Ok(true),
        Some(other) => bail!("{name}: `{other}` is not a flag: use 1 or 0"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::collections::HashMap;

    fn knobs(pairs: &[(&str, &str)]) -> Result<Knobs> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Knobs::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_outside_ci() {
        let k = knobs(&[]).unwrap();
        assert_eq!(k.target, TargetChoice::Auto);
        assert_eq!(k.keep, Keep::OnFailure);
        assert!(!k.require && !k.offline);
        assert_eq!(k.cluster, None);
        assert!(k.artifacts.ends_with("target/e2e-artifacts"));
        assert_eq!(k.deadline, DEFAULT_DEADLINE);
        assert!(k.local_drain_delay > k.local_propagation_lag);
    }

    #[test]
    fn the_local_resilience_model_takes_durations_including_zero() {
        let k = knobs(&[
            ("E2E_LOCAL_DRAIN_DELAY", "0s"),
            ("E2E_LOCAL_PROPAGATION_LAG", "750ms"),
        ])
        .unwrap();
        assert_eq!(k.local_drain_delay, std::time::Duration::ZERO);
        assert_eq!(
            k.local_propagation_lag,
            std::time::Duration::from_millis(750)
        );
        let err = knobs(&[("E2E_LOCAL_PROPAGATION_LAG", "half a second")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("E2E_LOCAL_PROPAGATION_LAG") && err.contains("e.g. 500ms"),
            "{err}"
        );
    }

    #[test]
    fn the_deadline_is_a_human_duration() {
        let k = knobs(&[("E2E_DEADLINE", "25m")]).unwrap();
        assert_eq!(k.deadline, std::time::Duration::from_secs(25 * 60));
        for bad in ["soon", "0s", "30"] {
            let err = knobs(&[("E2E_DEADLINE", bad)]).unwrap_err().to_string();
            assert!(
                err.contains("E2E_DEADLINE") && err.contains("e.g. 30m"),
                "{bad}: {err}"
            );
        }
    }

    #[rstest]
    #[case(&[("CI", "true")], Keep::Never)]
    #[case(&[("CI", "true"), ("E2E_KEEP", "always")], Keep::Always)]
    #[case(&[("E2E_KEEP", "never")], Keep::Never)]
    #[case(&[("CI", "")], Keep::OnFailure)]
    fn keep_policy(#[case] env: &[(&str, &str)], #[case] expected: Keep) {
        assert_eq!(knobs(env).unwrap().keep, expected);
    }

    #[rstest]
    #[case("E2E_TARGET", "knd", "expected auto, kind, local or existing")]
    #[case("E2E_KEEP", "sometimes", "expected never, on-failure or always")]
    #[case("E2E_REQUIRE", "maybe", "E2E_REQUIRE: `maybe` is not a flag")]
    fn bad_values_name_the_variable(
        #[case] name: &str,
        #[case] value: &str,
        #[case] message: &str,
    ) {
        let err = knobs(&[(name, value)]).unwrap_err().to_string();
        assert!(err.contains(name) && err.contains(message), "{err}");
    }

    #[test]
    fn the_mesh_knobs_default_to_istioctl_and_the_helm_readme() {
        let k = knobs(&[]).unwrap();
        assert_eq!(k.mesh, MeshKnobs::default());
        assert_eq!(
            k.mesh.selector_labels().unwrap(),
            [("istio".to_string(), "ingressgateway".to_string())]
        );
        let k = knobs(&[
            ("E2E_GATEWAY_NAMESPACE", "istio-ingress"),
            ("E2E_GATEWAY_SELECTOR", "istio=gateway, app=gateway"),
            ("E2E_ISTIO_REVISION", "canary"),
        ])
        .unwrap();
        assert_eq!(k.mesh.gateway_namespace.as_deref(), Some("istio-ingress"));
        assert_eq!(k.mesh.selector_labels().unwrap().len(), 2);
        assert_eq!(k.mesh.istio_revision.as_deref(), Some("canary"));
        for bad in ["istio", "istio in (a,b)", "=x", "a==b"] {
            let err = knobs(&[("E2E_GATEWAY_SELECTOR", bad)])
                .unwrap_err()
                .to_string();
            assert!(err.contains("E2E_GATEWAY_SELECTOR"), "{bad}: {err}");
        }
    }

    #[test]
    fn keeps_by_outcome() {
        assert!(Keep::OnFailure.keeps(true) && !Keep::OnFailure.keeps(false));
        assert!(Keep::Always.keeps(false) && !Keep::Never.keeps(true));
    }
}
