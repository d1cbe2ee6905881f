//! What the service needs to know at start.

/// Largest `--max-samples` accepted: one FFT of this size needs about 4 GiB.
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

    /// The plan cache keeps plans for up to twice the largest size in total: the sizes a
    /// client repeats stay planned, while the memory they hold stays a small multiple of one
    /// FFT's.
    pub fn plan_cache_samples(&self) -> usize {
        self.max_samples.saturating_mul(2)
    }
}
