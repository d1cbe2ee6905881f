//! `single-namespace` and `sidecar-injection`: where the app lives, and that Istio injects there.

use super::super::inventory::Inventory;
use super::super::{Finding, Rule};

const INJECTION_LABEL: &str = "istio-injection";
const REVISION_LABEL: &str = "istio.io/rev";
const POD_INJECT_KEY: &str = "sidecar.istio.io/inject";

pub(crate) fn single_namespace(inv: &Inventory, findings: &mut Vec<Finding>) {
    let Some(app_ns) = inv.app_namespace.as_deref() else {
        return;
    };
    let declared = inv.namespaces.iter().any(|(doc, _)| doc.name() == app_ns);
    if !declared {
        let used: Vec<&str> = inv.namespaced().filter_map(|d| d.namespace()).collect();
        // A Namespace that nothing lives in is most likely the app's, misspelt.
        if let Some((doc, _)) = inv
            .namespaces
            .iter()
            .find(|(doc, _)| !used.contains(&doc.name()))
        {
            findings.push(
                Finding::at(Rule::SingleNamespace, doc, "metadata.name").says(
                    format!(
                        "declares namespace {}, but the resources are in {app_ns}",
                        doc.name()
                    ),
                    format!(
                        "rename the Namespace to {app_ns} (or move the resources to {})",
                        doc.name()
                    ),
                ),
            );
        } else if let Some(first) = inv.namespaced().find(|d| d.namespace() == Some(app_ns)) {
            findings.push(
                Finding::at(Rule::SingleNamespace, first, "metadata.namespace").says(
                    format!("namespace {app_ns} is not declared by any Namespace document"),
                    format!(
                        "add a Namespace document named {app_ns} (labelled {INJECTION_LABEL}: enabled) before the other resources"
                    ),
                ),
            );
        }
    }
    for doc in inv.namespaced() {
        match doc.namespace() {
            None => findings.push(
                Finding::at(Rule::SingleNamespace, doc, "metadata.namespace").says(
                    format!(
                        "has no metadata.namespace, so kubectl puts it in the current context's namespace instead of {app_ns}"
                    ),
                    format!("add `namespace: {app_ns}` under metadata"),
                ),
            ),
            Some(ns) if ns != app_ns => findings.push(
                Finding::at(Rule::SingleNamespace, doc, "metadata.namespace").says(
                    format!("is in namespace {ns}, but the other resources are in {app_ns}"),
                    format!("set metadata.namespace to {app_ns}"),
                ),
            ),
            Some(_) => {}
        }
    }
}

pub(crate) fn sidecar_injection(inv: &Inventory, findings: &mut Vec<Finding>) {
    for (doc, ns) in &inv.namespaces {
        let name = doc.name();
        let workloads: Vec<_> = inv
            .workloads
            .iter()
            .filter(|w| inv.homes(w.doc).iter().any(|home| home == name))
            .collect();
        // A Namespace that runs no pods needs no sidecars, unless it is the app's.
        if workloads.is_empty() && inv.app_namespace.as_deref() != Some(name) {
            continue;
        }
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        let injection = labels.get(INJECTION_LABEL).map(String::as_str);
        let revision = labels.get(REVISION_LABEL).filter(|r| !r.is_empty());
        // The default injector selects `istio-injection=enabled`; a revision's injector selects
        // `istio.io/rev` only where `istio-injection` is absent.
        let enabled = injection == Some("enabled") || (injection.is_none() && revision.is_some());
        // Without the namespace label, a pod can still opt in with its own label.
        let pods_opt_in = injection.is_none()
            && !workloads.is_empty()
            && workloads
                .iter()
                .all(|w| w.labels().get(POD_INJECT_KEY).map(String::as_str) == Some("true"));
        if enabled || pods_opt_in {
            continue;
        }
        let message = match (injection, revision) {
            (Some(value), Some(rev)) => format!(
                "is labelled {INJECTION_LABEL}={value}, which overrides {REVISION_LABEL}={rev}: pods start without the Envoy sidecar"
            ),
            (Some(value), None) => format!(
                "is labelled {INJECTION_LABEL}={value}, not enabled: pods start without the Envoy sidecar"
            ),
            (None, _) => format!(
                "has neither {INJECTION_LABEL}=enabled nor {REVISION_LABEL}: pods start without the Envoy sidecar"
            ),
        };
        findings.push(Finding::at(Rule::SidecarInjection, doc, "metadata.labels").says(
            message,
            format!("set metadata.labels `{INJECTION_LABEL}: enabled` (or `{REVISION_LABEL}: <revision>` without {INJECTION_LABEL})"),
        ));
    }
    for workload in &inv.workloads {
        pod_injection(workload, findings);
    }
}

/// A pod template's own `sidecar.istio.io/inject`, read as the injector reads it
/// (`injectRequired`, pkg/kube/inject/inject.go): the label wins over the (deprecated)
/// annotation; `"false"` keeps the sidecar out whatever the namespace says; `"true"` and an
/// empty value leave it to the namespace; anything else is ignored with a warning in istiod's log
/// and the namespace decides.
fn pod_injection(workload: &super::super::inventory::Workload, findings: &mut Vec<Finding>) {
    let labels = workload.labels();
    let annotations = workload.annotations();
    let (field, value) = match (labels.get(POD_INJECT_KEY), annotations.get(POD_INJECT_KEY)) {
        (Some(value), _) => ("metadata.labels", value),
        (None, Some(value)) => ("metadata.annotations", value),
        (None, None) => return,
    };
    let at = || {
        Finding::at(
            Rule::SidecarInjection,
            workload.doc,
            workload.field(&format!("{field}[{POD_INJECT_KEY}]")),
        )
    };
    match value.as_str() {
        "true" | "" => {}
        "false" => findings.push(at().says(
            format!("the pod template sets {POD_INJECT_KEY}: \"false\" in its {field}, so its pods get no sidecar whatever the namespace says"),
            format!("remove {POD_INJECT_KEY} from the pod template's {field}"),
        )),
        other => findings.push(at().advisory().says(
            format!("{POD_INJECT_KEY}: {other:?} is neither \"true\" nor \"false\": the injector ignores it (logging a warning) and the namespace decides"),
            format!("write \"true\" or \"false\", or remove {POD_INJECT_KEY}"),
        )),
    }
}
