//! `scripts/install-tools.sh` against a fake `curl` that serves release assets from a folder:
//! a download is installed only when it matches both the published checksum and the pin in
//! versions.env, an installed version is not downloaded again, and nothing is left half-done.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use harness::config::paths::project_root;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// Serves `$FAKE_DOWNLOADS/<last path segment of the URL>`, logs every URL, fails like
/// `curl -f` on a missing file.
const FAKE_CURL: &str = r#"#!/usr/bin/env bash
set -euo pipefail
out="" url=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    -o) out="$2"; shift 2 ;;
    -*) [[ "$1" == --retry ]] && shift; shift ;;
    *) url="$1"; shift ;;
  esac
done
echo "$url" >> "$FAKE_DOWNLOADS/curl.log"
src="$FAKE_DOWNLOADS/${url##*/}"
[[ -f "$src" ]] || { echo "curl: (22) The requested URL returned error: 404" >&2; exit 22; }
cp "$src" "$out"
"#;

/// A fake `istioctl` release: `istioctl version --remote=false` prints its version.
fn istioctl_script(version: &str) -> String {
    format!("#!/bin/sh\necho \"client version: {version}\"\n")
}

struct Sandbox {
    _dir: TempDir,
    fakes: PathBuf,
    downloads: PathBuf,
    bin: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let dir = TempDir::new().unwrap();
        let fakes = dir.path().join("fakes");
        let downloads = dir.path().join("downloads");
        let bin = dir.path().join("bin");
        for folder in [&fakes, &downloads] {
            fs::create_dir_all(folder).unwrap();
        }
        write_executable(&fakes.join("curl"), FAKE_CURL);
        Sandbox {
            _dir: dir,
            fakes,
            downloads,
            bin,
        }
    }

    /// Publishes the istioctl archive for `version` (linux-amd64 naming) with a checksum file.
    fn publish_istioctl(&self, version: &str, published_sha: Option<&str>) {
        let stage = self.downloads.join("stage");
        fs::create_dir_all(&stage).unwrap();
        write_executable(&stage.join("istioctl"), &istioctl_script(version));
        let archive = self
            .downloads
            .join(format!("istioctl-{version}-{}.tar.gz", istio_platform()));
        let status = Command::new("tar")
            .args(["-czf"])
            .arg(&archive)
            .arg("-C")
            .arg(&stage)
            .arg("istioctl")
            .status()
            .unwrap();
        assert!(status.success());
        let digest = published_sha
            .map(str::to_string)
            .unwrap_or_else(|| sha256_hex(&fs::read(&archive).unwrap()));
        let name = archive.file_name().unwrap().to_string_lossy().into_owned();
        fs::write(
            self.downloads.join(format!("{name}.sha256")),
            format!("{digest}  {name}\n"),
        )
        .unwrap();
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let path = format!(
            "{}:{}",
            self.fakes.display(),
            std::env::var("PATH").unwrap()
        );
        let mut command = Command::new(project_root().join("scripts/install-tools.sh"));
        command
            .args(args)
            .env("PATH", path)
            .env("FAKE_DOWNLOADS", &self.downloads)
            .env("INSTALL_TOOLS_BIN_DIR", &self.bin)
            .env_remove("E2E_OFFLINE")
            .env_remove("ISTIO_VERSION");
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().unwrap()
    }

    fn downloaded_urls(&self) -> Vec<String> {
        fs::read_to_string(self.downloads.join("curl.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn write_executable(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The istioctl asset suffix for this machine, as the script names it.
fn istio_platform() -> &'static str {
    match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => "linux-amd64",
        ("linux", "aarch64") => "linux-arm64",
        ("macos", "x86_64") => "osx",
        ("macos", "aarch64") => "osx-arm64",
        other => panic!("no istioctl asset for {other:?}"),
    }
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// 1.30.4 has no pin in versions.env: it is checked against the published checksum alone.
const UNPINNED_ISTIO: &str = "1.30.4";

#[test]
fn a_verified_download_is_installed_and_not_downloaded_again() {
    let sandbox = Sandbox::new();
    sandbox.publish_istioctl(UNPINNED_ISTIO, None);
    let env = [("ISTIO_VERSION", UNPINNED_ISTIO)];
    let first = sandbox.run(&["istioctl"], &env);
    assert!(first.status.success(), "{}", text(&first));
    assert!(text(&first).contains("sha256 verified"), "{}", text(&first));
    let installed = sandbox.bin.join(format!("istioctl-{UNPINNED_ISTIO}"));
    assert!(installed.is_file(), "{}", text(&first));
    assert_eq!(
        fs::read_link(sandbox.bin.join("istioctl")).unwrap(),
        PathBuf::from(format!("istioctl-{UNPINNED_ISTIO}"))
    );
    assert_eq!(
        sandbox.downloaded_urls().len(),
        2,
        "the asset and its checksum"
    );

    let second = sandbox.run(&["istioctl"], &env);
    assert!(second.status.success(), "{}", text(&second));
    assert!(text(&second).contains("already in"), "{}", text(&second));
    assert_eq!(
        sandbox.downloaded_urls().len(),
        2,
        "nothing downloaded again"
    );
}

#[test]
fn a_download_that_differs_from_the_published_checksum_is_refused() {
    let sandbox = Sandbox::new();
    sandbox.publish_istioctl(UNPINNED_ISTIO, Some(&"0".repeat(64)));
    let output = sandbox.run(&["istioctl"], &[("ISTIO_VERSION", UNPINNED_ISTIO)]);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("does not match the published"),
        "{}",
        text(&output)
    );
    assert!(
        !sandbox
            .bin
            .join(format!("istioctl-{UNPINNED_ISTIO}"))
            .exists(),
        "a refused download must not be installed"
    );
}

#[test]
#[cfg_attr(
    not(target_os = "linux"),
    ignore = "versions.env pins the kind binary for Linux only"
)]
fn a_download_that_differs_from_the_pin_is_refused_even_when_published_agrees() {
    // A self-consistent asset (its checksum file agrees) that is not the pinned release.
    let sandbox = Sandbox::new();
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    let name = format!("kind-linux-{arch}");
    let impostor = b"#!/bin/sh\necho kind v0.33.0 go1.25 linux/amd64\n";
    fs::write(sandbox.downloads.join(&name), impostor).unwrap();
    fs::write(
        sandbox.downloads.join(format!("{name}.sha256sum")),
        format!("{}  {name}\n", sha256_hex(impostor)),
    )
    .unwrap();
    let output = sandbox.run(&["kind"], &[]);
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("does not match the pin"),
        "{}",
        text(&output)
    );
    assert!(!sandbox.bin.join("kind").exists());
}

