//! The live line of a long phase: on a terminal, a phase that has run longer than
//! [`SHOW_AFTER`] shows its name and elapsed time (`indicatif`), redrawn until it ends; without a
//! terminal (CI, a pipe) nothing is drawn and the plain lines stay as they are. Only stderr is
//! touched, never stdout.
//!
//! Lines the harness prints while the live line is up go through [`eprint_line`], which lifts
//! the live line out of the way first.

use std::future::Future;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long a phase runs before its live line appears: short phases stay quiet.
pub(crate) const SHOW_AFTER: Duration = Duration::from_secs(2);
/// How often the elapsed time is redrawn.
const TICK: Duration = Duration::from_millis(200);

/// The live line now shown, if any.
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Runs `work`, showing a live line for `phase` once it has taken [`SHOW_AFTER`], when stderr is
/// a terminal.
pub(crate) async fn while_running<F: Future>(phase: &str, work: F) -> F::Output {
    if !std::io::stderr().is_terminal() {
        return work.await;
    }
    let started = Instant::now();
    let mut work = std::pin::pin!(work);
    tokio::select! {
        output = &mut work => return output,
        // A display delay, not a wait for a condition: the work goes on either way.
        () = tokio::time::sleep(SHOW_AFTER) => {}
    }
    let bar = live_line(phase, started.elapsed(), ProgressDrawTarget::stderr());
    *SHOWN.lock().unwrap_or_else(|p| p.into_inner()) = Some(bar.clone());
    let output = work.await;
    SHOWN.lock().unwrap_or_else(|p| p.into_inner()).take();
    bar.finish_and_clear();
    output
}

/// A spinner with the phase's name and its elapsed time, counted from the phase's start.
fn live_line(phase: &str, elapsed: Duration, target: ProgressDrawTarget) -> ProgressBar {
    let style =
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template");
    let bar = ProgressBar::with_draw_target(None, target)
        .with_style(style)
        .with_message(phase.to_string())
        .with_elapsed(elapsed);
    bar.enable_steady_tick(TICK);
    bar
}

/// Prints `line` on stderr, above the live line when one is shown.
pub(crate) fn eprint_line(line: &str) {
    let shown = SHOWN.lock().unwrap_or_else(|p| p.into_inner()).clone();
    match shown {
        Some(bar) => bar.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_terminal_the_work_runs_unchanged() {
        // The test harness captures stderr: no terminal, so no live line and no delay.
        let started = Instant::now();
        assert_eq!(while_running("quick", async { 7 }).await, 7);
        assert!(started.elapsed() < SHOW_AFTER);
        assert!(SHOWN.lock().unwrap().is_none());
    }

    #[test]
    fn the_live_line_names_the_phase_and_counts_from_its_start() {
        let bar = live_line(
            "kind create",
            Duration::from_secs(3),
            ProgressDrawTarget::hidden(),
        );
        assert_eq!(bar.message(), "kind create");
        assert!(
            bar.elapsed() >= Duration::from_secs(3),
            "{:?}",
            bar.elapsed()
        );
        bar.finish_and_clear();
    }
}
