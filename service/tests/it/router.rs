//! The HTTP surface in-process: every route, method and bad input, the headers and bodies, the
//! metrics labels, overload and readiness.

use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use fft_service::{AppState, ServiceConfig, router};
use rstest::rstest;
use serde_json::Value;
use tower::ServiceExt;

const REPLICA: &str = "replica-under-test";

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|err| panic!("{err}: {}", self.body))
    }
}

fn state_with(configure: impl FnOnce(&mut ServiceConfig)) -> AppState {
    let mut config = ServiceConfig::new(REPLICA);
    configure(&mut config);
    AppState::new(config).expect("valid replica name")
}

async fn call(app: &Router, method: Method, uri: &str) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .expect("valid request");
    let response = app.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("readable body");
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).expect("utf-8 body"),
    }
}

/// Polls `condition` every 10 ms for at most 30 s, naming what it waited for on timeout.
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after 30 s waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[rstest]
#[case(Method::GET, "/fft?numSamples=1024&freq=1", StatusCode::OK)]
#[case(Method::POST, "/fft?numSamples=1024&freq=1", StatusCode::OK)]
#[case(Method::HEAD, "/fft?numSamples=16", StatusCode::OK)]
#[case(Method::POST, "/fft", StatusCode::OK)]
#[case(Method::GET, "/fft/real/1024", StatusCode::OK)]
#[case(Method::POST, "/fft/real/1024?freq=abc", StatusCode::OK)]
#[case(Method::GET, "/metrics", StatusCode::OK)]
#[case(Method::GET, "/metrics?x=1", StatusCode::OK)]
#[case(Method::GET, "/healthz", StatusCode::OK)]
#[case(Method::GET, "/readyz", StatusCode::OK)]
#[case(Method::GET, "/fft?numSamples=abc", StatusCode::BAD_REQUEST)]
#[case(Method::POST, "/fft?numSamples=0", StatusCode::BAD_REQUEST)]
#[case(Method::POST, "/fft?numSamples=-1", StatusCode::BAD_REQUEST)]
#[case(Method::POST, "/fft?numSamples=1048577", StatusCode::BAD_REQUEST)]
#[case(Method::POST, "/fft?numSamples=", StatusCode::BAD_REQUEST)]
#[case(Method::POST, "/fft?numSamples", StatusCode::BAD_REQUEST)]
#[case(Method::POST, "/fft?numSamples=1.5", StatusCode::BAD_REQUEST)]
#[case(Method::POST, "/fft?numSamples=%31%30", StatusCode::OK)]
#[case(Method::POST, "/fft?numSamples=%FF", StatusCode::BAD_REQUEST)]
#[case(Method::POST, "/fft?freq=NaN", StatusCode::BAD_REQUEST)]
#[case(Method::POST, "/fft?freq=-inf", StatusCode::BAD_REQUEST)]
#[case(Method::POST, "/fft?freq=zzz", StatusCode::BAD_REQUEST)]
#[case(
    Method::POST,
    "/fft?numSamples=8&numSamples=9",
    StatusCode::BAD_REQUEST
)]
#[case(Method::POST, "/fft?freq=1&freq=1", StatusCode::BAD_REQUEST)]
#[case(Method::POST, "/fft/real/abc", StatusCode::BAD_REQUEST)]
#[case(Method::POST, "/fft/real/0", StatusCode::BAD_REQUEST)]
#[case(Method::POST, "/fft/real/-3", StatusCode::BAD_REQUEST)]
#[case(Method::POST, "/fft/real/1048577", StatusCode::BAD_REQUEST)]
#[case(Method::POST, "/fft/real/%FF", StatusCode::BAD_REQUEST)]
#[case(Method::POST, "/fft/real/", StatusCode::BAD_REQUEST)]
#[case(Method::POST, "/fft/", StatusCode::NOT_FOUND)]
#[case(Method::POST, "/fftx", StatusCode::NOT_FOUND)]
#[case(Method::GET, "/FFT", StatusCode::NOT_FOUND)]
#[case(Method::GET, "/", StatusCode::NOT_FOUND)]
#[case(Method::POST, "/fft/real", StatusCode::NOT_FOUND)]
#[case(Method::POST, "/fft/real/10/extra", StatusCode::NOT_FOUND)]
#[case(Method::GET, "/metrics/", StatusCode::NOT_FOUND)]
#[case(Method::DELETE, "/fft", StatusCode::METHOD_NOT_ALLOWED)]
#[case(Method::PUT, "/fft/real/10", StatusCode::METHOD_NOT_ALLOWED)]
#[case(Method::POST, "/metrics", StatusCode::METHOD_NOT_ALLOWED)]
#[case(Method::POST, "/healthz", StatusCode::METHOD_NOT_ALLOWED)]
#[case(Method::OPTIONS, "/readyz", StatusCode::METHOD_NOT_ALLOWED)]
#[tokio::test]
async fn status_and_replica_header(
    #[case] method: Method,
    #[case] uri: &str,
    #[case] status: StatusCode,
) {
    let app = router(state_with(|_| {}));
    let answer = call(&app, method.clone(), uri).await;
    assert_eq!(answer.status, status, "{method} {uri}: {}", answer.body);
    assert_eq!(
        answer
            .headers
            .get("x-served-by")
            .map(|v| v.to_str().unwrap()),
        Some(REPLICA),
        "{method} {uri} has no x-served-by"
    );
    assert!(
        !answer.status.is_redirection() && !answer.status.is_server_error(),
        "{method} {uri}"
    );
    match status {
        StatusCode::NOT_FOUND => assert_eq!(answer.body, "Not Found"),
        StatusCode::BAD_REQUEST => {
            let error = answer.json()["error"]
                .as_str()
                .expect("error text")
                .to_string();
            assert!(
                error.contains("numSamples") || error.contains("freq"),
                "{uri}: {error}"
            );
            assert!(
                error.contains("1..=1048576") || error.contains("finite") || error.contains("once"),
                "{uri}: the error does not say what is accepted: {error}"
            );
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = answer.headers.get(header::ALLOW).expect("Allow header");
            assert!(allow.to_str().unwrap().contains("GET"), "{allow:?}");
            assert!(
                answer.json()["error"]
                    .as_str()
                    .unwrap()
                    .contains("not allowed")
            );
        }
        _ => {}
    }
}

