//! Loading multi-document YAML manifests into typed objects.
//!
//! Core kinds become k8s-openapi types; Istio's `Gateway` and `VirtualService` become the strict
//! types of [`istio`]. Every document keeps its file, its position in the file and its raw JSON
//! (what is applied to a cluster), so any later finding can point at the exact place.

pub(crate) mod hosts;
pub(crate) mod install;
pub(crate) mod kind_config;
pub(crate) mod validation;

pub(crate) mod istio;

use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub(crate) use istio::{Gateway, VirtualService};

/// Why a manifest file could not be loaded. Each variant names the file; parse errors also the
/// line, so an editor can jump to it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `line` is where the parser stopped when it says so, else where the document starts.
    #[error("{file}:{line}: document {document}: {message}", file = file.display())]
    Parse {
        file: PathBuf,
        document: usize,
        line: usize,
        message: String,
    },
}

/// One resource of a manifest file.
#[derive(Clone, Debug)]
pub(crate) enum Resource {
    Namespace(Box<Namespace>),
    Service(Box<Service>),
    Deployment(Box<Deployment>),
    Gateway(Box<Gateway>),
    VirtualService(Box<VirtualService>),
    /// A kind nothing here interprets (it is still applied as it is).
    Other {
        kind: String,
    },
}

/// A resource with where it came from.
#[derive(Clone, Debug)]
pub struct Document {
    pub file: PathBuf,
    /// 1-based position among the non-empty documents of the file.
    pub index: usize,
    /// 1-based line where the document starts.
    pub line: usize,
    pub(crate) resource: Resource,
    /// The document as JSON, exactly as written.
    pub raw: Value,
}

impl Document {
    pub(crate) fn kind(&self) -> &str {
        self.raw.get("kind").and_then(Value::as_str).unwrap_or("")
    }

    pub(crate) fn api_version(&self) -> &str {
        self.raw
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub(crate) fn name(&self) -> &str {
        self.raw
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// The namespace written in the document, if any.
    pub(crate) fn namespace(&self) -> Option<&str> {
        self.raw
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
    }
}

/// `Kind name`, the way people say it.
impl fmt::Display for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind(), self.name())
    }
}

/// Loads every document of one file.
pub fn load_file(path: &Path) -> Result<Vec<Document>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    load_str(path, &text)
}

/// Loads every document of `text`, reported as coming from `file`.
pub fn load_str(file: &Path, text: &str) -> Result<Vec<Document>, LoadError> {
    let mut documents = Vec::new();
    for (start_line, body) in split_documents(text) {
        // Padding with the lines before the document makes the YAML parser's own line numbers
        // those of the file.
        let padded = format!("{}{}", "\n".repeat(start_line - 1), body);
        let parse_error = |failure: ParseFailure| LoadError::Parse {
            file: file.to_path_buf(),
            document: documents.len() + 1,
            line: failure.line.unwrap_or(start_line),
            message: failure.message,
        };
        let raw: Value = serde_yaml_ng::from_str(&padded)
            .map_err(ParseFailure::from)
            .map_err(parse_error)?;
        if raw.is_null() {
            continue;
        }
        if !raw.is_object() {
            return Err(parse_error(ParseFailure::without_line(
                "a document must be a mapping with apiVersion, kind and metadata",
            )));
        }
        let resource = typed_resource(&raw, &padded).map_err(parse_error)?;
        documents.push(Document {
            file: file.to_path_buf(),
            index: documents.len() + 1,
            line: start_line,
            resource,
            raw,
        });
    }
    Ok(documents)
}

/// A document that does not parse, and the line the parser names (its positions are the file's,
/// thanks to the padding in [`load_str`]).
struct ParseFailure {
    message: String,
    line: Option<usize>,
}

impl ParseFailure {
    fn without_line(message: &str) -> Self {
        ParseFailure {
            message: message.to_string(),
            line: None,
        }
    }
}

impl From<serde_yaml_ng::Error> for ParseFailure {
    fn from(err: serde_yaml_ng::Error) -> Self {
        ParseFailure {
            line: err.location().map(|at| at.line()),
            message: err.to_string(),
        }
    }
}

fn typed_resource(raw: &Value, text: &str) -> Result<Resource, ParseFailure> {
    let field = |name: &str| raw.get(name).and_then(Value::as_str).unwrap_or("");
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version.is_empty() || kind.is_empty() {
        return Err(ParseFailure::without_line(
            "missing `apiVersion` or `kind`: every document needs both",
        ));
    }
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    Ok(match (group, kind) {
        ("", "Namespace") => Resource::Namespace(typed(text)?),
        ("", "Service") => Resource::Service(typed(text)?),
        ("apps", "Deployment") => Resource::Deployment(typed(text)?),
        (istio::API_GROUP, "Gateway") => Resource::Gateway(typed(text)?),
        (istio::API_GROUP, "VirtualService") => Resource::VirtualService(typed(text)?),
        _ => Resource::Other {
            kind: kind.to_string(),
        },
    })
}

fn typed<T: DeserializeOwned>(text: &str) -> Result<Box<T>, ParseFailure> {
    serde_yaml_ng::from_str(text).map_err(ParseFailure::from)
}

