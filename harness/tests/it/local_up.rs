//! `harness up --target local` as a person runs it: it serves through the gateway, routes as
//! Istio would for manifests other than the project's, and however it ends (SIGTERM, or SIGKILL
//! with no chance to clean up) no Envoy or service process outlives it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use harness::checks::{Expected, check_outcome};
use harness::exec::probe::{self, ProbeRequest};
use harness::exec::wait::Retry;

/// Starts `harness up --target local` (with `extra` arguments) and returns it with the gateway
/// port it printed.
pub(crate) fn start_up(extra: &[&str]) -> Result<(Child, u16)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["up", "--target", "local"])
        .args(extra)
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

pub(crate) fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    let result = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(result, 0, "kill({}, {signal})", child.id());
}

/// `harness up` answering through its gateway, with the processes it started.
async fn serving() -> Result<(Child, Vec<u32>)> {
    let (up, port) = start_up(&[])?;
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

/// The project's manifest with its VirtualService's `http` section replaced.
fn manifest_with_http(http: &str) -> Result<tempfile::NamedTempFile> {
    let app = std::fs::read_to_string(harness::config::paths::manifests_dir().join("app.yaml"))?;
    let start = app
        .find("  http:\n")
        .context("app.yaml has an http section")?;
    let mut file = tempfile::NamedTempFile::new()?;
    std::io::Write::write_all(&mut file, format!("{}{http}", &app[..start]).as_bytes())?;
    Ok(file)
}

/// Sends each (method, path, expected) through the gateway of a `harness up` serving `manifest`.
async fn routes_as_expected(manifest: &Path, cases: &[(&str, &str, Expected)]) -> Result<()> {
    let (mut up, port) = start_up(&["--manifest", manifest.to_str().context("utf-8 path")?])?;
    let ingress = SocketAddr::from(([127, 0, 0, 1], port));
    let mut failures = Vec::new();
    for &(method, path, expected) in cases {
        let response = probe::send(ingress, &ProbeRequest::new(method, path)).await?;
        if let Err(err) = check_outcome(expected, &response) {
            failures.push(format!("{method} {path}: expected {expected}: {err:#}"));
        }
    }
    signal(&up, libc::SIGTERM);
    tokio::task::spawn_blocking(move || up.wait()).await??;
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

#[tokio::test]
async fn a_gateway_bound_to_no_virtual_service_answers_404_everywhere() -> Result<()> {
    let app = std::fs::read_to_string(harness::config::paths::manifests_dir().join("app.yaml"))?;
    let blackhole = app.replace(
        "  gateways:\n    - wtyfft-gateway\n",
        "  gateways:\n    - mesh\n",
    );
    ensure!(
        blackhole != app,
        "app.yaml no longer names wtyfft-gateway as expected"
    );
    let mut file = tempfile::NamedTempFile::new()?;
    std::io::Write::write_all(&mut file, blackhole.as_bytes())?;
    routes_as_expected(
        file.path(),
        &[
            ("POST", "/fft", Expected::GatewayNotFound),
            ("GET", "/metrics", Expected::GatewayNotFound),
            ("GET", "/", Expected::GatewayNotFound),
        ],
    )
    .await
}

#[tokio::test]
async fn ignore_uri_case_and_regex_route_as_on_istio() -> Result<()> {
    // ignoreUriCase makes the prefix case-insensitive; a regex must match the whole path and,
    // as Istio passes it to Envoy unchanged, stays case-sensitive.
    let manifest = manifest_with_http(
        "  http:
    - match:
        - uri:
            prefix: /FFT
          ignoreUriCase: true
        - uri:
            regex: /metrics(/[a-z]+)?
      route:
        - destination:
            host: wtyfft-svc
            port:
              number: 8000
",
    )?;
    routes_as_expected(
        manifest.path(),
        &[
            ("POST", "/fft", Expected::Routed(200)),
            // Routed by the case-insensitive prefix; the app itself knows only lower case.
            ("POST", "/FfT/real/8", Expected::Routed(404)),
            ("POST", "/fft/real/8", Expected::Routed(200)),
            ("GET", "/metrics", Expected::Routed(200)),
            ("GET", "/metrics/x", Expected::Routed(404)),
            ("GET", "/metrics/x1", Expected::GatewayNotFound),
            ("GET", "/metricsx", Expected::GatewayNotFound),
            ("GET", "/METRICS", Expected::GatewayNotFound),
            ("GET", "/healthz", Expected::GatewayNotFound),
        ],
    )
    .await
}

/// Runs `harness up --target local` with `args` and `env` until it exits; returns its stderr.
fn up_failure(args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["up", "--target", "local"])
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .context("running harness up")?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    ensure!(!output.status.success(), "harness up succeeded:\n{stderr}");
    Ok(stderr)
}

#[test]
fn envoy_exiting_at_start_ends_the_wait_at_once_with_its_log() -> Result<()> {
    // The gateway port is taken: Envoy cannot bind it and exits.
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.port().to_string();
    let stderr = up_failure(&["--port", &port], &[])?;
    ensure!(
        stderr.contains("gave up waiting") && stderr.contains("Envoy exited with"),
        "expected the wait to give up on Envoy's exit:\n{stderr}"
    );
    Ok(())
}

#[test]
fn a_replica_exiting_at_start_ends_the_wait_at_once_with_its_log() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let broken = dir.path().join("fft-service");
    std::fs::write(&broken, "#!/bin/sh\necho 'cannot start' >&2\nexit 3\n")?;
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let stderr = up_failure(
        &[],
        &[("FFT_SERVICE_BIN", broken.to_str().context("utf-8")?)],
    )?;
    ensure!(
        stderr.contains("gave up waiting") && stderr.contains("cannot start"),
        "expected the wait to give up on the replica's exit, showing its log:\n{stderr}"
    );
    Ok(())
}
