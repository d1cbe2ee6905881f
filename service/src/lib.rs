//! `fft-service`: a CPU-bound FFT microservice, the Istio tutorial's demo app ported to Rust.
//!
//! # Endpoints
//!
//! | path | methods | answer |
//! |---|---|---|
//! | `/fft?numSamples=N&freq=F` | GET, POST (HEAD) | 200 JSON; defaults N = 10000 (at most `--max-samples`), F = 0.1 |
//! | `/fft/real/{numSamples}` | GET, POST (HEAD) | 200 JSON with F = 0.01 |
//! | `/metrics` | GET | Prometheus text format 0.0.4 |
//! | `/healthz` | GET | 200 `ok` while the process lives |
//! | `/readyz` | GET | 200 `ready`; 503 `shutting down` from the start of shutdown |
//! | anything else | any | 404 `Not Found` (so `/fft/` and `/fftx` too) |
//!
//! The FFT answer is `{"numSamples", "freq", "peakBin", "peakMagnitude", "elapsedMicros",
//! "servedBy"}`: `peakBin` is the index of the largest magnitude among bins `0..=N/2` of the
//! signal of the [`signal`] module, `elapsedMicros` the FFT's own time. For N = 1024 and F = 1 the peak is
//! bin 128 (N·F/8).
//!
//! Bad input computes nothing and answers 400 `{"error": "..."}` naming the parameter and what
//! it accepts: `numSamples` an integer in `1..=max` in plain decimal digits, `freq` a finite
//! number, each given at most once. Other query parameters are ignored (as in the original),
//! and the real route ignores the query string. A known path with another method answers 405
//! with `Allow` and a JSON error. Every response carries `x-served-by: <replica name>` and
//! `Server-Timing: app;dur=<ms>` (the service's own handling time), FFT answers also
//! `fft;dur=<ms>` (the FFT alone), so a client behind proxies can see where the time went.
//!
//! When the FFT workers and their queue are full the answer is 503 JSON with `Retry-After: 1`
//! (see [`pool`]).
//!
//! # Running
//!
//! ```text
//! fft-service [--listen 0.0.0.0:8080] [--max-samples 1048576] [--drain-delay 5s]
//!             [--shutdown-grace 10s] [--fft-workers 1] [--fft-queue 4] [--io-threads 1] [--replica-name <host name>]
//! ```
//!
//! Each flag can also come from the environment: `LISTEN_ADDR`, `MAX_SAMPLES`, `DRAIN_DELAY`, `SHUTDOWN_GRACE`,
//! `FFT_WORKERS`, `FFT_QUEUE`, `IO_THREADS`, `REPLICA_NAME`; logs are filtered by `RUST_LOG`
//! (default `info`) and go to stderr, one line per request (method, route, path, status,
//! latency). Once listening, the binary prints exactly one line to stdout,
//! `listening on <ip>:<port>`, so that `--listen 127.0.0.1:0` can be used and the port found.
//!
//! The defaults suit the manifests' limits (200m CPU, 256Mi memory): one FFT at a time (a second
//! worker would only share the same fifth of a core) and four waiting requests (a waiting request
//! holds no buffers, so the queue bounds latency, not memory). One FFT of the largest size holds
//! about 50 MiB, or about 165 MiB for a large prime size, whose plan needs Bluestein's algorithm.
//!
//! On SIGTERM or SIGINT, `/readyz` answers 503 at once, and for `--drain-delay` (default 5 s)
//! the server keeps accepting and answering, each answer with `Connection: close`: Kubernetes
//! removes the pod from the endpoints when it sends SIGTERM, but the proxies in front learn of it
//! a little later, and a server that stopped accepting at once would refuse what they still send.
//! SIGINT (Ctrl-C) skips the delay, and a second signal cuts it short. Then the server stops accepting, lets the requests in
//! flight finish, closes idle connections and exits 0; if requests are still running when
//! `--shutdown-grace` (counted from the end of the delay) expires, it logs so and exits 1.
//!
//! # Metrics
//!
//! - `fft_http_requests_total{method, route, status}`: counter of answered requests; `route` is
//!   the route template (`/fft`, `/fft/real/{numSamples}`, `/metrics`, `/healthz`, `/readyz`)
//!   or `unmatched`; `method` is a standard method name or `other`.
//! - `fft_http_request_duration_seconds{method, route}`: histogram, buckets 1, 2, 5, 10, 20, 50,
//!   100, 200, 500 ms (written in seconds).
//! - `fft_compute_duration_seconds`: histogram of the FFT's own time per request.
//! - `fft_jobs_running`, `fft_jobs_waiting`: gauges of the FFT pool.
//! - `fft_plan_cache_hits_total`, `fft_plan_cache_misses_total`: plan cache lookups.
//! - `process_cpu_seconds_total`, `process_resident_memory_bytes`,
//!   `process_virtual_memory_bytes`, `process_threads`, `process_open_fds` (Linux).

pub mod config;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod params;
pub mod pool;
pub mod signal;
pub mod spectrum;

use std::future::Future;
use std::time::Duration;

pub use config::ServiceConfig;
pub use http::{AppState, FftResponse, SERVED_BY_HEADER, SERVER_TIMING, router};

/// The signals that stop the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: what Kubernetes sends; the drain delay applies.
    Terminate,
    /// SIGINT: Ctrl-C; no drain delay.
    Interrupt,
}

/// Serves `state` on `listener` until a termination signal, then shuts down in two steps (see
/// [`lifecycle`]): for `drain_delay` readiness fails while the server keeps accepting and
/// answering (a further signal cuts the delay short), then it stops accepting and returns once the
/// requests in flight have finished and every connection is closed. Bounding that last step is
/// the caller's job.
///
/// `next_signal` returns a future that resolves on the next termination signal. SIGINT (a person's
/// Ctrl-C; Kubernetes never sends it) skips the drain delay: nothing routes to a process run by
/// hand.
pub async fn serve<S, F>(
    listener: tokio::net::TcpListener,
    state: AppState,
    drain_delay: Duration,
    mut next_signal: S,
) -> std::io::Result<()>
where
    S: FnMut() -> F + Send + 'static,
    F: Future<Output = StopSignal> + Send,
{
    let lifecycle = state.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let lifecycle = lifecycle.lifecycle();
            let first = next_signal().await;
            lifecycle.begin_shutdown();
            let delay = match first {
                StopSignal::Terminate => drain_delay,
                StopSignal::Interrupt => Duration::ZERO,
            };
            tracing::info!(
                signal = ?first,
                drain_delay = ?delay,
                in_flight = lifecycle.in_flight(),
                "shutdown begun: readiness fails; still accepting for the drain delay"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                _ = next_signal() => tracing::info!("second signal: drain delay cut short"),
            }
            lifecycle.begin_draining();
            tracing::info!(
                in_flight = lifecycle.in_flight(),
                "no longer accepting; finishing in-flight requests"
            );
        })
        .await
}
