//! What the `existing` target finds of the mesh it is to run on, whichever way Istio was
//! installed (`istioctl install`, the Helm charts, with revisions and revision tags): istiod by
//! its label in any namespace, the sidecar injector's webhooks and the namespace label one of
//! them honours, and the ingress gateway's Service, its pods and the port their Envoy listens on.
//!
//! Upstream, each in istio/istio (release-1.31):
//! - istiod's Deployment is `istiod` or `istiod-<revision>`, labelled `app: istiod` and
//!   `istio.io/rev: <revision or "default">`
//!   (`manifests/charts/istio-control/istio-discovery/templates/deployment.yaml`).
//! - The injector's webhooks are named `<prefix>sidecar-injector.istio.io`. A revision's own
//!   `rev.namespace.` webhook selects `istio.io/rev In [<revision>]` with no `istio-injection`
//!   label; only the default revision (`revision: ""`) adds the `namespace.` webhook that
//!   selects `istio-injection=enabled`
//!   (`manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml`). A
//!   revision tag is a configuration `istio-revision-tag-<tag>` whose `rev.namespace.` webhook
//!   selects `istio.io/rev In [<tag>]`; the tag `default` adds the `namespace.` webhook too
//!   (`templates/revision-tags-mwc.yaml`).
//! - The gateway chart's Service carries the pods' selector labels `app: <name>` and
//!   `istio: <name without istio->` and maps `http2` 80 → 80
//!   (`manifests/charts/gateway/templates/_helpers.tpl`, `values.yaml`); istioctl's maps 80 →
//!   8080 (`manifests/charts/gateways/istio-ingress/values.yaml`). Envoy listens on the
//!   Service's targetPort (`pilot/pkg/model/gateway.go`, the gateway's `PortMap`), so that is
//!   the port to forward to.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::ListParams;

use crate::config::knobs::MeshKnobs;
use crate::exec::wait::{Attempt, wait_for};
use crate::k8s::rollout::deployment_available;

/// istiod's label in every install style.
pub(crate) const ISTIOD_SELECTOR: &str = "app=istiod";
/// The suffix of every sidecar injector webhook's name.
const INJECTOR_WEBHOOK_SUFFIX: &str = "sidecar-injector.istio.io";
/// The namespace label the default revision's injector honours.
pub(crate) const INJECTION_LABEL: &str = "istio-injection";
/// The namespace label a revision's (or tag's) injector honours.
pub(crate) const REVISION_LABEL: &str = "istio.io/rev";
/// Set by the API server on every namespace (`NamespaceDefaultLabelName`), so webhooks can
/// select on it.
const NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// The port of the gateway pods that the app's Gateway server port reaches (see
/// [`gateway_target`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetPort {
    Number(u16),
    /// A named container port, resolved on each pod.
    Name(String),
}

/// The ingress gateway as found: its Service, the selector of its pods and the port to forward.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayTarget {
    pub namespace: String,
    pub service: String,
    /// The Service's `spec.selector`, as a label selector.
    pub pod_selector: String,
    pub target_port: TargetPort,
}

impl GatewayTarget {
    /// istioctl's default gateway, as `manifests/istio-install.yaml` installs it.
    pub fn istioctl_default() -> Self {
        use crate::config::names::{
            GATEWAY_SELECTOR, GATEWAY_TARGET_PORT, INGRESS_GATEWAY, ISTIO_NAMESPACE,
        };
        GatewayTarget {
            namespace: ISTIO_NAMESPACE.to_string(),
            service: INGRESS_GATEWAY.to_string(),
            pod_selector: GATEWAY_SELECTOR.to_string(),
            target_port: TargetPort::Number(GATEWAY_TARGET_PORT),
        }
    }

    pub(crate) fn describe_port(&self) -> String {
        match &self.target_port {
            TargetPort::Number(port) => port.to_string(),
            TargetPort::Name(name) => format!("`{name}`"),
        }
    }

