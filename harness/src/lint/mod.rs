//! The tutorial's wiring rules, checked offline over the loaded manifests.
//!
//! A wrong name or port does not fail `kubectl apply`: it fails later, silently, as a 404 or 503 at
//! the gateway. Each rule here catches one such mistake before any cluster exists and says which
//! file, resource and field to change.
//!
//! Each rule reports only its own problem: a check that depends on another resource being right
//! (a Service's target port needs the Service to select some pods first) stays quiet when that
//! other resource is wrong, because the rule that owns that resource already reports it.

mod inventory;
mod istio_annotations;
mod locate;
mod rules;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::manifest::{self, Document, LoadError};

/// A wiring rule, named by a stable id (what findings, tests and scripts refer to).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    SingleNamespace,
    DeploymentSelector,
    ServiceSelector,
    ServiceTargetPort,
    VsDestinationHost,
    VsDestinationPort,
    VsGatewayRef,
    GatewaySelector,
    GatewayPort,
    SidecarInjection,
    PrometheusAnnotations,
    ImagePull,
    KindPortMapping,
    VsGatewayHost,
    VsUnreachableMatch,
    VsInvalidRegex,
    GatewayConflict,
    IstioAnnotation,
    VsRouteWeights,
    VsWeightSum,
    VsInvalidRoute,
}

impl Rule {
    pub const ALL: [Rule; 21] = [
        Rule::SingleNamespace,
        Rule::DeploymentSelector,
        Rule::ServiceSelector,
        Rule::ServiceTargetPort,
        Rule::VsDestinationHost,
        Rule::VsDestinationPort,
        Rule::VsGatewayRef,
        Rule::GatewaySelector,
        Rule::GatewayPort,
        Rule::SidecarInjection,
        Rule::PrometheusAnnotations,
        Rule::ImagePull,
        Rule::KindPortMapping,
        Rule::VsGatewayHost,
        Rule::VsUnreachableMatch,
        Rule::VsInvalidRegex,
        Rule::GatewayConflict,
        Rule::IstioAnnotation,
        Rule::VsRouteWeights,
        Rule::VsWeightSum,
        Rule::VsInvalidRoute,
    ];

    pub(crate) fn id(self) -> &'static str {
        match self {
            Rule::SingleNamespace => "single-namespace",
            Rule::DeploymentSelector => "deployment-selector",
            Rule::ServiceSelector => "service-selector",
            Rule::ServiceTargetPort => "service-target-port",
            Rule::VsDestinationHost => "vs-destination-host",
            Rule::VsDestinationPort => "vs-destination-port",
            Rule::VsGatewayRef => "vs-gateway-ref",
            Rule::GatewaySelector => "gateway-selector",
            Rule::GatewayPort => "gateway-port",
            Rule::SidecarInjection => "sidecar-injection",
            Rule::PrometheusAnnotations => "prometheus-annotations",
            Rule::ImagePull => "image-pull",
            Rule::KindPortMapping => "kind-port-mapping",
            Rule::VsGatewayHost => "vs-gateway-host",
            Rule::VsUnreachableMatch => "vs-unreachable-match",
            Rule::VsInvalidRegex => "vs-invalid-regex",
            Rule::GatewayConflict => "gateway-conflict",
            Rule::IstioAnnotation => "istio-annotation",
            Rule::VsRouteWeights => "vs-route-weights",
            Rule::VsWeightSum => "vs-weight-sum",
            Rule::VsInvalidRoute => "vs-invalid-route",
        }
    }
}

/// How much a finding matters. Ours, not `istioctl analyze`'s: what makes requests through the
/// gateway fail (a 404, a 503, a pod without its sidecar) is an error and fails the lint; what
/// only weakens something else (metrics not scraped) is a warning, printed but not failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

impl Rule {
    /// Whether breaking this rule makes requests fail ([`Severity::Error`]) or not.
    pub fn severity(self) -> Severity {
        match self {
            // Requests are served: only Prometheus misses the metrics, a route is never used
            // (an earlier one serves its requests), an annotation is ignored.
            // Weights that do not add up to 100 still split traffic, in proportion.
            Rule::PrometheusAnnotations
            | Rule::VsUnreachableMatch
            | Rule::IstioAnnotation
            | Rule::VsWeightSum => Severity::Warning,
            _ => Severity::Error,
        }
    }

