//! Choosing and bringing up the target the suite runs against, from the `E2E_*` knobs.

use anyhow::Result;

use crate::cmd::Runner;
use crate::knobs::{Knobs, TargetChoice};
use crate::local::{LocalEnvironment, LocalOptions};
use crate::target::Environment;
use crate::timing::PhaseTimes;

/// Tools the `kind` target cannot run without.
pub const KIND_PREREQUISITES: [&str; 3] = ["docker", "kind", "istioctl"];

/// The kind prerequisites missing from `PATH`.
pub fn missing_kind_prerequisites() -> Vec<&'static str> {
    KIND_PREREQUISITES
        .into_iter()
        .filter(|tool| which::which(tool).is_err())
        .collect()
}

/// What `auto` resolves to, and why (printed loudly: a run on `local` proves less than one on
/// `kind`, and the reader must know which one ran).
pub fn resolve_target(choice: TargetChoice, missing: &[&str]) -> (TargetChoice, Option<String>) {
    match choice {
        TargetChoice::Auto if missing.is_empty() => (
            TargetChoice::Kind,
            Some("E2E_TARGET=auto: docker, kind and istioctl found: running on kind".into()),
        ),
        TargetChoice::Auto => (
            TargetChoice::Local,
            Some(format!(
                "E2E_TARGET=auto: {} not found on PATH, so the suite runs on the LOCAL target \
                 (real Envoy from the same Gateway/VirtualService, no Kubernetes); install them \
                 (scripts/install-tools.sh) or set E2E_TARGET=local to silence this",
                missing.join(", ")
            )),
        ),
        other => (other, None),
    }
}

/// Brings up the target the knobs choose.
pub async fn bring_up(
    knobs: &Knobs,
    runner: &Runner,
    times: &mut PhaseTimes,
) -> Result<Box<dyn Environment>> {
    let (target, why) = resolve_target(knobs.target, &missing_kind_prerequisites());
    if let Some(why) = why {
        eprintln!("\n*** {why} ***\n");
    }
    match target {
        TargetChoice::Local => {
            let options = LocalOptions {
                offline: knobs.offline,
                artifacts: Some(knobs.artifacts.clone()),
                ..LocalOptions::default()
            };
            let env = LocalEnvironment::start(&options, runner, times).await?;
            Ok(Box::new(env))
        }
        TargetChoice::Kind | TargetChoice::Existing => {
            bring_up_cluster_target(target, knobs, runner, times).await
        }
        TargetChoice::Auto => unreachable!("resolve_target never returns auto"),
    }
}

/// PLACEHOLDER until the cluster targets land: the `kind` and `existing` bring-up replaces this
/// function's body.
async fn bring_up_cluster_target(
    target: TargetChoice,
    _knobs: &Knobs,
    _runner: &Runner,
    _times: &mut PhaseTimes,
) -> Result<Box<dyn Environment>> {
    Err(cluster_target_not_built(target))
}

/// PLACEHOLDER until the cluster targets land (used by the suite and by `harness up/down`).
pub fn cluster_target_not_built(target: TargetChoice) -> anyhow::Error {
    anyhow::anyhow!(
        "target `{}` is not built yet; use the local target (E2E_TARGET=local, --target local)",
        target.as_str()
    )
}

/// Waits for SIGINT or SIGTERM and says which arrived.
pub async fn termination_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(err) => {
            eprintln!("warning: cannot watch SIGTERM ({err}); only Ctrl-C stops this");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_falls_back_to_local_and_says_what_is_missing() {
        let (target, why) = resolve_target(TargetChoice::Auto, &["kind", "istioctl"]);
        assert_eq!(target, TargetChoice::Local);
        let why = why.unwrap();
        assert!(why.contains("kind, istioctl not found"), "{why}");
        assert!(why.contains("LOCAL"), "{why}");
    }

    #[test]
    fn auto_picks_kind_when_everything_is_there() {
        assert_eq!(
            resolve_target(TargetChoice::Auto, &[]).0,
            TargetChoice::Kind
        );
    }

    #[test]
    fn an_explicit_target_is_kept() {
        for choice in [
            TargetChoice::Local,
            TargetChoice::Kind,
            TargetChoice::Existing,
        ] {
            assert_eq!(resolve_target(choice, &["kind"]), (choice, None));
        }
    }
}
