//! Choosing and bringing up the target the suite runs against, from the `E2E_*` knobs.

use anyhow::Result;

use crate::config::knobs::{Knobs, TargetChoice};
use crate::env::Environment;
use crate::env::cluster;
use crate::env::local::{LocalEnvironment, LocalOptions};
use crate::env::timings::Timings;
use crate::exec::cmd::Runner;
use crate::tools::preflight::{self, Missing};

/// The target that runs, decided.
pub(crate) enum Chosen {
    Local,
    /// With its settings; its preflight has run.
    Kind(cluster::Settings),
    Existing(cluster::Settings),
}

/// Decides which target runs. `auto` and `kind` are decided by the kind target's one preflight
/// (timed as the `preflight` phase, not repeated by the bring-up): `auto` runs kind when its
/// prerequisites are met and falls back to `local` saying why (loudly: a run on `local` proves
/// less than one on kind); `E2E_TARGET=kind` is skipped with the reasons ([`Skipped`]), or fails
/// listing them with `E2E_REQUIRE=1`.
pub(crate) async fn choose(
    choice: TargetChoice,
    knobs: &Knobs,
    runner: &Runner,
    times: &mut Timings,
) -> Result<Chosen> {
    let settings = match choice {
        TargetChoice::Local => return Ok(Chosen::Local),
        TargetChoice::Existing => {
            return Ok(Chosen::Existing(cluster::Settings::from_knobs(
                cluster::Mode::Existing,
                knobs,
            )?));
        }
        TargetChoice::Kind | TargetChoice::Auto => {
            cluster::Settings::from_knobs(cluster::Mode::Kind, knobs)?
        }
    };
    let report = times
        .time("preflight", cluster::check_prerequisites(runner, &settings))
        .await?;
    match decide_kind(choice == TargetChoice::Kind, knobs.require, &report.missing) {
        KindDecision::UseKind => {
            if choice == TargetChoice::Auto {
                eprintln!(
                    "\n*** E2E_TARGET=auto: the kind target's prerequisites are met: running on kind ***\n"
                );
            }
            Ok(Chosen::Kind(settings))
        }
        KindDecision::Fail { reasons } => {
            anyhow::bail!("E2E_REQUIRE=1: the kind target's prerequisites are missing:\n{reasons}")
        }
        KindDecision::Skip { reasons } => Err(Skipped { reasons }.into()),
        KindDecision::FallBackToLocal { reasons } => {
            eprintln!(
                "\n*** E2E_TARGET=auto: the kind target's prerequisites are missing, so the suite \
                 runs on the LOCAL target (real Envoy from the same Gateway/VirtualService, no \
                 Kubernetes); install them (scripts/install-tools.sh) or set E2E_TARGET=local to \
                 silence this:\n{reasons} ***\n"
            );
            Ok(Chosen::Local)
        }
    }
}

/// Brings up the target the knobs choose, recording its phases in `times`. An interruption
/// meanwhile is the runner's: it runs the cleanups registered so far.
pub(crate) async fn bring_up(
    knobs: &Knobs,
    runner: &Runner,
    times: &mut Timings,
) -> Result<Box<dyn Environment>> {
    match choose(knobs.target, knobs, runner, times).await? {
        Chosen::Local => {
            let options = LocalOptions::from_knobs(knobs);
            Ok(Box::new(
                LocalEnvironment::start(&options, runner, times).await?,
            ))
        }
        Chosen::Kind(settings) => {
            cluster::up(runner.clone(), settings, cluster::Preflight::Done, times).await
        }
        Chosen::Existing(settings) => {
            cluster::up(runner.clone(), settings, cluster::Preflight::Run, times).await
        }
    }
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
}
