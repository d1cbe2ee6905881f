//! What a run leaves for people and CI systems, all from one [`RunReport`]: `report.json` (the
//! verdicts, phases, target and latency breakdown), `junit.xml` ([`junit`]), `latency.svg`
//! ([`chart`]) in the artifacts folder, and a Markdown job summary ([`summary`]) appended to
//! `$GITHUB_STEP_SUMMARY` when it is set.

pub(crate) mod chart;
pub(crate) mod junit;
pub(crate) mod summary;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::checks::LatencyBreakdown;
use crate::env::timings::PhaseTiming;

pub(crate) const REPORT_FILE: &str = "report.json";
pub(crate) const JUNIT_FILE: &str = "junit.xml";
pub(crate) const CHART_FILE: &str = "latency.svg";
/// Where GitHub Actions takes a step's Markdown summary from.
pub(crate) const STEP_SUMMARY_VAR: &str = "GITHUB_STEP_SUMMARY";
/// The version of `report.json`'s layout; it changes only when a field changes meaning or goes.
const SCHEMA: u32 = 1;

/// How a scenario ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict", content = "message")]
pub(crate) enum Verdict {
    Passed(String),
    Failed(String),
    NotApplicable(String),
    /// Selected but never run: the bring-up failed or the run was cut short.
    NotRun(String),
}

/// One scenario's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct ScenarioRecord {
    /// `group::name`, as cargo's filters see it.
    pub name: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    pub seconds: f64,
}

impl ScenarioRecord {
    /// The group (`routing`), which JUnit calls the class.
    pub(crate) fn class(&self) -> &str {
        self.name.split_once("::").map_or("", |(class, _)| class)
    }

    /// The name within the group.
    pub(crate) fn short_name(&self) -> &str {
        self.name
            .split_once("::")
            .map_or(&self.name, |(_, name)| name)
    }
}

/// How the run as a whole ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RunOutcome {
    Passed,
    Failed,
    /// The target's prerequisites are missing and nothing required them.
    Skipped,
    BringUpFailed,
    CutShort,
}

impl RunOutcome {
    pub(crate) fn label(self) -> &'static str {
        match self {
            RunOutcome::Passed => "passed",
            RunOutcome::Failed => "FAILED",
            RunOutcome::Skipped => "skipped",
            RunOutcome::BringUpFailed => "bring-up FAILED",
            RunOutcome::CutShort => "cut short",
        }
    }
}

/// Counts of verdicts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub not_applicable: usize,
    pub not_run: usize,
}

/// Everything the reports say about one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub(crate) struct RunReport {
    pub schema: u32,
    pub outcome: RunOutcome,
    /// The environment, in one line (`local: Envoy 1.40.0 on …`), or why there was none.
    pub target: String,
    /// Envoy, kind, Istio, Kubernetes, node image: whatever the target knows.
    pub versions: BTreeMap<String, String>,
    pub counts: Counts,
    pub scenarios: Vec<ScenarioRecord>,
    pub phases: Vec<PhaseTiming>,
    pub total_seconds: f64,
    pub latency: Option<LatencyBreakdown>,
}

impl RunReport {
    pub(crate) fn new(
        outcome: RunOutcome,
        target: String,
        versions: BTreeMap<String, String>,
        scenarios: Vec<ScenarioRecord>,
        phases: Vec<PhaseTiming>,
        latency: Option<LatencyBreakdown>,
    ) -> Self {
        let mut counts = Counts::default();
        for scenario in &scenarios {
            match scenario.verdict {
                Verdict::Passed(_) => counts.passed += 1,
                Verdict::Failed(_) => counts.failed += 1,
                Verdict::NotApplicable(_) => counts.not_applicable += 1,
                Verdict::NotRun(_) => counts.not_run += 1,
            }
        }
        let total_seconds = phases.iter().map(|p| p.seconds).sum();
        RunReport {
            schema: SCHEMA,
            outcome,
            target,
            versions,
            counts,
            scenarios,
            phases,
            total_seconds,
            latency,
        }
    }

