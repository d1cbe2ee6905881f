//! kind clusters: create one from `manifests/kind-cluster.yaml`, reuse one by name, load an
//! image into it, delete it (verified), and reap the ones killed runs left behind.
//!
//! Who owns a cluster, and the reaping of what killed runs left: [`ownership`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::config::paths;
use crate::exec::cmd::{Cmd, Runner};
use crate::manifest::kind_config::KindConfig;
use crate::tools::preflight::{Tool, Tools};

mod ownership;

pub use ownership::{OwnerMarker, owner_pid, reap_stale, this_host};

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
