//! The HTTP surface: routes, handlers, and the middleware that labels, counts, logs and signs
//! every response.

use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;

use crate::config::ServiceConfig;
use crate::lifecycle::Lifecycle;
use crate::metrics::{METRICS_CONTENT_TYPE, Metrics, UNMATCHED_ROUTE};
use crate::params::{FftParams, ParamError, parse_num_samples};
use crate::pool::{FftPool, PoolError};
use crate::signal::REAL_ROUTE_FREQ;
use crate::spectrum::PlanCache;

/// Header naming the replica that answered; it tells an answer of the app from one of a proxy
/// in front of it.
pub const SERVED_BY_HEADER: HeaderName = HeaderName::from_static("x-served-by");

/// The W3C Server Timing header: the app's own time and the FFT's.
pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// Seconds a client is asked to wait after a 503 for overload.
const RETRY_AFTER_SECONDS: &str = "1";

/// Everything the handlers share. Cloning is cheap.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    max_samples: usize,
    replica_name: String,
    served_by: HeaderValue,
    pool: FftPool,
    metrics: Metrics,
    lifecycle: Lifecycle,
}

/// A replica name that cannot be sent as an HTTP header value.
#[derive(Debug, thiserror::Error)]
#[error("replica name {0:?} cannot be sent in an HTTP header (use visible ASCII)")]
pub struct InvalidReplicaName(String);

impl AppState {
    pub fn new(config: ServiceConfig) -> Result<Self, InvalidReplicaName> {
        let served_by = HeaderValue::from_str(&config.replica_name)
            .map_err(|_| InvalidReplicaName(config.replica_name.clone()))?;
        let plans = Arc::new(PlanCache::new(config.plan_cache_samples()));
        let pool = FftPool::new(config.fft_workers, config.fft_queue, plans);
        let metrics = Metrics::new(&pool);
        Ok(AppState {
            inner: Arc::new(Inner {
                max_samples: config.max_samples,
                replica_name: config.replica_name,
                served_by,
                pool,
                metrics,
                lifecycle: Lifecycle::default(),
            }),
        })
    }

    pub fn lifecycle(&self) -> &Lifecycle {
        &self.inner.lifecycle
    }

    pub fn pool(&self) -> &FftPool {
        &self.inner.pool
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn replica_name(&self) -> &str {
        &self.inner.replica_name
    }
}

/// The service's routes. Unknown paths answer 404 `Not Found`; a known path with another method
/// answers 405 with `Allow`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/fft", get(fft_from_query).post(fft_from_query))
        .route("/fft/real/{numSamples}", get(fft_real).post(fft_real))
        // An empty segment is a missing parameter, not an unknown path.
        .route("/fft/real/", get(fft_real_missing).post(fft_real_missing))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The 200 answer of the FFT routes.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FftResponse {
    pub num_samples: usize,
    pub freq: f64,
    pub peak_bin: usize,
    pub peak_magnitude: f64,
    /// Time spent in the FFT itself, in microseconds.
    pub elapsed_micros: u64,
    pub served_by: String,
}

/// Every error answers JSON `{"error": "..."}`.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
}

enum ApiError {
    BadRequest(String),
    Pool(PoolError),
}

impl From<ParamError> for ApiError {
    fn from(err: ParamError) -> Self {
        ApiError::BadRequest(err.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::BadRequest(message) => error_response(StatusCode::BAD_REQUEST, message),
            ApiError::Pool(err @ PoolError::Overloaded { .. }) => {
                let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, err.to_string());
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
                response
            }
            ApiError::Pool(err @ PoolError::WorkerFailed(_)) => {
                tracing::error!(error = %err, "FFT worker failed");
                error_response(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
            }
        }
    }
}

fn error_response(status: StatusCode, message: String) -> Response {
    (status, Json(ErrorBody { error: message })).into_response()
}

/// The FFT's own time, handed from the handler to the middleware that writes `Server-Timing`.
#[derive(Clone, Copy, Debug)]
struct FftTime(std::time::Duration);

/// An FFT answer: the JSON and the FFT's time.
type FftAnswer = Result<(Extension<FftTime>, Json<FftResponse>), ApiError>;

