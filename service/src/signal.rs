//! The tutorial's test signal: a strong sine at F/8 cycles per sample plus a weak, phase-shifted
//! sine at twice that frequency.
//!
//! x(n) = 10·sin(2π·n·F/8) + 0.5·sin(2π·n·F/4 + 3π/4)
//!
//! For an integer n both terms are periodic in F with period 8 (adding 8 to F adds a whole
//! number of turns to each phase), so the phases are computed from F reduced modulo 8. The
//! signal is the same, but a huge F no longer overflows the phase to infinity (which would turn
//! every sample into NaN) and large n keep their precision.

use std::f64::consts::{PI, TAU};

/// Frequency used when a request does not give one.
pub const DEFAULT_FREQ: f64 = 0.1;

/// Frequency of `/fft/real/{numSamples}`, fixed as in the original service.
pub const REAL_ROUTE_FREQ: f64 = 0.01;

/// Sample `n` of the signal for frequency `freq` (any finite value).
pub fn sample(n: usize, freq: f64) -> f64 {
    let reduced = freq.rem_euclid(8.0);
    let n = n as f64;
    10.0 * (TAU * n * reduced / 8.0).sin() + 0.5 * (TAU * n * reduced / 4.0 + 3.0 * PI / 4.0).sin()
}

/// The first `num_samples` samples.
pub fn signal(num_samples: usize, freq: f64) -> Vec<f64> {
    (0..num_samples).map(|n| sample(n, freq)).collect()
}
