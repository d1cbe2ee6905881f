//! `manifests/kind-cluster.yaml`: the one reader of kind's cluster config, for what the harness
//! must agree with (the node image pin, the port mappings that publish the gateway's nodePort).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::config::paths;

/// One `extraPortMappings` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PortMapping {
    pub container_port: u16,
    pub host_port: Option<u16>,
    /// kind's default is 0.0.0.0.
    pub listen_address: String,
}

/// A kind `Cluster` config.
#[derive(Clone, Debug)]
pub(crate) struct KindConfig {
    pub path: PathBuf,
    raw: Value,
}

impl KindConfig {
    pub(crate) fn default_path() -> PathBuf {
        paths::manifests_dir().join("kind-cluster.yaml")
    }

    #[cfg(test)]
    pub(crate) fn load_default() -> Result<Self> {
        Self::load(&Self::default_path())
    }

    pub(crate) fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the kind config {}", path.display()))?;
        let raw: Value = serde_yaml_ng::from_str(&text)
            .with_context(|| format!("parsing the kind config {}", path.display()))?;
        Self::from_value(path, raw)
    }

    /// A config already parsed (the lint reads every manifest once).
    pub(crate) fn from_value(path: &Path, raw: Value) -> Result<Self> {
        if raw.get("kind").and_then(Value::as_str) != Some("Cluster") {
            bail!("{}: `kind: Cluster` expected", path.display());
        }
        Ok(KindConfig {
            path: path.to_path_buf(),
            raw,
        })
    }

    fn nodes(&self) -> &[Value] {
        self.raw
            .get("nodes")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    #[cfg(test)]
    /// The `image` of every node (the pin lives here, not on kind's command line, so there is
    /// one source).
    pub(crate) fn node_images(&self) -> Vec<String> {
        self.nodes()
            .iter()
            .filter_map(|n| n.get("image").and_then(Value::as_str))
            .map(str::to_string)
            .collect()
    }

    /// Every node's `extraPortMappings`, in order.
    pub(crate) fn port_mappings(&self) -> Vec<PortMapping> {
        self.nodes()
            .iter()
            .filter_map(|node| node.get("extraPortMappings")?.as_array())
            .flatten()
            .filter_map(|m| {
                Some(PortMapping {
                    container_port: u16::try_from(m.get("containerPort")?.as_u64()?).ok()?,
                    host_port: m
                        .get("hostPort")
                        .and_then(Value::as_u64)
                        .and_then(|p| u16::try_from(p).ok()),
                    listen_address: m
                        .get("listenAddress")
                        .and_then(Value::as_str)
                        .unwrap_or("0.0.0.0")
                        .to_string(),
                })
            })
            .collect()
    }

    /// Every mapping's (listenAddress, hostPort): what the node container binds on the host.
    pub(crate) fn host_ports(&self) -> Vec<(String, u16)> {
        self.port_mappings()
            .into_iter()
            .filter_map(|m| Some((m.listen_address, m.host_port?)))
            .collect()
    }

    /// Every mapping's containerPort.
    pub(crate) fn container_ports(&self) -> Vec<u16> {
        self.port_mappings()
            .iter()
            .map(|m| m.container_port)
            .collect()
    }

    /// The mapping that publishes `container_port`: (listenAddress, hostPort).
    pub(crate) fn host_mapping(&self, container_port: u16) -> Option<(String, u16)> {
        self.port_mappings()
            .into_iter()
            .find(|m| m.container_port == container_port)
            .and_then(|m| Some((m.listen_address, m.host_port?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::versions::Versions;

    #[test]
    fn kind_config_names_the_pinned_node_image() {
        let v = Versions::load().unwrap();
        let config = KindConfig::load_default().unwrap();
        assert_eq!(config.node_images(), vec![v.kind_node_image.clone()]);
    }
}