    /// The container port of `pod` this target forwards to.
    pub(crate) fn port_on(&self, pod: &Pod) -> Result<u16> {
        match &self.target_port {
            TargetPort::Number(port) => Ok(*port),
            TargetPort::Name(name) => pod
                .spec
                .iter()
                .flat_map(|s| s.containers.iter())
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(name.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .with_context(|| {
                    format!(
                        "Service {}/{} sends http2 to the port named `{name}`, which pod {} does \
                         not declare",
                        self.namespace,
                        self.service,
                        pod.metadata.name.as_deref().unwrap_or("?")
                    )
                }),
        }
    }
}

/// What the app needs of the mesh: its namespace's labels as the manifests write them, and its
/// pods' labels (the injector's object selectors look at them).
#[derive(Clone, Debug, Default)]
pub struct MeshQuery {
    pub app_namespace: String,
    /// The port of the app's Gateway server (80): the gateway listens on the targetPort of the
    /// Service port with that number.
    pub gateway_port: u32,
    pub namespace_labels: BTreeMap<String, String>,
    pub pod_labels: BTreeMap<String, String>,
    pub knobs: MeshKnobs,
}

/// The mesh as found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mesh {
    /// `namespace/name (revision)` of each istiod found.
    pub istiod: Vec<String>,
    pub gateway: GatewayTarget,
    /// The labels the app's Namespace is to be applied with so that an injector selects it.
    pub namespace_labels: BTreeMap<String, String>,
    /// The labels the app's namespace already had (it exists before the run).
    pub existing_namespace_labels: Option<BTreeMap<String, String>>,
}

