//! Where a request's time goes, hop by hop: a fixed sample of FFT requests through the gateway,
//! each split by what the hops report about themselves.
//!
//! - the client's round trip (connection included: the load opens one per request);
//! - the gateway's time to its upstream, `x-envoy-upstream-service-time` (whole milliseconds:
//!   Envoy's router writes it so);
//! - the app's own time and the FFT's, from the service's `Server-Timing` (`app`, `fft`).
//!
//! From these, per request: gateway overhead = round trip − upstream time; sidecar and network =
//! upstream time − app time; app handling = app time − FFT; FFT. A difference below zero (the
//! upstream time is rounded down to the millisecond) counts as zero.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::config::names::{SERVED_BY_HEADER, UPSTREAM_SERVICE_TIME};
use crate::exec::probe::{self, ProbeRequest, ProbeResponse};

/// The sampled request: a small FFT, so the hops' costs are not drowned by the computation.
pub(crate) const SAMPLE_TARGET: &str = "/fft?numSamples=1024";
/// Requests measured, after the warm-up.
pub(crate) const SAMPLE_SIZE: usize = 200;
/// Requests sent first and not measured: connections, plan caches and the allocator warm up.
const WARM_UP: usize = 20;

/// One hop's share of the time, in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

/// The breakdown of one run's sample.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyBreakdown {
    /// What was sent: method, target and how many.
    pub request: String,
    pub requests: usize,
    /// Every figure in milliseconds.
    pub round_trip_ms: Percentiles,
    pub gateway_overhead_ms: Percentiles,
    pub sidecar_and_network_ms: Percentiles,
    pub app_handling_ms: Percentiles,
    pub fft_ms: Percentiles,
    /// What the figures cannot say (the upstream time's resolution, what the sidecar is).
    pub notes: Vec<String>,
}

impl LatencyBreakdown {
    /// The hops in the order a request crosses them, with their figures.
    pub fn hops(&self) -> [(&'static str, &Percentiles); 4] {
        [
            ("gateway overhead", &self.gateway_overhead_ms),
            ("sidecar + network", &self.sidecar_and_network_ms),
            ("app handling", &self.app_handling_ms),
            ("FFT", &self.fft_ms),
        ]
    }

    /// A short table for a terminal.
    pub fn table(&self) -> String {
        let mut lines = vec![format!(
            "latency of {} × {} (ms)   p50      p90      p99",
            self.requests, self.request
        )];
        let row = |name: &str, p: &Percentiles| {
            format!("  {name:<22}{:>8.3} {:>8.3} {:>8.3}", p.p50, p.p90, p.p99)
        };
        lines.push(row("round trip", &self.round_trip_ms));
        for (name, p) in self.hops() {
            lines.push(row(name, p));
        }
        for note in &self.notes {
            lines.push(format!("  note: {note}"));
        }
        lines.join("\n")
    }
}

/// One request's times, in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Timed {
    pub round_trip: f64,
    pub upstream: f64,
    pub app: f64,
    pub fft: f64,
}

/// Reads one routed answer's times; an answer that lacks one is an error naming it.
pub(crate) fn timed(response: &ProbeResponse) -> Result<Timed> {
    if response.status != 200 || response.header(SERVED_BY_HEADER).is_none() {
        bail!(
            "status {} {}: not the app's answer",
            response.status,
            response
                .header(SERVED_BY_HEADER)
                .unwrap_or("without x-served-by")
        );
    }
    let upstream: f64 = response
        .header(UPSTREAM_SERVICE_TIME)
        .with_context(|| format!("no `{UPSTREAM_SERVICE_TIME}` header"))?
        .trim()
        .parse()
        .with_context(|| format!("`{UPSTREAM_SERVICE_TIME}` is not a number"))?;
    let timing = response
        .header("server-timing")
        .context("no `server-timing` header: is the service older than its Server-Timing?")?;
    let metric = |name: &str| -> Result<f64> {
        timing
            .split(',')
            .filter_map(|m| m.trim().split_once(';'))
            .find(|(metric, _)| *metric == name)
            .and_then(|(_, params)| {
                params
                    .split(';')
                    .find_map(|p| p.trim().strip_prefix("dur="))
                    .and_then(|d| d.parse().ok())
            })
            .with_context(|| format!("no `{name};dur=` in `server-timing: {timing}`"))
    };
    Ok(Timed {
        round_trip: response.elapsed.as_secs_f64() * 1000.0,
        upstream,
        app: metric("app")?,
        fft: metric("fft")?,
    })
}

/// The `q` quantile (0..=1) of `values` by the nearest-rank method.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn percentiles(mut values: Vec<f64>) -> Percentiles {
    values.sort_by(f64::total_cmp);
    Percentiles {
        p50: quantile(&values, 0.50),
        p90: quantile(&values, 0.90),
        p99: quantile(&values, 0.99),
    }
}

