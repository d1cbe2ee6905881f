//! How long each phase took: printed as it ends and written as JSON to the artifacts, so a slow
//! run shows where the time went.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

pub(crate) const TIMINGS_FILE: &str = "timings.json";

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PhaseTiming {
    pub phase: String,
    pub seconds: f64,
    pub ok: bool,
}

/// Phases in the order they ran.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    phases: Vec<PhaseTiming>,
}

impl Timings {
    /// Runs `phase`, printing and recording its duration whether it succeeds or not; a long one
    /// shows a live line on a terminal meanwhile.
    pub(crate) async fn time<T>(
        &mut self,
        phase: &str,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        let result = crate::exec::progress::while_running(phase, work).await;
        self.record(phase, started.elapsed(), result.is_ok());
        result
    }

    pub(crate) fn record(&mut self, phase: &str, took: Duration, ok: bool) {
        crate::exec::progress::eprint_line(&format!(
            "phase {phase}: {:.2} s{}",
            took.as_secs_f64(),
            if ok { "" } else { " (failed)" }
        ));
        self.phases.push(PhaseTiming {
            phase: phase.to_string(),
            seconds: took.as_secs_f64(),
            ok,
        });
    }

    pub fn phases(&self) -> &[PhaseTiming] {
        &self.phases
    }

    /// `name 0.12 s, name 1.30 s (failed)`
    pub(crate) fn summary(&self) -> String {
        self.phases
            .iter()
            .map(|p| {
                let failed = if p.ok { "" } else { " (failed)" };
                format!("{} {:.2} s{failed}", p.phase, p.seconds)
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub(crate) fn total_seconds(&self) -> f64 {
        self.phases.iter().map(|p| p.seconds).sum()
    }

    /// Writes `timings.json` under `dir` and returns its path.
    pub(crate) fn write_json(&self, dir: &Path, target: &str) -> Result<PathBuf> {
        #[derive(Serialize)]
        struct File<'a> {
            target: &'a str,
            total_seconds: f64,
            phases: &'a [PhaseTiming],
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(TIMINGS_FILE);
        let file = File {
            target,
            total_seconds: self.total_seconds(),
            phases: &self.phases,
        };
        std::fs::write(&path, serde_json::to_vec_pretty(&file)?)
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_phase_is_recorded_even_when_it_fails() {
        let mut timings = Timings::default();
        timings.time("cluster", async { Ok(()) }).await.unwrap();
        let failed: Result<()> = timings
            .time("istio", async { anyhow::bail!("no istiod") })
            .await;
        assert!(failed.is_err());
        let names: Vec<(&str, bool)> = timings
            .phases()
            .iter()
            .map(|p| (p.phase.as_str(), p.ok))
            .collect();
        assert_eq!(names, [("cluster", true), ("istio", false)]);
        let dir = tempfile::tempdir().unwrap();
        let path = timings.write_json(dir.path(), "kind").unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(json["target"], "kind");
        assert_eq!(json["phases"][1]["phase"], "istio");
        assert_eq!(json["phases"][1]["ok"], false);
    }
}
