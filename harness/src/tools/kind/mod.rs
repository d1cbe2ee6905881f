//! kind clusters: create one from `manifests/kind-cluster.yaml`, reuse one by name, load an
//! image into it, delete it (verified), and reap the ones killed runs left behind.
//!
//! Ownership: a cluster the suite creates is named `istio-fft-e2e-<pid>-<random>` and gets an
//! owner marker (`<state dir>/<name>.owner.json`: pid, host, boot id, pid namespace and the
//! process's start time) before `kind create` runs. kind clusters cannot carry labels, so the
//! marker is what tells a later run that the cluster's owner is dead: a cluster is reaped only
//! when it has our prefix and pattern and a marker written on this host whose owner is gone — the
//! machine has rebooted since (another boot id), or, in the same pid namespace, no process has
//! that pid or the one that has it started at another time (the pid was reused). A marker from
//! another pid namespace (another container with the same host name) cannot be judged and is left
//! alone. A cluster without a marker (another checkout, `harness up`, `E2E_CLUSTER`, a kept
//! cluster, whose marker is removed when it is kept) is never touched. A reap that fails is a
//! warning: the run goes on.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::config::paths;
use crate::exec::cmd::{Cmd, Runner};
use crate::manifest::kind_config::KindConfig;
use crate::tools::preflight::{Tool, Tools};

/// Every cluster the suite creates starts with this.
pub(crate) const CLUSTER_PREFIX: &str = "istio-fft-e2e-";
/// The cluster `harness up` creates and `harness down` deletes (no pid: it outlives the CLI).
pub const CLI_CLUSTER_NAME: &str = "istio-fft-e2e";

/// `kind create` waits this long for the control plane (`--wait`).
const CREATE_WAIT: &str = "120s";
/// A cold runner pulls the node image first (hundreds of MB).
const CREATE_TIMEOUT: Duration = Duration::from_secs(600);
const DELETE_TIMEOUT: Duration = Duration::from_secs(180);
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Exporting a node's logs copies its journal and every container log.
const EXPORT_LOGS_TIMEOUT: Duration = Duration::from_secs(180);

/// A cluster the phases work on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClusterHandle {
    pub name: String,
    /// Written by `kind create --kubeconfig` / `kind get kubeconfig`: the user's own
    /// kubeconfig is never modified.
    pub kubeconfig: PathBuf,
    /// False for `E2E_CLUSTER` and anything the suite did not create: never deleted.
    pub owned: bool,
}

impl ClusterHandle {
    /// The context kind names in its kubeconfig.
    pub(crate) fn context(&self) -> String {
        context_name(&self.name)
    }

    /// What a person types to reach a kept cluster.
    pub(crate) fn reach_hint(&self) -> String {
        self.reach_hint_after("kept")
    }

    /// The same for a dry run, where nothing was kept yet.
    pub(crate) fn planned_reach_hint(&self) -> String {
        format!("[dry-run] {}", self.reach_hint_after("would keep"))
    }

    fn reach_hint_after(&self, what_happened: &str) -> String {
        format!(
            "{what_happened} kind cluster `{name}`; to reach it:\n  kind export kubeconfig --name {name}\n  \
             kubectl --context {ctx} get pods -A\n  rerun against it: E2E_CLUSTER={name} cargo test --test e2e\n  \
             delete it: kind delete cluster --name {name}",
            name = self.name,
            ctx = self.context()
        )
    }
}

pub(crate) fn context_name(cluster: &str) -> String {
    format!("kind-{cluster}")
}

/// Where the harness keeps per-cluster files (kubeconfigs, owner markers, image archives).
pub(crate) fn default_state_dir() -> PathBuf {
    paths::project_root().join("target").join("e2e-state")
}

/// `istio-fft-e2e-<pid>-<4 hex>`: the pid tells a later run whose cluster it is, the random
/// part keeps two runs of one pid namespace (containers) apart.
pub fn new_cluster_name(pid: u32, random: u16) -> String {
    format!("{CLUSTER_PREFIX}{pid}-{random:04x}")
}

/// A random-enough suffix without another dependency: time and pid through the std hasher.
pub(crate) fn random_suffix() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (hasher.finish() & 0xffff) as u16
}

