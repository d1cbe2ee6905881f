//! `deployment-selector`, `prometheus-annotations` and `image-pull`: rules about one workload.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::super::inventory::{Inventory, Workload};
use super::super::{Finding, Rule};
use super::{describe_labels, yaml_labels};

const SCRAPE: &str = "prometheus.io/scrape";
const PORT: &str = "prometheus.io/port";
const PATH: &str = "prometheus.io/path";

pub(crate) fn deployment_selector(inv: &Inventory, findings: &mut Vec<Finding>) {
    for workload in &inv.workloads {
        let Some(selector) = &workload.selector else {
            // Pods and Jobs have no selector to get wrong.
            if workload.doc.kind() == "Deployment" {
                findings.push(missing_selector(workload));
            }
            continue;
        };
        let labels = workload.labels();
        let has_terms = selector
            .match_labels
            .as_ref()
            .is_some_and(|m| !m.is_empty())
            || selector
                .match_expressions
                .as_ref()
                .is_some_and(|e| !e.is_empty());
        if !has_terms {
            findings.push(missing_selector(workload));
        } else if let Err(why) = selector_matches(selector, &labels) {
            findings.push(
                Finding::at(Rule::DeploymentSelector, workload.doc, "spec.selector").says(
                    format!(
                        "spec.selector does not match the pod template's labels ({}): {why}",
                        describe_labels(&labels)
                    ),
                    format!(
                        "make spec.selector.matchLabels a subset of spec.template.metadata.labels, e.g. matchLabels: {}",
                        yaml_labels(&labels)
                    ),
                ),
            );
        }
    }
}

fn missing_selector(workload: &Workload) -> Finding {
    let labels = workload.labels();
    Finding::at(Rule::DeploymentSelector, workload.doc, "spec.selector").says(
        "has no spec.selector.matchLabels: apps/v1 requires a selector that matches the pod template",
        format!("add spec.selector.matchLabels: {}", yaml_labels(&labels)),
    )
}

/// Why `selector` does not select `labels`, if it does not.
fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Result<(), String> {
    for (key, want) in selector.match_labels.iter().flatten() {
        match labels.get(key) {
            Some(have) if have == want => {}
            Some(have) => {
                return Err(format!(
                    "matchLabels {key}={want}, the template has {key}={have}"
                ));
            }
            None => {
                return Err(format!(
                    "matchLabels {key}={want}, the template has no label {key}"
                ));
            }
        }
    }
    for requirement in selector.match_expressions.iter().flatten() {
        let key = &requirement.key;
        let values = requirement.values.clone().unwrap_or_default();
        let have = labels.get(key);
        let ok = match requirement.operator.as_str() {
            "In" => have.is_some_and(|v| values.contains(v)),
            "NotIn" => have.is_none_or(|v| !values.contains(v)),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            other => {
                return Err(format!(
                    "matchExpressions operator {other} is not one of In, NotIn, Exists, DoesNotExist"
                ));
            }
        };
        if !ok {
            return Err(format!(
                "matchExpressions {key} {} {values:?} is not met",
                requirement.operator
            ));
        }
    }
    Ok(())
}

pub(crate) fn prometheus_annotations(inv: &Inventory, findings: &mut Vec<Finding>) {
    for workload in &inv.workloads {
        let annotations = workload.annotations();
        let (scrape, port, path) = (
            annotations.get(SCRAPE),
            annotations.get(PORT),
            annotations.get(PATH),
        );
        let field = |key: &str| workload.field(&format!("metadata.annotations[{key}]"));
        // The app's metrics are part of what the tutorial exposes: a pod without the annotations
        // is never scraped, and Istio has nothing to merge into its 15020 endpoint.
        if scrape.is_none() && port.is_none() && path.is_none() {
            let port = workload
                .container_ports()
                .first()
                .map_or_else(|| "<containerPort>".to_string(), |(p, _)| p.to_string());
            findings.push(
                Finding::at(
                    Rule::PrometheusAnnotations,
                    workload.doc,
                    workload.field("metadata.annotations"),
                )
                .says(
                    "the pod template has no prometheus.io annotations, so Prometheus never scrapes the app",
                    format!(
                        "add pod template annotations {SCRAPE}: \"true\", {PORT}: \"{port}\", {PATH}: \"/metrics\""
                    ),
                ),
            );
            continue;
        }
        match scrape.map(String::as_str) {
            Some("true") => {}
            Some(other) => findings.push(
                Finding::at(Rule::PrometheusAnnotations, workload.doc, field(SCRAPE)).says(
                    format!(
                        "{SCRAPE} is \"{other}\": Prometheus scrapes only pods that say \"true\""
                    ),
                    format!("set {SCRAPE}: \"true\""),
                ),
            ),
            None => findings.push(
                Finding::at(Rule::PrometheusAnnotations, workload.doc, field(SCRAPE)).says(
                    format!(
                        "sets {} but not {SCRAPE}, so the pod is never scraped",
                        if port.is_some() { PORT } else { PATH }
                    ),
                    format!("add {SCRAPE}: \"true\""),
                ),
            ),
        }
        if let Some(port) = port {
            let ports = workload.container_ports();
            let declared = port
                .trim()
                .parse::<i32>()
                .is_ok_and(|number| ports.iter().any(|(p, _)| *p == number));
            if !declared {
                let fix = match ports.first() {
                    Some((first, _)) => {
                        format!("set {PORT}: \"{first}\" (the port the app serves /metrics on)")
                    }
                    None => {
                        format!("declare the metrics port as a containerPort and name it in {PORT}")
                    }
                };
                findings.push(
                    Finding::at(Rule::PrometheusAnnotations, workload.doc, field(PORT)).says(
                        format!(
                            "{PORT} is \"{port}\", which is not a containerPort of the pod (containerPorts: {})",
                            workload.describe_container_ports()
                        ),
                        fix,
                    ),
                );
            }
        }
        if let Some(path) = path
            && !path.starts_with('/')
        {
            findings.push(
                Finding::at(Rule::PrometheusAnnotations, workload.doc, field(PATH)).says(
                    format!("{PATH} is \"{path}\": a scrape path must start with /"),
                    format!("set {PATH}: \"/{}\"", path.trim_start_matches('/')),
                ),
            );
        }
    }
}

