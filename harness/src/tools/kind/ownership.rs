//! Who owns a kind cluster, and the reaping of the clusters killed runs left behind.
//!
//! A cluster the suite creates is named `istio-fft-e2e-<pid>-<random>` and gets an
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

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::{CLUSTER_PREFIX, ClusterHandle, StateDir, delete_verified, list_clusters};
use crate::exec::cmd::Runner;
use crate::tools::preflight::Tools;

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

#[cfg(test)]
mod tests {
    use super::super::{CLI_CLUSTER_NAME, new_cluster_name};
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
}
