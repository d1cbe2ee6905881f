//! `service-selector` and `service-target-port`: a Service reaches pods, on a port they serve.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::super::inventory::Inventory;
use super::super::{Finding, Rule};
use super::{describe_labels, yaml_labels};

pub(crate) fn selector_and_target_ports(inv: &Inventory, findings: &mut Vec<Finding>) {
    for (doc, service) in &inv.services {
        let Some(spec) = &service.spec else {
            continue;
        };
        // An ExternalName Service is a DNS alias: it has no pods.
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let selector = spec.selector.clone().unwrap_or_default();
        let selected = inv.selected_workloads(doc, &selector);
        if selected.is_empty() {
            let candidates: Vec<String> = inv
                .workloads
                .iter()
                .filter(|w| inv.lives_in(w.doc, &inv.homes(doc)))
                .map(|w| {
                    format!(
                        "{} {} has {}",
                        w.doc.kind(),
                        w.doc.name(),
                        describe_labels(&w.labels())
                    )
                })
                .collect();
            let seen = if candidates.is_empty() {
                "no workload is declared in its namespace".to_string()
            } else {
                format!("pod templates: {}", candidates.join("; "))
            };
            let message = if selector.is_empty() {
                format!("has no spec.selector, so it selects no pods ({seen})")
            } else {
                format!(
                    "spec.selector {} selects no pods ({seen})",
                    describe_labels(&selector)
                )
            };
            let fix = match inv
                .workloads
                .iter()
                .find(|w| inv.lives_in(w.doc, &inv.homes(doc)))
            {
                Some(workload) => format!(
                    "set spec.selector to the pod template's labels of {} {}: {}",
                    workload.doc.kind(),
                    workload.doc.name(),
                    yaml_labels(&workload.labels())
                ),
                None => "set spec.selector to the labels of the app's pod template".into(),
            };
            findings
                .push(Finding::at(Rule::ServiceSelector, doc, "spec.selector").says(message, fix));
            // Which ports the pods serve is moot while the Service reaches none of them.
            continue;
        }
        for (index, port) in spec.ports.iter().flatten().enumerate() {
            let target = port
                .target_port
                .clone()
                .unwrap_or(IntOrString::Int(port.port));
            let field = if port.target_port.is_some() {
                format!("spec.ports[{index}].targetPort")
            } else {
                format!("spec.ports[{index}].port")
            };
            for workload in &selected {
                let ports = workload.container_ports();
                let served = match &target {
                    IntOrString::Int(number) => ports.iter().any(|(p, _)| p == number),
                    IntOrString::String(name) => ports
                        .iter()
                        .any(|(_, n)| n.as_deref() == Some(name.as_str())),
                };
                if served {
                    continue;
                }
                let (what, defaulted) = match (&target, &port.target_port) {
                    (IntOrString::Int(n), None) => (
                        format!("targetPort {n}"),
                        " (no targetPort, so it defaults to port)",
                    ),
                    (IntOrString::Int(n), Some(_)) => (format!("targetPort {n}"), ""),
                    (IntOrString::String(name), _) => (format!("targetPort {name}"), ""),
                };
                let kind_of = match target {
                    IntOrString::Int(_) => "a containerPort",
                    IntOrString::String(_) => "the name of a containerPort",
                };
                let fix = match ports.first() {
                    Some((number, name)) => match (&target, name) {
                        (IntOrString::String(_), Some(name)) => {
                            format!("set spec.ports[{index}].targetPort to {name} (or {number})")
                        }
                        _ => format!("set spec.ports[{index}].targetPort to {number}"),
                    },
                    None => {
                        "declare the port the app listens on under the container's ports".into()
                    }
                };
                findings.push(
                    Finding::at(Rule::ServiceTargetPort, doc, field.clone()).says(
                        format!(
                            "{what}{defaulted} is not {kind_of} of {} {} (containerPorts: {})",
                            workload.doc.kind(),
                            workload.doc.name(),
                            workload.describe_container_ports()
                        ),
                        fix,
                    ),
                );
            }
        }
    }
}
