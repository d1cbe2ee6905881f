//! A route's destination as Istio names it and as the local target runs it: the cluster
//! `outbound|<port>||<host>` (`GetDestinationCluster`, pilot/pkg/networking/core/route/route.go)
//! and, when a Service of the manifests has that port, the Deployment whose replicas answer.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{name_of, namespace_of};
use crate::config::names::{IMAGE_REPOSITORY, is_service_image};
use crate::manifest::hosts::{CLUSTER_DOMAIN, resolve_short_name};
use crate::manifest::istio::Destination;

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

impl Upstream {
    /// `namespace/name` of the Deployment: several clusters (ports, Services) may share it.
    pub(crate) fn deployment_id(&self) -> String {
        format!("{}/{}", self.namespace, self.deployment)
    }
}

/// The Services and Deployments of the manifests.
#[derive(Default)]
pub(super) struct World<'a> {
    pub services: Vec<&'a Service>,
    pub deployments: Vec<&'a Deployment>,
}

/// The clusters the routes name, as they are resolved.
pub(super) struct Upstreams<'a> {
    world: &'a World<'a>,
    found: Vec<Upstream>,
    /// Cluster → why nothing answers on it.
    dangling: BTreeMap<String, String>,
}

impl<'a> Upstreams<'a> {
    pub(super) fn new(world: &'a World<'a>) -> Self {
        Upstreams {
            world,
            found: Vec::new(),
            dangling: BTreeMap::new(),
        }
    }

    /// The cluster of a destination of a VirtualService in `vs_ns` on a gateway listening on
    /// `listener_port`. The port is the destination's, else the Service's only port, else the
    /// listener's. A cluster that no Service port backs is still named, as Istio does: Envoy
    /// answers such a route with 503 (`NC`, cluster not found), and the plan warns.
    pub(super) fn cluster_for(
        &mut self,
        destination: &Destination,
        vs_ns: &str,
        listener_port: u32,
        at: &str,
    ) -> Result<String> {
        if let Some(subset) = &destination.subset {
            bail!(
                "{at}.subset `{subset}` needs a DestinationRule, which the local gateway does not \
                 translate"
            );
        }
        let host = destination.host.as_str();
        let fqdn = resolve_short_name(host, vs_ns);
        let service = self.service(&fqdn);
        let ports: Vec<&ServicePort> = service
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.ports.as_ref())
            .map(|p| p.iter().collect())
            .unwrap_or_default();
        let port = match (&destination.port, ports.as_slice()) {
            (Some(selector), _) => selector.number,
            (None, [only]) => only.port as u32,
            (None, _) => listener_port,
        };
        let cluster = format!("outbound|{port}||{fqdn}");
        let Some(service) = service else {
            let why = format!(
                "{at}.host `{host}` is {fqdn}, which no Service of the manifests has: Istio \
                 routes it to cluster {cluster}, which does not exist, so every request on this \
                 route gets 503 (NC). A Service is `<name>` in the VirtualService's namespace or \
                 `<name>.<namespace>.svc.{CLUSTER_DOMAIN}`"
            );
            self.dangling.entry(cluster.clone()).or_insert(why);
            return Ok(cluster);
        };
        let Some(service_port) = ports.iter().find(|p| p.port as u32 == port) else {
            let why = format!(
                "{at}: {fqdn} has no port {port} (ports: {:?}), so Istio routes to cluster \
                 {cluster}, which does not exist: every request on this route gets 503 (NC)",
                ports.iter().map(|p| p.port).collect::<Vec<_>>()
            );
            self.dangling.entry(cluster.clone()).or_insert(why);
            return Ok(cluster);
        };
        if !self.found.iter().any(|u| u.cluster == cluster) {
            let upstream = backing(service, service_port, &fqdn, &cluster, self.world)?;
            if upstream.replicas == 0 {
                let why = format!(
                    "{at}: Deployment {} has 0 replicas, so cluster {cluster} has no endpoint \
                     and every request on this route gets 503 (UH, no healthy upstream)",
                    upstream.deployment_id()
                );
                self.dangling.entry(cluster.clone()).or_insert(why);
            }
            self.found.push(upstream);
        }
        Ok(cluster)
    }

    fn service(&self, fqdn: &str) -> Option<&'a Service> {
        let suffix = format!(".svc.{CLUSTER_DOMAIN}");
        let (name, namespace) = fqdn
            .strip_suffix(&suffix)
            .and_then(|rest| rest.split_once('.'))
            .filter(|(_, ns)| !ns.contains('.'))?;
        self.world
            .services
            .iter()
            .copied()
            .find(|s| name_of(&s.metadata) == name && namespace_of(&s.metadata) == namespace)
    }

    /// The upstreams found, and a warning for each cluster nothing backs.
    pub(super) fn finish(self) -> (Vec<Upstream>, Vec<String>) {
        (self.found, self.dangling.into_values().collect())
    }
}

/// The Deployment behind a Service port, as the local target can run it.
fn backing(
    service: &Service,
    service_port: &ServicePort,
    fqdn: &str,
    cluster: &str,
    world: &World,
) -> Result<Upstream> {
    let namespace = namespace_of(&service.metadata);
    let name = name_of(&service.metadata);
    let service_what = format!("Service {namespace}/{name}");
    let spec = service.spec.clone().unwrap_or_default();
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
    let replicas = dspec.replicas.unwrap_or(1).max(0);
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
        cluster: cluster.to_string(),
        namespace: namespace.to_string(),
        service_fqdn: fqdn.to_string(),
        service_port: service_port.port,
        target_port,
        deployment: deployment_name,
        replicas: replicas as u32,
    })
}