    /// Writes every report into `dir`, and appends the job summary to `step_summary` (the file
    /// `$GITHUB_STEP_SUMMARY` names, see [`step_summary_file`]). A report that cannot be written
    /// is a warning: the verdicts on stdout stand.
    pub(crate) fn write_all(&self, dir: &Path, step_summary: Option<&Path>) -> Vec<PathBuf> {
        let mut written = Vec::new();
        if let Err(err) = std::fs::create_dir_all(dir) {
            eprintln!("warning: creating {}: {err}", dir.display());
            return written;
        }
        let mut write = |file: &str, result: Result<Vec<u8>>| {
            let path = dir.join(file);
            match result.and_then(|bytes| {
                std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
            }) {
                Ok(()) => written.push(path),
                Err(err) => eprintln!("warning: {file}: {err:#}"),
            }
        };
        write(
            REPORT_FILE,
            serde_json::to_vec_pretty(self).context("encoding the report"),
        );
        write(JUNIT_FILE, junit::xml(self).map(String::into_bytes));
        if let Some(latency) = &self.latency {
            write(CHART_FILE, chart::svg(latency).map(String::into_bytes));
        }
        if let Some(path) = step_summary {
            match summary::append(path, self) {
                Ok(()) => written.push(path.to_path_buf()),
                Err(err) => eprintln!("warning: the job summary: {err:#}"),
            }
        }
        written
    }
}

/// The file GitHub Actions reads a step's Markdown summary from, when the run is a step.
pub(crate) fn step_summary_file() -> Option<PathBuf> {
    std::env::var_os(STEP_SUMMARY_VAR)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_report(latency: Option<LatencyBreakdown>) -> RunReport {
        let record = |name: &str, verdict: Verdict| ScenarioRecord {
            name: name.into(),
            verdict,
            seconds: 0.25,
        };
        RunReport::new(
            RunOutcome::Failed,
            "local: Envoy 1.40.0 on 127.0.0.1:1234".into(),
            [("envoy".to_string(), "1.40.0".to_string())].into(),
            vec![
                record("routing::post_fft_prefix", Verdict::Passed("200".into())),
                record(
                    "gateway_404::get_root",
                    Verdict::Failed("GET /: expected gateway 404, got 200 <&> \"x\"".into()),
                ),
                record(
                    "kubernetes::sidecars_injected",
                    Verdict::NotApplicable("needs Kubernetes".into()),
                ),
                record(
                    "resilience::replica_killed",
                    Verdict::NotRun("cut short".into()),
                ),
            ],
            vec![
                PhaseTiming {
                    phase: "envoy start".into(),
                    seconds: 0.5,
                    ok: true,
                },
                PhaseTiming {
                    phase: "teardown".into(),
                    seconds: 0.25,
                    ok: true,
                },
            ],
            latency,
        )
    }

    #[test]
    fn report_json_has_its_documented_fields() {
        let report = sample_report(None);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["schema"], 1);
        assert_eq!(json["outcome"], "failed");
        assert_eq!(
            json["counts"],
            serde_json::json!({"passed": 1, "failed": 1, "not_applicable": 1, "not_run": 1})
        );
        assert_eq!(json["scenarios"][1]["name"], "gateway_404::get_root");
        assert_eq!(json["scenarios"][1]["verdict"], "failed");
        assert!(
            json["scenarios"][1]["message"]
                .as_str()
                .unwrap()
                .contains("expected")
        );
        assert_eq!(json["scenarios"][2]["verdict"], "not_applicable");
        assert_eq!(json["phases"][1]["phase"], "teardown");
        assert_eq!(json["total_seconds"], 0.75);
        assert!(json["latency"].is_null());
        assert_eq!(json["versions"]["envoy"], "1.40.0");
    }

    #[test]
    fn every_report_is_written_and_a_summary_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let artifacts = dir.path().join("artifacts");
        let written = sample_report(None).write_all(&artifacts, None);
        assert_eq!(
            written,
            [artifacts.join(REPORT_FILE), artifacts.join(JUNIT_FILE)],
            "no latency: no chart; no summary file: no summary"
        );
        let summary = dir.path().join("summary.md");
        std::fs::write(&summary, "earlier step\n").unwrap();
        let written = sample_report(None).write_all(&artifacts, Some(&summary));
        assert_eq!(written.last(), Some(&summary));
        let text = std::fs::read_to_string(&summary).unwrap();
        assert!(
            text.starts_with("earlier step\n"),
            "appended, not replaced: {text}"
        );
        assert!(text.contains("gateway_404::get_root"), "{text}");
    }
}