    /// What the rule checks, in one line (for SARIF's rule descriptions and the docs).
    pub(crate) fn summary(self) -> &'static str {
        match self {
            Rule::SingleNamespace => "the app's resources live in one namespace",
            Rule::DeploymentSelector => "the Deployment's selector matches its pod template",
            Rule::ServiceSelector => "the Service selects the Deployment's pods",
            Rule::ServiceTargetPort => {
                "the Service's targetPort is a port the container listens on"
            }
            Rule::VsDestinationHost => "every VirtualService destination host is a Service",
            Rule::VsDestinationPort => {
                "every VirtualService destination port is a port of that Service"
            }
            Rule::VsGatewayRef => "the VirtualService's gateways exist",
            Rule::GatewaySelector => "the Gateway selects the ingress gateway's pods",
            Rule::GatewayPort => "the Gateway's server port is one the ingress gateway serves",
            Rule::SidecarInjection => "the app's namespace gets Istio's sidecar",
            Rule::PrometheusAnnotations => "the pod template keeps the scrape annotations",
            Rule::ImagePull => "the image can be had where the pods run",
            Rule::KindPortMapping => "kind publishes the gateway's nodePort on the host",
            Rule::VsGatewayHost => "the VirtualService's hosts bind to its Gateway's server hosts",
            Rule::VsUnreachableMatch => {
                "every http match can be reached (no earlier catch-all, duplicate or covering prefix)"
            }
            Rule::VsInvalidRegex => "every regex is RE2 syntax within Istio's length limit",
            Rule::GatewayConflict => "no two Gateways claim the same pods, port and host",
            Rule::IstioAnnotation => {
                "Istio annotations are known, on the right kind, not deprecated"
            }
            Rule::VsRouteWeights => {
                "no destination weight is negative and several destinations weigh more than 0"
            }
            Rule::VsWeightSum => "the weights of several destinations add up to 100",
            Rule::VsInvalidRoute => {
                "no http rule has what Istio's webhook rejects (conflicting actions, empty matches, bad retries, durations, redirects, percentages)"
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl std::str::FromStr for Rule {
    type Err = String;
    fn from_str(id: &str) -> Result<Self, String> {
        Rule::ALL
            .into_iter()
            .find(|rule| rule.id() == id)
            .ok_or_else(|| format!("no lint rule is called `{id}`"))
    }
}

/// One broken rule: where, what and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error(
    "{rule} {}:{line} {kind}/{}: {message} — fix: {fix}{}",
    file.display(),
    if name.is_empty() { "(unnamed)" } else { name },
    if *severity == Severity::Warning { " (warning: requests still work)" } else { "" }
)]
pub struct Finding {
    pub rule: Rule,
    pub severity: Severity,
    pub file: PathBuf,
    /// 1-based line of the field when the file was read by [`lint_paths`], else of the start of
    /// the resource's document.
    pub line: usize,
    /// 1-based position of the document in its file.
    pub document: usize,
    pub kind: String,
    pub name: String,
    /// The field at fault, as a path into the resource (`spec.ports[0].targetPort`).
    pub field: String,
    pub message: String,
    pub fix: String,
}

impl Finding {
    fn at(rule: Rule, doc: &Document, field: impl Into<String>) -> FindingBuilder {
        FindingBuilder {
            rule,
            doc_file: doc.file.clone(),
            line: doc.line,
            document: doc.index,
            kind: doc.kind().to_string(),
            name: doc.name().to_string(),
            field: field.into(),
            severity: rule.severity(),
        }
    }
}

/// A finding that still needs its message and fix; keeps rule code to one expression per finding.
struct FindingBuilder {
    rule: Rule,
    doc_file: PathBuf,
    line: usize,
    document: usize,
    kind: String,
    name: String,
    field: String,
    severity: Severity,
}

impl FindingBuilder {
    /// A finding of a rule that is usually an error, this time only advisory (requests work).
    fn advisory(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    fn says(self, message: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            rule: self.rule,
            severity: self.severity,
            file: self.doc_file,
            line: self.line,
            document: self.document,
            kind: self.kind,
            name: self.name,
            field: self.field,
            message: message.into(),
            fix: fix.into(),
        }
    }
}

/// The outcome of linting a set of files.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Files read.
    pub files: usize,
    /// Application resources checked (install and cluster configuration are not counted).
    pub resources: usize,
    /// Rules applied.
    pub rules: usize,
    /// Where the ingress gateway's labels and ports were taken from.
    pub ingress_source: String,
    pub findings: Vec<Finding>,
}

