//! Parameter validation: what is accepted, what is rejected and what the error says.

use fft_service::params::{DEFAULT_NUM_SAMPLES, FftParams, ParamError, parse_num_samples};
use rstest::rstest;

const MAX: usize = 1_048_576;

fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[rstest]
#[case::defaults(&[], DEFAULT_NUM_SAMPLES, 0.1)]
#[case::article_oracle(&[("numSamples", "1024"), ("freq", "1")], 1024, 1.0)]
#[case::smallest(&[("numSamples", "1")], 1, 0.1)]
#[case::largest(&[("numSamples", "1048576")], MAX, 0.1)]
#[case::leading_zeros(&[("numSamples", "0010")], 10, 0.1)]
#[case::negative_freq(&[("freq", "-2.5")], DEFAULT_NUM_SAMPLES, -2.5)]
#[case::exponent_freq(&[("freq", "1e3")], DEFAULT_NUM_SAMPLES, 1000.0)]
#[case::zero_freq(&[("freq", "0")], DEFAULT_NUM_SAMPLES, 0.0)]
#[case::unknown_params_ignored(&[("foo", "bar"), ("numsamples", "x")], DEFAULT_NUM_SAMPLES, 0.1)]
fn accepted(#[case] pairs: &[(&str, &str)], #[case] num_samples: usize, #[case] freq: f64) {
    let params = FftParams::from_query(&query(pairs), MAX).expect("valid query");
    assert_eq!(params, FftParams { num_samples, freq });
}

#[rstest]
#[case::not_a_number(&[("numSamples", "abc")], "numSamples")]
#[case::zero(&[("numSamples", "0")], "numSamples")]
#[case::negative(&[("numSamples", "-5")], "numSamples")]
#[case::too_big(&[("numSamples", "1048577")], "numSamples")]
#[case::overflowing(&[("numSamples", "99999999999999999999999999")], "numSamples")]
#[case::empty(&[("numSamples", "")], "numSamples")]
#[case::fraction(&[("numSamples", "10.5")], "numSamples")]
#[case::exponent(&[("numSamples", "1e3")], "numSamples")]
#[case::space(&[("numSamples", " 10")], "numSamples")]
#[case::plus_sign(&[("numSamples", "+10")], "numSamples")]
#[case::hex(&[("numSamples", "0x10")], "numSamples")]
#[case::repeated_num_samples(&[("numSamples", "8"), ("numSamples", "8")], "numSamples")]
#[case::nan(&[("freq", "NaN")], "freq")]
#[case::infinity(&[("freq", "inf")], "freq")]
#[case::negative_infinity(&[("freq", "-infinity")], "freq")]
#[case::overflow_to_infinity(&[("freq", "1e400")], "freq")]
#[case::garbage_freq(&[("freq", "fast")], "freq")]
#[case::empty_freq(&[("freq", "")], "freq")]
#[case::comma_decimal(&[("freq", "0,1")], "freq")]
#[case::repeated_freq(&[("freq", "1"), ("freq", "2")], "freq")]
fn rejected_naming_the_parameter(#[case] pairs: &[(&str, &str)], #[case] param: &str) {
    let err = FftParams::from_query(&query(pairs), MAX).expect_err("invalid query");
    assert_eq!(err.param(), param);
    let message = err.to_string();
    assert!(message.starts_with(param), "{message}");
    let accepted = match err {
        ParamError::Repeated { .. } => "at most once",
        _ if param == "numSamples" => "an integer in 1..=1048576",
        _ => "a finite number",
    };
    assert!(message.contains(accepted), "{message}");
}

#[test]
fn the_bad_value_is_quoted_but_cut_when_long() {
    let long = "9".repeat(10_000);
    let message = parse_num_samples("numSamples", &long, MAX)
        .unwrap_err()
        .to_string();
    assert!(message.len() < 200, "{message}");
    let message = parse_num_samples("numSamples", "abc", MAX)
        .unwrap_err()
        .to_string();
    assert!(message.contains("\"abc\""), "{message}");
}

#[test]
fn the_default_size_never_exceeds_the_maximum() {
    let params = FftParams::from_query(&[], 100).expect("defaults are valid");
    assert_eq!(params.num_samples, 100);
}

#[test]
fn the_limit_follows_the_configured_maximum() {
    assert_eq!(parse_num_samples("numSamples", "100", 100), Ok(100));
    let err = parse_num_samples("numSamples", "101", 100).unwrap_err();
    assert!(err.to_string().contains("1..=100"), "{err}");
}
