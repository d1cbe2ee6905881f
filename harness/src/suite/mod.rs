//! The scenario suite's runner, behind `cargo test --test e2e`: brings the chosen target
//! (`E2E_TARGET`) up once, runs every selected scenario through its gateway, saves diagnostics
//! when something failed and tears down according to `E2E_KEEP`. Cargo's filters select
//! scenarios by name (`cargo test --test e2e -- routing`); with nothing selected nothing is
//! brought up.
//!
//! A run can be cut short by SIGINT, SIGTERM, SIGHUP or its own deadline (`E2E_DEADLINE`): diagnostics
//! are collected first (bounded), then the environment is torn down, so a cancelled or timed-out
//! CI job still uploads what explains it and leaves nothing behind.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Completion, Failed, Trial};
use tokio::sync::RwLock;

use crate::checks::{self, CheckOutcome, LatencyBreakdown, NamedCheck};
use crate::config::knobs::Knobs;
use crate::env::Environment;
use crate::env::select;
use crate::env::timings::{PhaseTiming, Timings};
use crate::exec::cmd::Runner;
use crate::report::{RunOutcome, RunReport, ScenarioRecord, Verdict};

mod nextest;
mod server;

pub(crate) type SharedEnvironment = Arc<RwLock<Box<dyn Environment>>>;

/// How long an interruption waits for the running scenario before collecting anyway.
const RUNNING_SCENARIO_WAIT: Duration = Duration::from_secs(15);
/// The bound on collecting diagnostics when a run is cut short (`kind export logs` is the slow
/// part); the teardown after it has its own bound.
pub(crate) const INTERRUPTED_DIAGNOSTICS_BOUND: Duration = Duration::from_secs(150);

/// The verdicts so far and the latency breakdown, shared by the scenarios, the interruption
/// watcher and the end of the run.
#[derive(Debug, Default)]
pub(crate) struct Results {
    pub(crate) records: Vec<ScenarioRecord>,
    pub(crate) latency: Option<LatencyBreakdown>,
}

pub(crate) type SharedResults = Arc<Mutex<Results>>;

pub(crate) fn lock(results: &SharedResults) -> std::sync::MutexGuard<'_, Results> {
    results.lock().unwrap_or_else(|p| p.into_inner())
}

/// The run's report: the verdicts recorded, and `unrun` for every selected scenario without one.
fn run_report(
    outcome: RunOutcome,
    target: String,
    versions: BTreeMap<String, String>,
    results: &SharedResults,
    selected: &[String],
    unrun: Verdict,
    phases: Vec<PhaseTiming>,
) -> RunReport {
    let results = lock(results);
    let mut scenarios = results.records.clone();
    for name in selected {
        if !scenarios.iter().any(|s| &s.name == name) {
            scenarios.push(ScenarioRecord {
                name: name.clone(),
                verdict: unrun.clone(),
                seconds: 0.0,
            });
        }
    }
    RunReport::new(
        outcome,
        target,
        versions,
        scenarios,
        phases,
        results.latency.clone(),
    )
}

/// Writes the reports and says where they are.
fn write_reports(report: &RunReport, artifacts: &Path) {
    let written = report.write_all(artifacts, crate::report::step_summary_file().as_deref());
    if !written.is_empty() {
        let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        println!("reports written: {}", names.join(", "));
    }
}

/// Why a run ends before its scenarios do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interruption {
    Signal(&'static str),
    Deadline(Duration),
}

impl Interruption {
    /// The exit code: 128 + the signal's number, or 1 for the deadline.
    pub(crate) fn exit_code(self) -> i32 {
        match self {
            Interruption::Signal(name) => crate::exec::cleanup::signal_exit_code(name),
            Interruption::Deadline(_) => 1,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Interruption::Signal(name) => name,
            Interruption::Deadline(_) => "E2E_DEADLINE",
        }
    }
}

impl fmt::Display for Interruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Interruption::Signal(name) => write!(f, "{name} received"),
            Interruption::Deadline(limit) => write!(
                f,
                "the run's deadline of {} (E2E_DEADLINE) has passed",
                humantime::format_duration(*limit)
            ),
        }
    }
}

