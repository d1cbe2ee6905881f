//! The Prometheus registry: request counts and latencies, FFT compute times, the pool's and the
//! plan cache's state, and process metrics read from `/proc` at scrape time.
//!
//! Durations are in seconds, as Prometheus convention asks; the request-latency buckets are the
//! original service's 1, 2, 5, 10, 20, 50, 100, 200 and 500 ms.

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::pool::FftPool;

/// Route label of a request that matched no route: raw paths never become labels, so the
/// number of series stays bounded whatever clients send.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Request latency buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 9] = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5];

/// FFT compute-time buckets, in seconds: 10 µs (tiny sizes) to 1 s (the largest, on a slow CPU).
pub const FFT_BUCKETS: [f64; 12] = [
    0.00001, 0.00003, 0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily<RouteLabels>,
    fft_seconds: Histogram,
}

impl Metrics {
    pub fn new(pool: &FftPool) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "fft_http_requests",
            "HTTP requests answered, by method, route template and status",
            requests.clone(),
        );
        let latency: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        registry.register(
            "fft_http_request_duration_seconds",
            "Time from receiving a request to answering it, by method and route template",
            latency.clone(),
        );
        let fft_seconds = Histogram::new(FFT_BUCKETS);
        registry.register(
            "fft_compute_duration_seconds",
            "Time spent in the FFT itself, per request",
            fft_seconds.clone(),
        );
        registry.register(
            "fft_jobs_running",
            "FFTs running now",
            pool.running().clone(),
        );
        registry.register(
            "fft_jobs_waiting",
            "FFT requests waiting for a worker now",
            pool.waiting().clone(),
        );
        registry.register(
            "fft_plan_cache_hits",
            "FFT plan lookups answered from the cache",
            pool.plans().hits().clone(),
        );
        registry.register(
            "fft_plan_cache_misses",
            "FFT plan lookups that had to plan",
            pool.plans().misses().clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        Metrics {
            registry,
            requests,
            latency,
            fft_seconds,
        }
    }

    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method: method.to_string(),
                route: route.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    pub fn observe_fft(&self, elapsed: Duration) {
        self.fft_seconds.observe(elapsed.as_secs_f64());
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// `Content-Type` of [`Metrics::encode`]'s output.
pub const METRICS_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The conventional `process_*` metrics, read from `/proc/self` at each scrape. Where `/proc`
/// cannot be read (not Linux) they are left out rather than reported as zero.
#[derive(Debug)]
struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Ok(process) = procfs::process::Process::myself() else {
            return Ok(());
        };
        if let Ok(stat) = process.stat() {
            let ticks = procfs::ticks_per_second() as f64;
            let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
            cpu.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                cpu.metric_type(),
            )?)?;
            let resident = ConstGauge::new((stat.rss * procfs::page_size()) as i64);
            resident.encode(encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                None,
                resident.metric_type(),
            )?)?;
            let virtual_memory = ConstGauge::new(stat.vsize as i64);
            virtual_memory.encode(encoder.encode_descriptor(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                None,
                virtual_memory.metric_type(),
            )?)?;
            let threads = ConstGauge::new(stat.num_threads);
            threads.encode(encoder.encode_descriptor(
                "process_threads",
                "Number of OS threads in the process",
                None,
                threads.metric_type(),
            )?)?;
        }
        if let Ok(open) = process.fd_count() {
            let open_fds = ConstGauge::new(open as i64);
            open_fds.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Number of open file descriptors",
                None,
                open_fds.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
