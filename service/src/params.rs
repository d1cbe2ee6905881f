//! Validation of request parameters: every bad value is rejected before any work is done, with
//! an error that names the parameter and what it accepts.

use thiserror::Error;

use crate::signal::DEFAULT_FREQ;

/// Number of samples when a request does not give one (capped at the configured maximum).
pub const DEFAULT_NUM_SAMPLES: usize = 10_000;

/// Echoed input is cut to this many characters so an error never grows with the request.
const MAX_ECHOED_CHARS: usize = 64;

/// Why a request's parameters were rejected.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ParamError {
    #[error("{param} must be an integer in 1..={max}, got {got:?}")]
    NotAnInteger {
        param: &'static str,
        got: String,
        max: usize,
    },
    #[error("{param} must be an integer in 1..={max}, got {got}")]
    OutOfRange {
        param: &'static str,
        got: String,
        max: usize,
    },
    #[error("{param} must be a finite number (such as 0.1), got {got:?}")]
    NotFinite { param: &'static str, got: String },
    #[error("{param} must be given at most once, got {count} values")]
    Repeated { param: &'static str, count: usize },
}

impl ParamError {
    /// The parameter at fault.
    pub fn param(&self) -> &'static str {
        match self {
            ParamError::NotAnInteger { param, .. }
            | ParamError::OutOfRange { param, .. }
            | ParamError::NotFinite { param, .. }
            | ParamError::Repeated { param, .. } => param,
        }
    }
}

/// A validated FFT request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FftParams {
    pub num_samples: usize,
    pub freq: f64,
}

impl FftParams {
    /// From the decoded query pairs of `/fft`. Unknown parameters are ignored, as the original
    /// service did; `numSamples` and `freq` may each appear at most once.
    pub fn from_query(pairs: &[(String, String)], max_samples: usize) -> Result<Self, ParamError> {
        let num_samples = match single(pairs, "numSamples")? {
            Some(raw) => parse_num_samples("numSamples", raw, max_samples)?,
            None => DEFAULT_NUM_SAMPLES.min(max_samples),
        };
        let freq = match single(pairs, "freq")? {
            Some(raw) => parse_freq("freq", raw)?,
            None => DEFAULT_FREQ,
        };
        Ok(FftParams { num_samples, freq })
    }
}

fn single<'a>(
    pairs: &'a [(String, String)],
    param: &'static str,
) -> Result<Option<&'a str>, ParamError> {
    let mut values = pairs
        .iter()
        .filter(|(key, _)| key == param)
        .map(|(_, value)| value.as_str());
    let first = values.next();
    let more = values.count();
    if more > 0 {
        return Err(ParamError::Repeated {
            param,
            count: more + 1,
        });
    }
    Ok(first)
}

/// An integer in `1..=max`, written in plain decimal digits.
pub fn parse_num_samples(param: &'static str, raw: &str, max: usize) -> Result<usize, ParamError> {
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParamError::NotAnInteger {
            param,
            got: echo(raw),
            max,
        });
    }
    match raw.parse::<usize>() {
        Ok(value) if (1..=max).contains(&value) => Ok(value),
        _ => Err(ParamError::OutOfRange {
            param,
            got: echo(raw),
            max,
        }),
    }
}

/// Any finite floating-point number.
pub fn parse_freq(param: &'static str, raw: &str) -> Result<f64, ParamError> {
    match raw.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(value),
        _ => Err(ParamError::NotFinite {
            param,
            got: echo(raw),
        }),
    }
}

fn echo(raw: &str) -> String {
    if raw.chars().count() <= MAX_ECHOED_CHARS {
        raw.to_string()
    } else {
        let cut: String = raw.chars().take(MAX_ECHOED_CHARS).collect();
        format!("{cut}…")
    }
}
