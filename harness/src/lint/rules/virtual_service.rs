//! `vs-destination-host`, `vs-destination-port` and `vs-gateway-ref`: what a VirtualService
//! points at exists, on a port it has.

use k8s_openapi::api::core::v1::Service;
use serde_json::Value;

use super::super::inventory::Inventory;
use super::super::{Finding, Rule};
use crate::manifest::{Document, VirtualService};

/// The gateway name that means "the sidecars", not a Gateway resource.
const MESH: &str = "mesh";

struct DestinationRef {
    field: String,
    host: String,
    port: Option<i64>,
}

fn destination_refs(vs: &VirtualService, raw: &Value) -> Vec<DestinationRef> {
    let mut found = Vec::new();
    for (r, route) in vs.spec.http.iter().enumerate() {
        for (d, target) in route.route.iter().enumerate() {
            found.push(DestinationRef {
                field: format!("spec.http[{r}].route[{d}].destination"),
                host: target.destination.host.clone(),
                port: target
                    .destination
                    .port
                    .as_ref()
                    .map(|p| i64::from(p.number)),
            });
        }
    }
    // tcp and tls routes are kept as JSON by the typed VirtualService; their destinations have
    // the same shape.
    for section in ["tcp", "tls"] {
        let routes = raw
            .pointer(&format!("/spec/{section}"))
            .and_then(Value::as_array);
        for (r, route) in routes.into_iter().flatten().enumerate() {
            let targets = route.get("route").and_then(Value::as_array);
            for (d, target) in targets.into_iter().flatten().enumerate() {
                let Some(host) = target.pointer("/destination/host").and_then(Value::as_str) else {
                    continue;
                };
                found.push(DestinationRef {
                    field: format!("spec.{section}[{r}].route[{d}].destination"),
                    host: host.to_string(),
                    port: target
                        .pointer("/destination/port/number")
                        .and_then(Value::as_i64),
                });
            }
        }
    }
    found
}

/// A destination host read as a Kubernetes Service: `name` (in the VirtualService's namespace)
/// or `name.namespace.svc.cluster.local`. Istio expands only hosts without a dot
/// (`ResolveShortnameToFQDN`): `name.namespace` is taken as a full name that no Service has, so
/// the gateway would answer 503, and it is reported as unresolved.
fn service_name(host: &str) -> Option<(&str, Option<&str>)> {
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        [name] => Some((name, None)),
        [name, namespace, "svc", "cluster", "local"] => Some((name, Some(namespace))),
        _ => None,
    }
}

fn service_entry_covers(hosts: &[String], host: &str) -> bool {
    hosts.iter().any(|pattern| match pattern.strip_prefix('*') {
        Some(suffix) => host.ends_with(suffix),
        None => pattern == host,
    })
}

fn describe_service_ports(service: &Service) -> String {
    let ports: Vec<String> = service
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|p| {
            let name = p
                .name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            format!("{}{name}", p.port)
        })
        .collect();
    if ports.is_empty() {
        "none".into()
    } else {
        ports.join(", ")
    }
}

pub(crate) fn destinations(inv: &Inventory, findings: &mut Vec<Finding>) {
    for (doc, vs) in &inv.virtual_services {
        for destination in destination_refs(vs, &doc.raw) {
            check_destination(inv, doc, &destination, findings);
        }
    }
}

fn check_destination(
    inv: &Inventory,
    doc: &Document,
    destination: &DestinationRef,
    findings: &mut Vec<Finding>,
) {
    let host = destination.host.as_str();
    if let Some((_, _, ports)) = inv
        .service_entries
        .iter()
        .find(|(_, hosts, _)| service_entry_covers(hosts, host))
    {
        if let Some(port) = destination.port
            && !ports.is_empty()
            && !ports.contains(&port)
        {
            findings.push(
                Finding::at(Rule::VsDestinationPort, doc, format!("{}.port.number", destination.field)).says(
                    format!("destination {host} port {port} is not a port of its ServiceEntry (ports: {ports:?})"),
                    "set port.number to one of the ServiceEntry's ports",
                ),
            );
        }
        return;
    }
    let found = service_name(host).and_then(|(name, namespace)| {
        let namespaces = inv.reference_namespaces(doc, namespace);
        inv.services
            .iter()
            .find(|(svc, _)| svc.name() == name && inv.lives_in(svc, &namespaces))
    });
    let Some((_, service)) = found else {
        findings.push(unresolved_host(inv, doc, destination));
        return;
    };
    let service_ports: Vec<(i64, Option<i64>)> = service
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|p| {
            let target = match &p.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                    Some(i64::from(*n))
                }
                _ => None,
            };
            (i64::from(p.port), target)
        })
        .collect();
    let field = format!("{}.port.number", destination.field);
    match destination.port {
        Some(port) if service_ports.iter().any(|(p, _)| *p == port) => {}
        Some(port) => {
            let hint = if service_ports.iter().any(|(_, t)| *t == Some(port)) {
                format!(
                    " ({port} is the Service's targetPort; a destination names the Service port)"
                )
            } else {
                String::new()
            };
            let fix = match service_ports.first() {
                Some((first, _)) => format!("set {field} to {first}"),
                None => "add the port to the Service".into(),
            };
            findings.push(Finding::at(Rule::VsDestinationPort, doc, field).says(
                format!(
                    "destination {host} port {port} is not a port of the Service (ports: {}){hint}",
                    describe_service_ports(service)
                ),
                fix,
            ));
        }
        None if service_ports.len() > 1 => {
            findings.push(
                Finding::at(Rule::VsDestinationPort, doc, field.clone()).says(
                    format!(
                        "destination {host} names no port, but the Service has several (ports: {})",
                        describe_service_ports(service)
                    ),
                    format!("add {field} with one of them"),
                ),
            );
        }
        None => {}
    }
}

