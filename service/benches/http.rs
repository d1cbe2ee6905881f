//! End-to-end latency and memory of the release binary on loopback.
//!
//! Prints, from one run: the HTTP floor (`GET /healthz`), the in-process time of the same
//! work as `POST /fft?numSamples=10000` (signal + FFT + peak, and the FFT alone), that
//! request's p50/p99 at concurrency 1 and 2, the ratio latency / (compute + floor) at
//! concurrency 1, and the peak RSS (VmHWM) of the server with 16 concurrent requests of the
//! largest size. Speed is reported, never asserted.

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use fft_service::spectrum::{PlanCache, analyze};
use support::{Server, loopback_client};

const N: usize = 10_000;
const FLOOR_REQUESTS: usize = 3000;
const FFT_REQUESTS: usize = 2000;
const IN_PROCESS_RUNS: usize = 2000;
const MAX_SAMPLES: usize = 1_048_576;
const CONCURRENT_MAX_SIZE: usize = 16;
const ROUNDS: usize = 10;

/// Runs the service's work for one request in this process, on a thread of its own as the
/// server's FFT workers are (each thread allocates from its own glibc arena, whose behaviour
/// differs from the main thread's).
struct InProcess {
    runs: std::sync::mpsc::Sender<usize>,
    results: std::sync::mpsc::Receiver<(Vec<Duration>, Vec<Duration>)>,
}

impl InProcess {
    fn start() -> Self {
        let (runs, run_requests) = std::sync::mpsc::channel::<usize>();
        let (send_results, results) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let plans = PlanCache::new(2 * MAX_SAMPLES);
            analyze(&plans, N, 0.1);
            for count in run_requests {
                let mut compute = Vec::with_capacity(count);
                let mut fft_only = Vec::with_capacity(count);
                for _ in 0..count {
                    let started = Instant::now();
                    let peak = std::hint::black_box(analyze(&plans, N, 0.1));
                    compute.push(started.elapsed());
                    fft_only.push(peak.fft_elapsed);
                }
                if send_results.send((compute, fft_only)).is_err() {
                    break;
                }
            }
        });
        InProcess { runs, results }
    }

    /// (signal + FFT + peak, FFT alone) for `count` runs.
    fn run(&self, count: usize) -> (Vec<Duration>, Vec<Duration>) {
        self.runs.send(count).expect("in-process worker alive");
        self.results.recv().expect("in-process worker alive")
    }
}

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_fft-service"))
}

struct Stats {
    p50: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Latencies of `total` requests sent by `concurrency` clients in parallel.
async fn measure(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    total: usize,
    concurrency: usize,
) -> Vec<Duration> {
    let per_client = total / concurrency;
    let clients = (0..concurrency).map(|_| {
        let (client, method, url) = (client.clone(), method.clone(), url.to_string());
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            for _ in 0..per_client {
                let started = Instant::now();
                let response = client
                    .request(method.clone(), &url)
                    .send()
                    .await
                    .expect("request");
                let status = response.status();
                response.bytes().await.expect("body");
                latencies.push(started.elapsed());
                assert!(status.is_success(), "{method} {url}: {status}");
            }
            latencies
        })
    });
    let mut all = Vec::with_capacity(total);
    for latencies in futures_join(clients.collect()).await {
        all.extend(latencies);
    }
    all
}

async fn futures_join<T: Send + 'static>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    let mut results = Vec::with_capacity(handles.len());
    for handle in handles {
        results.push(handle.await.expect("client task"));
    }
    results
}

/// Sends `CONCURRENT_MAX_SIZE` concurrent requests, cycling through `sizes`, to a fresh server
/// started with `args`; returns (how many got 200, how many 503, peak RSS in bytes).
async fn peak_rss(args: &[&str], sizes: &[usize]) -> (usize, usize, u64) {
    let server = Server::start(binary(), args, &[]);
    let client = loopback_client();
    let requests = sizes.iter().cycle().take(CONCURRENT_MAX_SIZE).map(|size| {
        let (client, url) = (
            client.clone(),
            server.url(&format!("/fft?numSamples={size}")),
        );
        tokio::spawn(async move { client.post(&url).send().await.expect("request").status() })
    });
    let statuses = futures_join(requests.collect()).await;
    let ok = statuses.iter().filter(|s| s.as_u16() == 200).count();
    let busy = statuses.iter().filter(|s| s.as_u16() == 503).count();
    assert_eq!(
        ok + busy,
        CONCURRENT_MAX_SIZE,
        "unexpected statuses: {statuses:?}"
    );
    (ok, busy, server.peak_rss_bytes())
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is accepted and ignored.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    runtime.block_on(run());
}