#[tokio::test]
async fn fft_answer_has_the_camel_case_fields_and_the_analytic_peak() {
    let app = router(state_with(|_| {}));
    let answer = call(&app, Method::POST, "/fft?numSamples=1024&freq=1").await;
    assert_eq!(
        answer.headers.get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
    let json = answer.json();
    assert_eq!(json["numSamples"], 1024);
    assert_eq!(json["freq"], 1.0);
    assert_eq!(json["peakBin"], 128);
    let magnitude = json["peakMagnitude"].as_f64().expect("peakMagnitude");
    assert!((magnitude - 5120.0).abs() < 1e-6, "{magnitude}");
    assert!(json["elapsedMicros"].is_u64(), "{json}");
    assert_eq!(json["servedBy"], REPLICA);
}

/// `Server-Timing` durations in milliseconds, by metric name.
fn server_timing(answer: &Answer) -> std::collections::BTreeMap<String, f64> {
    let value = answer
        .headers
        .get("server-timing")
        .expect("a Server-Timing header")
        .to_str()
        .unwrap();
    value
        .split(',')
        .map(|metric| {
            let (name, dur) = metric.trim().split_once(";dur=").expect("name;dur=ms");
            (name.to_string(), dur.parse::<f64>().expect("a number"))
        })
        .collect()
}

#[tokio::test]
async fn server_timing_gives_the_apps_time_and_the_ffts() {
    let app = router(state_with(|_| {}));
    let answer = call(&app, Method::POST, "/fft?numSamples=4096&freq=1").await;
    let timing = server_timing(&answer);
    let (app_ms, fft_ms) = (timing["app"], timing["fft"]);
    assert!(fft_ms > 0.0 && app_ms >= fft_ms, "{timing:?}");
    let micros = answer.json()["elapsedMicros"].as_f64().unwrap();
    assert!(
        (fft_ms * 1000.0 - micros).abs() <= 1.0,
        "{timing:?} vs {micros} µs"
    );
    // Answers without an FFT carry the app's time alone.
    for uri in ["/metrics", "/healthz", "/nope"] {
        let timing = server_timing(&call(&app, Method::GET, uri).await);
        assert_eq!(timing.keys().collect::<Vec<_>>(), ["app"], "{uri}");
    }
}

#[tokio::test]
async fn real_route_uses_frequency_one_hundredth() {
    let app = router(state_with(|_| {}));
    let json = call(&app, Method::GET, "/fft/real/8000").await.json();
    assert_eq!(json["numSamples"], 8000);
    assert_eq!(json["freq"], 0.01);
    // N·F/8 = 10
    assert_eq!(json["peakBin"], 10);
}

#[tokio::test]
async fn the_configured_maximum_is_enforced_and_named() {
    let app = router(state_with(|config| config.max_samples = 4096));
    assert_eq!(
        call(&app, Method::GET, "/fft?numSamples=4096").await.status,
        StatusCode::OK
    );
    let answer = call(&app, Method::GET, "/fft/real/4097").await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.body.contains("1..=4096"), "{}", answer.body);
}