#[test]
fn offline_forbids_downloads() {
    let sandbox = Sandbox::new();
    sandbox.publish_istioctl(UNPINNED_ISTIO, None);
    let output = sandbox.run(
        &["istioctl"],
        &[("ISTIO_VERSION", UNPINNED_ISTIO), ("E2E_OFFLINE", "1")],
    );
    assert!(!output.status.success(), "{}", text(&output));
    assert!(
        text(&output).contains("E2E_OFFLINE=1 forbids"),
        "{}",
        text(&output)
    );
    assert!(sandbox.downloaded_urls().is_empty());
}

#[test]
fn dry_run_names_every_pinned_download_and_changes_nothing() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&["--dry-run", "kind", "istioctl"], &[]);
    assert!(output.status.success(), "{}", text(&output));
    let shown = text(&output);
    for expected in [
        "kind/releases/download/v0.33.0/kind-",
        "istio/releases/download/1.31.1/istioctl-1.31.1-",
        ".sha256sum",
    ] {
        assert!(shown.contains(expected), "missing {expected}:\n{shown}");
    }
    assert!(sandbox.downloaded_urls().is_empty());
    assert!(!sandbox.bin.exists(), "a dry run creates nothing");
}

#[test]
fn an_unknown_argument_is_refused() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&["helm"], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("unknown argument 'helm'"));
}
