//! Cleaning up when the orderly teardown cannot run: on SIGINT/SIGTERM (the one place that
//! listens for them, [`TerminationSignals`]), and when the process leaves `main` (a panic
//! unwinding) without having torn its environment down.
//!
//! An environment registers, as soon as it creates something, a blocking cleanup that undoes
//! it; its orderly `teardown` unregisters it. Whatever is still registered when a signal arrives
//! or the guard is dropped runs then, each bounded in time. The cleanups are blocking (std
//! processes, no runtime) so they also work while a runtime is shutting down.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::exec::cmd::Cmd;

/// The bound on the whole orderly teardown (deleting a kind cluster takes ~10-30 s).
pub(crate) const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(240);

type Cleanup = Box<dyn FnOnce() + Send>;

static PENDING: Mutex<BTreeMap<u64, (String, Cleanup)>> = Mutex::new(BTreeMap::new());
/// The labels of the cleanups [`run_pending`] has taken and not finished: a second signal
/// names them as left undone.
static RUNNING: Mutex<Vec<String>> = Mutex::new(Vec::new());
static NEXT_TICKET: AtomicU64 = AtomicU64::new(1);

/// Proof of a registration, to unregister after the orderly teardown.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CleanupTicket(u64);

/// Registers `cleanup` to run if the process is interrupted before the orderly teardown.
pub(crate) fn register(
    label: impl Into<String>,
    cleanup: impl FnOnce() + Send + 'static,
) -> CleanupTicket {
    let ticket = NEXT_TICKET.fetch_add(1, Ordering::SeqCst);
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .insert(ticket, (label.into(), Box::new(cleanup)));
    CleanupTicket(ticket)
}

/// The orderly teardown ran: the registered cleanup is no longer needed.
pub(crate) fn unregister(ticket: CleanupTicket) {
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .remove(&ticket.0);
}

/// How many cleanups are registered (for tests and the exit message).
pub(crate) fn pending_count() -> usize {
    PENDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .len()
}

/// Runs and forgets every registered cleanup, newest first. Idempotent.
pub fn run_pending(reason: &str) {
    let pending: Vec<(String, Cleanup)> = {
        let mut map = PENDING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::take(&mut *map).into_values().rev().collect()
    };
    RUNNING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .extend(pending.iter().map(|(label, _)| label.clone()));
    for (label, cleanup) in pending {
        eprintln!("cleanup ({reason}): {label}");
        cleanup();
        let mut running = RUNNING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(at) = running.iter().position(|l| *l == label) {
            running.remove(at);
        }
    }
}

/// The cleanups not yet done: those running or waiting to run, in order.
fn left_undone() -> Vec<String> {
    let mut left = RUNNING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    left.extend(
        PENDING
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .values()
            .rev()
            .map(|(label, _)| label.clone()),
    );
    left
}

/// Held by `main` (the e2e runner, the CLI): dropping it, including while a panic unwinds,
/// runs whatever was not torn down in order.
#[derive(Debug, Default)]
pub(crate) struct CleanupGuard;

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if pending_count() > 0 {
            let reason = if std::thread::panicking() {
                "panic"
            } else {
                "exit without teardown"
            };
            run_pending(reason);
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, watched from the moment [`TerminationSignals::listen`] returns: a signal
/// that arrives before anyone waits is kept, not met with the default action (which would end the
/// process without its cleanup).
pub(crate) struct TerminationSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl TerminationSignals {
    /// Starts watching the three signals. Must be called inside a tokio runtime.
    pub(crate) fn listen() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(TerminationSignals {
            terminate: signal(SignalKind::terminate()).context("watching SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("watching SIGINT")?,
            hangup: signal(SignalKind::hangup()).context("watching SIGHUP")?,
        })
    }

    /// Waits for the next SIGINT, SIGTERM or SIGHUP (a closed terminal) and says which arrived.
    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.hangup.recv() => "SIGHUP",
        }
    }
}

/// The exit code for a signal: 128 + its number.
pub(crate) fn signal_exit_code(name: &str) -> i32 {
    match name {
        "SIGHUP" => 129,
        "SIGTERM" => 143,
        _ => 130,
    }
}

/// What a second signal does while the first one's cleanup runs: say what is left and exit at
/// once (the person pressing Ctrl-C twice wants out).
pub(crate) async fn exit_on_second_signal(signals: &mut TerminationSignals) -> ! {
    let name = signals.recv().await;
    let left = left_undone();
    if left.is_empty() {
        eprintln!("\n{name} again: exiting now");
    } else {
        eprintln!(
            "\n{name} again: exiting now, leaving undone: {}",
            left.join("; ")
        );
    }
    crate::exec::cmd::kill_running_children();
    std::process::exit(signal_exit_code(name));
}