/// The next SIGINT, SIGTERM or SIGHUP, or the deadline, whichever comes first.
async fn next_interruption(
    signals: Option<&mut crate::exec::cleanup::TerminationSignals>,
    deadline: Duration,
) -> Interruption {
    let signal = async {
        match signals {
            Some(signals) => signals.recv().await,
            // Not listening (the warning said why): only the deadline ends the run early.
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        name = signal => Interruption::Signal(name),
        () = tokio::time::sleep(deadline) => Interruption::Deadline(deadline),
    }
}

/// What a cut-short run does before exiting: with an environment up, collect its diagnostics
/// (bounded) and tear it down (`keep` decides, as for a failed run); during bring-up, run the
/// registered cleanups (the kind cluster's exports its logs, then deletes it). Returns the exit
/// code.
pub(crate) async fn cut_short(
    why: Interruption,
    environment: Option<&SharedEnvironment>,
    artifacts: &Path,
    keep: bool,
) -> i32 {
    eprintln!("\n{why}: collecting diagnostics, then tearing down");
    let Some(environment) = environment else {
        run_pending(why).await;
        return why.exit_code();
    };
    match tokio::time::timeout(RUNNING_SCENARIO_WAIT, environment.write()).await {
        Ok(mut env) => {
            let _ = std::fs::create_dir_all(artifacts);
            if tokio::time::timeout(
                INTERRUPTED_DIAGNOSTICS_BOUND,
                env.collect_diagnostics(artifacts),
            )
            .await
            .is_err()
            {
                eprintln!(
                    "warning: collecting diagnostics took longer than \
                     {INTERRUPTED_DIAGNOSTICS_BOUND:?}; tearing down with what was saved"
                );
            }
            eprintln!("diagnostics saved under {}", artifacts.display());
            match tokio::time::timeout(crate::exec::cleanup::TEARDOWN_TIMEOUT, env.teardown(keep))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(err)) => eprintln!("warning: teardown: {err:#}"),
                Err(_) => {
                    eprintln!(
                        "warning: teardown took longer than {:?}",
                        crate::exec::cleanup::TEARDOWN_TIMEOUT
                    );
                    run_pending(why).await;
                }
            }
        }
        Err(_) => {
            eprintln!(
                "warning: the running scenario did not finish within {RUNNING_SCENARIO_WAIT:?}; \
                 running the registered cleanups (local child processes die with this process)"
            );
            run_pending(why).await;
        }
    }
    why.exit_code()
}

/// The registered cleanups (blocking commands), off the runtime's worker threads.
async fn run_pending(why: Interruption) {
    let label = why.label();
    let _ = tokio::task::spawn_blocking(move || crate::exec::cleanup::run_pending(label)).await;
}

/// `cargo test --test e2e`: the whole run, from the command line's filters to the exit code.
pub fn main() -> ExitCode {
    if let Some(dir) = server::serve_dir() {
        return server::main(dir);
    }
    // Dropped when main returns or a panic unwinds through it: whatever the environment
    // registered and the orderly teardown did not undo (a kind cluster) is removed then.
    let _cleanup = crate::exec::cleanup::CleanupGuard;
    let mut args = Arguments::from_args();
    // The scenarios share one environment, and the counter check compares scrapes taken before
    // and after its own requests: no other scenario may send traffic in between.
    args.test_threads = Some(1);
    let checks = checks::suite();
    let selected_names: Vec<String> = checks
        .iter()
        .filter(|c| {
            let probe = Trial::test(c.name.clone(), || Ok(()));
            !args.is_filtered_out(&probe) && !args.is_ignored(&probe)
        })
        .map(|c| c.name.clone())
        .collect();
    let selected = selected_names.len();
    let nextest_run = nextest::run_id();
    // Under nextest a test process runs one test, perhaps an ignored one (`--run-ignored`),
    // which the count above, blind to nextest's listing-time skips, would miss.
    if let Some(run_id) = nextest_run.as_ref().filter(|_| !args.list) {
        return nextest::main(&args, checks, run_id);
    }
    if args.list || selected == 0 {
        // Under nextest, what cannot apply to the chosen target is listed as ignored, so that
        // nextest reports it skipped rather than passed.
        let skips = match &nextest_run {
            Some(_) if args.list => nextest::listing_skips(&checks),
            _ => BTreeMap::new(),
        };
        let listed = checks
            .iter()
            .map(|c| {
                Trial::test(c.name.clone(), || Ok(()))
                    .with_ignored_flag(skips.contains_key(&c.name))
            })
            .collect();
        if !args.list {
            eprintln!("no scenario matches the filter: nothing brought up");
        }
        return libtest_mimic::run(&args, listed).exit_code();
    }
    match run(&args, checks, &selected_names) {
        Ok(code) => code,
        Err(err) if err.downcast_ref::<crate::env::select::Skipped>().is_some() => {
            println!("SKIPPED: {err:#}");
            println!("0 passed, 0 failed, {selected} skipped");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err:#}");
            println!("0 passed, {selected} failed, 0 not applicable");
            ExitCode::FAILURE
        }
    }
}