impl Report {
    /// No finding at all, not even a warning.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// Whether a finding makes requests fail: what the lint's exit status reports.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// The distinct rules broken, in rule order.
    pub fn rules_broken(&self) -> Vec<Rule> {
        let mut rules: Vec<Rule> = self.findings.iter().map(|f| f.rule).collect();
        rules.sort();
        rules.dedup();
        rules
    }
}

/// Why linting could not run at all (as opposed to running and finding problems).
#[derive(Debug, thiserror::Error)]
pub enum LintError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{}: no *.yaml or *.yml files in this directory", dir.display())]
    EmptyDirectory { dir: PathBuf },
    #[error("cannot list {}: {source}", dir.display())]
    ListDirectory {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Lints already loaded documents (from any number of files).
pub fn lint_documents(documents: &[Document]) -> Report {
    let inventory = inventory::Inventory::new(documents);
    let mut findings = rules::check_all(&inventory);
    findings.sort_by(|a, b| {
        (&a.file, a.document, a.rule, &a.field).cmp(&(&b.file, b.document, b.rule, &b.field))
    });
    let mut files: Vec<&Path> = documents.iter().map(|d| d.file.as_path()).collect();
    files.sort();
    files.dedup();
    Report {
        files: files.len(),
        resources: inventory.app_resource_count(),
        rules: Rule::ALL.len(),
        ingress_source: inventory.ingress.source.clone(),
        findings,
    }
}

/// The manifest files behind `paths`: files as given, directories as their `*.yaml`/`*.yml`
/// files in name order.
pub(crate) fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LintError> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|source| LintError::ListDirectory {
            dir: path.clone(),
            source,
        })?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
            })
            .collect();
        if found.is_empty() {
            return Err(LintError::EmptyDirectory { dir: path.clone() });
        }
        found.sort();
        files.append(&mut found);
    }
    // The same file named twice (`manifests/ manifests/app.yaml`) would report everything twice.
    let mut seen = std::collections::HashSet::new();
    files.retain(|file| seen.insert(file.clone()));
    Ok(files)
}

/// Loads and lints files and directories (see [`expand_paths`]).
pub fn lint_paths(paths: &[PathBuf]) -> Result<Report, LintError> {
    let mut documents = Vec::new();
    let mut texts = Vec::new();
    let files = expand_paths(paths)?;
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|source| LoadError::Read {
            file: file.clone(),
            source,
        })?;
        documents.extend(manifest::load_str(file, &text)?);
        texts.push((file, text));
    }
    let mut report = lint_documents(&documents);
    // A file with no documents is still a file that was read.
    report.files = files.len();
    for finding in &mut report.findings {
        let Some((_, text)) = texts.iter().find(|(file, _)| **file == finding.file) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        let next_document = documents
            .iter()
            .filter(|d| d.file == finding.file && d.line > finding.line)
            .map(|d| d.line - 1)
            .min()
            .unwrap_or(lines.len());
        finding.line =
            locate::field_line(&lines, finding.line - 1, next_document, &finding.field) + 1;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resource_without_a_name_reads_as_unnamed() {
        let finding = Finding {
            rule: Rule::KindPortMapping,
            severity: Severity::Error,
            file: PathBuf::from("kind.yaml"),
            line: 12,
            document: 1,
            kind: "Cluster".into(),
            name: String::new(),
            field: "nodes[0].extraPortMappings".into(),
            message: "not published".into(),
            fix: "publish it".into(),
        };
        assert_eq!(
            finding.to_string(),
            "kind-port-mapping kind.yaml:12 Cluster/(unnamed): not published — fix: publish it"
        );
    }
}
