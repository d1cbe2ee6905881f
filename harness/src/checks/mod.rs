//! The scenario suite as data, and how each scenario is judged.
//!
//! Every request scenario names a method, a raw request target and the expected outcome:
//! [`Expected::Routed`] — the app answered (its `x-served-by` header is there and the gateway
//! added `x-envoy-upstream-service-time`) — or [`Expected::GatewayNotFound`] — Envoy's own 404
//! with an empty body and no app header. A 404 is never enough on its own: the app answers 404
//! too, so each outcome also says *who* answered. The same table runs against every target.

pub(crate) mod latency;
pub(crate) mod resilience;

pub use latency::LatencyBreakdown;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::env::{Disruption, Environment, KubeCheck, KubeCheckOutcome};
use crate::exec::probe::{self, ProbeRequest, ProbeResponse};
use crate::exec::prometheus_text;

use crate::config::names::{SERVED_BY_HEADER as SERVED_BY, UPSTREAM_SERVICE_TIME};
use crate::exec::probe::check_server_header;

/// Who is expected to answer, and with what status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// The request was routed to the app, which answered with this status.
    Routed(u16),
    /// No route matched: the gateway's own 404 with an empty body.
    GatewayNotFound,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expected::Routed(status) => write!(f, "routed {status}"),
            Expected::GatewayNotFound => f.write_str("gateway 404"),
        }
    }
}

/// What the body of a routed answer must show, beyond the status.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum BodyCheck {
    None,
    /// The FFT answer's JSON, with `servedBy` equal to the header; optionally the sample count
    /// and the peak bin (the analytic oracle: N·F/8).
    FftAnswer {
        num_samples: Option<u64>,
        peak_bin: Option<u64>,
    },
    /// Prometheus text with the app's request counter.
    PrometheusText,
    /// The app's 400 JSON `{"error": ...}` naming this parameter.
    JsonErrorNaming(&'static str),
    /// Exactly this text (the app's own `Not Found`).
    Text(&'static str),
}

/// One request through the gateway and its expected answer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RequestScenario {
    pub method: &'static str,
    pub target: &'static str,
    pub expected: Expected,
    pub body: BodyCheck,
}

/// Every kind of check in the suite.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Check {
    Request(RequestScenario),
    /// This many requests through the gateway reach every replica at least once.
    LoadSpread {
        requests: usize,
    },
    /// Each replica's request counter grows by exactly what the gateway sent to it.
    CounterGrowth {
        requests: usize,
    },
    Kubernetes(KubeCheck),
    /// A bounded load through the gateway while the replicas are disrupted.
    Resilience(Disruption),
    /// A fixed sample through the gateway, its time split by hop.
    Latency,
}

/// A check with the name it is listed under (`group::name`, so cargo's filters select groups).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NamedCheck {
    pub name: String,
    pub check: Check,
}

/// How a check ended when it did not fail.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum CheckOutcome {
    Passed(String),
    NotApplicable(String),
    /// Passed, with the latency breakdown it measured (for the reports).
    Measured(LatencyBreakdown),
}

fn request(
    group: &str,
    name: &str,
    method: &'static str,
    target: &'static str,
    expected: Expected,
    body: BodyCheck,
) -> NamedCheck {
    NamedCheck {
        name: format!("{group}::{name}"),
        check: Check::Request(RequestScenario {
            method,
            target,
            expected,
            body,
        }),
    }
}