/// What every interruption does once it has happened: stop the commands still running (a `kind
/// create` must not race the cleanup's `kind delete`), then run `cleanup`, unless a second
/// signal arrives first, which exits at once.
pub(crate) async fn clean_up_once<T>(
    signals: Option<&mut TerminationSignals>,
    cleanup: impl std::future::Future<Output = T>,
) -> T {
    crate::exec::cmd::kill_running_children();
    match signals {
        Some(signals) => tokio::select! {
            done = cleanup => done,
            never = exit_on_second_signal(signals) => never,
        },
        None => cleanup.await,
    }
}

/// Spawns a task that, on SIGINT, SIGTERM or SIGHUP, stops the commands still running, runs the
/// registered cleanups and exits with 128 + the signal number; a second signal exits at once.
/// Call once, inside the runtime, before creating anything.
pub(crate) fn spawn_signal_cleanup() -> Result<tokio::task::JoinHandle<()>> {
    let mut signals = TerminationSignals::listen()?;
    Ok(tokio::spawn(async move {
        let name = signals.recv().await;
        eprintln!("{name} received: cleaning up before exiting");
        // Lazy: the commands still running are stopped before the cleanups start.
        let cleanup = async move { tokio::task::spawn_blocking(move || run_pending(name)).await };
        let _ = clean_up_once(Some(&mut signals), cleanup).await;
        std::process::exit(signal_exit_code(name));
    }))
}

/// Runs `cmd` without a runtime, bounded by `timeout`; the child dies with this process
/// (PR_SET_PDEATHSIG on Linux). Returns stdout.
pub(crate) fn run_blocking(cmd: &Cmd, timeout: Duration) -> Result<String> {
    let shown = cmd.to_string();
    eprintln!("$ {shown}");
    let mut command = Command::new(cmd.program());
    // Its own process group: a terminal's Ctrl-C reaches the harness, not this cleanup.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    command
        .args(cmd.arg_strings())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::exec::cmd::die_with_parent(&mut command);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting `{shown}`"))?;
    let pid = child.id();
    let mut stdout = child.stdout.take().context("no stdout pipe")?;
    let mut stderr = child.stderr.take().context("no stderr pipe")?;
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // stderr is read on a thread of its own: read one after the other, a child that fills
        // the stderr pipe (64 KiB) before closing stdout would block on it until the timeout.
        let err_reader = std::thread::spawn(move || {
            let mut err = String::new();
            let _ = stderr.read_to_string(&mut err);
            err
        });
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        let err = err_reader.join().unwrap_or_default();
        let status = child.wait();
        let _ = done_tx.send((status, out, err));
    });
    match done_rx.recv_timeout(timeout) {
        Ok((Ok(status), out, err)) => {
            if status.success() {
                Ok(out)
            } else {
                bail!(
                    "`{shown}` exited with {status}; stderr:\n{}",
                    crate::exec::cmd::tail(&err, 20)
                )
            }
        }
        Ok((Err(err), _, _)) => Err(err).with_context(|| format!("waiting for `{shown}`")),
        Err(_) => {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: signalling our own child by pid.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            bail!("`{shown}` timed out after {timeout:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn registered_cleanups_run_once_and_unregistered_ones_never() {
        let ran = Arc::new(AtomicUsize::new(0));
        let counter = ran.clone();
        let kept = register("delete cluster a", move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        let counter = ran.clone();
        let done = register("delete cluster b", move || {
            counter.fetch_add(10, Ordering::SeqCst);
        });
        unregister(done);
        run_pending("test");
        run_pending("test again");
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        let _ = kept;
    }

    /// A second signal names what is not done yet, including the cleanup running at that
    /// moment (before, it was taken off the list when it started and went unnamed).
    #[test]
    fn a_cleanup_still_running_is_named_as_left_undone() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let during = seen.clone();
        let _ticket = register("delete the left-undone test's objects", move || {
            *during.lock().unwrap() = left_undone();
        });
        run_pending("test");
        let label = "delete the left-undone test's objects".to_string();
        assert!(
            seen.lock().unwrap().contains(&label),
            "{:?}",
            seen.lock().unwrap()
        );
        assert!(!left_undone().contains(&label));
    }

    /// kubectl can be chatty on stderr (warnings, deprecations) before it prints its answer: the
    /// two pipes are read at once, so a full stderr pipe cannot stall the call until its bound.
    #[test]
    fn a_child_that_fills_stderr_before_stdout_is_not_stalled() {
        let started = std::time::Instant::now();
        let out = run_blocking(
            &Cmd::new("sh").args([
                "-c",
                "head -c 300000 /dev/zero | tr '\\0' w >&2; echo answered",
            ]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(out, "answered\n");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn blocking_commands_report_stderr_and_are_bounded() {
        let err = run_blocking(
            &Cmd::new("sh").args(["-c", "echo cannot delete >&2; exit 2"]),
            Duration::from_secs(10),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("cannot delete") && err.contains("exit status: 2"),
            "{err}"
        );
        let err = run_blocking(
            &Cmd::new("tail").args(["-f", "/dev/null"]),
            Duration::from_millis(200),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("timed out"), "{err}");
        assert_eq!(
            run_blocking(&Cmd::new("echo").arg("ok"), Duration::from_secs(10)).unwrap(),
            "ok\n"
        );
    }
}
