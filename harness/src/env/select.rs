//! Choosing and bringing up the target the suite runs against, from the `E2E_*` knobs.

use anyhow::Result;

use crate::config::knobs::{Knobs, TargetChoice};
use crate::env::Environment;
use crate::env::cluster;
use crate::env::local::{LocalEnvironment, LocalOptions};
use crate::env::timings::Timings;
use crate::exec::cmd::Runner;
use crate::tools::preflight::{self, Missing};

/// Tools the `kind` target cannot run without.
pub(crate) const KIND_PREREQUISITES: [&str; 3] = ["docker", "kind", "istioctl"];

/// The kind prerequisites found neither in `.tools/bin` (where scripts/install-tools.sh puts
/// them) nor on `PATH`. A first, cheap look: the kind bring-up then checks versions and that the
/// Docker daemon answers (`preflight`).
pub(crate) fn missing_kind_prerequisites() -> Vec<&'static str> {
    let search = crate::tools::preflight::ToolSearch::from_env();
    KIND_PREREQUISITES
        .into_iter()
        .filter(|tool| search.find(tool).is_none())
        .collect()
}

/// What `auto` resolves to, and why (printed loudly: a run on `local` proves less than one on
/// `kind`, and the reader must know which one ran).
pub(crate) fn resolve_target(
    choice: TargetChoice,
    missing: &[&str],
) -> (TargetChoice, Option<String>) {
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
pub(crate) async fn bring_up(
    knobs: &Knobs,
    runner: &Runner,
    times: &mut Timings,
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

/// The kind or existing target. For kind, the full preflight decides: `auto` falls back to
/// `local` saying why, `E2E_TARGET=kind` is skipped with the reasons ([`Skipped`]), or
/// fails listing them with `E2E_REQUIRE=1`.
async fn bring_up_cluster_target(
    target: TargetChoice,
    knobs: &Knobs,
    runner: &Runner,
    times: &mut Timings,
) -> Result<Box<dyn Environment>> {
    let mode = match target {
        TargetChoice::Existing => cluster::Mode::Existing,
        _ => cluster::Mode::Kind,
    };
    let settings = cluster::Settings::from_knobs(mode, knobs)?;
    if mode == cluster::Mode::Kind {
        // The target's one preflight: it decides here whether kind runs at all, and the
        // bring-up below does not repeat it.
        let report = times
            .time("preflight", cluster::check_prerequisites(runner, &settings))
            .await?;
        let explicit = knobs.target == TargetChoice::Kind;
        match decide_kind(explicit, knobs.require, &report.missing) {
            KindDecision::UseKind => {}
            KindDecision::Fail { reasons } => {
                anyhow::bail!(
                    "E2E_REQUIRE=1: the kind target's prerequisites are missing:\n{reasons}"
                )
            }
            KindDecision::Skip { reasons } => {
                return Err(Skipped { reasons }.into());
            }
            KindDecision::FallBackToLocal { reasons } => {
                eprintln!(
                    "\n*** E2E_TARGET=auto: the kind target's prerequisites are missing, so the \
                     suite runs on the LOCAL target:\n{reasons} ***\n"
                );
                let options = LocalOptions {
                    offline: knobs.offline,
                    artifacts: Some(knobs.artifacts.clone()),
                    ..LocalOptions::default()
                };
                return Ok(Box::new(
                    LocalEnvironment::start(&options, runner, times).await?,
                ));
            }
        }
    }
    // An interruption meanwhile is the runner's: it runs the cleanups registered so far.
    let preflight = match mode {
        cluster::Mode::Kind => cluster::Preflight::Done,
        cluster::Mode::Existing => cluster::Preflight::Run,
    };
    cluster::up(runner.clone(), settings, preflight, times).await
}

/// `E2E_TARGET=kind` without `E2E_REQUIRE`, and prerequisites are missing: the suite reports
/// itself skipped with these reasons.
#[derive(Debug, thiserror::Error)]
#[error(
    "the kind target is skipped: its prerequisites are missing (E2E_REQUIRE=1 fails instead):\n{reasons}"
)]
pub(crate) struct Skipped {
    pub reasons: String,
}

/// What target selection decides for `kind` given its prerequisites.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KindDecision {
    UseKind,
    /// `auto`: fall back to `local`, saying why.
    FallBackToLocal {
        reasons: String,
    },
    /// `E2E_TARGET=kind` without `E2E_REQUIRE`: skip, saying why.
    Skip {
        reasons: String,
    },
    /// `E2E_REQUIRE=1`: fail, listing what is missing.
    Fail {
        reasons: String,
    },
}

/// Pure decision for target selection (`auto` / `kind`, with or without `E2E_REQUIRE`).
pub fn decide_kind(explicit_kind: bool, require: bool, missing: &[Missing]) -> KindDecision {
    if missing.is_empty() {
        return KindDecision::UseKind;
    }
    let reasons = preflight::describe_missing(missing);
    match (explicit_kind, require) {
        (_, true) => KindDecision::Fail { reasons },
        (true, false) => KindDecision::Skip { reasons },
        (false, false) => KindDecision::FallBackToLocal { reasons },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::preflight::Tool;

    fn missing() -> Vec<Missing> {
        vec![Missing {
            tool: Tool::Kind,
            problem: "not found in .tools/bin or on PATH".into(),
            fix: "scripts/install-tools.sh kind".into(),
        }]
    }

    #[test]
    fn selection_falls_back_skips_or_fails_with_the_reasons() {
        assert_eq!(decide_kind(true, true, &[]), KindDecision::UseKind);
        let KindDecision::FallBackToLocal { reasons } = decide_kind(false, false, &missing())
        else {
            panic!("auto falls back to local")
        };
        assert!(
            reasons.contains("scripts/install-tools.sh kind"),
            "{reasons}"
        );
        assert!(matches!(
            decide_kind(true, false, &missing()),
            KindDecision::Skip { .. }
        ));
        assert!(matches!(
            decide_kind(true, true, &missing()),
            KindDecision::Fail { .. }
        ));
        assert!(matches!(
            decide_kind(false, true, &missing()),
            KindDecision::Fail { .. }
        ));
    }

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