pub(crate) fn image_pull(inv: &Inventory, findings: &mut Vec<Finding>) {
    for workload in &inv.workloads {
        let Some(spec) = &workload.template.spec else {
            continue;
        };
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, c)| (format!("spec.initContainers[{i}]"), c))
            .chain(
                spec.containers
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (format!("spec.containers[{i}]"), c)),
            );
        for (path, container) in containers {
            let Some(image) = container.image.as_deref() else {
                continue;
            };
            let policy = container.image_pull_policy.as_deref();
            let tag = ImageTag::of(image);
            let mut problems = Vec::new();
            match tag {
                ImageTag::Digest | ImageTag::Tag(_) => {}
                ImageTag::Latest => problems.push(format!(
                    "image {image} is tagged :latest, which names no particular build"
                )),
                ImageTag::Untagged => {
                    problems.push(format!("image {image} has no tag, which means :latest"))
                }
            }
            match policy {
                Some("Always") => {
                    problems.push("imagePullPolicy is Always, so the node pulls from a registry instead of using the loaded image".into())
                }
                None if matches!(tag, ImageTag::Latest | ImageTag::Untagged) => problems.push(
                    "with :latest imagePullPolicy defaults to Always, so the node pulls from a registry instead of using the loaded image".into(),
                ),
                _ => {}
            }
            if problems.is_empty() {
                continue;
            }
            let field = if matches!(tag, ImageTag::Digest | ImageTag::Tag(_)) {
                format!("{path}.imagePullPolicy")
            } else {
                format!("{path}.image")
            };
            let name = container.name.as_str();
            findings.push(
                Finding::at(Rule::ImagePull, workload.doc, workload.field(&field)).says(
                    format!("container {name}: {}", problems.join("; ")),
                    "tag the image by content (e.g. fft-service:3f2a9c1d), `kind load docker-image` that tag, and set imagePullPolicy: IfNotPresent (or Never)",
                ),
            );
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ImageTag<'a> {
    Tag(&'a str),
    Latest,
    Untagged,
    /// Pinned by digest: the same image whatever the tag says.
    Digest,
}

impl<'a> ImageTag<'a> {
    fn of(image: &'a str) -> Self {
        if image.contains('@') {
            return ImageTag::Digest;
        }
        // A colon before the last slash belongs to a registry host (`localhost:5000/app`).
        let last_segment = image.rsplit('/').next().unwrap_or(image);
        match last_segment.split_once(':') {
            Some((_, "latest")) => ImageTag::Latest,
            Some((_, "")) | None => ImageTag::Untagged,
            Some((_, tag)) => ImageTag::Tag(tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ImageTag;

    #[test]
    fn image_tags() {
        assert_eq!(ImageTag::of("fft-service:0.1.0"), ImageTag::Tag("0.1.0"));
        assert_eq!(ImageTag::of("localhost:5000/fft"), ImageTag::Untagged);
        assert_eq!(ImageTag::of("localhost:5000/fft:1"), ImageTag::Tag("1"));
        assert_eq!(ImageTag::of("fft"), ImageTag::Untagged);
        assert_eq!(ImageTag::of("a/b/fft:latest"), ImageTag::Latest);
        assert_eq!(ImageTag::of("fft@sha256:abcd"), ImageTag::Digest);
    }
}
