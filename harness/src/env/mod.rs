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

/// What the resilience scenarios do to the app's replicas, as Kubernetes would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disruption {
    /// Every replica replaced, one at a time, each new one ready before an old one stops: a
    /// rollout restart (`kubectl.kubernetes.io/restartedAt` on the pod template).
    RollingRestart,
    /// One replica killed outright: SIGKILL; on Kubernetes its pod deleted with grace period 0.
    Kill,
    /// One replica asked to stop: SIGTERM; on Kubernetes its pod deleted with its grace period.
    Terminate,
}

/// How a stopped replica's process ended, as far as the environment could see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitSeen {
    Code(i32),
    Signal(i32),
    /// Why the exit could not be seen (a pod deleted before its status showed it).
    NotObserved(String),
}

impl std::fmt::Display for ExitSeen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitSeen::Code(code) => write!(f, "exited {code}"),
            ExitSeen::Signal(signal) => write!(f, "killed by signal {signal}"),
            ExitSeen::NotObserved(why) => write!(f, "exit not observed ({why})"),
        }
    }
}

/// A replica a disruption stopped.
#[derive(Clone, Debug)]
pub struct StoppedReplica {
    /// The name it answers with in `x-served-by`.
    pub name: String,
    /// When it was signalled (or its pod's deletion was requested).
    pub at: std::time::Instant,
    /// When it was known to be gone from the gateway's routes: locally, once its processes were
    /// reaped and the gateway had applied its endpoint removal; on a cluster, where the kubelet
    /// may kill a pod's containers seconds after the pod object is removed, once the Deployment
    /// was whole again.
    pub gone: std::time::Instant,
    pub exit: ExitSeen,
}

/// What a disruption did; returned once the environment is whole again (every replica ready).
#[derive(Clone, Debug)]
pub struct DisruptionReport {
    pub stopped: Vec<StoppedReplica>,
    /// The replicas that took their places.
    pub started: Vec<String>,
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

    /// Disrupts the app's replicas as Kubernetes would (see [`Disruption`]) and returns once
    /// every replica is ready again and every stopped one is gone.
    fn disrupt(&self, disruption: Disruption) -> BoxFuture<'_, Result<DisruptionReport>>;

    /// What the gateway recorded about these requests of the resilience load (keyed by their
    /// `x-e2e-request` id): Envoy's response flags, the upstream host and the reason, where the
    /// target keeps the gateway's access log. An error says why it cannot; it explains, it
    /// never fails a scenario.
    fn gateway_records(
        &self,
        request_ids: &[String],
    ) -> BoxFuture<'_, Result<BTreeMap<String, String>>> {
        let _ = request_ids;
        Box::pin(async {
            anyhow::bail!(
                "the gateway's access log is off (Istio's default): failures are described by \
                 their answers"
            )
        })
    }

    /// What the latency breakdown's hops are on this target, beyond what every target shares.
    fn hop_notes(&self) -> Vec<String> {
        vec![crate::checks::latency::resolution_note()]
    }

    /// The versions of what runs (Envoy, kind, Istio, Kubernetes, the node image), by name.
    fn versions(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    /// Runs one Kubernetes check.
    fn kube_check(&self, check: KubeCheck) -> BoxFuture<'_, Result<KubeCheckOutcome>>;

    /// Writes what helps explain a failure under `dir`. A step that fails is a warning printed
    /// to stderr, never a second failure.
    fn collect_diagnostics<'a>(&'a self, dir: &'a Path) -> BoxFuture<'a, ()>;

    /// Stops and deletes what this environment created, unless `keep` says otherwise; prints
    /// how to reach what is kept. Idempotent and bounded in time.
    fn teardown(&mut self, keep: bool) -> BoxFuture<'_, Result<()>>;
}