/// Whether `labels` satisfy a Kubernetes label selector. An absent selector selects everything
/// (a webhook's default), as does an empty one (apimachinery `LabelSelectorAsSelector`).
pub(crate) fn selector_matches(
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    let equal = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    equal
        && selector.match_expressions.iter().flatten().all(|e| {
            let value = labels.get(&e.key);
            let values = e.values.as_deref().unwrap_or_default();
            match e.operator.as_str() {
                "In" => value.is_some_and(|v| values.contains(v)),
                "NotIn" => value.is_none_or(|v| !values.contains(v)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                // An unknown operator is invalid upstream: it selects nothing.
                _ => false,
            }
        })
}

/// One sidecar injector webhook.
#[derive(Clone, Debug)]
pub(crate) struct Injector {
    pub configuration: String,
    pub webhook: String,
    pub namespace_selector: Option<LabelSelector>,
    pub object_selector: Option<LabelSelector>,
}

impl Injector {
    fn selects(
        &self,
        namespace: &BTreeMap<String, String>,
        pod: &BTreeMap<String, String>,
    ) -> bool {
        selector_matches(self.namespace_selector.as_ref(), namespace)
            && selector_matches(self.object_selector.as_ref(), pod)
    }

    /// The values of `istio.io/rev` its namespace selector asks for (a revision or a tag).
    fn revisions(&self) -> Vec<String> {
        self.namespace_selector
            .iter()
            .flat_map(|s| s.match_expressions.iter().flatten())
            .filter(|e| e.key == REVISION_LABEL && e.operator == "In")
            .flat_map(|e| e.values.clone().unwrap_or_default())
            .collect()
    }

    fn describe(&self) -> String {
        format!("{}/{}", self.configuration, self.webhook)
    }
}

/// The sidecar injector webhooks among the cluster's mutating webhooks.
pub(crate) fn injectors(configurations: &[MutatingWebhookConfiguration]) -> Vec<Injector> {
    configurations
        .iter()
        .flat_map(|c| {
            let configuration = c.metadata.name.clone().unwrap_or_default();
            c.webhooks
                .iter()
                .flatten()
                .filter(|w| w.name.ends_with(INJECTOR_WEBHOOK_SUFFIX))
                .map(move |w| Injector {
                    configuration: configuration.clone(),
                    webhook: w.name.clone(),
                    namespace_selector: w.namespace_selector.clone(),
                    object_selector: w.object_selector.clone(),
                })
        })
        .collect()
}

/// The namespace's labels as the API server will see them after the apply.
fn effective_labels(
    namespace: &str,
    existing: Option<&BTreeMap<String, String>>,
    applied: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = existing.cloned().unwrap_or_default();
    labels.extend(applied.clone());
    labels.insert(NAME_LABEL.to_string(), namespace.to_string());
    labels
}

fn with_revision(wanted: &BTreeMap<String, String>, revision: &str) -> BTreeMap<String, String> {
    let mut labels = wanted.clone();
    labels.remove(INJECTION_LABEL);
    labels.insert(REVISION_LABEL.to_string(), revision.to_string());
    labels
}

/// The labels to apply the app's namespace with so that an injector selects its pods: the
/// manifests' own (`istio-injection=enabled`) when the default revision honours them, else
/// `istio.io/rev=<revision>` for the revision `E2E_ISTIO_REVISION` names or the only one
/// installed. An error lists the injectors found and the knob.
pub(crate) fn plan_injection(
    injectors: &[Injector],
    query: &MeshQuery,
    existing: Option<&BTreeMap<String, String>>,
) -> Result<BTreeMap<String, String>> {
    let namespace = query.app_namespace.as_str();
    let selected = |applied: &BTreeMap<String, String>| {
        let labels = effective_labels(namespace, existing, applied);
        injectors
            .iter()
            .any(|i| i.selects(&labels, &query.pod_labels))
    };
    let found = || {
        if injectors.is_empty() {
            "no sidecar injector webhook (a MutatingWebhookConfiguration webhook named \
             *.sidecar-injector.istio.io) at all"
                .to_string()
        } else {
            let names: Vec<String> = injectors.iter().map(Injector::describe).collect();
            format!("injector webhooks: {}", names.join(", "))
        }
    };
    let existing_note = existing
        .filter(|l| !l.is_empty())
        .map(|l| format!(" (it exists, labelled {})", join_labels(l)))
        .unwrap_or_default();
    if let Some(revision) = &query.knobs.istio_revision {
        let labels = with_revision(&query.namespace_labels, revision);
        if selected(&labels) {
            return Ok(labels);
        }
        bail!(
            "E2E_ISTIO_REVISION={revision}: no injector selects namespace {namespace}{existing_note} \
             labelled {}: found {}",
            join_labels(&labels),
            found()
        );
    }
    if selected(&query.namespace_labels) {
        return Ok(query.namespace_labels.clone());
    }
    let candidates: BTreeSet<String> = injectors.iter().flat_map(Injector::revisions).collect();
    let fitting: Vec<&String> = candidates
        .iter()
        .filter(|r| selected(&with_revision(&query.namespace_labels, r)))
        .collect();
    match fitting.as_slice() {
        [only] => Ok(with_revision(&query.namespace_labels, only)),
        [] => bail!(
            "no sidecar injector would select namespace {namespace}{existing_note} labelled {} or \
             with any `{REVISION_LABEL}` label: found {}. Install Istio (its default revision \
             honours `{INJECTION_LABEL}=enabled`), or set E2E_ISTIO_REVISION to the revision or \
             tag to use",
            join_labels(&query.namespace_labels),
            found()
        ),
        several => bail!(
            "no injector honours `{INJECTION_LABEL}=enabled` (no default revision), and \
             revisions or tags {} each would: set E2E_ISTIO_REVISION to the one to use ({})",
            several
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            found()
        ),
    }
}

fn join_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "with nothing".to_string();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `namespace/name`.
fn service_name(service: &Service) -> String {
    format!(
        "{}/{}",
        service.metadata.namespace.as_deref().unwrap_or("?"),
        service.metadata.name.as_deref().unwrap_or("?")
    )
}

/// The gateway Service among `candidates` (those labelled with the selector, or named by
/// `E2E_GATEWAY_SERVICE`): exactly one, else an error naming what was found and the knob.
pub(crate) fn choose_gateway_service<'a>(
    candidates: &'a [Service],
    knobs: &MeshKnobs,
    looked_in: &str,
) -> Result<&'a Service> {
    let candidates: Vec<&Service> = candidates
        .iter()
        .filter(|s| {
            knobs
                .gateway_service
                .as_ref()
                .is_none_or(|name| s.metadata.name.as_ref() == Some(name))
        })
        .collect();
    let how = match &knobs.gateway_service {
        Some(name) => format!("named {name} (E2E_GATEWAY_SERVICE)"),
        None => format!("labelled {} (E2E_GATEWAY_SELECTOR)", knobs.gateway_selector),
    };
    match candidates.as_slice() {
        [one] => Ok(one),
        [] => bail!("no Service {how} in {looked_in}"),
        several => bail!(
            "{} Services {how} in {looked_in}: {}; set E2E_GATEWAY_NAMESPACE or \
             E2E_GATEWAY_SERVICE to the one the suite is to use",
            several.len(),
            several
                .iter()
                .map(|s| service_name(s))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The gateway target of a Service for a Gateway server on `server_port`: as Istio resolves
/// the port its Envoy listens on (`resolvePorts`, pilot/pkg/model/gateway.go), the targetPort of
/// the Service port whose number is the server's (80 → 8080 with istioctl, 80 → 80 with the
/// gateway chart), else the server's port itself; and its pods' selector.
pub(crate) fn gateway_target(service: &Service, server_port: u32) -> Result<GatewayTarget> {
    let name = service_name(service);
    let spec = service
        .spec
        .as_ref()
        .with_context(|| format!("Service {name} has no spec"))?;
    let ports = spec.ports.as_deref().unwrap_or_default();
    let by_number = ports
        .iter()
        .find(|p| u32::try_from(p.port) == Ok(server_port));
    let target_port = match by_number.map(|p| (p.port, &p.target_port)) {
        None => TargetPort::Number(u16::try_from(server_port).context("port out of range")?),
        Some((port, None)) => TargetPort::Number(u16::try_from(port).context("port out of range")?),
        Some((_, Some(IntOrString::Int(port)))) => {
            TargetPort::Number(u16::try_from(*port).context("targetPort out of range")?)
        }
        Some((_, Some(IntOrString::String(port)))) => match port.parse::<u16>() {
            Ok(number) => TargetPort::Number(number),
            Err(_) => TargetPort::Name(port.clone()),
        },
    };
    let selector = spec
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
        .with_context(|| format!("Service {name} has no selector: its pods cannot be found"))?;
    Ok(GatewayTarget {
        namespace: service.metadata.namespace.clone().unwrap_or_default(),
        service: service.metadata.name.clone().unwrap_or_default(),
        pod_selector: selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        target_port,
    })
}

/// The selector's labels missing from a gateway pod's: the app's Gateway would not bind to it.
pub(crate) fn missing_selector_labels(
    pod: &Pod,
    selector: &[(String, String)],
) -> Vec<(String, String)> {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    selector
        .iter()
        .filter(|(k, v)| labels.get(k) != Some(v))
        .cloned()
        .collect()
}

fn list_in<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// What the cluster has that looks like Istio, for an error that must say what was found.
async fn found_summary(client: &kube::Client) -> String {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let istiod = match deployments
        .list(&ListParams::default().labels(ISTIOD_SELECTOR))
        .await
    {
        Ok(list) if list.items.is_empty() => "none".to_string(),
        Ok(list) => list
            .items
            .iter()
            .map(|d| {
                format!(
                    "{}/{}",
                    d.metadata.namespace.as_deref().unwrap_or("?"),
                    d.metadata.name.as_deref().unwrap_or("?")
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        Err(err) => format!("not listed ({err})"),
    };
    let services: Api<Service> = Api::all(client.clone());
    let gateways = match services.list(&ListParams::default().labels("istio")).await {
        Ok(list) if list.items.is_empty() => "none".to_string(),
        Ok(list) => list
            .items
            .iter()
            .map(|s| {
                let istio = s
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("istio"))
                    .cloned()
                    .unwrap_or_default();
                format!("{} (istio={istio})", service_name(s))
            })
            .collect::<Vec<_>>()
            .join(", "),
        Err(err) => format!("not listed ({err})"),
    };
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let injectors = match webhooks.list(&ListParams::default()).await {
        Ok(list) => {
            let found = injectors(&list.items);
            if found.is_empty() {
                "none".to_string()
            } else {
                found
                    .iter()
                    .map(Injector::describe)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        }
        Err(err) => format!("not listed ({err})"),
    };
    format!(
        "found: istiod Deployments (labelled {ISTIOD_SELECTOR}): {istiod}; Services labelled \
         istio: {gateways}; sidecar injector webhooks: {injectors}"
    )
}

/// How to point the suite at a mesh it did not find.
const KNOBS_HINT: &str = "the knobs: E2E_GATEWAY_NAMESPACE, E2E_GATEWAY_SELECTOR, \
                          E2E_GATEWAY_SERVICE, E2E_ISTIO_REVISION (README, the `existing` target)";

/// Finds istiod (waiting until one is Available), the injector that will select the app's
/// namespace, and the ingress gateway with a Ready pod, within `timeout`. A failure says what was
/// looked for, what the cluster has, and the knob to set; it changes nothing.
pub(crate) async fn discover(
    client: &kube::Client,
    query: &MeshQuery,
    timeout: Duration,
) -> Result<Mesh> {
    match discover_inner(client, query, timeout).await {
        Ok(mesh) => Ok(mesh),
        Err(err) => {
            let found = found_summary(client).await;
            Err(err.context(format!(
                "the existing target found no usable Istio in this context ({found}); if it is \
                 installed differently, set {KNOBS_HINT}"
            )))
        }
    }
}

async fn discover_inner(
    client: &kube::Client,
    query: &MeshQuery,
    timeout: Duration,
) -> Result<Mesh> {
    let started = std::time::Instant::now();
    let left = || timeout.saturating_sub(started.elapsed());
    let deployments: Api<Deployment> = Api::all(client.clone());
    let istiod = wait_for(
        &format!(
            "an istiod Deployment (labelled {ISTIOD_SELECTOR}, any namespace) to be Available"
        ),
        left(),
        Duration::from_secs(1),
        || async {
            let listed = deployments
                .list(&ListParams::default().labels(ISTIOD_SELECTOR))
                .await
                .context("listing istiod Deployments")?
                .items;
            if listed.is_empty() {
                bail!(
                    "no Deployment labelled {ISTIOD_SELECTOR} in any namespace: istioctl and the \
                     istiod chart both label istiod so; is Istio installed in this context?"
                );
            }
            let mut states = Vec::new();
            let mut available = Vec::new();
            for d in &listed {
                let name = format!(
                    "{}/{} ({})",
                    d.metadata.namespace.as_deref().unwrap_or("?"),
                    d.metadata.name.as_deref().unwrap_or("?"),
                    d.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(REVISION_LABEL))
                        .map(String::as_str)
                        .unwrap_or("default")
                );
                match deployment_available(d) {
                    Attempt::Done(()) => available.push(name),
                    Attempt::NotYet(state) => states.push(state),
                }
            }
            Ok(if available.is_empty() {
                Attempt::NotYet(states.join("; "))
            } else {
                Attempt::Done(available)
            })
        },
    )
    .await?;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let existing = namespaces
        .get_opt(&query.app_namespace)
        .await
        .with_context(|| format!("reading Namespace {}", query.app_namespace))?
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .map(|n| n.metadata.labels.unwrap_or_default());
    let webhooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let namespace_labels = match webhooks.list(&ListParams::default()).await {
        Ok(list) => plan_injection(&injectors(&list.items), query, existing.as_ref())?,
        // Reading webhooks needs cluster-wide rights a namespace admin may lack: the rollout
        // wait still tells an uninjected pod apart.
        Err(kube::Error::Api(status)) if status.code == 403 => {
            eprintln!(
                "warning: cannot list MutatingWebhookConfigurations ({}): applying namespace {} \
                 labelled as the manifests say, unchecked",
                status.message, query.app_namespace
            );
            query.namespace_labels.clone()
        }
        Err(err) => return Err(err).context("listing MutatingWebhookConfigurations"),
    };

    let selector = query.knobs.selector_labels()?;
    let namespace = query.knobs.gateway_namespace.as_deref();
    let looked_in = namespace
        .map(|n| format!("namespace {n}"))
        .unwrap_or_else(|| "any namespace".to_string());
    let services: Api<Service> = list_in(client, namespace);
    let params = match query.knobs.gateway_service {
        Some(_) => ListParams::default(),
        None => ListParams::default().labels(&query.knobs.gateway_selector),
    };
    let listed = services
        .list(&params)
        .await
        .with_context(|| format!("listing Services in {looked_in}"))?
        .items;
    let service = choose_gateway_service(&listed, &query.knobs, &looked_in)?;
    let gateway = gateway_target(service, query.gateway_port)?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &gateway.namespace);
    wait_for(
        &format!(
            "a Ready pod of the gateway Service {}/{} ({})",
            gateway.namespace, gateway.service, gateway.pod_selector
        ),
        left(),
        Duration::from_secs(1),
        || async {
            let listed = pods
                .list(&ListParams::default().labels(&gateway.pod_selector))
                .await
                .context("listing the gateway pods")?
                .items;
            let Some(ready) = crate::k8s::gateway::ready_gateway_pod(&listed) else {
                return Ok(Attempt::NotYet(format!(
                    "{} pods, none Ready",
                    listed.len()
                )));
            };
            let pod = listed
                .iter()
                .find(|p| p.metadata.name.as_ref() == Some(&ready))
                .context("the Ready pod")?;
            let missing = missing_selector_labels(pod, &selector);
            if !missing.is_empty() {
                bail!(
                    "gateway pod {}/{ready} lacks the labels {} of E2E_GATEWAY_SELECTOR={}: the \
                     app's Gateway would not bind to it; set E2E_GATEWAY_SELECTOR to its labels",
                    gateway.namespace,
                    missing
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                    query.knobs.gateway_selector
                );
            }
            gateway.port_on(pod)?;
            Ok(Attempt::Done(()))
        },
    )
    .await?;
    Ok(Mesh {
        istiod,
        gateway,
        namespace_labels,
        existing_namespace_labels: existing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// The injector webhooks of the chart's `mutatingwebhook.yaml` for `revision` ("" is the
    /// default revision), or of `revision-tags-mwc.yaml` for a tag.
    fn injector_configuration(name: &str, revision: &str, default: bool) -> Value {
        let rev = if revision.is_empty() {
            "default"
        } else {
            revision
        };
        let mut webhooks = vec![
            json!({"name": "rev.namespace.sidecar-injector.istio.io",
                "namespaceSelector": {"matchExpressions": [
                    {"key": "istio.io/rev", "operator": "In", "values": [rev]},
                    {"key": "istio-injection", "operator": "DoesNotExist"}]},
                "objectSelector": {"matchExpressions": [
                    {"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}]},
                "clientConfig": {}, "sideEffects": "None", "admissionReviewVersions": ["v1"]}),
            json!({"name": "rev.object.sidecar-injector.istio.io",
                "namespaceSelector": {"matchExpressions": [
                    {"key": "istio.io/rev", "operator": "DoesNotExist"},
                    {"key": "istio-injection", "operator": "DoesNotExist"}]},
                "objectSelector": {"matchExpressions": [
                    {"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]},
                    {"key": "istio.io/rev", "operator": "In", "values": [rev]}]},
                "clientConfig": {}, "sideEffects": "None", "admissionReviewVersions": ["v1"]}),
        ];
        if default {
            webhooks.push(json!({"name": "namespace.sidecar-injector.istio.io",
                "namespaceSelector": {"matchExpressions": [
                    {"key": "istio-injection", "operator": "In", "values": ["enabled"]}]},
                "objectSelector": {"matchExpressions": [
                    {"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}]},
                "clientConfig": {}, "sideEffects": "None", "admissionReviewVersions": ["v1"]}));
        }
        json!({"apiVersion": "admissionregistration.k8s.io/v1",
               "kind": "MutatingWebhookConfiguration",
               "metadata": {"name": name}, "webhooks": webhooks})
    }

    use serde_json::Value;

    fn configs(values: Vec<Value>) -> Vec<Injector> {
        let parsed: Vec<MutatingWebhookConfiguration> = values
            .into_iter()
            .map(|v| serde_json::from_value(v).unwrap())
            .collect();
        injectors(&parsed)
    }

    fn query(revision: Option<&str>) -> MeshQuery {
        MeshQuery {
            gateway_port: 80,
            app_namespace: "wty-istio".into(),
            namespace_labels: labels(&[("istio-injection", "enabled")]),
            pod_labels: labels(&[("app", "wtyfft-app")]),
            knobs: MeshKnobs {
                istio_revision: revision.map(str::to_string),
                ..MeshKnobs::default()
            },
        }
    }

    #[test]
    fn the_default_revision_honours_the_manifests_label() {
        let found = configs(vec![injector_configuration(
            "istio-sidecar-injector",
            "",
            true,
        )]);
        let planned = plan_injection(&found, &query(None), None).unwrap();
        assert_eq!(planned, labels(&[("istio-injection", "enabled")]));
    }

    #[test]
    fn a_revision_without_a_default_gets_its_rev_label() {
        let found = configs(vec![injector_configuration(
            "istio-sidecar-injector-1-31-1",
            "1-31-1",
            false,
        )]);
        let planned = plan_injection(&found, &query(None), None).unwrap();
        assert_eq!(planned, labels(&[("istio.io/rev", "1-31-1")]));
    }

    #[test]
    fn a_tag_is_chosen_by_the_knob_when_several_would_do() {
        let found = configs(vec![
            injector_configuration("istio-sidecar-injector-1-31-1", "1-31-1", false),
            // `istio-revision-tag-prod`: the tag's values in the revision's webhooks.
            injector_configuration("istio-revision-tag-prod", "prod", false),
        ]);
        let err = plan_injection(&found, &query(None), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1-31-1, prod") && err.contains("E2E_ISTIO_REVISION"),
            "{err}"
        );
        let planned = plan_injection(&found, &query(Some("prod")), None).unwrap();
        assert_eq!(planned, labels(&[("istio.io/rev", "prod")]));
        let err = plan_injection(&found, &query(Some("canary")), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("E2E_ISTIO_REVISION=canary")
                && err.contains("istio-revision-tag-prod/rev.namespace"),
            "{err}"
        );
    }

    #[test]
    fn a_namespace_the_user_labelled_istio_injection_blocks_every_revision() {
        let found = configs(vec![injector_configuration(
            "istio-sidecar-injector-canary",
            "canary",
            false,
        )]);
        let existing = labels(&[("istio-injection", "enabled")]);
        let err = plan_injection(&found, &query(None), Some(&existing))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("it exists, labelled istio-injection=enabled")
                && err.contains("istio-sidecar-injector-canary/rev.namespace"),
            "{err}"
        );
    }

    #[test]
    fn no_injector_at_all_is_named() {
        let err = plan_injection(&[], &query(None), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no sidecar injector webhook"), "{err}");
    }

    #[test]
    fn selector_semantics_follow_apimachinery() {
        let selector: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"a": "1"},
            "matchExpressions": [
                {"key": "b", "operator": "NotIn", "values": ["x"]},
                {"key": "c", "operator": "DoesNotExist"}]
        }))
        .unwrap();
        assert!(selector_matches(Some(&selector), &labels(&[("a", "1")])));
        assert!(selector_matches(
            Some(&selector),
            &labels(&[("a", "1"), ("b", "y")])
        ));
        assert!(!selector_matches(
            Some(&selector),
            &labels(&[("a", "1"), ("b", "x")])
        ));
        assert!(!selector_matches(
            Some(&selector),
            &labels(&[("a", "1"), ("c", "")])
        ));
        assert!(selector_matches(None, &labels(&[])));
    }

    fn service(value: Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    fn helm_gateway(namespace: &str, name: &str) -> Service {
        let istio = name.trim_start_matches("istio-");
        service(json!({
            "metadata": {"name": name, "namespace": namespace,
                         "labels": {"app": name, "istio": istio}},
            "spec": {"type": "LoadBalancer", "selector": {"app": name, "istio": istio},
                     "ports": [
                        {"name": "status-port", "port": 15021, "targetPort": 15021},
                        {"name": "http2", "port": 80, "targetPort": 80},
                        {"name": "https", "port": 443, "targetPort": 443}]}
        }))
    }

    #[test]
    fn the_helm_gateway_forwards_to_80_and_istioctls_to_8080() {
        let helm =
            gateway_target(&helm_gateway("istio-system", "istio-ingressgateway"), 80).unwrap();
        assert_eq!(helm.target_port, TargetPort::Number(80));
        assert_eq!(
            helm.pod_selector,
            "app=istio-ingressgateway,istio=ingressgateway"
        );
        let istioctl = service(json!({
            "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system"},
            "spec": {"selector": {"istio": "ingressgateway"}, "ports": [
                {"name": "http2", "port": 80, "targetPort": 8080}]}
        }));
        assert_eq!(
            gateway_target(&istioctl, 80).unwrap().target_port,
            TargetPort::Number(8080)
        );
        let named = service(json!({
            "metadata": {"name": "gw", "namespace": "n"},
            "spec": {"selector": {"istio": "gw"}, "ports": [
                {"name": "http2", "port": 80, "targetPort": "http-envoy"}]}
        }));
        assert_eq!(
            gateway_target(&named, 80).unwrap().target_port,
            TargetPort::Name("http-envoy".into())
        );
        // The port is found by number, not by the chart's name `http2`; without one of that
        // number Istio binds the server's port itself.
        let renamed = service(json!({
            "metadata": {"name": "gw", "namespace": "n"},
            "spec": {"selector": {"istio": "gw"}, "ports": [
                {"name": "http2", "port": 8081, "targetPort": 9999},
                {"name": "web", "port": 80, "targetPort": 8080}]}
        }));
        assert_eq!(
            gateway_target(&renamed, 80).unwrap().target_port,
            TargetPort::Number(8080)
        );
        assert_eq!(
            gateway_target(&renamed, 8443).unwrap().target_port,
            TargetPort::Number(8443)
        );
    }

    #[test]
    fn several_gateways_ask_for_the_namespace_or_service_knob() {
        let both = [
            helm_gateway("istio-system", "istio-ingressgateway"),
            helm_gateway("istio-ingress", "istio-ingressgateway"),
        ];
        let err = choose_gateway_service(&both, &MeshKnobs::default(), "any namespace")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("istio-system/istio-ingressgateway, istio-ingress/istio-ingressgateway")
                && err.contains("E2E_GATEWAY_NAMESPACE"),
            "{err}"
        );
        let err = choose_gateway_service(&[], &MeshKnobs::default(), "namespace istio-ingress")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no Service labelled istio=ingressgateway (E2E_GATEWAY_SELECTOR) in namespace istio-ingress"),
            "{err}"
        );
        let knobs = MeshKnobs {
            gateway_service: Some("istio-ingressgateway".into()),
            ..MeshKnobs::default()
        };
        assert!(choose_gateway_service(&both[..1], &knobs, "namespace istio-system").is_ok());
    }
}