/// Splits a YAML stream at its document markers, giving each document's first line (1-based).
/// A `---` or `...` at the start of a line always ends a document in YAML, even inside a block
/// scalar, so this split is exact.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut documents = Vec::new();
    let mut current = String::new();
    let mut start_line = 1;
    for (number, line) in text.lines().enumerate() {
        let is_marker = |marker: &str| {
            line == marker
                || line.starts_with(&format!("{marker} "))
                || line.starts_with(&format!("{marker}\t"))
        };
        if is_marker("---") || is_marker("...") {
            documents.push((start_line, std::mem::take(&mut current)));
            // Content after `--- ` on the same line belongs to the next document.
            let rest = line[3..].trim_start();
            start_line = number + 1;
            if !rest.is_empty() && !rest.starts_with('#') && line.starts_with("---") {
                current.push_str(rest);
                current.push('\n');
            } else {
                start_line = number + 2;
            }
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    documents.push((start_line, current));
    documents
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_DOCS: &str = "\
# leading comment
apiVersion: v1
kind: Namespace
metadata:
  name: wty-istio
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: vs
  namespace: wty-istio
spec:
  hosts: ['*']
  gateway: [gw]
";

    #[test]
    fn unknown_istio_field_names_file_and_line() {
        let err = load_str(Path::new("app.yaml"), TWO_DOCS).unwrap_err();
        let text = err.to_string();
        // The position is the file's line of the typo, not the document's first line.
        assert!(text.starts_with("app.yaml:14: document 2:"), "{text}");
        assert!(text.contains("unknown field `gateway`"), "{text}");
    }

    #[test]
    fn loads_typed_documents_with_positions() {
        let fixed = TWO_DOCS.replace("gateway:", "gateways:");
        let docs = load_str(Path::new("app.yaml"), &fixed).unwrap();
        assert_eq!(docs.len(), 2);
        assert!(matches!(docs[0].resource, Resource::Namespace(_)));
        assert_eq!((docs[0].index, docs[0].line), (1, 1));
        let Resource::VirtualService(vs) = &docs[1].resource else {
            panic!("expected a VirtualService, got {:?}", docs[1].resource);
        };
        assert_eq!(vs.spec.gateways, vec!["gw"]);
        assert_eq!((docs[1].index, docs[1].line), (2, 7));
        assert_eq!(docs[1].to_string(), "VirtualService vs");
        assert_eq!(docs[1].namespace(), Some("wty-istio"));
    }

    #[test]
    fn empty_documents_are_skipped() {
        let docs = load_str(
            Path::new("x.yaml"),
            "---\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\n",
        )
        .unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].line, 3);
    }

    #[test]
    fn string_match_takes_at_most_one_key() {
        let vs = |uri: &str| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: v}}\nspec:\n  http:\n  - match:\n    - uri: {uri}\n"
            )
        };
        let docs = load_str(Path::new("v.yaml"), &vs("{prefix: /fft}")).unwrap();
        let Resource::VirtualService(parsed) = &docs[0].resource else {
            panic!("expected a VirtualService");
        };
        assert_eq!(
            parsed.spec.http[0].matches[0].uri,
            Some(istio::StringMatch::Prefix("/fft".into()))
        );
        let docs = load_str(Path::new("v.yaml"), &vs("{}")).unwrap();
        let Resource::VirtualService(parsed) = &docs[0].resource else {
            panic!("expected a VirtualService");
        };
        assert_eq!(
            parsed.spec.http[0].matches[0].uri,
            Some(istio::StringMatch::Any)
        );
        for bad in ["{prefix: /a, exact: /b}", "{prefx: /a}"] {
            assert!(
                load_str(Path::new("v.yaml"), &vs(bad)).is_err(),
                "{bad} was accepted"
            );
        }
    }

    #[test]
    fn missing_kind_is_an_error() {
        let err = load_str(Path::new("x.yaml"), "apiVersion: v1\nmetadata: {}\n").unwrap_err();
        assert!(err.to_string().contains("missing `apiVersion` or `kind`"));
    }

    #[test]
    fn other_kinds_load_untyped() {
        let docs = load_str(
            Path::new("x.yaml"),
            "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nspec: {profile: default}\n",
        )
        .unwrap();
        assert!(
            matches!(&docs[0].resource, Resource::Other { kind, .. } if kind == "IstioOperator")
        );
    }
}

#[cfg(test)]
mod project_manifest_tests {
    use super::*;

    #[test]
    fn the_project_manifests_load() {
        let dir = crate::config::paths::manifests_dir();
        let app = load_file(&dir.join("app.yaml")).unwrap();
        let kinds: Vec<&str> = app.iter().map(Document::kind).collect();
        assert_eq!(
            kinds,
            [
                "Namespace",
                "Service",
                "Deployment",
                "Gateway",
                "VirtualService"
            ]
        );
        for name in ["kind-cluster.yaml", "istio-install.yaml"] {
            assert_eq!(load_file(&dir.join(name)).unwrap().len(), 1, "{name}");
        }
    }
}
