//! From the manifests' Gateways, VirtualServices, Services and Deployments to what the local
//! gateway must do: which virtual hosts, which routes in which order, which upstream each route
//! reaches and how many replicas stand behind it.
//!
//! The translation is Istio's own for an ingress gateway, function by function (istio 1.31,
//! `pilot/pkg/networking/core/gateway.go` for the virtual hosts, `.../core/route/route.go` for
//! each route, [`route`] and [`upstream`] here). What Envoy cannot do without istiod (a
//! DestinationRule subset, a JWT claim match, a delegate VirtualService) is an error naming the
//! resource and the field: a local gateway that quietly dropped a field would route differently
//! from Istio and prove nothing. Where Istio itself ignores or blackholes something (a
//! VirtualService no server exposes, a destination no Service backs), so does the local gateway,
//! and [`GatewayPlan::warnings`] says so.

mod matches;
mod policies;
mod route;
mod upstream;

#[cfg(test)]
mod golden_tests;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Result, bail};
use serde_json::Value;

use crate::config::names::{INGRESS_GATEWAY_LABELS, ISTIO_NAMESPACE};
use crate::manifest::hosts::{
    ServerHost, intersect_hosts, more_specific_first, resolve_gateway_name, resolve_short_name,
};
use crate::manifest::install::IngressGateway;
use crate::manifest::istio::Server;
use crate::manifest::{Document, Gateway, Resource, VirtualService};

#[cfg(test)]
pub(crate) use policies::default_retry_policy;
pub(crate) use upstream::Upstream;
use upstream::Upstreams;

/// What the local gateway serves.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GatewayPlan {
    /// `namespace/name` of the Gateway (several joined by `, `).
    pub gateway: String,
    /// The Gateway servers' port number (the local listener binds another, free port).
    pub server_port: u32,
    /// The port Istio's ingress gateway listens on for it (80 → 8080 on Istio's charts): the
    /// listener's, the route configuration's and the statistics' names use it.
    pub listen_port: u32,
    pub virtual_hosts: Vec<VirtualHostPlan>,
    pub upstreams: Vec<Upstream>,
    /// What Istio does with these manifests that their author may not expect (a VirtualService
    /// no server exposes, a destination no Service backs): said when the target starts.
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct VirtualHostPlan {
    pub name: String,
    pub domains: Vec<String>,
    /// Envoy routes, in match order.
    pub routes: Vec<Value>,
}

fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.namespace
        .clone()
        .unwrap_or_else(|| "default".to_string())
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

/// Istio's order for configuration: creation time, then name, then namespace
/// (`configCompareByCreationTime`, pilot/pkg/model/config.go). Objects applied from one file
/// are usually created within the same second, so in practice the name decides.
fn creation_order(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> impl Ord {
    (
        meta.creation_timestamp.as_ref().map(|t| t.0),
        name_of(meta),
        namespace_of(meta),
    )
}

/// Translates the documents of one manifest set.
pub(crate) fn plan(documents: &[Document]) -> Result<GatewayPlan> {
    let mut gateways = Vec::new();
    let mut virtual_services = Vec::new();
    let mut world = upstream::World::default();
    let mut untranslated = Vec::new();
    for doc in documents {
        match &doc.resource {
            Resource::Gateway(g) => gateways.push(g.as_ref()),
            Resource::VirtualService(v) => virtual_services.push(v.as_ref()),
            Resource::Service(s) => world.services.push(s.as_ref()),
            Resource::Deployment(d) => world.deployments.push(d.as_ref()),
            Resource::Other { kind } if doc.api_version().contains("istio.io/") => {
                untranslated.push(format!(
                    "{kind} {}: not translated by the local gateway, so what it changes on a \
                     cluster (traffic policy, extra hosts, filters, security) does not happen \
                     locally",
                    doc.name()
                ));
            }
            _ => {}
        }
    }
    let mut warnings = untranslated;
    let servers = ingress_servers(&gateways, &mut warnings)?;
    let virtual_services = visible_virtual_services(virtual_services, &mut warnings);
    let mut upstreams = Upstreams::new(&world);
    let (server_port, virtual_hosts) =
        build_virtual_hosts(&servers, &virtual_services, &mut upstreams, &mut warnings)?;
    let mut gateway_ids: Vec<String> = servers.iter().map(|s| s.gateway.clone()).collect();
    gateway_ids.dedup();
    let (upstreams, dangling) = upstreams.finish();
    warnings.extend(dangling);
    Ok(GatewayPlan {
        gateway: gateway_ids.join(", "),
        server_port,
        listen_port: IngressGateway::chart_default().listen_port(server_port),
        virtual_hosts,
        upstreams,
        warnings,
    })
}

/// One Gateway server of the ingress gateway, with the Gateway it belongs to.
struct IngressServer<'a> {
    /// `namespace/name` of its Gateway.
    gateway: String,
    /// Its hosts, `./` already replaced by the Gateway's namespace (`sanitizeServerHostNamespace`,
    /// pilot/pkg/model/gateway.go).
    hosts: Vec<ServerHost>,
    server: &'a Server,
}

