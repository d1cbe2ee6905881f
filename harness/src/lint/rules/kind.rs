//! `kind-port-mapping`: the gateway's pinned nodePort is reachable from the host.
//!
//! A nodePort lives inside the kind node container; only an `extraPortMappings` entry with that
//! `containerPort` publishes it on the host. Without one, the suite's requests to 127.0.0.1 are
//! refused although the cluster is healthy.

use serde_json::Value;

use super::super::inventory::Inventory;
use super::super::{Finding, Rule};
use crate::manifest::kind_config::KindConfig;

pub(crate) fn port_mapping(inv: &Inventory, findings: &mut Vec<Finding>) {
    // The node ports that traffic for the app's Gateways arrives on (http2 when there is none).
    let mut wanted: Vec<(i64, String)> = Vec::new();
    for installed in &inv.ingress.gateways {
        let served: Vec<i64> = inv
            .gateways
            .iter()
            .filter(|(_, gw)| installed.selected_by(&gw.spec.selector))
            .flat_map(|(_, gw)| gw.spec.servers.iter().map(|s| i64::from(s.port.number)))
            .collect();
        for port in &installed.ports {
            let Some(node_port) = port.node_port else {
                continue;
            };
            let used = if inv.gateways.is_empty() {
                port.name == "http2"
            } else {
                served.contains(&port.port)
            };
            if used && !wanted.iter().any(|(n, _)| *n == node_port) {
                wanted.push((node_port, format!("{} {}", installed.name, port.name)));
            }
        }
    }
    for doc in &inv.kind_clusters {
        let nodes = doc.raw.get("nodes").and_then(Value::as_array);
        let published: Vec<i64> = KindConfig::from_value(&doc.file, doc.raw.clone())
            .map(|config| config.container_ports())
            .unwrap_or_default()
            .into_iter()
            .map(i64::from)
            .collect();
        for (node_port, what) in &wanted {
            if published.contains(node_port) {
                continue;
            }
            let field = if nodes.is_some_and(|n| !n.is_empty()) {
                "nodes[0].extraPortMappings"
            } else {
                "nodes"
            };
            findings.push(Finding::at(Rule::KindPortMapping, doc, field).says(
                format!(
                    "the {what} nodePort {node_port} (per {}) is not published: no extraPortMappings entry has containerPort {node_port}",
                    inv.ingress.source
                ),
                format!(
                    "add to the control-plane node: extraPortMappings: [{{containerPort: {node_port}, hostPort: {node_port}, listenAddress: \"127.0.0.1\", protocol: TCP}}]"
                ),
            ));
        }
    }
}
