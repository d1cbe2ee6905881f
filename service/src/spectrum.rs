//! The FFT of the signal and its peak, with a bounded cache of FFT plans.
//!
//! Planning a size (choosing the algorithm, computing twiddle factors) costs about as much as
//! running it once, so plans are cached by size. `rustfft::FftPlanner` caches too, but without
//! a bound: every distinct size a client asks for would stay in memory for ever. This cache
//! keeps the most recently used plans within a budget of total samples and a count, and plans
//! each miss with a fresh planner so that an evicted plan (and its inner plans) is really freed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use rustfft::num_complex::Complex;
use rustfft::{Fft, FftPlanner};

use crate::signal::fill;

/// At most this many plans are cached, whatever their sizes: many tiny sizes must not make
/// each lookup slow.
pub const MAX_CACHED_PLANS: usize = 64;

/// Cache of forward FFT plans, least recently used evicted first.
#[derive(Debug)]
pub struct PlanCache {
    budget_samples: usize,
    state: Mutex<CacheState>,
    hits: Counter,
    misses: Counter,
}

#[derive(Debug, Default)]
struct CacheState {
    entries: Vec<CachedPlan>,
    clock: u64,
}

struct CachedPlan {
    len: usize,
    plan: Arc<dyn Fft<f64>>,
    last_used: u64,
}

impl std::fmt::Debug for CachedPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedPlan")
            .field("len", &self.len)
            .field("last_used", &self.last_used)
            .finish()
    }
}

impl PlanCache {
    /// A cache holding plans whose sizes add up to at most `budget_samples`. A plan larger than
    /// the whole budget is used but not kept.
    pub fn new(budget_samples: usize) -> Self {
        PlanCache {
            budget_samples,
            state: Mutex::new(CacheState::default()),
            hits: Counter::default(),
            misses: Counter::default(),
        }
    }

    /// The forward plan for `len` samples, planned only if it is not cached.
    pub fn plan(&self, len: usize) -> Arc<dyn Fft<f64>> {
        // A poisoned lock only means another worker panicked mid-lookup; the entries stay valid.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.clock += 1;
        let now = state.clock;
        if let Some(entry) = state.entries.iter_mut().find(|entry| entry.len == len) {
            entry.last_used = now;
            self.hits.inc();
            return Arc::clone(&entry.plan);
        }
        self.misses.inc();
        let cacheable = len <= self.budget_samples;
        if cacheable {
            // Make room before planning, so that the evicted plans are freed (unless a running
            // FFT still holds one) before the new one is allocated.
            while !state.entries.is_empty()
                && (state.entries.len() >= MAX_CACHED_PLANS
                    || state.entries.iter().map(|e| e.len).sum::<usize>() + len
                        > self.budget_samples)
            {
                let oldest = state
                    .entries
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, entry)| entry.last_used)
                    .map(|(index, _)| index)
                    .expect("entries is not empty");
                state.entries.swap_remove(oldest);
            }
        }
        let plan = FftPlanner::new().plan_fft_forward(len);
        if cacheable {
            state.entries.push(CachedPlan {
                len,
                plan: Arc::clone(&plan),
                last_used: now,
            });
        }
        plan
    }

    /// Sizes currently cached, smallest first.
    pub fn cached_sizes(&self) -> Vec<usize> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut sizes: Vec<usize> = state.entries.iter().map(|entry| entry.len).collect();
        sizes.sort_unstable();
        sizes
    }

    /// Lookups answered from the cache (shared with the metrics registry).
    pub fn hits(&self) -> &Counter {
        &self.hits
    }

    /// Lookups that had to plan (shared with the metrics registry).
    pub fn misses(&self) -> &Counter {
        &self.misses
    }
}

/// The full complex spectrum of the first `num_samples` samples of the signal.
pub fn spectrum(plans: &PlanCache, num_samples: usize, freq: f64) -> Vec<Complex<f64>> {
    let (buffer, _) = transform(plans, num_samples, freq);
    buffer
}

/// What a request reports about the spectrum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Peak {
    /// Index of the largest magnitude among bins `0..=num_samples/2` (the lowest such index on
    /// a tie). The upper half of a real signal's spectrum mirrors the lower half.
    pub bin: usize,
    pub magnitude: f64,
    /// Time spent in the FFT itself, without building the signal.
    pub fft_elapsed: Duration,
}

/// Builds the signal, transforms it and finds its peak. `num_samples` must be at least 1.
pub fn analyze(plans: &PlanCache, num_samples: usize, freq: f64) -> Peak {
    let (buffer, fft_elapsed) = transform(plans, num_samples, freq);
    let (bin, norm_sqr) = buffer[..=num_samples / 2]
        .iter()
        .map(Complex::norm_sqr)
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (bin, value)| {
            if value > best.1 { (bin, value) } else { best }
        });
    Peak {
        bin,
        magnitude: norm_sqr.sqrt(),
        fft_elapsed,
    }
}

fn transform(plans: &PlanCache, num_samples: usize, freq: f64) -> (Vec<Complex<f64>>, Duration) {
    assert!(num_samples >= 1, "an FFT needs at least one sample");
    // Planning a new size allocates temporaries of its own: plan first, so they are gone
    // before the signal's buffer exists.
    let plan = plans.plan(num_samples);
    let mut buffer = vec![Complex::new(0.0, 0.0); num_samples];
    fill(&mut buffer, freq);
    let mut scratch = vec![Complex::new(0.0, 0.0); plan.get_inplace_scratch_len()];
    let started = Instant::now();
    plan.process_with_scratch(&mut buffer, &mut scratch);
    (buffer, started.elapsed())
}
