//! The signal against its formula, the FFT against a naive DFT and against the analytic peak,
//! and the plan cache's bounds.

use std::f64::consts::{PI, TAU};
use std::sync::Arc;

use fft_service::signal::{sample, signal};
use fft_service::spectrum::{MAX_CACHED_PLANS, PlanCache, analyze, spectrum};
use rstest::rstest;
use rustfft::num_complex::Complex;

/// The tutorial's formula, written as the article writes it (no reduction of F).
fn formula(n: usize, freq: f64) -> f64 {
    let n = n as f64;
    10.0 * (2.0 * PI * n * freq / 8.0).sin()
        + 0.5 * (2.0 * PI * n * freq / 4.0 + 3.0 * PI / 4.0).sin()
}

fn naive_dft(samples: &[f64]) -> Vec<Complex<f64>> {
    let len = samples.len();
    (0..len)
        .map(|k| {
            samples
                .iter()
                .enumerate()
                .map(|(n, &x)| {
                    let angle = -TAU * (k * n % len) as f64 / len as f64;
                    Complex::new(x * angle.cos(), x * angle.sin())
                })
                .sum()
        })
        .collect()
}

const HALF_SQRT2: f64 = std::f64::consts::FRAC_1_SQRT_2;

#[rstest]
#[case::origin_is_the_phase_of_the_second_term(0, 0.1, 0.5 * HALF_SQRT2)]
#[case::zero_frequency_is_constant(3, 0.0, 0.5 * HALF_SQRT2)]
#[case::quarter_turn_of_the_first_term(2, 1.0, 10.0 - 0.5 * HALF_SQRT2)]
#[case::half_turn_of_the_first_term(4, 1.0, 0.5 * HALF_SQRT2)]
#[case::double_frequency(1, 2.0, 10.0 - 0.5 * HALF_SQRT2)]
#[case::negative_frequency(2, -1.0, -10.0 - 0.5 * HALF_SQRT2)]
fn sample_matches_hand_computed_values(#[case] n: usize, #[case] freq: f64, #[case] expected: f64) {
    let got = sample(n, freq);
    assert!(
        (got - expected).abs() < 1e-12,
        "x({n}) for F={freq}: {got} != {expected}"
    );
}

#[rstest]
fn sample_matches_the_formula(#[values(0.1, 0.01, 1.0, 3.7, -2.5, 12.3, 1000.001)] freq: f64) {
    for n in [0, 1, 2, 7, 99, 1000, 4095] {
        let (got, want) = (sample(n, freq), formula(n, freq));
        assert!(
            (got - want).abs() < 1e-6,
            "x({n}) for F={freq}: {got} != {want}"
        );
    }
}

#[rstest]
#[case(0.3)]
#[case(-1.25)]
fn frequency_is_periodic_with_period_8(#[case] freq: f64) {
    for n in [1, 10, 333, 100_000] {
        let (a, b) = (sample(n, freq), sample(n, freq + 8.0));
        assert!(
            (a - b).abs() < 1e-6,
            "x({n}) differs for F={freq} and F+8: {a} vs {b}"
        );
    }
}

#[test]
fn a_huge_frequency_stays_finite() {
    assert!(signal(1000, 1e300).iter().all(|x| x.is_finite()));
}

/// The generated signal (phasors rotated within blocks) against the direct formula, across
/// block boundaries and for frequencies whose phases wrap many times. Phases reach about 1e6
/// radians, where a phase is only known to about 1e-10 whichever way it is computed.
#[rstest]
fn signal_matches_each_sample_computed_directly(
    #[values(0, 1, 17, 256, 257, 1000, 100_000)] len: usize,
    #[values(0.1, 0.01, 1.0, 5.5, -3.3, 1e300)] freq: f64,
) {
    let values = signal(len, freq);
    assert_eq!(values.len(), len);
    for (n, value) in values.iter().enumerate() {
        let direct = sample(n, freq);
        assert!(
            (value - direct).abs() < 1e-8,
            "x({n}) for F={freq}: generated {value}, direct {direct}"
        );
    }
}

