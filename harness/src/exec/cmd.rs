//! Running external commands (kind, istioctl, docker, kubectl, cargo).
//!
//! Every command is printed before it runs so a person can follow and repeat it; a failure names
//! the command, its exit status and the tail of its stderr. In dry-run mode nothing runs: each
//! command and step is printed and recorded in the plan instead.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// How many trailing lines of stderr go into an error: enough to see the cause, short enough to
/// read in a test report.
const STDERR_TAIL_LINES: usize = 20;

/// A command to run, with the bound on how long it may take.
#[derive(Clone, Debug)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    current_dir: Option<PathBuf>,
    timeout: Duration,
    /// Non-zero exit codes that are answers, not failures (`istioctl analyze`'s 79: findings).
    answers: Vec<(i32, &'static str)>,
}

impl Cmd {
    pub fn new(program: impl Into<OsString>) -> Self {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            current_dir: None,
            timeout: Duration::from_secs(120),
            answers: Vec::new(),
        }
    }

    pub(crate) fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub(crate) fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    pub(crate) fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.current_dir = Some(dir.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Exit code `code` is an answer meaning `meaning`: the run succeeds, with its output and
    /// [`CmdOutput::answer`] set.
    pub(crate) fn exit_code_means(mut self, code: i32, meaning: &'static str) -> Self {
        self.answers.push((code, meaning));
        self
    }

    /// How long the command may take.
    pub(crate) fn time_limit(&self) -> Duration {
        self.timeout
    }

    pub(crate) fn program(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    pub(crate) fn arg_strings(&self) -> Vec<String> {
        self.args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }
}

/// The command as a person would type it in a POSIX shell.
impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words = Vec::new();
        for (key, value) in &self.envs {
            words.push(format!(
                "{}={}",
                key.to_string_lossy(),
                shell_quote(&value.to_string_lossy())
            ));
        }
        words.push(shell_quote(&self.program.to_string_lossy()));
        words.extend(self.args.iter().map(|a| shell_quote(&a.to_string_lossy())));
        f.write_str(&words.join(" "))
    }
}

fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%^".contains(c));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// What a finished command printed.
#[derive(Clone, Debug, Default)]
pub struct CmdOutput {
    pub stdout: String,
    pub stderr: String,
    /// Set when the command exited with a code declared by [`Cmd::exit_code_means`].
    pub answer: Option<(i32, &'static str)>,
}

/// Runs commands, or in dry-run mode records them. Cloning shares the plan.
#[derive(Clone, Debug, Default)]
pub struct Runner {
    dry_run: bool,
    plan: Arc<Mutex<Vec<String>>>,
}

impl Runner {
    pub fn new() -> Self {
        Runner::default()
    }

    pub fn dry_run() -> Self {
        Runner {
            dry_run: true,
            ..Runner::default()
        }
    }

    pub(crate) fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// Every step and command seen so far, in order (dry-run and real runs alike).
    pub fn plan(&self) -> Vec<String> {
        self.plan.lock().expect("plan lock").clone()
    }

    /// Announces a step that is not an external command (a Kubernetes API call, a wait).
    pub(crate) fn step(&self, description: impl Into<String>) {
        let description = description.into();
        if self.dry_run {
            println!("[dry-run] {description}");
        } else {
            super::progress::eprint_line(&format!("==> {description}"));
        }
        self.plan.lock().expect("plan lock").push(description);
    }

    /// Runs `cmd` and fails unless it exits 0. In dry-run mode returns empty output.
    pub async fn run(&self, cmd: &Cmd) -> Result<CmdOutput> {
        let shown = cmd.to_string();
        self.plan
            .lock()
            .expect("plan lock")
            .push(format!("$ {shown}"));
        if self.dry_run {
            println!("[dry-run] $ {shown}");
            return Ok(CmdOutput::default());
        }
        super::progress::eprint_line(&format!("$ {shown}"));
        execute(cmd)
            .await
            .with_context(|| format!("running `{shown}`"))
    }

    /// Runs a command that only reads state. It runs even in dry-run mode, because a plan
    /// depends on what exists (which clusters, which tools), and it changes nothing.
    pub async fn query(&self, cmd: &Cmd) -> Result<CmdOutput> {
        let shown = cmd.to_string();
        if !self.dry_run {
            super::progress::eprint_line(&format!("$ {shown}"));
        }
        execute(cmd)
            .await
            .with_context(|| format!("running `{shown}`"))
    }
}

/// The process groups of the commands running now: an interruption stops them before it cleans
/// up, so that a `kind create` still running cannot race the `kind delete` of the cleanup.
static RUNNING: std::sync::Mutex<Vec<u32>> = std::sync::Mutex::new(Vec::new());

/// SIGKILLs every command still running (each leads its own process group); says how many.
pub fn kill_running_children() -> usize {
    let running = std::mem::take(&mut *RUNNING.lock().unwrap_or_else(|p| p.into_inner()));
    let count = running.len();
    for pid in running {
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: signalling a process group this process started.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
        }
    }
    count
}

