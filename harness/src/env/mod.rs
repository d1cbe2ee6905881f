//! What the scenario suite needs from an environment, whatever the target behind it.
//!
//! `local` (real Envoy + service processes) and `kind`/`existing` (a cluster with Istio) both
//! implement [`Environment`]; the suite runs the same scenarios against either. Checks that only
//! make sense with Kubernetes are asked of the environment, which says when they do not apply.

pub mod cluster;
pub(crate) mod local;
pub mod select;
pub mod timings;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;

use anyhow::Result;

/// A boxed future, so that [`Environment`] can be used as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Checks that need Kubernetes; each reports itself as not applicable where there is none.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum KubeCheck {
    /// Every app pod carries the sidecar (classic or native).
    SidecarsInjected,
    /// Template keeps the article's annotations; pods carry the merged (or original) ones.
    ScrapeAnnotations,
    /// The pod's merged metrics endpoint (15020) serves the app's own metric names.
    MergedMetricsServeAppMetrics,
    /// Every app pod runs the image that was just built.
    PodsRunBuiltImage,
}

impl KubeCheck {
    pub(crate) const ALL: [KubeCheck; 4] = [
        KubeCheck::SidecarsInjected,
        KubeCheck::ScrapeAnnotations,
        KubeCheck::MergedMetricsServeAppMetrics,
        KubeCheck::PodsRunBuiltImage,
    ];

    /// The name the suite lists the check under (cargo test filters match it).
    pub(crate) fn name(self) -> &'static str {
        match self {
            KubeCheck::SidecarsInjected => "kubernetes::sidecars_injected",
            KubeCheck::ScrapeAnnotations => "kubernetes::scrape_annotations",
            KubeCheck::MergedMetricsServeAppMetrics => {
                "kubernetes::merged_metrics_serve_app_metrics"
            }
            KubeCheck::PodsRunBuiltImage => "kubernetes::pods_run_built_image",
        }
    }
}

/// How a Kubernetes check ended when it did not fail (a failure is the `Err` around it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KubeCheckOutcome {
    Passed { detail: String },
    NotApplicable { reason: String },
}

/// A running environment the scenarios can be pointed at.
pub trait Environment: Send + Sync {
    /// One line for the output: what this is (`local: Envoy 1.40.0 + 3 replicas`).
    fn describe(&self) -> String;

    /// Where the gateway listens. Always a loopback address.
    fn ingress(&self) -> SocketAddr;

    /// Each replica's own `/metrics` text (not through the gateway), keyed by the name the
    /// replica reports in `x-served-by`.
    fn replica_metrics(&self) -> BoxFuture<'_, Result<BTreeMap<String, String>>>;

    /// Runs one Kubernetes check.
    fn kube_check(&self, check: KubeCheck) -> BoxFuture<'_, Result<KubeCheckOutcome>>;

    /// Writes what helps explain a failure under `dir`. A step that fails is a warning printed
    /// to stderr, never a second failure.
    fn collect_diagnostics<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, ()>;

    /// Stops and deletes what this environment created, unless `keep` says otherwise; prints
    /// how to reach what is kept. Idempotent and bounded in time.
    fn teardown(&mut self, keep: bool) -> BoxFuture<'_, Result<()>>;
}
