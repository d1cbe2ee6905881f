//! The Markdown a GitHub Actions step appends to its job summary: the verdict counts, the failed
//! scenarios with their messages, the phases and the latency breakdown.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::{RunReport, Verdict};

/// Appends the summary of `report` to `path` (GitHub concatenates what every step appends).
pub(crate) fn append(path: &Path, report: &RunReport) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    file.write_all(markdown(report).as_bytes())
        .with_context(|| format!("appending to {}", path.display()))
}

/// A table cell: one line, pipes escaped, long messages cut.
fn cell(text: &str) -> String {
    let one_line = text.replace('\n', " ").replace('|', "\\|");
    if one_line.chars().count() > 300 {
        format!("{}…", one_line.chars().take(300).collect::<String>())
    } else {
        one_line
    }
}

pub(crate) fn markdown(report: &RunReport) -> String {
    let c = report.counts;
    let mut out = format!(
        "## istio-fft-e2e: {}\n\n{}\n\n**{} passed, {} failed, {} not applicable, {} not run**\n\n",
        report.outcome.label(),
        cell(&report.target),
        c.passed,
        c.failed,
        c.not_applicable,
        c.not_run
    );
    let failed: Vec<_> = report
        .scenarios
        .iter()
        .filter_map(|s| match &s.verdict {
            Verdict::Failed(message) => Some((s, message)),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        out.push_str("| failed scenario | message |\n|---|---|\n");
        for (scenario, message) in failed {
            out.push_str(&format!("| `{}` | {} |\n", scenario.name, cell(message)));
        }
        out.push('\n');
    }
    if !report.phases.is_empty() {
        out.push_str("| phase | seconds | |\n|---|---:|---|\n");
        for phase in &report.phases {
            let ok = if phase.ok { "" } else { "failed" };
            out.push_str(&format!(
                "| {} | {:.2} | {ok} |\n",
                cell(&phase.phase),
                phase.seconds
            ));
        }
        out.push_str(&format!(
            "| **total** | **{:.2}** | |\n\n",
            report.total_seconds
        ));
    }
    if let Some(latency) = &report.latency {
        out.push_str(&format!(
            "Latency of {} × `{}`, in ms:\n\n| hop | p50 | p90 | p99 |\n|---|---:|---:|---:|\n",
            latency.requests, latency.request
        ));
        let row = |name: &str, p: &crate::checks::latency::Percentiles| {
            format!("| {name} | {:.3} | {:.3} | {:.3} |\n", p.p50, p.p90, p.p99)
        };
        out.push_str(&row("round trip", &latency.round_trip_ms));
        for (name, p) in latency.hops() {
            out.push_str(&row(name, p));
        }
        for note in &latency.notes {
            out.push_str(&format!("\n> {}", cell(note)));
        }
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_report;

    #[test]
    fn counts_failures_and_phases_in_markdown() {
        let text = markdown(&sample_report(None));
        assert!(
            text.contains("**1 passed, 1 failed, 1 not applicable, 1 not run**"),
            "{text}"
        );
        assert!(
            text.contains("| `gateway_404::get_root` | GET /: expected"),
            "{text}"
        );
        assert!(text.contains("| teardown | 0.25 |"), "{text}");
        assert!(text.contains("| **total** | **0.75** |"), "{text}");
        assert!(!text.contains("Latency"), "no breakdown, no table: {text}");
    }

    #[test]
    fn a_cell_stays_one_line_without_breaking_the_table() {
        assert_eq!(cell("a | b\nc"), "a \\| b c");
        assert_eq!(cell(&"x".repeat(400)).chars().count(), 301);
    }
}