fn unresolved_host(inv: &Inventory, doc: &Document, destination: &DestinationRef) -> Finding {
    let host = destination.host.as_str();
    let homes = inv.homes(doc);
    let looked_up = match service_name(host) {
        None if host.split('.').count() == 2 => format!(
            "Istio expands only names without a dot, so {host} is read as a full host name, not as Service.namespace"
        ),
        Some((name, Some(namespace))) => format!("no Service {name} is declared in namespace {namespace}"),
        Some((name, None)) => format!(
            "short names resolve in the VirtualService's namespace, and no Service {name} is declared in {}",
            homes[0]
        ),
        None => "it is neither a Service (name or name.namespace.svc.cluster.local) nor a ServiceEntry host".into(),
    };
    let declared: Vec<String> = inv
        .services
        .iter()
        .map(|(svc, _)| format!("{} in namespace {}", svc.name(), inv.homes(svc)[0]))
        .collect();
    let known = if declared.is_empty() {
        "no Service is declared".to_string()
    } else {
        format!("declared Services: {}", declared.join(", "))
    };
    let fix = match inv.services.as_slice() {
        [(svc, _)] if inv.lives_in(svc, &homes) => {
            format!("set {}.host to {}", destination.field, svc.name())
        }
        [(svc, _)] => format!(
            "set {}.host to {}.{}.svc.cluster.local",
            destination.field,
            svc.name(),
            inv.homes(svc)[0]
        ),
        _ => format!(
            "set {}.host to the name of the Service that fronts the app",
            destination.field
        ),
    };
    Finding::at(
        Rule::VsDestinationHost,
        doc,
        format!("{}.host", destination.field),
    )
    .says(
        format!("destination host {host} is not a declared Service: {looked_up} ({known})"),
        fix,
    )
}

/// `vs-route-weights` and `vs-weight-sum`: Istio's validation rejects a negative weight and, with
/// several destinations, a total of 0 (`validateHTTPRouteDestinations`,
/// pkg/config/validation/validation.go), so the VirtualService and all its routes would not
/// exist. Weights that add up to something else than 100 are accepted and taken in proportion
/// (each destination gets weight/total), which is rarely what a `90`/`20` meant.
pub(crate) fn weights(inv: &Inventory, findings: &mut Vec<Finding>) {
    for (doc, vs) in &inv.virtual_services {
        for (r, rule) in vs.spec.http.iter().enumerate() {
            let weights: Vec<i32> = rule.route.iter().map(|d| d.weight.unwrap_or(0)).collect();
            for (d, weight) in weights.iter().enumerate() {
                if *weight < 0 {
                    findings.push(
                        Finding::at(Rule::VsRouteWeights, doc, format!("spec.http[{r}].route[{d}].weight")).says(
                            format!("the weight is {weight}; Istio's webhook rejects a negative weight, so none of the VirtualService's routes exist"),
                            "make the weight 0 or more".to_string(),
                        ),
                    );
                }
            }
            if weights.len() < 2 || weights.iter().any(|w| *w < 0) {
                continue;
            }
            let total: i32 = weights.iter().sum();
            let field = format!("spec.http[{r}].route");
            if total == 0 {
                findings.push(Finding::at(Rule::VsRouteWeights, doc, field).says(
                    format!("{} destinations and every weight is 0; Istio's webhook rejects a total weight of 0, so none of the VirtualService's routes exist", weights.len()),
                    "give the destinations weights that add up to 100".to_string(),
                ));
            } else if total != 100 {
                let shares: Vec<String> = rule
                    .route
                    .iter()
                    .zip(&weights)
                    .map(|(d, w)| {
                        format!(
                            "{} {:.1}%",
                            d.destination.host,
                            f64::from(*w) * 100.0 / f64::from(total)
                        )
                    })
                    .collect();
                findings.push(Finding::at(Rule::VsWeightSum, doc, field).says(
                    format!("the weights {weights:?} add up to {total}, not 100; Istio takes them in proportion: {}", shares.join(", ")),
                    "make the weights add up to 100".to_string(),
                ));
            }
        }
    }
}

