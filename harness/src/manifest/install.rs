//! The one reader of Istio's install overlay (`manifests/istio-install.yaml`): the ingress
//! gateway as it will be installed, that is the labels its pods carry (what a Gateway's selector
//! must match) and the ports of its Service (what a Gateway's server port must be, the nodePort
//! kind publishes), and the mesh settings the checks depend on.
//!
//! Taken from an IstioOperator overlay among the inputs, or from a dump of the installed gateway
//! Service, and from Istio's chart defaults otherwise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use serde::Serialize;
use serde_json::Value;

use crate::manifest::{self, Document, Resource};

/// The name and namespace of the default ingress gateway.
use crate::config::names::{INGRESS_GATEWAY as DEFAULT_GATEWAY_NAME, ISTIO_NAMESPACE};

/// Profiles that install no ingress gateway unless the overlay enables one.
const PROFILES_WITHOUT_INGRESS: [&str; 4] = ["minimal", "empty", "remote", "ambient"];

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct IngressPort {
    pub name: String,
    pub port: i64,
    pub target_port: Option<i64>,
    pub node_port: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct IngressGateway {
    pub name: String,
    /// Labels of the gateway pods.
    pub labels: BTreeMap<String, String>,
    /// Ports of the gateway Service.
    pub ports: Vec<IngressPort>,
}

impl IngressGateway {
    /// The gateway that Istio's charts install by default.
    pub(crate) fn chart_default() -> Self {
        IngressGateway {
            name: DEFAULT_GATEWAY_NAME.into(),
            labels: default_labels(),
            ports: default_ports(),
        }
    }

    /// Whether a Gateway with this selector configures these pods (an empty selector selects all).
    pub(crate) fn selected_by(&self, selector: &BTreeMap<String, String>) -> bool {
        selector
            .iter()
            .all(|(key, value)| self.labels.get(key) == Some(value))
    }

    /// The port Envoy listens on for a Gateway server's port: the targetPort of the Service
    /// port with that number, else the number itself (`resolvePorts`, pilot/pkg/model/gateway.go).
    pub(crate) fn listen_port(&self, server_port: u32) -> u32 {
        self.ports
            .iter()
            .find(|p| p.port == i64::from(server_port))
            .and_then(|p| p.target_port)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(server_port)
    }

    pub(crate) fn describe_ports(&self) -> String {
        self.ports
            .iter()
            .map(|p| match p.target_port {
                Some(target) => format!("{} {}→{}", p.name, p.port, target),
                None => format!("{} {}", p.name, p.port),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn default_labels() -> BTreeMap<String, String> {
    crate::config::names::INGRESS_GATEWAY_LABELS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn default_ports() -> Vec<IngressPort> {
    [
        ("status-port", 15021, 15021),
        ("http2", 80, 8080),
        ("https", 443, 8443),
    ]
    .into_iter()
    .map(|(name, port, target)| IngressPort {
        name: name.into(),
        port,
        target_port: Some(target),
        node_port: None,
    })
    .collect()
}

/// The installed ingress gateways and where that knowledge came from.
#[derive(Clone, Debug)]
pub(crate) struct Ingress {
    pub gateways: Vec<IngressGateway>,
    /// `manifests/istio-install.yaml`, or `Istio's chart defaults`.
    pub source: String,
}

impl Ingress {
    pub(crate) fn from_documents<'a>(
        install_documents: impl IntoIterator<Item = &'a Document>,
    ) -> Self {
        let mut gateways = Vec::new();
        let mut sources = Vec::new();
        for doc in install_documents {
            if is_istio_operator(doc) {
                gateways.extend(gateways_of_operator(&doc.raw));
            } else if let Resource::Service(_) = &doc.resource {
                gateways.push(gateway_of_service(&doc.raw));
            } else {
                continue;
            }
            let file = doc.file.display().to_string();
            if !sources.contains(&file) {
                sources.push(file);
            }
        }
        if sources.is_empty() {
            return Ingress {
                gateways: vec![IngressGateway::chart_default()],
                source: "Istio's chart defaults".into(),
            };
        }
        Ingress {
            gateways,
            source: sources.join(", "),
        }
    }
}

pub(crate) fn is_istio_operator(doc: &Document) -> bool {
    doc.kind() == "IstioOperator" && doc.api_version().starts_with("install.istio.io/")
}

/// A Service that fronts gateway pods in Istio's namespace: the installed gateway, not the app.
pub(crate) fn is_gateway_service(doc: &Document) -> bool {
    matches!(doc.resource, Resource::Service(_))
        && doc.namespace() == Some(ISTIO_NAMESPACE)
        && doc.raw.pointer("/spec/selector/istio").is_some()
}

fn gateways_of_operator(raw: &Value) -> Vec<IngressGateway> {
    let profile = raw
        .pointer("/spec/profile")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let profile_has_ingress = !PROFILES_WITHOUT_INGRESS.contains(&profile);
    let entries = raw
        .pointer("/spec/components/ingressGateways")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut gateways = Vec::new();
    let mut default_listed = false;
    for entry in &entries {
        let name = entry
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_GATEWAY_NAME);
        let is_default = name == DEFAULT_GATEWAY_NAME;
        default_listed |= is_default;
        let enabled = entry
            .get("enabled")
            .and_then(Value::as_bool)
            .unwrap_or(is_default && profile_has_ingress);
        if !enabled {
            continue;
        }
        let mut labels = default_labels();
        if let Some(extra) = entry.get("label").and_then(Value::as_object) {
            for (key, value) in extra {
                if let Some(value) = value.as_str() {
                    labels.insert(key.clone(), value.to_string());
                }
            }
        }
        let ports = entry
            .pointer("/k8s/service/ports")
            .and_then(Value::as_array)
            .map(|ports| ports.iter().filter_map(port_of).collect())
            // The overlay's list replaces the chart's; without one the chart's stays.
            .unwrap_or_else(default_ports);
        gateways.push(IngressGateway {
            name: name.to_string(),
            labels,
            ports,
        });
    }
    if !default_listed && profile_has_ingress {
        gateways.push(IngressGateway::chart_default());
    }
    gateways
}

fn gateway_of_service(raw: &Value) -> IngressGateway {
    let labels = raw
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .map(|selector| {
            selector
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let ports = raw
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ports| ports.iter().filter_map(port_of).collect())
        .unwrap_or_default();
    IngressGateway {
        name: raw
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_GATEWAY_NAME)
            .to_string(),
        labels,
        ports,
    }
}

fn port_of(port: &Value) -> Option<IngressPort> {
    Some(IngressPort {
        name: port
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        port: port.get("port")?.as_i64()?,
        target_port: port.get("targetPort").and_then(Value::as_i64),
        node_port: port.get("nodePort").and_then(Value::as_i64),
    })
}

/// The install overlay file, read once.
#[derive(Clone, Debug)]
pub(crate) struct InstallOverlay {
    pub path: PathBuf,
    pub ingress: Ingress,
    operator: Option<Value>,
}

impl InstallOverlay {
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let documents = manifest::load_file(path)?;
        let operator = documents
            .iter()
            .find(|d| is_istio_operator(d))
            .map(|d| d.raw.clone());
        Ok(InstallOverlay {
            path: path.to_path_buf(),
            ingress: Ingress::from_documents(&documents),
            operator,
        })
    }

    /// The default ingress gateway's `http2` nodePort, pinned so kind can publish it.
    pub(crate) fn http2_node_port(&self) -> Result<u16> {
        self.ingress
            .gateways
            .iter()
            .filter(|g| g.name == DEFAULT_GATEWAY_NAME)
            .flat_map(|g| &g.ports)
            .find(|p| p.name == "http2")
            .and_then(|p| p.node_port)
            .and_then(|p| u16::try_from(p).ok())
            .with_context(|| {
                format!(
                    "{}: spec.components.ingressGateways[0].k8s.service.ports has no `http2` \
                     port with a nodePort",
                    self.path.display()
                )
            })
    }

    /// `spec.meshConfig.enablePrometheusMerge` (absent: Istio's default, on since 1.7).
    pub(crate) fn prometheus_merge(&self) -> Result<bool> {
        match self
            .operator
            .as_ref()
            .and_then(|o| o.pointer("/spec/meshConfig/enablePrometheusMerge"))
        {
            None => Ok(true),
            Some(Value::Bool(on)) => Ok(*on),
            Some(other) => bail!(
                "{}: spec.meshConfig.enablePrometheusMerge is `{other}`, expected true or false",
                self.path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn ingress(yaml: &str) -> Ingress {
        let docs = crate::manifest::load_str(Path::new("install.yaml"), yaml).unwrap();
        Ingress::from_documents(&docs)
    }

    #[test]
    fn no_install_documents_means_chart_defaults() {
        let ingress = Ingress::from_documents(&[]);
        assert_eq!(ingress.source, "Istio's chart defaults");
        let ports: Vec<i64> = ingress.gateways[0].ports.iter().map(|p| p.port).collect();
        assert_eq!(ports, [15021, 80, 443]);
    }

    #[test]
    fn overlay_ports_replace_the_charts() {
        let ingress = ingress(
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec:\n  components:\n    ingressGateways:\n    - name: istio-ingressgateway\n      enabled: true\n      label: {istio: edge}\n      k8s:\n        service:\n          ports:\n          - {name: http2, port: 8081, targetPort: 8080, nodePort: 30001}\n",
        );
        assert_eq!(ingress.source, "install.yaml");
        let gateway = &ingress.gateways[0];
        assert_eq!(gateway.ports.len(), 1);
        assert_eq!(gateway.ports[0].port, 8081);
        assert_eq!(gateway.ports[0].node_port, Some(30001));
        assert_eq!(gateway.labels["istio"], "edge");
    }

    #[test]
    fn minimal_profile_installs_no_gateway() {
        let ingress = ingress(
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec: {profile: minimal}\n",
        );
        assert!(ingress.gateways.is_empty());
    }

    #[test]
    fn empty_selector_selects_every_gateway() {
        assert!(IngressGateway::chart_default().selected_by(&BTreeMap::new()));
    }
}