/// The whole suite, in the order it runs.
pub(crate) fn suite() -> Vec<NamedCheck> {
    use BodyCheck as B;
    use Expected::{GatewayNotFound as Gw404, Routed};
    let fft = |n: Option<u64>, bin: Option<u64>| B::FftAnswer {
        num_samples: n,
        peak_bin: bin,
    };
    let mut checks = vec![
        // `uri.prefix: /fft` is a plain string prefix.
        request(
            "routing",
            "post_fft_prefix",
            "POST",
            "/fft",
            Routed(200),
            fft(Some(10_000), None),
        ),
        request(
            "routing",
            "post_fft_peak_bin_128",
            "POST",
            "/fft?numSamples=1024&freq=1",
            Routed(200),
            fft(Some(1024), Some(128)),
        ),
        request(
            "routing",
            "get_fft_peak_bin_128",
            "GET",
            "/fft?numSamples=1024&freq=1",
            Routed(200),
            fft(Some(1024), Some(128)),
        ),
        request(
            "routing",
            "post_fft_real_16",
            "POST",
            "/fft/real/16",
            Routed(200),
            fft(Some(16), None),
        ),
        request(
            "routing",
            "get_fft_real_10",
            "GET",
            "/fft/real/10",
            Routed(200),
            fft(Some(10), None),
        ),
        request(
            "routing",
            "post_fftx_reaches_app_404",
            "POST",
            "/fftx",
            Routed(404),
            B::Text("Not Found"),
        ),
        request(
            "routing",
            "get_fft_slash_reaches_app_404",
            "GET",
            "/fft/",
            Routed(404),
            B::Text("Not Found"),
        ),
        request(
            "routing",
            "delete_fft_reaches_app_405",
            "DELETE",
            "/fft",
            Routed(405),
            B::None,
        ),
        // `uri.exact: /metrics` compares the path without its query.
        request(
            "routing",
            "get_metrics_exact",
            "GET",
            "/metrics",
            Routed(200),
            B::PrometheusText,
        ),
        request(
            "routing",
            "get_metrics_query_is_ignored",
            "GET",
            "/metrics?x=1",
            Routed(200),
            B::PrometheusText,
        ),
        // Paths are normalised before matching.
        request(
            "routing",
            "get_dot_segments_normalised_to_metrics",
            "GET",
            "/fft/../metrics",
            Routed(200),
            B::PrometheusText,
        ),
        request(
            "routing",
            "post_dot_segment_normalised_to_fft",
            "POST",
            "/fft/./real/16",
            Routed(200),
            fft(Some(16), None),
        ),
        request(
            "bad_input",
            "num_samples_not_a_number",
            "POST",
            "/fft?numSamples=abc",
            Routed(400),
            B::JsonErrorNaming("numSamples"),
        ),
        request(
            "bad_input",
            "num_samples_zero",
            "POST",
            "/fft/real/0",
            Routed(400),
            B::JsonErrorNaming("numSamples"),
        ),
        request(
            "bad_input",
            "num_samples_too_large",
            "POST",
            "/fft?numSamples=999999999999",
            Routed(400),
            B::JsonErrorNaming("numSamples"),
        ),
        request(
            "bad_input",
            "freq_not_finite",
            "POST",
            "/fft?freq=inf",
            Routed(400),
            B::JsonErrorNaming("freq"),
        ),
        request("gateway_404", "get_root", "GET", "/", Gw404, B::None),
        request(
            "gateway_404",
            "get_healthz",
            "GET",
            "/healthz",
            Gw404,
            B::None,
        ),
        request(
            "gateway_404",
            "get_readyz",
            "GET",
            "/readyz",
            Gw404,
            B::None,
        ),
        request(
            "gateway_404",
            "get_fft_upper_case",
            "GET",
            "/FFT",
            Gw404,
            B::None,
        ),
        request(
            "gateway_404",
            "post_fft_upper_case",
            "POST",
            "/FFT?numSamples=16",
            Gw404,
            B::None,
        ),
        request(
            "gateway_404",
            "get_metrics_upper_case",
            "GET",
            "/Metrics",
            Gw404,
            B::None,
        ),
        request(
            "gateway_404",
            "get_metrics_trailing_slash",
            "GET",
            "/metrics/",
            Gw404,
            B::None,
        ),
        request(
            "gateway_404",
            "get_metrics_longer",
            "GET",
            "/metricsx",
            Gw404,
            B::None,
        ),
        request(
            "gateway_404",
            "get_metrics_subpath",
            "GET",
            "/metrics/x",
            Gw404,
            B::None,
        ),
        request(
            "gateway_404",
            "post_ff_shorter_than_prefix",
            "POST",
            "/ff",
            Gw404,
            B::None,
        ),
        // Slashes are not merged: `//fft` does not start with `/fft`.
        request(
            "gateway_404",
            "post_double_slash_fft",
            "POST",
            "//fft",
            Gw404,
            B::None,
        ),
        request(
            "gateway_404",
            "get_dot_segments_normalised_to_healthz",
            "GET",
            "/fft/../healthz",
            Gw404,
            B::None,
        ),
        NamedCheck {
            name: "load::every_replica_serves".into(),
            check: Check::LoadSpread { requests: 60 },
        },
        NamedCheck {
            name: "metrics::request_counter_grows_per_replica".into(),
            check: Check::CounterGrowth { requests: 30 },
        },
    ];
    checks.push(NamedCheck {
        name: "latency::breakdown".into(),
        check: Check::Latency,
    });
    checks.extend(KubeCheck::ALL.iter().map(|check| NamedCheck {
        name: check.name().to_string(),
        check: Check::Kubernetes(*check),
    }));
    // Last: they replace replicas, which the checks above count and scrape.
    checks.extend(
        [
            (
                "resilience::rolling_restart_zero_errors",
                Disruption::RollingRestart,
            ),
            ("resilience::replica_killed", Disruption::Kill),
            ("resilience::drain_on_sigterm", Disruption::Terminate),
        ]
        .map(|(name, disruption)| NamedCheck {
            name: name.to_string(),
            check: Check::Resilience(disruption),
        }),
    );
    checks
}

