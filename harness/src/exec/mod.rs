//! How the harness acts on the world: external commands ([`cmd`]), the one wait primitive
//! ([`wait`]), the one HTTP probe ([`probe`]) and the one reader of the Prometheus text its
//! `/metrics` answers carry ([`prometheus_text`]), cleanup when the orderly teardown cannot
//! run ([`cleanup`]), and the live line of a long phase on a terminal ([`progress`]).

pub mod cleanup;
pub mod cmd;
pub(crate) mod file_lock;
pub mod probe;
pub(crate) mod progress;
pub(crate) mod prometheus_text;
pub mod wait;

/// The one async runtime the harness's entry points build (the suite's runner, the CLI): two
/// workers, as the machines it runs on have few cores and the work is waiting, not computing.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|err| anyhow::anyhow!("starting the async runtime: {err}"))
}