async fn run() {
    println!("fft-service benchmark (release binary on 127.0.0.1, default flags unless noted)");
    let server = Server::start(binary(), &["--replica-name", "bench"], &[]);
    let client = loopback_client();
    let fft_url = server.url(&format!("/fft?numSamples={N}"));
    let healthz = server.url("/healthz");

    // Warm up connections, the plan cache and the CPU's caches.
    measure(&client, reqwest::Method::GET, &healthz, 200, 1).await;
    measure(&client, reqwest::Method::POST, &fft_url, 200, 1).await;

    // The floor, the in-process work and the requests are measured in interleaved rounds, so
    // that a change in the machine's load during the run affects all of them alike.
    let in_process = InProcess::start();
    let (mut floor, mut compute, mut fft_only, mut c1) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        floor.extend(
            measure(
                &client,
                reqwest::Method::GET,
                &healthz,
                FLOOR_REQUESTS / ROUNDS,
                1,
            )
            .await,
        );
        let (round_compute, round_fft) = in_process.run(IN_PROCESS_RUNS / ROUNDS);
        compute.extend(round_compute);
        fft_only.extend(round_fft);
        c1.extend(
            measure(
                &client,
                reqwest::Method::POST,
                &fft_url,
                FFT_REQUESTS / ROUNDS,
                1,
            )
            .await,
        );
    }
    let (floor, compute, fft_only, c1) = (stats(floor), stats(compute), stats(fft_only), stats(c1));
    let c2 = stats(measure(&client, reqwest::Method::POST, &fft_url, FFT_REQUESTS, 2).await);
    drop(server);

    let two_workers = Server::start(
        binary(),
        &[
            "--replica-name",
            "bench",
            "--fft-workers",
            "2",
            "--io-threads",
            "2",
        ],
        &[],
    );
    let url = two_workers.url(&format!("/fft?numSamples={N}"));
    measure(&client, reqwest::Method::POST, &url, 200, 2).await;
    let c2_two_workers =
        stats(measure(&client, reqwest::Method::POST, &url, FFT_REQUESTS, 2).await);
    drop(two_workers);

    println!();
    println!("{:<58} {:>10} {:>10}", "", "p50 µs", "p99 µs");
    let row = |name: &str, s: &Stats| {
        println!("{name:<58} {:>10.1} {:>10.1}", micros(s.p50), micros(s.p99));
    };
    row("HTTP floor: GET /healthz", &floor);
    row(&format!("in-process signal + FFT + peak, N={N}"), &compute);
    row(&format!("in-process FFT alone, N={N}"), &fft_only);
    row(&format!("POST /fft?numSamples={N}, concurrency 1"), &c1);
    row(&format!("POST /fft?numSamples={N}, concurrency 2"), &c2);
    row(
        &format!("POST /fft?numSamples={N}, concurrency 2, --fft-workers 2"),
        &c2_two_workers,
    );
    let ratio = micros(c1.p50) / (micros(compute.p50) + micros(floor.p50));
    let ratio_fft_only = micros(c1.p50) / (micros(fft_only.p50) + micros(floor.p50));
    println!();
    println!(
        "ratio p50 latency / (in-process compute + floor) at concurrency 1: {ratio:.2} (goal <= 1.3)"
    );
    println!(
        "ratio p50 latency / (in-process FFT alone + floor) at concurrency 1: {ratio_fft_only:.2}"
    );

    println!();
    println!(
        "peak RSS (VmHWM) with {CONCURRENT_MAX_SIZE} concurrent POST /fft of the given size (goal < 200 MiB):"
    );
    let cases: [(&str, &[&str], &[usize]); 4] = [
        ("defaults (1 worker, queue 4)", &[], &[MAX_SAMPLES]),
        (
            "--fft-queue 16: every request served",
            &["--fft-queue", "16"],
            &[MAX_SAMPLES],
        ),
        ("defaults, a prime size (Bluestein)", &[], &[1_048_573]),
        (
            "--fft-queue 16, two primes alternating",
            &["--fft-queue", "16"],
            &[1_048_573, 1_048_571],
        ),
    ];
    for (name, args, sizes) in cases {
        let (ok, busy, rss) = peak_rss(args, sizes).await;
        println!(
            "  {name:<40} N={:<18} {ok:>2} x 200, {busy:>2} x 503, peak RSS {:.1} MiB",
            sizes
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join("/"),
            mib(rss)
        );
    }
}
