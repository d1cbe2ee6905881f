//! `--dry-run`: every step and command in order, nothing created, deleted, built or written.
//! Only read-only queries run (tool versions, `kind get clusters`).

use crate::kind_support;

use harness::config::knobs::Keep;
use harness::env::Environment;
use harness::env::cluster::{ClusterChoice, DryRunBackend, KindEnvironment, PLANNED_IMAGE};
use harness::env::timings::Timings;
use harness::exec::cmd::Runner;
use kind_support::Fake;

/// The plan with the fake tools' directory stripped, as a person would read it.
fn plan_of(fake: &Fake, runner: &Runner) -> Vec<String> {
    let bin = format!("{}/", fake.bin.display());
    runner.plan().iter().map(|s| s.replace(&bin, "")).collect()
}

/// `up` of a generated kind cluster, planned with fake tools.
async fn dry_run_up() -> (Fake, Runner, KindEnvironment) {
    let fake = Fake::new(&[]);
    let runner = Runner::dry_run();
    let settings = fake.settings(Keep::Never, ClusterChoice::Generated);
    let env = KindEnvironment::up_with(
        runner.clone(),
        settings,
        &DryRunBackend,
        &mut Timings::default(),
    )
    .await
    .expect("a dry run succeeds");
    (fake, runner, env)
}