#[rstest]
fn fft_matches_a_naive_dft(
    #[values(1, 2, 3, 5, 8, 16, 17, 30, 64, 100, 127)] len: usize,
    #[values(0.1, 1.0, 3.3)] freq: f64,
) {
    let plans = PlanCache::new(1 << 20);
    let fast = spectrum(&plans, len, freq);
    let slow = naive_dft(&signal(len, freq));
    assert_eq!(fast.len(), len);
    for (bin, (a, b)) in fast.iter().zip(&slow).enumerate() {
        assert!(
            (a - b).norm() < 1e-8 * (1.0 + b.norm()),
            "N={len} F={freq} bin {bin}: fft {a} vs dft {b}"
        );
    }
    let peak = analyze(&plans, len, freq);
    let naive_max = slow[..=len / 2]
        .iter()
        .map(|c| c.norm())
        .fold(f64::NEG_INFINITY, f64::max);
    assert!(peak.bin <= len / 2);
    assert!((peak.magnitude - naive_max).abs() < 1e-8 * (1.0 + naive_max));
    assert!(
        (slow[peak.bin].norm() - naive_max).abs() < 1e-8 * (1.0 + naive_max),
        "N={len} F={freq}: bin {} is not a largest bin of the DFT",
        peak.bin
    );
}

/// When N·F/8 is a whole bin k ≤ N/2 the first term's energy lands entirely in bin k, with
/// magnitude 10·N/2; frequencies above the Nyquist limit fold back to N − k.
#[rstest]
#[case::article_example(1024, 1.0, 128)]
#[case(4096, 2.0, 1024)]
#[case(10_000, 0.8, 1000)]
#[case(65_536, 0.5, 4096)]
#[case(262_144, 0.25, 8192)]
#[case::prime_factor(8072, 1.0, 1009)]
#[case::folded_above_nyquist(1024, 6.0, 256)]
#[case::reduced_modulo_8(1024, 9.0, 128)]
fn peak_is_the_analytic_bin(#[case] len: usize, #[case] freq: f64, #[case] bin: usize) {
    let peak = analyze(&PlanCache::new(1 << 20), len, freq);
    assert_eq!(peak.bin, bin, "N={len} F={freq}");
    let expected = 10.0 * len as f64 / 2.0;
    assert!(
        (peak.magnitude - expected).abs() < 1e-6 * expected,
        "N={len} F={freq}: magnitude {} != {expected}",
        peak.magnitude
    );
}

#[test]
fn repeated_sizes_reuse_the_plan() {
    let plans = PlanCache::new(1000);
    let first = plans.plan(360);
    let second = plans.plan(360);
    assert!(
        Arc::ptr_eq(&first, &second),
        "the second lookup planned again"
    );
    assert_eq!((plans.hits().get(), plans.misses().get()), (1, 1));
    analyze(&plans, 360, 0.1);
    assert_eq!((plans.hits().get(), plans.misses().get()), (2, 1));
}

#[test]
fn cache_evicts_least_recently_used_within_its_sample_budget() {
    let plans = PlanCache::new(100);
    plans.plan(60);
    plans.plan(30);
    plans.plan(60); // 30 is now the least recently used
    plans.plan(40); // 60 + 30 + 40 > 100: evict 30
    assert_eq!(plans.cached_sizes(), vec![40, 60]);
    plans.plan(101); // larger than the whole budget: used, not kept
    assert_eq!(plans.cached_sizes(), vec![40, 60]);
    assert_eq!(plans.misses().get(), 4);
}

#[test]
fn cache_keeps_a_bounded_number_of_plans() {
    let plans = PlanCache::new(usize::MAX);
    for len in 1..=(MAX_CACHED_PLANS + 10) {
        plans.plan(len);
    }
    let sizes = plans.cached_sizes();
    assert_eq!(sizes.len(), MAX_CACHED_PLANS);
    assert_eq!(sizes.last(), Some(&(MAX_CACHED_PLANS + 10)));
}

#[test]
fn the_service_cache_never_holds_two_plans_of_the_largest_size() {
    let mut config = fft_service::ServiceConfig::new("test");
    config.max_samples = 1000;
    let plans = PlanCache::new(config.plan_cache_samples());
    plans.plan(100);
    plans.plan(1000);
    assert_eq!(plans.cached_sizes(), vec![100, 1000]);
    plans.plan(997);
    assert_eq!(plans.cached_sizes(), vec![997]);
}