/// Runs one check against `env`.
pub(crate) async fn run_check(env: &dyn Environment, check: &Check) -> Result<CheckOutcome> {
    match check {
        Check::Request(scenario) => {
            let request = ProbeRequest::new(scenario.method, scenario.target);
            let response = probe::send(env.ingress(), &request).await?;
            judge(scenario, &response).map(CheckOutcome::Passed)
        }
        Check::LoadSpread { requests } => load_spread(env, *requests).await,
        Check::CounterGrowth { requests } => counter_growth(env, *requests).await,
        Check::Resilience(disruption) => resilience::run(env, *disruption).await,
        Check::Latency => {
            let measured = tokio::time::timeout(
                latency::SAMPLE_BOUND,
                latency::measure(env.ingress(), env.hop_notes()),
            )
            .await
            .with_context(|| {
                format!(
                    "the latency sample took longer than {:?}",
                    latency::SAMPLE_BOUND
                )
            })??;
            Ok(CheckOutcome::Measured(measured))
        }
        Check::Kubernetes(check) => Ok(match env.kube_check(*check).await? {
            KubeCheckOutcome::Passed { detail } => CheckOutcome::Passed(detail),
            KubeCheckOutcome::NotApplicable { reason } => CheckOutcome::NotApplicable(reason),
        }),
    }
}

/// Judges one answer; `Ok` carries a one-line description of what was seen.
pub(crate) fn judge(scenario: &RequestScenario, response: &ProbeResponse) -> Result<String> {
    let seen = describe_response(response);
    let context = || {
        format!(
            "{} {}: expected {}, got {seen}",
            scenario.method, scenario.target, scenario.expected
        )
    };
    check_outcome(scenario.expected, response).with_context(context)?;
    check_body(&scenario.body, response).with_context(context)?;
    Ok(format!("{} {} → {seen}", scenario.method, scenario.target))
}

fn describe_response(response: &ProbeResponse) -> String {
    let who = match response.header(SERVED_BY) {
        Some(replica) => format!("from {replica}"),
        None => "with no app header".to_string(),
    };
    format!(
        "{} {who} ({} ms)",
        response.status,
        response.elapsed.as_millis()
    )
}

/// Whether the answer came from who it should, with the status it should.
pub fn check_outcome(expected: Expected, response: &ProbeResponse) -> Result<()> {
    check_server_header(response)?;
    let served_by = response.header(SERVED_BY);
    let upstream_time = response.header(UPSTREAM_SERVICE_TIME);
    match expected {
        Expected::Routed(status) => {
            if response.status != status {
                bail!("status {} instead of {status}", response.status);
            }
            if served_by.is_none_or(str::is_empty) {
                bail!("no `{SERVED_BY}` header: the app did not answer");
            }
            if upstream_time.is_none() {
                bail!("no `{UPSTREAM_SERVICE_TIME}` header: the answer did not pass the router");
            }
        }
        Expected::GatewayNotFound => {
            if response.status != 404 {
                bail!("status {} instead of the gateway's 404", response.status);
            }
            if let Some(replica) = served_by {
                bail!("the app ({replica}) answered: the request was routed");
            }
            if upstream_time.is_some() {
                bail!("`{UPSTREAM_SERVICE_TIME}` is present: the request reached an upstream");
            }
            if !response.body.is_empty() {
                bail!("the body is not empty: {:?}", response.body_text());
            }
        }
    }
    Ok(())
}

