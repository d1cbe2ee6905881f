//! `gateway-selector` and `gateway-port`: a Gateway configures the installed ingress gateway, on
//! a port its Service exposes.

use super::super::inventory::Inventory;
use super::super::{Finding, Rule};
use super::{describe_labels, yaml_labels};

pub(crate) fn selector_and_ports(inv: &Inventory, findings: &mut Vec<Finding>) {
    let source = &inv.ingress.source;
    for (doc, gateway) in &inv.gateways {
        let selector = &gateway.spec.selector;
        let selected: Vec<_> = inv
            .ingress
            .gateways
            .iter()
            .filter(|installed| installed.selected_by(selector))
            .collect();
        if selected.is_empty() {
            let (message, fix) = match inv.ingress.gateways.first() {
                None => (
                    format!("no ingress gateway is installed (per {source}), so nothing serves this Gateway"),
                    "enable an ingress gateway in the Istio install overlay (profile default has one)".to_string(),
                ),
                Some(installed) => (
                    format!(
                        "spec.selector {} matches no ingress gateway: {} pods are labelled {} (per {source})",
                        describe_labels(selector),
                        installed.name,
                        describe_labels(&installed.labels)
                    ),
                    format!(
                        "set spec.selector to {}",
                        installed
                            .labels
                            .get_key_value("istio")
                            .map(|(k, v)| format!("{{{k}: {v}}}"))
                            .unwrap_or_else(|| yaml_labels(&installed.labels))
                    ),
                ),
            };
            findings
                .push(Finding::at(Rule::GatewaySelector, doc, "spec.selector").says(message, fix));
            // Which ports the gateway exposes is moot while no gateway takes this configuration.
            continue;
        }
        for (index, server) in gateway.spec.servers.iter().enumerate() {
            let number = i64::from(server.port.number);
            if selected
                .iter()
                .any(|g| g.ports.iter().any(|p| p.port == number))
            {
                continue;
            }
            let installed = selected[0];
            let as_target = installed
                .ports
                .iter()
                .find(|p| p.target_port == Some(number));
            let hint = match as_target {
                Some(p) => format!(
                    " ({number} is the targetPort of {}; a Gateway server names the Service port {})",
                    p.name, p.port
                ),
                None => String::new(),
            };
            let suggestion = as_target
                .or_else(|| installed.ports.iter().find(|p| p.name == "http2"))
                .or_else(|| installed.ports.first());
            let fix = match suggestion {
                Some(p) => format!(
                    "set spec.servers[{index}].port.number to {} ({})",
                    p.port, p.name
                ),
                None => "add the port to the ingress gateway Service in the Istio install overlay"
                    .into(),
            };
            findings.push(
                Finding::at(Rule::GatewayPort, doc, format!("spec.servers[{index}].port.number")).says(
                    format!(
                        "server port {number} is not a port of the {} Service (ports: {}; per {source}){hint}",
                        installed.name,
                        installed.describe_ports()
                    ),
                    fix,
                ),
            );
        }
    }
}