fn run(
    args: &Arguments,
    checks: Vec<NamedCheck>,
    selected_names: &[String],
) -> anyhow::Result<ExitCode> {
    let selected = selected_names.len();
    let knobs = Knobs::from_env()?;
    let runtime = crate::exec::runtime()?;
    let runner = Runner::new();
    let mut times = Timings::default();
    let environment: Arc<OnceLock<SharedEnvironment>> = Arc::default();
    let results: SharedResults = Arc::default();
    {
        // Watching from before bring-up: an interruption at any point ends the run the same way.
        let environment = Arc::clone(&environment);
        let results = Arc::clone(&results);
        let selected_names = selected_names.to_vec();
        let artifacts = knobs.artifacts.clone();
        let keep = knobs.keep.keeps(true);
        let deadline = knobs.deadline;
        // Listening starts here, before the bring-up below, not inside the task: a spawned task
        // may not have run when the bring-up's first command starts, and a Ctrl-C in between
        // would meet the default action and end the process without its cleanup.
        let mut signals = {
            let _in_runtime = runtime.enter();
            crate::exec::cleanup::TerminationSignals::listen()
                .inspect_err(|err| {
                    eprintln!("warning: {err:#}; only E2E_DEADLINE ends this run early")
                })
                .ok()
        };
        runtime.spawn(async move {
            let why = next_interruption(signals.as_mut(), deadline).await;
            let cleanup = cut_short(why, environment.get(), &artifacts, keep);
            let code = crate::exec::cleanup::clean_up_once(signals.as_mut(), cleanup).await;
            let report = run_report(
                RunOutcome::CutShort,
                format!("run cut short: {why}"),
                BTreeMap::new(),
                &results,
                &selected_names,
                Verdict::NotRun(format!("the run was cut short: {why}")),
                Vec::new(),
            );
            write_reports(&report, &artifacts);
            let (passed, failed, not_applicable) = tally(&results);
            let unrun = selected.saturating_sub(passed + failed + not_applicable);
            println!(
                "run cut short ({why}): {unrun} of {selected} scenario(s) had not run; they \
                 count as failed"
            );
            println!(
                "{passed} passed, {} failed, {not_applicable} not applicable",
                failed + unrun
            );
            std::process::exit(code);
        });
    }
    let env = match runtime.block_on(async {
        let start = Instant::now();
        let env = select::bring_up(&knobs, &runner, &mut times).await;
        // Printed, not recorded: the phases above already add up to it.
        eprintln!("bring-up took {:.2} s", start.elapsed().as_secs_f64());
        env
    }) {
        Ok(env) => env,
        Err(err) => {
            report_failed_bring_up(&err, &knobs, &results, selected_names, &times);
            return Err(err);
        }
    };
    let description = env.describe();
    eprintln!("{description}");
    eprintln!("running {selected} scenario(s)");
    let env: SharedEnvironment = Arc::new(RwLock::new(env));
    let _ = environment.set(Arc::clone(&env));

    let trials = checks
        .into_iter()
        .map(|named| {
            let env = Arc::clone(&env);
            let results = Arc::clone(&results);
            let handle = runtime.handle().clone();
            Trial::ignorable_test(named.name.clone(), move || {
                let record = handle.block_on(async {
                    let env = env.read().await;
                    run_scenario(env.as_ref(), &named, &results).await
                });
                trial_result(&record.verdict)
            })
        })
        .collect();

    let scenarios_start = Instant::now();
    let conclusion = libtest_mimic::run(args, trials);
    times.record(
        "scenarios",
        scenarios_start.elapsed(),
        !conclusion.has_failed(),
    );

    let (passed, failed, not_applicable) = tally(&results);
    print_results(&results);
    let run_failed = failed > 0 || conclusion.has_failed();
    runtime.block_on(conclude(
        &env,
        &knobs,
        &results,
        selected_names,
        run_failed,
        false,
        &mut times,
    ));
    println!("{passed} passed, {failed} failed, {not_applicable} not applicable");
    Ok(if run_failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs one scenario against `env`, records its verdict (and a latency breakdown it measured) in
/// `results` and returns the record.
pub(crate) async fn run_scenario(
    env: &dyn Environment,
    named: &NamedCheck,
    results: &SharedResults,
) -> ScenarioRecord {
    let started = Instant::now();
    let outcome = checks::run_check(env, &named.check).await;
    let seconds = started.elapsed().as_secs_f64();
    let verdict = match outcome {
        Ok(CheckOutcome::Passed(detail)) => Verdict::Passed(detail),
        Ok(CheckOutcome::Measured(latency)) => {
            let detail = format!(
                "{} requests; round trip p50 {:.3} ms, p99 {:.3} ms (table below)",
                latency.requests, latency.round_trip_ms.p50, latency.round_trip_ms.p99
            );
            lock(results).latency = Some(latency);
            Verdict::Passed(detail)
        }
        Ok(CheckOutcome::NotApplicable(reason)) => Verdict::NotApplicable(reason),
        Err(err) => Verdict::Failed(format!("{err:#}")),
    };
    let record = ScenarioRecord {
        name: named.name.clone(),
        verdict,
        seconds,
    };
    lock(results).records.push(record.clone());
    record
}

/// What libtest (and so cargo and nextest) is told of a verdict.
pub(crate) fn trial_result(verdict: &Verdict) -> Result<Completion, Failed> {
    match verdict {
        Verdict::Passed(_) => Ok(Completion::Completed),
        Verdict::NotApplicable(reason) => Ok(Completion::ignored_with(format!(
            "not applicable: {reason}"
        ))),
        Verdict::Failed(message) => Err(Failed::from(message.clone())),
        Verdict::NotRun(why) => Err(Failed::from(format!("not run: {why}"))),
    }
}

/// The verdicts, one line each, and the latency table.
fn print_results(results: &SharedResults) {
    println!("\nscenario results:");
    for record in &lock(results).records {
        let name = &record.name;
        match &record.verdict {
            Verdict::Passed(detail) => println!("PASS {name}: {detail}"),
            Verdict::Failed(why) => println!("FAIL {name}: {why}"),
            Verdict::NotApplicable(reason) => println!("N/A  {name}: not applicable: {reason}"),
            Verdict::NotRun(why) => println!("FAIL {name}: not run: {why}"),
        }
    }
    if let Some(latency) = &lock(results).latency {
        println!("\n{}", latency.table());
    }
}

/// What a start that failed leaves: its timings, and reports where every selected scenario is
/// not run (or, for a skipped target, not applicable).
fn report_failed_bring_up(
    err: &anyhow::Error,
    knobs: &Knobs,
    results: &SharedResults,
    selected: &[String],
    times: &Timings,
) {
    // What did run is worth its timings too: they say where a failed start spent its time.
    write_timings(times, &knobs.artifacts, "bring-up failed");
    let skipped = err.downcast_ref::<crate::env::select::Skipped>().is_some();
    let (outcome, why) = if skipped {
        (RunOutcome::Skipped, format!("skipped: {err:#}"))
    } else {
        (
            RunOutcome::BringUpFailed,
            format!("bring-up failed: {err:#}"),
        )
    };
    // Nothing required a skipped target: its scenarios did not apply, they did not fail.
    let unrun = if skipped {
        Verdict::NotApplicable(why.clone())
    } else {
        Verdict::NotRun(why.clone())
    };
    let report = run_report(
        outcome,
        why,
        BTreeMap::new(),
        results,
        selected,
        unrun,
        times.phases().to_vec(),
    );
    write_reports(&report, &knobs.artifacts);
}

/// The end of a run whose target came up: diagnostics if a scenario failed, the teardown, the
/// timings and the reports (a selected scenario without a verdict counts as not run).
async fn conclude(
    env: &SharedEnvironment,
    knobs: &Knobs,
    results: &SharedResults,
    selected: &[String],
    run_failed: bool,
    cut_short: bool,
    times: &mut Timings,
) {
    // A run cut short is explained like a failed one: its diagnostics are what is left of it.
    let explain = run_failed || cut_short;
    let (target, versions) = {
        let mut env = env.write().await;
        let keep = knobs.keep.keeps(explain);
        finish(env.as_mut(), &knobs.artifacts, explain, keep, times).await;
        (env.describe(), env.versions())
    };
    let outcome = if cut_short {
        RunOutcome::CutShort
    } else if run_failed {
        RunOutcome::Failed
    } else {
        RunOutcome::Passed
    };
    let report = run_report(
        outcome,
        target,
        versions,
        results,
        selected,
        Verdict::NotRun("libtest did not run it".to_string()),
        times.phases().to_vec(),
    );
    write_reports(&report, &knobs.artifacts);
}

/// After the scenarios: diagnostics when the run failed, then the teardown, timed like every
/// other phase so that `timings.json` (written last, the one place that writes it for the suite)
/// includes it.
async fn finish(
    env: &mut dyn Environment,
    artifacts: &Path,
    run_failed: bool,
    keep: bool,
    times: &mut Timings,
) {
    if run_failed {
        std::fs::create_dir_all(artifacts).ok();
        env.collect_diagnostics(artifacts).await;
        eprintln!("diagnostics saved under {}", artifacts.display());
    }
    if let Err(err) = times.time("teardown", env.teardown(keep)).await {
        eprintln!("warning: teardown: {err:#}");
    }
    write_timings(times, artifacts, &env.describe());
}

/// The phases, printed and written to `timings.json`: the one place that writes it.
fn write_timings(times: &Timings, artifacts: &Path, target: &str) {
    println!("phases: {}", times.summary());
    match times.write_json(artifacts, target) {
        Ok(path) => println!("timings written to {}", path.display()),
        Err(err) => eprintln!("warning: {err:#}"),
    }
}

/// Passed, failed and not-applicable verdicts so far.
fn tally(results: &SharedResults) -> (usize, usize, usize) {
    let results = lock(results);
    let count = |f: fn(&Verdict) -> bool| results.records.iter().filter(|r| f(&r.verdict)).count();
    (
        count(|v| matches!(v, Verdict::Passed(_))),
        count(|v| matches!(v, Verdict::Failed(_) | Verdict::NotRun(_))),
        count(|v| matches!(v, Verdict::NotApplicable(_))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{BoxFuture, KubeCheck, KubeCheckOutcome};
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    /// Records what the runner asks of it.
    struct Recording(Arc<Mutex<Vec<String>>>);

    impl Environment for Recording {
        fn describe(&self) -> String {
            "recording".into()
        }
        fn ingress(&self) -> SocketAddr {
            "127.0.0.1:9".parse().unwrap()
        }
        fn replica_metrics(&self) -> BoxFuture<'_, anyhow::Result<BTreeMap<String, String>>> {
            Box::pin(async { Ok(BTreeMap::new()) })
        }
        fn kube_check(&self, _: KubeCheck) -> BoxFuture<'_, anyhow::Result<KubeCheckOutcome>> {
            Box::pin(async { anyhow::bail!("not asked") })
        }
        fn disrupt(
            &self,
            _: crate::env::Disruption,
        ) -> BoxFuture<'_, anyhow::Result<crate::env::DisruptionReport>> {
            Box::pin(async { anyhow::bail!("not asked") })
        }
        fn collect_diagnostics<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                std::fs::write(dir.join("envoy-config-dump.json"), "{}").unwrap();
                self.0.lock().unwrap().push("collect".into());
            })
        }
        fn teardown(&mut self, keep: bool) -> BoxFuture<'_, anyhow::Result<()>> {
            self.0.lock().unwrap().push(format!("teardown keep={keep}"));
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test]
    async fn a_cut_short_run_collects_diagnostics_before_tearing_down() {
        for (why, code) in [
            (Interruption::Signal("SIGTERM"), 143),
            (Interruption::Signal("SIGINT"), 130),
            (Interruption::Signal("SIGHUP"), 129),
            (Interruption::Deadline(Duration::from_secs(1800)), 1),
        ] {
            let calls = Arc::new(Mutex::new(Vec::new()));
            let env: SharedEnvironment =
                Arc::new(RwLock::new(Box::new(Recording(Arc::clone(&calls)))));
            let dir = tempfile::tempdir().unwrap();
            let artifacts = dir.path().join("artifacts");
            assert_eq!(cut_short(why, Some(&env), &artifacts, false).await, code);
            assert_eq!(*calls.lock().unwrap(), ["collect", "teardown keep=false"]);
            assert!(artifacts.join("envoy-config-dump.json").exists());
        }
    }

    #[tokio::test]
    async fn timings_json_ends_with_the_teardown() {
        for run_failed in [false, true] {
            let calls = Arc::new(Mutex::new(Vec::new()));
            let mut env = Recording(Arc::clone(&calls));
            let dir = tempfile::tempdir().unwrap();
            let mut times = Timings::default();
            times.record("bring-up", Duration::from_millis(5), true);
            times.record("scenarios", Duration::from_millis(7), !run_failed);
            finish(&mut env, dir.path(), run_failed, false, &mut times).await;
            let json: serde_json::Value = serde_json::from_slice(
                &std::fs::read(dir.path().join(crate::env::timings::TIMINGS_FILE)).unwrap(),
            )
            .unwrap();
            let phases: Vec<&str> = json["phases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["phase"].as_str().unwrap())
                .collect();
            assert_eq!(phases, ["bring-up", "scenarios", "teardown"]);
            let expected: &[&str] = if run_failed {
                &["collect", "teardown keep=false"]
            } else {
                &["teardown keep=false"]
            };
            assert_eq!(*calls.lock().unwrap(), expected);
        }
    }

    #[test]
    fn a_selected_scenario_without_a_verdict_is_reported_as_not_run() {
        let results: SharedResults = Arc::default();
        lock(&results).records.push(ScenarioRecord {
            name: "routing::a".into(),
            verdict: Verdict::Passed("ok".into()),
            seconds: 0.1,
        });
        let selected = ["routing::a".to_string(), "routing::b".to_string()];
        let report = run_report(
            RunOutcome::CutShort,
            "cut".into(),
            BTreeMap::new(),
            &results,
            &selected,
            Verdict::NotRun("SIGINT received".into()),
            Vec::new(),
        );
        assert_eq!(report.scenarios.len(), 2);
        assert_eq!(
            report.scenarios[1].verdict,
            Verdict::NotRun("SIGINT received".into())
        );
        assert_eq!((report.counts.passed, report.counts.not_run), (1, 1));
        // The tally the terminal prints counts it as failed, as the summary line says.
        lock(&results).records = report.scenarios.clone();
        assert_eq!(tally(&results), (1, 1, 0));
    }

    #[tokio::test]
    async fn the_deadline_ends_the_wait_for_an_interruption() {
        let why = tokio::time::timeout(
            Duration::from_secs(10),
            next_interruption(None, Duration::from_millis(50)),
        )
        .await
        .expect("the deadline fires by itself");
        assert_eq!(why, Interruption::Deadline(Duration::from_millis(50)));
        assert!(why.to_string().contains("E2E_DEADLINE"), "{why}");
    }
}
