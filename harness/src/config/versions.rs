//! The pinned tool versions of `versions.env`, the one file the harness, the install script and
//! the nightly matrix all read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::config::paths;

/// The variable that overrides the pinned Istio release (the nightly matrix sets it).
pub(crate) const ISTIO_VERSION_VAR: &str = "ISTIO_VERSION";

pub(crate) fn versions_file() -> PathBuf {
    paths::project_root().join("versions.env")
}

/// The pins the harness needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versions {
    /// `v0.33.0`
    pub kind: String,
    /// `kindest/node:v1.36.4@sha256:…`
    pub kind_node_image: String,
    /// `1.31.1`
    pub istio: String,
    /// `1.30.4`
    pub istio_previous: String,
    /// `v1.36.4`
    pub kubectl: String,
    /// Every line of the file, for what the harness does not interpret (checksums).
    pub all: BTreeMap<String, String>,
}

impl Versions {
    pub fn load() -> Result<Self> {
        Self::load_from(&versions_file())
    }

    pub(crate) fn load_from(file: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading pinned versions from {}", file.display()))?;
        Self::parse(file, &text)
    }

    pub(crate) fn parse(file: &Path, text: &str) -> Result<Self> {
        let all = parse_env_file(file, text)?;
        let get = |key: &str| {
            all.get(key).cloned().with_context(|| {
                format!(
                    "{}: `{key}` is missing; add `{key}=<value>`",
                    file.display()
                )
            })
        };
        let versions = Versions {
            kind: get("KIND_VERSION")?,
            kind_node_image: get("KIND_NODE_IMAGE")?,
            istio: get("ISTIO_VERSION")?,
            istio_previous: get("ISTIO_PREVIOUS_VERSION")?,
            kubectl: get("KUBECTL_VERSION")?,
            all: all.clone(),
        };
        if !versions.kind_node_image.contains("@sha256:") {
            bail!(
                "{}: KIND_NODE_IMAGE `{}` is not pinned by digest (`kindest/node:vX.Y.Z@sha256:…`)",
                file.display(),
                versions.kind_node_image
            );
        }
        Ok(versions)
    }

    /// The Istio release to install: `ISTIO_VERSION` from the environment if set, else the pin.
    pub(crate) fn istio_to_install(&self) -> String {
        self.istio_to_install_from(|name| std::env::var(name).ok())
    }

    pub(crate) fn istio_to_install_from(&self, lookup: impl Fn(&str) -> Option<String>) -> String {
        lookup(ISTIO_VERSION_VAR)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| self.istio.clone())
    }
}

/// Parses `KEY=VALUE` lines; `#` starts a comment line. Anything a shell would expand or split is
/// refused, so that sourcing the file and parsing it here can never disagree.
pub(crate) fn parse_env_file(file: &Path, text: &str) -> Result<BTreeMap<String, String>> {
    let mut values = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = || format!("{}:{}", file.display(), number + 1);
        let Some((key, value)) = line.split_once('=') else {
            bail!("{}: expected KEY=VALUE, found `{line}`", at());
        };
        let key_ok = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !key_ok {
            bail!("{}: `{key}` is not a variable name (A-Z, 0-9, _)", at());
        }
        let value_ok = !value.is_empty()
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:@+".contains(c));
        if !value_ok {
            bail!(
                "{}: the value of {key} must be non-empty and plain (letters, digits, -_./:@+), found `{value}`",
                at()
            );
        }
        if values.insert(key.to_string(), value.to_string()).is_some() {
            bail!("{}: {key} is set twice", at());
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_file_loads_and_follows_the_supported_matrix() {
        let v = Versions::load().unwrap();
        assert_eq!(v.kind, "v0.33.0");
        assert!(v.kind_node_image.starts_with("kindest/node:v1.36."));
        assert_eq!(v.istio, "1.31.1");
        assert_eq!(v.istio_previous, "1.30.4");
    }

    #[test]
    fn istio_version_can_be_overridden() {
        let v = Versions::load().unwrap();
        assert_eq!(v.istio_to_install_from(|_| None), "1.31.1");
        assert_eq!(v.istio_to_install_from(|_| Some("1.30.4".into())), "1.30.4");
        assert_eq!(v.istio_to_install_from(|_| Some(" ".into())), "1.31.1");
    }

    #[test]
    fn bad_lines_name_file_line_and_fix() {
        let file = Path::new("versions.env");
        let err = parse_env_file(file, "A=1\nB = 2\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("versions.env:2"), "{err}");
        let err = parse_env_file(file, "A=$(rm -rf)\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("must be non-empty and plain"), "{err}");
        let err = Versions::parse(file, "KIND_VERSION=v1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("KIND_NODE_IMAGE") && err.contains("missing"),
            "{err}"
        );
        let unpinned = "KIND_VERSION=v1\nKIND_NODE_IMAGE=kindest/node:v1.36.4\nISTIO_VERSION=1\n\
                        ISTIO_PREVIOUS_VERSION=1\nKUBECTL_VERSION=v1\n";
        let err = Versions::parse(file, unpinned).unwrap_err().to_string();
        assert!(err.contains("not pinned by digest"), "{err}");
    }
}
