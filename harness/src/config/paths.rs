//! Where the project's files live, independent of the caller's working directory.

use std::path::PathBuf;

/// The workspace root: the harness is always built from this repository, so the path the
/// compiler saw is the one to use (tests and the CLI may run from any directory).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("harness/ lives inside the workspace root")
        .to_path_buf()
}

/// `manifests/app.yaml`: the tutorial's five resources.
pub(crate) fn app_manifest() -> PathBuf {
    manifests_dir().join("app.yaml")
}

/// Where cargo puts what it builds (`CARGO_TARGET_DIR`, else `target/`).
pub(crate) fn cargo_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"))
}

pub fn manifests_dir() -> PathBuf {
    project_root().join("manifests")
}

/// Project-local tools (pinned kind, istioctl, Envoy), never committed.
pub(crate) fn tools_dir() -> PathBuf {
    project_root().join(".tools")
}

pub(crate) fn default_artifacts_dir() -> PathBuf {
    project_root().join("target").join("e2e-artifacts")
}