/// The pid encoded in a name the suite generated, or `None` for any other name.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(CLUSTER_PREFIX)?;
    let (pid, random) = rest.split_once('-')?;
    let random_ok = random.len() == 4 && random.chars().all(|c| c.is_ascii_hexdigit());
    if !random_ok || pid.is_empty() || !pid.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Who created a cluster. The fields after `created_unix` are absent from markers older
/// harnesses wrote; such a marker is judged by pid and host alone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerMarker {
    pub pid: u32,
    pub host: String,
    pub created_unix: u64,
    /// `/proc/sys/kernel/random/boot_id`: another value means the machine has rebooted since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The pid namespace (`/proc/self/ns/pid`): pids of another one are not ours to look at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<String>,
    /// The owner's start time in clock ticks since boot (`/proc/<pid>/stat`, field 22): a live
    /// process with the same pid but another start time is another process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
}

impl OwnerMarker {
    pub(crate) fn for_this_process() -> Self {
        let pid = std::process::id();
        OwnerMarker {
            pid,
            host: this_host(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default(),
            boot_id: boot_id(),
            pid_namespace: pid_namespace(),
            start_ticks: start_ticks(pid),
        }
    }
}

/// This boot's id.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
}

/// This process's pid namespace, as `pid:[4026531836]`.
fn pid_namespace() -> Option<String> {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|link| link.to_string_lossy().into_owned())
}

/// When process `pid` started, in clock ticks since boot; `None` when it does not exist.
pub(crate) fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name (which may hold spaces): state is field 3,
    // starttime field 22.
    let after_name = stat.rsplit_once(')')?.1;
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Whether a marker's owner still runs, as far as this process can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Owner {
    Alive,
    Gone,
    /// In another pid namespace: its pids are not this process's to look at.
    Unknowable,
}

/// Judges a marker of this host from this process.
pub(crate) fn owner_state(marker: &OwnerMarker) -> Owner {
    judge_owner(
        marker,
        boot_id().as_deref(),
        pid_namespace().as_deref(),
        |pid| pid_alive(pid).then(|| start_ticks(pid)),
    )
}

/// The pure part of [`owner_state`]: `process(pid)` is `None` when no process has that pid, else
/// its start time if readable.
pub(crate) fn judge_owner(
    marker: &OwnerMarker,
    boot_id: Option<&str>,
    pid_namespace: Option<&str>,
    process: impl Fn(u32) -> Option<Option<u64>>,
) -> Owner {
    if let (Some(then), Some(now)) = (marker.boot_id.as_deref(), boot_id)
        && then != now
    {
        return Owner::Gone;
    }
    if let (Some(then), Some(now)) = (marker.pid_namespace.as_deref(), pid_namespace)
        && then != now
    {
        return Owner::Unknowable;
    }
    match (process(marker.pid), marker.start_ticks) {
        (None, _) => Owner::Gone,
        (Some(Some(now)), Some(then)) if now != then => Owner::Gone,
        (Some(_), _) => Owner::Alive,
    }
}

