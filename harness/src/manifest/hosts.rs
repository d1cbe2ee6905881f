//! Istio's host names, as the gateway binds a VirtualService to a Gateway server: a server host
//! `host`, `ns/host`, `./host` or `*/host` (`sanitizeServerHostNamespace`,
//! pilot/pkg/model/gateway.go; `NamesForNamespace`, pkg/config/host/names.go), a VirtualService
//! host expanded when it is a short name (`ResolveShortnameToFQDN`, pkg/config/model.go), and two
//! hosts bound when one covers the other, the more specific one winning (`Name.Matches`,
//! pkg/config/host/name.go; `pickMatchingGatewayHosts`, pilot/pkg/networking/core/gateway.go).
//! The local gateway's translation and the lint both use this one reading.

/// The cluster domain Istio appends to short names.
pub(crate) const CLUSTER_DOMAIN: &str = "cluster.local";

/// A Gateway server host: `host`, `ns/host`, `./host` or `*/host`.
pub(crate) struct ServerHost {
    /// `None`: any namespace.
    pub namespace: Option<String>,
    pub host: String,
}

impl ServerHost {
    pub(crate) fn parse(text: &str, gateway_namespace: &str) -> Self {
        match text.split_once('/') {
            Some(("*", host)) => ServerHost {
                namespace: None,
                host: host.into(),
            },
            Some((".", host)) => ServerHost {
                namespace: Some(gateway_namespace.into()),
                host: host.into(),
            },
            Some((ns, host)) => ServerHost {
                namespace: Some(ns.into()),
                host: host.into(),
            },
            None => ServerHost {
                namespace: None,
                host: text.into(),
            },
        }
    }

    pub(crate) fn namespace_allows(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }
}

/// Istio's `ResolveShortnameToFQDN`: a host without a dot is a Service in the resource's
/// namespace; anything with a dot is taken as written (so `svc.ns` is *not* expanded).
pub(crate) fn resolve_short_name(host: &str, namespace: &str) -> String {
    if host == "*" || host.contains('.') || host.parse::<std::net::IpAddr>().is_ok() {
        host.to_string()
    } else {
        format!("{host}.{namespace}.svc.{CLUSTER_DOMAIN}")
    }
}

/// The more specific of two hosts when one covers the other (`*` covers all, `*.a.com` covers
/// `b.a.com`), else `None`: the VirtualService host is not exposed by this server.
pub(crate) fn intersect_hosts(server: &str, virtual_service: &str) -> Option<String> {
    let covers = |wild: &str, other: &str| -> bool {
        wild == "*"
            || wild
                .strip_prefix('*')
                .is_some_and(|suffix| other.ends_with(suffix) && other.len() > suffix.len())
    };
    if server == virtual_service {
        Some(server.to_string())
    } else if covers(server, virtual_service) {
        Some(virtual_service.to_string())
    } else if covers(virtual_service, server) {
        Some(server.to_string())
    } else {
        None
    }
}

/// A VirtualService's `gateways` entry as `namespace/name` (`resolveGatewayName`,
/// pilot/pkg/model/config.go): a short name is in the VirtualService's namespace, `./name` too,
/// and the older `name.namespace[.svc.cluster.local]` names its namespace after the first dot.
pub(crate) fn resolve_gateway_name(reference: &str, namespace: &str) -> String {
    match reference.split_once('/') {
        Some((".", name)) => format!("{namespace}/{name}"),
        Some(_) => reference.to_string(),
        None => match reference.split_once('.') {
            None => format!("{namespace}/{reference}"),
            Some((name, rest)) => {
                let gateway_namespace = rest.split('.').next().unwrap_or(rest);
                format!("{gateway_namespace}/{name}")
            }
        },
    }
}

/// Istio's order of host names (`MoreSpecific`, pkg/config/host/names.go): exact names before
/// wildcards, then longer before shorter, then alphabetical.
pub(crate) fn more_specific_first(a: &str, b: &str) -> std::cmp::Ordering {
    let (a_wild, b_wild) = (a.starts_with('*'), b.starts_with('*'));
    a_wild
        .cmp(&b_wild)
        .then(b.len().cmp(&a.len()))
        .then(a.cmp(b))
}
