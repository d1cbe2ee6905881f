//! The real binary on 127.0.0.1 with an ephemeral port: start-up, flags and environment,
//! and shutdown on SIGTERM/SIGINT.

use crate::support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::{Server, loopback_client, metric_value};

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fft-service"))
}

/// Polls `check` every 20 ms for at most 30 s.
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after 30 s waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `/readyz` answers 503: the server has begun to shut down.
async fn wait_not_ready(server: &Server, client: &reqwest::Client) {
    let readyz = server.url("/readyz");
    wait_until("/readyz answers 503", || {
        let request = client.get(&readyz).send();
        async move { matches!(request.await, Ok(r) if r.status() == 503) }
    })
    .await;
}

#[tokio::test]
async fn serves_the_oracle_on_an_ephemeral_port_with_the_given_replica_name() {
    let server = Server::start(binary(), &["--replica-name", "replica-a"], &[]);
    assert!(server.addr.ip().is_loopback() && server.addr.port() != 0);
    let client = loopback_client();
    let response = client
        .post(server.url("/fft?numSamples=1024&freq=1"))
        .send()
        .await
        .expect("POST /fft");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-served-by"], "replica-a");
    let json: Value = response.json().await.expect("JSON body");
    assert_eq!(json["peakBin"], 128);
    assert_eq!(json["servedBy"], "replica-a");

    let missing = client.get(server.url("/nope")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["x-served-by"], "replica-a");
    assert_eq!(missing.text().await.unwrap(), "Not Found");
    // stderr reaches the test through a reader thread: the line may arrive after the answer.
    wait_until("a request log line", || {
        let logs = server.stderr();
        async move {
            logs.contains("route=/fft")
                && logs.contains("status=200")
                && logs.contains("latency_ms")
        }
    })
    .await;
}

#[tokio::test]
async fn settings_come_from_the_environment_too() {
    let server = Server::start(
        binary(),
        &[],
        &[("REPLICA_NAME", "from-env"), ("MAX_SAMPLES", "100")],
    );
    let client = loopback_client();
    let response = client
        .get(server.url("/fft/real/101"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["x-served-by"], "from-env");
    assert!(response.text().await.unwrap().contains("1..=100"));
}

#[test]
fn the_replica_name_defaults_to_the_host_name() {
    let host = hostname::get().unwrap().to_string_lossy().into_owned();
    let server = Server::start(binary(), &[], &[]);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let served_by = runtime.block_on(async {
        let response = loopback_client()
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap();
        response.headers()["x-served-by"]
            .to_str()
            .unwrap()
            .to_string()
    });
    assert_eq!(served_by, host);
}

#[test]
fn bad_flags_are_refused_before_listening() {
    for bad in [
        &["--max-samples", "0"][..],
        &["--shutdown-grace", "soon"],
        &["--drain-delay", "a while"],
        &["--fft-workers", "0"],
        &["--listen", "not-an-address"],
    ] {
        let output = std::process::Command::new(binary())
            .args(bad)
            .output()
            .expect("running the binary");
        assert!(!output.status.success(), "{bad:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(bad[0]), "{bad:?}: {stderr}");
        assert!(output.stdout.is_empty(), "{bad:?} printed on stdout");
    }
}

/// SIGTERM during slow FFTs: readiness fails at once while the server keeps answering, the
/// running and the queued FFTs complete, and the process exits 0.
#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let (mut server, client, slow) = busy_server("60s", "1s").await;

    server.signal(libc::SIGTERM);
    wait_not_ready(&server, &client).await;
    let health = client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("/healthz while draining");
    assert_eq!(health.status(), 200);

    for request in slow {
        let response = request
            .await
            .unwrap()
            .expect("an in-flight request completes");
        assert_eq!(response.status(), 200);
        let json: Value = response.json().await.unwrap();
        assert_eq!(json["numSamples"], 2_097_152);
    }

    let status = server.wait_for_exit(Duration::from_secs(30));
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        server.stderr()
    );
    assert!(server.stderr().contains("shut down cleanly"));
}

#[tokio::test]
async fn an_idle_server_exits_zero_on_sigint() {
    let mut server = Server::start(binary(), &[], &[]);
    let response = loopback_client()
        .get(server.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.signal(libc::SIGINT);
    let status = server.wait_for_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        server.stderr()
    );
}