async fn fft_from_query(
    State(app): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> FftAnswer {
    let Query(pairs) =
        query.map_err(|rejection| ApiError::BadRequest(format!("query string: {rejection}")))?;
    let params = FftParams::from_query(&pairs, app.inner.max_samples)?;
    run_fft(app, params).await
}

async fn fft_real(
    State(app): State<AppState>,
    segment: Result<Path<String>, PathRejection>,
) -> FftAnswer {
    let max = app.inner.max_samples;
    let Path(raw) = segment.map_err(|_| ParamError::NotAnInteger {
        param: "numSamples",
        got: "(undecodable path segment)".to_string(),
        max,
    })?;
    let num_samples = parse_num_samples("numSamples", &raw, max)?;
    run_fft(
        app,
        FftParams {
            num_samples,
            freq: REAL_ROUTE_FREQ,
        },
    )
    .await
}

async fn fft_real_missing(State(app): State<AppState>) -> ApiError {
    ParamError::NotAnInteger {
        param: "numSamples",
        got: String::new(),
        max: app.inner.max_samples,
    }
    .into()
}

async fn run_fft(app: AppState, params: FftParams) -> FftAnswer {
    let peak = app
        .inner
        .pool
        .analyze(params)
        .await
        .map_err(ApiError::Pool)?;
    app.inner.metrics.observe_fft(peak.fft_elapsed);
    let body = Json(FftResponse {
        num_samples: params.num_samples,
        freq: params.freq,
        peak_bin: peak.bin,
        peak_magnitude: peak.magnitude,
        elapsed_micros: u64::try_from(peak.fft_elapsed.as_micros()).unwrap_or(u64::MAX),
        served_by: app.inner.replica_name.clone(),
    });
    Ok((Extension(FftTime(peak.fft_elapsed)), body))
}

/// `Server-Timing` (W3C Server Timing): `app` is the whole handling inside the service, `fft` the
/// FFT alone, both in milliseconds, so a client behind proxies can tell the app's time from the
/// proxies' (`x-envoy-upstream-service-time` is the gateway's time to its upstream).
fn server_timing(app: std::time::Duration, fft: Option<std::time::Duration>) -> HeaderValue {
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    let mut value = format!("app;dur={:.3}", ms(app));
    if let Some(fft) = fft {
        value.push_str(&format!(", fft;dur={:.3}", ms(fft)));
    }
    HeaderValue::from_str(&value).expect("digits, letters, ';', '=', ',' and spaces")
}

async fn metrics(State(app): State<AppState>) -> Response {
    match app.inner.metrics.encode() {
        Ok(text) => ([(CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        Err(_) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed".to_string(),
        ),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(app): State<AppState>) -> Response {
    if app.inner.lifecycle.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    }
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "Not Found")
}

/// Method label: the standard methods by name, anything else as `other`, so that invented
/// methods cannot create new series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Runs around every route and the fallback (so the matched route template is known): signs the
/// response, gives a 405 a JSON body, counts and times it, logs one line, and tracks it as in
/// flight for draining.
async fn observe(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let _in_flight = app.inner.lifecycle.track_request();
    let raw_method = request.method().clone();
    let method = method_label(&raw_method);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|matched| matched.as_str().to_string())
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_string());
    let path = request.uri().path().to_string();

    let mut response = next.run(request).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED {
        response = method_not_allowed(response, &raw_method, &route);
    }
    response
        .headers_mut()
        .insert(SERVED_BY_HEADER, app.inner.served_by.clone());
    if !app.inner.lifecycle.is_ready() {
        // Draining: hyper closes the connection after this answer, so a client (the sidecar or
        // the gateway) opens its next one elsewhere instead of reusing one this replica is about
        // to close — a request written onto a connection as it closes would be reset.
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }

    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let fft = response.extensions().get::<FftTime>().map(|t| t.0);
    response
        .headers_mut()
        .insert(SERVER_TIMING, server_timing(elapsed, fft));
    app.inner
        .metrics
        .observe_request(method, &route, status, elapsed);
    tracing::info!(
        method,
        route = %route,
        path = ?path,
        status,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// Methods each route accepts, for the error body. (axum adds the `Allow` header itself, after
/// this middleware has run.)
fn allowed_methods(route: &str) -> &'static str {
    if route.starts_with("/fft") {
        "GET, HEAD, POST"
    } else {
        "GET, HEAD"
    }
}

fn method_not_allowed(response: Response, method: &Method, route: &str) -> Response {
    let (mut parts, _) = response.into_parts();
    let body = serde_json::to_vec(&ErrorBody {
        error: format!(
            "method {method} is not allowed on {route}; allowed: {}",
            allowed_methods(route)
        ),
    })
    .expect("an error body always serializes");
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(body))
}