fn position(plan: &[String], needle: &str) -> usize {
    plan.iter()
        .position(|step| step.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` not in the plan:\n{}", plan.join("\n")))
}

#[tokio::test]
async fn the_up_plan_lists_every_step_in_order_and_changes_nothing() {
    let (fake, runner, mut env) = dry_run_up().await;
    env.teardown(false).await.unwrap();
    let plan = plan_of(&fake, &runner);
    let order = [
        "build image fft-service:<content tag> from",
        "$ kind create cluster --name istio-fft-e2e-",
        "$ kind get kubeconfig --name istio-fft-e2e-",
        "connect to the Kubernetes API of context kind-istio-fft-e2e-",
        &format!("$ kind load docker-image {PLANNED_IMAGE} --name istio-fft-e2e-"),
        "$ istioctl install -y -f",
        "wait until Deployments istio-system/istiod and istio-system/istio-ingressgateway are Available",
        "server-side apply (field manager istio-fft-e2e) Namespace wty-istio",
        "server-side apply (field manager istio-fft-e2e) Service wty-istio/wtyfft-svc",
        "server-side apply (field manager istio-fft-e2e) Deployment wty-istio/wtyfft-deploy",
        "server-side apply (field manager istio-fft-e2e) Gateway wty-istio/wtyfft-gateway",
        "server-side apply (field manager istio-fft-e2e) VirtualService wty-istio/wtyfft-vs",
        "wait until Deployment wty-istio/wtyfft-deploy has every replica available",
        "probe http://127.0.0.1:30001/metrics",
        "$ kind delete cluster --name istio-fft-e2e-",
        "verify with `kind get clusters`",
    ];
    let positions: Vec<usize> = order.iter().map(|s| position(&plan, s)).collect();
    let mut sorted = positions.clone();
    sorted.sort_unstable();
    assert_eq!(positions, sorted, "plan out of order:\n{}", plan.join("\n"));
    // The fakes saw only read-only queries.
    assert_eq!(fake.changes(), Vec::<String>::new(), "{:?}", fake.calls());
    assert!(fake.calls().contains(&"kind get clusters".to_string()));
    assert!(fake.clusters().is_empty());
    assert!(!fake.state_dir().dir.exists(), "a dry run writes no state");
    assert!(!fake.artifacts().exists(), "a dry run writes no artifacts");
}

#[tokio::test]
async fn a_dry_run_without_any_tool_still_prints_the_plan() {
    let fake = Fake::with_tools(&[], &[], &[]);
    let runner = Runner::dry_run();
    let settings = fake.settings(Keep::Never, ClusterChoice::Generated);
    KindEnvironment::up_with(
        runner.clone(),
        settings,
        &DryRunBackend,
        &mut Timings::default(),
    )
    .await
    .expect("missing tools are reported, the plan still printed");
    let plan = plan_of(&fake, &runner);
    position(&plan, "$ kind create cluster");
    position(&plan, "$ istioctl install -y");
}

#[tokio::test]
async fn the_cli_plans_for_up_and_down_use_the_harness_cluster() {
    let fake = Fake::new(&[]);
    let runner = Runner::dry_run();
    let settings = fake.settings(
        Keep::Always,
        ClusterChoice::Named(harness::tools::kind::CLI_CLUSTER_NAME.into()),
    );
    harness::cli::cluster::cli_up_with(runner.clone(), settings.clone(), &DryRunBackend)
        .await
        .unwrap();
    let plan = plan_of(&fake, &runner);
    position(&plan, "$ kind create cluster --name istio-fft-e2e --config");
    position(&plan, "print the article's INGRESS_HOST");
    assert!(
        !plan.iter().any(|s| s.contains("kind delete")),
        "up keeps the cluster"
    );

    fake.set_clusters(&["istio-fft-e2e"]);
    let runner = Runner::dry_run();
    harness::cli::cluster::cli_down(runner.clone(), settings)
        .await
        .unwrap();
    position(
        &plan_of(&fake, &runner),
        "$ kind delete cluster --name istio-fft-e2e --kubeconfig",
    );
    assert_eq!(
        fake.clusters(),
        ["istio-fft-e2e"],
        "a dry run deletes nothing"
    );
}

#[tokio::test]
async fn down_never_deletes_e2e_cluster() {
    let fake = Fake::new(&[]);
    fake.set_clusters(&["my-dev"]);
    let settings = fake.settings(Keep::Never, ClusterChoice::Reuse("my-dev".into()));
    harness::cli::cluster::cli_down(Runner::new(), settings)
        .await
        .unwrap();
    assert!(!fake.calls().iter().any(|c| c.starts_with("kind delete")));
    assert_eq!(fake.clusters(), ["my-dev"]);
}

#[tokio::test]
async fn down_deletes_the_harness_cluster_and_verifies() {
    let fake = Fake::new(&[]);
    fake.set_clusters(&["istio-fft-e2e", "someone-elses-cluster"]);
    let settings = fake.settings(
        Keep::Never,
        ClusterChoice::Named(harness::tools::kind::CLI_CLUSTER_NAME.into()),
    );
    harness::cli::cluster::cli_down(Runner::new(), settings)
        .await
        .unwrap();
    assert_eq!(fake.clusters(), ["someone-elses-cluster"]);
    let calls = fake.calls();
    assert_eq!(calls.last().unwrap(), "kind get clusters", "{calls:?}");
}

#[tokio::test]
async fn dump_plans_every_diagnostic_step() {
    let fake = Fake::new(&[]);
    let runner = Runner::dry_run();
    let settings = fake.settings(
        Keep::Never,
        ClusterChoice::Named(harness::tools::kind::CLI_CLUSTER_NAME.into()),
    );
    harness::cli::cluster::cli_dump(runner.clone(), settings)
        .await
        .unwrap();
    let plan = plan_of(&fake, &runner);
    for step in [
        "get events -A",
        "describe pods,deployments,services -n wty-istio",
        "istioctl --kubeconfig",
        "analyze -A",
        "proxy-status",
        "kubectl logs",
        "gateway-config-dump.json",
        "$ kind export logs",
    ] {
        position(&plan, step);
    }
    assert_eq!(fake.changes(), Vec::<String>::new());
}

/// The resilience scenarios' disruptions on kind, as the plan shows them: a rollout restart by
/// the `restartedAt` annotation, a pod deleted with grace period 0, a pod deleted with its grace.
#[tokio::test]
async fn the_resilience_disruptions_are_planned_through_the_api() {
    use harness::env::Disruption;
    let (fake, runner, mut env) = dry_run_up().await;
    for disruption in [
        Disruption::RollingRestart,
        Disruption::Kill,
        Disruption::Terminate,
    ] {
        let report = env.disrupt(disruption).await.unwrap();
        assert!(report.stopped.is_empty(), "a dry run stops nothing");
    }
    env.teardown(false).await.unwrap();
    let plan = plan_of(&fake, &runner);
    let restart = position(
        &plan,
        "rollout restart: set kubectl.kubernetes.io/restartedAt on Deployment wty-istio/wtyfft-deploy",
    );
    let kill = position(&plan, "with gracePeriodSeconds=0");
    let terminate = position(&plan, "with its grace period");
    let delete = position(&plan, "$ kind delete cluster");
    assert!(
        restart < kill && kill < terminate && terminate < delete,
        "{plan:#?}"
    );
    assert_eq!(fake.changes(), Vec::<String>::new(), "{:?}", fake.calls());
}
