//! The `fft-service` binary: flags, logging, signals and the bounded shutdown.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use fft_service::config::MAX_MAX_SAMPLES;
use fft_service::lifecycle::Phase;
use fft_service::{AppState, ServiceConfig, StopSignal, serve};
use tracing_subscriber::EnvFilter;

/// CPU-bound FFT microservice (the Istio tutorial's demo app).
///
/// On start it prints one line `listening on <ip>:<port>` to stdout (so `--listen
/// 127.0.0.1:0` can be used and the port found); logs go to stderr, filtered by RUST_LOG
/// (default `info`).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,

    /// Largest numSamples accepted.
    #[arg(long, env = "MAX_SAMPLES", default_value_t = 1_048_576,
          value_parser = clap::value_parser!(u64).range(1..=MAX_MAX_SAMPLES as u64))]
    max_samples: u64,

    /// After SIGTERM/SIGINT, how long readiness fails while the server still accepts and answers
    /// (each answer with `Connection: close`), so that proxies learn of the endpoint removal
    /// before it stops accepting; `0s` stops at once. SIGINT skips it; a second signal cuts it
    /// short. The default
    /// covers the endpoint propagation of a small cluster (the manifests' grace period covers
    /// it plus --shutdown-grace).
    #[arg(long, env = "DRAIN_DELAY", default_value = "5s", value_parser = humantime::parse_duration)]
    drain_delay: Duration,

    /// How long in-flight requests may take to finish once the server stops accepting (after
    /// the drain delay) before the process exits anyway (with status 1), e.g. `10s`, `500ms`.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,

    /// FFTs computed at the same time. The default suits the 200m CPU limit of the manifests:
    /// a second worker would only share the same fifth of a core.
    #[arg(long, env = "FFT_WORKERS", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    fft_workers: u64,

    /// FFT requests that may wait for a worker; more get 503 with Retry-After. A waiting
    /// request holds no buffers, so this bounds latency, not memory.
    #[arg(long, env = "FFT_QUEUE", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(0..=65_536))]
    fft_queue: u64,

    /// Threads of the async runtime that handles connections (FFTs run on their own threads).
    #[arg(long, env = "IO_THREADS", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    io_threads: u64,

    /// Name reported in `servedBy` and `x-served-by` [default: the host name].
    #[arg(long, env = "REPLICA_NAME")]
    replica_name: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    return_large_allocations_to_the_kernel();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<ExitCode> {
    let replica_name = match args.replica_name {
        Some(name) => name,
        None => hostname::get()
            .context("reading the host name (set --replica-name to skip this)")?
            .to_string_lossy()
            .into_owned(),
    };
    let config = ServiceConfig {
        max_samples: usize::try_from(args.max_samples).context("--max-samples")?,
        fft_workers: usize::try_from(args.fft_workers).context("--fft-workers")?,
        fft_queue: usize::try_from(args.fft_queue).context("--fft-queue")?,
        replica_name,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::try_from(args.io_threads).context("--io-threads")?)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let shutdown = Shutdown {
        drain_delay: args.drain_delay,
        grace: args.shutdown_grace,
    };
    let outcome = runtime.block_on(serve_until_signal(args.listen, config, shutdown));
    // Dropping the runtime would wait for FFTs still running on blocking threads; after the
    // grace has expired nothing more is waited for.
    runtime.shutdown_background();
    outcome
}

/// The two steps of a shutdown (see `fft_service::lifecycle`).
struct Shutdown {
    drain_delay: Duration,
    grace: Duration,
}

async fn serve_until_signal(
    listen: SocketAddr,
    config: ServiceConfig,
    shutdown: Shutdown,
) -> Result<ExitCode> {
    let state = AppState::new(config.clone()).context("checking --replica-name")?;
    let next_signal = termination_signals()?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {bound}").context("writing the bound address")?;
        stdout.flush().context("writing the bound address")?;
    }
    tracing::info!(
        address = %bound,
        replica = %config.replica_name,
        max_samples = config.max_samples,
        fft_workers = config.fft_workers,
        fft_queue = config.fft_queue,
        drain_delay = ?shutdown.drain_delay,
        "listening"
    );

    let mut server = tokio::spawn(serve(
        listener,
        state.clone(),
        shutdown.drain_delay,
        next_signal,
    ));
    tokio::select! {
        finished = &mut server => {
            finished.context("the server task failed")?.context("serving HTTP")?;
            return Ok(ExitCode::SUCCESS);
        }
        () = state.lifecycle().reached(Phase::Draining) => {}
    }
    let grace = shutdown.grace;
    match tokio::time::timeout(grace, &mut server).await {
        Ok(finished) => {
            finished
                .context("the server task failed")?
                .context("serving HTTP")?;
            tracing::info!("shut down cleanly");
            Ok(ExitCode::SUCCESS)
        }
        Err(_) => {
            tracing::warn!(
                grace = ?grace,
                in_flight = state.lifecycle().in_flight(),
                "shutdown grace expired with requests still in flight; exiting now"
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Makes every large block (FFT buffers and plans: up to about 160 MiB for one FFT of a large
/// prime size) go back to the kernel as soon as it is freed. By default glibc raises its mmap
/// threshold after the first large free and then keeps such blocks in per-thread arenas, where
/// they stay resident: with FFTs landing on different blocking threads, resident memory then
/// grows past the peak of a single FFT, and under a 256Mi limit that is an OOM kill.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_large_allocations_to_the_kernel() {
    const MMAP_THRESHOLD_BYTES: libc::c_int = 1 << 20;
    // Small FFTs' buffers come from the heap; keeping a few MiB free at its top saves them
    // page faults and system calls on every request.
    const TRIM_THRESHOLD_BYTES: libc::c_int = 8 << 20;
    // SAFETY: mallopt only changes allocator tuning; setting the thresholds explicitly also
    // turns off glibc's dynamic raising of them. Called before any other thread exists.
    let changed = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
            + libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    };
    if changed != 2 {
        tracing::warn!("could not tune the allocator's thresholds; memory may stay resident");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_allocations_to_the_kernel() {}

/// Returns a function whose every call resolves on the next SIGTERM (what Kubernetes sends) or
/// SIGINT (Ctrl-C). The handlers are installed here, before the caller announces that it
/// listens: a signal sent right after the `listening on` line must start a graceful shutdown, not
/// kill the process.
fn termination_signals() -> Result<impl FnMut() -> BoxedSignal + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let handlers = Arc::new(tokio::sync::Mutex::new((terminate, interrupt)));
    Ok(move || {
        let handlers = Arc::clone(&handlers);
        Box::pin(async move {
            let mut handlers = handlers.lock().await;
            let (terminate, interrupt) = &mut *handlers;
            tokio::select! {
                _ = terminate.recv() => StopSignal::Terminate,
                _ = interrupt.recv() => StopSignal::Interrupt,
            }
        }) as BoxedSignal
    })
}

type BoxedSignal = std::pin::Pin<Box<dyn Future<Output = StopSignal> + Send>>;