fn check_body(check: &BodyCheck, response: &ProbeResponse) -> Result<()> {
    match check {
        BodyCheck::None => Ok(()),
        BodyCheck::Text(expected) => {
            let body = response.body_text();
            if body.trim_end() != *expected {
                bail!("body {body:?} instead of {expected:?}");
            }
            Ok(())
        }
        BodyCheck::FftAnswer {
            num_samples,
            peak_bin,
        } => {
            let json: Value = serde_json::from_slice(&response.body)
                .with_context(|| format!("body is not JSON: {:?}", response.body_text()))?;
            for field in [
                "numSamples",
                "freq",
                "peakBin",
                "peakMagnitude",
                "elapsedMicros",
                "servedBy",
            ] {
                if json.get(field).is_none() {
                    bail!("field `{field}` missing from {json}");
                }
            }
            let served_by = json["servedBy"].as_str().unwrap_or_default();
            if Some(served_by) != response.header(SERVED_BY) {
                bail!(
                    "servedBy {served_by:?} differs from the {SERVED_BY} header {:?}",
                    response.header(SERVED_BY)
                );
            }
            if let Some(n) = num_samples
                && json["numSamples"].as_u64() != Some(*n)
            {
                bail!("numSamples {} instead of {n}", json["numSamples"]);
            }
            if let Some(bin) = peak_bin
                && json["peakBin"].as_u64() != Some(*bin)
            {
                bail!("peakBin {} instead of {bin}", json["peakBin"]);
            }
            Ok(())
        }
        BodyCheck::PrometheusText => {
            let content_type = response.header("content-type").unwrap_or_default();
            if !content_type.starts_with("text/plain")
                && !content_type.starts_with("application/openmetrics-text")
            {
                bail!("content-type {content_type:?} is not Prometheus text");
            }
            let parsed = prometheus_text::parse(&response.body_text())
                .map_err(|e| anyhow::anyhow!("body is not Prometheus text: {e}"))?;
            if parsed.counters().is_empty() {
                bail!("no counter in the scrape (expected the app's request counter)");
            }
            Ok(())
        }
        BodyCheck::JsonErrorNaming(parameter) => {
            let json: Value = serde_json::from_slice(&response.body)
                .with_context(|| format!("body is not JSON: {:?}", response.body_text()))?;
            let message = json
                .get("error")
                .and_then(Value::as_str)
                .with_context(|| format!("no string `error` field in {json}"))?;
            if !message.contains(parameter) {
                bail!("error {message:?} does not name `{parameter}`");
            }
            Ok(())
        }
    }
}

/// The request the load checks send: small, so the checks measure routing, not FFTs.
const LOAD_TARGET: &str = "/fft?numSamples=64";

/// Sends `requests` routed requests and counts answers per replica.
async fn send_counted(ingress: SocketAddr, requests: usize) -> Result<BTreeMap<String, u64>> {
    let scenario = RequestScenario {
        method: "POST",
        target: LOAD_TARGET,
        expected: Expected::Routed(200),
        body: BodyCheck::None,
    };
    let mut served = BTreeMap::new();
    for i in 0..requests {
        let response = probe::send(ingress, &ProbeRequest::new("POST", LOAD_TARGET)).await?;
        judge(&scenario, &response).with_context(|| format!("request {} of {requests}", i + 1))?;
        let replica = response.header(SERVED_BY).unwrap_or_default().to_string();
        *served.entry(replica).or_insert(0) += 1;
    }
    Ok(served)
}

async fn load_spread(env: &dyn Environment, requests: usize) -> Result<CheckOutcome> {
    let replicas: Vec<String> = env
        .replica_metrics()
        .await
        .context("listing the replicas")?
        .into_keys()
        .collect();
    let served = send_counted(env.ingress(), requests).await?;
    let idle: Vec<&String> = replicas
        .iter()
        .filter(|r| !served.contains_key(*r))
        .collect();
    if !idle.is_empty() {
        bail!("{requests} requests never reached {idle:?}; served: {served:?}");
    }
    let strangers: Vec<&String> = served.keys().filter(|r| !replicas.contains(r)).collect();
    if !strangers.is_empty() {
        bail!("answers came from replicas the environment does not know: {strangers:?}");
    }
    Ok(CheckOutcome::Passed(format!(
        "{requests} requests over {} replicas: {served:?}",
        replicas.len()
    )))
}