/// The servers of every Gateway that selects Istio's default ingress gateway, in Istio's order
/// (Gateways by creation, servers as written). The local gateway has one HTTP listener, so they
/// must share one port.
fn ingress_servers<'a>(
    gateways: &[&'a Gateway],
    warnings: &mut Vec<String>,
) -> Result<Vec<IngressServer<'a>>> {
    let mut gateways = gateways.to_vec();
    gateways.sort_by_key(|g| creation_order(&g.metadata));
    let mut servers = Vec::new();
    let mut selecting = 0;
    for gateway in &gateways {
        let gw_ns = namespace_of(&gateway.metadata);
        let gw_id = format!("{gw_ns}/{}", name_of(&gateway.metadata));
        let what = format!("Gateway {gw_id}");
        // A Gateway applies to the gateway pods whose labels include its selector; an empty
        // selector to every gateway (`mergeGateways`, pilot/pkg/model/push_context.go).
        let selector = &gateway.spec.selector;
        if !IngressGateway::chart_default().selected_by(selector) {
            warnings.push(format!(
                "{what}: spec.selector {selector:?} does not select Istio's default ingress \
                 gateway (labels {INGRESS_GATEWAY_LABELS:?}), the only gateway the local target \
                 runs: it is ignored"
            ));
            continue;
        }
        selecting += 1;
        if gateway.spec.servers.is_empty() {
            bail!("{what}: spec.servers is empty: nothing to listen on");
        }
        for (index, server) in gateway.spec.servers.iter().enumerate() {
            let at = format!("{what}: spec.servers[{index}]");
            if !server.port.protocol.eq_ignore_ascii_case("HTTP") {
                bail!(
                    "{at}.port.protocol is {}: the local gateway translates HTTP servers only",
                    server.port.protocol
                );
            }
            for (field, present) in [
                ("tls", server.tls.is_some()),
                ("bind", server.bind.is_some()),
                ("defaultEndpoint", server.default_endpoint.is_some()),
                ("port.targetPort", server.port.target_port.is_some()),
            ] {
                if present {
                    bail!("{at}.{field} is not translated by the local gateway");
                }
            }
            if server.hosts.is_empty() {
                bail!("{at}.hosts is empty; Istio requires at least one host");
            }
            servers.push(IngressServer {
                gateway: gw_id.clone(),
                hosts: server
                    .hosts
                    .iter()
                    .map(|h| ServerHost::parse(h, &gw_ns))
                    .collect(),
                server,
            });
        }
    }
    if selecting == 0 {
        bail!(
            "the manifests define no Gateway that selects Istio's default ingress gateway \
             (labels {INGRESS_GATEWAY_LABELS:?}): the local gateway needs one"
        );
    }
    let ports: BTreeSet<u32> = servers.iter().map(|s| s.server.port.number).collect();
    if ports.len() > 1 {
        bail!(
            "the ingress gateway's HTTP servers listen on ports {ports:?}: the local gateway has \
             one listener, so every server must share one port"
        );
    }
    Ok(servers)
}

