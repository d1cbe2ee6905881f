//! The environment server of a nextest run (see [`super::nextest`]): brings the target up once,
//! answers each scenario process with its scenario's verdict, one scenario at a time, and when
//! the nextest process it watches has exited (the run is over, interrupted or killed), or on a
//! signal or `E2E_DEADLINE`, collects diagnostics if a scenario failed, tears down and writes the
//! reports, as `cargo test --test e2e` does at its end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::RwLock;

use super::{
    SharedEnvironment, SharedResults, conclude, lock, print_results, report_failed_bring_up,
    run_scenario,
};
use crate::checks::{self, NamedCheck};
use crate::config::knobs::Knobs;
use crate::env::select;
use crate::env::timings::Timings;
use crate::exec::cleanup::TerminationSignals;
use crate::exec::cmd::Runner;
use crate::report::{ScenarioRecord, Verdict};

/// Set (to the run's folder) when this binary is to be the run's server.
pub(crate) const SERVE_VAR: &str = "E2E_NEXTEST_SERVE";
/// The pid of the nextest process whose exit ends the run.
pub(crate) const WATCH_VAR: &str = "E2E_NEXTEST_WATCH";
/// Written once the target is up: its description.
pub(crate) const READY_FILE: &str = "ready";
/// Written when the target could not be brought up: why.
pub(crate) const FAILED_FILE: &str = "failed";
/// Written when the server has torn down and is about to exit: why the run ended.
pub(crate) const DONE_FILE: &str = "done";

/// The run's folder, when this process is a run's server.
pub(crate) fn serve_dir() -> Option<PathBuf> {
    std::env::var_os(SERVE_VAR)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

pub(crate) fn main(dir: PathBuf) -> ExitCode {
    // What the environment registered and the orderly teardown did not undo is removed on exit.
    let _cleanup = crate::exec::cleanup::CleanupGuard;
    prune_finished_runs(&dir);
    let (code, why) = match serve(&dir) {
        Ok(ended) => ended,
        Err(err) => {
            eprintln!("error: {err:#}");
            let _ = std::fs::write(dir.join(FAILED_FILE), format!("{err:#}"));
            (ExitCode::FAILURE, format!("{err:#}"))
        }
    };
    let _ = std::fs::remove_file(socket_path(&dir));
    let _ = std::fs::write(dir.join(DONE_FILE), format!("{why}\n"));
    code
}

/// Where the run's server listens: a short path in the temporary folder, since a Unix socket's
/// path may not exceed 107 bytes and a CI checkout's target folder can be deep.
pub(crate) fn socket_path(dir: &Path) -> PathBuf {
    let run = dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = std::env::temp_dir();
    let base = if temp.as_os_str().len() > 40 {
        PathBuf::from("/tmp")
    } else {
        temp
    };
    base.join(format!("e2e-nextest-{run}.sock"))
}

/// Removes the folders of earlier runs whose server has finished.
fn prune_finished_runs(dir: &Path) {
    let Some(parent) = dir.parent() else { return };
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        let path = entry.path();
        if path != dir && path.join(DONE_FILE).exists() {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// The next SIGINT, SIGTERM or SIGHUP, or never when they could not be watched.
async fn next_signal(signals: &mut Option<TerminationSignals>) -> &'static str {
    match signals.as_mut() {
        Some(signals) => signals.recv().await,
        None => std::future::pending().await,
    }
}

/// Serves the run; returns the exit code and why the run ended.
fn serve(dir: &Path) -> Result<(ExitCode, String)> {
    let watched: libc::pid_t = std::env::var(WATCH_VAR)
        .ok()
        .and_then(|pid| pid.parse().ok())
        .with_context(|| format!("{WATCH_VAR} names no process"))?;
    let knobs = Knobs::from_env()?;
    let runtime = crate::exec::runtime()?;
    runtime.block_on(async {
        let mut signals = TerminationSignals::listen()
            .inspect_err(|err| {
                eprintln!("warning: {err:#}; the run's end or E2E_DEADLINE stops this server")
            })
            .ok();
        // Watched from the start: an interrupted bring-up ends as an interrupted run does.
        let run_over = process_exit(watched);
        let deadline = tokio::time::sleep(knobs.deadline);
        tokio::pin!(run_over, deadline);
        // Listening first: a socket that cannot be made fails now, not after the bring-up.
        let socket = socket_path(dir);
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)
            .with_context(|| format!("listening on {}", socket.display()))?;
        let runner = Runner::new();
        let mut times = Timings::default();
        let results: SharedResults = Arc::default();
        let brought_up = tokio::select! {
            env = select::bring_up(&knobs, &runner, &mut times) => env,
            () = &mut run_over => Err(anyhow!("the nextest run ended during the bring-up")),
            name = next_signal(&mut signals) => Err(anyhow!("{name} received during the bring-up")),
            () = &mut deadline => Err(anyhow!("E2E_DEADLINE passed during the bring-up")),
        };
        let env = match brought_up {
            Ok(env) => env,
            Err(err) => {
                // What the half-done bring-up registered (a kind cluster) is removed by the
                // cleanup guard as this process ends.
                report_failed_bring_up(&err, &knobs, &results, &[], &times);
                let why = format!("{err:#}");
                std::fs::write(dir.join(FAILED_FILE), &why)?;
                return Ok((ExitCode::FAILURE, why));
            }
        };
        let description = env.describe();
        eprintln!("{description}");
        std::fs::write(dir.join(READY_FILE), &description)?;
        let env: SharedEnvironment = Arc::new(RwLock::new(env));
        let checks = checks::suite();
        let serving_since = std::time::Instant::now();

        let (why, cut_short) = loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => answer(stream, &env, &checks, &results).await,
                    Err(err) => eprintln!("warning: accepting a scenario's connection: {err}"),
                },
                () = &mut run_over => break ("the nextest run is over".to_string(), false),
                name = next_signal(&mut signals) => break (format!("{name} received"), true),
                () = &mut deadline => break ("E2E_DEADLINE passed".to_string(), true),
            }
        };
        eprintln!("{why}: tearing down");
        drop(listener);
        let _ = std::fs::remove_file(&socket);
        let run_failed = lock(&results)
            .records
            .iter()
            .any(|r| matches!(r.verdict, Verdict::Failed(_)));
        // From ready to the run's end: the scenarios and nextest's own time between them.
        times.record("scenarios", serving_since.elapsed(), !run_failed);
        print_results(&results);
        let bound = crate::exec::cleanup::TEARDOWN_TIMEOUT + super::INTERRUPTED_DIAGNOSTICS_BOUND;
        let concluded = tokio::time::timeout(
            bound,
            conclude(&env, &knobs, &results, &[], run_failed, cut_short, &mut times),
        )
        .await;
        if concluded.is_err() {
            eprintln!("warning: diagnostics and teardown took longer than {bound:?}; running the registered cleanups");
            let _ = tokio::task::spawn_blocking(|| crate::exec::cleanup::run_pending("server teardown")).await;
        }
        let _ = std::io::stdout().flush();
        let code = if run_failed || cut_short {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
        Ok((code, why))
    })
}

