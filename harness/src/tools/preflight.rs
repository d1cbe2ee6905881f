//! Which tools the kind and existing targets need, where they are, their versions, and for each
//! one that is missing the command that installs it.
//!
//! Tools are looked up in the project's `.tools/bin` (where `scripts/install-tools.sh` puts the
//! pinned versions) before `PATH`, so a fresh checkout needs no `PATH` change.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::paths;
use crate::config::versions::Versions;
use crate::exec::cmd::{Cmd, Runner};

/// An external tool the cluster targets use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Tool {
    Docker,
    Kind,
    Istioctl,
    Kubectl,
    /// Installs the Rust target of the image's binary when it is not the host's.
    Rustup,
}

impl Tool {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Tool::Docker => "docker",
            Tool::Kind => "kind",
            Tool::Istioctl => "istioctl",
            Tool::Kubectl => "kubectl",
            Tool::Rustup => "rustup",
        }
    }

    /// The command that installs the pinned version.
    pub(crate) fn install_hint(self) -> String {
        match self {
            Tool::Docker => "install Docker Engine (https://docs.docker.com/engine/install/) or \
                             Docker Desktop, then start it"
                .to_string(),
            Tool::Rustup => "install rustup (https://rustup.rs)".to_string(),
            tool => format!("scripts/install-tools.sh {}", tool.name()),
        }
    }
}

/// Where tools are searched: a `PATH`-style list of directories.
#[derive(Clone, Debug)]
pub struct ToolSearch {
    path: OsString,
}

impl ToolSearch {
    /// `.tools/bin` of this checkout, then the process's `PATH`.
    pub(crate) fn from_env() -> Self {
        let mut dirs = vec![tools_bin_dir()];
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        ToolSearch {
            path: std::env::join_paths(dirs).unwrap_or_default(),
        }
    }

    /// Exactly these directories (tests put fake tools first).
    pub fn with_path(path: impl Into<OsString>) -> Self {
        ToolSearch { path: path.into() }
    }

    pub(crate) fn find(&self, name: impl AsRef<OsStr>) -> Option<PathBuf> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| paths::project_root());
        which::which_in(name, Some(&self.path), cwd).ok()
    }
}

pub(crate) fn tools_bin_dir() -> PathBuf {
    paths::tools_dir().join("bin")
}

/// The programs the phases run: a path where the tool was found, else its bare name (so a
/// dry run still prints a plan a person can follow once the tool is installed).
#[derive(Clone, Debug)]
pub struct Tools {
    pub docker: OsString,
    pub kind: OsString,
    pub istioctl: OsString,
    pub kubectl: OsString,
    pub rustup: OsString,
    found: Vec<(Tool, PathBuf)>,
}

impl Tools {
    /// Resolves every tool; `istioctl-<istio_version>` (installed side by side by the script)
    /// wins over a plain `istioctl`.
    pub fn resolve(search: &ToolSearch, istio_version: &str) -> Self {
        let mut found = Vec::new();
        let mut locate = |tool: Tool, candidates: &[String]| -> OsString {
            for candidate in candidates {
                if let Some(path) = search.find(candidate) {
                    found.push((tool, path.clone()));
                    return path.into_os_string();
                }
            }
            OsString::from(tool.name())
        };
        Tools {
            docker: locate(Tool::Docker, &["docker".into()]),
            kind: locate(Tool::Kind, &["kind".into()]),
            istioctl: locate(
                Tool::Istioctl,
                &[format!("istioctl-{istio_version}"), "istioctl".into()],
            ),
            kubectl: locate(Tool::Kubectl, &["kubectl".into()]),
            rustup: locate(Tool::Rustup, &["rustup".into()]),
            found,
        }
    }

    pub fn path_of(&self, tool: Tool) -> Option<&Path> {
        self.found
            .iter()
            .find(|(t, _)| *t == tool)
            .map(|(_, p)| p.as_path())
    }

    pub(crate) fn program(&self, tool: Tool) -> &OsStr {
        match tool {
            Tool::Docker => &self.docker,
            Tool::Kind => &self.kind,
            Tool::Istioctl => &self.istioctl,
            Tool::Kubectl => &self.kubectl,
            Tool::Rustup => &self.rustup,
        }
    }