/// A VirtualService as the gateway reads it: hosts and gateway names resolved
/// (`ResolveVirtualServiceShortnames`, pilot/pkg/model/virtualservice.go).
pub(super) struct BoundVirtualService<'a> {
    vs: &'a VirtualService,
    namespace: String,
    /// `namespace/name`.
    id: String,
    hosts: Vec<String>,
    gateways: BTreeSet<String>,
}

/// The VirtualServices the ingress gateway (a proxy in `istio-system`) sees, in Istio's order
/// (`VirtualServicesForGateway`, pilot/pkg/model/push_context.go): those private to its
/// namespace, then those exported to it, then the public ones, each by creation.
fn visible_virtual_services<'a>(
    mut all: Vec<&'a VirtualService>,
    warnings: &mut Vec<String>,
) -> Vec<BoundVirtualService<'a>> {
    all.sort_by_key(|vs| creation_order(&vs.metadata));
    let mut private = Vec::new();
    let mut exported = Vec::new();
    let mut public = Vec::new();
    for vs in all {
        let namespace = namespace_of(&vs.metadata);
        let id = format!("{namespace}/{}", name_of(&vs.metadata));
        let export_to: Vec<String> = match &vs.spec.export_to {
            Some(list) if !list.is_empty() => list
                .iter()
                .map(|e| {
                    if e == "." {
                        namespace.clone()
                    } else {
                        e.clone()
                    }
                })
                .collect(),
            _ => vec!["*".to_string()],
        };
        let bound = BoundVirtualService {
            vs,
            hosts: vs
                .spec
                .hosts
                .iter()
                .map(|h| resolve_short_name(h, &namespace))
                .collect(),
            gateways: vs
                .spec
                .gateways
                .iter()
                .filter(|g| g.as_str() != "mesh")
                .map(|g| resolve_gateway_name(g, &namespace))
                .collect(),
            namespace: namespace.clone(),
            id: id.clone(),
        };
        if export_to.iter().any(|e| e == "*") {
            public.push(bound);
        } else if export_to.iter().any(|e| e == ISTIO_NAMESPACE) {
            if namespace == ISTIO_NAMESPACE {
                private.push(bound);
            } else {
                exported.push(bound);
            }
        } else if !bound.gateways.is_empty() {
            warnings.push(format!(
                "VirtualService {id}: spec.exportTo {export_to:?} does not include \
                 {ISTIO_NAMESPACE}, the ingress gateway's namespace, so the gateway never sees it"
            ));
        }
    }
    private.into_iter().chain(exported).chain(public).collect()
}

/// A route of the plan by where it came from: `(route list, route index)`, a route list being
/// one VirtualService's routes built for one Gateway (Istio builds and caches them per Gateway
/// and VirtualService). Two virtual hosts with equal lists hold the same routes, as Istio's share
/// pointers.
type RouteRef = (usize, usize);

struct VirtualHostDraft {
    name: String,
    domains: Vec<String>,
    routes: Vec<RouteRef>,
}

