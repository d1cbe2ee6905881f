//! The rules, grouped by the resource they are about.

mod annotations;
mod gateway;
mod kind;
mod namespace;
mod service;
mod virtual_service;
mod virtual_service_binding;
mod virtual_service_matches;
mod workload;

use std::collections::BTreeMap;

use super::Finding;
use super::inventory::Inventory;

pub(crate) fn check_all(inventory: &Inventory) -> Vec<Finding> {
    let mut findings = Vec::new();
    namespace::single_namespace(inventory, &mut findings);
    namespace::sidecar_injection(inventory, &mut findings);
    workload::deployment_selector(inventory, &mut findings);
    workload::prometheus_annotations(inventory, &mut findings);
    workload::image_pull(inventory, &mut findings);
    service::selector_and_target_ports(inventory, &mut findings);
    virtual_service::destinations(inventory, &mut findings);
    virtual_service::gateway_refs(inventory, &mut findings);
    virtual_service::weights(inventory, &mut findings);
    gateway::selector_and_ports(inventory, &mut findings);
    gateway::conflicts(inventory, &mut findings);
    virtual_service_binding::hosts_bind(inventory, &mut findings);
    virtual_service_matches::unreachable_matches(inventory, &mut findings);
    virtual_service_matches::webhook_rejections(inventory, &mut findings);
    annotations::known(inventory, &mut findings);
    kind::port_mapping(inventory, &mut findings);
    findings
}

/// `app=wtyfft-app, tier=web`, or `(none)`.
fn describe_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "(none)".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `app: wtyfft-app`, the way it is written in YAML flow style.
fn yaml_labels(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", pairs.join(", "))
}
