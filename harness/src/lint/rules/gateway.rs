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

/// `gateway-conflict`: two Gateways for the same ingress gateway pods (the same selector) with a
/// server on the same port for the same host (and bind): the gateway keeps one of them and the
/// other's VirtualServices get its 404 (IST0145 ConflictingGateways, `isGWConflict`,
/// pkg/config/analysis/analyzers/gateway/conflictinggateway.go; hosts compared as written, as
/// `CheckDuplicates` does).
pub(crate) fn conflicts(inv: &Inventory, findings: &mut Vec<Finding>) {
    for (later, (doc, gateway)) in inv.gateways.iter().enumerate() {
        for (earlier_doc, earlier) in &inv.gateways[..later] {
            if earlier.spec.selector != gateway.spec.selector {
                continue;
            }
            for (index, server) in gateway.spec.servers.iter().enumerate() {
                let clash = earlier.spec.servers.iter().find_map(|other| {
                    if other.port.number != server.port.number || other.bind != server.bind {
                        return None;
                    }
                    server.hosts.iter().find(|h| other.hosts.contains(h))
                });
                let Some(host) = clash else { continue };
                findings.push(
                    Finding::at(Rule::GatewayConflict, doc, format!("spec.servers[{index}]")).says(
                        format!(
                            "Gateway {} already serves host {host:?} on port {} for the same pods ({}): the ingress gateway keeps one of the two, and the other's VirtualServices get its 404",
                            earlier_doc.name(),
                            server.port.number,
                            describe_labels(&gateway.spec.selector)
                        ),
                        format!(
                            "merge the two servers into one Gateway, or give this server other hosts than {:?}",
                            host
                        ),
                    ),
                );
            }
        }
    }
}
