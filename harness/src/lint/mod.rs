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
}

impl Rule {
    pub const ALL: [Rule; 13] = [
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
    "{rule} {}:{line} {kind}/{}: {message} — fix: {fix}",
    file.display(),
    if name.is_empty() { "(unnamed)" } else { name }
)]
pub struct Finding {
    pub rule: Rule,
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
}

impl FindingBuilder {
    fn says(self, message: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            rule: self.rule,
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
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
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
