//! From the manifests' Gateway, VirtualService, Service and Deployment to what the local gateway
//! must do: which virtual hosts, which routes in which order, which upstream each route reaches
//! and how many replicas stand behind it.
//!
//! The translation follows Istio's own (pilot's gateway and route builders) for the subset the
//! tutorial uses. Anything else is an error naming the resource and the field: a local gateway
//! that quietly dropped a `timeout` or a header match would route differently from Istio and the
//! suite would prove nothing.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use crate::config::names::{IMAGE_REPOSITORY, INGRESS_GATEWAY_LABELS, is_service_image};
use crate::manifest::hosts::{CLUSTER_DOMAIN, ServerHost, intersect_hosts, resolve_short_name};
use crate::manifest::istio::{HttpMatchRequest, HttpRoute, StringMatch};
use crate::manifest::{Document, Gateway, Resource, VirtualService};

/// What the local gateway serves.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GatewayPlan {
    /// `namespace/name` of the Gateway.
    pub gateway: String,
    /// The Gateway server's port number (the local listener binds another, free port).
    pub server_port: u32,
    pub virtual_hosts: Vec<VirtualHostPlan>,
    pub upstreams: Vec<Upstream>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct VirtualHostPlan {
    pub name: String,
    pub domains: Vec<String>,
    /// Envoy routes, in match order.
    pub routes: Vec<Value>,
}

/// A Service port and the replicas behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Upstream {
    /// Istio's cluster name: `outbound|<port>||<service FQDN>`.
    pub cluster: String,
    pub service_fqdn: String,
    pub service_port: i32,
    /// The container port the Service targets (a replica listens on a free port in its place).
    pub target_port: String,
    pub deployment: String,
    pub namespace: String,
    pub replicas: u32,
}

/// Istio's default retry policy for every HTTP route (`DefaultPolicy`,
/// pilot/pkg/networking/core/route/retry/retry.go): two retries, on another host, of connection
/// failures. `retriable-status-codes` is listed with no status code: since Istio 1.27 an upstream's
/// 503 is not retried (the `EXCLUDE_UNSAFE_503_FROM_DEFAULT_RETRY` default of 1.24 became the
/// only behaviour), and neither is a request reset after it was sent (`reset` is not listed).
pub(crate) fn default_retry_policy() -> Value {
    json!({
        "retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
        "num_retries": 2,
        "retry_host_predicate": [{
            "name": "envoy.retry_host_predicates.previous_hosts",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
            }
        }],
        "host_selection_retry_max_attempts": "5"
    })
}

fn namespace_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.namespace
        .clone()
        .unwrap_or_else(|| "default".to_string())
}

fn name_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.name.clone().unwrap_or_default()
}

