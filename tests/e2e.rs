//! The scenario suite: `cargo test --test e2e` brings the chosen target (`E2E_TARGET`) up once,
//! runs every scenario through its gateway, saves diagnostics when something failed and tears
//! down according to `E2E_KEEP`. Cargo's filters select scenarios by name
//! (`cargo test --test e2e -- routing`); with nothing selected nothing is brought up.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use harness::cmd::Runner;
use harness::knobs::Knobs;
use harness::scenario::{self, CheckOutcome, NamedCheck};
use harness::suite;
use harness::target::Environment;
use harness::timings::Timings;
use libtest_mimic::{Arguments, Completion, Failed, Trial};
use tokio::sync::RwLock;

type SharedEnvironment = Arc<RwLock<Box<dyn Environment>>>;

/// How long a signal handler waits for the running scenario before tearing down anyway.
const SIGNAL_TEARDOWN_WAIT: Duration = Duration::from_secs(15);

#[derive(Clone, Debug)]
enum Verdict {
    Passed(String),
    Failed(String),
    NotApplicable(String),
}

fn main() -> ExitCode {
    // Dropped when main returns or a panic unwinds through it: whatever the environment
    // registered and the orderly teardown did not undo (a kind cluster) is removed then.
    let _cleanup = harness::teardown::CleanupGuard;
    let mut args = Arguments::from_args();
    // The scenarios share one environment, and the counter check compares scrapes taken before
    // and after its own requests: no other scenario may send traffic in between.
    args.test_threads = Some(1);
    let checks = scenario::suite();
    let selected = checks
        .iter()
        .filter(|c| {
            let probe = Trial::test(c.name.clone(), || Ok(()));
            !args.is_filtered_out(&probe) && !args.is_ignored(&probe)
        })
        .count();
    if args.list || selected == 0 {
        let listed = checks
            .iter()
            .map(|c| Trial::test(c.name.clone(), || Ok(())))
            .collect();
        if !args.list {
            eprintln!("no scenario matches the filter: nothing brought up");
        }
        return libtest_mimic::run(&args, listed).exit_code();
    }
    match run(&args, checks, selected) {
        Ok(code) => code,
        Err(err) if err.downcast_ref::<harness::kind::Skipped>().is_some() => {
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

fn run(args: &Arguments, checks: Vec<NamedCheck>, selected: usize) -> anyhow::Result<ExitCode> {
    let knobs = Knobs::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let runner = Runner::new();
    let mut times = Timings::default();
    let env = runtime.block_on(async {
        let start = Instant::now();
        let env = suite::bring_up(&knobs, &runner, &mut times).await;
        // Printed, not recorded: the phases above already add up to it.
        eprintln!("bring-up took {:.2} s", start.elapsed().as_secs_f64());
        env
    })?;
    let description = env.describe();
    eprintln!("{description}");
    eprintln!("running {selected} scenario(s)");
    let env: SharedEnvironment = Arc::new(RwLock::new(env));
    runtime.spawn(teardown_on_signal(Arc::clone(&env), knobs.keep.keeps(true)));

    let verdicts: Arc<Mutex<Vec<(String, Verdict)>>> = Arc::default();
    let trials = checks
        .into_iter()
        .map(|named| {
            let env = Arc::clone(&env);
            let verdicts = Arc::clone(&verdicts);
            let handle = runtime.handle().clone();
            let name = named.name.clone();
            Trial::ignorable_test(named.name, move || {
                let outcome = handle.block_on(async {
                    let env = env.read().await;
                    scenario::run_check(env.as_ref(), &named.check).await
                });
                let (verdict, result) = match outcome {
                    Ok(CheckOutcome::Passed(detail)) => {
                        (Verdict::Passed(detail), Ok(Completion::Completed))
                    }
                    Ok(CheckOutcome::NotApplicable(reason)) => (
                        Verdict::NotApplicable(reason.clone()),
                        Ok(Completion::ignored_with(format!(
                            "not applicable: {reason}"
                        ))),
                    ),
                    Err(err) => {
                        let message = format!("{err:#}");
                        (Verdict::Failed(message.clone()), Err(Failed::from(message)))
                    }
                };
                verdicts.lock().expect("verdicts").push((name, verdict));
                result
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

    let verdicts = verdicts.lock().expect("verdicts").clone();
    let (mut passed, mut failed, mut not_applicable) = (0, 0, 0);
    println!("\nscenario results:");
    for (name, verdict) in &verdicts {
        match verdict {
            Verdict::Passed(detail) => {
                passed += 1;
                println!("PASS {name}: {detail}");
            }
            Verdict::Failed(why) => {
                failed += 1;
                println!("FAIL {name}: {why}");
            }
            Verdict::NotApplicable(reason) => {
                not_applicable += 1;
                println!("N/A  {name}: not applicable: {reason}");
            }
        }
    }
    let run_failed = failed > 0 || conclusion.has_failed();
    runtime.block_on(async {
        let mut env = env.write().await;
        if run_failed {
            std::fs::create_dir_all(&knobs.artifacts).ok();
            env.collect_diagnostics(&knobs.artifacts).await;
            eprintln!("diagnostics saved under {}", knobs.artifacts.display());
        }
        if let Err(err) = env.teardown(knobs.keep.keeps(run_failed)).await {
            eprintln!("warning: teardown: {err:#}");
        }
    });
    println!("phases: {}", times.summary());
    match times.write_json(&knobs.artifacts, &description) {
        Ok(path) => println!("timings written to {}", path.display()),
        Err(err) => eprintln!("warning: {err:#}"),
    }
    println!("{passed} passed, {failed} failed, {not_applicable} not applicable");
    Ok(if run_failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// On SIGINT or SIGTERM: wait (bounded) for the running scenario, tear down, exit.
async fn teardown_on_signal(env: SharedEnvironment, keep: bool) {
    let signal = suite::termination_signal().await;
    eprintln!("\n{signal} received: tearing down");
    match tokio::time::timeout(SIGNAL_TEARDOWN_WAIT, env.write()).await {
        Ok(mut env) => {
            if let Err(err) = env.teardown(keep).await {
                eprintln!("warning: teardown: {err:#}");
            }
        }
        Err(_) => {
            eprintln!(
                "warning: the running scenario did not finish within {SIGNAL_TEARDOWN_WAIT:?}; \
                 exiting (local child processes die with this process)"
            );
            // A kind cluster does not die with this process: run its registered cleanup.
            harness::teardown::run_pending(signal);
        }
    }
    std::process::exit(if signal == "SIGTERM" { 143 } else { 130 });
}