    pub(crate) fn cmd(&self, tool: Tool) -> Cmd {
        Cmd::new(self.program(tool))
    }
}

/// A prerequisite that is not met, with the fix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub tool: Tool,
    pub problem: String,
    pub fix: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (fix: {})",
            self.tool.name(),
            self.problem,
            self.fix
        )
    }
}

/// Formats missing prerequisites one per line, for skip and failure messages.
pub(crate) fn describe_missing(missing: &[Missing]) -> String {
    missing
        .iter()
        .map(|m| format!("  - {m}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A tool that was found, with the version it reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub tool: Tool,
    pub path: PathBuf,
    pub version: String,
}

/// What preflight saw.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub found: Vec<Found>,
    pub missing: Vec<Missing>,
    /// Things that work but are worth knowing (an optional tool absent, a version drift).
    pub warnings: Vec<String>,
}

impl Report {
    /// A required tool's problem stops the run; an optional one's is a warning.
    fn problem(&mut self, is_required: bool, missing: Missing) {
        if is_required {
            self.missing.push(missing);
        } else {
            self.warnings
                .push(format!("{} (fix: {})", missing.problem, missing.fix));
        }
    }

    pub(crate) fn print(&self) {
        for found in &self.found {
            eprintln!(
                "preflight: {} {} ({})",
                found.tool.name(),
                found.version,
                found.path.display()
            );
        }
        for warning in &self.warnings {
            eprintln!("preflight: warning: {warning}");
        }
        for missing in &self.missing {
            eprintln!("preflight: missing: {missing}");
        }
    }
}

/// What a target needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Docker with a reachable daemon, kind and istioctl at the pinned versions.
    Kind,
    /// kubectl optional (diagnostics), istioctl optional (diagnostics): nothing is installed.
    Existing,
}

/// Checks tools and versions. Only read-only commands run (`docker info`, `… version`), so this
/// also runs in dry-run mode.
pub async fn check(runner: &Runner, tools: &Tools, versions: &Versions, needs: Needs) -> Report {
    let mut report = Report::default();
    let istio_wanted = versions.istio_to_install();
    let required: &[Tool] = match needs {
        Needs::Kind => &[Tool::Docker, Tool::Kind, Tool::Istioctl],
        Needs::Existing => &[],
    };
    for tool in [Tool::Docker, Tool::Kind, Tool::Istioctl, Tool::Kubectl] {
        let is_required = required.contains(&tool);
        let relevant = is_required
            || tool == Tool::Kubectl
            || (needs == Needs::Existing && tool == Tool::Istioctl);
        if !relevant {
            continue;
        }
        let Some(path) = tools.path_of(tool) else {
            if is_required {
                report.missing.push(Missing {
                    tool,
                    problem: "not found in .tools/bin or on PATH".into(),
                    fix: tool.install_hint(),
                });
            } else {
                report.warnings.push(format!(
                    "{} not found: diagnostics that use it are skipped (install: {})",
                    tool.name(),
                    tool.install_hint()
                ));
            }
            continue;
        };
        match tool_version(runner, tools, tool).await {
            Ok(version) => {
                // kubectl supports one minor version of skew against the API server; the
                // diagnostics (logs, describe) use it.
                if tool == Tool::Kubectl
                    && let Some(skew) = minor_skew(&version, &versions.kubectl)
                    && skew > 1
                {
                    report.warnings.push(format!(
                        "{} is kubectl {version}, {skew} minor versions from the cluster's \
                         Kubernetes {}: diagnostics may fail (fix: put kubectl {} first on PATH)",
                        path.display(),
                        versions.kubectl,
                        versions.kubectl
                    ));
                }
                let wanted = match tool {
                    Tool::Kind => Some(versions.kind.clone()),
                    Tool::Istioctl => Some(istio_wanted.clone()),
                    _ => None,
                };
                if let Some(wanted) = wanted
                    && !same_version(&version, &wanted)
                {
                    let problem = format!(
                        "{} reports version {version}, the pinned version is {wanted}",
                        path.display()
                    );
                    let fix = if tool == Tool::Istioctl {
                        format!("ISTIO_VERSION={wanted} {}", tool.install_hint())
                    } else {
                        tool.install_hint()
                    };
                    report.problem(is_required, Missing { tool, problem, fix });
                }
                report.found.push(Found {
                    tool,
                    path: path.to_path_buf(),
                    version,
                });
            }
            Err(err) => {
                let problem = format!("{err:#}");
                let fix = if tool == Tool::Docker {
                    "start the Docker daemon (`sudo systemctl start docker`, or open Docker \
                     Desktop) or point DOCKER_HOST at a running one"
                        .to_string()
                } else {
                    tool.install_hint()
                };
                report.problem(is_required, Missing { tool, problem, fix });
            }
        }
    }
    if needs == Needs::Kind {
        match crate::tools::image::build_target(runner, &tools.docker).await {
            Ok(target) => {
                if let Some(missing) = rust_target_missing(runner, tools, &target).await {
                    report.missing.push(missing);
                }
            }
            Err(err) => report.missing.push(Missing {
                tool: Tool::Rustup,
                problem: format!("cannot tell which Rust target the image's binary needs: {err:#}"),
                fix: "install Rust with rustup (https://rustup.rs)".into(),
            }),
        }
    }
    report
}