pub fn this_host() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into a buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Whether a process with this pid exists on this host (EPERM means it exists, owned by
/// someone else).
pub(crate) fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence and permission; nothing is delivered.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The per-cluster files of one state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    pub dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateDir { dir: dir.into() }
    }

    pub fn marker(&self, cluster: &str) -> PathBuf {
        self.dir.join(format!("{cluster}.owner.json"))
    }

    pub fn kubeconfig(&self, cluster: &str) -> PathBuf {
        self.dir.join(format!("{cluster}.kubeconfig"))
    }

    pub fn image_archive(&self, cluster: &str) -> PathBuf {
        self.dir.join(format!("{cluster}.image.tar"))
    }

    pub fn write_marker(&self, cluster: &str, marker: &OwnerMarker) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let path = self.marker(cluster);
        std::fs::write(&path, serde_json::to_vec_pretty(marker)?)
            .with_context(|| format!("writing the owner marker {}", path.display()))
    }

    pub(crate) fn read_marker(&self, cluster: &str) -> Option<OwnerMarker> {
        let text = std::fs::read(self.marker(cluster)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Removes the cluster's marker and kubeconfig; absent files are fine.
    pub(crate) fn forget(&self, cluster: &str) {
        for path in [
            self.marker(cluster),
            self.kubeconfig(cluster),
            self.image_archive(cluster),
        ] {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Why a cluster is or is not reaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReapDecision {
    Reap { reason: String },
    Leave { reason: String },
}

/// Decides about one listed cluster. Pure, so every rule is tested.
pub(crate) fn reap_decision(
    name: &str,
    marker: Option<&OwnerMarker>,
    this_host: &str,
    spared: Option<&str>,
    owner: impl Fn(&OwnerMarker) -> Owner,
) -> ReapDecision {
    let leave = |reason: &str| ReapDecision::Leave {
        reason: reason.to_string(),
    };
    if spared == Some(name) {
        return leave("it is E2E_CLUSTER");
    }
    let Some(name_pid) = owner_pid(name) else {
        return leave("not a name the suite generates");
    };
    let Some(marker) = marker else {
        return leave("no owner marker in this checkout (another checkout, or kept)");
    };
    if marker.pid != name_pid {
        return leave("its owner marker names another pid");
    }
    if marker.host != this_host {
        return leave("created on another host");
    }
    match owner(marker) {
        Owner::Alive => leave("its owner is still running"),
        Owner::Unknowable => leave("created in another pid namespace (another container)"),
        Owner::Gone => ReapDecision::Reap {
            reason: format!("its owner (pid {} on {}) is gone", marker.pid, marker.host),
        },
    }
}

/// `kind get clusters`. kind prints "No kind clusters found." on stderr when there are none.
pub(crate) async fn list_clusters(runner: &Runner, tools: &Tools) -> Result<Vec<String>> {
    let output = runner
        .query(&list_clusters_cmd(tools))
        .await
        .context("listing kind clusters")?;
    Ok(cluster_names(&output.stdout))
}

/// `kind get clusters`.
pub(crate) fn list_clusters_cmd(tools: &Tools) -> Cmd {
    tools
        .cmd(Tool::Kind)
        .args(["get", "clusters"])
        .timeout(Duration::from_secs(30))
}

/// The names `kind get clusters` printed, one a line.
pub(crate) fn cluster_names(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Deletes every cluster of a killed run (see the module doc). Returns the names reaped.
pub async fn reap_stale(
    runner: &Runner,
    tools: &Tools,
    state: &StateDir,
    spared: Option<&str>,
) -> Result<Vec<String>> {
    let host = this_host();
    let mut reaped = Vec::new();
    for name in list_clusters(runner, tools).await? {
        let marker = state.read_marker(&name);
        match reap_decision(&name, marker.as_ref(), &host, spared, owner_state) {
            ReapDecision::Reap { reason } => {
                runner.step(format!("reap kind cluster {name}: {reason}"));
                let handle = ClusterHandle {
                    kubeconfig: state.kubeconfig(&name),
                    name: name.clone(),
                    owned: true,
                };
                // A cluster that cannot be reaped now is no reason to fail this run: its marker
                // stays, and a later run tries again.
                if let Err(err) = delete_verified(runner, tools, &handle).await {
                    eprintln!("warning: reaping kind cluster {name}: {err:#}");
                    continue;
                }
                if !runner.is_dry_run() {
                    state.forget(&name);
                }
                reaped.push(name);
            }
            ReapDecision::Leave { reason } => {
                if name.starts_with(CLUSTER_PREFIX) {
                    eprintln!("leaving kind cluster {name}: {reason}");
                }
            }
        }
    }
    Ok(reaped)
}

/// The container kind runs a cluster's (first) control-plane node in.
pub(crate) fn control_plane_container(cluster: &str) -> String {
    format!("{cluster}-control-plane")
}

/// Why `kind create` would fail on `listen:port`, from the names `docker ps --filter
/// publish=PORT --format {{.Names}}` printed; `None` when nothing holds it.
pub(crate) fn port_holder_problem(names: &str, listen: &str, port: u16) -> Option<String> {
    let holder = names.lines().map(str::trim).find(|n| !n.is_empty())?;
    Some(match holder.strip_suffix("-control-plane") {
        Some(cluster) if !cluster.is_empty() => format!(
            "cluster {cluster} holds {listen}:{port}: reuse it with E2E_CLUSTER={cluster}, or \
             delete it: kind delete cluster --name {cluster}"
        ),
        _ => format!(
            "container {holder} holds {listen}:{port}, which the kind cluster publishes the \
             gateway on: stop it (docker stop {holder}), or change the hostPort in \
             manifests/kind-cluster.yaml"
        ),
    })
}

/// Fails before `kind create` when a host port the config publishes is taken by a running
/// container (a kept cluster, most often): kind would fail later with "port is already
/// allocated" after pulling and starting the node.
pub(crate) async fn ensure_host_ports_free(
    runner: &Runner,
    tools: &Tools,
    config: &KindConfig,
) -> Result<()> {
    for (listen, port) in config.host_ports() {
        let query = tools
            .cmd(Tool::Docker)
            .args(["ps", "--filter"])
            .arg(format!("publish={port}"))
            .args(["--format", "{{.Names}}"])
            .timeout(Duration::from_secs(30));
        let names = match runner.query(&query).await {
            Ok(output) => output.stdout,
            Err(err) if runner.is_dry_run() => {
                println!("[dry-run] cannot ask Docker who publishes port {port} ({err:#})");
                continue;
            }
            Err(err) => {
                return Err(err).with_context(|| {
                    format!("asking Docker which container publishes port {port}")
                });
            }
        };
        if let Some(problem) = port_holder_problem(&names, &listen, port) {
            if runner.is_dry_run() {
                println!("[dry-run] a real run stops here: {problem}");
                continue;
            }
            bail!("{problem}");
        }
    }
    Ok(())
}

/// `kind create cluster` from the config file; the kubeconfig goes to `handle.kubeconfig`.
pub(crate) async fn create(
    runner: &Runner,
    tools: &Tools,
    handle: &ClusterHandle,
    config: &Path,
) -> Result<()> {
    let cmd = tools
        .cmd(Tool::Kind)
        .args(["create", "cluster", "--name", &handle.name, "--config"])
        .arg(config)
        .args(["--wait", CREATE_WAIT, "--kubeconfig"])
        .arg(&handle.kubeconfig)
        .timeout(CREATE_TIMEOUT);
    if !runner.is_dry_run()
        && let Some(dir) = handle.kubeconfig.parent()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    runner
        .run(&cmd)
        .await
        .with_context(|| format!("creating kind cluster {}", handle.name))?;
    Ok(())
}

/// Writes the cluster's kubeconfig (`kind get kubeconfig`) to `handle.kubeconfig` and returns
/// its text (empty in dry-run mode, where nothing is written).
pub(crate) async fn write_kubeconfig(
    runner: &Runner,
    tools: &Tools,
    handle: &ClusterHandle,
) -> Result<String> {
    let cmd = tools
        .cmd(Tool::Kind)
        .args(["get", "kubeconfig", "--name", &handle.name])
        .timeout(Duration::from_secs(30));
    let output = runner
        .run(&cmd)
        .await
        .with_context(|| format!("reading the kubeconfig of kind cluster {}", handle.name))?;
    if runner.is_dry_run() {
        runner.step(format!("write it to {}", handle.kubeconfig.display()));
        return Ok(String::new());
    }
    if let Some(dir) = handle.kubeconfig.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_private(&handle.kubeconfig, output.stdout.as_bytes())
        .with_context(|| format!("writing {}", handle.kubeconfig.display()))?;
    Ok(output.stdout)
}

/// Writes a file only its owner can read (mode 0600, also when it existed with another mode): a
/// kubeconfig holds the cluster's admin credentials, as kubectl's own files are private.
fn write_private(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)
}

/// `kind delete cluster`, then `kind get clusters` to prove it is gone (kind exits 0 even for
/// a cluster that does not exist, so its exit status proves nothing).
/// `docker port NODE PORT/tcp`: where the node container publishes `port` on the host.
pub(crate) fn published_port_cmd(tools: &Tools, node_container: &str, port: u16) -> Cmd {
    tools
        .cmd(Tool::Docker)
        .arg("port")
        .arg(node_container)
        .arg(format!("{port}/tcp"))
        .timeout(Duration::from_secs(20))
}

/// `kind delete cluster --name N --kubeconfig F`, bounded: for the orderly teardown and for the
/// blocking cleanup an interruption runs.
pub(crate) fn delete_cmd(tools: &Tools, handle: &ClusterHandle) -> Cmd {
    tools
        .cmd(Tool::Kind)
        .args(["delete", "cluster", "--name", &handle.name, "--kubeconfig"])
        .arg(&handle.kubeconfig)
        .timeout(DELETE_TIMEOUT)
}

/// `kind export logs DIR --name N`: node journal, kubelet and container logs, bounded.
pub(crate) fn export_logs_cmd(tools: &Tools, cluster: &str, dir: &Path) -> Cmd {
    tools
        .cmd(Tool::Kind)
        .args(["export", "logs"])
        .arg(dir)
        .args(["--name", cluster])
        .timeout(EXPORT_LOGS_TIMEOUT)
}

pub(crate) async fn delete_verified(
    runner: &Runner,
    tools: &Tools,
    handle: &ClusterHandle,
) -> Result<()> {
    if !handle.owned {
        bail!(
            "refusing to delete kind cluster {}: the suite did not create it",
            handle.name
        );
    }
    let cmd = delete_cmd(tools, handle);
    let deleted = runner.run(&cmd).await;
    if runner.is_dry_run() {
        runner.step(format!(
            "verify with `kind get clusters` that {} is gone",
            handle.name
        ));
        return Ok(());
    }
    // The listing decides: kind exits 0 for a cluster that does not exist, and non-zero when
    // it failed to update the kubeconfig after deleting the nodes (`Cluster`,
    // kubernetes-sigs/kind pkg/cluster/internal/delete/delete.go).
    let left = list_clusters(runner, tools).await?;
    let still_listed = left.iter().any(|c| c == &handle.name);
    match (deleted, still_listed) {
        (Err(err), false) => {
            eprintln!(
                "warning: `kind delete cluster` failed ({err:#}), but kind cluster {} is gone",
                handle.name
            );
            Ok(())
        }
        (Ok(_), false) => Ok(()),
        (Err(err), true) => {
            Err(err).with_context(|| format!("deleting kind cluster {}", handle.name))
        }
        (Ok(_), true) => bail!(
            "kind cluster {} is still listed by `kind get clusters` after `kind delete cluster`",
            handle.name
        ),
    }
}

/// Copies a local image into every node. With Docker's containerd image store, `kind load
/// docker-image` can fail with `content digest … not found`: it runs `docker save` of the whole
/// multi-platform index, of which only the daemon's own platform is present, and the node's
/// `ctr images import --all-platforms` wants every blob (kind issue 3795). The same archive through
/// `kind load image-archive` fails the same way, so the fallback saves only the daemon's platform
/// (`docker save --platform linux/<arch>`, Docker 28.0 / API 1.48 and later) and loads that.
pub(crate) async fn load_image(
    runner: &Runner,
    tools: &Tools,
    state: &StateDir,
    image: &str,
    cluster: &str,
) -> Result<()> {
    let direct = tools
        .cmd(Tool::Kind)
        .args(["load", "docker-image", image, "--name", cluster])
        .timeout(LOAD_TIMEOUT);
    let err = match runner.run(&direct).await {
        Ok(_) => return Ok(()),
        Err(err) => err,
    };
    let text = format!("{err:#}");
    if !is_content_digest_error(&text) {
        return Err(err).with_context(|| format!("kind load {image} into cluster {cluster}"));
    }
    eprintln!(
        "kind load docker-image hit the containerd image store's `content digest` error (kind \
         issue 3795); loading the daemon's own platform through docker save --platform + kind \
         load image-archive"
    );
    let platform = if runner.is_dry_run() {
        "linux/<the daemon's arch>".to_string()
    } else {
        crate::tools::image::docker_platform(runner, tools.program(Tool::Docker)).await?
    };
    let archive = state.image_archive(cluster);
    std::fs::create_dir_all(&state.dir)
        .with_context(|| format!("creating {}", state.dir.display()))?;
    let save = tools
        .cmd(Tool::Docker)
        .args(["save", "--platform", &platform, "-o"])
        .arg(&archive)
        .arg(image)
        .timeout(LOAD_TIMEOUT);
    if let Err(err) = runner.run(&save).await {
        let _ = std::fs::remove_file(&archive);
        let text = format!("{err:#}");
        if save_platform_unsupported(&text) {
            bail!(
                "{text}\n`docker save --platform` needs Docker Engine 28.0 (API 1.48) or later, on \
                 the CLI and the daemon; this Docker is older, so the containerd image store's \
                 `content digest` error cannot be worked around here. Upgrade Docker, or turn the \
                 containerd image store off (`\"features\": {{\"containerd-snapshotter\": false}}` \
                 in /etc/docker/daemon.json, restart Docker) and run again"
            );
        }
        return Err(err).with_context(|| format!("docker save {image} to {}", archive.display()));
    }
    let load = tools
        .cmd(Tool::Kind)
        .args(["load", "image-archive"])
        .arg(&archive)
        .args(["--name", cluster])
        .timeout(LOAD_TIMEOUT);
    let result = runner.run(&load).await.with_context(|| {
        format!("kind load image-archive of {image} ({platform}) into cluster {cluster}")
    });
    let _ = std::fs::remove_file(&archive);
    result.map(|_| ())
}

/// What a Docker too old for `save --platform` says: a CLI before 28.0 does not know the flag
/// (cobra's `unknown flag: --platform`), a newer CLI facing an older daemon names the API version
/// (`"--platform" requires API version 1.48, but the Docker daemon API version is 1.41`).
fn save_platform_unsupported(text: &str) -> bool {
    text.contains("unknown flag: --platform")
        || (text.contains("--platform") && text.contains("requires API version"))
}

pub(crate) fn is_content_digest_error(text: &str) -> bool {
    text.contains("content digest") && text.contains("not found")
}

/// `kind export logs DIR --name N`: node journal, kubelet and container logs.
pub(crate) async fn export_logs(
    runner: &Runner,
    tools: &Tools,
    cluster: &str,
    dir: &Path,
) -> Result<()> {
    let cmd = export_logs_cmd(tools, cluster, dir);
    runner
        .run(&cmd)
        .await
        .with_context(|| format!("exporting the logs of kind cluster {cluster}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(pid: u32, host: &str) -> OwnerMarker {
        OwnerMarker {
            pid,
            host: host.into(),
            ..OwnerMarker::default()
        }
    }

    #[test]
    fn generated_names_carry_the_pid() {
        let name = new_cluster_name(4242, 0xbeef);
        assert_eq!(name, "istio-fft-e2e-4242-beef");
        assert_eq!(owner_pid(&name), Some(4242));
        assert!(
            name.len() <= 40,
            "kind node container names must stay short"
        );
    }

    #[test]
    fn other_names_are_not_ours() {
        for name in [
            CLI_CLUSTER_NAME,
            "istio-fft-e2e-dev",
            "istio-fft-e2e-12-xyz1",
            "istio-fft-e2e--beef",
            "someone-elses-cluster",
            "kind",
        ] {
            assert_eq!(owner_pid(name), None, "{name}");
        }
    }

    #[test]
    fn an_owner_is_judged_by_boot_namespace_pid_and_start_time() {
        let full = OwnerMarker {
            pid: 77,
            host: "h".into(),
            created_unix: 0,
            boot_id: Some("boot-1".into()),
            pid_namespace: Some("pid:[1]".into()),
            start_ticks: Some(500),
        };
        let same_process = |_| Some(Some(500));
        let no_process = |_| None;
        let reused_pid = |_| Some(Some(900));
        let here = (Some("boot-1"), Some("pid:[1]"));
        assert_eq!(
            judge_owner(&full, here.0, here.1, same_process),
            Owner::Alive
        );
        assert_eq!(judge_owner(&full, here.0, here.1, no_process), Owner::Gone);
        assert_eq!(
            judge_owner(&full, here.0, here.1, reused_pid),
            Owner::Gone,
            "pid reused"
        );
        // After a reboot nothing of the old boot runs, whatever has that pid now.
        assert_eq!(
            judge_owner(&full, Some("boot-2"), here.1, same_process),
            Owner::Gone
        );
        // Another container with the same host name: its pids are not ours to judge.
        assert_eq!(
            judge_owner(&full, here.0, Some("pid:[2]"), no_process),
            Owner::Unknowable
        );
        // A marker of an older harness: pid alone.
        let old = marker(77, "h");
        assert_eq!(judge_owner(&old, here.0, here.1, reused_pid), Owner::Alive);
        assert_eq!(judge_owner(&old, here.0, here.1, no_process), Owner::Gone);
    }

    #[test]
    fn this_process_is_its_own_live_owner() {
        let me = OwnerMarker::for_this_process();
        assert!(me.boot_id.is_some() && me.pid_namespace.is_some() && me.start_ticks.is_some());
        assert_eq!(owner_state(&me), Owner::Alive);
        let reused = OwnerMarker {
            start_ticks: me.start_ticks.map(|t| t + 1),
            ..me.clone()
        };
        assert_eq!(owner_state(&reused), Owner::Gone);
        // Markers written before these fields existed still read.
        let old: OwnerMarker =
            serde_json::from_str(r#"{"pid": 1, "host": "h", "created_unix": 0}"#).unwrap();
        assert_eq!(old.boot_id, None);
    }

    #[test]
    fn only_dead_owners_on_this_host_are_reaped() {
        let dead = |_: &OwnerMarker| Owner::Gone;
        let alive = |_: &OwnerMarker| Owner::Alive;
        let name = "istio-fft-e2e-77-0a0b";
        assert!(matches!(
            reap_decision(name, Some(&marker(77, "h")), "h", None, dead),
            ReapDecision::Reap { .. }
        ));
        for (marker, host, spared, alive_now) in [
            (Some(marker(77, "h")), "h", None, true),
            (Some(marker(77, "other")), "h", None, false),
            (Some(marker(78, "h")), "h", None, false),
            (None, "h", None, false),
            (Some(marker(77, "h")), "h", Some(name), false),
        ] {
            let decision = if alive_now {
                reap_decision(name, marker.as_ref(), host, spared, alive)
            } else {
                reap_decision(name, marker.as_ref(), host, spared, dead)
            };
            assert!(
                matches!(decision, ReapDecision::Leave { .. }),
                "{marker:?} {host} {spared:?} {alive_now}: {decision:?}"
            );
        }
        assert!(matches!(
            reap_decision(
                name,
                Some(&marker(77, "h")),
                "h",
                None,
                |_: &OwnerMarker| { Owner::Unknowable }
            ),
            ReapDecision::Leave { .. }
        ));
        assert!(matches!(
            reap_decision(
                "someone-elses-cluster",
                Some(&marker(77, "h")),
                "h",
                None,
                dead
            ),
            ReapDecision::Leave { .. }
        ));
    }

    #[test]
    fn this_process_is_alive_and_an_unused_pid_is_not() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(u32::MAX - 1));
    }

    #[test]
    fn the_kind_config_publishes_the_gateway_nodeport_on_loopback() {
        let config = KindConfig::load_default().unwrap();
        assert_eq!(
            config.host_mapping(30001),
            Some(("127.0.0.1".to_string(), 30001))
        );
        assert_eq!(config.host_mapping(30002), None);
    }

    #[test]
    fn content_digest_error_is_recognised() {
        let stderr = "ERROR: failed to load image: command \"docker exec --privileged -i \
                      kind-control-plane ctr --namespace=k8s.io images import --all-platforms \
                      --digests --snapshotter=overlayfs -\" failed with error: exit status 1\n\
                      ctr: content digest sha256:9a1b: not found";
        assert!(is_content_digest_error(stderr));
        assert!(!is_content_digest_error("ERROR: image not present locally"));
    }

    #[test]
    fn a_port_holder_is_named_with_the_way_out() {
        assert_eq!(port_holder_problem("", "127.0.0.1", 30001), None);
        assert_eq!(port_holder_problem("\n", "127.0.0.1", 30001), None);
        assert_eq!(
            port_holder_problem(
                "istio-fft-e2e-4242-beef-control-plane\n",
                "127.0.0.1",
                30001
            )
            .unwrap(),
            "cluster istio-fft-e2e-4242-beef holds 127.0.0.1:30001: reuse it with \
             E2E_CLUSTER=istio-fft-e2e-4242-beef, or delete it: kind delete cluster --name \
             istio-fft-e2e-4242-beef"
        );
        let other = port_holder_problem("web\n", "127.0.0.1", 30001).unwrap();
        assert!(
            other.contains("container web holds 127.0.0.1:30001")
                && other.contains("docker stop web")
                && other.contains("manifests/kind-cluster.yaml"),
            "{other}"
        );
    }

    #[test]
    fn the_kind_config_binds_only_the_gateway_port() {
        let config = KindConfig::load_default().unwrap();
        assert_eq!(config.host_ports(), [("127.0.0.1".to_string(), 30001)]);
    }

    #[test]
    fn reach_hint_names_the_commands() {
        let handle = ClusterHandle {
            name: "istio-fft-e2e-1-abcd".into(),
            kubeconfig: PathBuf::from("/x"),
            owned: true,
        };
        let hint = handle.reach_hint();
        assert!(hint.contains("kind export kubeconfig --name istio-fft-e2e-1-abcd"));
        assert!(hint.contains("kubectl --context kind-istio-fft-e2e-1-abcd"));
    }
}