fn counter_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_by_route_template_never_by_raw_path() {
    let app = router(state_with(|_| {}));
    for uri in [
        "/fft/real/16",
        "/fft/real/32",
        "/no/such/path-7f3a",
        "/fft/real/abc",
    ] {
        call(&app, Method::GET, uri).await;
    }
    call(&app, Method::DELETE, "/fft").await;
    let text = call(&app, Method::GET, "/metrics").await;
    assert!(
        text.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let metrics = text.body;
    let real_ok =
        r#"fft_http_requests_total{method="GET",route="/fft/real/{numSamples}",status="200"}"#;
    assert_eq!(counter_value(&metrics, real_ok), Some(2.0), "{metrics}");
    let real_bad =
        r#"fft_http_requests_total{method="GET",route="/fft/real/{numSamples}",status="400"}"#;
    assert_eq!(counter_value(&metrics, real_bad), Some(1.0), "{metrics}");
    let unmatched = r#"fft_http_requests_total{method="GET",route="unmatched",status="404"}"#;
    assert_eq!(counter_value(&metrics, unmatched), Some(1.0), "{metrics}");
    let not_allowed = r#"fft_http_requests_total{method="DELETE",route="/fft",status="405"}"#;
    assert_eq!(counter_value(&metrics, not_allowed), Some(1.0), "{metrics}");
    assert!(!metrics.contains("path-7f3a") && !metrics.contains("real/16"));
    for bucket in [
        "0.001", "0.002", "0.005", "0.01", "0.02", "0.05", "0.1", "0.2", "0.5",
    ] {
        let series = format!(
            r#"fft_http_request_duration_seconds_bucket{{method="GET",route="/fft/real/{{numSamples}}",le="{bucket}"}}"#
        );
        assert!(
            counter_value(&metrics, &series).is_some(),
            "no bucket {bucket}: {metrics}"
        );
    }
    assert_eq!(
        counter_value(&metrics, "fft_compute_duration_seconds_count"),
        Some(2.0)
    );
    assert_eq!(
        counter_value(&metrics, "fft_plan_cache_misses_total"),
        Some(2.0)
    );
    let resident = counter_value(&metrics, "process_resident_memory_bytes").expect("RSS");
    assert!(resident > 0.0);
    assert!(counter_value(&metrics, "process_cpu_seconds_total").is_some());
}

#[tokio::test]
async fn invented_methods_share_one_label() {
    let app = router(state_with(|_| {}));
    let invented = Method::from_bytes(b"BREW").unwrap();
    assert_eq!(
        call(&app, invented, "/fft").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let metrics = call(&app, Method::GET, "/metrics").await.body;
    assert!(
        metrics.contains(r#"method="other",route="/fft",status="405""#),
        "{metrics}"
    );
    assert!(!metrics.contains("BREW"));
}

#[tokio::test]
async fn readiness_fails_once_shutdown_begins_while_liveness_holds() {
    let state = state_with(|_| {});
    let app = router(state.clone());
    assert_eq!(
        call(&app, Method::GET, "/readyz").await.status,
        StatusCode::OK
    );
    state.lifecycle().begin_shutdown();
    let ready = call(&app, Method::GET, "/readyz").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.headers["x-served-by"], REPLICA);
    assert_eq!(
        call(&app, Method::GET, "/healthz").await.status,
        StatusCode::OK
    );
}

/// With one worker and a queue of one, a third concurrent FFT is refused at once with 503 and
/// `Retry-After`, while the queued one is served once the worker frees up.
#[tokio::test]
async fn beyond_workers_and_queue_requests_get_503_with_retry_after() {
    let state = state_with(|config| {
        config.fft_workers = 1;
        config.fft_queue = 1;
        config.max_samples = 1 << 21;
    });
    let app = router(state.clone());
    // Busy for seconds in a debug build and about 0.1 s in a release one: long enough for the
    // 10 ms polls below.
    let slow = "/fft?numSamples=2097152";
    let running = tokio::spawn({
        let app = app.clone();
        async move { call(&app, Method::POST, slow).await.status }
    });
    wait_until("one FFT runs", || state.pool().running().get() == 1).await;
    let queued = tokio::spawn({
        let app = app.clone();
        async move { call(&app, Method::POST, "/fft?numSamples=64").await.status }
    });
    wait_until("one FFT waits", || state.pool().waiting().get() == 1).await;

    let refused = call(&app, Method::POST, "/fft/real/64").await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.body
    );
    assert_eq!(refused.headers[header::RETRY_AFTER], "1");
    assert_eq!(refused.headers["x-served-by"], REPLICA);
    assert!(refused.json()["error"].as_str().unwrap().contains("busy"));

    assert_eq!(running.await.unwrap(), StatusCode::OK);
    assert_eq!(queued.await.unwrap(), StatusCode::OK);
    assert_eq!(
        call(&app, Method::POST, "/fft/real/64").await.status,
        StatusCode::OK,
        "the pool is free again"
    );
}

#[test]
fn a_replica_name_that_is_no_header_value_is_refused() {
    let err = AppState::new(ServiceConfig::new("bad\nname")).unwrap_err();
    assert!(err.to_string().contains("replica name"), "{err}");
}