/// A command's entry in [`RUNNING`], from its start until it ends, however it ends.
struct Tracked(Option<u32>);

impl Tracked {
    fn register(pid: Option<u32>) -> Self {
        if let Some(pid) = pid {
            RUNNING.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
        }
        Tracked(pid)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            RUNNING
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|p| *p != pid);
        }
    }
}

async fn execute(cmd: &Cmd) -> Result<CmdOutput> {
    let mut command = tokio::process::Command::new(&cmd.program);
    // Its own process group, so a terminal's Ctrl-C (or a signal to the harness's group) reaches
    // the harness, which decides: a `kind delete` of the orderly teardown is not cut short.
    command.process_group(0);
    command
        .args(&cmd.args)
        .envs(cmd.envs.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    die_with_parent(command.as_std_mut());
    if let Some(dir) = &cmd.current_dir {
        command.current_dir(dir);
    }
    let child = command.spawn().map_err(|err| {
        if err.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!(
                "`{}` was not found on PATH (see README: scripts/install-tools.sh installs the pinned tools)",
                cmd.program.to_string_lossy()
            )
        } else {
            anyhow::Error::new(err).context("could not start the command")
        }
    })?;
    let _tracked = Tracked::register(child.id());
    let output = match tokio::time::timeout(cmd.timeout, child.wait_with_output()).await {
        Ok(result) => result.context("waiting for the command")?,
        // Dropping the future kills the child (kill_on_drop).
        Err(_) => bail!("timed out after {:?}", cmd.timeout),
    };
    let mut result = CmdOutput {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        answer: None,
    };
    result.answer = output
        .status
        .code()
        .and_then(|code| cmd.answers.iter().find(|(c, _)| *c == code).copied());
    if !output.status.success() && result.answer.is_none() {
        bail!(
            "exited with {}; stderr (last {} lines):\n{}",
            output.status,
            STDERR_TAIL_LINES,
            tail(&result.stderr, STDERR_TAIL_LINES)
        );
    }
    Ok(result)
}

/// Asks the kernel to SIGKILL the child started by `command` when this process dies, so that no
/// child outlives the harness even when it is killed with SIGKILL. Linux only; elsewhere children
/// are stopped by the harness's own cleanup. The signal is tied to the *thread* that spawns the
/// child: spawn from a thread that lives as long as the child.
pub(crate) fn die_with_parent(command: &mut std::process::Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
        // functions (prctl, getppid, _exit); it allocates nothing.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before the death signal was armed.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// The last `lines` lines of `text`.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_what_a_shell_needs() {
        let cmd = Cmd::new("kind")
            .args(["create", "cluster", "--name", "istio-fft-e2e"])
            .arg("it's")
            .env("KUBECONFIG", "/tmp/a b");
        assert_eq!(
            cmd.to_string(),
            r"KUBECONFIG='/tmp/a b' kind create cluster --name istio-fft-e2e 'it'\''s'"
        );
    }

    #[tokio::test]
    async fn failure_names_status_and_stderr_tail() {
        let cmd = Cmd::new("sh").args(["-c", "echo boom >&2; exit 3"]);
        let err = Runner::new().run(&cmd).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("exit status: 3"), "{text}");
        assert!(text.contains("boom"), "{text}");
        assert!(text.contains("sh -c"), "{text}");
    }

    /// tokio's `wait_with_output` reads stdout and stderr together: a child that fills its
    /// stderr pipe before it answers on stdout is not stalled until the bound.
    #[tokio::test]
    async fn a_chatty_stderr_does_not_stall_a_bounded_command() {
        let cmd = Cmd::new("sh")
            .args([
                "-c",
                "head -c 300000 /dev/zero | tr '\\0' w >&2; echo answered",
            ])
            .timeout(Duration::from_secs(10));
        let started = std::time::Instant::now();
        let out = Runner::new().run(&cmd).await.unwrap();
        assert_eq!(out.stdout, "answered\n");
        assert_eq!(out.stderr.len(), 300_000);
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn missing_program_says_so() {
        let err = Runner::new()
            .run(&Cmd::new("definitely-not-a-tool-here"))
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("was not found on PATH"));
    }

    #[tokio::test]
    async fn timeout_is_bounded_and_reported() {
        let blocking = Cmd::new("tail")
            .args(["-f", "/dev/null"])
            .timeout(Duration::from_millis(200));
        let err = Runner::new().run(&blocking).await.unwrap_err();
        assert!(format!("{err:#}").contains("timed out after"));
    }

    #[tokio::test]
    async fn dry_run_records_and_runs_nothing() {
        let runner = Runner::dry_run();
        runner.step("create cluster");
        let out = runner
            .run(&Cmd::new("sh").args(["-c", "exit 1"]))
            .await
            .expect("dry run does not execute");
        assert!(out.stdout.is_empty());
        assert_eq!(runner.plan(), vec!["create cluster", "$ sh -c 'exit 1'"]);
    }
}
