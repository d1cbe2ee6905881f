//! The app container's limits and security settings, read from the Deployment in
//! `manifests/app.yaml`, so a container test runs the image exactly as the cluster will.

use std::path::Path;

use anyhow::{Context, Result, bail};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::manifest::{self, Resource};

/// What the Deployment asks of the app container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSpec {
    /// `resources.limits.cpu`, in billionths of a CPU (Docker's `NanoCpus`).
    pub cpu_limit_nanos: i64,
    /// `resources.limits.memory`, in bytes.
    pub memory_limit_bytes: i64,
    /// `runAsUser`, from the container or else the pod security context.
    pub run_as_user: i64,
    pub read_only_root_filesystem: bool,
    /// The container port the app listens on.
    pub container_port: u16,
}

/// Reads the first container of the first Deployment in `file`.
pub fn from_manifest(file: &Path) -> Result<ContainerSpec> {
    let documents = manifest::load_file(file)?;
    let deployment = documents
        .iter()
        .find_map(|doc| match &doc.resource {
            Resource::Deployment(deployment) => Some(deployment),
            _ => None,
        })
        .with_context(|| format!("{}: no Deployment", file.display()))?;
    let where_ =
        |field: &str| format!("{}: Deployment .spec.template.spec.{field}", file.display());
    let pod = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.template.spec.as_ref())
        .with_context(|| where_("(pod spec) is missing"))?;
    let container = pod
        .containers
        .first()
        .with_context(|| where_("containers is empty"))?;
    let limits = container
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .with_context(|| where_("containers[0].resources.limits is missing"))?;
    let limit = |name: &str| {
        limits
            .get(name)
            .with_context(|| where_(&format!("containers[0].resources.limits.{name} is missing")))
    };
    let security = container.security_context.as_ref();
    let run_as_user = security
        .and_then(|s| s.run_as_user)
        .or_else(|| pod.security_context.as_ref().and_then(|s| s.run_as_user))
        .with_context(|| where_("runAsUser is set neither on the container nor on the pod"))?;
    let container_port = container
        .ports
        .as_ref()
        .and_then(|ports| ports.first())
        .map(|port| port.container_port)
        .with_context(|| where_("containers[0].ports is empty"))?;
    Ok(ContainerSpec {
        cpu_limit_nanos: cpu_nanos(limit("cpu")?)
            .with_context(|| where_("containers[0].resources.limits.cpu"))?,
        memory_limit_bytes: memory_bytes(limit("memory")?)
            .with_context(|| where_("containers[0].resources.limits.memory"))?,
        run_as_user,
        read_only_root_filesystem: security
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        container_port: u16::try_from(container_port)
            .with_context(|| where_("containers[0].ports[0].containerPort"))?,
    })
}

/// `200m` → 200_000_000, `1` → 1_000_000_000, `0.5` → 500_000_000.
fn cpu_nanos(quantity: &Quantity) -> Result<i64> {
    let text = quantity.0.trim();
    let nanos = match text.strip_suffix('m') {
        Some(millis) => millis.parse::<f64>().map(|m| m * 1e6),
        None => text.parse::<f64>().map(|cores| cores * 1e9),
    }
    .ok()
    .filter(|n| n.is_finite() && *n > 0.0)
    .with_context(|| format!("`{text}` is not a CPU quantity such as 200m or 0.5"))?;
    Ok(nanos.round() as i64)
}

/// `256Mi` → 268_435_456; plain bytes and the binary and decimal suffixes of Kubernetes.
fn memory_bytes(quantity: &Quantity) -> Result<i64> {
    let text = quantity.0.trim();
    const SUFFIXES: [(&str, i64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (number, unit) = SUFFIXES
        .iter()
        .find_map(|(suffix, unit)| text.strip_suffix(suffix).map(|n| (n, *unit)))
        .unwrap_or((text, 1));
    match number.parse::<i64>() {
        Ok(n) if n > 0 => Ok(n * unit),
        _ => bail!("`{text}` is not a memory quantity such as 256Mi or 1G"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("200m", 200_000_000)]
    #[case("1", 1_000_000_000)]
    #[case("0.5", 500_000_000)]
    #[case("1500m", 1_500_000_000)]
    fn cpu(#[case] text: &str, #[case] nanos: i64) {
        assert_eq!(cpu_nanos(&Quantity(text.into())).unwrap(), nanos);
    }

    #[rstest]
    #[case("256Mi", 268_435_456)]
    #[case("1Gi", 1_073_741_824)]
    #[case("128M", 128_000_000)]
    #[case("4096", 4096)]
    fn memory(#[case] text: &str, #[case] bytes: i64) {
        assert_eq!(memory_bytes(&Quantity(text.into())).unwrap(), bytes);
    }

    #[rstest]
    #[case("lots")]
    #[case("-1")]
    #[case("0")]
    fn bad_quantities_are_errors(#[case] text: &str) {
        assert!(cpu_nanos(&Quantity(text.into())).is_err());
        assert!(memory_bytes(&Quantity(text.into())).is_err());
    }

    #[test]
    fn the_project_deployment_gives_the_tutorial_limits() {
        let spec = from_manifest(&crate::config::paths::manifests_dir().join("app.yaml")).unwrap();
        assert_eq!(
            spec,
            ContainerSpec {
                cpu_limit_nanos: 200_000_000,
                memory_limit_bytes: 256 << 20,
                run_as_user: 65532,
                read_only_root_filesystem: true,
                container_port: 8080,
            }
        );
    }
}