/// Translates the documents of one manifest set.
pub(crate) fn plan(documents: &[Document]) -> Result<GatewayPlan> {
    let mut gateways = Vec::new();
    let mut virtual_services = Vec::new();
    let mut services = Vec::new();
    let mut deployments = Vec::new();
    for doc in documents {
        match &doc.resource {
            Resource::Gateway(g) => gateways.push(g.as_ref()),
            Resource::VirtualService(v) => virtual_services.push(v.as_ref()),
            Resource::Service(s) => services.push(s.as_ref()),
            Resource::Deployment(d) => deployments.push(d.as_ref()),
            _ => {}
        }
    }
    let gateway = match gateways.as_slice() {
        [one] => *one,
        [] => bail!("the manifests define no Gateway: the local gateway needs exactly one"),
        many => bail!(
            "the manifests define {} Gateways ({}): the local gateway stands in for one",
            many.len(),
            many.iter()
                .map(|g| format!("{}/{}", namespace_of(&g.metadata), name_of(&g.metadata)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let world = World {
        services,
        deployments,
    };
    translate_gateway(gateway, &virtual_services, &world)
}

struct World<'a> {
    services: Vec<&'a Service>,
    deployments: Vec<&'a Deployment>,
}

fn translate_gateway(
    gateway: &Gateway,
    virtual_services: &[&VirtualService],
    world: &World,
) -> Result<GatewayPlan> {
    let gw_ns = namespace_of(&gateway.metadata);
    let gw_name = name_of(&gateway.metadata);
    let gw_id = format!("{gw_ns}/{gw_name}");
    let what = format!("Gateway {gw_id}");

    let selector = &gateway.spec.selector;
    let matches_ingress = !selector.is_empty()
        && selector.iter().all(|(k, v)| {
            INGRESS_GATEWAY_LABELS
                .iter()
                .any(|(lk, lv)| lk == k && lv == v)
        });
    if !matches_ingress {
        bail!(
            "{what}: spec.selector {selector:?} does not select Istio's default ingress gateway \
             (labels {INGRESS_GATEWAY_LABELS:?}), the only gateway the local target runs"
        );
    }
    let server = match gateway.spec.servers.as_slice() {
        [one] => one,
        [] => bail!("{what}: spec.servers is empty: nothing to listen on"),
        _ => bail!(
            "{what}: spec.servers has {} servers; the local gateway translates exactly one",
            gateway.spec.servers.len()
        ),
    };
    let protocol = server.port.protocol.to_ascii_uppercase();
    if protocol != "HTTP" {
        bail!(
            "{what}: spec.servers[0].port.protocol is {}: the local gateway translates HTTP only",
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
            bail!("{what}: spec.servers[0].{field} is not translated by the local gateway");
        }
    }
    if server.hosts.is_empty() {
        bail!("{what}: spec.servers[0].hosts is empty; Istio requires at least one host");
    }
    let server_hosts: Vec<ServerHost> = server
        .hosts
        .iter()
        .map(|h| ServerHost::parse(h, &gw_ns))
        .collect();

    let mut virtual_hosts: Vec<VirtualHostPlan> = Vec::new();
    let mut domain_owner: BTreeMap<String, String> = BTreeMap::new();
    let mut upstreams: Vec<Upstream> = Vec::new();
    for vs in virtual_services {
        let vs_ns = namespace_of(&vs.metadata);
        let vs_id = format!("{vs_ns}/{}", name_of(&vs.metadata));
        let binds = vs.spec.gateways.iter().any(|reference| {
            let (ns, name) = reference
                .split_once('/')
                .unwrap_or((vs_ns.as_str(), reference.as_str()));
            ns == gw_ns && name == gw_name
        });
        if !binds {
            continue;
        }
        let vs_what = format!("VirtualService {vs_id}");
        for (field, present) in [
            ("spec.tls", vs.spec.tls.is_some()),
            ("spec.tcp", vs.spec.tcp.is_some()),
            ("spec.exportTo", vs.spec.export_to.is_some()),
        ] {
            if present {
                bail!("{vs_what}: {field} is not translated by the local gateway");
            }
        }
        let mut routes = Vec::new();
        for (index, rule) in vs.spec.http.iter().enumerate() {
            routes.extend(translate_http_rule(
                rule,
                index,
                &vs_what,
                &vs_ns,
                world,
                &mut upstreams,
            )?);
        }
        for host in &vs.spec.hosts {
            let resolved = resolve_short_name(host, &vs_ns);
            let bound: Vec<String> = server_hosts
                .iter()
                .filter(|sh| sh.namespace_allows(&vs_ns))
                .filter_map(|sh| intersect_hosts(&sh.host, &resolved))
                .collect();
            for hostname in bound {
                let domains = virtual_host_domains(&hostname);
                for domain in &domains {
                    if let Some(owner) = domain_owner.insert(domain.clone(), vs_id.clone()) {
                        bail!(
                            "{vs_what}: host `{domain}` is also bound by VirtualService {owner}; \
                             Istio merges such VirtualServices by creation time, the local \
                             gateway does not"
                        );
                    }
                }
                virtual_hosts.push(VirtualHostPlan {
                    name: format!("{hostname}:{}", server.port.number),
                    domains,
                    routes: routes.clone(),
                });
            }
        }
    }
    if virtual_hosts.is_empty() {
        // Istio's answer for a server with no bound VirtualService: a host that routes nothing.
        virtual_hosts.push(VirtualHostPlan {
            name: format!("blackhole:{}", server.port.number),
            domains: vec!["*".into()],
            routes: Vec::new(),
        });
    }
    Ok(GatewayPlan {
        gateway: gw_id,
        server_port: server.port.number,
        virtual_hosts,
        upstreams,
    })
}

/// Istio's gateway domains: the host, and the host with any port, except for `*`.
pub(crate) fn virtual_host_domains(hostname: &str) -> Vec<String> {
    if hostname == "*" {
        vec!["*".into()]
    } else {
        vec![hostname.to_string(), format!("{hostname}:*")]
    }
}

/// One http rule → one Envoy route per match entry, in order.
fn translate_http_rule(
    rule: &HttpRoute,
    index: usize,
    vs_what: &str,
    vs_ns: &str,
    world: &World,
    upstreams: &mut Vec<Upstream>,
) -> Result<Vec<Value>> {
    let at = format!("{vs_what}: spec.http[{index}]");
    for (field, present) in [
        ("redirect", rule.redirect.is_some()),
        ("directResponse", rule.direct_response.is_some()),
        ("delegate", rule.delegate.is_some()),
        ("rewrite", rule.rewrite.is_some()),
        ("timeout", rule.timeout.is_some()),
        ("retries", rule.retries.is_some()),
        ("fault", rule.fault.is_some()),
        ("mirror", rule.mirror.is_some()),
        ("mirrors", rule.mirrors.is_some()),
        ("mirrorPercentage", rule.mirror_percentage.is_some()),
        ("corsPolicy", rule.cors_policy.is_some()),
        ("headers", rule.headers.is_some()),
    ] {
        if present {
            bail!("{at}.{field} is not translated by the local gateway");
        }
    }
    let destination = match rule.route.as_slice() {
        [] => bail!("{at}.route is empty: nothing to route to"),
        [one] => one,
        many => bail!(
            "{at}.route has {} destinations: weighted splits are not translated by the local \
             gateway",
            many.len()
        ),
    };
    if let Some(weight) = destination.weight
        && weight != 0
        && weight != 100
    {
        bail!("{at}.route[0].weight is {weight}: a single destination takes all traffic");
    }
    if destination.headers.is_some() {
        bail!("{at}.route[0].headers is not translated by the local gateway");
    }
    if let Some(subset) = &destination.destination.subset {
        bail!(
            "{at}.route[0].destination.subset `{subset}` needs a DestinationRule, which the local \
             gateway does not translate"
        );
    }
    let upstream = resolve_destination(
        &destination.destination.host,
        destination.destination.port.as_ref().map(|p| p.number),
        vs_ns,
        world,
        &format!("{at}.route[0].destination"),
    )?;
    let cluster = upstream.cluster.clone();
    let operation = format!("{}:{}/*", upstream.service_fqdn, upstream.service_port);
    if !upstreams.contains(&upstream) {
        upstreams.push(upstream);
    }

    let route_action = json!({
        "cluster": cluster,
        // Istio disables Envoy's 15 s default: no route timeout unless the VirtualService sets one.
        "timeout": "0s",
        "retry_policy": default_retry_policy(),
        "max_stream_duration": {"max_stream_duration": "0s", "grpc_timeout_header_max": "0s"},
    });
    let matches: Vec<Option<&HttpMatchRequest>> = if rule.matches.is_empty() {
        vec![None]
    } else {
        rule.matches.iter().map(Some).collect()
    };
    let mut routes = Vec::new();
    for (match_index, matcher) in matches.into_iter().enumerate() {
        let envoy_match = match matcher {
            Some(m) => translate_match(m, &format!("{at}.match[{match_index}]"))?,
            None => json!({"prefix": "/"}),
        };
        let mut route = json!({
            "match": envoy_match,
            "route": route_action,
            "decorator": {"operation": operation},
        });
        let name = match (
            rule.name.as_deref(),
            matcher.and_then(|m| m.name.as_deref()),
        ) {
            (Some(rule_name), Some(match_name)) => Some(format!("{rule_name}.{match_name}")),
            (Some(rule_name), None) => Some(rule_name.to_string()),
            (None, Some(match_name)) => Some(match_name.to_string()),
            (None, None) => None,
        };
        if let Some(name) = name {
            route["name"] = json!(name);
        }
        routes.push(route);
    }
    Ok(routes)
}

/// One match entry → Envoy's route match.
pub(crate) fn translate_match(matcher: &HttpMatchRequest, at: &str) -> Result<Value> {
    for (field, present) in [
        ("method", matcher.method.is_some()),
        ("scheme", matcher.scheme.is_some()),
        ("authority", matcher.authority.is_some()),
        ("headers", !matcher.headers.is_empty()),
        ("queryParams", !matcher.query_params.is_empty()),
        ("withoutHeaders", !matcher.without_headers.is_empty()),
        ("port", matcher.port.is_some()),
        ("sourceLabels", !matcher.source_labels.is_empty()),
        ("gateways", !matcher.gateways.is_empty()),
        ("sourceNamespace", matcher.source_namespace.is_some()),
        ("statPrefix", matcher.stat_prefix.is_some()),
    ] {
        if present {
            bail!("{at}.{field} is not translated by the local gateway");
        }
    }
    let ignore_case = matcher.ignore_uri_case == Some(true);
    let mut out = match &matcher.uri {
        // As Istio's TranslateRouteMatch: no uri, or an empty one, matches every path.
        None | Some(StringMatch::Any) => json!({"prefix": "/"}),
        Some(StringMatch::Prefix(prefix)) => json!({"prefix": prefix}),
        Some(StringMatch::Exact(path)) => json!({"path": path}),
        // RE2 must match the whole path. Istio passes the regex through unchanged even with
        // ignoreUriCase (route.go TranslateRouteMatch), and Envoy ignores case_sensitive for
        // safe_regex: on a real gateway such a regex stays case-sensitive, so it does here too.
        Some(StringMatch::Regex(regex)) => json!({"safe_regex": {"regex": regex}}),
    };
    // Istio sets case_sensitive = !ignoreUriCase on every match; true is Envoy's default.
    if ignore_case {
        out["case_sensitive"] = json!(false);
    }
    Ok(out)
}

/// Destination host and port → the Service, its targetPort and the Deployment behind it.
fn resolve_destination(
    host: &str,
    port: Option<u32>,
    vs_ns: &str,
    world: &World,
    at: &str,
) -> Result<Upstream> {
    let fqdn = resolve_short_name(host, vs_ns);
    let suffix = format!(".svc.{CLUSTER_DOMAIN}");
    let Some((name, namespace)) = fqdn
        .strip_suffix(&suffix)
        .and_then(|rest| rest.split_once('.'))
        .filter(|(_, ns)| !ns.contains('.'))
    else {
        bail!(
            "{at}.host `{host}` is not a Kubernetes Service name: Istio takes a host with a dot \
             as fully qualified, so use `<service>` (same namespace) or \
             `<service>.<namespace>.svc.{CLUSTER_DOMAIN}`"
        );
    };
    let service = world
        .services
        .iter()
        .find(|s| name_of(&s.metadata) == name && namespace_of(&s.metadata) == namespace)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{at}.host `{host}` resolves to {fqdn}, but the manifests define no Service \
                 {namespace}/{name}"
            )
        })?;
    let service_what = format!("Service {namespace}/{name}");
    let spec = service.spec.clone().unwrap_or_default();
    let ports = spec.ports.clone().unwrap_or_default();
    let service_port = match port {
        Some(number) => ports
            .iter()
            .find(|p| p.port as u32 == number)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{at}.port.number {number} is not a port of {service_what} (ports: {:?})",
                    ports.iter().map(|p| p.port).collect::<Vec<_>>()
                )
            })?,
        None => match ports.as_slice() {
            [only] => only,
            _ => bail!(
                "{at}.port is missing and {service_what} has {} ports: Istio needs the port",
                ports.len()
            ),
        },
    };
    let protocol = service_port
        .app_protocol
        .clone()
        .or(service_port.name.clone())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if protocol.starts_with("http2") || protocol.starts_with("grpc") || protocol.starts_with("h2c")
    {
        bail!(
            "{service_what} port {} declares protocol `{protocol}`: the local gateway speaks \
             HTTP/1.1 to replicas only",
            service_port.port
        );
    }
    let selector = spec.selector.clone().unwrap_or_default();
    if selector.is_empty() {
        bail!("{service_what} has no selector: the local target cannot tell which pods serve it");
    }
    let backing: Vec<&&Deployment> = world
        .deployments
        .iter()
        .filter(|d| namespace_of(&d.metadata) == namespace)
        .filter(|d| {
            let labels = d
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.labels.clone())
                .unwrap_or_default();
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .collect();
    let deployment = match backing.as_slice() {
        [one] => **one,
        [] => bail!(
            "{service_what} selects {selector:?}, but no Deployment in {namespace} has a pod \
             template with those labels: every request would fail"
        ),
        many => bail!(
            "{service_what} selects pods of {} Deployments; the local target runs one",
            many.len()
        ),
    };
    let deployment_name = name_of(&deployment.metadata);
    let deployment_what = format!("Deployment {namespace}/{deployment_name}");
    let dspec = deployment.spec.clone().unwrap_or_default();
    let replicas = dspec.replicas.unwrap_or(1);
    if replicas < 1 {
        bail!("{deployment_what} has {replicas} replicas: every routed request would be a 503");
    }
    let containers = dspec
        .template
        .spec
        .clone()
        .map(|s| s.containers)
        .unwrap_or_default();
    let app = containers
        .iter()
        .find(|c| c.image.as_deref().is_some_and(is_service_image))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{deployment_what} runs no `{IMAGE_REPOSITORY}` image; the local target can only \
                 run the workspace's own service"
            )
        })?;
    let target_port = match service_port.target_port.clone() {
        None => service_port.port.to_string(),
        Some(IntOrString::Int(n)) => n.to_string(),
        Some(IntOrString::String(port_name)) => {
            let declared = app
                .ports
                .clone()
                .unwrap_or_default()
                .into_iter()
                .find(|p| p.name.as_deref() == Some(port_name.as_str()));
            match declared {
                Some(p) => p.container_port.to_string(),
                None => bail!(
                    "{service_what} port {} targets the named port `{port_name}`, which no \
                     container port of {deployment_what} declares",
                    service_port.port
                ),
            }
        }
    };
    // The app listens on its declared container port; a targetPort elsewhere reaches nothing
    // and the gateway would answer every routed request with 503.
    let container_ports: Vec<String> = app
        .ports
        .iter()
        .flatten()
        .map(|p| p.container_port.to_string())
        .collect();
    if !container_ports.contains(&target_port) {
        bail!(
            "{service_what} port {} sends traffic to targetPort {target_port}, but the app              container of {deployment_what} listens on {}: every routed request would be a 503;              set the Service's targetPort to the containerPort",
            service_port.port,
            if container_ports.is_empty() {
                "no declared containerPort".to_string()
            } else {
                container_ports.join(", ")
            }
        );
    }
    Ok(Upstream {
        cluster: format!("outbound|{}||{fqdn}", service_port.port),
        namespace: namespace.to_string(),
        service_fqdn: fqdn,
        service_port: service_port.port,
        target_port,
        deployment: deployment_name,
        replicas: replicas as u32,
    })
}
