//! `istio-annotation` (warnings: an annotation Istio does not know, or knows for another kind of
//! resource, is ignored; requests still work): every annotation whose key's prefix ends in
//! `istio.io` on a Namespace, Service, Deployment, pod template, Gateway or VirtualService must be
//! one Istio defines, for that kind, and not deprecated. The same as `istioctl analyze`'s IST0108
//! UnknownAnnotation, IST0107 MisplacedAnnotation and IST0135 DeprecatedAnnotation
//! (`K8sAnalyzer`, pkg/config/analysis/analyzers/annotations/annotations.go), except that the
//! pod template is checked as the Pod its pods will be; a misspelling gets the closest known
//! name as its fix.

use std::collections::BTreeMap;

use super::super::inventory::Inventory;
use super::super::istio_annotations::{KNOWN, KnownAnnotation};
use super::super::{Finding, Rule};
use crate::manifest::Document;

/// Keys the analyzer never reports (`maturity.AlwaysIgnoredAnnotations`): written by Istio itself.
const ALWAYS_IGNORED: [&str; 3] = [
    "sidecar.istio.io/status",
    "gateway.istio.io/controller-version",
    "istio.io/rev",
];

pub(crate) fn known(inv: &Inventory, findings: &mut Vec<Finding>) {
    let mut places: Vec<(&Document, &str, String, BTreeMap<String, String>)> = Vec::new();
    let metadata = |doc: &Document| -> BTreeMap<String, String> {
        doc.raw
            .pointer("/metadata/annotations")
            .and_then(|a| serde_json::from_value(a.clone()).ok())
            .unwrap_or_default()
    };
    for (doc, _) in &inv.namespaces {
        places.push((
            doc,
            "Namespace",
            "metadata.annotations".into(),
            metadata(doc),
        ));
    }
    for (doc, _) in &inv.services {
        places.push((doc, "Service", "metadata.annotations".into(), metadata(doc)));
    }
    for (doc, _) in &inv.gateways {
        places.push((doc, "Gateway", "metadata.annotations".into(), metadata(doc)));
    }
    for (doc, _) in &inv.virtual_services {
        places.push((
            doc,
            "VirtualService",
            "metadata.annotations".into(),
            metadata(doc),
        ));
    }
    for workload in &inv.workloads {
        places.push((
            workload.doc,
            workload.doc.kind(),
            "metadata.annotations".into(),
            metadata(workload.doc),
        ));
        places.push((
            workload.doc,
            "Pod",
            workload.field("metadata.annotations"),
            workload.annotations(),
        ));
    }
    for (doc, kind, field, annotations) in places {
        for key in annotations.keys() {
            let istio = key
                .split_once('/')
                .is_some_and(|(prefix, _)| prefix.ends_with("istio.io"));
            if !istio || ALWAYS_IGNORED.contains(&key.as_str()) {
                continue;
            }
            let at = || Finding::at(Rule::IstioAnnotation, doc, format!("{field}[{key}]"));
            match KNOWN.iter().find(|a| a.name == key) {
                None => findings.push(at().says(
                    format!("{key} is not an annotation Istio knows, so it is ignored"),
                    match closest(key) {
                        Some(name) => format!("did you mean {name}? (or remove it)"),
                        None => "remove it, or correct it to an annotation of istio.io/api's annotations.yaml".into(),
                    },
                )),
                Some(known) if !applies_to(known, kind) => findings.push(at().says(
                    format!("{key} applies to {}, not to a {kind}, so it has no effect here", known.resources.join(", ")),
                    if known.resources.contains(&"Pod") && kind != "Pod" {
                        "move it to the pod template's metadata.annotations".to_string()
                    } else {
                        format!("set it on a {} instead", known.resources.join(" or "))
                    },
                )),
                Some(known) if known.deprecated => findings.push(at().says(
                    format!("{key} is deprecated"),
                    if key == "sidecar.istio.io/inject" {
                        "use the label sidecar.istio.io/inject (metadata.labels) instead".to_string()
                    } else {
                        "remove it; see Istio's annotation reference for what replaced it".to_string()
                    },
                )),
                Some(_) => {}
            }
        }
    }
}

fn applies_to(known: &KnownAnnotation, kind: &str) -> bool {
    known.resources.iter().any(|r| *r == "Any" || *r == kind)
}

/// The known annotation closest to a misspelled key, if one is close (a few edits).
fn closest(key: &str) -> Option<&'static str> {
    KNOWN
        .iter()
        .map(|a| (strsim::levenshtein(key, a.name), a.name))
        .filter(|(distance, _)| *distance <= 3)
        .min()
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelling_suggests_the_known_name() {
        assert_eq!(
            closest("sidecar.istio.io/injet"),
            Some("sidecar.istio.io/inject")
        );
        assert_eq!(
            closest("sidecar.istio.io/proxyCpu"),
            Some("sidecar.istio.io/proxyCPU")
        );
        assert_eq!(closest("example.istio.io/something-else-entirely"), None);
    }

    #[test]
    fn the_known_list_is_istios() {
        let inject = KNOWN
            .iter()
            .find(|a| a.name == "sidecar.istio.io/inject")
            .unwrap();
        assert!(inject.deprecated && inject.resources == ["Pod"]);
        assert!(applies_to(
            KNOWN
                .iter()
                .find(|a| a.name == "networking.istio.io/exportTo")
                .unwrap(),
            "Service"
        ));
    }
}