/// `buildGatewayHTTPRouteConfig` (pilot/pkg/networking/core/gateway.go): for each server, each
/// VirtualService bound to its Gateway adds its routes to one virtual host per host in the
/// intersection of their hosts (lower-cased, the domain alone: the route configuration ignores
/// the port in `Host`). Hosts with the same route list are collapsed into one virtual host
/// (`collapseDuplicateRoutes`), catch-all routes move last (`SortVHostRoutes`), and virtual hosts
/// are sorted by name. With nothing bound, one blackhole virtual host answers 404 to all.
fn build_virtual_hosts(
    servers: &[IngressServer],
    virtual_services: &[BoundVirtualService],
    upstreams: &mut Upstreams,
    warnings: &mut Vec<String>,
) -> Result<(u32, Vec<VirtualHostPlan>)> {
    let port = servers[0].server.port.number;
    // Route lists, and which (Gateway, VirtualService) each was built for.
    let mut built: Vec<Vec<Value>> = Vec::new();
    let mut built_for: BTreeMap<(String, usize), usize> = BTreeMap::new();
    let mut drafts: BTreeMap<String, VirtualHostDraft> = BTreeMap::new();
    let mut bound_any: BTreeSet<usize> = BTreeSet::new();
    for server in servers {
        for (index, bound) in virtual_services.iter().enumerate() {
            if !bound.gateways.contains(&server.gateway) {
                continue;
            }
            let intersecting = intersection(&server.hosts, bound);
            if intersecting.is_empty() {
                continue;
            }
            bound_any.insert(index);
            let key = (server.gateway.clone(), index);
            let list = match built_for.get(&key) {
                Some(list) => *list,
                None => {
                    let gateway_names = BTreeSet::from([server.gateway.clone()]);
                    let routes = route::build_http_routes(bound, port, &gateway_names, upstreams)?;
                    if routes.is_empty() {
                        warnings.push(format!(
                            "VirtualService {}: no http route applies to Gateway {} (their \
                             port, gateways or source matches exclude it), so Istio omits it",
                            bound.id, server.gateway
                        ));
                    }
                    built.push(routes);
                    built_for.insert(key, built.len() - 1);
                    built.len() - 1
                }
            };
            if built[list].is_empty() {
                continue;
            }
            let refs: Vec<RouteRef> = (0..built[list].len()).map(|r| (list, r)).collect();
            for hostname in intersecting {
                let hostname = hostname.to_lowercase();
                drafts
                    .entry(hostname.clone())
                    .and_modify(|draft| draft.routes.extend(refs.iter().copied()))
                    .or_insert_with(|| VirtualHostDraft {
                        name: format!("{hostname}:{port}"),
                        domains: vec![hostname],
                        routes: refs.clone(),
                    });
            }
        }
    }
    for (index, bound) in virtual_services.iter().enumerate() {
        let binds_a_server = servers.iter().any(|s| bound.gateways.contains(&s.gateway));
        if binds_a_server && !bound_any.contains(&index) {
            warnings.push(format!(
                "VirtualService {}: none of its hosts {:?} is exposed by the Gateway server \
                 hosts it binds, so it routes nothing",
                bound.id, bound.vs.spec.hosts
            ));
        }
    }
    if drafts.is_empty() {
        return Ok((
            port,
            vec![VirtualHostPlan {
                name: format!("blackhole:{port}"),
                domains: vec!["*".into()],
                routes: Vec::new(),
            }],
        ));
    }
    let mut collapsed: Vec<VirtualHostDraft> = Vec::new();
    let mut hostnames: Vec<String> = drafts.keys().cloned().collect();
    hostnames.sort_by(|a, b| more_specific_first(a, b));
    for hostname in hostnames {
        let draft = drafts.remove(&hostname).expect("listed from the map");
        match collapsed.iter_mut().find(|c| c.routes == draft.routes) {
            Some(primary) => primary.domains.extend(draft.domains),
            None => collapsed.push(draft),
        }
    }
    let mut virtual_hosts: Vec<VirtualHostPlan> = collapsed
        .into_iter()
        .map(|draft| {
            let routes: Vec<Value> = draft
                .routes
                .iter()
                .map(|(list, r)| built[*list][*r].clone())
                .collect();
            VirtualHostPlan {
                name: draft.name,
                domains: draft.domains,
                routes: matches::sort_catch_alls_last(routes),
            }
        })
        .collect();
    virtual_hosts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((port, virtual_hosts))
}

/// `host.NamesForNamespace(server.Hosts, vs.Namespace).Intersection(vs.Hosts)`
/// (pkg/config/host/names.go): the server hosts this VirtualService's namespace may use, each
/// paired with each VirtualService host, keeping the more specific of two that overlap.
fn intersection(server_hosts: &[ServerHost], bound: &BoundVirtualService) -> Vec<String> {
    let mut result: Vec<String> = Vec::new();
    for server_host in server_hosts
        .iter()
        .filter(|h| h.namespace_allows(&bound.namespace))
    {
        for vs_host in &bound.hosts {
            if let Some(host) = intersect_hosts(&server_host.host, vs_host)
                && !result.contains(&host)
            {
                result.push(host);
            }
        }
    }
    result
}
