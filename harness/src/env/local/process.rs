//! Child processes that never outlive the harness.
//!
//! Each child asks the kernel for SIGKILL when its parent goes away (`PR_SET_PDEATHSIG`), which
//! covers a SIGKILLed harness. The kernel ties that signal to the *thread* that forked the child,
//! not the process, so every child is spawned from one dedicated thread that lives as long as the
//! [`Supervisor`] — never from a runtime worker or blocking-pool thread that may exit early.
//! Each child leads its own process group so that a stop reaches anything it started, and so
//! that a Ctrl-C in the terminal reaches the harness only (which then stops the children in
//! order). Output goes to one log file per child.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

/// How long a child has to exit after the stop signal before it gets SIGKILL.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(5);
/// How often a stop checks whether the children are gone.
const EXIT_POLL: Duration = Duration::from_millis(10);

/// What to start.
#[derive(Clone, Debug)]
pub(crate) struct ProcessSpec {
    /// Name used in logs and in the log file's name.
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub envs: Vec<(OsString, OsString)>,
}

impl ProcessSpec {
    pub(crate) fn new(name: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        ProcessSpec {
            name: name.into(),
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    pub(crate) fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub(crate) fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }
}

/// A running child.
#[derive(Debug, Clone)]
pub(crate) struct ChildInfo {
    pub name: String,
    pub pid: u32,
    /// Its stdout and stderr, interleaved.
    pub log: PathBuf,
}

struct Tracked {
    info: ChildInfo,
    child: Child,
    exit: Option<ExitStatus>,
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Owns the spawner thread and every child started through it.
pub(crate) struct Supervisor {
    requests: Option<mpsc::Sender<SpawnRequest>>,
    spawner: Option<JoinHandle<()>>,
    children: Arc<Mutex<Vec<Tracked>>>,
    log_dir: PathBuf,
}

impl Supervisor {
    /// Starts the spawner thread; logs go under `log_dir`.
    pub(crate) fn new(log_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(log_dir)
            .with_context(|| format!("creating the log folder {}", log_dir.display()))?;
        let (requests, inbox) = mpsc::channel::<SpawnRequest>();
        let spawner = std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                // Lives until the supervisor drops its sender; children spawned here get
                // SIGKILL when this thread ends, which is also when the harness is done.
                for (mut command, reply) in inbox {
                    let _ = reply.send(command.spawn());
                }
            })
            .context("starting the child-spawner thread")?;
        Ok(Supervisor {
            requests: Some(requests),
            spawner: Some(spawner),
            children: Arc::new(Mutex::new(Vec::new())),
            log_dir: log_dir.to_path_buf(),
        })
    }

    /// Starts `spec` with the death signal set and output going to `<log_dir>/<name>.log`.
    pub(crate) fn spawn(&self, spec: &ProcessSpec) -> Result<ChildInfo> {
        let log = self.log_dir.join(format!("{}.log", spec.name));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("sharing {}", log.display()))?;
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .envs(spec.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        crate::exec::cmd::die_with_parent(&mut command);
        // SAFETY: signal(2) is async-signal-safe and the closure allocates nothing. A harness
        // started in the background of a script inherits SIGINT ignored, and so would its
        // children; the stop relies on SIGINT.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let (reply, answer) = mpsc::channel();
        self.requests
            .as_ref()
            .ok_or_else(|| anyhow!("the supervisor is stopped"))?
            .send((command, reply))
            .map_err(|_| anyhow!("the child-spawner thread is gone"))?;
        let child = answer
            .recv()
            .map_err(|_| anyhow!("the child-spawner thread is gone"))?
            .with_context(|| format!("starting {} ({})", spec.name, spec.program.display()))?;
        let info = ChildInfo {
            name: spec.name.clone(),
            pid: child.id(),
            log,
        };
        self.children.lock().expect("children lock").push(Tracked {
            info: info.clone(),
            child,
            exit: None,
        });
        Ok(info)
    }

    /// `Some(status)` when the named child has exited.
    pub(crate) fn exit_status(&self, name: &str) -> Option<ExitStatus> {
        let mut children = self.children.lock().expect("children lock");
        let tracked = children.iter_mut().find(|t| t.info.name == name)?;
        if tracked.exit.is_none() {
            tracked.exit = tracked.child.try_wait().ok().flatten();
        }
        tracked.exit
    }

    /// Sends `signal` to the named child's process group, unless it has exited.
    pub(crate) fn signal(&self, name: &str, signal: libc::c_int) -> Result<()> {
        let mut children = self.children.lock().expect("children lock");
        let tracked = children
            .iter_mut()
            .find(|t| t.info.name == name)
            .ok_or_else(|| anyhow!("no child named {name}"))?;
        if tracked.exit.is_none() {
            tracked.exit = tracked.child.try_wait().ok().flatten();
        }
        if let Some(status) = tracked.exit {
            return Err(anyhow!("{name} has already exited ({status})"));
        }
        // SAFETY: kill(2) with a negative pid signals the child's own process group.
        unsafe { libc::kill(-(tracked.info.pid as libc::pid_t), signal) };
        Ok(())
    }