/// A request longer than the grace does not hold the process: it exits after the grace with
/// a log line and a non-zero status.
#[tokio::test]
async fn shutdown_is_forced_after_the_grace() {
    // Three queued requests are seconds of work in a debug build, a third of a second in a
    // release one, against a grace of 1 ms.
    let (mut server, _client, _slow) = busy_server("1ms", "0s").await;
    server.signal(libc::SIGTERM);
    let status = server.wait_for_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "stderr:\n{}", server.stderr());
    assert!(
        server.stderr().contains("grace expired"),
        "{}",
        server.stderr()
    );
}

/// The lame-duck step: after SIGTERM, for the drain delay, readiness fails but new connections
/// are still accepted and answered, each answer closing its connection; then the server stops
/// accepting and exits 0.
#[tokio::test]
async fn the_drain_delay_keeps_accepting_with_connection_close_then_stops() {
    let mut server = Server::start(binary(), &["--drain-delay", "2s"], &[]);
    let signalled = std::time::Instant::now();
    server.signal(libc::SIGTERM);
    let client = loopback_client();
    wait_not_ready(&server, &client).await;
    // A fresh client: a new connection, which a server that stopped accepting would refuse.
    let answer = loopback_client()
        .post(server.url("/fft?numSamples=1024&freq=1"))
        .send()
        .await
        .expect("a new connection during the drain delay is accepted");
    let during = signalled.elapsed();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["connection"], "close");
    assert!(
        during < Duration::from_secs(2),
        "answered only after {during:?}"
    );

    let addr = server.addr;
    wait_until("new connections are refused", || async move {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(
        signalled.elapsed() >= Duration::from_secs(2),
        "stopped accepting after {:?}, before the 2 s delay",
        signalled.elapsed()
    );
    let status = server.wait_for_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "exit status {status}; stderr:
{}",
        server.stderr()
    );
    let logs = server.stderr();
    assert!(
        logs.contains("still accepting for the drain delay"),
        "{logs}"
    );
    assert!(logs.contains("no longer accepting"), "{logs}");
}

/// A second signal ends the drain delay at once.
#[tokio::test]
async fn a_second_signal_cuts_the_drain_delay_short() {
    let mut server = Server::start(binary(), &["--drain-delay", "10m"], &[]);
    server.signal(libc::SIGTERM);
    let client = loopback_client();
    wait_not_ready(&server, &client).await;
    server.signal(libc::SIGINT);
    let status = server.wait_for_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "exit status {status}; stderr:
{}",
        server.stderr()
    );
    assert!(
        server.stderr().contains("drain delay cut short"),
        "{}",
        server.stderr()
    );
}

/// The `listening on` line promises that signals are handled: a SIGTERM sent at once must
/// shut down gracefully rather than kill the process.
#[test]
fn a_signal_right_after_the_listening_line_is_graceful() {
    for _ in 0..5 {
        let mut server = Server::start(binary(), &["--drain-delay", "0s"], &[]);
        server.signal(libc::SIGTERM);
        let status = server.wait_for_exit(Duration::from_secs(10));
        assert!(
            status.success(),
            "exit status {status}; stderr:\n{}",
            server.stderr()
        );
    }
}

/// A server with `--shutdown-grace grace` and `--drain-delay drain_delay`, busy with three slow FFTs (2^21 samples: seconds in a
/// debug build; three queue up behind each other so a release build is busy long enough too),
/// returned once the first one is running.
async fn busy_server(
    grace: &str,
    drain_delay: &str,
) -> (
    Server,
    reqwest::Client,
    Vec<tokio::task::JoinHandle<reqwest::Result<reqwest::Response>>>,
) {
    let server = Server::start(
        binary(),
        &[
            "--max-samples",
            "2097152",
            "--shutdown-grace",
            grace,
            "--drain-delay",
            drain_delay,
        ],
        &[],
    );
    let client = loopback_client();
    let slow: Vec<_> = (0..3)
        .map(|_| tokio::spawn(client.post(server.url("/fft?numSamples=2097152")).send()))
        .collect();
    let metrics_url = server.url("/metrics");
    wait_until("the slow FFT is running", || {
        let request = client.get(&metrics_url).send();
        async move {
            let Ok(response) = request.await else {
                return false;
            };
            let text = response.text().await.unwrap_or_default();
            metric_value(&text, "fft_jobs_running") == Some(1.0)
        }
    })
    .await;
    (server, client, slow)
}