/// `E2E_OFFLINE=1`: nothing may be downloaded, and `kind create` pulls its node image unless
/// Docker already has it. The Istio images are pulled later by the node's own containerd, out
/// of reach of any check from here: what can be checked is the node image.
pub async fn check_offline_kind(
    runner: &Runner,
    tools: &Tools,
    node_image: &str,
    report: &mut Report,
) {
    let inspect = tools
        .cmd(Tool::Docker)
        .args(["image", "inspect", node_image])
        .timeout(Duration::from_secs(20));
    const ISTIO_IMAGES: &str = "Istio images are pulled inside the node (by its container \
                                runtime, when istioctl installs), so they cannot be checked \
                                from here";
    match runner.query(&inspect).await {
        Ok(_) => report.warnings.push(format!(
            "E2E_OFFLINE=1: the pinned node image {node_image} is present locally, but the \
             {ISTIO_IMAGES}"
        )),
        Err(err) => report.missing.push(Missing {
            tool: Tool::Kind,
            problem: format!(
                "E2E_OFFLINE=1 and the pinned node image {node_image} is not present locally \
                 (`docker image inspect`: {}), so `kind create` would pull it; the {ISTIO_IMAGES} either",
                crate::exec::cmd::tail(&format!("{err:#}"), 1).trim()
            ),
            fix: format!("while online: docker pull {node_image}; or unset E2E_OFFLINE"),
        }),
    }
}

/// A cross-built image binary needs its target's standard library: `rustup target list
/// --installed` must list the triple. The host's own triple is always there.
pub(crate) async fn rust_target_missing(
    runner: &Runner,
    tools: &Tools,
    target: &crate::tools::image::BuildTarget,
) -> Option<Missing> {
    if !target.cross {
        return None;
    }
    let triple = &target.triple;
    let add = format!("rustup target add {triple}");
    let why = format!(
        "the image's binary is built for {triple} (a static Linux executable for the Docker \
         daemon's CPU)"
    );
    if tools.path_of(Tool::Rustup).is_none() {
        return Some(Missing {
            tool: Tool::Rustup,
            problem: format!("{why}, and rustup is not found to confirm that target is installed"),
            fix: format!("{}, then `{add}`", Tool::Rustup.install_hint()),
        });
    }
    let list = tools
        .cmd(Tool::Rustup)
        .args(["target", "list", "--installed"])
        .timeout(Duration::from_secs(20));
    match runner.query(&list).await {
        Ok(output) if output.stdout.lines().any(|line| line.trim() == triple) => None,
        Ok(_) => Some(Missing {
            tool: Tool::Rustup,
            problem: format!("{why}, and that Rust target is not installed"),
            fix: add,
        }),
        Err(err) => Some(Missing {
            tool: Tool::Rustup,
            problem: format!("{why}; listing the installed Rust targets failed: {err:#}"),
            fix: add,
        }),
    }
}

