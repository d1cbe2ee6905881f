//! How long each phase of a run took, printed as it ends and kept for the summary.

use std::time::{Duration, Instant};

/// Phases in the order they ended.
#[derive(Clone, Debug, Default)]
pub struct PhaseTimes {
    phases: Vec<(String, Duration)>,
}

impl PhaseTimes {
    /// Runs `phase`, then prints and records how long it took (also when it failed).
    pub async fn time<T>(&mut self, name: &str, phase: impl std::future::Future<Output = T>) -> T {
        let start = Instant::now();
        let result = phase.await;
        self.record(name, start.elapsed());
        result
    }

    pub fn record(&mut self, name: &str, took: Duration) {
        eprintln!("phase {name}: {:.2} s", took.as_secs_f64());
        self.phases.push((name.to_string(), took));
    }

    pub fn phases(&self) -> &[(String, Duration)] {
        &self.phases
    }

    /// `name 0.12 s, name 1.30 s`
    pub fn summary(&self) -> String {
        self.phases
            .iter()
            .map(|(name, took)| format!("{name} {:.2} s", took.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}
