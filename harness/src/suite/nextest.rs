//! The suite under `cargo nextest run`, which runs every test in a process of its own: one
//! environment for the whole run, not one per scenario.
//!
//! The first scenario's process starts the run's environment server ([`super::server`]), a
//! detached process of this binary that brings the target up once, runs each scenario asked of
//! it (one at a time) and tears down when the nextest run is over. Every scenario's process is a
//! thin client: it asks the server for its one scenario and reports the verdict to nextest. The
//! run's files live in `target/e2e-nextest/<NEXTEST_RUN_ID>/`.
//!
//! Skips are decided when nextest lists the tests (nextest sets `NEXTEST_RUN_ID` for listing
//! too, since 0.9.138): a scenario that cannot apply to the chosen target (the Kubernetes checks
//! on `local`, everything when the target is skipped) is listed as ignored, so nextest shows it
//! as skipped. nextest cannot mark a test skipped once it has started, so a scenario found not
//! applicable only at run time fails, saying so, rather than pass.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use libtest_mimic::{Arguments, Failed, Trial};

use super::server::{self, DONE_FILE, FAILED_FILE, READY_FILE};
use super::trial_result;
use crate::checks::{Check, NamedCheck};
use crate::config::knobs::{Knobs, TargetChoice};
use crate::config::paths;
use crate::env::select::{self, Chosen, Skipped};
use crate::env::timings::Timings;
use crate::exec::cmd::Runner;
use crate::exec::file_lock::FileLock;
use crate::exec::wait::{Attempt, wait_for};
use crate::report::{ScenarioRecord, Verdict};

/// Set by nextest for its list and run phases: one id per `cargo nextest run`.
pub(crate) const RUN_ID_VAR: &str = "NEXTEST_RUN_ID";
/// The server's process id, written by the process that started it.
const PID_FILE: &str = "server.pid";
/// Taken while a process checks for, or starts, the server.
const LOCK_FILE: &str = "lock";
/// The server's output.
pub(crate) const LOG_FILE: &str = "server.log";

/// The nextest run this process belongs to, if any.
pub(crate) fn run_id() -> Option<String> {
    std::env::var(RUN_ID_VAR)
        .ok()
        .filter(|id| !id.trim().is_empty())
}

/// Where one nextest run keeps its server's files.
pub(crate) fn run_dir(run_id: &str) -> PathBuf {
    paths::cargo_target_dir().join("e2e-nextest").join(run_id)
}

/// Scenarios that cannot apply to the target the knobs choose, with the reason: listed to
/// nextest as ignored. Decided as the run would decide (the same preflight for `auto`).
pub(crate) fn listing_skips(checks: &[NamedCheck]) -> BTreeMap<String, String> {
    let Ok(knobs) = Knobs::from_env() else {
        // The run reports the bad knob; listing lists everything.
        return BTreeMap::new();
    };
    let chosen = match knobs.target {
        TargetChoice::Local => Ok(Chosen::Local),
        _ => match crate::exec::runtime() {
            Ok(runtime) => runtime.block_on(select::choose(
                knobs.target,
                &knobs,
                &Runner::new(),
                &mut Timings::default(),
            )),
            Err(_) => return BTreeMap::new(),
        },
    };
    skips_for(checks, &chosen)
}

/// The pure part of [`listing_skips`].
pub(crate) fn skips_for(
    checks: &[NamedCheck],
    chosen: &Result<Chosen>,
) -> BTreeMap<String, String> {
    let mut skips = BTreeMap::new();
    for named in checks {
        let reason = match (chosen, &named.check) {
            (Ok(Chosen::Local), Check::Kubernetes(check)) => {
                Some(crate::env::local::kube_check_not_applicable(*check))
            }
            (Err(err), _) if err.downcast_ref::<Skipped>().is_some() => {
                Some(format!("the target is skipped: {err:#}"))
            }
            _ => None,
        };
        if let Some(reason) = reason {
            skips.insert(named.name.clone(), reason);
        }
    }
    skips
}

/// One scenario process of a nextest run: asks the run's server for each selected scenario.
pub(crate) fn main(args: &Arguments, checks: Vec<NamedCheck>, run_id: &str) -> ExitCode {
    let dir = run_dir(run_id);
    // Which tests are ignored matters only when nextest runs ignored ones (`--run-ignored`);
    // deciding costs the preflight, so a plain run does not pay it in every scenario's process.
    let skips = if args.ignored || args.include_ignored {
        listing_skips(&checks)
    } else {
        BTreeMap::new()
    };
    let trials = checks
        .into_iter()
        .map(|named| {
            let ignored = skips.contains_key(&named.name);
            let dir = dir.clone();
            let name = named.name.clone();
            Trial::test(named.name, move || {
                let record = ask(&dir, &name).map_err(|err| Failed::from(format!("{err:#}")))?;
                if let Verdict::Passed(detail) = &record.verdict {
                    println!("PASS {name}: {detail}");
                }
                match &record.verdict {
                    // nextest cannot show a skip decided after the test started.
                    Verdict::NotApplicable(reason) => Err(Failed::from(format!(
                        "not applicable, found only at run time: {reason} (nextest cannot \
                         report a test skipped once it has started; `cargo test --test e2e` \
                         reports it as ignored)"
                    ))),
                    verdict => trial_result(verdict).map(|_| ()),
                }
            })
            .with_ignored_flag(ignored)
        })
        .collect();
    libtest_mimic::run(args, trials).exit_code()
}

