//! Runs FFTs off the async executor, at most `workers` at a time, with at most `queue` more
//! requests waiting for a worker; anything beyond is refused at once.
//!
//! A waiting request holds only its parameters: the signal and the FFT buffers are allocated
//! when a worker starts it. So memory is bounded by `workers` × (one FFT of the largest size),
//! whatever the queue length, and a queued request whose client went away simply leaves.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use thiserror::Error;
use tokio::sync::Semaphore;

use crate::params::FftParams;
use crate::spectrum::{Peak, PlanCache, analyze};

#[derive(Debug, Error)]
pub enum PoolError {
    #[error("server busy: {workers} FFT(s) running and {queue} waiting is the limit; retry later")]
    Overloaded { workers: usize, queue: usize },
    #[error("the FFT worker failed: {0}")]
    WorkerFailed(String),
}

/// Bounded executor for FFT work.
#[derive(Clone, Debug)]
pub struct FftPool {
    workers: usize,
    queue: usize,
    admission: Arc<Semaphore>,
    running_slots: Arc<Semaphore>,
    plans: Arc<PlanCache>,
    running: Gauge,
    waiting: Gauge,
}

impl FftPool {
    /// `workers` must be at least 1.
    pub fn new(workers: usize, queue: usize, plans: Arc<PlanCache>) -> Self {
        assert!(workers >= 1, "an FFT pool needs at least one worker");
        FftPool {
            workers,
            queue,
            admission: Arc::new(Semaphore::new(workers + queue)),
            running_slots: Arc::new(Semaphore::new(workers)),
            plans,
            running: Gauge::default(),
            waiting: Gauge::default(),
        }
    }

    pub fn plans(&self) -> &Arc<PlanCache> {
        &self.plans
    }

    /// FFTs running now (shared with the metrics registry).
    pub fn running(&self) -> &Gauge {
        &self.running
    }

    /// Requests waiting for a worker now (shared with the metrics registry).
    pub fn waiting(&self) -> &Gauge {
        &self.waiting
    }

    pub async fn analyze(&self, params: FftParams) -> Result<Peak, PoolError> {
        let admitted = Arc::clone(&self.admission)
            .try_acquire_owned()
            .map_err(|_| PoolError::Overloaded {
                workers: self.workers,
                queue: self.queue,
            })?;
        let waiting = GaugeGuard::new(&self.waiting);
        let slot = Arc::clone(&self.running_slots)
            .acquire_owned()
            .await
            .expect("the worker semaphore is never closed");
        drop(waiting);
        let running = GaugeGuard::new(&self.running);
        let plans = Arc::clone(&self.plans);
        // The permits move into the job: if the client goes away, the FFT still counts against
        // the bound until it has really finished.
        let job = tokio::task::spawn_blocking(move || {
            let _held = (admitted, slot, running);
            analyze(&plans, params.num_samples, params.freq)
        });
        job.await
            .map_err(|err| PoolError::WorkerFailed(err.to_string()))
    }
}

/// Keeps a gauge incremented for as long as it lives.
struct GaugeGuard(Gauge);

impl GaugeGuard {
    fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
