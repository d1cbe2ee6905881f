//! `harness up --target local` as a person runs it: it serves through the gateway, and however it
//! ends (SIGTERM, or SIGKILL with no chance to clean up) no Envoy or service process outlives it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::retry::Retry;

/// Starts `harness up --target local` and returns it with the gateway port it printed.
fn start_up() -> Result<(Child, u16)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["up", "--target", "local"])
        .env("E2E_TARGET", "local")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting harness up")?;
    let stdout = child.stdout.take().context("no stdout")?;
    // `up` prints the export line once the gateway routes; reading blocks until then or until
    // the process exits (then the lines end and the test fails with what was read).
    let mut seen = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(port) = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("INGRESS_PORT="))
        {
            return Ok((child, port.parse()?));
        }
        seen.push(line);
    }
    let _ = child.kill();
    anyhow::bail!("harness up ended without printing INGRESS_PORT; stdout: {seen:?}")
}

/// Processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised command name: state, ppid, ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            found.push(child);
        }
    }
    found
}

/// Whether `pid` still runs (a zombie has finished running).
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|s| s != "Z"))
        })
        .unwrap_or(false)
}

async fn answers_fft(port: u16) -> Result<()> {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .post(format!(
            "http://127.0.0.1:{port}/fft?numSamples=1024&freq=1"
        ))
        .send()
        .await?;
    ensure!(
        response.status() == 200,
        "POST /fft answered {}",
        response.status()
    );
    let body = response.text().await?;
    ensure!(body.contains("\"peakBin\":128"), "unexpected body {body}");
    Ok(())
}

async fn all_gone(pids: &[u32]) -> Result<()> {
    Retry::within(Duration::from_secs(20))
        .run("the gateway and replica processes to be gone", || async {
            let left: Vec<u32> = pids.iter().copied().filter(|p| is_running(*p)).collect();
            ensure!(left.is_empty(), "still running: {left:?}");
            Ok(())
        })
        .await?;
    Ok(())
}

fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    let result = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(result, 0, "kill({}, {signal})", child.id());
}

/// `harness up` answering through its gateway, with the processes it started.
async fn serving() -> Result<(Child, Vec<u32>)> {
    let (up, port) = start_up()?;
    answers_fft(port).await?;
    let started = children_of(up.id());
    // Envoy and three replicas (the Deployment's replica count).
    ensure!(
        started.len() >= 4,
        "expected Envoy and 3 replicas, saw children {started:?}"
    );
    Ok((up, started))
}

#[tokio::test]
async fn sigterm_stops_every_process_and_exits_0() -> Result<()> {
    let (mut up, started) = serving().await?;
    signal(&up, libc::SIGTERM);
    let status = tokio::task::spawn_blocking(move || up.wait()).await??;
    ensure!(
        status.success(),
        "harness up exited with {status} after SIGTERM"
    );
    all_gone(&started).await
}

#[tokio::test]
async fn sigkill_leaves_no_process_behind() -> Result<()> {
    let (mut up, started) = serving().await?;
    signal(&up, libc::SIGKILL);
    tokio::task::spawn_blocking(move || up.wait()).await??;
    all_gone(&started).await
}