/// Asks the run's server (starting it if this is the run's first scenario) for one scenario.
fn ask(dir: &Path, scenario: &str) -> Result<ScenarioRecord> {
    ensure_server(dir)?;
    let socket = server::socket_path(dir);
    let mut stream = UnixStream::connect(&socket).with_context(|| {
        format!(
            "connecting to the run's environment server at {}",
            socket.display()
        )
    })?;
    let request = serde_json::json!({ "scenario": scenario });
    writeln!(stream, "{request}").context("sending the scenario to the server")?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .context("reading the server's verdict")?;
    if line.trim().is_empty() {
        bail!(
            "the environment server closed the connection without a verdict (its log: {})",
            dir.join(LOG_FILE).display()
        );
    }
    serde_json::from_str(&line).with_context(|| format!("the server's answer {line:?}"))
}

/// Makes sure the run's server is up: the first caller starts it and waits until it has brought
/// the target up (or failed to); later callers find it ready. One process at a time checks.
fn ensure_server(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let _held = FileLock::acquire(&dir.join(LOCK_FILE))?;
    if let Ok(why) = std::fs::read_to_string(dir.join(DONE_FILE)) {
        bail!(
            "the run's environment server has already ended ({}); its log: {}",
            why.trim(),
            dir.join(LOG_FILE).display()
        );
    }
    if !dir.join(READY_FILE).exists()
        && !dir.join(FAILED_FILE).exists()
        && !dir.join(PID_FILE).exists()
    {
        start_server(dir)?;
    }
    wait_until_up(dir)
}

/// Starts the server: this binary again, detached in a session of its own so that it outlives
/// this scenario's process, watching the nextest process that runs the scenarios.
fn start_server(dir: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("finding this test binary")?;
    let log = std::fs::File::create(dir.join(LOG_FILE))
        .with_context(|| format!("creating {}", dir.join(LOG_FILE).display()))?;
    // SAFETY: getppid cannot fail.
    let nextest = unsafe { libc::getppid() };
    let mut command = Command::new(exe);
    command
        .env(server::SERVE_VAR, dir)
        .env(server::WATCH_VAR, nextest.to_string())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; the closure allocates nothing.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .context("starting the run's environment server")?;
    std::fs::write(dir.join(PID_FILE), child.id().to_string())?;
    eprintln!(
        "started the environment server for this nextest run (pid {}, log {}): the target is \
         brought up once for every scenario",
        child.id(),
        dir.join(LOG_FILE).display()
    );
    Ok(())
}

/// How long the server may take to bring the target up: the run's own deadline.
fn bring_up_bound() -> Duration {
    Knobs::from_env()
        .map(|k| k.deadline)
        .unwrap_or(crate::config::knobs::DEFAULT_DEADLINE)
}

fn wait_until_up(dir: &Path) -> Result<()> {
    let runtime = crate::exec::runtime()?;
    runtime.block_on(wait_for(
        "the run's environment server to bring the target up",
        bring_up_bound(),
        Duration::from_millis(100),
        || async {
            if dir.join(READY_FILE).exists() {
                return Ok(Attempt::Done(()));
            }
            if let Ok(why) = std::fs::read_to_string(dir.join(FAILED_FILE)) {
                bail!("the environment could not be brought up: {}", why.trim());
            }
            if !server_alive(dir) {
                bail!(
                    "the environment server exited without bringing the target up; its log ({}):\n{}",
                    dir.join(LOG_FILE).display(),
                    crate::exec::cmd::tail(
                        &std::fs::read_to_string(dir.join(LOG_FILE)).unwrap_or_default(),
                        20
                    )
                );
            }
            Ok(Attempt::NotYet("bringing the target up".to_string()))
        },
    ))
}

/// Whether the server whose pid was recorded still runs.
fn server_alive(dir: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(dir.join(PID_FILE))
        .ok()
        .and_then(|text| text.trim().parse::<libc::pid_t>().ok())
    else {
        return false;
    };
    // A zombie counts as gone: the scenario process that started it reaps it only on exit.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let zombie = state
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        == Some("Z");
    // SAFETY: signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) == 0 };
    exists && !zombie
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::select::Skipped;

    #[test]
    fn on_local_only_the_kubernetes_checks_are_skipped_at_listing() {
        let checks = crate::checks::suite();
        let skips = skips_for(&checks, &Ok(Chosen::Local));
        let names: Vec<&str> = skips.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "kubernetes::merged_metrics_serve_app_metrics",
                "kubernetes::pods_run_built_image",
                "kubernetes::scrape_annotations",
                "kubernetes::sidecars_injected",
            ]
        );
        assert!(
            skips.values().all(|r| r.contains("needs Kubernetes")),
            "{skips:?}"
        );
    }

    #[test]
    fn a_skipped_target_skips_everything_and_a_failing_choice_nothing() {
        let checks = crate::checks::suite();
        let skipped: Result<Chosen> = Err(Skipped {
            reasons: "kind is not installed".into(),
        }
        .into());
        let skips = skips_for(&checks, &skipped);
        assert_eq!(skips.len(), checks.len());
        assert!(skips.values().all(|r| r.contains("kind is not installed")));
        let broken: Result<Chosen> = Err(anyhow::anyhow!("E2E_TARGET: unknown target"));
        assert!(skips_for(&checks, &broken).is_empty(), "the run reports it");
    }

    #[test]
    fn each_run_has_its_own_folder() {
        assert_ne!(run_dir("a"), run_dir("b"));
        assert!(run_dir("a").ends_with("e2e-nextest/a"));
    }
}