/// A `gateways` entry: `name` (in the VirtualService's namespace), `namespace/name`, or the
/// older `name.namespace[.svc.cluster.local]`.
pub(super) fn gateway_name(reference: &str) -> (&str, Option<&str>) {
    if let Some((namespace, name)) = reference.split_once('/') {
        return (name, Some(namespace));
    }
    let mut labels = reference.split('.');
    let name = labels.next().unwrap_or(reference);
    (name, labels.next())
}

pub(crate) fn gateway_refs(inv: &Inventory, findings: &mut Vec<Finding>) {
    let mut unresolved = false;
    let mut referenced: Vec<&Document> = Vec::new();
    let mut unbound: Vec<&Document> = Vec::new();
    for (doc, vs) in &inv.virtual_services {
        let mut references: Vec<(String, &str)> = vs
            .spec
            .gateways
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("spec.gateways[{i}]"), g.as_str()))
            .collect();
        for (r, route) in vs.spec.http.iter().enumerate() {
            for (m, matcher) in route.matches.iter().enumerate() {
                for (g, gateway) in matcher.gateways.iter().enumerate() {
                    references.push((
                        format!("spec.http[{r}].match[{m}].gateways[{g}]"),
                        gateway.as_str(),
                    ));
                }
            }
        }
        if references.iter().all(|(_, g)| *g == MESH) {
            unbound.push(doc);
        }
        for (field, reference) in references {
            if reference == MESH {
                continue;
            }
            let (name, namespace) = gateway_name(reference);
            let namespaces = inv.reference_namespaces(doc, namespace);
            if let Some((gw, _)) = inv
                .gateways
                .iter()
                .find(|(gw, _)| gw.name() == name && inv.lives_in(gw, &namespaces))
            {
                referenced.push(gw);
                continue;
            }
            unresolved = true;
            findings.push(unresolved_gateway(inv, doc, &field, reference, &namespaces));
        }
    }
    // A mistyped reference also leaves its Gateway unbound; that is the same mistake, reported.
    if unresolved {
        return;
    }
    let idle: Vec<&Document> = inv
        .gateways
        .iter()
        .map(|(gw, _)| *gw)
        .filter(|gw| !referenced.iter().any(|r| std::ptr::eq(*r, *gw)))
        .collect();
    let Some(first_idle) = idle.first() else {
        return;
    };
    // The ingress gateway answers every request for an unbound Gateway with its own 404.
    if unbound.is_empty() {
        for gw in &idle {
            findings.push(Finding::at(Rule::VsGatewayRef, gw, "metadata.name").says(
                "no VirtualService names this Gateway in spec.gateways, so the ingress gateway routes nothing through it (every request gets a 404)",
                format!("add {} to the app's VirtualService spec.gateways", gw.name()),
            ));
        }
    } else {
        for doc in unbound {
            findings.push(Finding::at(Rule::VsGatewayRef, doc, "spec.gateways").says(
                "is bound to no Gateway (spec.gateways is empty or only mesh), so the ingress gateway does not route it",
                format!("set spec.gateways: [{}]", first_idle.name()),
            ));
        }
    }
}

fn unresolved_gateway(
    inv: &Inventory,
    doc: &Document,
    field: &str,
    reference: &str,
    namespaces: &[String],
) -> Finding {
    let declared: Vec<String> = inv
        .gateways
        .iter()
        .map(|(gw, _)| format!("{}/{}", inv.homes(gw)[0], gw.name()))
        .collect();
    let known = if declared.is_empty() {
        "no Gateway is declared".to_string()
    } else {
        format!("declared Gateways: {}", declared.join(", "))
    };
    let fix = match inv.gateways.as_slice() {
        [(gw, _)] if inv.lives_in(gw, &inv.homes(doc)) => format!("set {field} to {}", gw.name()),
        [(gw, _)] => format!("set {field} to {}/{}", inv.homes(gw)[0], gw.name()),
        _ => format!("set {field} to the Gateway's name (or namespace/name)"),
    };
    Finding::at(Rule::VsGatewayRef, doc, field).says(
        format!(
            "gateway {reference} names no Gateway in namespace {} ({known})",
            namespaces[0]
        ),
        fix,
    )
}
