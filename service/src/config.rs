//! What the service needs to know at start.

/// Largest `--max-samples` accepted: one FFT of this size already needs several GiB.
pub const MAX_MAX_SAMPLES: usize = 1 << 27;

#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Largest `numSamples` accepted.
    pub max_samples: usize,
    /// FFTs run at the same time (at least 1).
    pub fft_workers: usize,
    /// FFT requests that may wait for a worker; beyond them requests get 503.
    pub fft_queue: usize,
    /// Name reported in `servedBy` and the `x-served-by` header.
    pub replica_name: String,
}

impl ServiceConfig {
    /// The defaults of the binary, for the given replica name.
    pub fn new(replica_name: impl Into<String>) -> Self {
        ServiceConfig {
            max_samples: 1_048_576,
            fft_workers: 1,
            fft_queue: 4,
            replica_name: replica_name.into(),
        }
    }

    /// The plan cache holds plans for at most the largest size plus an eighth of it: one plan
    /// of the largest size (a prime size's plan takes about as much memory as the FFT's own
    /// buffers) and the smaller sizes clients repeat, but never two large plans at once.
    pub fn plan_cache_samples(&self) -> usize {
        self.max_samples.saturating_add(self.max_samples / 8)
    }
}
