//! `vs-gateway-host`: a VirtualService bound to a Gateway serves only the hosts that Gateway's
//! servers expose to its namespace. If none of its hosts binds, every request for it gets the
//! gateway's 404 (`istioctl analyze` IST0132 VirtualServiceHostNotFoundInGateway). Binding is
//! read as pilot binds (see [`crate::manifest::hosts`]): a server host's `ns/` prefix limits it to
//! VirtualServices of that namespace (`./` is the Gateway's, `*/` any), a short VirtualService
//! host is expanded in its namespace, and `*` or `*.domain` covers what ends with it.

use super::super::inventory::Inventory;
use super::super::{Finding, Rule};
use super::virtual_service::gateway_name;
use crate::manifest::hosts::{ServerHost, intersect_hosts, resolve_short_name};

pub(crate) fn hosts_bind(inv: &Inventory, findings: &mut Vec<Finding>) {
    for (doc, vs) in &inv.virtual_services {
        let vs_namespace = inv.homes(doc).remove(0);
        for (index, reference) in vs.spec.gateways.iter().enumerate() {
            let (name, namespace) = gateway_name(reference);
            let namespaces = inv.reference_namespaces(doc, namespace);
            // An unresolved reference is vs-gateway-ref's finding.
            let Some((gw_doc, gateway)) = inv
                .gateways
                .iter()
                .find(|(gw, _)| gw.name() == name && inv.lives_in(gw, &namespaces))
            else {
                continue;
            };
            let gw_namespace = inv.homes(gw_doc).remove(0);
            let server_hosts: Vec<String> = gateway
                .spec
                .servers
                .iter()
                .flat_map(|server| server.hosts.iter().cloned())
                .collect();
            let bound = vs.spec.hosts.iter().any(|host| {
                let resolved = resolve_short_name(host, &vs_namespace);
                server_hosts.iter().any(|text| {
                    let server = ServerHost::parse(text, &gw_namespace);
                    server.namespace_allows(&vs_namespace)
                        && intersect_hosts(&server.host, &resolved).is_some()
                })
            });
            if bound || vs.spec.hosts.is_empty() {
                continue;
            }
            findings.push(
                Finding::at(Rule::VsGatewayHost, doc, "spec.hosts").says(
                    format!(
                        "none of the hosts {:?} binds to Gateway {gw_namespace}/{name} (spec.gateways[{index}]), whose servers expose {:?} to namespace {vs_namespace}: every request for them gets the gateway's 404",
                        vs.spec.hosts,
                        server_hosts
                    ),
                    format!(
                        "list in spec.hosts a host the Gateway's servers[].hosts cover (e.g. {:?}), or add this VirtualService's host to the Gateway (a `namespace/` prefix must name {vs_namespace}, or use `*/`)",
                        server_hosts
                            .first()
                            .map(|h| ServerHost::parse(h, &gw_namespace).host)
                            .unwrap_or_else(|| "*".to_string())
                    ),
                ),
            );
        }
    }
}