/// The counter samples that count the load requests.
const LOAD_LABELS: [(&str, &str); 3] = [("method", "POST"), ("route", "/fft"), ("status", "200")];

fn load_counts(scrapes: &BTreeMap<String, String>) -> Result<BTreeMap<String, f64>> {
    scrapes
        .iter()
        .map(|(replica, text)| {
            let parsed = prometheus_text::parse(text)
                .map_err(|e| anyhow::anyhow!("metrics of {replica}: {e}"))?;
            Ok((replica.clone(), parsed.counter_sum(&LOAD_LABELS)))
        })
        .collect()
}

/// Compares counter growth per replica with what was sent to it; pure so it can be tested.
pub(crate) fn compare_counter_growth(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
    sent: &BTreeMap<String, u64>,
) -> Result<String> {
    let mut problems = Vec::new();
    let mut seen = Vec::new();
    for (replica, after_count) in after {
        let grew = after_count - before.get(replica).copied().unwrap_or(0.0);
        let expected = sent.get(replica).copied().unwrap_or(0) as f64;
        if grew != expected {
            problems.push(format!(
                "{replica}: counter grew by {grew}, gateway sent {expected}"
            ));
        }
        seen.push(format!("{replica} +{grew}"));
    }
    for replica in sent.keys().filter(|r| !after.contains_key(*r)) {
        problems.push(format!("{replica} served requests but has no metrics"));
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(seen.join(", "))
}

async fn counter_growth(env: &dyn Environment, requests: usize) -> Result<CheckOutcome> {
    let before = load_counts(&env.replica_metrics().await.context("scraping before")?)?;
    let sent = send_counted(env.ingress(), requests).await?;
    let after = load_counts(&env.replica_metrics().await.context("scraping after")?)?;
    let detail = compare_counter_growth(&before, &after, &sent).with_context(|| {
        format!("counter {LOAD_LABELS:?} before {before:?}, after {after:?}, sent {sent:?}")
    })?;
    Ok(CheckOutcome::Passed(format!(
        "{requests} requests, counters {detail}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::time::Duration;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> ProbeResponse {
        ProbeResponse::canned(status, headers, body, Duration::from_millis(1))
    }

    const GW: (&str, &str) = ("server", "istio-envoy");
    const APP: (&str, &str) = ("x-served-by", "r-0");
    const UST: (&str, &str) = ("x-envoy-upstream-service-time", "2");

    #[rstest]
    #[case::routed_ok(Expected::Routed(200), response(200, &[GW, APP, UST], "{}"), None)]
    #[case::app_404_is_routed(Expected::Routed(404), response(404, &[GW, APP, UST], "Not Found"), None)]
    #[case::app_404_is_not_gateway_404(Expected::GatewayNotFound, response(404, &[GW, APP, UST], "Not Found"), Some("the app (r-0) answered"))]
    #[case::gateway_404(Expected::GatewayNotFound, response(404, &[GW], ""), None)]
    #[case::gateway_404_is_not_routed(Expected::Routed(404), response(404, &[GW], ""), Some("no `x-served-by`"))]
    #[case::missing_upstream_time(Expected::Routed(200), response(200, &[GW, APP], ""), Some("did not pass the router"))]
    #[case::upstream_time_on_404(Expected::GatewayNotFound, response(404, &[GW, UST], ""), Some("reached an upstream"))]
    #[case::gateway_404_with_body(Expected::GatewayNotFound, response(404, &[GW], "oops"), Some("not empty"))]
    #[case::wrong_server(Expected::Routed(200), response(200, &[("server", "envoy"), APP, UST], ""), Some("not `istio-envoy`"))]
    #[case::no_server(Expected::GatewayNotFound, response(404, &[], ""), Some("`server` header is None"))]
    #[case::wrong_status(Expected::Routed(200), response(503, &[GW, APP, UST], ""), Some("status 503 instead of 200"))]
    fn outcome_judgement(
        #[case] expected: Expected,
        #[case] response: ProbeResponse,
        #[case] error: Option<&str>,
    ) {
        match (check_outcome(expected, &response), error) {
            (Ok(()), None) => {}
            (Err(err), Some(needle)) => assert!(err.to_string().contains(needle), "{err}"),
            (result, _) => panic!("unexpected {result:?}"),
        }
    }

    fn fft_body(n: u64, bin: u64, served_by: &str) -> String {
        format!(
            r#"{{"numSamples":{n},"freq":1.0,"peakBin":{bin},"peakMagnitude":5120.0,"elapsedMicros":12,"servedBy":"{served_by}"}}"#
        )
    }

    #[rstest]
    #[case::peak_ok(fft_body(1024, 128, "r-0"), Some(128), None)]
    #[case::peak_wrong(
        fft_body(1024, 127, "r-0"),
        Some(128),
        Some("peakBin 127 instead of 128")
    )]
    #[case::served_by_mismatch(
        fft_body(1024, 128, "r-9"),
        None,
        Some("differs from the x-served-by")
    )]
    #[case::not_json("Not Found".to_string(), None, Some("not JSON"))]
    #[case::missing_field(r#"{"numSamples":1024}"#.to_string(), None, Some("field `freq` missing"))]
    fn fft_answer_body(
        #[case] body: String,
        #[case] peak_bin: Option<u64>,
        #[case] error: Option<&str>,
    ) {
        let check = BodyCheck::FftAnswer {
            num_samples: Some(1024),
            peak_bin,
        };
        let result = check_body(&check, &response(200, &[GW, APP, UST], &body));
        match (result, error) {
            (Ok(()), None) => {}
            (Err(err), Some(needle)) => assert!(format!("{err:#}").contains(needle), "{err:#}"),
            (result, _) => panic!("unexpected {result:?}"),
        }
    }

    #[test]
    fn json_error_must_name_the_parameter() {
        let answer = |body: &str| response(400, &[GW, APP, UST], body);
        let check = BodyCheck::JsonErrorNaming("numSamples");
        assert!(check_body(&check, &answer(r#"{"error":"numSamples must be 1..=8"}"#)).is_ok());
        assert!(check_body(&check, &answer(r#"{"error":"freq must be finite"}"#)).is_err());
        assert!(check_body(&check, &answer("bad request")).is_err());
    }

    #[test]
    fn prometheus_text_needs_a_counter_and_the_content_type() {
        let text = "# TYPE fft_http_requests counter\nfft_http_requests_total{route=\"/fft\"} 1\n";
        let ok = response(
            200,
            &[GW, APP, UST, ("content-type", "text/plain; version=0.0.4")],
            text,
        );
        assert!(check_body(&BodyCheck::PrometheusText, &ok).is_ok());
        let json = response(
            200,
            &[GW, APP, UST, ("content-type", "application/json")],
            "{}",
        );
        assert!(check_body(&BodyCheck::PrometheusText, &json).is_err());
        let no_counter = response(
            200,
            &[GW, APP, UST, ("content-type", "text/plain")],
            "up 1\n",
        );
        assert!(check_body(&BodyCheck::PrometheusText, &no_counter).is_err());
    }

    #[test]
    fn counter_growth_must_match_what_was_sent() {
        let map = |pairs: &[(&str, f64)]| -> BTreeMap<String, f64> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let sent: BTreeMap<String, u64> = [("a".to_string(), 2), ("b".to_string(), 1)].into();
        let before = map(&[("a", 5.0), ("b", 0.0), ("c", 1.0)]);
        assert!(
            compare_counter_growth(&before, &map(&[("a", 7.0), ("b", 1.0), ("c", 1.0)]), &sent)
                .is_ok()
        );
        let err =
            compare_counter_growth(&before, &map(&[("a", 8.0), ("b", 1.0), ("c", 1.0)]), &sent)
                .unwrap_err();
        assert!(
            err.to_string()
                .contains("a: counter grew by 3, gateway sent 2"),
            "{err}"
        );
        let err =
            compare_counter_growth(&before, &map(&[("a", 7.0), ("c", 1.0)]), &sent).unwrap_err();
        assert!(
            err.to_string()
                .contains("b served requests but has no metrics"),
            "{err}"
        );
    }

    #[test]
    fn names_are_unique_and_grouped() {
        let checks = suite();
        let mut names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert!(names.iter().all(|n| n.contains("::")));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), checks.len(), "duplicate scenario names");
        assert!(names.contains(&"gateway_404::get_healthz"));
        assert!(names.contains(&"kubernetes::sidecars_injected"));
    }
}