/// Reads one scenario name, runs it and writes its record back, as JSON lines.
async fn answer(
    stream: UnixStream,
    env: &SharedEnvironment,
    checks: &[NamedCheck],
    results: &SharedResults,
) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if BufReader::new(read).read_line(&mut line).await.is_err() {
        return;
    }
    let record = match requested(&line, checks) {
        Ok(named) => {
            eprintln!("running {}", named.name);
            // In a task of its own, so that a panicking check is a failed verdict, not the end
            // of the server (libtest catches it the same way under `cargo test`).
            let task = {
                let (env, named, results) = (Arc::clone(env), named.clone(), Arc::clone(results));
                tokio::spawn(async move {
                    let env = env.read().await;
                    run_scenario(env.as_ref(), &named, &results).await
                })
            };
            task.await.unwrap_or_else(|err| ScenarioRecord {
                name: named.name.clone(),
                verdict: Verdict::Failed(format!("the scenario panicked: {err}")),
                seconds: 0.0,
            })
        }
        Err(err) => ScenarioRecord {
            name: line.trim().to_string(),
            verdict: Verdict::Failed(format!("{err:#}")),
            seconds: 0.0,
        },
    };
    let mut reply = serde_json::to_string(&record).unwrap_or_default();
    reply.push('\n');
    let _ = write.write_all(reply.as_bytes()).await;
}

/// The scenario a request line names.
fn requested<'a>(line: &str, checks: &'a [NamedCheck]) -> Result<&'a NamedCheck> {
    let request: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("a request that is not JSON: {line:?}"))?;
    let name = request["scenario"]
        .as_str()
        .with_context(|| format!("no `scenario` in {request}"))?;
    checks
        .iter()
        .find(|c| c.name == name)
        .with_context(|| format!("no scenario named {name}"))
}

/// Resolves when process `pid` has exited: its pidfd turns readable (Linux 5.3+), else a poll.
async fn process_exit(pid: libc::pid_t) {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd >= 0 {
        // SAFETY: the descriptor was just returned to this process and is owned here alone;
        // registering it hands it to the AsyncFd, which closes it when dropped.
        let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        if let Ok(pidfd) = unsafe { tokio::io::unix::AsyncFd::register(owned) } {
            let _ = pidfd.readable().await;
            return;
        }
    }
    // No pidfd: look every half second; the run's deadline bounds this like everything else.
    // SAFETY: signal 0 only checks that the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_a_known_scenario() {
        let checks = checks::suite();
        let named = requested(r#"{"scenario":"routing::post_fft_prefix"}"#, &checks).unwrap();
        assert_eq!(named.name, "routing::post_fft_prefix");
        for bad in ["not json", r#"{"other":1}"#, r#"{"scenario":"no::such"}"#] {
            assert!(requested(bad, &checks).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_watch_ends_when_the_process_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("0.2")
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        // Reap it once it exits, as its parent (nextest) would.
        let reaper = std::thread::spawn(move || child.wait());
        tokio::time::timeout(Duration::from_secs(10), process_exit(pid))
            .await
            .expect("the watch sees the exit");
        reaper.join().unwrap().unwrap();
    }
}