/// The breakdown of a sample; `notes` say what the target's figures mean.
pub(crate) fn breakdown(sample: &[Timed], notes: Vec<String>) -> LatencyBreakdown {
    let of = |f: fn(&Timed) -> f64| percentiles(sample.iter().map(f).collect());
    LatencyBreakdown {
        request: format!("POST {SAMPLE_TARGET}"),
        requests: sample.len(),
        round_trip_ms: of(|t| t.round_trip),
        gateway_overhead_ms: of(|t| (t.round_trip - t.upstream).max(0.0)),
        sidecar_and_network_ms: of(|t| (t.upstream - t.app).max(0.0)),
        app_handling_ms: of(|t| (t.app - t.fft).max(0.0)),
        fft_ms: of(|t| t.fft),
        notes,
    }
}

/// Sends the warm-up and the sample through the gateway at `ingress`, one request at a time.
pub(crate) async fn measure(ingress: SocketAddr, notes: Vec<String>) -> Result<LatencyBreakdown> {
    let request = ProbeRequest::new("POST", SAMPLE_TARGET);
    for _ in 0..WARM_UP {
        probe::send(ingress, &request).await?;
    }
    let mut sample = Vec::with_capacity(SAMPLE_SIZE);
    for index in 0..SAMPLE_SIZE {
        let response = probe::send(ingress, &request).await?;
        sample.push(
            timed(&response)
                .with_context(|| format!("request {} of the latency sample", index + 1))?,
        );
    }
    Ok(breakdown(&sample, notes))
}

/// What every target's figures share: the resolution of the gateway's upstream time.
pub(crate) fn resolution_note() -> String {
    format!(
        "the gateway reports its upstream time in whole milliseconds ({UPSTREAM_SERVICE_TIME}), so \
         gateway overhead and sidecar + network are exact only to 1 ms; a difference below zero \
         counts as 0"
    )
}

/// The timeout a whole sample may take: generous, since each request is bounded on its own.
pub(crate) const SAMPLE_BOUND: Duration = Duration::from_secs(120);

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(headers: &[(&str, &str)], elapsed_ms: u64) -> ProbeResponse {
        ProbeResponse::canned(200, headers, "", Duration::from_millis(elapsed_ms))
    }

    #[test]
    fn each_hop_is_read_from_its_own_header() {
        let response = answer(
            &[
                ("x-served-by", "r-0"),
                ("x-envoy-upstream-service-time", "3"),
                ("server-timing", "app;dur=1.500, fft;dur=0.250"),
            ],
            5,
        );
        let t = timed(&response).unwrap();
        assert_eq!(
            t,
            Timed {
                round_trip: 5.0,
                upstream: 3.0,
                app: 1.5,
                fft: 0.25
            }
        );
        let b = breakdown(&[t], vec![]);
        assert_eq!(b.gateway_overhead_ms.p50, 2.0);
        assert_eq!(b.sidecar_and_network_ms.p50, 1.5);
        assert_eq!(b.app_handling_ms.p50, 1.25);
        assert_eq!(b.fft_ms.p99, 0.25);
    }

    #[test]
    fn a_missing_hop_is_named() {
        let no_timing = answer(
            &[("x-served-by", "r"), ("x-envoy-upstream-service-time", "1")],
            2,
        );
        assert!(format!("{:#}", timed(&no_timing).unwrap_err()).contains("server-timing"));
        let no_upstream = answer(&[("x-served-by", "r"), ("server-timing", "app;dur=1")], 2);
        assert!(
            format!("{:#}", timed(&no_upstream).unwrap_err()).contains("upstream-service-time")
        );
        let no_fft = answer(
            &[
                ("x-served-by", "r"),
                ("x-envoy-upstream-service-time", "1"),
                ("server-timing", "app;dur=1"),
            ],
            2,
        );
        assert!(format!("{:#}", timed(&no_fft).unwrap_err()).contains("fft;dur="));
    }

    #[test]
    fn percentiles_are_nearest_rank_and_differences_never_negative() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(values);
        assert_eq!((p.p50, p.p90, p.p99), (50.0, 90.0, 99.0));
        // Upstream time rounded down below the app's own time.
        let t = Timed {
            round_trip: 1.2,
            upstream: 0.0,
            app: 0.4,
            fft: 0.1,
        };
        let b = breakdown(&[t], vec![]);
        assert_eq!(b.sidecar_and_network_ms.p50, 0.0);
        assert!((b.gateway_overhead_ms.p50 - 1.2).abs() < 1e-9);
    }
}