    /// Waits up to `timeout` for the named child to exit.
    pub(crate) async fn wait_exit(&self, name: &str, timeout: Duration) -> Result<ExitStatus> {
        let status = crate::exec::wait::Retry::within(timeout)
            .backoff(Duration::from_millis(5), Duration::from_millis(50))
            .run(&format!("{name} to exit"), || async {
                self.exit_status(name)
                    .ok_or_else(|| anyhow!("{name} is still running"))
            })
            .await?;
        Ok(status)
    }

    /// A handle that can stop every child from another thread (a signal handler's task).
    pub(crate) fn stopper(&self) -> Stopper {
        Stopper {
            children: Arc::clone(&self.children),
        }
    }

    /// Stops every child: SIGINT to each process group, up to `grace` to exit, then SIGKILL.
    /// Idempotent. Returns the names of children that needed SIGKILL.
    pub(crate) fn stop_all(&self, grace: Duration) -> Vec<String> {
        self.stopper().stop_all(grace)
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop_all(STOP_GRACE);
        // Closing the channel ends the spawner thread.
        self.requests.take();
        if let Some(thread) = self.spawner.take() {
            let _ = thread.join();
        }
    }
}

/// Stops the children of a [`Supervisor`] from anywhere.
#[derive(Clone)]
pub(crate) struct Stopper {
    children: Arc<Mutex<Vec<Tracked>>>,
}

impl Stopper {
    pub(crate) fn stop_all(&self, grace: Duration) -> Vec<String> {
        let mut children = self.children.lock().expect("children lock");
        let signal_group = |t: &Tracked, signal| {
            // SAFETY: kill(2) with a negative pid signals the child's own process group.
            unsafe { libc::kill(-(t.info.pid as libc::pid_t), signal) };
        };
        for tracked in children.iter_mut() {
            if tracked.exit.is_none() {
                tracked.exit = tracked.child.try_wait().ok().flatten();
            }
            if tracked.exit.is_none() {
                // SIGINT, the interactive stop: Envoy stops on it as on SIGTERM, and the service
                // skips the lame-duck delay it keeps for Kubernetes' SIGTERM, since nothing is
                // routing to it any more.
                signal_group(tracked, libc::SIGINT);
            }
        }
        let deadline = Instant::now() + grace;
        loop {
            for tracked in children.iter_mut().filter(|t| t.exit.is_none()) {
                tracked.exit = tracked.child.try_wait().ok().flatten();
            }
            if children.iter().all(|t| t.exit.is_some()) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(EXIT_POLL);
        }
        let mut killed = Vec::new();
        for tracked in children.iter_mut().filter(|t| t.exit.is_none()) {
            signal_group(tracked, libc::SIGKILL);
            tracked.exit = tracked.child.wait().ok();
            killed.push(tracked.info.name.clone());
        }
        killed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
    }

    #[tokio::test]
    async fn stop_all_terminates_and_logs_output() {
        let dir = tempfile::tempdir().unwrap();
        let supervisor = Supervisor::new(dir.path()).unwrap();
        let info = supervisor
            .spawn(
                &ProcessSpec::new("sleeper", "sh")
                    .arg("-c")
                    .arg("echo started; exec sleep 30"),
            )
            .unwrap();
        crate::env::local::replicas::wait_for_log_line(
            &info.log,
            "started",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert!(alive(info.pid));
        assert!(supervisor.exit_status("sleeper").is_none());
        let killed = supervisor.stop_all(Duration::from_secs(5));
        assert!(killed.is_empty(), "sleep ignores no SIGINT: {killed:?}");
        assert!(supervisor.exit_status("sleeper").is_some());
        assert!(!alive(info.pid));
    }

    #[tokio::test]
    async fn a_child_that_ignores_sigterm_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let supervisor = Supervisor::new(dir.path()).unwrap();
        let info = supervisor
            .spawn(
                &ProcessSpec::new("stubborn", "sh")
                    .arg("-c")
                    .arg("trap '' INT TERM; echo ready; while :; do sleep 1; done"),
            )
            .unwrap();
        // The trap must be installed before the stop, or SIGINT would end it at once.
        crate::env::local::replicas::wait_for_log_line(&info.log, "ready", Duration::from_secs(5))
            .await
            .unwrap();
        let killed = supervisor.stop_all(Duration::from_millis(200));
        assert_eq!(killed, vec!["stubborn".to_string()]);
        assert!(!alive(info.pid));
    }

    #[test]
    fn a_missing_program_names_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let supervisor = Supervisor::new(dir.path()).unwrap();
        let err = supervisor
            .spawn(&ProcessSpec::new("ghost", "/nonexistent/program"))
            .unwrap_err();
        assert!(format!("{err:#}").contains("starting ghost"), "{err:#}");
    }
}
