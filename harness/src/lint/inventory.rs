//! The inputs sorted for the rules: application resources by kind, the installed ingress gateway,
//! and the one namespace the application is meant to live in.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, PodTemplateSpec, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;

use crate::manifest::install::{self as ingress, Ingress};
use crate::manifest::{Document, Gateway, Resource, VirtualService};

/// Kinds that live outside any namespace (a `metadata.namespace` on them is ignored).
const CLUSTER_SCOPED_KINDS: [&str; 14] = [
    "Namespace",
    "Node",
    "PersistentVolume",
    "StorageClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "RuntimeClass",
    "IngressClass",
    "APIService",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "GatewayClass",
];

/// Anything that runs pods: a pod template, and the selector that owns it when the kind has one.
pub(crate) struct Workload<'a> {
    pub doc: &'a Document,
    pub selector: Option<LabelSelector>,
    pub template: PodTemplateSpec,
    /// Where the template sits in the resource (`spec.template`), for field paths in findings.
    template_path: &'static str,
}

impl Workload<'_> {
    /// The path of `field` (relative to the pod template) inside the resource.
    pub(crate) fn field(&self, field: &str) -> String {
        if self.template_path.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.template_path)
        }
    }

    pub(crate) fn labels(&self) -> BTreeMap<String, String> {
        self.template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
    }

    pub(crate) fn annotations(&self) -> BTreeMap<String, String> {
        self.template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default()
    }

    /// Every `(containerPort, name)` of the app containers.
    pub(crate) fn container_ports(&self) -> Vec<(i32, Option<String>)> {
        self.template
            .spec
            .iter()
            .flat_map(|spec| &spec.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .map(|p| (p.container_port, p.name.clone()))
            .collect()
    }

    pub(crate) fn describe_container_ports(&self) -> String {
        let ports = self.container_ports();
        if ports.is_empty() {
            return "none declared".into();
        }
        ports
            .iter()
            .map(|(number, name)| match name {
                Some(name) => format!("{number} ({name})"),
                None => number.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub(crate) struct Inventory<'a> {
    /// Application resources: everything except the Istio install overlay, the installed gateway
    /// Service and the kind cluster configuration.
    pub app: Vec<&'a Document>,
    pub ingress: Ingress,
    /// kind cluster configurations: not applied, but they publish the gateway's nodePort.
    pub kind_clusters: Vec<&'a Document>,
    /// The namespace the application lives in: the one most resources name (ties go to a
    /// declared Namespace).
    pub app_namespace: Option<String>,
    pub namespaces: Vec<(&'a Document, &'a Namespace)>,
    pub services: Vec<(&'a Document, &'a Service)>,
    pub workloads: Vec<Workload<'a>>,
    pub gateways: Vec<(&'a Document, &'a Gateway)>,
    pub virtual_services: Vec<(&'a Document, &'a VirtualService)>,
    /// ServiceEntry documents: `(document, hosts, port numbers)`.
    pub service_entries: Vec<(&'a Document, Vec<String>, Vec<i64>)>,
}

impl<'a> Inventory<'a> {
    pub(crate) fn new(documents: &'a [Document]) -> Self {
        let (kind_clusters, resources): (Vec<&Document>, Vec<&Document>) = documents
            .iter()
            .partition(|doc| is_cluster_configuration(doc));
        let (install, app): (Vec<&Document>, Vec<&Document>) = resources
            .into_iter()
            .partition(|doc| ingress::is_istio_operator(doc) || ingress::is_gateway_service(doc));
        let mut inventory = Inventory {
            kind_clusters,
            ingress: Ingress::from_documents(install),
            app_namespace: None,
            namespaces: Vec::new(),
            services: Vec::new(),
            workloads: Vec::new(),
            gateways: Vec::new(),
            virtual_services: Vec::new(),
            service_entries: Vec::new(),
            app,
        };
        for &doc in &inventory.app {
            match &doc.resource {
                Resource::Namespace(ns) => inventory.namespaces.push((doc, ns)),
                Resource::Service(svc) => inventory.services.push((doc, svc)),
                Resource::Deployment(deploy) => {
                    let spec = deploy.spec.as_ref();
                    inventory.workloads.push(Workload {
                        doc,
                        selector: spec.map(|s| s.selector.clone()),
                        template: spec.map(|s| s.template.clone()).unwrap_or_default(),
                        template_path: "spec.template",
                    });
                }
                Resource::Gateway(gw) => inventory.gateways.push((doc, gw)),
                Resource::VirtualService(vs) => inventory.virtual_services.push((doc, vs)),
                Resource::Other { kind, .. } => {
                    if let Some(workload) = other_workload(doc, kind) {
                        inventory.workloads.push(workload);
                    } else if kind == "ServiceEntry" {
                        inventory.service_entries.push(service_entry(doc));
                    }
                }
            }
        }
        inventory.app_namespace = inventory.choose_app_namespace();
        inventory
    }

    pub(crate) fn app_resource_count(&self) -> usize {
        self.app.len()
    }

    pub(crate) fn is_namespaced(doc: &Document) -> bool {
        !CLUSTER_SCOPED_KINDS.contains(&doc.kind())
    }

    pub(crate) fn namespaced(&self) -> impl Iterator<Item = &'a Document> + '_ {
        self.app.iter().copied().filter(|d| Self::is_namespaced(d))
    }

    fn choose_app_namespace(&self) -> Option<String> {
        let declared: Vec<&str> = self.namespaces.iter().map(|(d, _)| d.name()).collect();
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for doc in self.namespaced() {
            if let Some(ns) = doc.namespace() {
                match counts.iter_mut().find(|(name, _)| *name == ns) {
                    Some((_, count)) => *count += 1,
                    None => counts.push((ns, 1)),
                }
            }
        }
        // First seen wins among equals, after the declared ones.
        let best = counts
            .iter()
            .enumerate()
            .max_by_key(|(order, (name, count))| {
                (*count, declared.contains(name), std::cmp::Reverse(*order))
            })
            .map(|(_, (name, _))| name.to_string());
        best.or_else(|| declared.first().map(|name| name.to_string()))
    }

    /// The namespaces a resource may be counted in when resolving references to or from it: where
    /// it says it is and, when it is not in the app's namespace, also there. Being in the wrong
    /// namespace is the single-namespace rule's finding; the reference rules must not repeat it.
    pub(crate) fn homes(&self, doc: &Document) -> Vec<String> {
        let written = doc.namespace().map(str::to_string);
        let app = self.app_namespace.clone();
        match (written, app) {
            (Some(written), Some(app)) if written != app => vec![written, app],
            (Some(written), _) => vec![written],
            (None, Some(app)) => vec![app],
            (None, None) => vec!["default".to_string()],
        }
    }

    /// The namespaces a reference written in `from` points into: `explicit` when the reference
    /// names one, otherwise `from`'s own.
    pub(crate) fn reference_namespaces(
        &self,
        from: &Document,
        explicit: Option<&str>,
    ) -> Vec<String> {
        match explicit {
            None => self.homes(from),
            Some(ns) => {
                let mut namespaces = vec![ns.to_string()];
                if from.namespace() == Some(ns)
                    && let Some(app) = &self.app_namespace
                    && app != ns
                {
                    namespaces.push(app.clone());
                }
                namespaces
            }
        }
    }

    /// Whether `target` can be found from a reference into `namespaces`.
    pub(crate) fn lives_in(&self, target: &Document, namespaces: &[String]) -> bool {
        self.homes(target).iter().any(|ns| namespaces.contains(ns))
    }

    /// The workloads whose pods a Service with this selector would select.
    pub(crate) fn selected_workloads(
        &self,
        service: &Document,
        selector: &BTreeMap<String, String>,
    ) -> Vec<&Workload<'a>> {
        if selector.is_empty() {
            return Vec::new();
        }
        let homes = self.homes(service);
        self.workloads
            .iter()
            .filter(|w| self.lives_in(w.doc, &homes))
            .filter(|w| {
                let labels = w.labels();
                selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect()
    }
}

/// The kind cluster's own configuration: not applied to the cluster, nothing to wire.
fn is_cluster_configuration(doc: &Document) -> bool {
    doc.api_version().starts_with("kind.x-k8s.io/")
}

fn other_workload<'a>(doc: &'a Document, kind: &str) -> Option<Workload<'a>> {
    let (template_path, pointer) = match kind {
        "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "ReplicationController" => {
            ("spec.template", "/spec/template")
        }
        "CronJob" => (
            "spec.jobTemplate.spec.template",
            "/spec/jobTemplate/spec/template",
        ),
        "Pod" => ("", ""),
        _ => return None,
    };
    let template_json = if pointer.is_empty() {
        serde_json::json!({
            "metadata": doc.raw.get("metadata").cloned().unwrap_or(Value::Null),
            "spec": doc.raw.get("spec").cloned().unwrap_or(Value::Null),
        })
    } else {
        doc.raw.pointer(pointer)?.clone()
    };
    let template: PodTemplateSpec = serde_json::from_value(template_json).ok()?;
    let selector = match kind {
        "Pod" | "Job" | "CronJob" | "ReplicationController" => None,
        _ => doc
            .raw
            .pointer("/spec/selector")
            .and_then(|s| serde_json::from_value(s.clone()).ok()),
    };
    Some(Workload {
        doc,
        selector,
        template,
        template_path,
    })
}

fn service_entry(doc: &Document) -> (&Document, Vec<String>, Vec<i64>) {
    let strings = |pointer: &str| -> Vec<String> {
        doc.raw
            .pointer(pointer)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let ports = doc
        .raw
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| p.get("number").and_then(Value::as_i64))
                .collect()
        })
        .unwrap_or_default();
    (doc, strings("/spec/hosts"), ports)
}