/// Asks a tool for its version. For Docker this also proves the daemon answers.
pub(crate) async fn tool_version(
    runner: &Runner,
    tools: &Tools,
    tool: Tool,
) -> anyhow::Result<String> {
    let args: &[&str] = match tool {
        Tool::Docker => &["info", "--format", "{{.ServerVersion}}"],
        Tool::Kind => &["version"],
        Tool::Istioctl => &["version", "--remote=false"],
        Tool::Kubectl => &["version", "--client"],
        Tool::Rustup => &["--version"],
    };
    let cmd = tools.cmd(tool).args(args).timeout(Duration::from_secs(20));
    let output = runner.query(&cmd).await?;
    if tool == Tool::Docker {
        let version = output.stdout.trim();
        // `docker info` prints client details and exits 0 on some versions even when the daemon
        // is down; an empty server version means nobody answered.
        if version.is_empty() {
            anyhow::bail!(
                "the Docker daemon did not answer `docker info`: {}",
                crate::exec::cmd::tail(&output.stderr, 5)
            );
        }
        return Ok(version.to_string());
    }
    parse_version(&output.stdout)
        .ok_or_else(|| anyhow::anyhow!("no version in the output of `{cmd}`: {}", output.stdout))
}

/// The first `v?X.Y.Z` token of a tool's version output (`kind v0.33.0 go1.24 linux/amd64`,
/// `client version: 1.31.1`, `Client Version: v1.36.4`).
pub(crate) fn parse_version(text: &str) -> Option<String> {
    text.split(|c: char| c.is_whitespace() || c == ',' || c == '"')
        .map(|word| word.trim_start_matches("version:"))
        .find(|word| {
            let digits = word.strip_prefix('v').unwrap_or(word);
            let parts: Vec<&str> = digits.split('.').collect();
            parts.len() >= 3
                && parts[..2]
                    .iter()
                    .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
                && parts[2].starts_with(|c: char| c.is_ascii_digit())
        })
        .map(str::to_string)
}

fn same_version(seen: &str, wanted: &str) -> bool {
    seen.trim_start_matches('v') == wanted.trim_start_matches('v')
}

/// How many minor versions apart two `vMAJOR.MINOR.…` versions are (same major only).
fn minor_skew(seen: &str, wanted: &str) -> Option<u32> {
    let major_minor = |version: &str| -> Option<(u32, u32)> {
        let mut parts = version.trim_start_matches('v').split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some((major, minor))
    };
    let (seen, wanted) = (major_minor(seen)?, major_minor(wanted)?);
    (seen.0 == wanted.0).then(|| seen.1.abs_diff(wanted.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("kind v0.33.0 go1.24.2 linux/amd64\n", "v0.33.0")]
    #[case("client version: 1.31.1\n", "1.31.1")]
    #[case("1.30.4\n", "1.30.4")]
    #[case("Client Version: v1.36.4\nKustomize Version: v5.7.1\n", "v1.36.4")]
    fn versions_are_read_from_real_outputs(#[case] output: &str, #[case] expected: &str) {
        assert_eq!(parse_version(output).as_deref(), Some(expected));
    }

    #[rstest]
    #[case("v1.32.4-dispatcher", "v1.36.4", Some(4))]
    #[case("v1.35.0", "v1.36.4", Some(1))]
    #[case("v1.36.9", "v1.36.4", Some(0))]
    #[case("v2.0.0", "v1.36.4", None)]
    #[case("unknown", "v1.36.4", None)]
    fn kubectl_skew_is_counted_in_minor_versions(
        #[case] seen: &str,
        #[case] wanted: &str,
        #[case] skew: Option<u32>,
    ) {
        assert_eq!(minor_skew(seen, wanted), skew);
    }

    #[test]
    fn no_version_is_none() {
        assert_eq!(parse_version("command not found"), None);
        assert!(same_version("v0.33.0", "0.33.0") && !same_version("1.30.4", "1.31.1"));
    }

    #[test]
    fn missing_names_the_install_command() {
        let missing = Missing {
            tool: Tool::Istioctl,
            problem: "not found in .tools/bin or on PATH".into(),
            fix: Tool::Istioctl.install_hint(),
        };
        assert_eq!(
            missing.to_string(),
            "istioctl: not found in .tools/bin or on PATH (fix: scripts/install-tools.sh istioctl)"
        );
    }
}
